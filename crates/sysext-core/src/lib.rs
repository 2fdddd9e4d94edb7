//! The shared core of the sysext toolchain: everything about systemd-sysext images that does
//! not depend on where the software came from.
//!
//! - [`release`]: os-release / extension-release parsing and writing, systemd's compatibility
//!   rules, architecture names, extension name validation.
//! - [`rootfs`]: resolving paths inside a foreign root filesystem with that root as `/`.
//! - [`elf`]: read-only ELF scan and the loader-faithful dependency closure.
//! - [`squashfs`]: our squashfs writer and reader.
//! - [`pack`]: a staged extension tree to `NAME.raw` or a folder, reproducible and atomic.
//! - [`inspect`]: read an image (`.raw` or folder) back.
//! - [`check`]: lint an image as systemd would see it.
//! - [`merge`]: merge images over `/usr` and `/opt` in a private mount namespace.
//! - [`atomic`]: outputs written under a temporary name and renamed into place.
//! - [`cleanup`]: temp paths removed on SIGINT/SIGTERM/SIGHUP, and stale ones of dead
//!   processes removed by later runs.
//! - [`gentext`]: values substituted into generated text (sh, units, transfer files): the one
//!   sh quoter, `%` escaping, checks.
//! - [`tree`]: the one safe writer for trees built from input (`openat2` inside the root,
//!   never following links it creates over, a bounded cache of folders, sparse copies), and
//!   the producers' rule for setuid/setgid bits and file capabilities.
//! - [`units`]: which files are systemd units (suffixes and unit search folders).
//! - [`logging`]: the binaries' shared stderr logging setup.
//! - [`cli`]: the binaries' shared convention: `run_main` (exit 0 / 1 findings / 2 error, a
//!   closed stdout is a normal end), `write_stdout`, and the output options `OutputArgs`.

pub mod atomic;
pub mod check;
pub mod cleanup;
pub mod cli;
pub mod elf;
pub mod gentext;
pub mod inspect;
pub mod logging;
pub mod merge;
pub mod pack;
pub mod release;
pub mod rootfs;
pub mod squashfs;
pub mod tree;
pub mod units;
