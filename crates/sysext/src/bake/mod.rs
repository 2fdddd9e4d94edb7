//! `sysext bake`: build every extension of a TOML manifest for every architecture, with the
//! update artifacts systemd-sysupdate and Flatcar's Butane need.
//!
//! - [`manifest`]: the TOML format, validated before any work starts (the `bake-manifest`
//!   crate, re-exported).
//! - [`build`]: one image (flix, flatwrap or static) for one architecture, through the
//!   libraries; the rebuild key.
//! - [`artifacts`]: `SHA256SUMS`, transfer files, Butane snippets.
//! - [`sign`]: `SHA256SUMS.gpg`, the detached OpenPGP signature hosts verify.
//!
//! Jobs run in parallel on a few threads; a failing job is reported and leaves nothing behind;
//! a job whose key (manifest entry, source identity, tool version) is unchanged since the last
//! bake into the same folder is not rebuilt (state in `OUT/.bake-state.json`).

pub mod artifacts;
pub mod build;
pub mod sign;
pub use bake_manifest as manifest;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use safefs::atomic::{AtomicError, AtomicOutput};
use serde::{Deserialize, Serialize};

pub use manifest::Mode;

/// Errors of the bake as a whole (per-job failures are in the [`Report`]).
#[derive(Debug, thiserror::Error)]
pub enum BakeError {
    #[error(transparent)]
    Manifest(#[from] manifest::ManifestError),
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("no base URL for the transfer files and Butane snippets: pass --base-url or set base_url in the manifest")]
    NoBaseUrl,
    #[error(transparent)]
    Atomic(#[from] AtomicError),
    #[error(transparent)]
    Artifact(#[from] artifacts::ArtifactError),
    #[error(transparent)]
    Sign(#[from] sign::SignError),
    #[error("{0}")]
    KeyMismatch(String),
    #[error("planning {job}: {message}")]
    Plan { job: String, message: String },
    #[error("{0}")]
    PushPrefix(String),
    #[error("{file} differs between the shards {} and {}; they were baked from different inputs (or tool versions): bake them again from one manifest, or collect only one of them", first.display(), second.display())]
    Conflict {
        file: String,
        first: PathBuf,
        second: PathBuf,
    },
    #[error("{} is not a bake output (no {STATE_FILE}); give the --out folders of `sysext bake --only ...` runs", .0.display())]
    NotAShard(PathBuf),
}

/// Options of a bake.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct BakeOptions {
    /// Output folder (created if missing).
    pub out: PathBuf,
    /// Overrides the manifest's `base_url`.
    pub base_url: Option<String>,
    /// How image sources are fetched: credentials, `insecure`, the blob cache shared by every
    /// image source (default: ocirootfs's). The platform is set per job.
    pub source: ocirootfs::SourceOptions,
    /// Parallel jobs; 0 = one per CPU (at most 4).
    pub jobs: usize,
    /// Rebuild even when the key is unchanged.
    pub force: bool,
    /// Only these jobs (empty = all): `NAME` (every architecture of it) or `NAME@ARCH`.
    pub only: Vec<String>,
    /// `NAME.transfer` (systemd 257) or `NAME.conf` (older systemd-sysupdate).
    pub transfer_suffix: artifacts::TransferSuffix,
    /// A secret OpenPGP key file: sign SHA256SUMS (`SHA256SUMS.gpg`), write the public
    /// keyring, and make the transfer files say `Verify=yes`.
    pub signing_key: Option<PathBuf>,
    /// Signs the root hash of `verity = true` entries (with its certificate's fingerprint);
    /// `None`: those DDIs are left unsigned, for `sysext sign`.
    pub verity_signer: Option<(fsimage::signature::Signer, String)>,
    /// `REGISTRY/PATH`: push every image to `PATH/NAME:<rebuild key>` (and `:VERSION-ARCH`),
    /// and before building a job, reuse the artifact found under its key.
    pub push: Option<String>,
}

impl BakeOptions {
    /// The fingerprint of the certificate `verity = true` entries are signed with.
    pub fn verity_signer_fingerprint(&self) -> Option<&str> {
        self.verity_signer.as_ref().map(|(_, f)| f.as_str())
    }
}

/// What happened to one image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    Built,
    UpToDate,
    /// Fetched from the registry (`--push`), where an artifact with the same rebuild key was.
    Reused,
    Failed,
}

/// One image of the report.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Entry {
    pub name: String,
    pub version: String,
    pub arch: String,
    pub mode: Mode,
    pub source: String,
    pub status: Status,
    /// `NAME-VERSION-ARCH.raw` (inside the output folder).
    pub file: String,
    pub bytes: Option<u64>,
    pub sha256: Option<String>,
    /// The rebuild key.
    pub key: Option<String>,
    /// The image's manifest digest for registry and OCI sources.
    pub image_digest: Option<String>,
    /// With `--push`: the reference the image was pushed to, or reused from.
    #[serde(default)]
    pub registry: Option<String>,
    /// Why it failed, the whole cause chain.
    pub error: Option<String>,
    /// Notes from flix/flatwrap.
    pub warnings: Vec<String>,
}

/// What a bake did.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub out: PathBuf,
    pub tool_version: String,
    pub entries: Vec<Entry>,
    /// Other files written or confirmed: SHA256SUMS (and SHA256SUMS.gpg, import-pubring.gpg
    /// when signed), NAME.transfer or NAME.conf, NAME-ARCH.bu.
    pub artifacts: Vec<String>,
    /// The fingerprint of the OpenPGP key that signed SHA256SUMS (`None`: unsigned).
    pub signed_by: Option<String>,
}

impl Report {
    pub fn failed(&self) -> usize {
        self.entries
            .iter()
            .filter(|e| e.status == Status::Failed)
            .count()
    }
}

/// `OUT/.bake-state.json`: key and digest of every image built into the folder.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct State {
    pub images: BTreeMap<String, StateEntry>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StateEntry {
    pub key: String,
    pub sha256: String,
    pub bytes: u64,
}

pub const STATE_FILE: &str = ".bake-state.json";
pub const REPORT_FILE: &str = "bake-report.json";

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> BakeError + '_ {
    move |source| BakeError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes `text` to `path` atomically unless the file already holds exactly that (so an
/// unchanged artifact keeps its mtime).
pub fn write_if_changed(path: &Path, text: impl AsRef<[u8]>) -> Result<bool, BakeError> {
    let text = text.as_ref();
    // Read back only a regular file of the same length (not a FIFO, not a huge file).
    let same_len =
        std::fs::symlink_metadata(path).is_ok_and(|m| m.is_file() && m.len() == text.len() as u64);
    if same_len && std::fs::read(path).is_ok_and(|old| old == text) {
        return Ok(false);
    }
    let out = AtomicOutput::file(path, true)?;
    std::fs::write(out.path(), text).map_err(io_err(out.path()))?;
    out.commit()?;
    Ok(true)
}

/// Runs the bake of `manifest_path` (see the module docs). Per-image failures are in the report;
/// an `Err` means the bake could not start or its shared artifacts could not be written.
pub fn bake(manifest_path: &Path, opts: &BakeOptions) -> Result<Report, BakeError> {
    let m = manifest::load(manifest_path)?;
    let only = Selection::parse(&opts.only, &m, manifest_path)?;
    if let Some(prefix) = &opts.push {
        crate::publish::job_ref(prefix, "name", "0")
            .map_err(|e| BakeError::PushPrefix(format!("{e:#}")))?;
    }
    let base_url = opts
        .base_url
        .clone()
        .or_else(|| m.base_url.clone())
        .ok_or(BakeError::NoBaseUrl)?;
    // Checked before any work starts: it goes into transfer files and Butane configs.
    let base_url = artifacts::BaseUrl::parse(&base_url).map_err(artifacts::ArtifactError::from)?;
    if opts.transfer_suffix == artifacts::TransferSuffix::Conf {
        if let Some(e) = m.extensions.iter().find(|e| e.optional) {
            return Err(manifest::ManifestError::Invalid {
                path: manifest_path.to_path_buf(),
                message: format!(
                    "{:?} is optional, which needs a sysupdate feature: systemd 257's .transfer \
                     files, not --transfer-suffix conf",
                    e.name
                ),
            }
            .into());
        }
    }
    // Each entry's file system and compressor, checked as --fs/--compression are.
    for e in &m.extensions {
        build::output_args(e)
            .and_then(|a| {
                a.check()
                    .map_err(|err| format!("extension {}: {err:#}", e.name))
            })
            .map_err(|message| manifest::ManifestError::Invalid {
                path: manifest_path.to_path_buf(),
                message,
            })?;
    }
    // A key that cannot sign fails the bake before anything is built.
    let key = opts
        .signing_key
        .as_deref()
        .map(sign::SigningKey::load)
        .transpose()?;
    let base = manifest::base_dir(manifest_path);
    std::fs::create_dir_all(&opts.out).map_err(io_err(&opts.out))?;
    let state_path = opts.out.join(STATE_FILE);
    let old_state: State = read_limited(&state_path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();

    let jobs = select_jobs(&m, &base, &only);
    let threads = match opts.jobs {
        0 => std::thread::available_parallelism().map_or(2, |n| n.get().min(4)),
        n => n,
    }
    .min(jobs.len().max(1));
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<Entry>>> = Mutex::new(vec![None; jobs.len()]);
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(job) = jobs.get(i) else { break };
                let prev = old_state.images.get(&job.file_name());
                let entry = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    build::run_job(job, &opts.out, prev, opts)
                }))
                .unwrap_or_else(|p| {
                    let msg = p
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_default();
                    job.failed(None, format!("internal error (panic): {msg}"))
                });
                if let Ok(mut r) = results.lock() {
                    r[i] = Some(entry);
                }
            });
        }
    });
    let entries: Vec<Entry> = results
        .into_inner()
        .unwrap_or_default()
        .into_iter()
        .flatten()
        .collect();

    // State: keep what still exists, update what was built.
    let mut state = State::default();
    for (f, s) in &old_state.images {
        if opts.out.join(f).is_file() {
            state.images.insert(f.clone(), s.clone());
        }
    }
    for e in &entries {
        if let (
            Status::Built | Status::UpToDate | Status::Reused,
            Some(key),
            Some(sha),
            Some(bytes),
        ) = (e.status, &e.key, &e.sha256, e.bytes)
        {
            state.images.insert(
                e.file.clone(),
                StateEntry {
                    key: key.clone(),
                    sha256: sha.clone(),
                    bytes,
                },
            );
        }
    }
    let text = serde_json::to_string_pretty(&state).unwrap_or_default() + "\n";
    write_if_changed(&state_path, &text)?;

    let mut artifacts = Vec::new();
    let su = artifacts::Sysupdate {
        base: &base_url,
        image_suffix: m.image_suffix,
        suffix: opts.transfer_suffix,
        keyring: key.as_ref().map(|k| k.public_keyring()),
    };
    for e in &m.extensions {
        if !only.any_of(&e.name) {
            continue;
        }
        let conf = su.suffix.file_name(&e.name);
        write_if_changed(
            &opts.out.join(&conf),
            artifacts::transfer_file(e.class(), &e.name, e.optional, &su)?,
        )?;
        artifacts.push(conf);
        if e.optional {
            let feature = format!("{}.feature", e.name);
            write_if_changed(
                &opts.out.join(&feature),
                artifacts::feature_file(e.class(), &e.name, false)?,
            )?;
            artifacts.push(feature);
        }
        for a in e.arches(&m) {
            if !only.has(&e.name, a) {
                continue;
            }
            let raw = artifacts::raw_name(&e.name, &e.version, a, m.image_suffix.of(e.confext));
            let bu = format!("{}-{a}.bu", e.name);
            write_if_changed(
                &opts.out.join(&bu),
                artifacts::butane(e.class(), &e.name, e.optional, &raw, &su)?,
            )?;
            artifacts.push(bu);
        }
    }
    // SHA256SUMS over every image the folder holds that we know and the transfer files just
    // written (signed with the key).
    let sums = write_sums(&opts.out, &state, key.as_ref())?;
    artifacts.splice(0..0, sums);
    let report = Report {
        out: opts.out.clone(),
        tool_version: env!("CARGO_PKG_VERSION").to_string(),
        entries,
        artifacts,
        signed_by: key.as_ref().map(|k| k.fingerprint().to_string()),
    };
    let text = serde_json::to_string_pretty(&report).unwrap_or_default() + "\n";
    write_if_changed(&opts.out.join(REPORT_FILE), &text)?;
    Ok(report)
}

/// SHA256SUMS over every image of `state` (the images the folder holds) and the transfer and
/// feature files beside them ([`sysupdate_texts`]: `install-image --from` verifies them, and
/// with the signature their origin; systemd-sysupdate reads only the lines its MatchPattern
/// matches): written by bake, after those files, and by [`collect`]. Gives the names of the
/// files written.
pub fn write_sums(
    out: &Path,
    state: &State,
    key: Option<&sign::SigningKey>,
) -> Result<Vec<String>, BakeError> {
    let texts = sysupdate_texts(out)?;
    let sums = artifacts::sha256sums(
        state
            .images
            .iter()
            .map(|(f, s)| (f.as_str(), s.sha256.as_str()))
            .chain(texts.iter().map(|(f, h)| (f.as_str(), h.as_str()))),
    );
    let sums_path = out.join("SHA256SUMS");
    let sums_changed = write_if_changed(&sums_path, &sums)?;
    let mut written = vec!["SHA256SUMS".to_string()];
    let sig_path = out.join("SHA256SUMS.gpg");
    let keyring_path = out.join(artifacts::KEYRING_FILE);
    match key {
        Some(key) => {
            // Re-signed only when SHA256SUMS changed or the signature is not this key's: a
            // signature carries its time, so an unchanged bake keeps its bytes.
            if sums_changed || !key.verifies(&sums_path, &sig_path) {
                let tmp = AtomicOutput::file(&sig_path, true)?;
                key.sign(&sums_path, tmp.path())?;
                tmp.commit()?;
            }
            write_if_changed(&keyring_path, key.public_keyring())?;
            written.push("SHA256SUMS.gpg".to_string());
            written.push(artifacts::KEYRING_FILE.to_string());
        }
        None => {
            // An unsigned bake: a signature left by an earlier signed bake no longer matches.
            for stale in [&sig_path, &keyring_path] {
                match std::fs::remove_file(stale) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                        return Err(io_err(stale)(e))
                    }
                    _ => {}
                }
            }
        }
    }
    Ok(written)
}

/// The transfer and feature files (`NAME.transfer`, `NAME.conf`, `NAME.feature`; regular
/// files) in `out`, with their sha256.
fn sysupdate_texts(out: &Path) -> Result<Vec<(String, String)>, BakeError> {
    let mut v = Vec::new();
    for e in std::fs::read_dir(out).map_err(io_err(out))? {
        let e = e.map_err(io_err(out))?;
        let Some(name) = e.file_name().to_str().map(str::to_string) else {
            continue;
        };
        let text = [".transfer", ".conf", ".feature"]
            .iter()
            .any(|x| name.strip_suffix(x).is_some_and(|n| !n.is_empty()));
        if !text || name.starts_with('.') || gentext::has_control(&name) {
            continue;
        }
        let path = e.path();
        if !std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_file()) {
            continue;
        }
        let sha = build::file_sha256(&path).map_err(|e| BakeError::Io {
            path: path.clone(),
            source: std::io::Error::other(format!("{e:#}")),
        })?;
        v.push((name, sha));
    }
    Ok(v)
}

/// Which jobs `--only` selects: `NAME` or `NAME@ARCH`, checked against the manifest.
#[derive(Debug, Default)]
pub struct Selection(Vec<(String, Option<String>)>);

impl Selection {
    pub fn parse(only: &[String], m: &manifest::Manifest, path: &Path) -> Result<Self, BakeError> {
        let invalid = |message: String| manifest::ManifestError::Invalid {
            path: path.to_path_buf(),
            message,
        };
        let mut v = Vec::new();
        for o in only {
            let (name, arch) = match o.split_once('@') {
                Some((n, a)) => (n, Some(a.to_string())),
                None => (o.as_str(), None),
            };
            let Some(e) = m.extensions.iter().find(|e| e.name == name) else {
                return Err(invalid(format!("--only {o:?}: no extension named {name:?}")).into());
            };
            if let Some(a) = &arch {
                if !e.arches(m).contains(a) {
                    return Err(invalid(format!(
                        "--only {o:?}: {name} is built for {}, not {a:?}",
                        e.arches(m).join(", ")
                    ))
                    .into());
                }
            }
            v.push((name.to_string(), arch));
        }
        Ok(Selection(v))
    }

    /// Whether the job `name` for `arch` is selected.
    pub fn has(&self, name: &str, arch: &str) -> bool {
        self.0.is_empty()
            || self
                .0
                .iter()
                .any(|(n, a)| n == name && a.as_deref().is_none_or(|a| a == arch))
    }

    /// Whether any job of the extension `name` is selected.
    pub fn any_of(&self, name: &str) -> bool {
        self.0.is_empty() || self.0.iter().any(|(n, _)| n == name)
    }
}

/// The jobs of a manifest that `only` selects, in manifest order.
pub fn select_jobs(m: &manifest::Manifest, base: &Path, only: &Selection) -> Vec<build::Job> {
    let mut jobs = Vec::new();
    for e in &m.extensions {
        for a in e.arches(m) {
            if only.has(&e.name, a) {
                jobs.push(build::Job {
                    ext: e.clone(),
                    arch: a.clone(),
                    source: e.source_for(a, base),
                    suffix: m.image_suffix.of(e.confext),
                });
            }
        }
    }
    jobs
}

/// One job of `sysext bake --plan`: a CI matrix entry.
#[derive(Debug, Clone, Serialize)]
pub struct PlanJob {
    pub name: String,
    pub version: String,
    pub arch: String,
    /// What to pass to `--only` to build this job alone.
    pub only: String,
    pub file: String,
    pub source: String,
    /// The rebuild key (the same `sysext bake` computes before it builds).
    pub key: String,
}

/// The jobs of a bake with their rebuild keys, nothing built: image sources are resolved to
/// their manifest digest for the job's platform, never unpacked.
pub fn plan(manifest_path: &Path, opts: &BakeOptions) -> Result<Vec<PlanJob>, BakeError> {
    let m = manifest::load(manifest_path)?;
    let only = Selection::parse(&opts.only, &m, manifest_path)?;
    let base = manifest::base_dir(manifest_path);
    let mut out = Vec::new();
    for job in select_jobs(&m, &base, &only) {
        let only = format!("{}@{}", job.ext.name, job.arch);
        let key = build::plan_key(&job, opts).map_err(|e| BakeError::Plan {
            job: only.clone(),
            message: format!("{e:#}"),
        })?;
        out.push(PlanJob {
            name: job.ext.name.clone(),
            version: job.ext.version.clone(),
            arch: job.arch.clone(),
            file: job.file_name(),
            source: job.source.clone(),
            only,
            key,
        });
    }
    Ok(out)
}

/// The most read of a shard's state or report (a few hundred bytes per image).
const MAX_SHARD_DOC: u64 = 64 << 20;

/// A bake folder's state or report (a shard's, for `--collect`; the state beside an image,
/// for `push`): a regular file of at most [`MAX_SHARD_DOC`] bytes.
pub(crate) fn read_limited(path: &Path) -> std::io::Result<Vec<u8>> {
    safefs::tree::read_input(path, MAX_SHARD_DOC)
        .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", path.display())))
}

/// Files of a shard that [`collect`] merges or writes again instead of copying.
fn collect_skips(name: &str) -> bool {
    name.starts_with('.')
        || name == REPORT_FILE
        || name == "SHA256SUMS"
        || name.starts_with("SHA256SUMS.")
}

/// `sysext bake --collect OUT SHARD...`: the outputs of `--only` bakes assembled into one
/// release in OUT. Every file of every shard (images, transfer files, Butane snippets) is
/// copied; the same name with other bytes in two shards is refused before anything is
/// written; SHA256SUMS is written again over all images (by [`write_sums`], signed with
/// `signing_key` when given: the shards must then have been baked with the same key, so that
/// their transfer files say `Verify=yes` and their Butane snippets carry its keyring), the
/// state and the reports are merged.
pub fn collect(
    out: &Path,
    shards: &[PathBuf],
    signing_key: Option<&Path>,
) -> Result<Report, BakeError> {
    let key = signing_key.map(sign::SigningKey::load).transpose()?;
    // name → (sha256, shard) of what goes into OUT.
    let mut files: BTreeMap<String, (String, PathBuf)> = BTreeMap::new();
    let mut state = State::default();
    let mut entries = Vec::new();
    let mut artifacts = Vec::new();
    let mut tool_version = env!("CARGO_PKG_VERSION").to_string();
    for shard in shards {
        let state_path = shard.join(STATE_FILE);
        let bytes = read_limited(&state_path).map_err(|_| BakeError::NotAShard(shard.clone()))?;
        let shard_state: State =
            serde_json::from_slice(&bytes).map_err(|_| BakeError::NotAShard(shard.clone()))?;
        let mut names = Vec::new();
        for e in std::fs::read_dir(shard).map_err(io_err(shard))? {
            let e = e.map_err(io_err(shard))?;
            // A name goes into SHA256SUMS as a line of text: UTF-8, no control characters.
            let name = e
                .file_name()
                .into_string()
                .ok()
                .filter(|n| !gentext::has_control(n))
                .ok_or_else(|| BakeError::Io {
                    path: e.path(),
                    source: std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        "a file name that is not UTF-8 or holds control characters cannot be \
                         listed in SHA256SUMS; remove it from the shard",
                    ),
                })?;
            let md = std::fs::symlink_metadata(e.path()).map_err(io_err(&e.path()))?;
            if md.is_file() && !collect_skips(&name) {
                names.push(name);
            }
        }
        names.sort();
        for name in names {
            let path = shard.join(&name);
            let sha = build::file_sha256(&path).map_err(|e| BakeError::Io {
                path: path.clone(),
                source: std::io::Error::other(format!("{e:#}")),
            })?;
            if let Some(st) = shard_state.images.get(&name) {
                if st.sha256 != sha {
                    return Err(BakeError::Io {
                        path,
                        source: std::io::Error::other(
                            "the image does not match the digest its bake recorded; bake the shard again",
                        ),
                    });
                }
                state.images.insert(name.clone(), st.clone());
            }
            match files.get(&name) {
                Some((old, first)) if *old != sha => {
                    return Err(BakeError::Conflict {
                        file: name,
                        first: first.clone(),
                        second: shard.clone(),
                    })
                }
                Some(_) => {}
                None => {
                    files.insert(name, (sha, shard.clone()));
                }
            }
        }
        if let Some(r) = read_limited(&shard.join(REPORT_FILE))
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        {
            if let Some(v) = r.get("tool_version").and_then(|v| v.as_str()) {
                tool_version = v.to_string();
            }
            for e in r
                .get("entries")
                .and_then(|e| e.as_array())
                .into_iter()
                .flatten()
            {
                if let Ok(e) = serde_json::from_value::<Entry>(e.clone()) {
                    entries.push(e);
                }
            }
            for a in r
                .get("artifacts")
                .and_then(|e| e.as_array())
                .into_iter()
                .flatten()
            {
                if let Some(a) = a
                    .as_str()
                    .filter(|a| !artifacts.iter().any(|b: &String| b == a))
                {
                    artifacts.push(a.to_string());
                }
            }
        }
    }
    // Signed shards and a signed release go together (see above).
    let shard_keyring = files
        .get(artifacts::KEYRING_FILE)
        .map(|(_, shard)| shard.join(artifacts::KEYRING_FILE));
    match (&key, &shard_keyring) {
        (Some(k), Some(p)) => {
            let theirs = read_limited(p).map_err(io_err(p))?;
            if theirs != k.public_keyring() {
                return Err(BakeError::KeyMismatch(format!(
                    "the shards were baked with another signing key than {} ({})",
                    k.fingerprint(),
                    p.display()
                )));
            }
        }
        (Some(k), None) => {
            return Err(BakeError::KeyMismatch(format!(
                "the shards were baked without --signing-key, so their transfer files say \
                 Verify=false; bake them with the key {} too",
                k.fingerprint()
            )))
        }
        (None, Some(p)) => {
            return Err(BakeError::KeyMismatch(format!(
                "the shards were baked with --signing-key ({}): pass the same key to \
                 --collect so that SHA256SUMS is signed",
                p.display()
            )))
        }
        (None, None) => {}
    }
    std::fs::create_dir_all(out).map_err(io_err(out))?;
    for (name, (sha, shard)) in &files {
        let dest = out.join(name);
        if build::file_sha256(&dest).is_ok_and(|old| old == *sha) {
            continue;
        }
        let tmp = AtomicOutput::file(&dest, true)?;
        std::fs::copy(shard.join(name), tmp.path()).map_err(io_err(&dest))?;
        tmp.commit()?;
    }
    let text = serde_json::to_string_pretty(&state).unwrap_or_default() + "\n";
    write_if_changed(&out.join(STATE_FILE), &text)?;
    for a in write_sums(out, &state, key.as_ref())? {
        if !artifacts.contains(&a) {
            artifacts.push(a);
        }
    }
    let report = Report {
        out: out.to_path_buf(),
        tool_version,
        entries,
        artifacts,
        signed_by: key.as_ref().map(|k| k.fingerprint().to_string()),
    };
    let text = serde_json::to_string_pretty(&report).unwrap_or_default() + "\n";
    write_if_changed(&out.join(REPORT_FILE), &text)?;
    Ok(report)
}
