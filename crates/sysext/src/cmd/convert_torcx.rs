//! `sysext convert-torcx TARBALL NAME`: an old Flatcar Torcx package (`.torcx.tgz` holding
//! `.torcx/manifest.json`, kind `image-manifest-v0`) to a systemd-sysext extension.
//!
//! The tarball is unpacked (safely, by `ocirootfs::unpack::apply_layer`) into a scratch folder
//! beside the output; the manifest's lists are mapped to their sysext places (binaries to
//! `usr/bin/`, units to `usr/lib/systemd/system/` with `/run/torcx/...` paths rewritten,
//! tmpfiles/sysusers to `usr/lib/{tmpfiles,sysusers}.d/`, libraries to `usr/lib/NAME/`), the
//! extension-release file is written and the tree packed atomically. Whatever could not be
//! mapped is reported with a hint.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Component, Path, PathBuf};
use sysext_core::cli::Exit;

use anyhow::{bail, Context, Result};
use clap::Args;
use safefs::atomic::AtomicOutput;
use safefs::tree::{self, Stripped, Tree, TreeOptions};
use serde::{Deserialize, Serialize};
use sysext_core::cli::OutputArgs;
use sysext_core::pack::{pack, PackOptions, PackReport};
use sysext_core::release::{self, ExtensionRelease};

/// Convert a Torcx package tarball (.torcx.tgz) into a systemd-sysext extension.
#[derive(Debug, Args)]
pub struct ConvertTorcxArgs {
    /// The Torcx image tarball (gzip/zstd/plain tar holding .torcx/manifest.json).
    pub tarball: PathBuf,
    /// Extension name.
    pub name: String,
    #[command(flatten)]
    pub out: OutputArgs,
    /// Bind the extension to this OS ID (e.g. flatcar); default `_any`.
    #[arg(long)]
    pub os: Option<String>,
    /// VERSION_ID to require of the host (only with --os).
    #[arg(long, requires = "os")]
    pub os_version: Option<String>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Keep setuid/setgid bits of the package's files (stripped and listed by default).
    #[arg(long)]
    pub keep_privileges: bool,
}

/// Torcx's image manifest (`image-manifest-v0`).
#[derive(Debug, Deserialize)]
struct Manifest {
    kind: String,
    #[serde(default)]
    value: ManifestValue,
}

#[derive(Debug, Default, Deserialize)]
struct ManifestValue {
    #[serde(default, alias = "binaries")]
    bin: Vec<String>,
    #[serde(default)]
    network: Vec<String>,
    #[serde(default)]
    units: Vec<String>,
    #[serde(default)]
    sysusers: Vec<String>,
    #[serde(default)]
    tmpfiles: Vec<String>,
}

/// One file placed in the extension.
#[derive(Debug, Serialize)]
pub struct Placed {
    /// Path inside the Torcx archive.
    pub from: String,
    /// Path inside the extension (and on the merged host).
    pub to: String,
    pub kind: &'static str,
}

/// Something the conversion could not map.
#[derive(Debug, Serialize)]
pub struct Unmapped {
    pub path: String,
    pub reason: String,
    pub hint: String,
}

/// A binary that needs libraries now living under `/usr/lib/NAME/`.
#[derive(Debug, Serialize)]
pub struct LibraryUse {
    pub binary: String,
    pub libraries: Vec<String>,
    pub hint: String,
}

/// What `convert-torcx` did.
#[derive(Debug, Serialize)]
pub struct ConvertReport {
    pub name: String,
    pub placed: Vec<Placed>,
    /// Unit lines rewritten, as `unit: old -> new`.
    pub rewritten: Vec<String>,
    pub unmapped: Vec<Unmapped>,
    pub library_users: Vec<LibraryUse>,
    pub release: ExtensionRelease,
    pub pack: PackReport,
    /// Setuid/setgid bits stripped (none with --keep-privileges).
    pub stripped: Vec<Stripped>,
}

pub fn run(args: ConvertTorcxArgs) -> Result<Exit> {
    // Before anything is read: the error names the value and the rule.
    release::validate_new_name(&args.name)?;
    args.out.check()?;
    let output = args.out.path(&args.name);
    if !args.out.force && fs::symlink_metadata(&output).is_ok() {
        bail!(
            "{} already exists: pass --force to replace it",
            output.display()
        );
    }
    let parent = match output.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let file_name = output
        .file_name()
        .with_context(|| format!("output {} has no file name", output.display()))?
        .to_string_lossy()
        .into_owned();
    // Scratch beside the output, never committed: removed on every path.
    let scratch = AtomicOutput::dir(&parent.join(format!(".{file_name}.torcx")), true)
        .with_context(|| format!("creating a scratch folder in {}", parent.display()))?;
    let src = scratch.path().join("src");
    let tree = scratch.path().join("tree");
    for d in [&src, &tree] {
        fs::create_dir(d).with_context(|| format!("creating {}", d.display()))?;
    }
    let f = safefs::tree::open_input(&args.tarball)
        .with_context(|| format!("opening {}", args.tarball.display()))?;
    let mut uo = ocirootfs::unpack::UnpackOptions::default();
    uo.as_root = false;
    ocirootfs::unpack::apply_layer(&src, f, None, None, &uo).with_context(|| {
        format!(
            "unpacking {} (is it a Torcx .torcx.tgz?)",
            args.tarball.display()
        )
    })?;

    // The converted tree is written through the safe writer: no link in it is ever followed,
    // so two archive paths that map to one place (one of them a link) cannot send a file out.
    let out = Tree::open(&tree, &TreeOptions::no_symlinks())?;
    let mut conv = convert(&src, &out, &args.name, &args.tarball, args.keep_privileges)?;

    let mut rel = ExtensionRelease::default();
    if let Some(os) = &args.os {
        rel.id = os.clone();
        rel.version_id = args.os_version.clone();
    }
    rel.architecture = conv.architecture.clone();
    rel.reload_manager = conv.has_units;
    write_new(
        &out,
        &release::release_file_path(&args.name),
        rel.render().as_bytes(),
    )?;

    let mut po = PackOptions::default();
    args.out.apply(&mut po)?;
    po.name = Some(args.name.clone());
    let pack_report = pack(&tree, &output, &po)
        .with_context(|| format!("packing the converted tree into {}", output.display()))?;
    drop(scratch);

    let report = ConvertReport {
        name: args.name.clone(),
        placed: std::mem::take(&mut conv.placed),
        rewritten: std::mem::take(&mut conv.rewritten),
        unmapped: std::mem::take(&mut conv.unmapped),
        library_users: std::mem::take(&mut conv.library_users),
        release: rel,
        pack: pack_report,
        stripped: std::mem::take(&mut conv.stripped),
    };
    tree::report_stripped("convert-torcx", &report.stripped, "--keep-privileges");
    for u in &report.unmapped {
        eprintln!(
            "warning: not converted: {}: {} (hint: {})",
            u.path, u.reason, u.hint
        );
    }
    for l in &report.library_users {
        eprintln!(
            "note: {} needs {} (hint: {})",
            l.binary,
            l.libraries.join(", "),
            l.hint
        );
    }
    if args.json {
        super::print_json(&report)?;
    } else {
        // The summary is for people: stderr, as every producer's.
        eprintln!(
            "{}: {} ({} files placed, {} unit lines rewritten, {} not converted)",
            report.name,
            report.pack.output.display(),
            report.placed.len(),
            report.rewritten.len(),
            report.unmapped.len()
        );
        for p in &report.placed {
            eprintln!("  {} -> {}", p.from, p.to);
        }
    }
    Ok(Exit::OK)
}

#[derive(Default)]
struct Conversion {
    placed: Vec<Placed>,
    rewritten: Vec<String>,
    unmapped: Vec<Unmapped>,
    library_users: Vec<LibraryUse>,
    architecture: Option<String>,
    has_units: bool,
    stripped: Vec<Stripped>,
    keep_privileges: bool,
}

/// A manifest path as a clean relative path inside the archive, or an error naming it.
fn archive_rel(entry: &str, list: &str, tarball: &Path) -> Result<PathBuf> {
    let mut out = PathBuf::new();
    for c in Path::new(entry).components() {
        match c {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(n) => out.push(n),
            _ => bail!(
                "manifest of {} lists {entry:?} under {list:?}: a path leaving the archive; fix the manifest",
                tarball.display()
            ),
        }
    }
    if out.as_os_str().is_empty() {
        bail!(
            "manifest of {} lists an empty path under {list:?}",
            tarball.display()
        );
    }
    Ok(out)
}

fn write_new(out: &Tree, rel: &Path, bytes: &[u8]) -> Result<()> {
    if let Some(p) = rel.parent() {
        out.create_dir_all(p, 0o755)
            .with_context(|| format!("creating /{} in the extension tree", p.display()))?;
    }
    out.write_file(rel, bytes, 0o644)
        .with_context(|| format!("writing /{} in the extension tree", rel.display()))
}

/// Most bytes of `.torcx/manifest.json` and of a unit file.
const MAX_TEXT_BYTES: u64 = 1 << 20;

/// Opens `rel` in the unpacked archive `src` (links resolved with the archive as `/`: a link
/// never reaches the build host), a regular file, or an error naming it.
fn open_in(src: &Path, rel: &Path, tarball: &Path) -> Result<(fs::File, u32)> {
    let f = tree::open_in_root(src, rel).with_context(|| {
        format!(
            "{} lists /{} but the archive has no such regular file (or a dangling symlink)",
            tarball.display(),
            rel.display()
        )
    })?;
    let mode = std::os::unix::fs::MetadataExt::mode(&f.metadata()?) & 0o7777;
    Ok((f, mode))
}

/// Fails when something is already at `to` in the tree.
fn not_taken(out: &Tree, to: &Path, tarball: &Path) -> Result<()> {
    if out.stat(to)?.is_some() {
        bail!(
            "two entries of {} map to the same place /{}; rename one",
            tarball.display(),
            to.display()
        );
    }
    Ok(())
}

/// Copies `rel` (inside `src`) to `to` in the tree: symlinks inside the archive are followed
/// with the archive as `/`, file modes are kept but setuid/setgid (unless kept; listed).
fn copy_in(
    src: &Path,
    rel: &Path,
    out: &Tree,
    to: &Path,
    tarball: &Path,
    conv: &mut Conversion,
) -> Result<()> {
    let (f, mode) = open_in(src, rel, tarball)?;
    if let Some(p) = to.parent() {
        out.create_dir_all(p, 0o755)
            .with_context(|| format!("creating /{} in the extension tree", p.display()))?;
    }
    not_taken(out, to, tarball)?;
    let (mode, strip) = tree::strip_privilege(&rel_str(to), mode, conv.keep_privileges);
    conv.stripped.extend(strip);
    let dst = out
        .create_file(to, 0o600)
        .with_context(|| format!("creating /{} in the extension tree", to.display()))?;
    tree::copy_sparse(&f, &dst)
        .with_context(|| format!("copying /{} to /{}", rel.display(), to.display()))?;
    dst.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(mode))
        .with_context(|| format!("setting the mode of /{}", to.display()))?;
    Ok(())
}

fn rel_str(p: &Path) -> String {
    format!("/{}", p.display())
}

fn convert(
    src: &Path,
    out: &Tree,
    name: &str,
    tarball: &Path,
    keep_privileges: bool,
) -> Result<Conversion> {
    let text = tree::read_in_root(src, Path::new(".torcx/manifest.json"), MAX_TEXT_BYTES)
        .map_err(|_| {
        anyhow::anyhow!(
            "{} has no .torcx/manifest.json: not a Torcx image (give the .torcx.tgz of a Torcx package)",
            tarball.display()
        )
    })?;
    let manifest: Manifest = serde_json::from_slice(&text).with_context(|| {
        format!(
            "parsing .torcx/manifest.json of {} (expected kind image-manifest-v0)",
            tarball.display()
        )
    })?;
    if manifest.kind != "image-manifest-v0" {
        bail!(
            ".torcx/manifest.json of {} has kind {:?}; only image-manifest-v0 is known",
            tarball.display(),
            manifest.kind
        );
    }
    let v = &manifest.value;
    let mut conv = Conversion {
        keep_privileges,
        ..Conversion::default()
    };
    // Archive path -> host path, for rewriting /run/torcx/unpack/X/... references.
    let mut moved: BTreeMap<PathBuf, String> = BTreeMap::new();
    let mut referenced: Vec<PathBuf> = vec![PathBuf::from(".torcx/manifest.json")];

    let simple: [(&str, &Vec<String>, &str, &'static str); 3] = [
        ("bin", &v.bin, "usr/bin", "binary"),
        ("sysusers", &v.sysusers, "usr/lib/sysusers.d", "sysusers"),
        ("tmpfiles", &v.tmpfiles, "usr/lib/tmpfiles.d", "tmpfiles"),
    ];
    let mut binaries = Vec::new();
    for (list, entries, dest, kind) in simple {
        for e in entries {
            let rel = archive_rel(e, list, tarball)?;
            let base = rel.file_name().expect("normal last component");
            let to_rel = Path::new(dest).join(base);
            copy_in(src, &rel, out, &to_rel, tarball, &mut conv)?;
            if kind == "binary" {
                binaries.push((rel.clone(), out.root_path().join(&to_rel)));
            }
            moved.insert(rel.clone(), rel_str(&to_rel));
            conv.placed.push(Placed {
                from: rel_str(&rel),
                to: rel_str(&to_rel),
                kind,
            });
            referenced.push(rel);
        }
    }
    for e in &v.network {
        let rel = archive_rel(e, "network", tarball)?;
        conv.unmapped.push(Unmapped {
            path: rel_str(&rel),
            reason:
                "a networkd file (manifest list \"network\"); extensions only merge /usr and /opt"
                    .into(),
            hint: "install it under /etc/systemd/network/ (e.g. with Ignition/Butane)".into(),
        });
        referenced.push(rel);
    }
    // Libraries: files under lib/, lib64/, usr/lib/ (but not systemd's folders).
    let mut libs: Vec<String> = Vec::new();
    let units_rel: Vec<PathBuf> = v
        .units
        .iter()
        .map(|e| archive_rel(e, "units", tarball))
        .collect::<Result<_>>()?;
    referenced.extend(units_rel.iter().cloned());
    let mut files: Vec<PathBuf> = Vec::new();
    for entry in walkdir::WalkDir::new(src).sort_by_file_name() {
        let entry = entry.with_context(|| format!("walking the unpacked {}", tarball.display()))?;
        if entry.file_type().is_dir() {
            continue;
        }
        let rel = entry
            .path()
            .strip_prefix(src)
            .expect("under src")
            .to_path_buf();
        files.push(rel);
    }
    for rel in &files {
        if referenced.contains(rel) {
            continue;
        }
        let lib_rest = ["usr/lib", "usr/lib64", "lib", "lib64"]
            .iter()
            .find_map(|p| rel.strip_prefix(p).ok())
            .filter(|rest| {
                !rest.starts_with("systemd")
                    && !rest.starts_with("tmpfiles.d")
                    && !rest.starts_with("sysusers.d")
            });
        if let Some(rest) = lib_rest {
            let to_rel = Path::new("usr/lib").join(name).join(rest);
            if let Some(p) = to_rel.parent() {
                out.create_dir_all(p, 0o755)
                    .with_context(|| format!("creating /{} in the extension tree", p.display()))?;
            }
            let from = src.join(rel);
            let md = fs::symlink_metadata(&from)
                .with_context(|| format!("reading {}", from.display()))?;
            if md.file_type().is_symlink() {
                // Library symlinks (libfoo.so.1 -> libfoo.so.1.2) keep their relative target.
                let target = fs::read_link(&from)
                    .with_context(|| format!("reading the link {}", from.display()))?;
                if target.is_absolute() {
                    conv.unmapped.push(Unmapped {
                        path: rel_str(rel),
                        reason: format!("an absolute symlink to {}", target.display()),
                        hint: "make it relative in the Torcx package, or add it by hand".into(),
                    });
                    continue;
                }
                not_taken(out, &to_rel, tarball)?;
                out.symlink(&to_rel, &target)
                    .with_context(|| format!("creating /{}", to_rel.display()))?;
            } else if md.is_file() {
                copy_in(src, rel, out, &to_rel, tarball, &mut conv)?;
            } else {
                conv.unmapped.push(Unmapped {
                    path: rel_str(rel),
                    reason: "not a regular file or symlink".into(),
                    hint: "special files have no place in an extension".into(),
                });
                continue;
            }
            if let Some(f) = rel.file_name() {
                libs.push(f.to_string_lossy().into_owned());
            }
            moved.insert(rel.clone(), rel_str(&to_rel));
            conv.placed.push(Placed {
                from: rel_str(rel),
                to: rel_str(&to_rel),
                kind: "library",
            });
        } else {
            conv.unmapped.push(Unmapped {
                path: rel_str(rel),
                reason: "not referenced by .torcx/manifest.json and not a library".into(),
                hint: "add it to the extension tree by hand (under usr/ or opt/) and repack with `sysext pack`, or drop it".into(),
            });
        }
    }
    // Units, with /run/torcx paths rewritten.
    for rel in &units_rel {
        let s = rel.to_string_lossy();
        let sub = match s.find("systemd/system/") {
            Some(i) => PathBuf::from(&s[i + "systemd/system/".len()..]),
            None => PathBuf::from(rel.file_name().expect("normal last component")),
        };
        let to_rel = Path::new("usr/lib/systemd/system").join(&sub);
        let from = src.join(rel);
        let md = fs::symlink_metadata(&from).with_context(|| {
            format!(
                "{} lists /{} under \"units\" but the archive has no such file",
                tarball.display(),
                rel.display()
            )
        })?;
        if let Some(p) = to_rel.parent() {
            out.create_dir_all(p, 0o755)
                .with_context(|| format!("creating /{} in the extension tree", p.display()))?;
        }
        not_taken(out, &to_rel, tarball)?;
        if md.file_type().is_symlink() && sub.components().count() > 1 {
            // A .wants/ link: keep it, pointing at the unit's name.
            let target =
                fs::read_link(&from).with_context(|| format!("reading {}", from.display()))?;
            let base = target.file_name().map(PathBuf::from).unwrap_or(target);
            out.symlink(&to_rel, &Path::new("..").join(&base))
                .with_context(|| format!("creating /{}", to_rel.display()))?;
        } else {
            let (_, mode) = open_in(src, rel, tarball)?;
            let bytes = tree::read_in_root(src, rel, MAX_TEXT_BYTES)
                .with_context(|| format!("reading the unit /{}", rel.display()))?;
            let text = String::from_utf8(bytes)
                .with_context(|| format!("the unit /{} is not UTF-8 text", rel.display()))?;
            let new = rewrite_unit(&text, &moved, &sub.to_string_lossy(), &mut conv);
            let (mode, strip) = tree::strip_privilege(&rel_str(&to_rel), mode, keep_privileges);
            conv.stripped.extend(strip);
            out.write_file(&to_rel, new.as_bytes(), mode)
                .with_context(|| format!("writing /{}", to_rel.display()))?;
        }
        conv.has_units = true;
        conv.placed.push(Placed {
            from: rel_str(rel),
            to: rel_str(&to_rel),
            kind: "unit",
        });
    }
    // Architecture from the binaries; libraries binaries need from usr/lib/NAME.
    let mut arches = std::collections::BTreeSet::new();
    for (rel, placed) in &binaries {
        let info = match elf_closure::scan_file(placed) {
            Ok(Some(i)) => i,
            Ok(None) => continue,
            Err(e) => {
                conv.unmapped.push(Unmapped {
                    path: rel_str(rel),
                    reason: format!("unreadable ELF: {e}"),
                    hint: "check the binary in the Torcx package".into(),
                });
                continue;
            }
        };
        if let Some(a) = release::arch_from_elf(info.machine, info.class64, info.little_endian) {
            arches.insert(a.to_string());
        }
        let needed: Vec<String> = info
            .needed
            .iter()
            .filter(|n| libs.contains(n))
            .cloned()
            .collect();
        if !needed.is_empty() {
            conv.library_users.push(LibraryUse {
                binary: rel_str(rel),
                libraries: needed,
                hint: format!(
                    "the libraries now live in /usr/lib/{name}/: run it with LD_LIBRARY_PATH=/usr/lib/{name} or give it an rpath"
                ),
            });
        }
    }
    match arches.len() {
        0 => {}
        1 => conv.architecture = arches.into_iter().next(),
        _ => conv.unmapped.push(Unmapped {
            path: "ARCHITECTURE".into(),
            reason: format!("binaries of several architectures: {arches:?}"),
            hint: "ARCHITECTURE left unset; split the package per architecture".into(),
        }),
    }
    Ok(conv)
}

/// Rewrites `/run/torcx/bin/X` and `/run/torcx/unpack/IMAGE/PATH` in `Exec*=` and
/// `Environment*=` lines to the paths the files now have.
fn rewrite_unit(
    text: &str,
    moved: &BTreeMap<PathBuf, String>,
    unit: &str,
    conv: &mut Conversion,
) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.split_inclusive('\n') {
        let key = line.trim_start();
        let applies = key.starts_with("Exec") || key.starts_with("Environment");
        if !applies || !line.contains("/run/torcx/") {
            if line.contains("/run/torcx/") {
                conv.unmapped.push(Unmapped {
                    path: format!("{unit}: {}", line.trim_end()),
                    reason: "a /run/torcx path outside Exec*=/Environment*= lines".into(),
                    hint: "edit the unit by hand to the new /usr paths".into(),
                });
            }
            out.push_str(line);
            continue;
        }
        let mut new = String::with_capacity(line.len());
        let mut rest = line;
        while let Some(i) = rest.find("/run/torcx/") {
            new.push_str(&rest[..i]);
            let tail = &rest[i..];
            let end = tail
                .find(|c: char| c.is_whitespace() || "\"':;=".contains(c))
                .unwrap_or(tail.len());
            let token = &tail[..end];
            match map_torcx_path(token, moved) {
                Some(p) => new.push_str(&p),
                None => {
                    conv.unmapped.push(Unmapped {
                        path: format!("{unit}: {token}"),
                        reason: "a /run/torcx path with no new place".into(),
                        hint: "edit the unit by hand".into(),
                    });
                    new.push_str(token);
                }
            }
            rest = &tail[end..];
        }
        new.push_str(rest);
        if new != line {
            conv.rewritten
                .push(format!("{unit}: {} -> {}", line.trim_end(), new.trim_end()));
        }
        out.push_str(&new);
    }
    out
}

fn map_torcx_path(token: &str, moved: &BTreeMap<PathBuf, String>) -> Option<String> {
    if let Some(bin) = token.strip_prefix("/run/torcx/bin/") {
        if bin.is_empty() || bin.contains('/') {
            return None;
        }
        return Some(format!("/usr/bin/{bin}"));
    }
    if token == "/run/torcx/bin" {
        return Some("/usr/bin".into());
    }
    let after = token.strip_prefix("/run/torcx/unpack/")?;
    let (_, path) = after.split_once('/')?;
    let rel = archive_path_clean(path)?;
    if let Some(p) = moved.get(&rel) {
        return Some(p.clone());
    }
    // A folder of moved files (e.g. .../bin): map by the first moved file under it.
    let dir_of = moved
        .iter()
        .find(|(k, _)| k.parent() == Some(rel.as_path()))
        .and_then(|(_, v)| Path::new(v).parent().map(|p| p.display().to_string()));
    dir_of
}

fn archive_path_clean(p: &str) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in Path::new(p).components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            _ => return None,
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewrites_torcx_paths_in_exec_and_environment_lines_only() {
        let mut moved = BTreeMap::new();
        moved.insert(PathBuf::from("bin/dockerd"), "/usr/bin/dockerd".to_string());
        moved.insert(
            PathBuf::from("lib/libx.so.1"),
            "/usr/lib/docker/libx.so.1".to_string(),
        );
        let mut conv = Conversion::default();
        let unit = "[Service]\n\
            ExecStart=/run/torcx/bin/dockerd --x=1\n\
            ExecStartPre=-/run/torcx/unpack/docker/bin/dockerd -v\n\
            Environment=\"LD_LIBRARY_PATH=/run/torcx/unpack/docker/lib\" PATH=/run/torcx/bin:/usr/bin\n\
            ExecStop=/run/torcx/unpack/docker/share/nothing\n\
            Description=see /run/torcx/bin/dockerd\n";
        let new = rewrite_unit(unit, &moved, "docker.service", &mut conv);
        assert!(new.contains("ExecStart=/usr/bin/dockerd --x=1\n"), "{new}");
        assert!(new.contains("ExecStartPre=-/usr/bin/dockerd -v\n"), "{new}");
        assert!(
            new.contains("\"LD_LIBRARY_PATH=/usr/lib/docker\" PATH=/usr/bin:/usr/bin\n"),
            "{new}"
        );
        // Unknown paths and other keys stay, and are reported.
        assert!(new.contains("ExecStop=/run/torcx/unpack/docker/share/nothing\n"));
        assert!(new.contains("Description=see /run/torcx/bin/dockerd\n"));
        assert_eq!(conv.unmapped.len(), 2, "{:?}", conv.unmapped);
        assert_eq!(conv.rewritten.len(), 3, "{:?}", conv.rewritten);
    }

    #[test]
    fn manifest_paths_must_stay_inside() {
        let t = Path::new("x.tgz");
        assert_eq!(
            archive_rel("/bin/./foo", "bin", t).unwrap(),
            PathBuf::from("bin/foo")
        );
        assert!(archive_rel("/bin/../../etc/passwd", "bin", t).is_err());
        assert!(archive_rel("/", "bin", t).is_err());
        assert!(map_torcx_path("/run/torcx/unpack/x/../../etc", &BTreeMap::new()).is_none());
    }
}
