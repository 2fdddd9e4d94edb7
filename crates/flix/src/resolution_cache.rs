//! patchelf's `--build-resolution-cache`: a note that tells a patched glibc loader where the
//! DT_NEEDED libraries of an object are, so it can skip the run-path search at startup.
//!
//! The note is an allocated section `.note.nixos.ldcache` (owner `NixOS`, type
//! [`NT_NIXOS_LD_CACHE`]) covered by a PT_NOTE. Its descriptor is a sequence of NUL-terminated
//! `(needed, list)` string pairs sorted by name and closed by an empty string. `list` joins
//! with `:`, in run-path order, one entry per run-path directory that has something to say:
//! `=DIR/NAME` when DIR is absolute and `DIR/NAME` is readable now, `?DIR` when DIR can only
//! be searched at run time (empty or relative, holding a `$` token, or having a
//! `glibc-hwcaps` subdirectory), so that an exact entry never jumps ahead of a directory the
//! loader must still search first. DT_NEEDED names holding a `/` are opened directly by the
//! loader and are not listed; names found nowhere are left out.
//!
//! The search is the object's own run path only (DT_RUNPATH, else DT_RPATH), on the host's
//! filesystem, recording every candidate: this differs from
//! [`elf_closure::closure`], which walks a whole closure inside a rootfs through the
//! cache and system directories and keeps only the first candidate whose ABI matches, so it
//! is not reused here.
//!
//! A file that already carries the note is left as it is when the note says what a fresh one
//! would, and refused otherwise ([`CacheError::Stale`]): rebuild from an unpatched binary. Edits
//! that change the run path or the needed libraries drop the note ([`drop_note`]).

use std::collections::BTreeMap;
use std::path::Path;

use elf_edit::{
    add_note_section, find_note_section, inspect, remove_note_section, Note, RewriteError,
};

/// Section name of the note.
pub const SECTION: &str = ".note.nixos.ldcache";
/// Owner of the note.
pub const OWNER: &str = "NixOS";
/// Note type, as the patched glibc loader in Nixpkgs expects it.
pub const NT_NIXOS_LD_CACHE: u32 = 0x63a8_6cb6;

/// Errors of [`build`] and [`drop_note`].
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error(
        "--build-resolution-cache: a resolution cache note is already present; rebuild from an unpatched binary"
    )]
    Stale,
    #[error(transparent)]
    Rewrite(#[from] RewriteError),
}

/// Why no note was written (patchelf prints these as warnings).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Skip {
    NoDynamic,
    NothingToResolve,
    NothingResolved,
}

impl std::fmt::Display for Skip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Skip::NoDynamic => "no dynamic section (statically linked?); no cache written",
            Skip::NothingToResolve => {
                "no DT_NEEDED entries or run path to resolve; no cache written"
            }
            Skip::NothingResolved => "no libraries resolved against the run path; no cache written",
        })
    }
}

/// What [`build`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The file with the new note.
    Written(Vec<u8>),
    /// The note is present and says what a fresh one would.
    UpToDate,
    /// Nothing to write.
    Skipped(Skip),
}

/// Needed name → entries (`=PATH` or `?DIR`), sorted by name.
pub type Resolutions = BTreeMap<String, Vec<String>>;

/// patchelf's split of a run path: empty components count, except a trailing one.
pub fn split_run_path(s: &str) -> Vec<String> {
    let mut parts: Vec<String> = s.split(':').map(str::to_string).collect();
    if parts.last().is_some_and(String::is_empty) {
        parts.pop();
    }
    parts
}

/// Resolve `needed` against `run_path` on the host filesystem (see the module docs).
pub fn resolve(needed: &[String], run_path: &[String]) -> Resolutions {
    let mut out = Resolutions::new();
    let searched: Vec<&String> = needed.iter().filter(|n| !n.contains('/')).collect();
    for dir in run_path {
        let runtime_only = !dir.starts_with('/')
            || dir.contains('$')
            || Path::new(dir).join("glibc-hwcaps").exists();
        for lib in &searched {
            if runtime_only {
                out.entry((*lib).clone())
                    .or_default()
                    .push(format!("?{dir}"));
            } else {
                let path = format!("{dir}/{lib}");
                if std::fs::File::open(&path).is_ok() {
                    out.entry((*lib).clone())
                        .or_default()
                        .push(format!("={path}"));
                }
            }
        }
    }
    out
}

/// The note descriptor for `res`.
pub fn descriptor(res: &Resolutions) -> Vec<u8> {
    let mut d = Vec::new();
    for (lib, entries) in res {
        d.extend_from_slice(lib.as_bytes());
        d.push(0);
        d.extend_from_slice(entries.join(":").as_bytes());
        d.push(0);
    }
    d.push(0);
    d
}

/// Parse a descriptor back into resolutions (`None` when it is not one).
pub fn parse_descriptor(d: &[u8]) -> Option<Resolutions> {
    let body = d.strip_suffix(b"\0")?;
    let mut out = Resolutions::new();
    if body.is_empty() {
        return Some(out);
    }
    let body = body.strip_suffix(b"\0")?;
    let mut it = body.split(|&c| c == 0);
    while let Some(lib) = it.next() {
        let list = it.next()?;
        let list = std::str::from_utf8(list).ok()?;
        out.insert(
            String::from_utf8(lib.to_vec()).ok()?,
            list.split(':').map(str::to_string).collect(),
        );
    }
    Some(out)
}

/// The resolution cache note of `input`, parsed (`None`: no such section or not a cache).
pub fn read(input: &[u8]) -> Result<Option<Resolutions>, RewriteError> {
    Ok(find_note_section(input, SECTION)?
        .and_then(|s| s.entry)
        .filter(|e| e.owner == OWNER && e.n_type == NT_NIXOS_LD_CACHE)
        .and_then(|e| parse_descriptor(&e.desc)))
}

/// Build the note for `input` (see the module docs).
pub fn build(input: &[u8]) -> Result<Outcome, CacheError> {
    let existing = find_note_section(input, SECTION)?;
    let stale = |skip: Skip| match existing {
        Some(_) => Err(CacheError::Stale),
        None => Ok(Outcome::Skipped(skip)),
    };
    let info = inspect(input)?;
    if !info.has_dynamic {
        return stale(Skip::NoDynamic);
    }
    let run_path = info
        .runpath
        .as_deref()
        .or(info.rpath.as_deref())
        .map(split_run_path)
        .unwrap_or_default();
    if info.needed.is_empty() || run_path.is_empty() {
        return stale(Skip::NothingToResolve);
    }
    let res = resolve(&info.needed, &run_path);
    if res.is_empty() {
        return stale(Skip::NothingResolved);
    }
    let desc = descriptor(&res);
    if let Some(found) = &existing {
        if found.entry.as_ref().map(|e| &e.desc) == Some(&desc) {
            return Ok(Outcome::UpToDate);
        }
        return Err(CacheError::Stale);
    }
    let out = add_note_section(
        input,
        &Note {
            section: SECTION,
            owner: OWNER,
            n_type: NT_NIXOS_LD_CACHE,
            desc: &desc,
        },
    )?;
    Ok(Outcome::Written(out))
}

/// `input` without its resolution cache note (`None`: it has none).
pub fn drop_note(input: &[u8]) -> Result<Option<Vec<u8>>, CacheError> {
    Ok(remove_note_section(input, SECTION)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn run_path_split_keeps_inner_empties() {
        assert_eq!(split_run_path(""), s(&[]));
        assert_eq!(split_run_path(":"), s(&[""]));
        assert_eq!(split_run_path(":/a"), s(&["", "/a"]));
        assert_eq!(split_run_path("/a::/b:"), s(&["/a", "", "/b"]));
    }

    #[test]
    fn resolution_order_hints_and_descriptor() {
        let t = tempfile::tempdir().unwrap();
        let a = t.path().join("a");
        let b = t.path().join("b");
        let hw = t.path().join("hw");
        for d in [&a, &b, &hw.join("glibc-hwcaps")] {
            std::fs::create_dir_all(d).unwrap();
        }
        std::fs::write(a.join("libx.so"), b"").unwrap();
        std::fs::write(b.join("libx.so"), b"").unwrap();
        std::fs::write(b.join("liby.so"), b"").unwrap();
        std::fs::write(hw.join("liby.so"), b"").unwrap();
        let (a, b, hw) = (
            a.display().to_string(),
            b.display().to_string(),
            hw.display().to_string(),
        );
        let needed = s(&["liby.so", "libx.so", "/abs/libz.so", "libmissing.so"]);
        let run = s(&[&a, "", &b, "$ORIGIN/l", &hw]);
        let res = resolve(&needed, &run);
        assert_eq!(
            res.keys().cloned().collect::<Vec<_>>(),
            s(&["libmissing.so", "libx.so", "liby.so"])
        );
        assert_eq!(
            res["libx.so"],
            vec![
                format!("={a}/libx.so"),
                "?".into(),
                format!("={b}/libx.so"),
                "?$ORIGIN/l".into(),
                format!("?{hw}"),
            ]
        );
        assert_eq!(
            res["liby.so"],
            vec![
                "?".into(),
                format!("={b}/liby.so"),
                "?$ORIGIN/l".into(),
                format!("?{hw}"),
            ]
        );
        assert_eq!(
            res["libmissing.so"],
            s(&["?", "?$ORIGIN/l", &format!("?{hw}")])
        );
        let d = descriptor(&res);
        assert!(d.starts_with(b"libmissing.so\0?:?$ORIGIN/l:?"));
        assert!(d.ends_with(b"\0\0"));
        assert_eq!(parse_descriptor(&d), Some(res));
        assert_eq!(parse_descriptor(b"\0"), Some(Resolutions::new()));
        assert_eq!(parse_descriptor(b"lib\0"), None);
        assert_eq!(parse_descriptor(b""), None);
    }

    #[test]
    fn nothing_found_in_absolute_dirs_is_left_out() {
        let t = tempfile::tempdir().unwrap();
        let res = resolve(&s(&["libq.so"]), &s(&[&t.path().display().to_string()]));
        assert!(res.is_empty());
        assert_eq!(descriptor(&res), b"\0");
    }
}
