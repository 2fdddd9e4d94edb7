//! What a test reads back from a tree: file digests and byte counts.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

/// `sha256:HEX` of `b`, as OCI names blobs.
pub fn sha256_digest(b: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(b)))
}

/// The regular files under `root` (paths relative to it) and their [`sha256_digest`].
pub fn regular_files(root: &Path) -> BTreeMap<PathBuf, String> {
    walkdir::WalkDir::new(root)
        .into_iter()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().is_file())
        .map(|e| {
            (
                e.path().strip_prefix(root).unwrap().to_path_buf(),
                sha256_digest(&std::fs::read(e.path()).unwrap()),
            )
        })
        .collect()
}

/// Bytes of every regular file under `dir` (entries vanishing meanwhile count as none: a
/// cache another process trims).
pub fn bytes_under(dir: &Path) -> u64 {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_file())
        .map(|e| e.metadata().map(|m| m.len()).unwrap_or(0))
        .sum()
}
