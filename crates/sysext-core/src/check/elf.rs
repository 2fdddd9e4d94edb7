//! The ELF checks: files built for another CPU than the release file says, and names the
//! loader would not find with the image merged over the host.

use std::path::{Path, PathBuf};

use elf_closure::RootStack;
use elf_closure::{self as elf, ClosureOptions, ElfInfo};
use fsimage::{Entry, EntryKind};

use super::{cap, CheckError, Finding, Severity};
use crate::inspect::Image;
use crate::release::arch_from_elf;

/// The `wrong-architecture` findings of `image` alone (no host needed): its ELF files built
/// for another CPU than `arch`, the release file's `ARCHITECTURE`.
pub(super) fn arch_check(image: &Image, arch: &str) -> Vec<Finding> {
    arch_findings(&elf_files(image), arch)
}

/// One ELF file of an image: its relative path and scan.
struct ImageElf {
    path: String,
    info: ElfInfo,
}

/// The ELF files under `usr/` and `opt/` of `image`, scanned in place.
fn elf_files(image: &Image) -> Vec<ImageElf> {
    let mut out = Vec::new();
    for e in image.entries() {
        let merged = e.path.starts_with("usr/") || e.path.starts_with("opt/");
        if !merged || e.kind != EntryKind::File || e.size < 20 {
            continue;
        }
        let is_elf = image
            .head(e)
            .is_some_and(|h| h.len() >= 4 && &h[..4] == b"\x7fELF");
        if !is_elf {
            continue;
        }
        match image.scan_elf(&e.path) {
            Ok(Some(info)) => out.push(ImageElf {
                path: e.path.clone(),
                info,
            }),
            Ok(None) => {}
            Err(err) => tracing::warn!("{}: {err}", gentext::escape(&e.path)),
        }
    }
    out
}

fn arch_findings(elves: &[ImageElf], arch: &str) -> Vec<Finding> {
    elves
        .iter()
        .filter_map(|e| {
            let got = arch_from_elf(e.info.machine, e.info.class64, e.info.little_endian);
            (got != Some(arch)).then(|| Finding {
                code: "wrong-architecture",
                path: Some(e.path.clone()),
                message: format!(
                    "built for {} but the release file says ARCHITECTURE={arch}; rebuild it for {arch}, or drop it",
                    got.unwrap_or("an architecture systemd has no name for")
                ),
                severity: Severity::Error,
            })
        })
        .collect()
}

/// The ELF findings of `image` merged over the host root folder `host_root`: for every dynamic
/// ELF file under `usr/` and `opt/` with an interpreter or needed libraries, each name the
/// loader would not find in the merged view (`missing-interpreter`, `missing-library`); and,
/// when `arch` (the release file's `ARCHITECTURE`) is given, the files built for another CPU
/// (`wrong-architecture`). The image is a read-only layer of the loader's view, read in place
/// (nothing is extracted). Only presence is checked, not symbol versions.
pub fn check_elf(
    image: &Image,
    host_root: &Path,
    arch: Option<&str>,
) -> Result<Vec<Finding>, CheckError> {
    let elves = elf_files(image);
    let opts = ClosureOptions::default();
    let mut findings = Vec::new();
    if let Some(arch) = arch {
        findings.extend(arch_findings(&elves, arch));
    }
    let hint = "ship it in the image (flix pulls the closure in) or make sure the host has it";
    let dynamic: Vec<&ImageElf> = elves
        .iter()
        .filter(|e| e.info.interpreter.is_some() || !e.info.needed.is_empty())
        .collect();
    // Files inside a wrapped root filesystem (flatwrap's `usr/local/NAME/` with its
    // `.flatwrap/` launcher helper) run with that folder as `/`: check them against it,
    // everything else against the image's /usr and /opt over the host.
    let wrapped = wrapped_roots(image.entries());
    let mut groups: Vec<(RootStack, Vec<(&ImageElf, PathBuf)>)> = Vec::new();
    let mut merged = RootStack::new();
    merged
        .push_view(image.view(""), &["/usr", "/opt"])
        .push(host_root, &[]);
    groups.push((merged, Vec::new()));
    for w in &wrapped {
        let mut inside = RootStack::new();
        inside.push_view(image.view(w), &[]);
        groups.push((inside, Vec::new()));
    }
    for e in &dynamic {
        match wrapped.iter().position(|w| {
            e.path
                .strip_prefix(w.as_str())
                .is_some_and(|r| r.starts_with('/'))
        }) {
            Some(i) => {
                let inside = PathBuf::from(&e.path[wrapped[i].len()..]);
                groups[i + 1].1.push((e, inside));
            }
            None => groups[0].1.push((e, PathBuf::from(format!("/{}", e.path)))),
        }
    }
    let mut checked = Vec::new();
    for (roots, members) in &groups {
        let files: Vec<PathBuf> = members.iter().map(|(_, p)| p.clone()).collect();
        let closures = elf::closure_each(roots, &files, &opts);
        checked.extend(members.iter().cloned().zip(closures));
    }
    for ((e, inside), closure) in checked {
        let inside = inside.as_path();
        let closure = match closure {
            Ok(c) => c,
            Err(err) => {
                tracing::warn!(
                    "not checking the libraries of {}: {err}",
                    gentext::escape(&e.path)
                );
                continue;
            }
        };
        for m in closure.missing {
            let is_interp = m.needed_by.as_path() == inside
                && e.info.interpreter.as_deref() == Some(m.name.as_str());
            let via = if m.needed_by.as_path() == inside {
                String::new()
            } else {
                format!(" (needed by {})", m.needed_by.display())
            };
            let host = host_root.display();
            findings.push(if is_interp {
                Finding {
                    code: "missing-interpreter",
                    path: Some(e.path.clone()),
                    message: format!(
                        "program interpreter {} is neither in the image nor on the host {host}; {hint}",
                        m.name
                    ),
                    severity: Severity::Error,
                }
            } else {
                Finding {
                    code: "missing-library",
                    path: Some(e.path.clone()),
                    message: format!(
                        "library {}{via} is neither in the image nor on the host {host} (searched as the loader would); {hint}",
                        m.name
                    ),
                    severity: Severity::Error,
                }
            });
        }
    }
    Ok(cap(findings))
}

/// Folders of the image that are root filesystems entered by launchers: `usr/local/NAME`
/// holding flatwrap's `.flatwrap/launch`.
fn wrapped_roots(entries: &[Entry]) -> Vec<String> {
    entries
        .iter()
        .filter_map(|e| e.path.strip_suffix("/.flatwrap/launch"))
        .filter(|p| p.starts_with("usr/local/") && p.matches('/').count() == 2)
        .map(str::to_string)
        .collect()
}
