//! Offline commands: init, id, import, export (owned by the storage work).

use super::*;
use anyhow::{bail, Result};

pub fn init(_g: &GlobalArgs, _a: InitArgs) -> Result<()> { bail!("init: not built yet") }
pub fn id(_g: &GlobalArgs, _a: IdArgs) -> Result<()> { bail!("id: not built yet") }
pub fn import(_g: &GlobalArgs, _a: ImportArgs) -> Result<()> { bail!("import: not built yet") }
pub fn export(_g: &GlobalArgs, _a: ExportArgs) -> Result<()> { bail!("export: not built yet") }
