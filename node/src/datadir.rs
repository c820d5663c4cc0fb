//! Data directory layout: identity key, store, API address file.
