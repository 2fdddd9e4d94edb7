//! Beyond systemd: which file of which layer shadows which file of another (or of the host),
//! and warnings for directories that silently change the host (a real directory over the host's
//! symlink, a changed mode or owner).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use serde::Serialize;

/// What a layer has at a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    File,
    Directory,
    Symlink,
    Other,
}

impl Kind {
    fn of(ft: std::fs::FileType) -> Kind {
        if ft.is_dir() {
            Kind::Directory
        } else if ft.is_symlink() {
            Kind::Symlink
        } else if ft.is_file() {
            Kind::File
        } else {
            Kind::Other
        }
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Kind::File => "file",
            Kind::Directory => "directory",
            Kind::Symlink => "symlink",
            Kind::Other => "special file",
        })
    }
}

/// One layer's entry at a colliding path: an extension name, or `host`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Provider {
    /// The extension's name, or `host` for the hierarchy merged under all extensions.
    pub layer: String,
    pub kind: Kind,
}

/// A path provided by more than one layer where not all are directories: the topmost wins.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Collision {
    /// Absolute path in the merged view, e.g. `/usr/bin/tool`.
    pub path: String,
    pub winner: Provider,
    /// The entries the winner hides, from the next lower layer down.
    pub shadowed: Vec<Provider>,
}

impl std::fmt::Display for Collision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: {} of '{}' wins over",
            self.path, self.winner.kind, self.winner.layer
        )?;
        for (i, s) in self.shadowed.iter().enumerate() {
            let sep = if i == 0 { "" } else { "," };
            write!(f, "{sep} {} of '{}'", s.kind, s.layer)?;
        }
        Ok(())
    }
}

/// Something an extension changes on the host that is easy to miss.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MergeWarning {
    pub extension: String,
    /// Absolute path in the merged view.
    pub path: String,
    pub message: String,
}

impl std::fmt::Display for MergeWarning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "extension '{}': {}", self.extension, self.message)
    }
}

#[derive(Clone, Copy)]
struct Entry {
    layer: usize,
    kind: Kind,
    mode: u32,
    uid: u32,
    gid: u32,
}

/// Compare the layers of one hierarchy. `layers` are `(name, dir)` from the topmost extension
/// down; `host` is the host's hierarchy directory (lowest layer), if it takes part.
pub(super) fn analyse(
    hierarchy: &str,
    layers: &[(String, &Path)],
    host: Option<&Path>,
) -> (Vec<Collision>, Vec<MergeWarning>) {
    let mut map: BTreeMap<String, Vec<Entry>> = BTreeMap::new();
    for (i, (_, dir)) in layers.iter().enumerate() {
        for e in walkdir::WalkDir::new(dir).min_depth(1).follow_links(false) {
            let Ok(e) = e else { continue };
            let Ok(md) = e.metadata() else { continue };
            let Ok(rel) = e.path().strip_prefix(dir) else {
                continue;
            };
            let Some(rel) = rel.to_str() else { continue };
            map.entry(rel.to_string()).or_default().push(Entry {
                layer: i,
                kind: Kind::of(md.file_type()),
                mode: md.mode() & 0o7777,
                uid: md.uid(),
                gid: md.gid(),
            });
        }
    }
    let host_index = layers.len();
    let mut host_target: HashMap<String, String> = HashMap::new();
    if let Some(host) = host {
        // The host is not walked: only the paths the extensions provide are looked up, and
        // only below host directories (overlayfs does not merge through a lower symlink).
        let mut host_nondir: BTreeSet<String> = BTreeSet::new();
        for (rel, entries) in map.iter_mut() {
            if ancestors(rel).any(|a| host_nondir.contains(a)) {
                continue;
            }
            let p = host.join(rel);
            let Ok(md) = std::fs::symlink_metadata(&p) else {
                continue;
            };
            let kind = Kind::of(md.file_type());
            if kind != Kind::Directory {
                host_nondir.insert(rel.clone());
            }
            if kind == Kind::Symlink {
                if let Ok(t) = std::fs::read_link(&p) {
                    host_target.insert(rel.clone(), t.to_string_lossy().into_owned());
                }
            }
            entries.push(Entry {
                layer: host_index,
                kind,
                mode: md.mode() & 0o7777,
                uid: md.uid(),
                gid: md.gid(),
            });
        }
    }
    let name = |i: usize| {
        if i == host_index {
            "host".to_string()
        } else {
            layers[i].0.clone()
        }
    };
    // The topmost layer with a non-directory at a path hides everything below it there.
    let nondir_top: HashMap<&str, usize> = map
        .iter()
        .filter_map(|(p, es)| {
            es.iter()
                .filter(|e| e.kind != Kind::Directory)
                .map(|e| e.layer)
                .min()
                .map(|l| (p.as_str(), l))
        })
        .collect();
    let mut collisions = Vec::new();
    let mut warnings = Vec::new();
    for (rel, entries) in &map {
        let cutoff = ancestors(rel)
            .filter_map(|a| nondir_top.get(a).copied())
            .min()
            .unwrap_or(usize::MAX);
        let mut stack: Vec<Entry> = entries
            .iter()
            .copied()
            .filter(|e| e.layer < cutoff)
            .collect();
        stack.sort_by_key(|e| e.layer);
        let path = format!("{hierarchy}/{rel}");
        if stack.len() >= 2 && stack.iter().any(|e| e.kind != Kind::Directory) {
            collisions.push(Collision {
                path: path.clone(),
                winner: Provider {
                    layer: name(stack[0].layer),
                    kind: stack[0].kind,
                },
                shadowed: stack[1..]
                    .iter()
                    .map(|e| Provider {
                        layer: name(e.layer),
                        kind: e.kind,
                    })
                    .collect(),
            });
        }
        let (Some(top), Some(host)) = (stack.first(), stack.iter().find(|e| e.layer == host_index))
        else {
            continue;
        };
        if top.layer == host_index || top.kind != Kind::Directory {
            continue;
        }
        if host.kind == Kind::Symlink {
            let target = host_target.get(rel).map(String::as_str).unwrap_or("?");
            warnings.push(MergeWarning {
                extension: name(top.layer),
                path: path.clone(),
                message: format!(
                    "ships a real directory {path} where the host has a symlink (-> {target}); \
                     the host's content behind it is hidden in the merged view"
                ),
            });
        } else if host.kind == Kind::Directory {
            if top.mode != host.mode {
                warnings.push(MergeWarning {
                    extension: name(top.layer),
                    path: path.clone(),
                    message: format!(
                        "changes the mode of directory {path} from {:04o} to {:04o}",
                        host.mode, top.mode
                    ),
                });
            }
            if (top.uid, top.gid) != (host.uid, host.gid) {
                warnings.push(MergeWarning {
                    extension: name(top.layer),
                    path: path.clone(),
                    message: format!(
                        "changes the owner of directory {path} from {}:{} to {}:{}",
                        host.uid, host.gid, top.uid, top.gid
                    ),
                });
            }
        }
    }
    (collisions, warnings)
}

/// Proper ancestors of a relative path, nearest first: `a/b/c` → `a/b`, `a`.
fn ancestors(rel: &str) -> impl Iterator<Item = &str> {
    let mut cur = rel;
    std::iter::from_fn(move || {
        let i = cur.rfind('/')?;
        cur = &cur[..i];
        Some(cur)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn ancestors_nearest_first() {
        assert_eq!(ancestors("a/b/c").collect::<Vec<_>>(), ["a/b", "a"]);
        assert_eq!(ancestors("a").count(), 0);
    }

    #[test]
    fn three_layers_and_host() {
        let t = tempfile::tempdir().unwrap();
        let mk = |layer: &str, rel: &str| {
            let p = t.path().join(layer).join(rel);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, layer).unwrap();
        };
        mk("c", "bin/tool");
        mk("b", "bin/tool");
        mk("a", "bin/tool");
        mk("a", "bin/only-a");
        mk("host", "bin/tool");
        mk("b", "share/x/file");
        mk("a", "share/x"); // a file where b has a directory: b's directory wins
        let (c, b, a, host) = (
            t.path().join("c"),
            t.path().join("b"),
            t.path().join("a"),
            t.path().join("host"),
        );
        let layers = vec![
            ("c".to_string(), c.as_path()),
            ("b".to_string(), b.as_path()),
            ("a".to_string(), a.as_path()),
        ];
        let (cols, _) = analyse("/usr", &layers, Some(&host));
        let tool = cols
            .iter()
            .find(|c| c.path == "/usr/bin/tool")
            .unwrap_or_else(|| panic!("{cols:#?}"));
        assert_eq!(tool.winner.layer, "c");
        let shadowed: Vec<_> = tool.shadowed.iter().map(|p| p.layer.as_str()).collect();
        assert_eq!(shadowed, ["b", "a", "host"]);
        let x = cols
            .iter()
            .find(|c| c.path == "/usr/share/x")
            .unwrap_or_else(|| panic!("{cols:#?}"));
        assert_eq!(x.winner.kind, Kind::Directory);
        assert_eq!(x.shadowed[0].layer, "a");
        assert!(!cols.iter().any(|c| c.path == "/usr/bin/only-a"));
        assert!(!cols.iter().any(|c| c.path == "/usr/bin"));
    }

    #[test]
    fn directory_over_host_symlink_and_mode() {
        use std::os::unix::fs::PermissionsExt;
        let t = tempfile::tempdir().unwrap();
        let host = t.path().join("host");
        let ext = t.path().join("ext");
        fs::create_dir_all(host.join("bin")).unwrap();
        std::os::unix::fs::symlink("bin", host.join("sbin")).unwrap();
        fs::write(host.join("bin/hosttool"), "").unwrap();
        fs::create_dir_all(ext.join("sbin")).unwrap();
        fs::write(ext.join("sbin/tool"), "").unwrap();
        fs::create_dir_all(ext.join("bin")).unwrap();
        fs::set_permissions(host.join("bin"), fs::Permissions::from_mode(0o755)).unwrap();
        fs::set_permissions(ext.join("bin"), fs::Permissions::from_mode(0o700)).unwrap();
        let layers = vec![("e".to_string(), ext.as_path())];
        let (cols, warns) = analyse("/usr", &layers, Some(&host));
        assert!(cols.iter().any(|c| c.path == "/usr/sbin"));
        assert!(warns
            .iter()
            .any(|w| w.path == "/usr/sbin" && w.message.contains("symlink (-> bin)")));
        assert!(warns
            .iter()
            .any(|w| w.path == "/usr/bin" && w.message.contains("from 0755 to 0700")));
        // Nothing of the host is looked up through its symlink.
        assert!(!cols.iter().any(|c| c.path == "/usr/sbin/tool"));
    }
}
