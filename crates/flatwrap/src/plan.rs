//! What to build, decided before any byte is written: the entries (launcher or link, and where
//! each goes on the host), the rootfs' top-level layout the launchers recreate, the mapping of
//! `/etc`, `/var` and `/home`, and the architecture for the release file.
//!
//! Every path of the rootfs is resolved with the rootfs as `/` ([`safefs::rootfs`], with
//! missing components kept): absolute symlink targets are re-rooted and `..` is clamped, so
//! nothing resolves against the build host.

use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use safefs::rootfs::{self, Missing, RootfsError};
use serde::Serialize;
use sysext_core::release;
use sysext_core::units;

/// Where a host directory (`/etc`, `/var`, `/home` + `/root`) comes from at run time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Map {
    /// The host's directory, bound in read-write.
    #[default]
    Host,
    /// The rootfs' own copy, read-only.
    Chroot,
}

impl Map {
    /// The word the launcher and the upstream env variables use.
    pub fn as_str(self) -> &'static str {
        match self {
            Map::Host => "host",
            Map::Chroot => "chroot",
        }
    }
}

/// Options for [`plan`].
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct PlanOptions {
    /// Default for `ETCMAP` (where `/etc` comes from).
    pub etc: Map,
    /// Default for `VARMAP`.
    pub var: Map,
    /// Default for `HOMEMAP` (`/home` and `/root`).
    pub home: Map,
    /// Write `EXTENSION_RELOAD_MANAGER=1` (also set when a unit is among the entries).
    pub reload_manager: bool,
    /// Paths taken from the rootfs (upstream `CHROOT`); `None` = every top-level entry of the
    /// rootfs except the host's and the mapped ones.
    pub chroot: Option<Vec<String>>,
    /// Host paths bound in (upstream `HOST`); `None` = [`DEFAULT_HOST`].
    pub host: Option<Vec<String>>,
}

/// How an entry appears on the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EntryKind {
    /// A generated launcher that runs the program inside the rootfs.
    Launcher,
    /// A symlink into `/usr/local/NAME/` (units, directories, non-executable files).
    Link,
}

/// One entry of the plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlannedEntry {
    /// The path as given, inside the rootfs (absolute).
    pub source: String,
    /// The path with every symlink resolved inside the rootfs.
    pub resolved: String,
    /// Where it appears on the host (under `/usr/`).
    pub target: String,
    pub kind: EntryKind,
    /// Whether this is a systemd unit.
    pub unit: bool,
}

/// A top-level entry of the rootfs, recreated in the launcher's root.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TopLevel {
    /// Name without the leading `/`.
    pub name: String,
    /// `Some(target)` for a symlink (e.g. `bin -> usr/bin`), `None` for a folder or file.
    pub symlink: Option<String>,
}

/// The validated plan.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub name: String,
    pub rootfs: PathBuf,
    pub entries: Vec<PlannedEntry>,
    /// Top-level entries other than the ones mapped from the host or handled by the
    /// `/etc`, `/var`, `/home`, `/root` mappings: the launcher's default `CHROOT` list.
    pub chroot: Vec<TopLevel>,
    /// Host paths bound in (the launcher's default `HOST` list), parents first.
    pub host: Vec<String>,
    pub etc: Map,
    pub var: Map,
    pub home: Map,
    /// systemd's architecture name read from the entries' ELF headers.
    pub architecture: Option<String>,
    pub reload_manager: bool,
    /// Things the user should know (e.g. a unit running a program that is not wrapped).
    pub warnings: Vec<String>,
}

/// Top-level names never taken from the rootfs by default: the host provides them.
pub const HOST_DIRS: &[&str] = &["dev", "proc", "sys", "run", "tmp"];
/// The host paths bound in by default.
pub const DEFAULT_HOST: &[&str] = &["/dev", "/proc", "/sys", "/run", "/tmp", "/var/tmp"];
/// Top-level names handled by the `/etc`, `/var`, `/home` mappings.
pub const MAPPED_DIRS: &[&str] = &["etc", "var", "home", "root"];
/// The folder inside `/usr/local/NAME/` holding the launcher helper and its staging dir.
pub const PRIVATE_DIR: &str = ".flatwrap";

/// Errors from [`plan`].
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("rootfs {} is not a readable folder", path.display())]
    Rootfs {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Release(#[from] sysext_core::release::ReleaseError),
    #[error("no entries given; name at least one program inside the rootfs, e.g. /usr/bin/htop")]
    NoEntries,
    #[error("entry {entry:?}: {reason}")]
    Entry { entry: String, reason: String },
    #[error("entry {entry:?} not found in the rootfs {}", rootfs.display())]
    NotFound { entry: String, rootfs: PathBuf },
    #[error("entries {first:?} and {second:?} both go to {target}; give one of them another place with SRC:/usr/TARGET")]
    Duplicate {
        first: String,
        second: String,
        target: String,
    },
    #[error("the rootfs {} has a top-level {PRIVATE_DIR:?}, which flatwrap needs for itself", .0.display())]
    Reserved(PathBuf),
    #[error("cannot read {} in the rootfs", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{var} item {item:?} (from --{} or the environment variable {var}) is not an absolute path without '..', e.g. /usr /opt", var.to_lowercase())]
    ListItem { var: &'static str, item: String },
    #[error("too many levels of symlinks resolving {0:?} inside the rootfs")]
    Loop(String),
    #[error(transparent)]
    Resolve(RootfsError),
    #[error("{what} {value:?} contains a control character (e.g. a newline); flatwrap writes it into its sh launchers and cannot; {hint}")]
    Control {
        what: &'static str,
        value: String,
        hint: &'static str,
    },
}

/// Refuses a value that goes into the generated launchers when it holds a control character
/// (see [`gentext`]; the launchers keep path lists one a line).
fn no_control(what: &'static str, value: &str, hint: &'static str) -> Result<(), PlanError> {
    if gentext::has_control(value) {
        return Err(PlanError::Control {
            what,
            value: value.to_string(),
            hint,
        });
    }
    Ok(())
}

const RENAME_TOP: &str =
    "rename it in the rootfs, or name the top-level paths to take with --chroot";

/// Checks an extension name with the one rule for new images
/// ([`sysext_core::release::validate_new_name`]); returns its warnings.
pub fn check_name(name: &str) -> Result<Vec<String>, PlanError> {
    Ok(sysext_core::release::validate_new_name(name)?)
}

/// `path` (absolute, inside the rootfs) resolved with `root` as `/`, the last component followed
/// only when `follow_last`; components that do not exist are kept as they are.
fn resolve(root: &Path, path: &str, follow_last: bool) -> Result<String, PlanError> {
    match rootfs::resolve_with(root, Path::new(path), follow_last, Missing::Keep) {
        Ok(p) => Ok(p.to_string_lossy().into_owned()),
        Err(RootfsError::Loop { .. }) => Err(PlanError::Loop(path.to_string())),
        Err(RootfsError::Io { root, path, source }) => Err(PlanError::Io {
            path: rootfs::host_path(&root, &path),
            source,
        }),
        Err(e) => Err(PlanError::Resolve(e)),
    }
}

fn components(path: &str) -> Vec<String> {
    Path::new(path)
        .components()
        .filter_map(|c| match c {
            Component::Normal(s) => Some(s.to_string_lossy().into_owned()),
            Component::ParentDir => Some("..".to_string()),
            _ => None,
        })
        .collect()
}

/// The host path of an inside path.
pub fn host_path(root: &Path, inside: &str) -> PathBuf {
    rootfs::host_path(root, Path::new(inside))
}

fn list_item(var: &'static str, item: &str) -> Result<String, PlanError> {
    no_control(
        if var == "HOST" {
            "HOST item"
        } else {
            "CHROOT item"
        },
        item,
        "give the path without it",
    )?;
    let comps = components(item);
    if !item.starts_with('/') || comps.is_empty() || comps.iter().any(|c| c == "..") {
        return Err(PlanError::ListItem {
            var,
            item: item.to_string(),
        });
    }
    Ok(format!("/{}", comps.join("/")))
}

fn read_symlink(path: &Path) -> Result<Option<String>, PlanError> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => Ok(Some(
            fs::read_link(path)
                .map_err(|source| PlanError::Io {
                    path: path.to_path_buf(),
                    source,
                })?
                .to_string_lossy()
                .into_owned(),
        )),
        _ => Ok(None),
    }
}

/// The user's `CHROOT` list, with the symlinks among it recorded.
fn chroot_list(rootfs: &Path, list: &[String]) -> Result<Vec<TopLevel>, PlanError> {
    let mut out = Vec::new();
    for item in list {
        let p = list_item("CHROOT", item)?;
        let name = p.trim_start_matches('/').to_string();
        let symlink = read_symlink(&rootfs.join(&name))?;
        if let Some(t) = &symlink {
            no_control("the target of the rootfs' top-level symlink", t, RENAME_TOP)?;
        }
        if !out.iter().any(|t: &TopLevel| t.name == name) {
            out.push(TopLevel { name, symlink });
        }
    }
    Ok(out)
}

/// Every top-level entry of the rootfs but the host's and the mapped ones.
fn chroot_default(rootfs: &Path) -> Result<Vec<TopLevel>, PlanError> {
    let mut chroot = Vec::new();
    let mut top: Vec<_> = fs::read_dir(rootfs)
        .map_err(|source| PlanError::Io {
            path: rootfs.to_path_buf(),
            source,
        })?
        .filter_map(|e| e.ok())
        .collect();
    top.sort_by_key(|e| e.file_name());
    for e in top {
        let name = e.file_name().to_string_lossy().into_owned();
        if HOST_DIRS.contains(&name.as_str())
            || MAPPED_DIRS.contains(&name.as_str())
            || name == "lost+found"
        {
            continue;
        }
        let path = e.path();
        let m = fs::symlink_metadata(&path).map_err(|source| PlanError::Io {
            path: path.clone(),
            source,
        })?;
        if !(m.is_dir() || m.is_file() || m.file_type().is_symlink()) {
            continue;
        }
        no_control("the rootfs' top-level entry", &name, RENAME_TOP)?;
        let symlink = read_symlink(&path)?;
        if let Some(t) = &symlink {
            no_control("the target of the rootfs' top-level symlink", t, RENAME_TOP)?;
        }
        chroot.push(TopLevel { name, symlink });
    }
    Ok(chroot)
}

fn normalise(entry: &str, p: &str) -> Result<String, PlanError> {
    if !p.starts_with('/') {
        return Err(PlanError::Entry {
            entry: entry.to_string(),
            reason: format!("{p:?} is not an absolute path"),
        });
    }
    let comps = components(p);
    if comps.iter().any(|c| c == "..") {
        return Err(PlanError::Entry {
            entry: entry.to_string(),
            reason: format!("{p:?} contains '..'"),
        });
    }
    Ok(format!("/{}", comps.join("/")))
}

fn read_head(path: &Path) -> Option<Vec<u8>> {
    let mut f = fs::File::open(path).ok()?;
    let mut buf = vec![0u8; 64];
    let n = f.read(&mut buf).ok()?;
    buf.truncate(n);
    Some(buf)
}

/// Resolves what the user typed into a validated [`Plan`].
pub fn plan(
    rootfs: &Path,
    name: &str,
    entries: &[String],
    opts: &PlanOptions,
) -> Result<Plan, PlanError> {
    let mut warnings = check_name(name)?;
    let meta = fs::metadata(rootfs).map_err(|source| PlanError::Rootfs {
        path: rootfs.to_path_buf(),
        source,
    })?;
    if !meta.is_dir() {
        return Err(PlanError::Rootfs {
            path: rootfs.to_path_buf(),
            source: io::Error::new(io::ErrorKind::NotADirectory, "not a folder"),
        });
    }
    if entries.is_empty() {
        return Err(PlanError::NoEntries);
    }
    if fs::symlink_metadata(rootfs.join(PRIVATE_DIR)).is_ok() {
        return Err(PlanError::Reserved(rootfs.to_path_buf()));
    }
    let own = format!("/usr/local/{name}");
    let mut planned: Vec<PlannedEntry> = Vec::new();
    for entry in entries {
        no_control("entry", entry, "give the path without it")?;
        // The one entry parser; flatwrap wants the source absolute without '..'.
        let spec = sysext_core::entries::parse_entry(entry).map_err(|e| PlanError::Entry {
            entry: entry.clone(),
            reason: e.to_string(),
        })?;
        let src = normalise(entry, &spec.source)?;
        let target = spec.target.map(|t| {
            let p = t.path.to_string_lossy().into_owned();
            match (t.into_dir, Path::new(&src).file_name()) {
                (true, Some(n)) => format!("{p}/{}", n.to_string_lossy()),
                _ => p,
            }
        });
        let resolved = resolve(rootfs, &src, true)?;
        let host = host_path(rootfs, &resolved);
        let meta = fs::metadata(&host).map_err(|_| PlanError::NotFound {
            entry: src.clone(),
            rootfs: rootfs.to_path_buf(),
        })?;
        let target = match target {
            Some(t) => t,
            None if src.starts_with("/usr/") => src.clone(),
            None => {
                // /bin/bash in a usr-merged rootfs is /usr/bin/bash: take the parent's real place.
                let parent = resolve(rootfs, &src, false)?;
                if parent.starts_with("/usr/") {
                    parent
                } else {
                    return Err(PlanError::Entry {
                        entry: entry.clone(),
                        reason: format!(
                            "{src} is outside /usr and only /usr reaches the host; give its place as {src}:/usr/bin/NAME"
                        ),
                    });
                }
            }
        };
        let bad_target = |reason: String| PlanError::Entry {
            entry: entry.clone(),
            reason,
        };
        if !target.starts_with("/usr/") || target == "/usr/" {
            return Err(bad_target(format!(
                "target {target} is not under /usr/ (systemd-sysext merges only /usr and /opt)"
            )));
        }
        if target == own || target.starts_with(&format!("{own}/")) {
            return Err(bad_target(format!(
                "target {target} lies inside {own}, where the rootfs copy goes"
            )));
        }
        if target.starts_with("/usr/lib/extension-release.d") {
            return Err(bad_target(format!(
                "target {target} would clash with the extension's release file"
            )));
        }
        if let Some(prev) = planned.iter().find(|p| p.target == target) {
            return Err(PlanError::Duplicate {
                first: prev.source.clone(),
                second: src,
                target,
            });
        }
        let unit = units::is_unit(Path::new(&src)) || units::is_unit(Path::new(&target));
        let executable = meta.is_file() && meta.permissions().mode() & 0o111 != 0;
        let kind = if executable && !unit {
            EntryKind::Launcher
        } else {
            EntryKind::Link
        };
        planned.push(PlannedEntry {
            source: src,
            resolved,
            target,
            kind,
            unit,
        });
    }
    // Units that start programs not wrapped would run host programs (or nothing).
    for e in planned.iter().filter(|e| e.unit) {
        let host = host_path(rootfs, &e.resolved);
        if let Ok(text) = fs::read_to_string(&host) {
            for exec in units::exec_paths(&text) {
                // /sbin/x in a usr-merged rootfs is /usr/sbin/x: compare both spellings.
                let merged = resolve(rootfs, &exec, false)?;
                let wrapped = planned.iter().any(|p| {
                    p.kind == EntryKind::Launcher && (p.target == exec || p.target == merged)
                });
                if !wrapped && !exec.starts_with(&format!("{own}/")) {
                    warnings.push(format!(
                        "unit {} runs {exec}, which is not among the wrapped entries: on the host it runs the host's {exec} (add {exec} as an entry to run the rootfs' one)",
                        e.source
                    ));
                }
            }
        }
    }
    let chroot = match &opts.chroot {
        Some(list) => chroot_list(rootfs, list)?,
        None => chroot_default(rootfs)?,
    };
    let host = match &opts.host {
        Some(list) => {
            let mut v = list
                .iter()
                .map(|d| list_item("HOST", d))
                .collect::<Result<Vec<_>, _>>()?;
            // A parent before its children (/var before /var/tmp), as upstream.
            v.sort();
            v.dedup();
            v
        }
        None => DEFAULT_HOST.iter().map(|s| s.to_string()).collect(),
    };
    // The architecture: from the launched programs, else from the rootfs' shell or env.
    let candidates = planned
        .iter()
        .filter(|e| e.kind == EntryKind::Launcher)
        .map(|e| e.resolved.clone())
        .chain(["/usr/bin/env", "/bin/sh", "/usr/bin/sh"].map(String::from));
    let mut architecture = None;
    for c in candidates {
        let resolved = resolve(rootfs, &c, true)?;
        if let Some(arch) = read_head(&host_path(rootfs, &resolved))
            .as_deref()
            .and_then(release::arch_from_elf_header)
        {
            architecture = Some(arch.to_string());
            break;
        }
    }
    if architecture.is_none() {
        warnings.push(
            "cannot tell the architecture from the entries or the rootfs' /bin/sh; the release file has no ARCHITECTURE".to_string(),
        );
    }
    let reload_manager = opts.reload_manager || planned.iter().any(|e| e.unit);
    Ok(Plan {
        name: name.to_string(),
        rootfs: rootfs.to_path_buf(),
        entries: planned,
        chroot,
        host,
        etc: opts.etc,
        var: opts.var,
        home: opts.home,
        architecture,
        reload_manager,
        warnings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn tree() -> tempfile::TempDir {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        for d in [
            "usr/bin",
            "usr/sbin",
            "usr/lib/systemd/system",
            "etc",
            "usr/share/doc",
        ] {
            fs::create_dir_all(r.join(d)).unwrap();
        }
        symlink("usr/bin", r.join("bin")).unwrap();
        let mut elf = vec![0u8; 64];
        elf[..4].copy_from_slice(b"\x7fELF");
        elf[4] = 2;
        elf[5] = 1;
        elf[18] = 183;
        fs::write(r.join("usr/bin/prog"), &elf).unwrap();
        fs::set_permissions(r.join("usr/bin/prog"), fs::Permissions::from_mode(0o755)).unwrap();
        symlink("prog", r.join("usr/bin/alias")).unwrap();
        symlink("/usr/bin/prog", r.join("usr/bin/abs")).unwrap();
        fs::write(r.join("usr/share/doc/README"), "x").unwrap();
        fs::write(
            r.join("usr/lib/systemd/system/prog.service"),
            "[Service]\nExecStartPre=-/usr/bin/check\nExecStart=/usr/bin/prog --serve\n",
        )
        .unwrap();
        t
    }

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn resolves_inside_the_root_keeping_missing_components() {
        let t = tree();
        let r = t.path();
        let cases = [
            ("/bin/prog", true, "/usr/bin/prog"),
            ("/usr/bin/alias", true, "/usr/bin/prog"),
            ("/usr/bin/alias", false, "/usr/bin/alias"),
            ("/usr/bin/abs", true, "/usr/bin/prog"),
            ("/../../bin/prog", true, "/usr/bin/prog"),
            ("/bin/../etc", true, "/usr/etc"),
            ("/nope/x", true, "/nope/x"),
        ];
        for (p, follow, want) in cases {
            assert_eq!(resolve(r, p, follow).unwrap(), want, "{p} {follow}");
        }
        symlink("loop", r.join("loop")).unwrap();
        assert!(matches!(resolve(r, "/loop", true), Err(PlanError::Loop(_))));
    }

    #[test]
    fn kinds_targets_and_architecture() {
        let t = tree();
        let p = plan(
            t.path(),
            "tools",
            &s(&[
                "/usr/bin/prog",
                "/usr/bin/alias",
                "/bin/abs",
                "/usr/share/doc",
                "/usr/lib/systemd/system/prog.service",
                "/usr/share/doc/README:/usr/share/tools/README",
            ]),
            &PlanOptions::default(),
        )
        .unwrap();
        let got: Vec<_> = p
            .entries
            .iter()
            .map(|e| (e.target.as_str(), e.kind, e.resolved.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("/usr/bin/prog", EntryKind::Launcher, "/usr/bin/prog"),
                ("/usr/bin/alias", EntryKind::Launcher, "/usr/bin/prog"),
                ("/usr/bin/abs", EntryKind::Launcher, "/usr/bin/prog"),
                ("/usr/share/doc", EntryKind::Link, "/usr/share/doc"),
                (
                    "/usr/lib/systemd/system/prog.service",
                    EntryKind::Link,
                    "/usr/lib/systemd/system/prog.service"
                ),
                (
                    "/usr/share/tools/README",
                    EntryKind::Link,
                    "/usr/share/doc/README"
                ),
            ]
        );
        assert_eq!(p.architecture.as_deref(), Some("arm64"));
        assert!(p.reload_manager, "a unit sets EXTENSION_RELOAD_MANAGER");
        assert_eq!(
            p.chroot,
            vec![
                TopLevel {
                    name: "bin".into(),
                    symlink: Some("usr/bin".into())
                },
                TopLevel {
                    name: "usr".into(),
                    symlink: None
                }
            ]
        );
        // The unit's ExecStartPre program is not wrapped: the user is told.
        assert_eq!(p.warnings.len(), 1, "{:?}", p.warnings);
        assert!(p.warnings[0].contains("/usr/bin/check"));
    }

    #[test]
    fn bad_input_is_refused() {
        let t = tree();
        let r = t.path();
        let o = PlanOptions::default();
        let err = |name: &str, e: &[&str]| plan(r, name, &s(e), &o).unwrap_err().to_string();
        assert!(err("tools", &["/usr/bin/missing"]).contains("not found"));
        assert!(err("tools", &["usr/bin/prog"]).contains("not an absolute path"));
        assert!(err("tools", &["/etc"]).contains("outside /usr"));
        assert!(err("tools", &["/usr/bin/prog:/opt/x"]).contains("not under /usr/"));
        assert!(err("tools", &["/usr/bin/prog:/usr/local/tools/x"]).contains("inside"));
        assert!(
            err("tools", &["/usr/bin/prog", "/usr/bin/alias:/usr/bin/prog"]).contains("both go to")
        );
        assert!(err("bad/name", &["/usr/bin/prog"]).contains("invalid extension name"));
        assert!(err(".x", &["/usr/bin/prog"]).contains("invalid extension name"));
        assert!(err("tools", &[]).contains("no entries"));
        assert!(err("tools", &["/usr/bin/../bin/prog"]).contains("'..'"));
    }

    #[test]
    fn control_characters_are_refused_and_shell_words_kept() {
        let t = tree();
        let r = t.path();
        fs::create_dir(r.join("x$(touch MARKER)")).unwrap();
        fs::create_dir(r.join("a b*")).unwrap();
        let o = PlanOptions::default();
        let p = plan(r, "tools", &s(&["/usr/bin/prog"]), &o).unwrap();
        let names: Vec<_> = p.chroot.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["a b*", "bin", "usr", "x$(touch MARKER)"]);

        let bad = |e: PlanError| matches!(e, PlanError::Control { .. });
        fs::create_dir(r.join("evil\nname")).unwrap();
        let e = plan(r, "tools", &s(&["/usr/bin/prog"]), &o).unwrap_err();
        assert!(e.to_string().contains("--chroot"), "{e}");
        assert!(bad(e));
        // Naming the top-level paths leaves it out.
        let only = PlanOptions {
            chroot: Some(s(&["/usr", "/bin"])),
            ..Default::default()
        };
        plan(r, "tools", &s(&["/usr/bin/prog"]), &only).unwrap();
        fs::remove_dir(r.join("evil\nname")).unwrap();

        symlink("usr/\u{1b}[2J", r.join("link")).unwrap();
        assert!(bad(
            plan(r, "tools", &s(&["/usr/bin/prog"]), &o).unwrap_err()
        ));
        fs::remove_file(r.join("link")).unwrap();

        for entry in ["/usr/bin/prog\n", "/usr/bin/prog:/usr/bin/p\rx"] {
            assert!(
                bad(plan(r, "tools", &s(&[entry]), &o).unwrap_err()),
                "{entry:?}"
            );
        }
        let host = PlanOptions {
            host: Some(s(&["/dev\t"])),
            ..Default::default()
        };
        assert!(bad(
            plan(r, "tools", &s(&["/usr/bin/prog"]), &host).unwrap_err()
        ));
    }

    #[test]
    fn chroot_and_host_lists() {
        let t = tree();
        let o = PlanOptions {
            chroot: Some(s(&["/usr", "/bin", "/lib64"])),
            host: Some(s(&["/var/tmp", "/dev", "/var"])),
            ..Default::default()
        };
        let p = plan(t.path(), "tools", &s(&["/usr/bin/prog"]), &o).unwrap();
        let names: Vec<_> = p
            .chroot
            .iter()
            .map(|t| (t.name.as_str(), t.symlink.as_deref()))
            .collect();
        assert_eq!(
            names,
            [("usr", None), ("bin", Some("usr/bin")), ("lib64", None)]
        );
        assert_eq!(p.host, ["/dev", "/var", "/var/tmp"]);
        let o = PlanOptions {
            host: Some(s(&["myhostname"])),
            ..Default::default()
        };
        let e = plan(t.path(), "tools", &s(&["/usr/bin/prog"]), &o).unwrap_err();
        assert!(e.to_string().contains("HOST item \"myhostname\""), "{e}");
    }

    /// The architecture in the release file is `check`'s name for the program's ELF header,
    /// also for the machines flatwrap's own table named wrongly (mips64 and ppc little-endian).
    #[test]
    fn architecture_is_the_one_table() {
        let t = tree();
        let r = t.path();
        for (class, data, machine, want) in [
            (2u8, 1u8, 8u16, "mips64-le"),
            (1, 1, 20, "ppc-le"),
            (2, 2, 8, "mips64"),
            (1, 2, 20, "ppc"),
            (2, 1, 62, "x86-64"),
        ] {
            let mut h = vec![0u8; 64];
            h[..4].copy_from_slice(b"\x7fELF");
            h[4] = class;
            h[5] = data;
            let m = if data == 1 {
                machine.to_le_bytes()
            } else {
                machine.to_be_bytes()
            };
            h[18..20].copy_from_slice(&m);
            fs::write(r.join("usr/bin/prog"), &h).unwrap();
            let p = plan(r, "tools", &s(&["/usr/bin/prog"]), &PlanOptions::default()).unwrap();
            assert_eq!(
                p.architecture.as_deref(),
                Some(want),
                "{class} {data} {machine}"
            );
            assert_eq!(release::arch_from_elf_header(&h), Some(want));
        }
    }

    /// Units are what `sysext_core::units` says: `.slice` and `.automount` in a unit folder
    /// are, a `.target` data file elsewhere is not (flatwrap's copy took any suffix).
    #[test]
    fn units_are_the_one_rule() {
        let t = tree();
        let r = t.path();
        fs::write(r.join("usr/lib/systemd/system/tools.slice"), "[Slice]\n").unwrap();
        fs::write(
            r.join("usr/lib/systemd/system/x.automount"),
            "[Automount]\n",
        )
        .unwrap();
        fs::write(r.join("usr/share/doc/foo.target"), "data").unwrap();
        let p = plan(
            r,
            "tools",
            &s(&[
                "/usr/lib/systemd/system/tools.slice",
                "/usr/lib/systemd/system/x.automount",
                "/usr/share/doc/foo.target",
            ]),
            &PlanOptions::default(),
        )
        .unwrap();
        let got: Vec<_> = p.entries.iter().map(|e| e.unit).collect();
        assert_eq!(got, [true, true, false]);
    }
}
