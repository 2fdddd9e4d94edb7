//! One module per `sysext` subcommand.

pub mod deps;
pub mod inspect;
pub mod pack;
