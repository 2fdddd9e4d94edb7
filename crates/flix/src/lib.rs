//! Flix: relocate programs and their library closure into a self-contained extension.
//!
//! - [`rewrite`]: ELF files rewritten in place, atomically, by the `elf-edit` crate's editor
//!   (interpreter, RUNPATH/RPATH, SONAME, DT_NEEDED, DF_1_NODEFLIB).
//! - [`patchelf`]: the `flix-patchelf` command line over `elf-edit` and [`rewrite`].
//! - [`resolution_cache`]: patchelf's `--build-resolution-cache` note.
//! - [`plan`]: what the user typed resolved against the rootfs into a validated [`plan::Plan`]
//!   (entries, renames, closure, flat library dir, RUNPATHs, units, diagnostics).
//! - [`data_paths`]: paths compiled into the shipped objects that exist in the rootfs but are
//!   not shipped, suggested in the plan.
//! - [`stage`]: the plan carried out into an extension tree and packed to `NAME.raw`.
//! - [`cli`]: the `flix SOURCE NAME PATH...` command line.

pub mod cli;
pub mod data_paths;
pub mod patchelf;
pub mod plan;
pub mod resolution_cache;
pub mod rewrite;
pub mod stage;
