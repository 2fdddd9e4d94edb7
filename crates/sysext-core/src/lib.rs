//! The sysext rules: everything about systemd-sysext images that does not depend on where the
//! software came from.
//!
//! - [`release`]: os-release / extension-release parsing and writing, systemd's compatibility
//!   rules, architecture names, extension name validation.
//! - [`pack`]: a staged extension tree to `NAME.raw` or a folder, reproducible and atomic.
//! - [`inspect`]: read an image (`.raw` or folder) back.
//! - [`check`]: lint an image as systemd would see it.
//! - [`merge`]: merge images over `/usr` and `/opt` (confexts over `/etc`) in a private mount
//!   namespace.
//! - [`units`]: which files are systemd units (suffixes and unit search folders).
//! - [`entries`]: the one parser of the entries users give to flix, flatwrap and bake.
//! - [`logging`]: the binaries' shared stderr logging setup.
//! - [`cli`]: the binaries' shared convention: `run_main` (exit 0 / 1 findings / 2 error, a
//!   closed stdout is a normal end), `write_stdout`, and the output options `OutputArgs`.
//!
//! Beneath it: `safefs` (the safe tree writer, rootfs paths, atomic outputs, signal cleanup),
//! `gentext` (values in generated text), `elf-closure` (ELF scan and loader closure) and
//! `fsimage` (the squashfs writer and reader).

pub mod check;
pub mod cli;
pub mod decompress;
pub mod entries;
pub mod inspect;
pub mod logging;
pub mod merge;
pub mod osimage;
pub mod pack;
pub mod release;
pub mod units;
