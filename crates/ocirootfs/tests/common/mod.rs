//! Test helpers: hand-made layers and OCI layouts, the tree comparison used everywhere, and
//! wrappers around the reference tools (umoci, skopeo) and our binary.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_ocirootfs"))
}

/// Runs `ocirootfs ARGS...` with a given cache dir; returns the output (not checked).
pub fn ocirootfs(cache: &Path, args: &[&str]) -> Output {
    Command::new(bin())
        .arg("--cache")
        .arg(cache)
        .args(args)
        .output()
        .expect("run ocirootfs")
}

pub fn ok(out: Output) -> Output {
    assert!(
        out.status.success(),
        "ocirootfs failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

pub fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).expect("--json output")
}

// ---------- tar layers ----------

/// Builds a layer tar entry by entry; names are written raw, so hostile names survive.
pub struct LayerTar {
    b: tar::Builder<Vec<u8>>,
}

fn header(name: &str, kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    {
        let raw = h.as_old_mut();
        let bytes = name.as_bytes();
        assert!(bytes.len() < 100, "test names stay short");
        raw.name[..bytes.len()].copy_from_slice(bytes);
    }
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(1_700_000_000);
    h
}

impl Default for LayerTar {
    fn default() -> Self {
        Self::new()
    }
}

impl LayerTar {
    pub fn new() -> Self {
        LayerTar {
            b: tar::Builder::new(Vec::new()),
        }
    }
    fn put(&mut self, mut h: tar::Header, data: &[u8]) -> &mut Self {
        h.set_cksum();
        self.b.append(&h, data).unwrap();
        self
    }
    pub fn dir(&mut self, name: &str, mode: u32) -> &mut Self {
        self.put(header(name, tar::EntryType::Directory, mode, 0), b"")
    }
    pub fn file(&mut self, name: &str, mode: u32, data: &[u8]) -> &mut Self {
        self.put(
            header(name, tar::EntryType::Regular, mode, data.len() as u64),
            data,
        )
    }
    pub fn file_owned(
        &mut self,
        name: &str,
        mode: u32,
        uid: u64,
        gid: u64,
        data: &[u8],
    ) -> &mut Self {
        let mut h = header(name, tar::EntryType::Regular, mode, data.len() as u64);
        h.set_uid(uid);
        h.set_gid(gid);
        self.put(h, data)
    }
    fn link(&mut self, kind: tar::EntryType, name: &str, target: &str) -> &mut Self {
        let mut h = header(name, kind, 0o777, 0);
        let raw = h.as_old_mut();
        raw.linkname[..target.len()].copy_from_slice(target.as_bytes());
        self.put(h, b"")
    }
    pub fn symlink(&mut self, name: &str, target: &str) -> &mut Self {
        self.link(tar::EntryType::Symlink, name, target)
    }
    pub fn hardlink(&mut self, name: &str, target: &str) -> &mut Self {
        self.link(tar::EntryType::Link, name, target)
    }
    pub fn fifo(&mut self, name: &str) -> &mut Self {
        self.put(header(name, tar::EntryType::Fifo, 0o644, 0), b"")
    }
    pub fn finish(self) -> Vec<u8> {
        self.b.into_inner().unwrap()
    }
}

#[derive(Clone, Copy)]
pub enum Comp {
    None,
    Gzip,
    Zstd,
}

pub fn compress(tar: &[u8], c: Comp) -> (Vec<u8>, &'static str) {
    match c {
        Comp::None => (tar.to_vec(), "application/vnd.oci.image.layer.v1.tar"),
        Comp::Gzip => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(tar).unwrap();
            (
                e.finish().unwrap(),
                "application/vnd.oci.image.layer.v1.tar+gzip",
            )
        }
        Comp::Zstd => (
            zstd::encode_all(tar, 3).unwrap(),
            "application/vnd.oci.image.layer.v1.tar+zstd",
        ),
    }
}

pub use testkit::files::sha256_digest as sha;

// ---------- OCI layouts ----------

/// An OCI image layout assembled by hand.
pub struct Layout {
    pub dir: PathBuf,
    index: Vec<serde_json::Value>,
}

impl Layout {
    pub fn new(dir: &Path) -> Layout {
        fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
        fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
        Layout {
            dir: dir.to_path_buf(),
            index: Vec::new(),
        }
    }

    pub fn blob(&self, bytes: &[u8]) -> (String, u64) {
        let d = sha(bytes);
        fs::write(self.blob_path(&d), bytes).unwrap();
        (d, bytes.len() as u64)
    }

    /// Where the blob `sha256:HEX` lives in the layout.
    pub fn blob_path(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").expect("a sha256 digest");
        self.dir.join("blobs/sha256").join(hex)
    }

    /// The JSON blob (manifest, index, config) a descriptor from [`Layout::image`] or
    /// [`Layout::index`] points to.
    pub fn read_json(&self, desc: &serde_json::Value) -> serde_json::Value {
        let digest = desc["digest"].as_str().expect("a descriptor with a digest");
        serde_json::from_slice(&fs::read(self.blob_path(digest)).unwrap()).unwrap()
    }

    /// Writes the layout as a plain tar (the layout's files at the top) to `archive`.
    pub fn archive(&self, archive: &Path) {
        testkit::run_ok(
            Command::new("tar")
                .arg("-cf")
                .arg(archive)
                .arg("-C")
                .arg(&self.dir)
                .arg("."),
        );
    }

    /// Adds an image (layers as plain tars, compressed with `c`); returns the manifest
    /// descriptor (with platform).
    pub fn image(
        &self,
        layers: &[Vec<u8>],
        c: Comp,
        arch: &str,
        variant: Option<&str>,
        env: &[&str],
    ) -> serde_json::Value {
        let mut descs = Vec::new();
        let mut diff_ids = Vec::new();
        for l in layers {
            diff_ids.push(sha(l));
            let (blob, mt) = compress(l, c);
            let (d, s) = self.blob(&blob);
            descs.push(serde_json::json!({"mediaType": mt, "digest": d, "size": s}));
        }
        let mut config = serde_json::json!({
            "architecture": arch, "os": "linux",
            "config": {"Env": env, "WorkingDir": "/"},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        });
        if let Some(v) = variant {
            config["variant"] = v.into();
        }
        let (cd, cs) = self.blob(&serde_json::to_vec(&config).unwrap());
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cs},
            "layers": descs,
        });
        let (md, ms) = self.blob(&serde_json::to_vec(&manifest).unwrap());
        let mut platform = serde_json::json!({"architecture": arch, "os": "linux"});
        if let Some(v) = variant {
            platform["variant"] = v.into();
        }
        serde_json::json!({"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md, "size": ms, "platform": platform})
    }

    /// An image index over manifests; returns its descriptor.
    pub fn index(&self, manifests: &[serde_json::Value]) -> serde_json::Value {
        let idx = serde_json::json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": manifests});
        let (d, s) = self.blob(&serde_json::to_vec(&idx).unwrap());
        serde_json::json!({"mediaType": "application/vnd.oci.image.index.v1+json", "digest": d, "size": s})
    }

    /// Tags a descriptor in index.json and writes it.
    pub fn tag(&mut self, desc: &serde_json::Value, tag: &str) {
        let mut d = desc.clone();
        d.as_object_mut().unwrap().remove("platform");
        d["annotations"] = serde_json::json!({"org.opencontainers.image.ref.name": tag});
        self.index.push(d);
        let idx = serde_json::json!({"schemaVersion": 2, "manifests": self.index});
        fs::write(
            self.dir.join("index.json"),
            serde_json::to_vec(&idx).unwrap(),
        )
        .unwrap();
    }
}

// ---------- reference tools ----------

pub fn umoci_unpack(layout: &Path, tag: &str, dest: &Path) {
    testkit::run_ok(
        Command::new("umoci")
            .args(["raw", "unpack", "--image"])
            .arg(format!("{}:{tag}", layout.display()))
            .arg(dest),
    );
}

// ---------- tree comparison ----------

#[derive(Debug, PartialEq, Eq)]
pub struct Node {
    kind: &'static str,
    mode: u32,
    uid: u32,
    gid: u32,
    target: Option<PathBuf>,
    content: Option<String>,
    rdev: u64,
    /// For hardlinks: the first path (in sorted order) sharing the inode.
    link_group: Option<PathBuf>,
}

pub fn snapshot(root: &Path) -> BTreeMap<PathBuf, Node> {
    let mut out = BTreeMap::new();
    let mut inodes: HashMap<(u64, u64), PathBuf> = HashMap::new();
    for e in walkdir::WalkDir::new(root).sort_by_file_name() {
        let e = e.unwrap();
        let rel = e.path().strip_prefix(root).unwrap().to_path_buf();
        if rel.as_os_str().is_empty() {
            continue;
        }
        let m = fs::symlink_metadata(e.path()).unwrap();
        let ft = m.file_type();
        use std::os::unix::fs::FileTypeExt;
        let kind = if ft.is_dir() {
            "dir"
        } else if ft.is_symlink() {
            "symlink"
        } else if ft.is_file() {
            "file"
        } else if ft.is_fifo() {
            "fifo"
        } else if ft.is_char_device() {
            "char"
        } else if ft.is_block_device() {
            "block"
        } else {
            "other"
        };
        let link_group = (ft.is_file() && m.nlink() > 1).then(|| {
            inodes
                .entry((m.dev(), m.ino()))
                .or_insert(rel.clone())
                .clone()
        });
        out.insert(
            rel,
            Node {
                kind,
                mode: if ft.is_symlink() {
                    0
                } else {
                    m.permissions().mode() & 0o7777
                },
                uid: m.uid(),
                gid: m.gid(),
                target: ft.is_symlink().then(|| fs::read_link(e.path()).unwrap()),
                content: ft.is_file().then(|| sha(&fs::read(e.path()).unwrap())),
                rdev: m.rdev(),
                link_group,
            },
        );
    }
    out
}

/// Compares two trees; panics listing the first differences.
pub fn assert_same_tree(ours: &Path, reference: &Path) {
    assert_matches_snapshot(ours, &snapshot(reference), reference);
}

/// Compares a tree with a snapshot taken earlier of `reference`.
pub fn assert_matches_snapshot(ours: &Path, b: &BTreeMap<PathBuf, Node>, reference: &Path) {
    let a = snapshot(ours);
    let mut diffs = Vec::new();
    for (p, n) in &a {
        match b.get(p) {
            None => diffs.push(format!("only in ours: {}", p.display())),
            Some(m) if m != n => {
                diffs.push(format!("{}: ours {n:?}, reference {m:?}", p.display()))
            }
            _ => {}
        }
    }
    for p in b.keys() {
        if !a.contains_key(p) {
            diffs.push(format!("only in reference: {}", p.display()));
        }
    }
    assert!(
        diffs.is_empty(),
        "{} differences between {} and {} (first 20):\n{}",
        diffs.len(),
        ours.display(),
        reference.display(),
        diffs
            .iter()
            .take(20)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(!a.is_empty(), "empty tree {}", ours.display());
}

/// All paths under `dir` (to prove nothing was written outside FOLDER).
pub fn listing(dir: &Path) -> Vec<PathBuf> {
    walkdir::WalkDir::new(dir)
        .sort_by_file_name()
        .into_iter()
        .map(|e| e.unwrap().path().to_path_buf())
        .collect()
}
