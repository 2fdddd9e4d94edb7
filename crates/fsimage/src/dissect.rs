//! What an image file holds, before its file system is read: a bare file system, a "naked"
//! verity image (`NAME.raw` with `NAME.verity` and `NAME.roothash` beside it, as systemd
//! looks for them) or a DDI (a GPT disk image, [`crate::ddi`]). Gives the byte range of the
//! file system, and for verity images where the hash tree is and which root hash it must give
//! ([`Protected::verify`] checks it in userspace).

use std::fs::File;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::ddi;
use crate::verity::{self, parse_root_hash, side_path, VerifyError};

/// The most read of a `.roothash` file.
const MAX_ROOTHASH_FILE: u64 = 4096;

/// Where the root hash of a verity image came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RootHashSource {
    /// `NAME.roothash` beside the image.
    SideFile(PathBuf),
    /// The DDI's data and hash partition UUIDs (as repart writes them): not authenticated,
    /// it only makes a change of the data or the tree evident.
    PartitionUuids,
}

/// How the hash tree is stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Layout {
    /// A GPT disk image.
    Ddi,
    /// The file system image with a `.verity` file beside it.
    Naked,
}

/// A partition of a DDI as reported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PartitionInfo {
    pub label: String,
    pub type_uuid: String,
    pub uuid: String,
    pub offset: u64,
    pub bytes: u64,
    pub read_only: bool,
}

/// The verity side of an image.
#[derive(Debug, Clone, Serialize)]
pub struct Protected {
    pub layout: Layout,
    /// The DDI's architecture (systemd's name).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub architecture: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub partitions: Vec<PartitionInfo>,
    /// The root hash, hex.
    pub root_hash: String,
    pub root_hash_source: RootHashSource,
    /// The file holding the hash tree and its range.
    pub hash_file: PathBuf,
    pub hash_offset: u64,
    pub hash_bytes: u64,
    #[serde(skip)]
    root: [u8; 32],
}

/// An image file, dissected.
#[derive(Debug, Clone, Serialize)]
pub struct Dissected {
    pub path: PathBuf,
    /// The file system's byte range in the file.
    pub data_offset: u64,
    pub data_bytes: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verity: Option<Protected>,
}

/// Why an image could not be dissected.
#[derive(Debug, thiserror::Error)]
pub enum DissectError {
    #[error("cannot read {}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} is not a usable disk image: {reason}", path.display())]
    Gpt { path: PathBuf, reason: String },
    #[error("{} does not hold a root hash (64 hex digits); rewrite it or remove it", path.display())]
    RootHashFile { path: PathBuf },
    #[error("{} has no dm-verity hash partition (root-{arch}-verity); only verity-protected disk images are read (pack one with `sysext pack --format ddi`)", path.display())]
    NoVerity { path: PathBuf, arch: String },
}

impl Dissected {
    /// Dissects the file `path` (see the module docs); a plain file system gives
    /// `verity: None` and the whole file as its range.
    pub fn open(path: &Path) -> Result<Dissected, DissectError> {
        let io = |source| DissectError::Io {
            path: path.to_path_buf(),
            source,
        };
        let f = File::open(path).map_err(io)?;
        let len = f.metadata().map_err(io)?.len();
        let side_root = read_side_root(path)?;
        if ddi::is_gpt(&f) {
            let gerr = |reason| DissectError::Gpt {
                path: path.to_path_buf(),
                reason,
            };
            let gpt = ddi::read(&f, len).map_err(gerr)?;
            let d = ddi::Ddi::find(&gpt).map_err(gerr)?;
            let Some(v) = &d.verity else {
                return Err(DissectError::NoVerity {
                    path: path.to_path_buf(),
                    arch: d.arch.arch.to_string(),
                });
            };
            let (root, source) = match side_root {
                Some((r, p)) => (r, RootHashSource::SideFile(p)),
                None => (
                    d.uuid_root_hash().expect("a verity partition"),
                    RootHashSource::PartitionUuids,
                ),
            };
            let partitions = gpt
                .partitions
                .iter()
                .map(|p| PartitionInfo {
                    label: p.label.clone(),
                    type_uuid: verity::uuid_string(&p.type_uuid),
                    uuid: verity::uuid_string(&p.uuid),
                    offset: p.offset(),
                    bytes: p.bytes(),
                    read_only: p.attrs & ddi::ATTR_READ_ONLY != 0,
                })
                .collect();
            return Ok(Dissected {
                path: path.to_path_buf(),
                data_offset: d.data.offset(),
                data_bytes: d.data.bytes(),
                verity: Some(Protected {
                    layout: Layout::Ddi,
                    architecture: Some(d.arch.arch.to_string()),
                    partitions,
                    root_hash: hex::encode(root),
                    root_hash_source: source,
                    hash_file: path.to_path_buf(),
                    hash_offset: v.offset(),
                    hash_bytes: v.bytes(),
                    root,
                }),
            });
        }
        let hash_file = side_path(path, ".verity");
        let verity = match (side_root, std::fs::metadata(&hash_file)) {
            (Some((root, p)), Ok(m)) if m.is_file() => Some(Protected {
                layout: Layout::Naked,
                architecture: None,
                partitions: Vec::new(),
                root_hash: hex::encode(root),
                root_hash_source: RootHashSource::SideFile(p),
                hash_file,
                hash_offset: 0,
                hash_bytes: m.len(),
                root,
            }),
            _ => None,
        };
        Ok(Dissected {
            path: path.to_path_buf(),
            data_offset: 0,
            data_bytes: len,
            verity,
        })
    }
}

/// `NAME.roothash` beside `image`, if there is one.
fn read_side_root(image: &Path) -> Result<Option<([u8; 32], PathBuf)>, DissectError> {
    use std::io::Read;
    let p = side_path(image, ".roothash");
    let f = match File::open(&p) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(DissectError::Io { path: p, source }),
    };
    let meta = f.metadata().map_err(|source| DissectError::Io {
        path: p.clone(),
        source,
    })?;
    if !meta.is_file() {
        return Err(DissectError::RootHashFile { path: p });
    }
    let mut text = String::new();
    f.take(MAX_ROOTHASH_FILE)
        .read_to_string(&mut text)
        .map_err(|_| DissectError::RootHashFile { path: p.clone() })?;
    match parse_root_hash(&text) {
        Some(r) => Ok(Some((r, p))),
        None => Err(DissectError::RootHashFile { path: p }),
    }
}

impl Protected {
    /// Checks every data block and hash block against the root hash, in userspace; returns
    /// the bytes of data the tree covers (what may be mounted).
    pub fn verify(&self, d: &Dissected, threads: usize) -> Result<u64, VerifyError> {
        let data = File::open(&d.path)?;
        let hash = File::open(&self.hash_file)?;
        let sb = verity::verify(
            &data,
            d.data_offset,
            d.data_bytes,
            &hash,
            self.hash_offset,
            self.hash_bytes,
            &self.root,
            threads,
        )?;
        Ok(sb.data_blocks * verity::BLOCK)
    }
}
