//! One module per `sysext` subcommand.

pub mod bake;
pub mod check;
pub mod convert_torcx;
pub mod deps;
pub mod inspect;
pub mod install_image;
pub mod merge;
pub mod pack;
pub mod pull;
pub mod push;
pub mod run;
pub mod sign;

pub(crate) use sysext_core::cli::{print_json, write_stdout};
