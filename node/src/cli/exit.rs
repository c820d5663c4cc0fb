//! Exit codes of the `metamesh` binary and how errors are printed.
//!
//! | code | meaning |
//! |---|---|
//! | 0 | success |
//! | 1 | error (the message says what failed) |
//! | 2 | usage: a bad flag or value (clap's own errors use 2 as well) |
//! | 3 | `import` stored nothing: no valid record in the input |
//! | 4 | a node holds the store but its API does not answer |
//!
//! Commands attach a code with [`coded`]; any other error is 1.

use std::fmt;

pub const OK: u8 = 0;
pub const ERROR: u8 = 1;
pub const USAGE: u8 = 2;
pub const NOTHING_IMPORTED: u8 = 3;
pub const NODE_UNREACHABLE: u8 = 4;

/// An error with the exit code it should end the process with.
#[derive(Debug)]
pub struct Coded {
    pub code: u8,
    pub message: String,
}

impl fmt::Display for Coded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Coded {}

/// An error ending the process with `code`.
pub fn coded(code: u8, message: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(Coded {
        code,
        message: message.into(),
    })
}

/// The exit code for an error: the first [`Coded`] in its chain, else 1.
pub fn code_of(e: &anyhow::Error) -> u8 {
    e.chain()
        .find_map(|c| c.downcast_ref::<Coded>())
        .map_or(ERROR, |c| c.code)
}

/// The error and its causes on one line, `a: b: c`, without repeating a
/// cause whose text the previous part already contains (an I/O error that
/// is both a wrapper's message and its source is printed once), and
/// without the `(os error N)` suffix of I/O errors.
pub fn render(e: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in e.chain() {
        let text = strip_os_error(&cause.to_string());
        if text.is_empty() || parts.last().is_some_and(|prev| prev.contains(&text)) {
            continue;
        }
        parts.push(text);
    }
    parts.join(": ")
}

/// `No such file or directory (os error 2)` -> `No such file or directory`.
pub fn strip_os_error(s: &str) -> String {
    let mut out = s.to_string();
    while let Some(i) = out.find(" (os error ") {
        match out[i..].find(')') {
            Some(j) => out.replace_range(i..i + j + 1, ""),
            None => break,
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn codes_and_rendering() {
        let io = std::io::Error::from_raw_os_error(2);
        #[derive(Debug, thiserror::Error)]
        #[error("x.jsonl: {source}")]
        struct Wrap {
            source: std::io::Error,
        }
        let e = anyhow::Error::new(Wrap { source: io }).context("importing x.jsonl");
        let r = render(&e);
        assert_eq!(r.matches("No such file").count(), 1, "{r}");
        assert!(!r.contains("os error"), "{r}");
        assert!(
            r.starts_with("importing x.jsonl: x.jsonl: No such file"),
            "{r}"
        );
        assert_eq!(code_of(&e), ERROR);
        let e = Err::<(), _>(coded(NOTHING_IMPORTED, "nothing")).context("outer");
        assert_eq!(code_of(&e.unwrap_err()), NOTHING_IMPORTED);
    }
}
