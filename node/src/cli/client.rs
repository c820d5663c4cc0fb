//! Client commands: through a running node's API, or on the store directly.

use super::*;
use anyhow::{bail, Result};

pub fn insights(_g: &GlobalArgs, _a: InsightsArgs) -> Result<()> { bail!("insights: not built yet") }
pub fn record(_g: &GlobalArgs, _a: RecordArgs) -> Result<()> { bail!("record: not built yet") }
pub fn recommend(_g: &GlobalArgs, _a: RecommendArgs) -> Result<()> { bail!("recommend: not built yet") }
pub fn peers(_g: &GlobalArgs, _a: JsonArgs) -> Result<()> { bail!("peers: not built yet") }
pub fn stats(_g: &GlobalArgs, _a: JsonArgs) -> Result<()> { bail!("stats: not built yet") }
