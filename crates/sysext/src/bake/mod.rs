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
    /// Only these extensions (empty = all).
    pub only: Vec<String>,
    /// `NAME.transfer` (systemd 257) or `NAME.conf` (older systemd-sysupdate).
    pub transfer_suffix: artifacts::TransferSuffix,
    /// A secret OpenPGP key file: sign SHA256SUMS (`SHA256SUMS.gpg`), write the public
    /// keyring, and make the transfer files say `Verify=yes`.
    pub signing_key: Option<PathBuf>,
}

/// What happened to one image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    Built,
    UpToDate,
    Failed,
}

/// One image of the report.
#[derive(Debug, Clone, Serialize)]
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
    if std::fs::read(path).is_ok_and(|old| old == text) {
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
    for o in &opts.only {
        if !m.extensions.iter().any(|e| &e.name == o) {
            return Err(manifest::ManifestError::Invalid {
                path: manifest_path.to_path_buf(),
                message: format!("no extension named {o:?}"),
            }
            .into());
        }
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
    // A key that cannot sign fails the bake before anything is built.
    let key = opts
        .signing_key
        .as_deref()
        .map(sign::SigningKey::load)
        .transpose()?;
    let base = manifest::base_dir(manifest_path);
    std::fs::create_dir_all(&opts.out).map_err(io_err(&opts.out))?;
    let state_path = opts.out.join(STATE_FILE);
    let old_state: State = std::fs::read(&state_path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();

    let mut jobs = Vec::new();
    for e in &m.extensions {
        if !opts.only.is_empty() && !opts.only.contains(&e.name) {
            continue;
        }
        for a in e.arches(&m) {
            jobs.push(build::Job {
                ext: e.clone(),
                arch: a.clone(),
                source: e.source_for(a, &base),
            });
        }
    }
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
        if let (Status::Built | Status::UpToDate, Some(key), Some(sha), Some(bytes)) =
            (e.status, &e.key, &e.sha256, e.bytes)
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

    // SHA256SUMS over every image the folder holds that we know.
    let mut artifacts = Vec::new();
    let sums = artifacts::sha256sums(
        state
            .images
            .iter()
            .map(|(f, s)| (f.as_str(), s.sha256.as_str())),
    );
    let sums_path = opts.out.join("SHA256SUMS");
    let sums_changed = write_if_changed(&sums_path, &sums)?;
    artifacts.push("SHA256SUMS".to_string());
    let sig_path = opts.out.join("SHA256SUMS.gpg");
    let keyring_path = opts.out.join(artifacts::KEYRING_FILE);
    match &key {
        Some(key) => {
            // Re-signed only when SHA256SUMS changed or the signature is not this key's: a
            // signature carries its time, so an unchanged bake keeps its bytes.
            if sums_changed || !key.verifies(&sums_path, &sig_path) {
                let out = AtomicOutput::file(&sig_path, true)?;
                key.sign(&sums_path, out.path())?;
                out.commit()?;
            }
            write_if_changed(&keyring_path, key.public_keyring())?;
            artifacts.push("SHA256SUMS.gpg".to_string());
            artifacts.push(artifacts::KEYRING_FILE.to_string());
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
    let su = artifacts::Sysupdate {
        base: &base_url,
        suffix: opts.transfer_suffix,
        keyring: key.as_ref().map(|k| k.public_keyring()),
    };
    for e in &m.extensions {
        if !opts.only.is_empty() && !opts.only.contains(&e.name) {
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
            let raw = artifacts::raw_name(&e.name, &e.version, a);
            let bu = format!("{}-{a}.bu", e.name);
            write_if_changed(
                &opts.out.join(&bu),
                artifacts::butane(e.class(), &e.name, e.optional, &raw, &su)?,
            )?;
            artifacts.push(bu);
        }
    }
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
