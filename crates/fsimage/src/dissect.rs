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
    /// The `rootHash` of the DDI's signature partition (authenticated once the signature is
    /// checked against a certificate).
    Signature,
    /// The DDI's data and hash partition UUIDs (as repart writes them): not authenticated,
    /// it only makes a change of the data or the tree evident.
    PartitionUuids,
}

impl std::fmt::Display for RootHashSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RootHashSource::SideFile(p) => write!(f, "{}", p.display()),
            RootHashSource::Signature => f.write_str("the signature partition"),
            RootHashSource::PartitionUuids => {
                f.write_str("the partition UUIDs; unsigned, so it only shows the image is whole")
            }
        }
    }
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
    /// The signature of the root hash, if the image has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signature: Option<Signature>,
    #[serde(skip)]
    root: [u8; 32],
}

/// A root hash signature found with an image.
#[derive(Debug, Clone, Serialize)]
pub struct Signature {
    /// Where: `NAME.roothash.p7s` or the DDI's signature partition.
    pub from: String,
    /// The root hash the signature partition names (the DDI's only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signed_root_hash: Option<String>,
    /// The SHA-256 fingerprint of the signer's certificate the partition names.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub certificate_fingerprint: Option<String>,
    #[serde(skip)]
    pub der: Vec<u8>,
}

/// What a signature check found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SignatureVerdict {
    /// Signed by the certificate at this index.
    Verified(usize),
    /// Signed, but by none of the certificates.
    WrongCertificate,
    /// No signature.
    Unsigned,
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
    #[error("{}: {source}", path.display())]
    Signature {
        path: PathBuf,
        #[source]
        source: crate::signature::SignError,
    },
    #[error("{} has no dm-verity hash partition (root-{arch}-verity); only verity-protected disk images are read (pack one with `sysext pack --format ddi`)", path.display())]
    NoVerity { path: PathBuf, arch: String },
}

impl Dissected {
    /// Dissects the file `path` (see the module docs); a plain file system gives
    /// `verity: None` and the whole file as its range.
    pub fn open(path: &Path) -> Result<Dissected, DissectError> {
        let f = safefs::tree::open_input(path).map_err(|source| DissectError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::open_file(&f, path)
    }

    /// [`Dissected::open`] of the open file `f`, which is the file `path` (named in errors;
    /// the side files are looked for beside it): what is dissected is what the caller holds,
    /// e.g. the descriptor a loop device is then attached to.
    pub fn open_file(f: &File, path: &Path) -> Result<Dissected, DissectError> {
        let io = |source| DissectError::Io {
            path: path.to_path_buf(),
            source,
        };
        let len = f.metadata().map_err(io)?.len();
        let side_root = read_side_root(path)?;
        if ddi::is_gpt(f) {
            let gerr = |reason| DissectError::Gpt {
                path: path.to_path_buf(),
                reason,
            };
            let gpt = ddi::read(f, len).map_err(gerr)?;
            let d = ddi::Ddi::find(&gpt).map_err(gerr)?;
            let Some(v) = &d.verity else {
                return Err(DissectError::NoVerity {
                    path: path.to_path_buf(),
                    arch: d.arch.arch.to_string(),
                });
            };
            let signature = match &d.sig {
                Some(sp) => {
                    let n = sp.bytes().min(crate::signature::MAX_SIGNATURE) as usize;
                    let mut b = vec![0u8; n];
                    use std::os::unix::fs::FileExt;
                    f.read_exact_at(&mut b, sp.offset()).map_err(io)?;
                    let (obj, der) = crate::signature::parse_partition(&b).map_err(|source| {
                        DissectError::Signature {
                            path: path.to_path_buf(),
                            source,
                        }
                    })?;
                    Some(Signature {
                        from: format!("partition {}", sp.label),
                        signed_root_hash: Some(obj.root_hash),
                        certificate_fingerprint: Some(obj.certificate_fingerprint),
                        der,
                    })
                }
                None => None,
            };
            let signed = signature
                .as_ref()
                .and_then(|s| parse_root_hash(s.signed_root_hash.as_deref()?));
            let (root, source) = match (side_root, signed) {
                (Some((r, p)), _) => (r, RootHashSource::SideFile(p)),
                (None, Some(r)) => (r, RootHashSource::Signature),
                (None, None) => (
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
                    signature,
                    root,
                }),
            });
        }
        let hash_file = side_path(path, ".verity");
        let verity = match (side_root, std::fs::metadata(&hash_file)) {
            (Some((root, p)), Ok(m)) if m.is_file() => Some(Protected {
                signature: read_side_signature(path)?,
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

/// At most `max + 1` bytes of the side file `p`, if there is one: opened without blocking
/// (a FIFO planted beside an image does not hang the reader) and only as a regular file.
fn read_side(p: &Path, max: u64) -> Result<Option<Vec<u8>>, DissectError> {
    use std::io::Read;
    let io = |source| DissectError::Io {
        path: p.to_path_buf(),
        source,
    };
    let f = match safefs::tree::open_input(p) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(e)),
    };
    let mut b = Vec::new();
    f.take(max + 1).read_to_end(&mut b).map_err(io)?;
    Ok(Some(b))
}

/// `NAME.roothash` beside `image`, if there is one.
fn read_side_root(image: &Path) -> Result<Option<([u8; 32], PathBuf)>, DissectError> {
    let p = side_path(image, ".roothash");
    let Some(b) = read_side(&p, MAX_ROOTHASH_FILE)? else {
        return Ok(None);
    };
    match std::str::from_utf8(&b).ok().and_then(parse_root_hash) {
        Some(r) if b.len() as u64 <= MAX_ROOTHASH_FILE => Ok(Some((r, p))),
        _ => Err(DissectError::RootHashFile { path: p }),
    }
}

/// `NAME.roothash.p7s` beside `image`, if there is one (at most [`MAX_SIGNATURE`] bytes).
///
/// [`MAX_SIGNATURE`]: crate::signature::MAX_SIGNATURE
fn read_side_signature(image: &Path) -> Result<Option<Signature>, DissectError> {
    let p = side_path(image, ".roothash.p7s");
    let Some(der) = read_side(&p, crate::signature::MAX_SIGNATURE)? else {
        return Ok(None);
    };
    if der.len() as u64 > crate::signature::MAX_SIGNATURE {
        return Err(DissectError::Signature {
            path: p,
            source: crate::signature::SignError::Bad {
                what: "signature".into(),
                reason: format!("larger than {} bytes", crate::signature::MAX_SIGNATURE),
            },
        });
    }
    Ok(Some(Signature {
        from: p.display().to_string(),
        signed_root_hash: None,
        certificate_fingerprint: None,
        der,
    }))
}

impl Protected {
    /// Checks the signature of the root hash against `certs`: the root hash used for the hash
    /// tree must be the one signed, and the signature must verify with one of the certificates.
    pub fn check_signature(
        &self,
        certs: &[openssl::x509::X509],
    ) -> Result<SignatureVerdict, crate::signature::SignError> {
        let Some(sig) = &self.signature else {
            return Ok(SignatureVerdict::Unsigned);
        };
        if let Some(named) = &sig.signed_root_hash {
            if !named.eq_ignore_ascii_case(&self.root_hash) {
                return Err(crate::signature::SignError::Bad {
                    what: sig.from.clone(),
                    reason: format!(
                        "it signs the root hash {named}, the image's is {}",
                        self.root_hash
                    ),
                });
            }
        }
        Ok(
            match crate::signature::verify(&sig.der, &self.root_hash, certs)? {
                Some(i) => SignatureVerdict::Verified(i),
                None => SignatureVerdict::WrongCertificate,
            },
        )
    }

    /// Checks every data block and hash block against the root hash, in userspace; returns
    /// the bytes of data the tree covers (what may be mounted).
    pub fn verify(&self, d: &Dissected, threads: usize) -> Result<u64, VerifyError> {
        self.verify_with(d, &safefs::tree::open_input(&d.path)?, threads)
    }

    /// [`Protected::verify`] reading the image through `image`, an open descriptor of it (the
    /// one a loop device is then attached to, so what is mounted is what was checked, also if
    /// the path is replaced meanwhile).
    pub fn verify_with(
        &self,
        d: &Dissected,
        image: &File,
        threads: usize,
    ) -> Result<u64, VerifyError> {
        let own;
        let hash = if self.layout == Layout::Ddi {
            image
        } else {
            own = safefs::tree::open_input(&self.hash_file)?;
            &own
        };
        let data = image;
        let data = verity::Range {
            file: data,
            offset: d.data_offset,
            len: d.data_bytes,
        };
        let hash = verity::Range {
            file: hash,
            offset: self.hash_offset,
            len: self.hash_bytes,
        };
        let sb = verity::verify(data, hash, &self.root, threads)?;
        Ok(sb.data_blocks * verity::BLOCK)
    }
}
