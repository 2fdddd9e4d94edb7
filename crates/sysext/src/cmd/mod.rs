//! One module per `sysext` subcommand.

pub mod deps;
