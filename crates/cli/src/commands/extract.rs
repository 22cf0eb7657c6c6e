//! `sluice extract`: flags/env -> typed config -> `sluice_extract`.

use sluice_runtime::ExitCode;

use crate::context::{Context, UsageError};

#[derive(Debug, clap::Args)]
pub struct Args {}

pub async fn run(_args: Args, _context: &Context) -> anyhow::Result<ExitCode> {
    Err(UsageError("`sluice extract` is not built yet".into()).into())
}
