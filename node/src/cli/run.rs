//! `metamesh run`.

use super::*;
use anyhow::{bail, Result};

pub fn run(_g: &GlobalArgs, _a: RunArgs) -> Result<()> { bail!("run: not built yet") }
