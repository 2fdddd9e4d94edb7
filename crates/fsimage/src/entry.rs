//! The entries of an image, as its readers list them (the same for every format and for a
//! folder).

use serde::Serialize;

/// The type of an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum EntryKind {
    File,
    Dir,
    Symlink,
    CharDevice,
    BlockDevice,
    Fifo,
    Socket,
}

/// One entry of an image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Entry {
    /// Relative path, e.g. "usr/bin/x" (the root itself is not listed in an image's entries;
    /// [`SquashfsReader::nodes`](crate::squashfs::reader::SquashfsReader::nodes) lists it with
    /// the path "").
    pub path: String,
    pub kind: EntryKind,
    /// Permission bits (0o7777).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// File size; symlink target length; 0 otherwise.
    pub size: u64,
    /// Symlink target.
    pub target: Option<String>,
    /// Carries a `security.capability` xattr (file capabilities).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub capability: bool,
}
