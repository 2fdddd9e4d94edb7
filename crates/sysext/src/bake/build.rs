//! One image of a bake: resolve the source, compute the rebuild key, build through flix,
//! flatwrap or the static placer, pack to `NAME-VERSION-ARCH.raw` atomically.

use std::fs;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use safefs::atomic::AtomicOutput;
use safefs::tree::{self, Stripped, Tree, TreeOptions};
use sha2::{Digest, Sha256};
use sysext_core::cli::{CompressionSpec, OutputArgs};
use sysext_core::pack::{self, Format, Fs, PackOptions};
use sysext_core::release::{self, ExtensionRelease, ImageClass};

use super::manifest::{goarch, Extension, Mode};
use super::{artifacts, BakeOptions, Entry, StateEntry, Status};

/// One extension for one architecture.
#[derive(Debug, Clone)]
pub struct Job {
    pub ext: Extension,
    pub arch: String,
    /// The resolved source.
    pub source: String,
    /// `.raw`, `.sysext.raw` or `.confext.raw` (the manifest's `image_suffix`).
    pub suffix: &'static str,
}

impl Job {
    pub fn file_name(&self) -> String {
        artifacts::raw_name(&self.ext.name, &self.ext.version, &self.arch, self.suffix)
    }

    fn entry(&self, status: Status) -> Entry {
        Entry {
            name: self.ext.name.clone(),
            version: self.ext.version.clone(),
            arch: self.arch.clone(),
            mode: self.ext.mode,
            source: self.source.clone(),
            status,
            file: self.file_name(),
            bytes: None,
            sha256: None,
            key: None,
            image_digest: None,
            registry: None,
            error: None,
            warnings: Vec::new(),
        }
    }

    /// A failed entry with `error` as its cause.
    pub fn failed(&self, key: Option<String>, error: String) -> Entry {
        let mut e = self.entry(Status::Failed);
        e.key = key;
        e.error = Some(error);
        e
    }
}

/// Where a source comes from, for the key and the build.
enum Kind {
    Folder(PathBuf),
    Tarball(PathBuf),
    Image,
}

fn is_tarball(s: &str) -> bool {
    [".tar", ".tar.gz", ".tgz", ".tar.zst", ".tar.zstd"]
        .iter()
        .any(|x| s.ends_with(x))
}

/// A source written as a path: `/...`, `./...`, `../...`, or a tarball name. It is never
/// tried as an image reference, so a missing file is reported as one.
fn is_path(source: &str) -> bool {
    source.starts_with('/')
        || source.starts_with("./")
        || source.starts_with("../")
        || is_tarball(source)
}

/// What `source` is: an existing folder or tarball, else an image reference. A source
/// written as a path that does not exist is an error naming it.
fn kind(source: &str) -> Result<Kind> {
    let p = Path::new(source);
    if p.is_dir() {
        Ok(Kind::Folder(p.to_path_buf()))
    } else if is_tarball(source) && p.is_file() {
        Ok(Kind::Tarball(p.to_path_buf()))
    } else if is_path(source) {
        match fs::metadata(p) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
                "source {source}: no such file or folder; fix `source` (or `sources`) in the \
                 manifest, or create it (relative paths are relative to the manifest's folder)"
            ),
            Err(e) => bail!("source {source}: {e}"),
            Ok(_) => bail!(
                "source {source} is neither a folder nor a tarball (.tar, .tar.gz, .tgz, \
                 .tar.zst); fix `source` (or `sources`) in the manifest"
            ),
        }
    } else {
        Ok(Kind::Image)
    }
}

/// sha256 over a folder's listing: relative path, type, mode, size, mtime, link target. Cheap
/// (no file contents) and changes whenever a package manager or `cp` touches the tree.
pub fn folder_identity(root: &Path) -> Result<String> {
    let mut h = Sha256::new();
    for e in walkdir::WalkDir::new(root).sort_by_file_name() {
        let e = e.with_context(|| format!("listing {}", root.display()))?;
        let md = e
            .path()
            .symlink_metadata()
            .with_context(|| format!("reading {}", e.path().display()))?;
        let rel = e.path().strip_prefix(root).unwrap_or(e.path());
        h.update(rel.as_os_str().as_encoded_bytes());
        h.update(
            format!(
                "\0{:o}\0{}\0{}.{}\0",
                md.mode(),
                md.len(),
                md.mtime(),
                md.mtime_nsec()
            )
            .as_bytes(),
        );
        if md.file_type().is_symlink() {
            if let Ok(t) = fs::read_link(e.path()) {
                h.update(t.as_os_str().as_encoded_bytes());
            }
        }
        h.update(b"\n");
    }
    Ok(hex::encode(h.finalize()))
}

/// sha256 of a file's contents.
pub fn file_sha256(path: &Path) -> Result<String> {
    let mut f = fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f
            .read(&mut buf)
            .with_context(|| format!("reading {}", path.display()))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

/// The rebuild key: sha256 over the canonical entry, the architecture, the source identity
/// and the tool version.
/// For a `verity` entry, the fingerprint of the certificate that signs its root hash at bake
/// time counts too (a signed and an unsigned DDI are different images).
pub fn key(
    ext: &Extension,
    arch: &str,
    source_identity: &str,
    verity_signer: Option<&str>,
) -> String {
    let mut canon = ext.clone();
    // The per-arch map is already folded into the source identity; the list of architectures
    // does not change this image.
    canon.sources.clear();
    canon.architectures = None;
    // Whether hosts install it by default is in the transfer files, not in the image.
    canon.optional = false;
    let mut h = Sha256::new();
    h.update(serde_json::to_string(&canon).unwrap_or_default().as_bytes());
    if let Some(fpr) = verity_signer.filter(|_| ext.verity) {
        h.update(format!("\0verity-signed-by {fpr}").as_bytes());
    }
    h.update(
        format!(
            "\0{arch}\0{source_identity}\0sysext {}",
            env!("CARGO_PKG_VERSION")
        )
        .as_bytes(),
    );
    hex::encode(h.finalize())
}

/// The source identity of a folder or tarball source (an image's is its manifest digest).
fn local_identity(k: &Kind) -> Result<String> {
    Ok(match k {
        Kind::Folder(p) => format!("folder:{}", folder_identity(p)?),
        Kind::Tarball(p) => format!("tarball:{}", file_sha256(p)?),
        Kind::Image => bail!("an image source has no local identity"),
    })
}

/// The source options of a job: the bake's, with the job's platform.
fn job_source_options(job: &Job, opts: &BakeOptions) -> ocirootfs::SourceOptions {
    let mut so = opts.source.clone();
    so.platform = Some(format!("linux/{}", goarch(&job.arch)));
    so
}

/// The rebuild key of a job as [`run_job`] computes it, without building or unpacking
/// anything: an image source is resolved to its manifest digest for the job's platform.
pub fn plan_key(job: &Job, opts: &BakeOptions) -> Result<String> {
    let k = kind(&job.source)?;
    let identity = match &k {
        Kind::Image => {
            match ocirootfs::manifest_digest(&job.source, &job_source_options(job, opts))
                .with_context(|| format!("reading the source {}", job.source))?
            {
                Some(d) => format!("image:{d}"),
                None => bail!("the source {} resolved to no image", job.source),
            }
        }
        _ => local_identity(&k)?,
    };
    Ok(key(
        &job.ext,
        &job.arch,
        &identity,
        opts.verity_signer_fingerprint(),
    ))
}

/// Builds one job (or finds it up to date); never panics on bad input, reports the cause.
pub fn run_job(job: &Job, out: &Path, prev: Option<&StateEntry>, opts: &BakeOptions) -> Entry {
    let mut key_slot = None;
    match run_job_inner(job, out, prev, opts, &mut key_slot) {
        Ok(mut e) => {
            push_entry(job, out, &mut e, opts);
            e
        }
        Err(err) => job.failed(key_slot, format!("{err:#}")),
    }
}

fn run_job_inner(
    job: &Job,
    out: &Path,
    prev: Option<&StateEntry>,
    opts: &BakeOptions,
    key_slot: &mut Option<String>,
) -> Result<Entry> {
    let ext = &job.ext;
    let output = out.join(job.file_name());
    // Resolve the source and its identity.
    let source_kind = kind(&job.source)?;
    // An image is known by its manifest digest, found without unpacking it: an image whose
    // job is up to date, or reused from the registry, is never pulled.
    let image_digest = match &source_kind {
        Kind::Image => ocirootfs::manifest_digest(&job.source, &job_source_options(job, opts))
            .with_context(|| format!("reading the source {}", job.source))?,
        _ => None,
    };
    let identity = match (&source_kind, &image_digest) {
        (Kind::Image, Some(d)) => format!("image:{d}"),
        (Kind::Image, None) => bail!("the source {} resolved to no image", job.source),
        _ => local_identity(&source_kind)?,
    };
    let key = key(ext, &job.arch, &identity, opts.verity_signer_fingerprint());
    *key_slot = Some(key.clone());
    if let Some(p) = prev {
        let same_size = fs::metadata(&output).is_ok_and(|m| m.len() == p.bytes);
        if !opts.force && p.key == key && same_size {
            let mut e = job.entry(Status::UpToDate);
            e.bytes = Some(p.bytes);
            e.sha256 = Some(p.sha256.clone());
            e.key = Some(key);
            e.image_digest = image_digest;
            return Ok(e);
        }
    }
    if let (Some(prefix), false) = (&opts.push, opts.force) {
        if let Some(from) = crate::publish::reuse(prefix, job, &key, &output, &opts.source)? {
            let mut e = job.entry(Status::Reused);
            e.bytes = Some(fs::metadata(&output).map(|m| m.len()).unwrap_or_default());
            e.sha256 = Some(file_sha256(&output)?);
            e.key = Some(key);
            e.image_digest = image_digest;
            e.registry = Some(from);
            return Ok(e);
        }
    }
    let rootfs = match &source_kind {
        Kind::Image => {
            let r = ocirootfs::materialize(&job.source, &job_source_options(job, opts))
                .with_context(|| format!("reading the source {}", job.source))?;
            if r.digest != image_digest {
                bail!(
                    "the source {} changed while it was read (manifest {} became {}); bake again",
                    job.source,
                    image_digest.as_deref().unwrap_or("?"),
                    r.digest.as_deref().unwrap_or("?")
                );
            }
            Some(r)
        }
        _ => None,
    };

    let mut warnings = Vec::new();
    // Scratch beside the output, never committed: dropped (removed) on every path.
    let scratch = AtomicOutput::dir(&out.join(format!(".{}.bake", job.file_name())), true)?;
    let tree = scratch.path().join("tree");
    fs::create_dir(&tree).with_context(|| format!("creating {}", tree.display()))?;
    // Everything written into the tree goes through the safe writer; no link is followed.
    let out_tree = Tree::open(&tree, &TreeOptions::no_symlinks())?;
    let mut stripped: Vec<Stripped> = Vec::new();
    let src_root: PathBuf = match (source_kind, &rootfs) {
        (_, Some(r)) => r.path.clone(),
        (Kind::Folder(p), None) => p,
        (Kind::Tarball(p), None) => {
            if ext.mode != Mode::Static {
                bail!(
                    "a tarball source is for mode static; for {:?} give an image, oci:DIR or a rootfs folder",
                    ext.mode
                );
            }
            let dir = scratch.path().join("src");
            fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
            let f = fs::File::open(&p).with_context(|| format!("opening {}", p.display()))?;
            let mut uo = ocirootfs::unpack::UnpackOptions::default();
            uo.as_root = false;
            ocirootfs::unpack::apply_layer(&dir, f, None, None, &uo)
                .with_context(|| format!("unpacking {}", p.display()))?;
            dir
        }
        (Kind::Image, None) => unreachable_source(&job.source)?,
    };

    // The tree is packed and removed with the scratch folder: files of an image we unpacked
    // are staged as links to it.
    let linkable = rootfs.as_ref().is_some_and(|r| r.unpacked());
    let built_arch: Option<String> = match ext.mode {
        Mode::Flix => {
            let po = flix::plan::PlanOptions {
                name: ext.name.clone(),
                paths: ext.paths.clone(),
                extra_libs: ext.extra_libs.clone(),
                enable: ext.enable.clone(),
                ..Default::default()
            };
            let plan = flix::plan::build(&src_root, &po)
                .with_context(|| format!("planning {} from {}", ext.name, job.source))?;
            warnings.extend(plan.diagnostics.iter().map(|d| match &d.hint {
                Some(h) => format!("{} (hint: {h})", d.message),
                None => d.message.clone(),
            }));
            let mut so = flix::stage::StageOptions::default();
            so.keep_privileges = ext.keep_privileges;
            so.link_source = linkable;
            stripped = flix::stage::stage_tree(&plan, &tree, &so)
                .with_context(|| format!("staging {}", ext.name))?;
            plan.architecture.clone()
        }
        Mode::Flatwrap => {
            let mut po = flatwrap::plan::PlanOptions::default();
            po.reload_manager = !ext.enable.is_empty() || !ext.units.is_empty();
            let plan = flatwrap::plan::plan(&src_root, &ext.name, &ext.paths, &po)
                .with_context(|| format!("planning {} from {}", ext.name, job.source))?;
            warnings.extend(plan.warnings.iter().cloned());
            let mut so = flatwrap::stage::StageOptions::default();
            so.keep_privileges = ext.keep_privileges;
            so.link_source = linkable;
            let report = flatwrap::stage::stage_with(&plan, &tree, &so)
                .with_context(|| format!("staging {}", ext.name))?;
            stripped = report.stripped;
            place_units(
                &src_root,
                &out_tree,
                &ext.units,
                ext.keep_privileges,
                &mut stripped,
            )?;
            plan.architecture.clone()
        }
        Mode::Static => {
            let keep = ext.keep_privileges;
            let class = ext.class();
            place_static(&src_root, &out_tree, class, &ext.paths, keep, &mut stripped)?;
            place_units(&src_root, &out_tree, &ext.units, keep, &mut stripped)?;
            let arch = tree_architecture(&tree)?;
            let rel = ExtensionRelease {
                id: "_any".into(),
                architecture: Some(job.arch.clone()),
                reload_manager: !ext.units.is_empty(),
                // SYSEXT_VERSION_ID is a sysext key; a confext carries none.
                sysext_version_id: (class == ImageClass::Sysext).then(|| ext.version.clone()),
                ..Default::default()
            };
            write_new(
                &out_tree,
                &class.release_file(&ext.name),
                &rel.render(),
                0o644,
            )?;
            arch
        }
    };
    if ext.mode != Mode::Flix && !ext.enable.is_empty() {
        write_upholds(&out_tree, &ext.name, &ext.enable)?;
    }
    // What was stripped is listed in the report (and the human output's warnings).
    for s in &stripped {
        warnings.push(format!(
            "stripped {} from {} (set keep_privileges = true in the manifest to keep it)",
            s.what(),
            s.path.escape_debug()
        ));
    }
    match built_arch.as_deref() {
        Some(a) if a != job.arch => bail!(
            "the programs of {} from {} are for {a}, but the manifest builds it for {}: give a source for {} (sources.{} = ...)",
            ext.name, job.source, job.arch, job.arch, job.arch
        ),
        _ => {}
    }

    let mut po = PackOptions::default();
    // The entry's file system and compressor, through the rules --fs/--compression follow.
    output_args(ext)
        .map_err(anyhow::Error::msg)?
        .apply(&mut po)?;
    po.format = Some(Format::Raw);
    po.force = true;
    po.name = Some(ext.name.clone());
    po.class = ext.class();
    if ext.verity {
        po.format = Some(Format::Ddi);
        po.signer = opts.verity_signer.as_ref().map(|(s, _)| s.clone());
    }
    // pack writes through its own atomic temp file and rename.
    let rep =
        pack::pack(&tree, &output, &po).with_context(|| format!("packing {}", output.display()))?;
    drop(scratch);
    let mut e = job.entry(Status::Built);
    e.bytes = Some(rep.bytes);
    e.sha256 = Some(file_sha256(&output)?);
    e.key = Some(key);
    e.image_digest = image_digest;
    e.warnings = warnings;
    Ok(e)
}

/// The `--fs` and `--compression` an entry asks for, as the shared output options (their
/// checks are [`OutputArgs::check`]'s).
pub fn output_args(ext: &Extension) -> Result<OutputArgs, String> {
    let compression = ext
        .compression
        .as_deref()
        .map(str::parse::<CompressionSpec>)
        .transpose()
        .map_err(|e| format!("extension {}: compression: {e}", ext.name))?;
    Ok(OutputArgs {
        fs: match ext.fs {
            Some(bake_manifest::FsName::Erofs) => Fs::Erofs,
            _ => Fs::Squashfs,
        },
        compression,
        ..OutputArgs::default()
    })
}

/// With `--push`: pushes a built or up-to-date image under its rebuild key; a failed push
/// fails the job (its image stays in the output folder).
pub fn push_entry(job: &Job, out: &Path, e: &mut Entry, opts: &BakeOptions) {
    let (Some(prefix), Status::Built | Status::UpToDate, Some(key)) =
        (&opts.push, e.status, &e.key)
    else {
        return;
    };
    match crate::publish::push_job(prefix, job, key, &out.join(&e.file), &opts.source) {
        Ok(r) => e.registry = Some(r),
        Err(err) => {
            e.status = Status::Failed;
            e.error = Some(format!("{err:#}"));
        }
    }
}

fn unreachable_source(source: &str) -> Result<PathBuf> {
    bail!("source {source} could not be opened")
}

/// Writes the new file `rel` (inside the tree) with `text`, creating its folders.
fn write_new(tree: &Tree, rel: &Path, text: &str, mode: u32) -> Result<()> {
    if let Some(d) = rel.parent() {
        tree.create_dir_all(d, 0o755)
            .with_context(|| format!("creating /{} in the extension tree", d.display()))?;
    }
    tree.write_file(rel, text.as_bytes(), mode)
        .with_context(|| format!("writing /{} in the extension tree", rel.display()))
}

/// Resolves `rel` (relative or absolute inside the source) to a host path inside `root`, every
/// symlink resolved with `root` as `/`.
fn inside(root: &Path, rel: &str) -> Result<PathBuf> {
    let abs = Path::new("/").join(rel.trim_start_matches('/'));
    let r = safefs::rootfs::resolve(root, &abs, false)
        .with_context(|| format!("{rel} in the source {}", root.display()))?;
    let host = safefs::rootfs::host_path(root, &r);
    if fs::symlink_metadata(&host).is_err() {
        bail!(
            "{rel} is not in the source {}: check the path in the manifest",
            root.display()
        );
    }
    Ok(host)
}

/// Copies `src` (a host path inside the source `root`: file, symlink or folder) to `dst`
/// (inside the tree), keeping modes but setuid/setgid and file capabilities (unless `keep`;
/// what was stripped goes to `stripped`, see [`Tree::copy_in`]), never following links: links are copied as links, folders walked with a
/// work list (no recursion on the input's depth), files read without following a link.
fn copy_any(
    root: &Path,
    src: &Path,
    tree: &Tree,
    dst: &Path,
    keep: bool,
    stripped: &mut Vec<Stripped>,
) -> Result<()> {
    let mut todo = vec![(src.to_path_buf(), dst.to_path_buf())];
    while let Some((src, dst)) = todo.pop() {
        let md =
            fs::symlink_metadata(&src).with_context(|| format!("reading {}", src.display()))?;
        if let Some(d) = dst.parent() {
            tree.create_dir_all(d, 0o755)
                .with_context(|| format!("creating /{} in the extension tree", d.display()))?;
        }
        let ft = md.file_type();
        let shown = || format!("/{}", dst.display());
        if ft.is_symlink() {
            let t = fs::read_link(&src).with_context(|| format!("reading {}", src.display()))?;
            tree.symlink(&dst, &t)
                .with_context(|| format!("linking {} in the extension tree", shown()))?;
        } else if ft.is_dir() {
            tree.create_dir(&dst, 0o755)
                .with_context(|| format!("creating {} in the extension tree", shown()))?;
            let mut names = Vec::new();
            for e in fs::read_dir(&src).with_context(|| format!("listing {}", src.display()))? {
                names.push(
                    e.with_context(|| format!("listing {}", src.display()))?
                        .file_name(),
                );
            }
            names.sort();
            for n in names.into_iter().rev() {
                todo.push((src.join(&n), dst.join(&n)));
            }
        } else if ft.is_file() {
            let rel = src.strip_prefix(root).unwrap_or(&src);
            // The one producers' copier: opened inside the source as it was listed, privileges
            // stripped and listed (file capabilities too) unless `keep`.
            let c = tree
                .copy_in(&dst, root, rel, md.mode(), keep)
                .with_context(|| format!("copying {} to {}", src.display(), shown()))?;
            stripped.extend(c.stripped);
        } else {
            bail!(
                "{} is a special file; a static extension holds files, folders and links",
                src.display()
            )
        }
    }
    Ok(())
}

/// Places static files: `SRC:/usr/TARGET`, bare `usr/...`/`opt/...`, or (no paths) the
/// source's usr/ and opt/; for a confext `SRC:/etc/TARGET`, bare `etc/...` or the source's etc/.
fn place_static(
    root: &Path,
    tree: &Tree,
    class: ImageClass,
    paths: &[String],
    keep: bool,
    stripped: &mut Vec<Stripped>,
) -> Result<()> {
    if paths.is_empty() {
        let mut any = false;
        for top in class.top_dirs().iter().copied() {
            // The source's own usr/ and opt/, as they are (a link is copied as a link).
            if fs::symlink_metadata(root.join(top)).is_ok() {
                copy_any(root, &root.join(top), tree, Path::new(top), keep, stripped)?;
                any = true;
            }
        }
        if !any {
            match class {
                ImageClass::Sysext => bail!("the source {} has no usr/ or opt/: list what to place with paths = [\"SRC:/usr/bin/\"]", root.display()),
                ImageClass::Confext => bail!("the source {} has no etc/: list what to place with paths = [\"SRC:/etc/NAME\"]", root.display()),
            }
        }
        return Ok(());
    }
    for p in paths {
        // The one entry parser; a bare `usr/...` or `opt/...` goes to its own place.
        let full = match p.contains(':') {
            true => p.clone(),
            false => format!("{p}:/{}", p.trim_start_matches('/')),
        };
        let spec = sysext_core::entries::parse_entry_for(class, &full)?;
        let Some(target) = spec.target else {
            bail!("paths entry {p:?} has no target; give it as SRC:/usr/TARGET");
        };
        let from = inside(root, &spec.source)?;
        let mut to = target
            .path
            .strip_prefix("/")
            .unwrap_or(&target.path)
            .to_path_buf();
        // "dir/" as a target: into that folder under the source's file name.
        let from_is_dir = fs::symlink_metadata(&from).is_ok_and(|m| m.is_dir());
        if target.into_dir && !from_is_dir {
            to = to.join(from.file_name().unwrap_or_default());
        }
        copy_any(root, &from, tree, &to, keep, stripped)?;
    }
    Ok(())
}

/// Installs unit files of the source into usr/lib/systemd/system/.
fn place_units(
    root: &Path,
    tree: &Tree,
    units: &[String],
    keep: bool,
    stripped: &mut Vec<Stripped>,
) -> Result<()> {
    for u in units {
        let from = inside(root, u)?;
        let name = from.file_name().unwrap_or_default().to_owned();
        let to = Path::new("usr/lib/systemd/system").join(name);
        copy_any(root, &from, tree, &to, keep, stripped)?;
    }
    Ok(())
}

/// Most bytes of a unit file read back for its `WantedBy=`.
const MAX_UNIT_BYTES: u64 = 1 << 20;

/// `Upholds=` drop-ins for every enabled unit on its `WantedBy=` targets.
fn write_upholds(tree: &Tree, name: &str, enable: &[String]) -> Result<()> {
    let dir = Path::new("usr/lib/systemd/system");
    for u in enable {
        // Read back inside the tree: a unit that is a link resolves in the tree, not the host.
        let bytes = tree::read_in_root(tree.root_path(), &dir.join(u), MAX_UNIT_BYTES)
            .with_context(|| {
                format!("enable = {u:?}: the unit is not in the extension; add it to units")
            })?;
        let text = String::from_utf8_lossy(&bytes);
        let mut targets = sysext_core::units::wanted_by(&text);
        if targets.is_empty() {
            targets.push("multi-user.target".into());
        }
        for t in targets {
            write_new(
                tree,
                &dir.join(format!("{t}.d")).join(format!("10-{name}-{u}.conf")),
                &format!(
                    "# Written by sysext bake: start {u} with the extension.\n[Unit]\nUpholds={u}\n",
                    // Checked at manifest parse time; `%` escaped for the unit line.
                    u = gentext::unit_escape(u)
                ),
                0o644,
            )?;
        }
    }
    Ok(())
}

/// The architecture of the ELF objects in the tree; an error if they disagree.
fn tree_architecture(tree: &Path) -> Result<Option<String>> {
    let mut found: Option<(String, PathBuf)> = None;
    for e in walkdir::WalkDir::new(tree) {
        let e = e.with_context(|| format!("listing {}", tree.display()))?;
        if !e.file_type().is_file() {
            continue;
        }
        let Ok(Some(info)) = elf_closure::scan_file(e.path()) else {
            continue;
        };
        let Some(a) = release::arch_from_elf(info.machine, info.class64, info.little_endian) else {
            continue;
        };
        match &found {
            None => found = Some((a.to_string(), e.path().to_path_buf())),
            Some((f, p)) if f != a => bail!(
                "{} is for {a} but {} is for {f}: one image holds one architecture",
                e.path().strip_prefix(tree).unwrap_or(e.path()).display(),
                p.strip_prefix(tree).unwrap_or(p).display()
            ),
            _ => {}
        }
    }
    Ok(found.map(|f| f.0))
}
