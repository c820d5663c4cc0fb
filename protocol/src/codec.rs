//! CBOR encoding with hard bounds on decode.
//!
//! Decoding refuses input over the caller's byte bound before parsing, so no
//! allocation can exceed a small multiple of that bound; ciborium's own
//! recursion limit stops deeply nested input. Trailing bytes are an error.

use serde::{de::DeserializeOwned, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    #[error("input is {len} bytes; the limit is {max}")]
    TooLarge { len: usize, max: usize },
    #[error("invalid CBOR: {0}")]
    Invalid(String),
    #[error("{0} trailing bytes after the value")]
    Trailing(usize),
}

/// Encode a value as CBOR. Encoding our own types into memory cannot fail;
/// a failure would be a bug in a `Serialize` impl, and yields empty bytes,
/// which every decoder rejects.
pub fn to_cbor<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    if ciborium::into_writer(value, &mut out).is_err() {
        out.clear();
    }
    out
}

/// Decode CBOR of at most `max` bytes.
pub fn from_cbor<T: DeserializeOwned>(bytes: &[u8], max: usize) -> Result<T, CodecError> {
    if bytes.len() > max {
        return Err(CodecError::TooLarge {
            len: bytes.len(),
            max,
        });
    }
    let mut cursor = std::io::Cursor::new(bytes);
    let value =
        ciborium::from_reader(&mut cursor).map_err(|e| CodecError::Invalid(e.to_string()))?;
    let rest = bytes.len() - cursor.position() as usize;
    if rest != 0 {
        return Err(CodecError::Trailing(rest));
    }
    Ok(value)
}
