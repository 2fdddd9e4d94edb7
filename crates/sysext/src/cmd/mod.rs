//! One module per subcommand.

pub mod inspect;
pub mod merge;
pub mod pack;
pub mod run;
