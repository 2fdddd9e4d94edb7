//! The host-shadowing checks: paths of the image that hide the host's own files or folders
//! while merged.

use std::path::Path;

use fsimage::{Entry, EntryKind};

use super::{Finding, Severity};
use crate::release::ImageClass;

/// What the host has at one path, looked up without following any symlink.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HostKind {
    Missing,
    Dir,
    Symlink,
    Other,
}

/// Counts the entries of a host folder, at most this many (for messages).
const MAX_COUNTED: usize = 10_000;

/// The files of the host that the image would hide while merged (`shadows-host-file`,
/// `hides-host-folder`), looked up in the host's root folder `root` the way overlayfs layers
/// the image over it: a folder of the image over a folder of the host merges with it; anything
/// else of the image over an existing path of the host hides the host's (a folder of the
/// image over a host symlink hides everything reached through that link, as a file over a host
/// folder hides the whole folder). Nothing is followed: a path is looked up on the host only
/// when every parent is a real folder in both. `Err` is a note saying why nothing was checked:
/// the image's own release file is on the host (it is merged or installed there already, so
/// its files look like the host's).
pub(super) fn shadow_findings(
    class: ImageClass,
    name: &str,
    entries: &[Entry],
    root: &Path,
) -> Result<Vec<Finding>, String> {
    let release = class.release_file(name).to_string_lossy().into_owned();
    if host_kind(root, &release) != HostKind::Missing {
        return Err(format!(
            "files hiding the host's were not looked for: /{release} is on the host already (merged or installed); unmerge it ({} unmerge) and check again",
            class.tool()
        ));
    }
    let tops = class.top_dirs();
    let elsewhere = match class {
        ImageClass::Sysext => format!("under /usr/local/{name}/ or under another name"),
        ImageClass::Confext => "under another name (or as a drop-in)".to_string(),
    };
    let mut kinds: std::collections::HashMap<&str, HostKind> = std::collections::HashMap::new();
    let mut findings = Vec::new();
    for e in entries {
        let top = e.path.split('/').next().unwrap_or("");
        if !e.path.contains('/') || !tops.contains(&top) || e.path == release {
            continue;
        }
        let parent = e.path.rsplit_once('/').map_or("", |(p, _)| p);
        let parent_merged = if tops.contains(&parent) {
            host_kind(root, parent) == HostKind::Dir
        } else {
            kinds.get(parent) == Some(&HostKind::Dir)
        };
        if !parent_merged {
            continue;
        }
        let kind = host_kind(root, &e.path);
        let image_dir = e.kind == EntryKind::Dir;
        if image_dir {
            kinds.insert(&e.path, kind);
        }
        let shown = format!("/{}", e.path);
        let finding = match (kind, image_dir) {
            (HostKind::Missing, _) | (HostKind::Dir, true) => continue,
            (HostKind::Dir, false) => Finding {
                code: "hides-host-folder",
                path: Some(e.path.clone()),
                message: format!(
                    "replaces the host's folder {shown} ({}) while merged; ship it {elsewhere}",
                    count_entries(&root.join(&e.path))
                ),
                severity: Severity::Error,
            },
            (HostKind::Symlink, true) => Finding {
                code: "hides-host-folder",
                path: Some(e.path.clone()),
                message: format!(
                    "is a folder where the host has a symlink ({shown} -> {}), so everything the host reaches through that link is hidden while merged; ship a symlink there, or the files under another path",
                    std::fs::read_link(root.join(&e.path))
                        .map(|t| t.to_string_lossy().into_owned())
                        .unwrap_or_else(|_| "?".into())
                ),
                severity: Severity::Error,
            },
            (HostKind::Symlink | HostKind::Other, _) => Finding {
                code: "shadows-host-file",
                path: Some(e.path.clone()),
                message: format!(
                    "hides the host's own {shown} while merged (host programs that use it get the image's); ship it {elsewhere} if that is not meant"
                ),
                severity: Severity::Warning,
            },
        };
        findings.push(finding);
    }
    Ok(findings)
}

/// What `root/rel` is, without following symlinks in its last component (callers make sure
/// the parents are real folders).
fn host_kind(root: &Path, rel: &str) -> HostKind {
    match std::fs::symlink_metadata(root.join(rel)) {
        Err(_) => HostKind::Missing,
        Ok(m) if m.file_type().is_symlink() => HostKind::Symlink,
        Ok(m) if m.is_dir() => HostKind::Dir,
        Ok(_) => HostKind::Other,
    }
}

/// "N entries" for a host folder, counted up to [`MAX_COUNTED`].
fn count_entries(dir: &Path) -> String {
    let n = std::fs::read_dir(dir)
        .map(|d| d.take(MAX_COUNTED + 1).count())
        .unwrap_or(0);
    match n {
        1 => "1 entry".into(),
        n if n > MAX_COUNTED => format!("over {MAX_COUNTED} entries"),
        n => format!("{n} entries"),
    }
}
