//! The dependency closure, walked the way the program interpreter would walk it inside a
//! foreign root.
//!
//! Each requested file is its own process: breadth-first over DT_NEEDED, the first object
//! loaded under a name (or, for glibc, its SONAME, or the same file reached by another path)
//! wins, the interpreter is preloaded. The results of all files are merged, first seen first.
//!
//! glibc order for a name N needed by L: N with `/` is opened directly (tokens expanded);
//! otherwise DT_RPATH of L and of its loaders up the chain, then of the executable (only when L
//! has no DT_RUNPATH; an object's RPATH is ignored when it has a RUNPATH), L's own DT_RUNPATH,
//! `/etc/ld.so.cache` (or, without a cache, the dirs of `/etc/ld.so.conf`), the system dirs.
//! `LD_LIBRARY_PATH` is not used. DF_1_NODEFLIB on L drops cache hits in system dirs and the
//! system dirs. Every dir is tried with its `glibc-hwcaps` subdirs first (x86-64 only, up to
//! [`ClosureOptions::x86_64_level`]).
//!
//! musl order: `libc`, `libm`, `libpthread`, `libdl`, `librt`, `libutil`, `libxnet` are the
//! loader itself; N with `/` is opened directly; names already loaded (by file name) are reused;
//! RPATH/RUNPATH (RUNPATH wins) of L and up its chain, `$ORIGIN` only; then
//! `<prefix>/etc/ld-musl-ARCH.path` (prefix: the loader path minus two components) or
//! `/lib:/usr/local/lib:/usr/lib`.
//!
//! A candidate is accepted only when its class, byte order and machine match the requester's;
//! otherwise the search goes on (this is what glibc does; musl would fail instead).

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};

use object::elf;

const EM_X86_64: u16 = elf::EM_X86_64.0;
const EM_386: u16 = elf::EM_386.0;
const EM_AARCH64: u16 = elf::EM_AARCH64.0;
const EM_ARM: u16 = elf::EM_ARM.0;
const EM_PPC64: u16 = elf::EM_PPC64.0;
const EM_S390: u16 = elf::EM_S390.0;
const EM_RISCV: u16 = elf::EM_RISCV.0;
const EM_LOONGARCH: u16 = elf::EM_LOONGARCH.0;

use super::dlopen::{DlopenFollow, DlopenPriority};
use super::ldcache::LdCache;
use super::{ElfError, ElfInfo};
use crate::rootstack::RootStack;
use safefs::rootfs::RootfsError;

mod ldconf;
mod loaders;

use ldconf::{read_ld_so_conf, MAX_CONF_BYTES};

/// Options of [`closure`], applied to every requested file.
#[non_exhaustive]
#[derive(Debug, Clone)]
pub struct ClosureOptions {
    /// The x86-64 micro-architecture level assumed for the machine the software will run on:
    /// glibc's `glibc-hwcaps/x86-64-vN` subdirectories are searched for N from this level down
    /// to 2 (v4 first). 1 (or 0) searches none. Default 2: `x86-64-v2` is supported by every
    /// x86-64 CPU of the last fifteen years, higher levels are not, so an image built for any
    /// host does not pick a v3/v4 library that only some hosts can load. (A glibc loader on a
    /// v3 CPU would prefer a v3 copy when one exists; such copies are rare in distributions.)
    pub x86_64_level: u8,
    /// Which libraries named by the objects' dlopen metadata notes ([`super::dlopen`]) are
    /// loaded too, as the objects would at run time. Default: none (exactly what the loader
    /// loads at start-up).
    pub dlopen: DlopenFollow,
}

impl Default for ClosureOptions {
    fn default() -> Self {
        ClosureOptions {
            x86_64_level: 2,
            dlopen: DlopenFollow::None,
        }
    }
}

impl ClosureOptions {
    /// Options for software that runs on this machine: [`Self::x86_64_level`] is the running
    /// CPU's level ([`running_x86_64_level`]), so the closure picks the `glibc-hwcaps` copy the
    /// running glibc loader would pick. For images meant for other hosts keep the default.
    pub fn for_running_cpu() -> Self {
        Self::with_x86_64_level(running_x86_64_level())
    }

    /// Options with the given x86-64 level (see [`Self::x86_64_level`]).
    pub fn with_x86_64_level(level: u8) -> Self {
        ClosureOptions {
            x86_64_level: level,
            ..Self::default()
        }
    }

    /// These options, following dlopen notes as `dlopen` says (see [`Self::dlopen`]).
    pub fn following_dlopen(mut self, dlopen: DlopenFollow) -> Self {
        self.dlopen = dlopen;
        self
    }
}

/// The x86-64 micro-architecture level (1 to 4) of the CPU this process runs on, as glibc
/// decides which `glibc-hwcaps/x86-64-vN` subdirectories are supported: every feature of the
/// level, and for v3/v4 the AVX/AVX-512 state enabled by the kernel (which the feature
/// detection includes). 0 on other architectures.
pub fn running_x86_64_level() -> u8 {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        let v2 = has!("cmpxchg16b")
            && has!("popcnt")
            && has!("sse3")
            && has!("ssse3")
            && has!("sse4.1")
            && has!("sse4.2");
        let v3 = v2
            && has!("avx")
            && has!("avx2")
            && has!("bmi1")
            && has!("bmi2")
            && has!("f16c")
            && has!("fma")
            && has!("lzcnt")
            && has!("movbe")
            && has!("xsave");
        let v4 = v3
            && has!("avx512f")
            && has!("avx512bw")
            && has!("avx512cd")
            && has!("avx512dq")
            && has!("avx512vl");
        1 + u8::from(v2) + u8::from(v3) + u8::from(v4)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        0
    }
}

/// Why an object is in the closure.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Reason {
    /// One of the files the closure was asked for.
    Requested,
    /// The program interpreter (PT_INTERP), or a name musl maps to it.
    Interpreter,
    /// A DT_NEEDED entry holding a path.
    Direct,
    /// Found in a DT_RPATH directory of `of`.
    Rpath { of: PathBuf },
    /// Found in a DT_RUNPATH directory of `of`.
    Runpath { of: PathBuf },
    /// Found through `/etc/ld.so.cache`.
    LdCache,
    /// Found in a directory of `/etc/ld.so.conf` (no cache in the rootfs).
    LdSoConf,
    /// Found in musl's `etc/ld-musl-ARCH.path` directories.
    MuslPathFile { file: PathBuf },
    /// Found in the loader's default directories.
    SystemDir,
    /// Named by a dlopen metadata note of `of` (found where `of`'s DT_NEEDED would be).
    Dlopen {
        of: PathBuf,
        feature: Option<String>,
        priority: DlopenPriority,
    },
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Requested => write!(f, "requested"),
            Reason::Interpreter => write!(f, "interpreter"),
            Reason::Direct => write!(f, "path in DT_NEEDED"),
            Reason::Rpath { of } => write!(f, "RPATH of {}", of.display()),
            Reason::Runpath { of } => write!(f, "RUNPATH of {}", of.display()),
            Reason::LdCache => write!(f, "ld.so.cache"),
            Reason::LdSoConf => write!(f, "ld.so.conf"),
            Reason::MuslPathFile { file } => write!(f, "{}", file.display()),
            Reason::SystemDir => write!(f, "system dir"),
            Reason::Dlopen {
                of,
                feature,
                priority,
            } => {
                write!(f, "dlopen by {} ({priority}", of.display())?;
                if let Some(feature) = feature {
                    write!(f, ", feature {feature}")?;
                }
                write!(f, ")")
            }
        }
    }
}

/// One object of the closure.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LoadedObject {
    /// The name it was first asked for (DT_NEEDED entry, or the requested path).
    pub name: String,
    /// Inside the root, as the loader opened it (e.g. `/lib/x86_64-linux-gnu/libc.so.6`).
    pub path: PathBuf,
    /// `path` with every symlink resolved, inside the root.
    pub real_path: PathBuf,
    pub reason: Reason,
    /// The object whose DT_NEEDED brought it in (None for requested files and interpreters).
    pub needed_by: Option<PathBuf>,
    pub info: ElfInfo,
    pub is_interpreter: bool,
}

/// A needed name that nothing in the root provides.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Missing {
    pub name: String,
    pub needed_by: PathBuf,
}

/// A dlopen dependency that was followed and that nothing in the root provides (not an error
/// of the loader: the object runs without that feature, or fails when it needs it).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DlopenMissing {
    /// The alternative SONAMEs, none of them found.
    pub sonames: Vec<String>,
    pub feature: Option<String>,
    pub priority: DlopenPriority,
    pub needed_by: PathBuf,
}

/// The closure of a set of files: every object (requested files first seen first, then their
/// dependencies in load order), the missing names, and the followed dlopen dependencies that
/// were not found.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Closure {
    pub objects: Vec<LoadedObject>,
    pub missing: Vec<Missing>,
    pub dlopen_missing: Vec<DlopenMissing>,
}

/// Computes the closure of `files` (absolute inside-root paths) in `root`.
///
/// Errors: a requested file that does not exist or is not ELF, a malformed requested file or
/// interpreter. Libraries that cannot be found are reported in [`Closure::missing`].
pub fn closure(root: &Path, files: &[PathBuf], opts: &ClosureOptions) -> Result<Closure, ElfError> {
    closure_in(&RootStack::single(root), files, opts)
}

/// [`closure`] in a root made of several folders (e.g. an extension image over a host's root,
/// as systemd-sysext merges them): every lookup goes through `roots`.
pub fn closure_in(
    roots: &RootStack,
    files: &[PathBuf],
    opts: &ClosureOptions,
) -> Result<Closure, ElfError> {
    let mut env = Env::new(roots, opts);
    let mut out = Closure::default();
    let mut seen = HashSet::new();
    let mut seen_missing = HashSet::new();
    for file in files {
        let one = env.process(file)?;
        for d in one.dlopen_missing {
            if !out.dlopen_missing.contains(&d) {
                out.dlopen_missing.push(d);
            }
        }
        let (objs, missing) = (one.objects, one.missing);
        for o in objs {
            if seen.insert(o.real_path.clone()) {
                out.objects.push(o);
            }
        }
        for m in missing {
            if seen_missing.insert((m.name.clone(), m.needed_by.clone())) {
                out.missing.push(m);
            }
        }
    }
    Ok(out)
}

/// The closure of each of `files` on its own (one result per file, in order), sharing the
/// scans, directory lookups and `ld.so.cache` between them: what [`closure_in`] would give for
/// each file alone.
pub fn closure_each(
    roots: &RootStack,
    files: &[PathBuf],
    opts: &ClosureOptions,
) -> Vec<Result<Closure, ElfError>> {
    let mut env = Env::new(roots, opts);
    files.iter().map(|file| env.process(file)).collect()
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Flavour {
    Glibc,
    Musl,
}

/// One object of one process.
struct Obj {
    /// Names it answers to (glibc: names asked for + SONAME; musl: file name when searched).
    names: Vec<String>,
    path: String,
    real: PathBuf,
    info: ElfInfo,
    loader: Option<usize>,
    reason: Reason,
    needed_by: Option<PathBuf>,
    is_interp: bool,
    /// `$ORIGIN`.
    origin: String,
}

struct Process {
    flavour: Flavour,
    objs: Vec<Obj>,
    interp: Option<usize>,
    missing: Vec<Missing>,
    dlopen_missing: Vec<DlopenMissing>,
    missing_names: HashSet<String>,
    /// Loader-default dirs, `$LIB`, `$PLATFORM`, hwcaps subdirs, cache flags.
    system_dirs: Vec<String>,
    lib_token: String,
    platform: String,
    hwcaps: Vec<String>,
    cache_id: Option<i32>,
    /// musl: the dirs of the path file (or the default) and the reason to give.
    musl_path: Option<(Vec<String>, Reason)>,
}

struct Env<'a> {
    roots: &'a RootStack,
    opts: &'a ClosureOptions,
    scans: HashMap<PathBuf, Option<ElfInfo>>,
    dirs: HashMap<String, Option<PathBuf>>,
    ldcache: Option<Option<LdCache>>,
    ldsoconf: Option<Vec<String>>,
}

/// A found candidate: path as opened, real path, its scan.
type Found = (String, PathBuf, ElfInfo);

fn parent_str(p: &str) -> String {
    match p.rfind('/') {
        Some(0) => "/".to_string(),
        Some(i) => p[..i].to_string(),
        None => "/".to_string(),
    }
}

fn join_str(dir: &str, name: &str) -> String {
    let d = dir.trim_end_matches('/');
    format!("{d}/{name}")
}

impl<'a> Env<'a> {
    fn new(roots: &'a RootStack, opts: &'a ClosureOptions) -> Env<'a> {
        Env {
            roots,
            opts,
            scans: HashMap::new(),
            dirs: HashMap::new(),
            ldcache: None,
            ldsoconf: None,
        }
    }

    fn rootfs_err(&self, e: RootfsError) -> ElfError {
        ElfError::Rootfs(e)
    }

    /// The scan of an inside-root real path, cached; `None` for non-ELF or unreadable files.
    fn scan_real(&mut self, real: &Path) -> Option<ElfInfo> {
        if let Some(s) = self.scans.get(real) {
            return s.clone();
        }
        // glibc stops with "invalid ELF header" on such a candidate; we warn and search on.
        let res = match self.roots.scan_elf(real) {
            Ok(Some(s)) => Some(s),
            Ok(None) => {
                tracing::warn!("skipping {}: not an ELF file", real.display());
                None
            }
            Err(e) => {
                tracing::warn!("skipping {}: {e}", real.display());
                None
            }
        };
        self.scans.insert(real.to_path_buf(), res.clone());
        res
    }

    /// Resolves an inside-root directory once (`None`: does not exist or not a directory).
    fn dir(&mut self, dir: &str) -> Option<PathBuf> {
        if let Some(d) = self.dirs.get(dir) {
            return d.clone();
        }
        let abs = if dir.starts_with('/') {
            dir.to_string()
        } else {
            // The loader runs with `/` as its working directory (chroot).
            format!("/{dir}")
        };
        let res = self
            .roots
            .resolve(Path::new(&abs), true)
            .ok()
            .filter(|p| self.roots.is_dir(p));
        self.dirs.insert(dir.to_string(), res.clone());
        res
    }

    /// Tries one file: exists, is ELF, has the requester's ABI.
    fn try_file(&mut self, path: &str, want: &ElfInfo) -> Option<Found> {
        let abs = if path.starts_with('/') {
            path.to_string()
        } else {
            format!("/{path}")
        };
        let (dir, name) = abs.rsplit_once('/')?;
        let dir = if dir.is_empty() { "/" } else { dir };
        let real_dir = self.dir(dir)?;
        let real = self.roots.resolve(&real_dir.join(name), true).ok()?;
        let info = self.scan_real(&real)?;
        if !info.same_abi(want) {
            tracing::debug!("skipping {path}: wrong class, byte order or machine");
            return None;
        }
        Some((path.to_string(), real, info))
    }

    /// Searches `name` in `dirs`, each with the hwcaps subdirs first.
    fn search(
        &mut self,
        name: &str,
        dirs: &[String],
        hwcaps: &[String],
        want: &ElfInfo,
    ) -> Option<Found> {
        for d in dirs {
            if d.is_empty() || self.dir(d).is_none() {
                continue;
            }
            for sub in hwcaps {
                let p = join_str(&join_str(d, &format!("glibc-hwcaps/{sub}")), name);
                if let Some(f) = self.try_file(&p, want) {
                    return Some(f);
                }
            }
            if let Some(f) = self.try_file(&join_str(d, name), want) {
                return Some(f);
            }
        }
        None
    }

    fn ldcache(&mut self) -> Option<&LdCache> {
        if self.ldcache.is_none() {
            let cache = self
                .roots
                .resolve(Path::new("/etc/ld.so.cache"), true)
                .ok()
                .and_then(|p| {
                    match self
                        .roots
                        .read(&p, super::ldcache::MAX_LDCACHE_BYTES + 1)
                        .map_err(|e| e.to_string())
                        .and_then(|b| {
                            if b.len() as u64 > super::ldcache::MAX_LDCACHE_BYTES {
                                return Err(format!(
                                    "over {} bytes",
                                    super::ldcache::MAX_LDCACHE_BYTES
                                ));
                            }
                            LdCache::parse(&b)
                        }) {
                        Ok(c) => Some(c),
                        Err(e) => {
                            tracing::warn!("ignoring the rootfs's ld.so.cache: {e}");
                            None
                        }
                    }
                });
            self.ldcache = Some(cache);
        }
        self.ldcache.as_ref().and_then(Option::as_ref)
    }

    fn ldsoconf(&mut self) -> Vec<String> {
        if self.ldsoconf.is_none() {
            let mut dirs = Vec::new();
            read_ld_so_conf(self.roots, "/etc/ld.so.conf", &mut dirs);
            self.ldsoconf = Some(dirs);
        }
        self.ldsoconf.clone().unwrap_or_default()
    }

    /// The closure of one requested file.
    fn process(&mut self, file: &Path) -> Result<Closure, ElfError> {
        let real = self
            .roots
            .resolve(file, true)
            .map_err(|e| self.rootfs_err(e))?;
        let info = self
            .roots
            .scan_elf(&real)?
            .ok_or_else(|| ElfError::NotElf {
                path: file.to_path_buf(),
            })?;
        let file_str = file.to_string_lossy().into_owned();
        let mut names = vec![file_str.clone()];
        names.extend(info.soname.clone());
        let exe = Obj {
            names,
            path: file_str.clone(),
            real: real.clone(),
            origin: parent_str(&real.to_string_lossy()),
            info: info.clone(),
            loader: None,
            reason: Reason::Requested,
            needed_by: None,
            is_interp: false,
        };
        let interp_path = match &info.interpreter {
            Some(i) => Some(i.clone()),
            // A library: it runs under the loader of its architecture. A dynamic file with
            // nothing needed and no interpreter (static-pie, a loader) needs none.
            None if info.is_dynamic && !info.needed.is_empty() => self.default_interpreter(&info),
            None => None,
        };
        let flavour = match &interp_path {
            Some(i) if i.rsplit('/').next().unwrap_or("").starts_with("ld-musl-") => Flavour::Musl,
            _ => Flavour::Glibc,
        };
        let mut p = Process {
            flavour,
            objs: vec![exe],
            interp: None,
            missing: Vec::new(),
            dlopen_missing: Vec::new(),
            missing_names: HashSet::new(),
            system_dirs: Vec::new(),
            lib_token: String::new(),
            platform: String::new(),
            hwcaps: Vec::new(),
            cache_id: None,
            musl_path: None,
        };
        if !info.is_dynamic {
            return Ok(finish(p));
        }
        self.setup(&mut p, interp_path.as_deref());
        if let Some(ipath) = &interp_path {
            match self.try_file(ipath, &info) {
                Some((path, real, iinfo)) => {
                    let mut names = vec![path.clone()];
                    names.extend(iinfo.soname.clone());
                    p.interp = Some(p.objs.len());
                    p.objs.push(Obj {
                        names,
                        origin: parent_str(&path),
                        path,
                        real,
                        info: iinfo,
                        loader: None,
                        reason: Reason::Interpreter,
                        needed_by: None,
                        is_interp: true,
                    });
                }
                None if info.interpreter.is_some() => {
                    p.missing.push(Missing {
                        name: ipath.clone(),
                        needed_by: file.to_path_buf(),
                    });
                }
                None => {}
            }
        }
        // Breadth-first: the list grows while it is walked.
        let mut i = 0;
        while i < p.objs.len() {
            if p.objs[i].is_interp {
                i += 1;
                continue;
            }
            let needed = p.objs[i].info.needed.clone();
            for name in needed {
                self.load(&mut p, i, &name);
            }
            if self.opts.dlopen != DlopenFollow::None {
                self.load_dlopen(&mut p, i);
            }
            i += 1;
        }
        Ok(finish(p))
    }

    /// The loader a dynamic file without PT_INTERP (a library) would run under: the glibc or
    /// musl loader of its architecture present in the root.
    fn default_interpreter(&mut self, info: &ElfInfo) -> Option<String> {
        let (glibc, musl): (&[&str], &[&str]) = match (info.machine, info.class64) {
            (EM_X86_64, true) => (
                &["/lib64/ld-linux-x86-64.so.2"],
                &["/lib/ld-musl-x86_64.so.1"],
            ),
            (EM_386, false) => (&["/lib/ld-linux.so.2"], &["/lib/ld-musl-i386.so.1"]),
            (EM_AARCH64, true) => (
                &["/lib/ld-linux-aarch64.so.1"],
                &["/lib/ld-musl-aarch64.so.1"],
            ),
            (EM_ARM, false) => (
                &["/lib/ld-linux-armhf.so.3", "/lib/ld-linux.so.3"],
                &["/lib/ld-musl-armhf.so.1", "/lib/ld-musl-arm.so.1"],
            ),
            (EM_RISCV, true) => (
                &["/lib/ld-linux-riscv64-lp64d.so.1"],
                &["/lib/ld-musl-riscv64.so.1"],
            ),
            _ => (&[], &[]),
        };
        for c in glibc.iter().chain(musl) {
            if self.try_file(c, info).is_some() {
                return Some((*c).to_string());
            }
        }
        None
    }

    /// Loader-specific search settings of a process.
    fn setup(&mut self, p: &mut Process, interp: Option<&str>) {
        let info = p.objs[0].info.clone();
        if p.flavour == Flavour::Musl {
            let interp = interp.unwrap_or("/lib/ld-musl.so.1");
            let base = interp.rsplit('/').next().unwrap_or("");
            let arch = base
                .strip_prefix("ld-musl-")
                .and_then(|s| s.strip_suffix(".so.1"))
                .unwrap_or("");
            // Prefix: the loader's path minus two components (musl's dynlink.c).
            let mut prefix = interp.to_string();
            for _ in 0..2 {
                match prefix.rfind('/') {
                    Some(i) => prefix.truncate(i),
                    None => prefix.clear(),
                }
            }
            let file = format!("{prefix}/etc/ld-musl-{arch}.path");
            let content = self
                .roots
                .resolve(Path::new(&file), true)
                .ok()
                .and_then(|r| self.roots.read(&r, MAX_CONF_BYTES).ok());
            p.musl_path = Some(match content {
                Some(c) => (
                    String::from_utf8_lossy(&c)
                        .split([':', '\n'])
                        .filter(|s| !s.is_empty())
                        .map(str::to_string)
                        .collect(),
                    Reason::MuslPathFile {
                        file: PathBuf::from(file),
                    },
                ),
                None => (
                    ["/lib", "/usr/local/lib", "/usr/lib"]
                        .map(String::from)
                        .to_vec(),
                    Reason::SystemDir,
                ),
            });
            return;
        }
        let triplet = triplet(&info);
        let multiarch = triplet.is_some_and(|t| {
            self.dir(&format!("/usr/lib/{t}")).is_some() || self.dir(&format!("/lib/{t}")).is_some()
        });
        if let (Some(t), true) = (triplet, multiarch) {
            p.system_dirs = vec![
                format!("/lib/{t}"),
                format!("/usr/lib/{t}"),
                "/lib".into(),
                "/usr/lib".into(),
            ];
            p.lib_token = format!("lib/{t}");
        } else if info.class64 {
            p.system_dirs = vec!["/lib64".into(), "/usr/lib64".into()];
            p.lib_token = "lib64".into();
        } else {
            p.system_dirs = vec!["/lib".into(), "/usr/lib".into()];
            p.lib_token = "lib".into();
        }
        p.platform = platform(&info).to_string();
        if info.machine == EM_X86_64 && info.class64 {
            p.hwcaps = (2..=self.opts.x86_64_level.min(4))
                .rev()
                .map(|l| format!("x86-64-v{l}"))
                .collect();
        }
        p.cache_id = cache_id(&info);
    }

    /// Loads `name` needed by object `by` (or finds it already loaded).
    fn load(&mut self, p: &mut Process, by: usize, name: &str) {
        if name.is_empty() || p.missing_names.contains(name) {
            return;
        }
        let found = match p.flavour {
            Flavour::Glibc => self.load_glibc(p, by, name),
            Flavour::Musl => self.load_musl(p, by, name),
        };
        let Some((path, real, info, reason)) = found else {
            if !p.objs.iter().any(|o| o.names.iter().any(|n| n == name)) {
                p.missing_names.insert(name.to_string());
                p.missing.push(Missing {
                    name: name.to_string(),
                    needed_by: PathBuf::from(&p.objs[by].path),
                });
            }
            return;
        };
        Self::add(p, by, name, path, real, info, reason);
    }

    /// Follows the dlopen notes of object `by`: for each followed feature, the first of its
    /// SONAMEs found where `by`'s DT_NEEDED entries would be found is loaded (with its own
    /// dependencies, later in the walk); a feature none of whose names is found is recorded.
    fn load_dlopen(&mut self, p: &mut Process, by: usize) {
        let host = self.roots.host_path(&p.objs[by].real);
        let notes = match super::dlopen::dlopen_notes_file(&host) {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!("{e}; its dlopen notes are ignored");
                return;
            }
        };
        'features: for note in notes {
            if !self.opts.dlopen.follows(note.priority) {
                continue;
            }
            for name in &note.sonames {
                if name.is_empty() || name.contains('/') {
                    continue;
                }
                if p.objs.iter().any(|o| o.names.iter().any(|n| n == name)) {
                    continue 'features;
                }
                let found = match p.flavour {
                    Flavour::Glibc => self.load_glibc(p, by, name),
                    Flavour::Musl => self.load_musl(p, by, name),
                };
                if let Some((path, real, info, _)) = found {
                    let reason = Reason::Dlopen {
                        of: PathBuf::from(&p.objs[by].path),
                        feature: note.feature.clone(),
                        priority: note.priority,
                    };
                    Self::add(p, by, name, path, real, info, reason);
                    continue 'features;
                }
            }
            p.dlopen_missing.push(DlopenMissing {
                sonames: note.sonames.clone(),
                feature: note.feature.clone(),
                priority: note.priority,
                needed_by: PathBuf::from(&p.objs[by].path),
            });
        }
    }

    /// Adds the object found for `name` (needed by `by`), or another name of one already there.
    fn add(
        p: &mut Process,
        by: usize,
        name: &str,
        path: String,
        real: PathBuf,
        info: ElfInfo,
        reason: Reason,
    ) {
        // The same file reached by another name is the same object.
        if let Some(o) = p.objs.iter_mut().find(|o| o.real == real) {
            if p.flavour == Flavour::Glibc || !name.contains('/') {
                o.names.push(name.to_string());
            }
            return;
        }
        let mut names = vec![name.to_string()];
        if p.flavour == Flavour::Glibc {
            names.push(path.clone());
            names.extend(info.soname.clone());
        } else if !name.contains('/') {
            names.truncate(0);
            names.push(path.rsplit('/').next().unwrap_or(name).to_string());
        } else {
            names.clear();
        }
        p.objs.push(Obj {
            names,
            origin: parent_str(&path),
            path,
            real,
            info,
            loader: Some(by),
            reason,
            needed_by: Some(PathBuf::from(&p.objs[by].path)),
            is_interp: false,
        });
    }

    fn expand(&self, p: &Process, s: &str, obj: usize) -> String {
        let origin = &p.objs[obj].origin;
        let mut out = String::with_capacity(s.len());
        let mut rest = s;
        while let Some(i) = rest.find('$') {
            out.push_str(&rest[..i]);
            let tail = &rest[i + 1..];
            let mut matched = false;
            for (tok, val) in [
                ("ORIGIN", origin.as_str()),
                ("LIB", p.lib_token.as_str()),
                ("PLATFORM", p.platform.as_str()),
            ] {
                let braced = format!("{{{tok}}}");
                let len = if tail.starts_with(&braced) {
                    braced.len()
                } else if tail.starts_with(tok)
                    && !tail[tok.len()..]
                        .starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_')
                {
                    tok.len()
                } else {
                    continue;
                };
                out.push_str(val);
                rest = &tail[len..];
                matched = true;
                break;
            }
            if !matched {
                out.push('$');
                rest = tail;
            }
        }
        out.push_str(rest);
        out
    }
}

fn finish(p: Process) -> Closure {
    let objs = p
        .objs
        .into_iter()
        .map(|o| LoadedObject {
            name: o.names.first().cloned().unwrap_or_else(|| o.path.clone()),
            path: PathBuf::from(&o.path),
            real_path: o.real,
            reason: o.reason,
            needed_by: o.needed_by,
            info: o.info,
            is_interpreter: o.is_interp,
        })
        .collect();
    Closure {
        objects: objs,
        missing: p.missing,
        dlopen_missing: p.dlopen_missing,
    }
}

/// Debian's multiarch triplet for an ABI.
fn triplet(info: &ElfInfo) -> Option<&'static str> {
    Some(match (info.machine, info.class64, info.little_endian) {
        (EM_X86_64, true, _) => "x86_64-linux-gnu",
        (EM_X86_64, false, _) => "x86_64-linux-gnux32",
        (EM_386, false, _) => "i386-linux-gnu",
        (EM_AARCH64, true, true) => "aarch64-linux-gnu",
        (EM_ARM, false, true) => "arm-linux-gnueabihf",
        (EM_PPC64, true, true) => "powerpc64le-linux-gnu",
        (EM_S390, true, false) => "s390x-linux-gnu",
        (EM_RISCV, true, true) => "riscv64-linux-gnu",
        (EM_LOONGARCH, true, true) => "loongarch64-linux-gnu",
        _ => return None,
    })
}

/// `$PLATFORM` (AT_PLATFORM as the kernel reports it).
fn platform(info: &ElfInfo) -> &'static str {
    match (info.machine, info.class64) {
        (EM_X86_64, _) => "x86_64",
        (EM_386, _) => "i686",
        (EM_AARCH64, _) => "aarch64",
        (EM_ARM, _) => "v7l",
        (EM_PPC64, _) => "power8",
        (EM_S390, _) => "z13",
        (EM_RISCV, _) => "riscv64",
        _ => "",
    }
}

/// glibc's `_DL_CACHE_DEFAULT_ID` for an ABI (`None`: generic, flags 1 or 3 accepted).
fn cache_id(info: &ElfInfo) -> Option<i32> {
    const LIBC6: i32 = 0x0003;
    Some(match (info.machine, info.class64) {
        (EM_X86_64, true) => 0x0300 | LIBC6,
        (EM_X86_64, false) => 0x0800 | LIBC6,
        (EM_386, false) => LIBC6,
        (EM_AARCH64, true) => 0x0a00 | LIBC6,
        (EM_ARM, false) => 0x0900 | LIBC6,
        (EM_PPC64, true) => 0x0500 | LIBC6,
        (EM_S390, true) => 0x0400 | LIBC6,
        (EM_RISCV, true) => 0x1000 | LIBC6,
        (EM_LOONGARCH, true) => 0x1200 | LIBC6,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_expansion() {
        let info = ElfInfo {
            class64: true,
            little_endian: true,
            machine: EM_X86_64,
            e_type: elf::ET_DYN.0,
            interpreter: None,
            needed: vec![],
            soname: None,
            rpath: vec![],
            runpath: vec![],
            nodeflib: false,
            is_dynamic: true,
        };
        let opts = ClosureOptions::default();
        let roots = RootStack::single(Path::new("/nonexistent"));
        let env = Env {
            roots: &roots,
            opts: &opts,
            scans: HashMap::new(),
            dirs: HashMap::new(),
            ldcache: None,
            ldsoconf: None,
        };
        let p = Process {
            flavour: Flavour::Glibc,
            objs: vec![Obj {
                names: vec![],
                path: "/opt/x/bin/x".into(),
                real: "/opt/x/bin/x".into(),
                info,
                loader: None,
                reason: Reason::Requested,
                needed_by: None,
                is_interp: false,
                origin: "/opt/x/bin".into(),
            }],
            interp: None,
            missing: vec![],
            dlopen_missing: vec![],
            missing_names: HashSet::new(),
            system_dirs: vec![],
            lib_token: "lib/x86_64-linux-gnu".into(),
            platform: "x86_64".into(),
            hwcaps: vec![],
            cache_id: None,
            musl_path: None,
        };
        for (s, want) in [
            ("$ORIGIN/../lib", "/opt/x/bin/../lib"),
            ("${ORIGIN}/../lib", "/opt/x/bin/../lib"),
            ("/usr/$LIB/x", "/usr/lib/x86_64-linux-gnu/x"),
            ("/p/${PLATFORM}", "/p/x86_64"),
            ("$ORIGINAL/x", "$ORIGINAL/x"),
            ("$FOO:$", "$FOO:$"),
        ] {
            assert_eq!(env.expand(&p, s, 0), want, "{s}");
        }
    }
}
