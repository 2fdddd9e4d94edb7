//! Reads a squashfs image back: its entries and file contents.
//!
//! Built on `backhand`'s reader (independent of our writer, so a round trip through both is a
//! real check). Corrupt input is an error, never a panic: every call into the parser runs under
//! `catch_unwind` as a second line of defence.

use std::fs::File;
use std::io::{BufReader, Read};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use backhand::{FilesystemReader, InnerNode};

/// Errors from reading an image.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("cannot open {}", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} is not a valid squashfs image: {reason}", path.display())]
    Corrupt { path: PathBuf, reason: String },
    #[error("{path:?} is not a regular file in {}", image.display())]
    NotAFile { image: PathBuf, path: String },
}

/// The entries of an image are [`inspect`](crate::inspect)'s: the same for a squashfs image
/// and a folder.
pub use crate::inspect::{Entry as Node, EntryKind as NodeKind};

/// An open squashfs image.
pub struct SquashfsReader {
    path: PathBuf,
    fs: FilesystemReader<'static>,
    nodes: Vec<Node>,
    /// Relative path → index into backhand's node list.
    index: std::collections::HashMap<String, usize>,
}

impl std::fmt::Debug for SquashfsReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SquashfsReader")
            .field("path", &self.path)
            .field("nodes", &self.nodes.len())
            .finish()
    }
}

fn panic_reason(p: Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "parser failure".into())
}

fn rel(p: &Path) -> String {
    let s = p.to_string_lossy();
    s.trim_start_matches('/').to_string()
}

impl SquashfsReader {
    /// Opens and indexes the image at `path`.
    pub fn open(path: &Path) -> Result<Self, ReadError> {
        let file = File::open(path).map_err(|source| ReadError::Open {
            path: path.to_path_buf(),
            source,
        })?;
        let corrupt = |reason: String| ReadError::Corrupt {
            path: path.to_path_buf(),
            reason,
        };
        let fs = catch_unwind(AssertUnwindSafe(|| {
            FilesystemReader::from_reader(BufReader::new(file))
        }))
        .map_err(|p| corrupt(panic_reason(p)))?
        .map_err(|e| corrupt(e.to_string()))?;
        let mut nodes = Vec::new();
        let mut index = std::collections::HashMap::new();
        for (i, n) in fs.files().enumerate() {
            index.insert(rel(&n.fullpath), i);
            let (kind, size, target) = match &n.inner {
                InnerNode::File(f) => (NodeKind::File, f.file_len() as u64, None),
                InnerNode::Dir(_) => (NodeKind::Dir, 0, None),
                InnerNode::Symlink(s) => (
                    NodeKind::Symlink,
                    s.link.as_os_str().len() as u64,
                    Some(s.link.to_string_lossy().into_owned()),
                ),
                InnerNode::CharacterDevice(_) => (NodeKind::CharDevice, 0, None),
                InnerNode::BlockDevice(_) => (NodeKind::BlockDevice, 0, None),
                InnerNode::NamedPipe => (NodeKind::Fifo, 0, None),
                InnerNode::Socket => (NodeKind::Socket, 0, None),
            };
            nodes.push(Node {
                path: rel(&n.fullpath),
                kind,
                mode: u32::from(n.header.permissions) & 0o7777,
                uid: n.header.uid,
                gid: n.header.gid,
                size,
                target,
            });
        }
        nodes.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(Self {
            path: path.to_path_buf(),
            fs,
            nodes,
            index,
        })
    }

    /// Every entry, sorted by path; the root is the entry with path "".
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// The contents of the regular file at `rel_path` (relative, e.g. "usr/bin/x").
    pub fn read_file(&self, rel_path: &str) -> Result<Vec<u8>, ReadError> {
        self.read_prefix(rel_path, u64::MAX)
    }

    /// At most the first `limit` bytes of the regular file at `rel_path`.
    pub fn read_prefix(&self, rel_path: &str, limit: u64) -> Result<Vec<u8>, ReadError> {
        let want = rel_path.trim_start_matches('/');
        let node = self
            .index
            .get(want)
            .and_then(|&i| self.fs.root.nodes.get(i))
            .ok_or_else(|| ReadError::NotAFile {
                image: self.path.clone(),
                path: want.to_string(),
            })?;
        let InnerNode::File(f) = &node.inner else {
            return Err(ReadError::NotAFile {
                image: self.path.clone(),
                path: want.to_string(),
            });
        };
        let corrupt = |reason: String| ReadError::Corrupt {
            path: self.path.clone(),
            reason: format!("reading {want}: {reason}"),
        };
        catch_unwind(AssertUnwindSafe(|| -> Result<Vec<u8>, String> {
            let mut r = self
                .fs
                .file(f)
                .reader_checked()
                .map_err(|e| e.to_string())?;
            let mut out = Vec::with_capacity((f.file_len() as u64).min(limit) as usize);
            r.by_ref()
                .take(limit)
                .read_to_end(&mut out)
                .map_err(|e| e.to_string())?;
            Ok(out)
        }))
        .map_err(|p| corrupt(panic_reason(p)))?
        .map_err(corrupt)
    }
}
