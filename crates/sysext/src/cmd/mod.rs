//! One module per `sysext` subcommand.

pub mod bake;
pub mod check;
pub mod convert_torcx;
pub mod deps;
pub mod inspect;
pub mod merge;
pub mod pack;
pub mod run;

use std::io::{self, StdoutLock, Write};

use anyhow::{Context, Result};

/// Runs `write` on the locked stdout and flushes it. A closed pipe (`| head`) is not an error:
/// the command's work is done, only its report is cut short.
pub(crate) fn write_stdout(write: impl FnOnce(&mut StdoutLock) -> io::Result<()>) -> Result<()> {
    let mut out = io::stdout().lock();
    match write(&mut out).and_then(|()| out.flush()) {
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        r => r.context("writing to stdout"),
    }
}
