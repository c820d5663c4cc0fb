//! `metamesh swarm`: a local mesh of real nodes on loopback.

use super::*;
use anyhow::{bail, Result};

pub fn swarm(_g: &GlobalArgs, _a: SwarmArgs) -> Result<()> { bail!("swarm: not built yet") }
