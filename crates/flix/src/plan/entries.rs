//! The user's entries and extra libraries turned into actions: `SRC[:TARGET]` parsed and
//! placed, symlinked entries kept as links with their targets shipped, folders walked, and the
//! ELF files and scripts among them noted for the later steps.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use walkdir::WalkDir;

use elf_closure::{self as elf, ElfInfo};
use safefs::rootfs;
use sysext_core::{release, units};

use super::{Action, Builder, PlanError, Severity};

/// A user entry split into source and target (both absolute inside-root paths).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntrySpec {
    pub source: PathBuf,
    pub target: Option<PathBuf>,
}

/// Splits `SRC[:TARGET]` with the one entry parser ([`sysext_core::entries::parse_entry`]); flix wants the
/// source absolute. A target ending in `/` is the folder the source goes into.
pub fn parse_entry(s: &str) -> Result<EntrySpec, PlanError> {
    let e = sysext_core::entries::parse_entry(s)?;
    if !e.source.starts_with('/') {
        return Err(PlanError::NotAbsolute(s.to_string()));
    }
    let source = PathBuf::from(e.source);
    let target = e.target.map(|t| match (t.into_dir, source.file_name()) {
        (true, Some(n)) => t.path.join(n),
        _ => t.path,
    });
    Ok(EntrySpec { source, target })
}

/// Validates the extension name with the one rule for new images
/// ([`release::validate_new_name`]); returns warnings (e.g. '_' or '+' in it).
pub fn check_name(name: &str) -> Result<Vec<String>, PlanError> {
    release::validate_new_name(name).map_err(PlanError::Name)
}

/// Maps a target (relative, e.g. `usr/sbin/nginx`) to where it is shipped, per the module rules.
pub fn place(target: &Path, entry: &str) -> Result<PathBuf, PlanError> {
    let s = target.to_string_lossy();
    for (from, to) in [("usr/sbin", "usr/bin"), ("usr/local/sbin", "usr/local/bin")] {
        if s == from {
            return Ok(PathBuf::from(to));
        }
        if let Some(rest) = s.strip_prefix(&format!("{from}/")) {
            return Ok(Path::new(to).join(rest));
        }
    }
    if s == "usr/lib64" || s.starts_with("usr/lib64/") {
        return Err(PlanError::Lib64 {
            entry: entry.to_string(),
        });
    }
    Ok(target.to_path_buf())
}
fn rel(p: &Path) -> PathBuf {
    p.strip_prefix("/").unwrap_or(p).to_path_buf()
}

fn head(path: &Path, n: usize) -> Result<Vec<u8>, PlanError> {
    let mut f = fs::File::open(path).map_err(|source| PlanError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let mut buf = vec![0; n];
    let mut got = 0;
    while got < n {
        match f.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(k) => got += k,
            Err(source) => {
                return Err(PlanError::Io {
                    path: path.to_path_buf(),
                    source,
                })
            }
        }
    }
    buf.truncate(got);
    Ok(buf)
}

pub(super) fn read_all(path: &Path) -> Result<Vec<u8>, PlanError> {
    fs::read(path).map_err(|source| PlanError::Io {
        path: path.to_path_buf(),
        source,
    })
}

fn scan_file(path: &Path) -> Result<Option<ElfInfo>, PlanError> {
    let bytes = read_all(path)?;
    elf::scan(&bytes).map_err(|source| PlanError::Elf {
        path: path.to_path_buf(),
        source,
    })
}

/// A shebang line: interpreter and its first argument.
pub fn shebang(bytes: &[u8]) -> Option<(String, Option<String>)> {
    let rest = bytes.strip_prefix(b"#!")?;
    let line = rest.split(|&b| b == b'\n').next()?;
    let line = String::from_utf8_lossy(line);
    let mut words = line.split_whitespace();
    let interp = words.next()?.to_string();
    Some((interp, words.next().map(str::to_string)))
}
/// True for a non-empty relative path made of plain names only (no `/`, `..` or `.`).
pub fn is_inside_tree(p: &Path) -> bool {
    !p.as_os_str().is_empty()
        && p.components()
            .all(|c| matches!(c, std::path::Component::Normal(_)))
}

/// A relative symlink target from directory `from_dir` to `to` (both tree-relative).
pub fn relative_link(from_dir: &Path, to: &Path) -> PathBuf {
    let a: Vec<_> = from_dir.components().collect();
    let b: Vec<_> = to.components().collect();
    let common = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
    let mut out = PathBuf::new();
    for _ in common..a.len() {
        out.push("..");
    }
    for c in &b[common..] {
        out.push(c);
    }
    out
}

/// Adds each entry (`PATH` or `SRC:/usr/TARGET`) with what it points to or holds.
pub(super) fn add_entries(b: &mut Builder, paths: &[String]) -> Result<(), PlanError> {
    for spec in paths {
        let e = parse_entry(spec)?;
        let src = rootfs::resolve(b.root, &e.source, false)?;
        let target = match &e.target {
            Some(t) => rel(t),
            None if src.starts_with("/usr/") || src.starts_with("/opt/") => rel(&src),
            None => match units::unit_scope(&src) {
                // A unit outside /usr (e.g. /etc/systemd/system/x.service): shipped where
                // units of its scope go.
                Some(scope) => scope
                    .shipped_dir()
                    .join(src.file_name().unwrap_or_default()),
                None => {
                    return Err(PlanError::OutsideUsr {
                        entry: spec.clone(),
                        suggest: rel(&e.source).display().to_string(),
                    })
                }
            },
        };
        b.entry(spec, &src, &target, 0)?;
    }
    Ok(())
}

/// Adds the `--extra-lib` files to `extra_dir`; returns their real inside-root paths.
pub(super) fn add_extra_libs(
    b: &mut Builder,
    extra_libs: &[String],
    extra_dir: &Path,
) -> Result<Vec<PathBuf>, PlanError> {
    let root = b.root;
    let mut extra_roots = Vec::new();
    for x in extra_libs {
        if !x.starts_with('/') {
            return Err(PlanError::ExtraLibPath(x.clone()));
        }
        let p = PathBuf::from(x);
        let real = rootfs::resolve(root, &p, true)?;
        let host = b.host(&real);
        if !host.is_file() {
            return Err(PlanError::NotFound {
                path: p,
                root: root.to_path_buf(),
            });
        }
        let info = scan_file(&host)?.ok_or_else(|| PlanError::ExtraLibNotElf(p.clone()))?;
        b.parents(&extra_dir.join("x"))?;
        let mode = fs::metadata(&host)
            .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o7777)
            .unwrap_or(0o644);
        let i = b.push(Action::Copy {
            from: host,
            to: extra_dir.join(p.file_name().unwrap_or_default()),
            mode,
            elf: None,
        })?;
        b.elf_roots.push((i, real.clone(), info, true));
        extra_roots.push(real);
    }
    Ok(extra_roots)
}

impl Builder<'_> {
    /// Adds one entry: `src` inside the rootfs (parents resolved), `target` relative.
    fn entry(
        &mut self,
        spec: &str,
        src: &Path,
        target: &Path,
        depth: usize,
    ) -> Result<(), PlanError> {
        let host = self.host(src);
        let meta = fs::symlink_metadata(&host).map_err(|_| PlanError::NotFound {
            path: src.to_path_buf(),
            root: self.root.to_path_buf(),
        })?;
        let to = place(target, spec)?;
        if to != target {
            self.note(
                Severity::Note,
                format!("{} is shipped as /{}", src.display(), to.display()),
                Some("usr/sbin is a symlink to bin on Fedora and Arch hosts; /usr/bin is on every PATH".into()),
            );
        }
        if meta.file_type().is_symlink() {
            let real = rootfs::resolve(self.root, src, true)?;
            if !self.host(&real).exists() || depth > 8 {
                return Err(PlanError::NotFound {
                    path: real,
                    root: self.root.to_path_buf(),
                });
            }
            if real.starts_with("/usr") || real.starts_with("/opt") {
                let real_target = place(&rel(&real), spec)?;
                // The link stays; what it points to is shipped at its own place.
                let link_dir = to.parent().unwrap_or(Path::new(""));
                let target_link = relative_link(link_dir, &real_target);
                self.parents(&to)?;
                self.push(Action::Symlink {
                    to: to.clone(),
                    target: target_link,
                })?;
                if !self.targets.contains_key(&real_target) {
                    self.entry(spec, &real, &rel(&real), depth + 1)?;
                }
            } else {
                self.note(
                    Severity::Note,
                    format!(
                        "{} points outside /usr ({}); its target is shipped in its place",
                        src.display(),
                        real.display()
                    ),
                    None,
                );
                self.file_entry(spec, &real, &to)?;
            }
            self.mapping.push((src.to_path_buf(), to));
            return Ok(());
        }
        if meta.is_dir() {
            self.mapping.push((src.to_path_buf(), to.clone()));
            return self.dir_entry(src, &to);
        }
        self.file_entry(spec, src, &to)?;
        self.mapping.push((src.to_path_buf(), to));
        Ok(())
    }
    fn file_entry(&mut self, _spec: &str, src: &Path, to: &Path) -> Result<(), PlanError> {
        let host = self.host(src);
        let meta = fs::metadata(&host).map_err(|source| PlanError::Io {
            path: host.clone(),
            source,
        })?;
        let mode = std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o7777;
        let first = head(&host, 512)?;
        let scope = units::unit_scope(src);
        let is_unit = scope.is_some();
        let to = match scope {
            Some(scope) if !to.starts_with(scope.shipped_dir()) => {
                scope.shipped_dir().join(to.file_name().unwrap_or_default())
            }
            _ => to.to_path_buf(),
        };
        self.parents(&to)?;
        if first.starts_with(b"\x7fELF") {
            let Some(info) = scan_file(&host)? else {
                return Err(PlanError::NotElf(src.to_path_buf()));
            };
            let i = self.push(Action::Copy {
                from: host,
                to,
                mode,
                elf: None,
            })?;
            self.elf_roots.push((i, src.to_path_buf(), info, true));
        } else if is_unit {
            let text = String::from_utf8_lossy(&read_all(&host)?).into_owned();
            let i = self.push(Action::Write {
                to,
                contents: text,
                mode: 0o644,
            })?;
            self.units.push((i, src.display().to_string()));
        } else {
            if let Some((interp, arg)) = shebang(&first) {
                self.scripts.push((src.to_path_buf(), interp, arg));
            }
            self.push(Action::Copy {
                from: host,
                to,
                mode,
                elf: None,
            })?;
        }
        Ok(())
    }
    fn dir_entry(&mut self, src: &Path, to: &Path) -> Result<(), PlanError> {
        self.walk_dir(src, to, true, &[]).map(|_| ())
    }
    /// A data folder shipped as it is: its ELF files are copied unchanged (not relocated),
    /// files named in `skip` are left out. Returns the number of files and their bytes.
    pub(super) fn data_dir(
        &mut self,
        src: &Path,
        to: &Path,
        skip: &[&str],
    ) -> Result<(usize, u64), PlanError> {
        self.walk_dir(src, to, false, skip)
    }
    /// Walks folder `src` (inside the rootfs) into `to`; ELF files are noted for relocation
    /// when `relocate`.
    fn walk_dir(
        &mut self,
        src: &Path,
        to: &Path,
        relocate: bool,
        skip: &[&str],
    ) -> Result<(usize, u64), PlanError> {
        let host = self.host(src);
        self.parents(to)?;
        self.push(Action::Dir {
            to: to.to_path_buf(),
        })?;
        let (mut files, mut bytes) = (0, 0);
        for e in WalkDir::new(&host).min_depth(1).sort_by_file_name() {
            let e = e.map_err(|e| PlanError::Io {
                path: host.clone(),
                source: e.into(),
            })?;
            if skip.iter().any(|n| e.file_name() == *n) {
                continue;
            }
            let relp = e.path().strip_prefix(&host).unwrap_or(e.path());
            let dest = to.join(relp);
            let inside = src.join(relp);
            let ft = e.file_type();
            if ft.is_dir() {
                self.push(Action::Dir { to: dest })?;
            } else if ft.is_symlink() {
                let t = fs::read_link(e.path()).map_err(|source| PlanError::Io {
                    path: e.path().to_path_buf(),
                    source,
                })?;
                self.push(Action::Symlink {
                    to: dest,
                    target: t,
                })?;
            } else if ft.is_file() {
                let meta = e.metadata().map_err(|err| PlanError::Io {
                    path: e.path().to_path_buf(),
                    source: err.into(),
                })?;
                let mode = std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o7777;
                files += 1;
                bytes += meta.len();
                let first = head(e.path(), 4)?;
                let is_elf = relocate && first.starts_with(b"\x7fELF");
                let i = self.push(Action::Copy {
                    from: e.path().to_path_buf(),
                    to: dest,
                    mode,
                    elf: None,
                })?;
                if is_elf {
                    match scan_file(e.path()) {
                        Ok(Some(info)) if info.is_dynamic => {
                            self.elf_roots.push((i, inside, info, false));
                        }
                        Ok(_) => {}
                        Err(err) => {
                            self.note(Severity::Warning, format!("{err}; copied unchanged"), None)
                        }
                    }
                }
            }
            // Devices, fifos and sockets have no place in an extension.
        }
        Ok((files, bytes))
    }
}
