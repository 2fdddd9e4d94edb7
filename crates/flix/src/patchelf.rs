//! The `flix-patchelf` command line: patchelf's options over the `elf-edit` crate, files
//! written with [`crate::rewrite::write_atomic`].
//!
//! Operations run in patchelf's order for each file: print interpreter, print/set soname,
//! set interpreter, print rpath, shrink/remove/set/add rpath, print needed, remove, replace and
//! add needed, no-default-lib, add-debug-tag, rename-dynamic-symbols, build the resolution cache
//! ([`crate::resolution_cache`]; an edit of the run path or of DT_NEEDED drops an existing cache
//! note first). A file is written only when something changed (or to `--output`).

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Parser;

use crate::resolution_cache::{self, Outcome};
use crate::rewrite::write_atomic;
use elf_edit::{
    execstack, inspect, os_abi, rewrite, set_execstack, set_os_abi, warnings, Edits, ElfSummary,
};

/// Modify the dynamic loader and search path fields of ELF executables and libraries.
#[derive(Debug, Parser)]
#[command(name = "flix-patchelf", disable_version_flag = true)]
pub struct Args {
    /// Set the interpreter (PT_INTERP).
    #[arg(long, alias = "interpreter", value_name = "INTERPRETER")]
    pub set_interpreter: Option<String>,
    /// Print the interpreter.
    #[arg(long)]
    pub print_interpreter: bool,
    /// Print DT_SONAME.
    #[arg(long)]
    pub print_soname: bool,
    /// Set DT_SONAME.
    #[arg(long, value_name = "SONAME")]
    pub set_soname: Option<String>,
    /// Set DT_RUNPATH (DT_RPATH with --force-rpath).
    #[arg(long, value_name = "RUNPATH")]
    pub set_rpath: Option<String>,
    /// Append to the search path.
    #[arg(long, value_name = "RUNPATH")]
    pub add_rpath: Option<String>,
    /// Remove DT_RUNPATH and DT_RPATH.
    #[arg(long)]
    pub remove_rpath: bool,
    /// Keep only the search path directories that hold a needed library (and relative entries:
    /// write a directory only dlopen() uses as `$ORIGIN/...`, or use --set-rpath).
    #[arg(long)]
    pub shrink_rpath: bool,
    /// With --shrink-rpath: drop absolute directories not under one of these (colon separated).
    #[arg(long, value_name = "PREFIXES")]
    pub allowed_rpath_prefixes: Option<String>,
    /// Print the search path (DT_RUNPATH, else DT_RPATH).
    #[arg(long)]
    pub print_rpath: bool,
    /// Write DT_RPATH instead of DT_RUNPATH.
    #[arg(long)]
    pub force_rpath: bool,
    /// Set DF_1_NODEFLIB: do not search the default library directories.
    #[arg(long)]
    pub no_default_lib: bool,
    /// Print the DT_NEEDED libraries.
    #[arg(long)]
    pub print_needed: bool,
    /// Add a DT_NEEDED library.
    #[arg(long, value_name = "LIBRARY")]
    pub add_needed: Vec<String>,
    /// Remove a DT_NEEDED library.
    #[arg(long, value_name = "LIBRARY")]
    pub remove_needed: Vec<String>,
    /// Replace DT_NEEDED LIBRARY by NEW_LIBRARY.
    #[arg(long, num_args = 2, value_names = ["LIBRARY", "NEW_LIBRARY"], action = clap::ArgAction::Append)]
    pub replace_needed: Vec<String>,
    /// Rename dynamic symbols as listed in MAP_FILE (one "OLD NEW" pair per line); may repeat.
    #[arg(long, value_name = "MAP_FILE", action = clap::ArgAction::Append)]
    pub rename_dynamic_symbols: Vec<PathBuf>,
    /// Write the result to this file instead of modifying the input (one input only).
    #[arg(long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Print the patchelf version whose behaviour is implemented, as patchelf prints it
    /// (tools such as auditwheel and maturin parse this line).
    #[arg(long)]
    pub version: bool,
    /// Print flix-patchelf's own version.
    #[arg(long)]
    pub flix_version: bool,
    /// Print the OS ABI of e_ident.
    #[arg(long)]
    pub print_os_abi: bool,
    /// Set the OS ABI of e_ident ("System V", "Linux", "FreeBSD", ...).
    #[arg(long, value_name = "ABI")]
    pub set_os_abi: Option<String>,
    /// Print whether PT_GNU_STACK asks for an executable stack ("execstack: X" or "-").
    #[arg(long)]
    pub print_execstack: bool,
    /// Ask for an executable stack in PT_GNU_STACK.
    #[arg(long)]
    pub set_execstack: bool,
    /// Ask for a non-executable stack in PT_GNU_STACK.
    #[arg(long)]
    pub clear_execstack: bool,
    /// Add a DT_DEBUG entry if there is none.
    #[arg(long)]
    pub add_debug_tag: bool,
    /// Record where the run path resolves each DT_NEEDED library, in a `.note.nixos.ldcache`
    /// note a patched loader reads instead of searching (not with --force-rpath).
    #[arg(long)]
    pub build_resolution_cache: bool,
    /// Accepted for compatibility; the alignment of the new segment comes from the file.
    #[arg(long, value_name = "SIZE")]
    pub page_size: Option<u64>,
    /// Ignored (patchelf's debug switch).
    #[arg(long)]
    pub debug: bool,
    /// The files to read or modify.
    pub files: Vec<PathBuf>,
}

fn split(s: &str) -> Vec<String> {
    s.split(':')
        .filter(|d| !d.is_empty())
        .map(str::to_string)
        .collect()
}

fn current_rpath(s: &ElfSummary) -> Option<&str> {
    s.runpath.as_deref().or(s.rpath.as_deref())
}

/// patchelf's --shrink-rpath: keep relative entries, drop disallowed prefixes, keep a
/// directory only when it holds a needed library (same machine) not found earlier. An absolute
/// directory that only dlopen() uses is dropped, as patchelf does (see
/// crates/flix/tests/rewrite_cli.rs, `a_run_path_entry_only_dlopen_needs`).
pub fn shrink_rpath(rpath: &str, needed: &[String], machine: u16, allowed: &[String]) -> String {
    let mut found = vec![false; needed.len()];
    let mut kept: Vec<&str> = Vec::new();
    for dir in rpath.split(':').filter(|d| !d.is_empty()) {
        if !dir.starts_with('/') {
            kept.push(dir);
            continue;
        }
        if !allowed.is_empty() && !allowed.iter().any(|p| dir.starts_with(p.as_str())) {
            continue;
        }
        let mut hit = false;
        for (i, lib) in needed.iter().enumerate() {
            if found[i] {
                continue;
            }
            let path = Path::new(dir).join(lib);
            let Ok(mut f) = std::fs::File::open(&path) else {
                continue;
            };
            let mut head = [0u8; 64];
            let n = std::io::Read::read(&mut f, &mut head).unwrap_or(0);
            if let Ok(s) = inspect_header(&head[..n]) {
                if s == machine {
                    found[i] = true;
                    hit = true;
                }
            }
        }
        if hit {
            kept.push(dir);
        }
    }
    kept.join(":")
}

fn inspect_header(head: &[u8]) -> Result<u16> {
    if head.len() < 20 || &head[..4] != b"\x7fELF" {
        bail!("not ELF");
    }
    let b = [head[18], head[19]];
    Ok(if head[5] == 2 {
        u16::from_be_bytes(b)
    } else {
        u16::from_le_bytes(b)
    })
}

/// patchelf's `@FILE` arguments: the value is read from FILE.
fn resolve(value: &str) -> Result<String> {
    match value.strip_prefix('@') {
        Some(path) => {
            std::fs::read_to_string(path).with_context(|| format!("getting info about '{path}'"))
        }
        None => Ok(value.to_string()),
    }
}

/// Read `--rename-dynamic-symbols` map files: whitespace-separated "OLD NEW" pairs, one per
/// line; blank lines are skipped. A name may appear once and carries no `@VERSION`.
pub fn read_symbol_maps(files: &[PathBuf]) -> Result<Vec<(String, String)>> {
    let mut pairs: Vec<(String, String)> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for f in files {
        let text = std::fs::read_to_string(f)
            .with_context(|| format!("cannot open map file {}", f.display()))?;
        for (n, line) in text.lines().enumerate() {
            let at = || format!("{}:{}", f.display(), n + 1);
            let mut words = line.split_whitespace();
            let Some(old) = words.next() else { continue };
            let Some(new) = words.next() else {
                bail!(
                    "{}: map file line is missing the new name for '{old}'",
                    at()
                );
            };
            if old.contains('@') || new.contains('@') {
                bail!("{}: name pair contains a version tag: {old} {new}", at());
            }
            if !seen.insert(old.to_string()) {
                bail!("{}: name '{old}' appears twice in the map files", at());
            }
            pairs.push((old.to_string(), new.to_string()));
        }
    }
    Ok(pairs)
}

fn no_dynamic(file: &Path) -> anyhow::Error {
    anyhow::anyhow!(
        "{}: cannot find section '.dynamic'. The input file is most likely statically linked",
        file.display()
    )
}

fn process(args: &Args, file: &Path, out: &mut String) -> Result<()> {
    let input =
        std::fs::read(file).with_context(|| format!("getting info about '{}'", file.display()))?;
    let info = inspect(&input).with_context(|| format!("{}", file.display()))?;
    if info.e_type != 2 && info.e_type != 3 {
        bail!("wrong ELF type");
    }
    let mut edits = Edits::default();
    if args.print_interpreter {
        match &info.interpreter {
            Some(i) => out.push_str(&format!("{i}\n")),
            None => bail!(
                "cannot find section '.interp'. The input file is most likely statically linked"
            ),
        }
    }
    let mut bytes = std::borrow::Cow::Borrowed(&input[..]);
    if args.print_os_abi {
        out.push_str(&format!("{}\n", abi_name(os_abi(&bytes)?)));
    }
    if let Some(name) = &args.set_os_abi {
        let abi = abi_from_name(&resolve(name)?)?;
        if os_abi(&bytes)? != abi {
            bytes = std::borrow::Cow::Owned(set_os_abi(&bytes, abi)?);
        }
    }
    if args.print_soname {
        // A library needs its dynamic section for this; patchelf skips other objects.
        if info.e_type == 3 && !info.has_dynamic {
            return Err(no_dynamic(file));
        }
        // patchelf 0.14 prints nothing (and succeeds) when there is no DT_SONAME.
        if let Some(s) = &info.soname {
            out.push_str(&format!("{s}\n"));
        }
    }
    if let Some(s) = &args.set_soname {
        let s = &resolve(s)?;
        if info.soname.as_deref() != Some(s) {
            edits.soname = Some(s.clone());
        }
    }
    if let Some(i) = &args.set_interpreter {
        let i = &resolve(i)?;
        if info.interpreter.as_deref() != Some(i) {
            edits.interpreter = Some(i.clone());
        }
    }
    if args.print_rpath {
        if !info.has_dynamic {
            return Err(no_dynamic(file));
        }
        out.push_str(current_rpath(&info).unwrap_or(""));
        out.push('\n');
    }
    if args.print_execstack {
        let x = execstack(&bytes)?;
        out.push_str(&format!(
            "execstack: {}\n",
            if x == Some(true) { "X" } else { "-" }
        ));
    } else if args.set_execstack || args.clear_execstack {
        let want = args.set_execstack;
        if execstack(&bytes)? != Some(want) {
            bytes = std::borrow::Cow::Owned(set_execstack(&bytes, want)?);
        }
    }
    let old = current_rpath(&info);
    let new_rpath: Option<String> = if args.shrink_rpath {
        let allowed = args
            .allowed_rpath_prefixes
            .as_deref()
            .map(split)
            .unwrap_or_default();
        old.map(|o| shrink_rpath(o, &info.needed, info.machine, &allowed))
    } else if args.remove_rpath {
        if old.is_some() {
            edits.runpath = Some(Vec::new());
        }
        None
    } else if let Some(s) = &args.set_rpath {
        Some(resolve(s)?)
    } else if let Some(s) = &args.add_rpath {
        let s = &resolve(s)?;
        Some(match old {
            Some(o) if !o.is_empty() => format!("{o}:{s}"),
            _ => s.clone(),
        })
    } else {
        None
    };
    if let Some(r) = new_rpath {
        let kind_ok = if args.force_rpath {
            info.rpath.is_some() && info.runpath.is_none()
        } else {
            info.runpath.is_some() && info.rpath.is_none()
        };
        if old != Some(r.as_str()) || !kind_ok {
            edits.runpath = Some(vec![r]);
            edits.force_rpath = args.force_rpath;
        }
    }
    if args.print_needed {
        if !info.has_dynamic {
            return Err(no_dynamic(file));
        }
        for n in &info.needed {
            out.push_str(&format!("{n}\n"));
        }
    }
    edits.remove_needed.clone_from(&args.remove_needed);
    edits.replace_needed = args
        .replace_needed
        .chunks(2)
        .filter(|c| c.len() == 2)
        .map(|c| (c[0].clone(), c[1].clone()))
        .collect();
    edits.add_needed.clone_from(&args.add_needed);
    if args.no_default_lib && info.flags_1 & 0x800 == 0 {
        edits.nodeflib = true;
    }
    edits.add_debug_tag = args.add_debug_tag;
    edits.rename_symbols = read_symbol_maps(&args.rename_dynamic_symbols)?;
    // An edit of the run path or of the needed libraries makes a resolution cache stale.
    if drops_resolution_cache(args, &info, &edits) {
        if let Some(b) =
            resolution_cache::drop_note(&bytes).with_context(|| format!("{}", file.display()))?
        {
            bytes = std::borrow::Cow::Owned(b);
        }
    }
    if edits != Edits::default() {
        for w in warnings(&bytes).unwrap_or_default() {
            let _ = writeln!(std::io::stderr(), "warning: {}: {w}", file.display());
        }
        let out = rewrite(&bytes, &edits).with_context(|| format!("{}", file.display()))?;
        bytes = std::borrow::Cow::Owned(out);
    }
    if args.build_resolution_cache {
        match resolution_cache::build(&bytes).with_context(|| format!("{}", file.display()))? {
            Outcome::Written(b) => bytes = std::borrow::Cow::Owned(b),
            Outcome::UpToDate => {}
            Outcome::Skipped(why) => {
                eprintln!("warning: --build-resolution-cache: {why}");
            }
        }
    }
    let target = args.output.clone().unwrap_or_else(|| file.to_path_buf());
    // An edit that matched nothing (a symbol map naming no symbol) leaves the file alone.
    if args.output.is_some() || bytes[..] != input[..] {
        write_atomic(&target, &bytes)?;
    }
    Ok(())
}

/// patchelf drops the note when the run path string changes (or is removed, or shrunk while
/// absent) and when DT_NEEDED entries are added, removed or replaced.
fn drops_resolution_cache(args: &Args, info: &ElfSummary, edits: &Edits) -> bool {
    let old = current_rpath(info);
    let rpath_changes = args.remove_rpath
        || (args.shrink_rpath && old.is_none())
        || edits
            .runpath
            .as_ref()
            .is_some_and(|r| r.join(":").as_str() != old.unwrap_or(""));
    let needed_changes = !edits.add_needed.is_empty()
        || edits.remove_needed.iter().any(|n| info.needed.contains(n))
        || edits
            .replace_needed
            .iter()
            .any(|(o, _)| info.needed.contains(o));
    rpath_changes || needed_changes
}

const ABIS: [(u8, &str); 12] = [
    (0, "System V"),
    (1, "HP-UX"),
    (2, "NetBSD"),
    (3, "Linux"),
    (4, "GNU Hurd"),
    (6, "Solaris"),
    (7, "AIX"),
    (8, "IRIX"),
    (9, "FreeBSD"),
    (10, "Tru64"),
    (12, "OpenBSD"),
    (13, "OpenVMS"),
];

fn abi_name(abi: u8) -> String {
    ABIS.iter()
        .find(|(v, _)| *v == abi)
        .map_or_else(|| format!("0x{abi:02X}"), |(_, n)| n.to_string())
}

fn abi_from_name(name: &str) -> Result<u8> {
    let n = name.trim().to_lowercase();
    let alias = match n.as_str() {
        "system-v" | "sysv" => "system v",
        "gnu" => "linux",
        "gnu-hurd" | "hurd" => "gnu hurd",
        other => other,
    };
    ABIS.iter()
        .find(|(_, s)| s.to_lowercase() == alias)
        .map(|(v, _)| *v)
        .ok_or_else(|| anyhow::anyhow!("unrecognized OS ABI"))
}

/// The patchelf release whose command line and behaviour flix-patchelf implements (its own
/// test suite passes as that release's does); `--version` prints it exactly as patchelf does,
/// since its clients parse the line (`patchelf X.Y.Z`, nothing after the number).
pub const PATCHELF_VERSION: &str = "0.19.0";

/// Printed output and error of one file.
type FileResult = (String, Option<anyhow::Error>);

/// Run the command; returns the exit code.
pub fn run(args: &Args) -> Result<i32> {
    if args.version {
        sysext_core::cli::write_stdout(|out| writeln!(out, "patchelf {PATCHELF_VERSION}"))?;
        return Ok(0);
    }
    if args.flix_version {
        sysext_core::cli::write_stdout(|out| {
            writeln!(
                out,
                "flix-patchelf {} (implements patchelf {PATCHELF_VERSION})",
                env!("CARGO_PKG_VERSION")
            )
        })?;
        return Ok(0);
    }
    if args.files.is_empty() {
        bail!("missing filename");
    }
    if args.force_rpath && args.build_resolution_cache {
        bail!("--build-resolution-cache cannot be combined with --force-rpath");
    }
    if args.output.is_some() && args.files.len() > 1 {
        bail!("--output option only allowed with single input file");
    }
    // Files are independent: work on them in parallel, print in command-line order.
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(args.files.len());
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results: Vec<std::sync::Mutex<Option<FileResult>>> = args
        .files
        .iter()
        .map(|_| std::sync::Mutex::new(None))
        .collect();
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(f) = args.files.get(i) else { break };
                let mut out = String::new();
                let r = process(args, f, &mut out);
                if let Ok(mut slot) = results[i].lock() {
                    *slot = Some((out, r.err()));
                }
            });
        }
    });
    let mut code = 0;
    let mut stdout = std::io::stdout().lock();
    for slot in results {
        let Some((out, err)) = slot.into_inner().ok().flatten() else {
            continue;
        };
        let _ = stdout.write_all(out.as_bytes());
        if let Some(e) = err {
            let _ = stdout.flush();
            let _ = writeln!(std::io::stderr(), "patchelf: {e:#}");
            code = 1;
        }
    }
    Ok(code)
}
