//! Interop files (being written).
