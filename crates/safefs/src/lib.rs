//! Safe file-system access to trees built from input, and the outputs made from them.
//!
//! - [`tree`]: the one safe writer for trees built from input (`openat2` inside the root,
//!   never following links it creates over, a bounded cache of folders, sparse copies), and
//!   the producers' rule for setuid/setgid bits and file capabilities.
//! - [`rootfs`]: resolving paths inside a foreign root filesystem with that root as `/`.
//! - [`resolve`]: `openat2` tried again when a concurrent rename or mount raced the lookup.
//! - [`atomic`]: outputs written under a temporary name and renamed into place.
//! - [`cleanup`]: temp paths removed on SIGINT/SIGTERM/SIGHUP, and stale ones of dead
//!   processes removed by later runs.

pub mod atomic;
pub mod cleanup;
pub mod resolve;
pub mod rootfs;
pub mod tree;

pub use resolve::openat2;
