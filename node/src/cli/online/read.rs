//! Reading an import file item by item in constant memory: bounded lines,
//! or the elements of a Legion JSON array, streamed.

use std::io::{self, BufRead, BufReader, Read};

use anyhow::Result;
use metamesh_storage::interop::{Format, MAX_LINE_BYTES};

/// One unit read from a file: a line (or Legion element) to send, or a
/// problem found locally.
pub(super) enum Item {
    Line(u64, Vec<u8>),
    Skip(u64, String),
    Invalid(u64, String, String),
}
/// Read one line of at most [`MAX_LINE_BYTES`] (without its newline);
/// `Ok(None)` at the end, `Ok(Some(false))` for a longer line (consumed).
pub(super) fn read_line<R: BufRead>(r: &mut R, buf: &mut Vec<u8>) -> io::Result<Option<bool>> {
    buf.clear();
    let n = r
        .by_ref()
        .take(MAX_LINE_BYTES as u64 + 1)
        .read_until(b'\n', buf)?;
    if n == 0 {
        return Ok(None);
    }
    if buf.last() == Some(&b'\n') {
        buf.pop();
        if buf.last() == Some(&b'\r') {
            buf.pop();
        }
        return Ok(Some(true));
    }
    if buf.len() > MAX_LINE_BYTES {
        let mut rest = Vec::new();
        loop {
            rest.clear();
            if r.by_ref().take(64 * 1024).read_until(b'\n', &mut rest)? == 0
                || rest.last() == Some(&b'\n')
            {
                break;
            }
        }
        return Ok(Some(false));
    }
    Ok(Some(true))
}

/// Feed every item of a file to `f` (lines, or Legion array elements).
pub(super) fn each_item<R: Read>(
    reader: R,
    format: Format,
    f: &mut dyn FnMut(Item) -> Result<()>,
) -> Result<()> {
    let mut r = BufReader::with_capacity(64 * 1024, reader);
    if format == Format::Legion {
        return each_legion_element(r, f);
    }
    let mut buf = Vec::with_capacity(1024);
    let mut line = 0u64;
    while let Some(fits) = read_line(&mut r, &mut buf)? {
        line += 1;
        if fits {
            f(Item::Line(line, std::mem::take(&mut buf)))?;
        } else {
            f(Item::Skip(
                line,
                format!("line longer than {MAX_LINE_BYTES} bytes"),
            ))?;
        }
    }
    Ok(())
}

/// Stream a Legion JSON array element by element; each element becomes a
/// line, numbered by the file line where it ends (the store's walker,
/// `interop::each_json_array_element`).
fn each_legion_element<R: Read>(r: R, f: &mut dyn FnMut(Item) -> Result<()>) -> Result<()> {
    let broke = metamesh_storage::interop::each_json_array_element(r, &mut |line, v| {
        let item = match serde_json::to_vec(&v) {
            Ok(bytes) if v.is_object() => Item::Line(line, bytes),
            _ => Item::Invalid(line, "pattern".into(), "must be a JSON object".into()),
        };
        f(item)
    })?;
    if let Some((line, why)) = broke {
        f(Item::Skip(
            line,
            format!("malformed JSON array, rest of file skipped: {why}"),
        ))?;
    }
    Ok(())
}
