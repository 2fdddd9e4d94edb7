//! Lint an extension image the way systemd-sysext will see it on a host.
//!
//! [`check`] works on an image's entry list and release file text (the shape
//! [`crate::inspect::Image`] gives for `.raw` files and folders alike), so it needs no I/O;
//! [`check_image`] feeds it from an opened image. The result is a [`Report`] of
//! [`Finding`]s, each with a stable `code`, the path it concerns, a message saying what to do,
//! and a [`Severity`].
//!
//! What is checked:
//! - `invalid-name` / `risky-name`: the image name as systemd judges it ([`validate_name`]);
//! - `missing-release`, `misnamed-release`, `unreadable-release`: the release file must be
//!   `usr/lib/extension-release.d/extension-release.<image name>` (a confext's
//!   `etc/extension-release.d/extension-release.<image name>`), a UTF-8 regular file;
//! - `os-release-in-image`: an image must not ship `usr/lib/os-release`;
//! - `outside-hierarchy`: only `usr/` and `opt/` (a confext: `etc/`) are merged, anything else
//!   is ignored;
//!
//! The class (sysext or confext) comes from the release file the image holds
//! ([`ImageClass::detect`]); a confext is judged by systemd-confext's rules (`CONFEXT_LEVEL`,
//! `CONFEXT_SCOPE`), and its ELF files are not looked at (systemd-confext 257 mounts `/etc`
//! `noexec`).
//! - `not-root-owned`: every entry should belong to root:root;
//! - `directory-mode`: directories replace the host's in the merged view, so they must be 0755;
//! - `incompatible`: systemd's compatibility rules against a [`Host`];
//! - `missing-interpreter` / `missing-library`: a dynamic ELF file under `usr/` or `opt/`
//!   whose PT_INTERP or DT_NEEDED names nothing in the merged view (the image's `usr/` and
//!   `opt/` over the host's root folder, searched as the loader would, see [`elf_closure`]).
//!   Only presence is checked, not symbol versions. Needs the host's root folder
//!   ([`Host::root`]); without one the report says so in [`Report::notes`];
//! - `wrong-architecture`: an ELF file for another CPU than the release file's `ARCHITECTURE`;
//! - `setuid-setgid`: a file with the setuid or setgid bit (once merged, any local user runs
//!   it with its owner's or group's rights);
//! - `file-capability`: a file with a `security.capability` xattr (file capabilities);
//! - `shadows-host-file` / `hides-host-folder`: with a host root folder, paths of the image
//!   that hide the host's own files while merged (overlayfs shows the image's instead), e.g. a
//!   `usr/bin/curl` on a host that has curl, or a file where the host has a folder.
//!
//! Nothing is extracted: ELF headers, the dynamic section and strings are read from the image
//! in place, each read bounded ([`elf_closure::scan_reader`]), and the loader's search runs on
//! the image as a read-only [`elf_closure::TreeView`] layer ([`Image::view`]) over the host.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::inspect::{Image, InspectError};
use crate::release::{
    check_class_compatibility, host_architecture, validate_name, ImageClass, OsRelease,
    ReleaseError, Verdict,
};
use fsimage::{Entry, EntryKind};

mod elf;
mod shadow;

use self::elf::arch_check;
pub use self::elf::check_elf;
use self::shadow::shadow_findings;

/// Errors of this module (a finding is not an error: errors mean the check could not run).
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error("cannot read the host's os-release {}", path.display())]
    HostOsRelease {
        path: PathBuf,
        #[source]
        source: ReleaseError,
    },
    #[error("no os-release in {} (looked for etc/os-release and usr/lib/os-release); pass the host's root folder", root.display())]
    NoOsReleaseInRoot { root: PathBuf },
    #[error("the running host's architecture has no systemd name; pass it explicitly")]
    UnknownHostArchitecture,
    #[error(transparent)]
    Inspect(#[from] InspectError),
}

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Works, but invites trouble.
    Warning,
    /// systemd will not merge the image as intended, or it will change the host.
    Error,
}

/// One problem found in an image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// Stable kebab-case identifier, e.g. `missing-release`.
    pub code: &'static str,
    /// The path inside the image it concerns (relative, e.g. `usr/lib/os-release`).
    pub path: Option<String>,
    pub message: String,
    pub severity: Severity,
}

/// The host an image is checked against.
#[derive(Debug, Clone, Serialize)]
pub struct Host {
    /// Where the os-release came from (for messages).
    pub origin: PathBuf,
    pub os_release: OsRelease,
    /// systemd's architecture name, e.g. `x86-64`.
    pub architecture: String,
    /// The host's root folder, where the libraries of the image's ELF files are looked for
    /// (none for a host given by its os-release file alone).
    pub root: Option<PathBuf>,
}

impl Host {
    /// The running host: `/etc/os-release`, else `/usr/lib/os-release`, and its CPU.
    pub fn running() -> Result<Host, CheckError> {
        Self::from_root(Path::new("/"), None)
    }

    /// The host whose root folder is `root` (systemd reads `etc/os-release` first, then
    /// `usr/lib/os-release`); `arch` defaults to the running host's.
    pub fn from_root(root: &Path, arch: Option<&str>) -> Result<Host, CheckError> {
        for rel in ["etc/os-release", "usr/lib/os-release"] {
            // Symlinks resolve inside `root` (Debian's etc/os-release is one); a dangling one
            // counts as absent, as for systemd.
            if let Some(path) = resolve_in_root(root, rel) {
                let mut host = Self::from_os_release_file(&path, arch)?;
                host.root = Some(root.to_path_buf());
                return Ok(host);
            }
        }
        Err(CheckError::NoOsReleaseInRoot {
            root: root.to_path_buf(),
        })
    }

    /// A host described by an os-release file; `arch` defaults to the running host's.
    pub fn from_os_release_file(path: &Path, arch: Option<&str>) -> Result<Host, CheckError> {
        let os_release = OsRelease::read(path).map_err(|source| CheckError::HostOsRelease {
            path: path.to_path_buf(),
            source,
        })?;
        let architecture = match arch {
            Some(a) => a.to_string(),
            None => host_architecture()
                .ok_or(CheckError::UnknownHostArchitecture)?
                .to_string(),
        };
        Ok(Host {
            origin: path.to_path_buf(),
            os_release,
            architecture,
            root: None,
        })
    }
}

/// `rel` inside the folder `root` with `root` as `/`: symlinks (in any component) are
/// followed with absolute targets re-rooted and `..` clamped at the root, so nothing resolves
/// against the machine running the check. `None` when it does not exist (or loops).
fn resolve_in_root(root: &Path, rel: &str) -> Option<PathBuf> {
    let mut todo: Vec<String> = rel.split('/').rev().map(str::to_string).collect();
    let mut done: Vec<String> = Vec::new();
    let mut hops = 0;
    while let Some(c) = todo.pop() {
        match c.as_str() {
            "" | "." => continue,
            ".." => {
                done.pop();
                continue;
            }
            _ => {}
        }
        let candidate = root.join(done.join("/")).join(&c);
        let meta = std::fs::symlink_metadata(&candidate).ok()?;
        if meta.file_type().is_symlink() {
            hops += 1;
            if hops > 40 {
                return None;
            }
            let target = std::fs::read_link(&candidate).ok()?;
            let target = target.to_str()?;
            if target.starts_with('/') {
                done.clear();
            }
            todo.extend(target.split('/').rev().map(str::to_string));
        } else {
            done.push(c);
        }
    }
    Some(root.join(done.join("/")))
}

/// The outcome of checking one image.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The image name (file name without `.raw`, or the folder name).
    pub name: String,
    /// The host checked against, if any.
    pub host: Option<Host>,
    /// systemd's verdict on that host (none without a host or a readable release file).
    pub verdict: Option<Verdict>,
    pub findings: Vec<Finding>,
    /// What was not checked, and why.
    pub notes: Vec<String>,
}

impl Report {
    /// True when nothing at all was found.
    pub fn is_clean(&self) -> bool {
        self.findings.is_empty()
    }
}

/// Per-entry findings of one kind beyond this many are summarised in one more finding.
pub const MAX_PER_CODE: usize = 20;

/// Checks an image given its `name`, its `entries` (relative paths, as
/// [`Image::entries`] lists them) and the bytes of `extension-release.<name>` when the image
/// has it as a regular file. `host` adds systemd's compatibility verdict.
pub fn check(name: &str, entries: &[Entry], release: Option<&[u8]>, host: Option<&Host>) -> Report {
    let mut findings = Vec::new();
    let mut push = |code, path: Option<&str>, severity, message: String| {
        findings.push(Finding {
            code,
            path: path.map(str::to_string),
            message,
            severity,
        })
    };

    // The name.
    match validate_name(name) {
        Ok(warnings) => {
            for w in warnings {
                push("risky-name", None, Severity::Warning, w);
            }
        }
        Err(e) => push("invalid-name", None, Severity::Error, e.to_string()),
    }

    // The release file, where the image's class keeps it.
    let class = ImageClass::detect(entries.iter().map(|e| e.path.as_str()));
    let tool = class.tool();
    let expected = class.release_file(name).to_string_lossy().into_owned();
    let mut verdict = None;
    let others: Vec<&Entry> = entries
        .iter()
        .filter(|e| {
            e.path != expected
                && e.path
                    .strip_prefix(class.release_dir())
                    .and_then(|r| r.strip_prefix("/extension-release."))
                    .is_some_and(|rest| !rest.contains('/'))
        })
        .collect();
    match entries.iter().find(|e| e.path == expected) {
        None => {
            if others.is_empty() {
                push(
                    "missing-release",
                    Some(&expected),
                    Severity::Error,
                    format!(
                        "no release file: {tool} needs {expected} (e.g. a line ID=_any) and ignores the image without it"
                    ),
                );
            }
        }
        Some(e) => match release.map(OsRelease::from_bytes) {
            None => push(
                "unreadable-release",
                Some(&expected),
                Severity::Error,
                if e.kind == EntryKind::File {
                    format!("{expected} could not be read")
                } else {
                    format!(
                        "{expected} is not a regular file, nor a symlink to one inside the image"
                    )
                },
            ),
            Some(None) => push(
                "unreadable-release",
                Some(&expected),
                Severity::Error,
                format!("{expected} is not valid UTF-8; systemd refuses to parse it"),
            ),
            Some(Some(ext)) => {
                if let Some(host) = host {
                    let v = check_class_compatibility(
                        class,
                        &ext,
                        &host.os_release,
                        &host.architecture,
                    );
                    if let Verdict::Incompatible { reason } = &v {
                        push(
                            "incompatible",
                            Some(&expected),
                            Severity::Error,
                            format!(
                                "{tool} would skip this image on the host of {} ({}): {reason}",
                                host.origin.display(),
                                host.architecture
                            ),
                        );
                    }
                    verdict = Some(v);
                }
            }
        },
    }
    for e in others {
        let release_name = e.path.rsplit("extension-release.").next().unwrap_or("");
        let cut = name.split(['_', '+']).next().unwrap_or(name);
        let newer = if release_name == cut && cut != name {
            " (systemd 257+ accepts it, as the name cut at the first '_' or '+'; older versions do not)"
        } else {
            ""
        };
        push(
            "misnamed-release",
            Some(&e.path),
            Severity::Error,
            format!(
                "release file for another name: {tool} looks for {expected} in an image named {name:?} and skips a folder or refuses a .raw without it{newer}; rename the file, or name the image after it"
            ),
        );
    }

    if class == ImageClass::Sysext && entries.iter().any(|e| e.path == "usr/lib/os-release") {
        push(
            "os-release-in-image",
            Some("usr/lib/os-release"),
            Severity::Error,
            "an extension must not contain usr/lib/os-release (it would replace the host's); remove it".into(),
        );
    }

    // Top-level entries other than usr/ and opt/ (a confext: etc/), one finding each, not one
    // per file below.
    let tops = class.top_dirs();
    for e in entries.iter().filter(|e| !e.path.contains('/')) {
        let top = tops.contains(&e.path.as_str());
        if !(top && e.kind == EntryKind::Dir) {
            push(
                "outside-hierarchy",
                Some(&e.path),
                Severity::Error,
                if top {
                    format!("{} is not a directory; {tool} cannot merge it", e.path)
                } else if class == ImageClass::Confext {
                    format!(
                        "{} is outside etc/: systemd-confext only merges /etc and silently ignores it; move it under etc/, or ship it in a sysext",
                        e.path
                    )
                } else {
                    format!(
                        "{} is outside usr/ and opt/: systemd-sysext only merges /usr and /opt and silently ignores it; move it under usr/",
                        e.path
                    )
                },
            );
        }
    }

    let mut capped = |code: &'static str, hits: Vec<(&str, String)>, what: &str| {
        let n = hits.len();
        for (path, msg) in hits.into_iter().take(MAX_PER_CODE) {
            push(code, Some(path), Severity::Error, msg);
        }
        if n > MAX_PER_CODE {
            push(
                code,
                None,
                Severity::Error,
                format!("{} more {what} not listed", n - MAX_PER_CODE),
            );
        }
    };
    let owners = entries
        .iter()
        .filter(|e| e.uid != 0 || e.gid != 0)
        .map(|e| {
            (
                e.path.as_str(),
                format!(
                    "{} is owned by {}:{}, not root:root; pack with root ownership (sysext pack does)",
                    e.path, e.uid, e.gid
                ),
            )
        })
        .collect();
    capped("not-root-owned", owners, "entries not owned by root:root");
    let modes = entries
        .iter()
        .filter(|e| e.kind == EntryKind::Dir && e.mode != 0o755)
        .map(|e| {
            (
                e.path.as_str(),
                format!(
                    "directory {} has mode {:04o}; in the merged view it replaces the host's /{}, so ship directories as 0755",
                    e.path, e.mode, e.path
                ),
            )
        })
        .collect();
    capped(
        "directory-mode",
        modes,
        "directories with a mode other than 0755",
    );
    let special = entries
        .iter()
        .filter(|e| !matches!(e.kind, EntryKind::Dir | EntryKind::Symlink) && e.mode & 0o6000 != 0)
        .map(|e| {
            let bits = match e.mode & 0o6000 {
                0o6000 => "setuid and setgid bits",
                0o4000 => "setuid bit",
                _ => "setgid bit",
            };
            (
                e.path.as_str(),
                format!(
                    "{} has the {bits} (mode {:04o}): once merged, any local user runs it as {}:{}; clear the bit (sysext pack, flix and flatwrap strip it unless asked to keep it)",
                    e.path, e.mode, e.uid, e.gid
                ),
            )
        })
        .collect();
    capped(
        "setuid-setgid",
        special,
        "files with a setuid or setgid bit",
    );
    let caps = entries
        .iter()
        .filter(|e| e.capability)
        .map(|e| {
            (
                e.path.as_str(),
                format!(
                    "{} carries file capabilities (a security.capability xattr): once merged, any local user runs it with them; remove the xattr",
                    e.path
                ),
            )
        })
        .collect();
    capped("file-capability", caps, "files with file capabilities");

    Report {
        name: name.to_string(),
        host: host.cloned(),
        verdict,
        findings,
        notes: Vec::new(),
    }
}

/// Checks an opened image (`.raw` or folder) against `host`. A symlinked release file is
/// followed inside the image. With a host root folder ([`Host::root`]) the dynamic ELF files
/// are checked too ([`check_elf`]).
pub fn check_image(image: &Image, host: Option<&Host>) -> Result<Report, CheckError> {
    let class = image.class();
    let expected = class
        .release_file(image.name())
        .to_string_lossy()
        .into_owned();
    let release = match resolve(image.entries(), &expected) {
        Some(e) if e.kind == EntryKind::File => Some(image.read_release(&e.path)?),
        _ => None,
    };
    let mut report = check(image.name(), image.entries(), release.as_deref(), host);
    let arch = release
        .as_deref()
        .and_then(OsRelease::from_bytes)
        .and_then(|r| r.get("ARCHITECTURE").map(str::to_string))
        .filter(|a| !a.is_empty() && a != "_any");
    match host.and_then(|h| h.root.as_deref()) {
        Some(root) if class == ImageClass::Confext => {
            match shadow_findings(class, image.name(), image.entries(), root) {
                Ok(findings) => report.findings.extend(cap(findings)),
                Err(note) => report.notes.push(note),
            }
        }
        Some(root) => {
            let findings = check_elf(image, root, arch.as_deref())?;
            report.findings.extend(findings);
            match shadow_findings(class, image.name(), image.entries(), root) {
                Ok(findings) => report.findings.extend(cap(findings)),
                Err(note) => report.notes.push(note),
            }
        }
        None => {
            report.notes.push(
                "the libraries of the image's ELF files were not checked: that needs the host's root folder (--root DIR, or the running host)".into(),
            );
            // The architecture needs no host.
            if let Some(arch) = &arch {
                report.findings.extend(cap(arch_check(image, arch)));
            }
        }
    }
    Ok(report)
}

/// Keeps at most [`MAX_PER_CODE`] findings of each code and says how many more there were.
fn cap(findings: Vec<Finding>) -> Vec<Finding> {
    let mut counts: Vec<(&'static str, Severity, usize)> = Vec::new();
    let mut out = Vec::new();
    for f in findings {
        let n = match counts.iter_mut().find(|(c, _, _)| *c == f.code) {
            Some((_, _, n)) => n,
            None => {
                counts.push((f.code, f.severity, 0));
                &mut counts.last_mut().expect("just pushed").2
            }
        };
        *n += 1;
        if *n <= MAX_PER_CODE {
            out.push(f);
        }
    }
    for (code, severity, n) in counts.into_iter().filter(|(_, _, n)| *n > MAX_PER_CODE) {
        out.push(Finding {
            code,
            path: None,
            message: format!("{} more {code} findings not listed", n - MAX_PER_CODE),
            severity,
        });
    }
    out
}

/// The entry at `path`, following symlinks in its last component (relative targets from its
/// folder, absolute ones from the image root, `..` clamped at the root), at most 32 hops.
fn resolve<'a>(entries: &'a [Entry], path: &str) -> Option<&'a Entry> {
    let find = |p: &str| {
        entries
            .binary_search_by(|e| e.path.as_str().cmp(p))
            .ok()
            .map(|i| &entries[i])
            .or_else(|| entries.iter().find(|e| e.path == p))
    };
    let mut current = find(path)?;
    for _ in 0..32 {
        let Some(target) = current
            .target
            .as_deref()
            .filter(|_| current.kind == EntryKind::Symlink)
        else {
            return Some(current);
        };
        let mut parts: Vec<&str> = if target.starts_with('/') {
            Vec::new()
        } else {
            current.path.split('/').collect()
        };
        if !target.starts_with('/') {
            parts.pop();
        }
        for c in target.split('/') {
            match c {
                "" | "." => {}
                ".." => {
                    parts.pop();
                }
                c => parts.push(c),
            }
        }
        current = find(&parts.join("/"))?;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(path: &str) -> Entry {
        Entry {
            path: path.into(),
            kind: EntryKind::Dir,
            mode: 0o755,
            uid: 0,
            gid: 0,
            size: 0,
            target: None,
            capability: false,
        }
    }

    fn file(path: &str) -> Entry {
        Entry {
            kind: EntryKind::File,
            mode: 0o644,
            ..dir(path)
        }
    }

    fn clean(name: &str) -> Vec<Entry> {
        let mut v = vec![
            dir("usr"),
            dir("usr/bin"),
            file("usr/bin/tool"),
            dir("usr/lib"),
            dir("usr/lib/extension-release.d"),
            file(&format!(
                "usr/lib/extension-release.d/extension-release.{name}"
            )),
        ];
        v.sort_by(|a, b| a.path.cmp(&b.path));
        v
    }

    fn host(text: &str) -> Host {
        Host {
            origin: "/test/os-release".into(),
            os_release: OsRelease::parse(text),
            architecture: "x86-64".into(),
            root: None,
        }
    }

    fn codes(r: &Report) -> Vec<&'static str> {
        r.findings.iter().map(|f| f.code).collect()
    }

    #[test]
    fn clean_image_has_no_findings() {
        let h = host("ID=debian\nVERSION_ID=12\n");
        let r = check("tool", &clean("tool"), Some(b"ID=_any\n"), Some(&h));
        assert!(r.is_clean(), "{:?}", r.findings);
        assert_eq!(r.verdict, Some(Verdict::Compatible));
    }

    #[test]
    fn each_finding_kind() {
        let h = host("ID=debian\nVERSION_ID=12\n");
        type Mutate = fn(&mut Vec<Entry>);
        // (what, image name, change to a clean image, release text, code, path)
        type Case<'a> = (&'a str, &'a str, Mutate, &'a [u8], &'a str, Option<&'a str>);
        let cases: &[Case] = &[
            (
                "missing release",
                "tool",
                |e| e.retain(|e| !e.path.contains("extension-release.tool")),
                b"",
                "missing-release",
                Some("usr/lib/extension-release.d/extension-release.tool"),
            ),
            (
                "misnamed release",
                "tool",
                |e| {
                    for x in e.iter_mut() {
                        x.path = x.path.replace("release.tool", "release.other")
                    }
                },
                b"",
                "misnamed-release",
                Some("usr/lib/extension-release.d/extension-release.other"),
            ),
            (
                "os-release",
                "tool",
                |e| e.push(file("usr/lib/os-release")),
                b"ID=_any\n",
                "os-release-in-image",
                Some("usr/lib/os-release"),
            ),
            (
                "etc",
                "tool",
                |e| {
                    e.push(dir("etc"));
                    e.push(file("etc/tool.conf"))
                },
                b"ID=_any\n",
                "outside-hierarchy",
                Some("etc"),
            ),
            (
                "owner",
                "tool",
                |e| e[1].uid = 1000,
                b"ID=_any\n",
                "not-root-owned",
                Some("usr/bin"),
            ),
            (
                "mode",
                "tool",
                |e| e[1].mode = 0o775,
                b"ID=_any\n",
                "directory-mode",
                Some("usr/bin"),
            ),
            (
                "incompatible",
                "tool",
                |_| {},
                b"ID=fedora\n",
                "incompatible",
                Some("usr/lib/extension-release.d/extension-release.tool"),
            ),
            (
                "not utf-8",
                "tool",
                |_| {},
                b"ID=\xff\n",
                "unreadable-release",
                Some("usr/lib/extension-release.d/extension-release.tool"),
            ),
            (
                "setuid",
                "tool",
                |e| e[2].mode = 0o4755,
                b"ID=_any\n",
                "setuid-setgid",
                Some("usr/bin/tool"),
            ),
            (
                "setgid",
                "tool",
                |e| e[2].mode = 0o2711,
                b"ID=_any\n",
                "setuid-setgid",
                Some("usr/bin/tool"),
            ),
            (
                "capability",
                "tool",
                |e| e[2].capability = true,
                b"ID=_any\n",
                "file-capability",
                Some("usr/bin/tool"),
            ),
            (
                "underscore",
                "to_ol",
                |_| {},
                b"ID=_any\n",
                "risky-name",
                None,
            ),
        ];
        for (what, name, mutate, release, code, path) in cases {
            let mut entries = clean(name);
            mutate(&mut entries);
            let r = check(name, &entries, Some(release), Some(&h));
            assert_eq!(codes(&r), vec![*code], "{what}: {:?}", r.findings);
            assert_eq!(r.findings[0].path.as_deref(), *path, "{what}");
        }
    }

    #[test]
    fn many_owner_findings_are_capped() {
        let mut entries = clean("tool");
        for i in 0..50 {
            let mut f = file(&format!("usr/bin/f{i}"));
            f.uid = 1000;
            entries.push(f);
        }
        let r = check("tool", &entries, Some(b"ID=_any\n"), None);
        assert_eq!(r.findings.len(), MAX_PER_CODE + 1);
        assert!(r.findings.last().unwrap().message.starts_with("30 more"));
        assert_eq!(r.verdict, None);
    }

    #[test]
    fn symlinks_resolve_inside_the_image() {
        let link = |path: &str, target: &str| Entry {
            kind: EntryKind::Symlink,
            target: Some(target.into()),
            ..file(path)
        };
        let mut entries = vec![
            file("usr/lib/extension-release.d/real"),
            link("usr/lib/extension-release.d/rel", "real"),
            link(
                "usr/lib/extension-release.d/abs",
                "/usr/lib/extension-release.d/real",
            ),
            link(
                "usr/lib/extension-release.d/up",
                "../../../../usr/lib/extension-release.d/rel",
            ),
            link("usr/lib/extension-release.d/loop", "loop"),
            link("usr/lib/extension-release.d/dangling", "nothing"),
        ];
        entries.sort_by(|a, b| a.path.cmp(&b.path));
        for p in ["rel", "abs", "up", "real"] {
            let e = resolve(&entries, &format!("usr/lib/extension-release.d/{p}"));
            assert_eq!(
                e.map(|e| e.path.as_str()),
                Some("usr/lib/extension-release.d/real"),
                "{p}"
            );
        }
        assert!(resolve(&entries, "usr/lib/extension-release.d/loop").is_none());
        assert!(resolve(&entries, "usr/lib/extension-release.d/dangling").is_none());
    }

    #[test]
    fn host_os_release_symlinks_stay_in_the_root() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        std::fs::create_dir_all(root.join("usr/lib")).unwrap();
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::write(root.join("usr/lib/os-release"), "ID=inside\n").unwrap();
        // Absolute: must not read the machine's own /usr/lib/os-release.
        std::os::unix::fs::symlink("/usr/lib/os-release", root.join("etc/os-release")).unwrap();
        let h = Host::from_root(root, Some("x86-64")).unwrap();
        assert_eq!(h.os_release.get("ID"), Some("inside"));
        std::fs::remove_file(root.join("etc/os-release")).unwrap();
        std::os::unix::fs::symlink(
            "../../../../usr/lib/os-release",
            root.join("etc/os-release"),
        )
        .unwrap();
        let h = Host::from_root(root, Some("x86-64")).unwrap();
        assert_eq!(h.os_release.get("ID"), Some("inside"));
        // Dangling: falls back to usr/lib/os-release.
        std::fs::remove_file(root.join("etc/os-release")).unwrap();
        std::os::unix::fs::symlink("/nowhere", root.join("etc/os-release")).unwrap();
        assert_eq!(
            Host::from_root(root, None).unwrap().origin,
            root.join("usr/lib/os-release")
        );
        std::fs::remove_file(root.join("usr/lib/os-release")).unwrap();
        let e = Host::from_root(root, None).unwrap_err().to_string();
        assert!(e.contains(&root.display().to_string()), "{e}");
    }

    #[test]
    fn invalid_name_is_an_error() {
        let r = check(".#x", &clean(".#x"), Some(b"ID=_any\n"), None);
        assert_eq!(codes(&r), vec!["invalid-name"]);
        assert_eq!(r.findings[0].severity, Severity::Error);
    }
}
