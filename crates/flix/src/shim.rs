//! Stand-ins, with the agreed signatures, for pieces being written on other branches:
//! `sysext_core::rootfs::resolve`/`host_path` and `sysext_core::elf::{scan, closure}`. They are deliberately minimal
//! (Debian/Fedora system dirs, `/etc/ld.so.conf` with includes, no hwcaps, no ld.so.cache) and
//! are removed once those branches are merged; nothing outside `plan.rs` uses them.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fs;
use std::path::{Component, Path, PathBuf};

/// Errors of the stand-ins.
#[derive(Debug, thiserror::Error)]
pub enum ShimError {
    #[error("too many levels of symbolic links resolving {} inside the rootfs", .0.display())]
    Loop(PathBuf),
    #[error("cannot read {}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot parse the ELF file {}: {reason}", path.display())]
    Elf { path: PathBuf, reason: String },
}

/// Where an inside-root path lives on the build host.
pub fn host_path(root: &Path, inside: &Path) -> PathBuf {
    let rel: PathBuf = inside
        .components()
        .filter(|c| matches!(c, Component::Normal(_)))
        .collect();
    root.join(rel)
}

/// Resolves `path` with `root` as `/`: symlinks re-rooted, `..` clamped at the root.
pub fn resolve(root: &Path, path: &Path, follow_last: bool) -> Result<PathBuf, ShimError> {
    let mut todo: VecDeque<std::ffi::OsString> = path
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            Component::ParentDir => Some("..".into()),
            _ => None,
        })
        .collect();
    let mut cur = PathBuf::from("/");
    let mut links = 0;
    while let Some(comp) = todo.pop_front() {
        if comp == ".." {
            cur.pop();
            continue;
        }
        let next = cur.join(&comp);
        let is_last = todo.is_empty();
        let host = host_path(root, &next);
        match fs::symlink_metadata(&host) {
            Ok(m) if m.file_type().is_symlink() && (!is_last || follow_last) => {
                links += 1;
                if links > 40 {
                    return Err(ShimError::Loop(path.to_path_buf()));
                }
                let target = fs::read_link(&host).map_err(|source| ShimError::Io {
                    path: host.clone(),
                    source,
                })?;
                if target.is_absolute() {
                    cur = PathBuf::from("/");
                }
                let mut new: VecDeque<_> = target
                    .components()
                    .filter_map(|c| match c {
                        Component::Normal(n) => Some(n.to_os_string()),
                        Component::ParentDir => Some("..".into()),
                        _ => None,
                    })
                    .collect();
                new.extend(todo.drain(..));
                todo = new;
            }
            _ => cur = next,
        }
    }
    Ok(cur)
}

/// What the scan reads from an ELF file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ElfInfo {
    pub class64: bool,
    pub little_endian: bool,
    pub machine: u16,
    pub e_type: u16,
    pub interpreter: Option<String>,
    pub needed: Vec<String>,
    pub soname: Option<String>,
    pub rpath: Vec<String>,
    pub runpath: Vec<String>,
    pub nodeflib: bool,
    pub is_dynamic: bool,
}

fn split_path(s: &Option<String>) -> Vec<String> {
    s.as_deref()
        .map(|s| {
            s.split(':')
                .filter(|p| !p.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// Reads an ELF file's dynamic facts; `Ok(None)` when `bytes` is not ELF.
pub fn scan(bytes: &[u8]) -> Result<Option<ElfInfo>, String> {
    if !bytes.starts_with(b"\x7fELF") {
        return Ok(None);
    }
    let s = crate::rewrite::inspect(bytes).map_err(|e| e.to_string())?;
    Ok(Some(ElfInfo {
        class64: s.class64,
        little_endian: s.little_endian,
        machine: s.machine,
        e_type: s.e_type,
        interpreter: s.interpreter.clone(),
        needed: s.needed.clone(),
        soname: s.soname.clone(),
        rpath: split_path(&s.rpath),
        runpath: split_path(&s.runpath),
        nodeflib: s.flags_1 & 0x800 != 0,
        is_dynamic: s.has_dynamic,
    }))
}

/// Options of [`closure`].
#[derive(Debug, Clone, Default)]
pub struct ClosureOptions {}

/// One object the loader would load.
#[derive(Debug, Clone)]
pub struct LoadedObject {
    pub name: String,
    pub path: PathBuf,
    pub real_path: PathBuf,
    pub reason: String,
    pub needed_by: Option<PathBuf>,
    pub info: ElfInfo,
    pub is_interpreter: bool,
}

/// A DT_NEEDED that was not found.
#[derive(Debug, Clone)]
pub struct Missing {
    pub name: String,
    pub needed_by: PathBuf,
}

/// The objects loaded for `files` and what could not be found.
#[derive(Debug, Clone, Default)]
pub struct Closure {
    pub objects: Vec<LoadedObject>,
    pub missing: Vec<Missing>,
}

fn ld_so_conf(root: &Path, file: &Path, out: &mut Vec<String>, depth: usize) {
    if depth > 8 {
        return;
    }
    let Ok(text) = fs::read_to_string(host_path(root, file)) else {
        return;
    };
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        if let Some(pat) = line.strip_prefix("include") {
            let pat = pat.trim();
            let pat = if pat.starts_with('/') {
                PathBuf::from(pat)
            } else {
                file.parent().unwrap_or(Path::new("/")).join(pat)
            };
            // Only "DIR/*.conf"-style globs.
            let (dir, suffix) = match pat.file_name().and_then(|n| n.to_str()) {
                Some(n) if n.starts_with('*') => (pat.parent().unwrap().to_path_buf(), n[1..].to_string()),
                _ => {
                    ld_so_conf(root, &pat, out, depth + 1);
                    continue;
                }
            };
            let Ok(rd) = fs::read_dir(host_path(root, &dir)) else {
                continue;
            };
            let mut names: Vec<_> = rd
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(&suffix))
                .collect();
            names.sort();
            for n in names {
                ld_so_conf(root, &dir.join(n), out, depth + 1);
            }
        } else if line.starts_with('/') {
            out.push(line.to_string());
        }
    }
}

fn expand(dir: &str, origin: &Path) -> String {
    let o = origin.to_string_lossy();
    dir.replace("${ORIGIN}", &o).replace("$ORIGIN", &o)
}

/// Breadth-first walk of DT_NEEDED as the loader would, inside `root`.
pub fn closure(root: &Path, files: &[PathBuf], _opts: &ClosureOptions) -> Result<Closure, ShimError> {
    let mut conf = Vec::new();
    ld_so_conf(root, Path::new("/etc/ld.so.conf"), &mut conf, 0);
    let mut out = Closure::default();
    let mut by_name: HashMap<String, usize> = HashMap::new();
    let mut seen_real: HashSet<PathBuf> = HashSet::new();
    let mut interp_done: HashSet<PathBuf> = HashSet::new();
    for f in files {
        let real = resolve(root, f, true)?;
        let bytes = fs::read(host_path(root, &real)).map_err(|source| ShimError::Io {
            path: host_path(root, &real),
            source,
        })?;
        let Some(info) = scan(&bytes).map_err(|reason| ShimError::Elf {
            path: f.clone(),
            reason,
        })?
        else {
            continue;
        };
        let musl = info
            .interpreter
            .as_deref()
            .is_some_and(|i| i.contains("ld-musl"));
        if let Some(interp) = &info.interpreter {
            let ipath = PathBuf::from(interp);
            let ireal = resolve(root, &ipath, true)?;
            if interp_done.insert(ireal.clone()) {
                if let Ok(b) = fs::read(host_path(root, &ireal)) {
                    if let Ok(Some(ii)) = scan(&b) {
                        let name = ipath.file_name().unwrap().to_string_lossy().into_owned();
                        if let Some(s) = &ii.soname {
                            by_name.insert(s.clone(), out.objects.len());
                        }
                        by_name.insert(name.clone(), out.objects.len());
                        seen_real.insert(ireal.clone());
                        out.objects.push(LoadedObject {
                            name,
                            path: ipath,
                            real_path: ireal,
                            reason: "interpreter".into(),
                            needed_by: Some(f.clone()),
                            info: ii,
                            is_interpreter: true,
                        });
                    }
                }
            }
        }
        let exe_rpath = if info.runpath.is_empty() { info.rpath.clone() } else { vec![] };
        // queue: (requester path, requester info, inherited rpath dirs)
        let mut queue: VecDeque<(PathBuf, ElfInfo, Vec<String>)> = VecDeque::new();
        queue.push_back((f.clone(), info, vec![]));
        while let Some((req, rinfo, inherited)) = queue.pop_front() {
            let origin = req.parent().unwrap_or(Path::new("/")).to_path_buf();
            let own_rpath: Vec<String> = if rinfo.runpath.is_empty() {
                rinfo.rpath.iter().map(|d| expand(d, &origin)).collect()
            } else {
                vec![]
            };
            for name in &rinfo.needed {
                if musl && is_musl_libc(name) {
                    continue;
                }
                if let Some(&i) = by_name.get(name) {
                    let _ = i;
                    continue;
                }
                let mut dirs: Vec<(String, String)> = Vec::new();
                if name.contains('/') {
                    dirs.push((String::new(), "path".into()));
                } else {
                    for d in own_rpath.iter().chain(&inherited) {
                        dirs.push((d.clone(), format!("RPATH of {}", req.display())));
                    }
                    for d in &exe_rpath {
                        dirs.push((expand(d, &origin), "RPATH of the executable".into()));
                    }
                    for d in &rinfo.runpath {
                        dirs.push((expand(d, &origin), format!("RUNPATH of {}", req.display())));
                    }
                    if !rinfo.nodeflib {
                        for d in &conf {
                            dirs.push((d.clone(), "ld.so.conf".into()));
                        }
                        let sys: &[&str] = if musl {
                            &["/lib", "/usr/local/lib", "/usr/lib"]
                        } else {
                            &[
                                "/lib/x86_64-linux-gnu",
                                "/usr/lib/x86_64-linux-gnu",
                                "/lib/aarch64-linux-gnu",
                                "/usr/lib/aarch64-linux-gnu",
                                "/lib64",
                                "/usr/lib64",
                                "/lib",
                                "/usr/lib",
                            ]
                        };
                        for d in sys {
                            dirs.push((d.to_string(), "system dir".into()));
                        }
                    }
                }
                let mut found = None;
                for (d, why) in dirs {
                    let cand = if name.contains('/') {
                        PathBuf::from(expand(name, &origin))
                    } else {
                        Path::new(&d).join(name)
                    };
                    let Ok(real) = resolve(root, &cand, true) else {
                        continue;
                    };
                    let Ok(b) = fs::read(host_path(root, &real)) else {
                        continue;
                    };
                    let Ok(Some(ci)) = scan(&b) else { continue };
                    if ci.class64 != rinfo.class64
                        || ci.machine != rinfo.machine
                        || ci.little_endian != rinfo.little_endian
                    {
                        continue;
                    }
                    found = Some((cand, real, ci, why));
                    break;
                }
                match found {
                    None => out.missing.push(Missing {
                        name: name.clone(),
                        needed_by: req.clone(),
                    }),
                    Some((cand, real, ci, why)) => {
                        by_name.insert(name.clone(), out.objects.len());
                        if let Some(s) = &ci.soname {
                            by_name.entry(s.clone()).or_insert(out.objects.len());
                        }
                        let first = seen_real.insert(real.clone());
                        out.objects.push(LoadedObject {
                            name: name.clone(),
                            path: cand.clone(),
                            real_path: real,
                            reason: why,
                            needed_by: Some(req.clone()),
                            info: ci.clone(),
                            is_interpreter: false,
                        });
                        if first {
                            let mut inh = inherited.clone();
                            inh.extend(own_rpath.iter().cloned());
                            if musl {
                                inh.extend(rinfo.runpath.iter().map(|d| expand(d, &origin)));
                            }
                            queue.push_back((cand, ci, inh));
                        }
                    }
                }
            }
        }
        // Names are per process: start over for the next program.
        by_name.retain(|_, &mut i| out.objects[i].is_interpreter);
    }
    // One object per (name, real path).
    let mut uniq = HashSet::new();
    out.objects
        .retain(|o| uniq.insert((o.name.clone(), o.real_path.clone())));
    Ok(out)
}

fn is_musl_libc(name: &str) -> bool {
    ["libc.", "libm.", "libpthread.", "libdl.", "librt.", "libutil.", "libxnet."]
        .iter()
        .any(|p| name.starts_with(p))
}
