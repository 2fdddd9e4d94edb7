//! One module per `sysext` subcommand.

pub mod check;
pub mod deps;
pub mod inspect;
pub mod merge;
pub mod pack;
pub mod run;
