//! The one parser of the entries users give to flix, flatwrap and bake: `SRC`,
//! `SRC:/usr/TARGET`, `SRC:/usr/DIR/` ([`parse_entry`]).

use std::path::{Component, Path, PathBuf};

use crate::release::ImageClass;

/// A user's entry `SRC[:TARGET]`, split and checked ([`parse_entry`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntrySpec {
    /// The source path as given (inside the rootfs; each command says whether it must be
    /// absolute).
    pub source: String,
    /// Where it goes, if given.
    pub target: Option<EntryTarget>,
}

/// The target of an entry: an absolute path under `/usr` or `/opt`, normalised (`.` and
/// repeated `/` gone).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryTarget {
    pub path: PathBuf,
    /// Given with a trailing `/`: the source goes into that folder under its own name.
    pub into_dir: bool,
}

/// Errors of [`parse_entry`].
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EntryError {
    #[error("entry {entry:?} names no source path; give one, e.g. /usr/bin/htop or /opt/app/bin/app:/usr/bin/app")]
    NoSource { entry: String },
    #[error("entry {entry:?}: target {target:?} must be an absolute path under /usr/ or /opt/ without '..' (systemd-sysext merges only those)")]
    Target { entry: String, target: String },
    #[error("entry {entry:?}: target {target:?} of a confext must be an absolute path under /etc/ without '..' (systemd-confext merges only /etc)")]
    ConfextTarget { entry: String, target: String },
}

/// Splits an entry at its first `:` into the source and the target, and checks the target:
/// absolute, no `..`, under `/usr` or `/opt` (the only hierarchies systemd-sysext merges).
/// The one parser of entries for flix, flatwrap and bake; each then applies its own rules to
/// the source (flix and flatwrap want it absolute, bake takes it relative to the source) and
/// may narrow the target (flatwrap's launchers go under `/usr/` only).
pub fn parse_entry(entry: &str) -> Result<EntrySpec, EntryError> {
    parse_entry_for(ImageClass::Sysext, entry)
}

/// [`parse_entry`] for an image of `class`: a confext's targets lie under `/etc`.
pub fn parse_entry_for(class: ImageClass, entry: &str) -> Result<EntrySpec, EntryError> {
    let (source, target) = match entry.split_once(':') {
        Some((s, t)) => (s, Some(t)),
        None => (entry, None),
    };
    if source.is_empty() {
        return Err(EntryError::NoSource {
            entry: entry.to_string(),
        });
    }
    let target = match target {
        None => None,
        Some(t) => {
            let bad = || match class {
                ImageClass::Sysext => EntryError::Target {
                    entry: entry.to_string(),
                    target: t.to_string(),
                },
                ImageClass::Confext => EntryError::ConfextTarget {
                    entry: entry.to_string(),
                    target: t.to_string(),
                },
            };
            if !t.starts_with('/') {
                return Err(bad());
            }
            let mut path = PathBuf::from("/");
            for c in Path::new(t).components() {
                match c {
                    Component::Normal(n) => path.push(n),
                    Component::RootDir | Component::CurDir => {}
                    Component::ParentDir | Component::Prefix(_) => return Err(bad()),
                }
            }
            if !class.hierarchies().iter().any(|h| path.starts_with(h)) {
                return Err(bad());
            }
            Some(EntryTarget {
                path,
                into_dir: t.ends_with('/'),
            })
        }
    };
    Ok(EntrySpec {
        source: source.to_string(),
        target,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries() {
        let t = |p: &str, into_dir| {
            Some(EntryTarget {
                path: PathBuf::from(p),
                into_dir,
            })
        };
        let cases: &[(&str, &str, Option<EntryTarget>)] = &[
            ("/usr/bin/htop", "/usr/bin/htop", None),
            ("bin/hello", "bin/hello", None),
            (
                "/opt/a/bin/a:/usr/bin/a",
                "/opt/a/bin/a",
                t("/usr/bin/a", false),
            ),
            ("bin/hello:/usr/bin/", "bin/hello", t("/usr/bin", true)),
            ("/x:/usr//lib/./x", "/x", t("/usr/lib/x", false)),
            ("/x:/opt/x", "/x", t("/opt/x", false)),
            ("/x:/usr/", "/x", t("/usr", true)),
            // Only the first ':' splits.
            ("/x:/usr/a:b", "/x", t("/usr/a:b", false)),
        ];
        for (entry, source, target) in cases {
            let e = parse_entry(entry).unwrap_or_else(|e| panic!("{entry}: {e}"));
            assert_eq!(e.source, *source, "{entry}");
            assert_eq!(e.target, *target, "{entry}");
        }
        for bad in [
            "/x:usr/bin/x",
            "/x:/etc/x",
            "/x:/usr/../etc/x",
            "/x:/usrx/y",
            "/x:",
            "/x:/",
        ] {
            let e = parse_entry(bad).expect_err(bad);
            assert!(matches!(e, EntryError::Target { .. }), "{bad}: {e}");
            assert!(e.to_string().contains("under /usr/ or /opt/"), "{bad}: {e}");
        }
        assert!(matches!(
            parse_entry(":/usr/bin/x"),
            Err(EntryError::NoSource { .. })
        ));
        assert!(matches!(parse_entry(""), Err(EntryError::NoSource { .. })));
    }
}
