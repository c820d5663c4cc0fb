//! Multi-node integration tests live in tests/tests/.
