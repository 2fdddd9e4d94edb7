//! The one error type of the image readers (squashfs and EROFS): the same refusals, worded the
//! same, with the format named where it matters.

use std::io;
use std::path::PathBuf;

use gentext::escape;

/// Folders nested deeper than this make an image refused (the kernel has no such limit, but
/// no extension needs it, and every walk here stays bounded).
pub const MAX_DEPTH: usize = 4096;

/// Which reader an error comes from: its format's name and how to rebuild such an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageFormat {
    Squashfs,
    Erofs,
}

impl ImageFormat {
    fn name(self) -> &'static str {
        match self {
            ImageFormat::Squashfs => "squashfs",
            ImageFormat::Erofs => "EROFS",
        }
    }

    /// What a duplicate name means for this format, and how to rebuild the image.
    fn duplicate_hint(self) -> &'static str {
        match self {
            ImageFormat::Squashfs => "the kernel shows only the first, so the image is refused (rebuild it with `sysext pack` or mksquashfs)",
            ImageFormat::Erofs => "refusing it (rebuild it with `sysext pack --fs erofs`)",
        }
    }
}

/// Errors from reading an image.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("cannot open {}", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{} is not a valid {} image: {reason}", path.display(), format.name())]
    Corrupt {
        path: PathBuf,
        format: ImageFormat,
        reason: String,
    },
    #[error("{} is an EROFS image with {what}, which is not read yet (images from `sysext pack --fs erofs` and from mkfs.erofs 1.8 with lz4, lz4hc or zstd, `-C`, `-Efragments`, `-Eall-fragments`, `-Eztailpacking` or `-Ededupe` are; rebuild it with those)", path.display())]
    Unsupported { path: PathBuf, what: String },
    #[error("image {} is malformed: directory {} holds two entries named {}; {}", path.display(), show_dir(dir), escape(name), format.duplicate_hint())]
    Duplicate {
        path: PathBuf,
        format: ImageFormat,
        dir: String,
        name: String,
    },
    #[error("image {} is malformed: directory {} holds an entry named {:?}, which no path can name; rebuild the image", path.display(), show_dir(dir), escape(name))]
    BadName {
        path: PathBuf,
        dir: String,
        name: String,
    },
    #[error("image {} is malformed: it nests folders deeper than {MAX_DEPTH} levels (under {}); refusing to read it, no extension needs that", path.display(), escape(dir.split('/').next().unwrap_or("")))]
    TooDeep { path: PathBuf, dir: String },
    #[error("{} is not a regular file in {}", escape(path), image.display())]
    NotAFile { image: PathBuf, path: String },
    #[error("{} in {} is larger than {limit} bytes, the most read for analysis; nothing was read", escape(path), image.display())]
    TooLarge {
        image: PathBuf,
        path: String,
        limit: u64,
    },
}

/// A folder of an image as messages show it: `/` for the root, escaped otherwise.
pub(crate) fn show_dir(dir: &str) -> String {
    if dir.is_empty() {
        "/".into()
    } else {
        escape(dir).into_owned()
    }
}
