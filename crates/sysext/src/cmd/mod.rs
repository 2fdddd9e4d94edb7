//! One module per subcommand.

pub mod check;
pub mod inspect;
pub mod merge;
pub mod pack;
pub mod run;
