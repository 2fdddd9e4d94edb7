//! Read-only ELF scan and the loader-faithful dependency closure.
//!
//! - [`scan`] / [`scan_file`]: class, byte order, machine, type, interpreter and the dynamic
//!   entries the loaders use ([`ElfInfo`]). Corrupt or truncated input is an [`ElfError`], never a
//!   panic; files that are not ELF at all are `Ok(None)`.
//! - [`closure`]: which objects the program interpreter would load for a set of files inside a
//!   foreign root filesystem, found the way glibc's `ld.so` or musl's loader would find them
//!   (the search orders are written out at the top of `src/closure.rs`), with the reason each
//!   one was found ([`Reason`]) and the names nobody provides ([`Missing`]). Nothing is
//!   executed; every path is resolved with the rootfs as `/` ([`safefs::rootfs::resolve`]).
//! - [`dlopen`]: the `.note.dlopen` metadata (UAPI "ELF dlopen metadata") of the libraries an
//!   object loads at run time; [`closure`] follows them when [`ClosureOptions::dlopen`] says so.
//! - [`rootstack`]: a root filesystem as an ordered stack of folders and read-only trees
//!   ([`RootStack`], [`TreeView`]), the way systemd-sysext's overlay shows an image over the host.
//! - `ldcache`: glibc's `/etc/ld.so.cache` reader (new `glibc-ld.so.cache1.1` format, alone or
//!   after the old `ld.so-1.7.0` one).

mod closure;
pub mod dlopen;
mod ldcache;
pub mod rootstack;
mod scan;

use std::path::PathBuf;

pub use closure::{
    closure, closure_each, closure_in, running_x86_64_level, Closure, ClosureOptions,
    DlopenMissing, LoadedObject, Missing, Reason,
};
pub use ldcache::{LdCache, LdCacheEntry};
pub use rootstack::{RootStack, TreeView, ViewKind};
pub use scan::{scan, scan_file, scan_reader, MAX_ELF_READ};

/// What the loaders need to know about one ELF file.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ElfInfo {
    /// ELFCLASS64.
    pub class64: bool,
    /// ELFDATA2LSB.
    pub little_endian: bool,
    /// `e_machine` (`object::elf::EM_*`).
    pub machine: u16,
    /// `e_type` (`object::elf::ET_*`).
    pub e_type: u16,
    /// PT_INTERP, without the trailing NUL.
    pub interpreter: Option<String>,
    /// DT_NEEDED, in order.
    pub needed: Vec<String>,
    /// DT_SONAME.
    pub soname: Option<String>,
    /// DT_RPATH split on `:` (empty when absent).
    pub rpath: Vec<String>,
    /// DT_RUNPATH split on `:` (empty when absent).
    pub runpath: Vec<String>,
    /// DF_1_NODEFLIB in DT_FLAGS_1.
    pub nodeflib: bool,
    /// Has a PT_DYNAMIC segment.
    pub is_dynamic: bool,
}

impl ElfInfo {
    /// Class, byte order and machine equal: the loader would accept one for the other.
    pub fn same_abi(&self, other: &ElfInfo) -> bool {
        self.class64 == other.class64
            && self.little_endian == other.little_endian
            && self.machine == other.machine
    }
}

/// Errors of the ELF scan and closure.
#[derive(Debug, thiserror::Error)]
pub enum ElfError {
    #[error("{what}: malformed ELF file: {reason}")]
    Malformed { what: String, reason: String },
    #[error("reading {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not an ELF file")]
    NotElf { path: PathBuf },
    #[error(transparent)]
    Rootfs(#[from] safefs::rootfs::RootfsError),
    #[error("{path}: malformed ld.so.cache: {reason}")]
    LdCache { path: PathBuf, reason: String },
}
