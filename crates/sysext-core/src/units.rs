//! Which files of a tree are systemd units: the one rule flix, flatwrap and bake share.
//!
//! A unit is a file whose name ends in one of systemd's unit suffixes ([`UNIT_SUFFIXES`]) and
//! that lies in one of systemd's unit search folders inside the tree ([`SYSTEM_UNIT_DIRS`],
//! [`USER_UNIT_DIRS`]: the ones under `/etc`, `/usr` and, for roots without merged `/usr`,
//! `/lib`), directly or in a `.wants`/`.requires`/`.upholds` folder there. A `foo.target` data
//! file anywhere else is not a unit, and neither is anything in a drop-in (`.d`) folder.
//! [`exec_paths`] and [`wanted_by`] read the lines of a unit the tools act on.

use std::path::{Component, Path};

/// systemd's unit types, as file name suffixes (`systemd.unit(5)`).
pub const UNIT_SUFFIXES: &[&str] = &[
    ".service",
    ".socket",
    ".device",
    ".mount",
    ".automount",
    ".swap",
    ".target",
    ".path",
    ".timer",
    ".slice",
    ".scope",
];

/// The system manager's unit search folders that an image or a rootfs can hold (absolute,
/// inside the tree), most specific first.
pub const SYSTEM_UNIT_DIRS: &[&str] = &[
    "/etc/systemd/system",
    "/usr/local/lib/systemd/system",
    "/usr/lib/systemd/system",
    "/lib/systemd/system",
];

/// The user manager's unit search folders, as [`SYSTEM_UNIT_DIRS`].
pub const USER_UNIT_DIRS: &[&str] = &[
    "/etc/systemd/user",
    "/usr/local/lib/systemd/user",
    "/usr/lib/systemd/user",
    "/lib/systemd/user",
];

/// Where an extension ships a unit of each scope (relative to the extension tree).
pub const SHIPPED_SYSTEM_DIR: &str = "usr/lib/systemd/system";
/// See [`SHIPPED_SYSTEM_DIR`].
pub const SHIPPED_USER_DIR: &str = "usr/lib/systemd/user";

/// Which manager a unit belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnitScope {
    System,
    User,
}

impl UnitScope {
    /// The folder an extension ships units of this scope in, relative to the tree.
    pub fn shipped_dir(self) -> &'static Path {
        Path::new(match self {
            UnitScope::System => SHIPPED_SYSTEM_DIR,
            UnitScope::User => SHIPPED_USER_DIR,
        })
    }
}

/// Whether a file name is a unit name: a unit suffix after a non-empty stem.
pub fn is_unit_file_name(name: &str) -> bool {
    UNIT_SUFFIXES
        .iter()
        .any(|s| name.len() > s.len() && name.ends_with(s))
}

/// The scope of the unit at `path` (an absolute path inside the tree, or one relative to the
/// tree's root), or `None` when it is not a unit (see the module docs). `..` is never taken.
pub fn unit_scope(path: &Path) -> Option<UnitScope> {
    let mut comps = Vec::new();
    for c in path.components() {
        match c {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(n) => comps.push(n.to_str()?),
            Component::ParentDir | Component::Prefix(_) => return None,
        }
    }
    let (file, dir) = comps.split_last()?;
    if !is_unit_file_name(file) {
        return None;
    }
    // `multi-user.target.wants/foo.service` lies in a unit folder too.
    let dir = match dir.split_last() {
        Some((last, rest))
            if [".wants", ".requires", ".upholds"]
                .iter()
                .any(|s| last.len() > s.len() && last.ends_with(s)) =>
        {
            rest
        }
        _ => dir,
    };
    let dir = format!("/{}", dir.join("/"));
    if SYSTEM_UNIT_DIRS.contains(&dir.as_str()) {
        Some(UnitScope::System)
    } else if USER_UNIT_DIRS.contains(&dir.as_str()) {
        Some(UnitScope::User)
    } else {
        None
    }
}

/// Whether `path` is a unit (see [`unit_scope`]).
pub fn is_unit(path: &Path) -> bool {
    unit_scope(path).is_some()
}

/// The program paths a unit's `Exec*=` lines start (the first word, prefixes `-@:+!`
/// stripped; words that are not absolute paths left out). flix rewrites them, flatwrap warns
/// about the ones it does not wrap.
pub fn exec_paths(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        let Some((key, val)) = line.split_once('=') else {
            continue;
        };
        if !key.trim().starts_with("Exec") {
            continue;
        }
        let val = val.trim().trim_start_matches(['-', '@', ':', '+', '!']);
        if let Some(cmd) = val.split_whitespace().next() {
            if cmd.starts_with('/') {
                out.push(cmd.to_string());
            }
        }
    }
    out
}

/// The `WantedBy=` targets of a unit's `[Install]` section. Words that are not unit names
/// ([`is_unit_name`]) are dropped, as systemd drops them: they become folder names
/// (`TARGET.d`) in the extension.
pub fn wanted_by(text: &str) -> Vec<String> {
    values(text, "Install", "WantedBy")
        .iter()
        .flat_map(|v| v.split_whitespace())
        .filter(|w| is_unit_name(w))
        .map(str::to_string)
        .collect()
}

/// systemd's boolean words (`parse_boolean()`): `1 yes y true t on`, `0 no n false f off`;
/// `None` for anything else.
pub fn parse_boolean(s: &str) -> Option<bool> {
    match s.trim() {
        "1" | "yes" | "y" | "true" | "t" | "on" => Some(true),
        "0" | "no" | "n" | "false" | "f" | "off" => Some(false),
        _ => None,
    }
}

/// The values of `KEY=` in `[SECTION]` of a unit-style file (units, sysupdate's transfer
/// files), in order, trimmed; comment lines (`#`, `;`) skipped. Continuation lines are not
/// joined: none of the keys read here takes them.
pub fn values(text: &str, section: &str, key: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut inside = false;
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            inside = name == section;
            continue;
        }
        if inside {
            if let Some((k, v)) = line.split_once('=') {
                if k.trim_end() == key {
                    out.push(v.trim().to_string());
                }
            }
        }
    }
    out
}

/// systemd's unit name rule: at most 255 bytes of `[A-Za-z0-9:_.\\@-]`, a name before the
/// last dot and a type after it.
pub fn is_unit_name(s: &str) -> bool {
    s.len() <= 255
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b":_.\\@-".contains(&b))
        && s.rsplit_once('.')
            .is_some_and(|(name, ty)| !name.is_empty() && !ty.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn where_units_live_and_what_they_are_called() {
        use UnitScope::*;
        let cases: &[(&str, Option<UnitScope>)] = &[
            ("/usr/lib/systemd/system/nginx.service", Some(System)),
            ("usr/lib/systemd/system/nginx.service", Some(System)),
            ("/etc/systemd/system/x.timer", Some(System)),
            ("/lib/systemd/system/x.socket", Some(System)),
            ("/usr/local/lib/systemd/system/x.path", Some(System)),
            // The suffixes flix's copy did not know.
            ("/usr/lib/systemd/system/machine.slice", Some(System)),
            ("/usr/lib/systemd/system/proc-fs.automount", Some(System)),
            ("/usr/lib/systemd/system/x.scope", Some(System)),
            ("/usr/lib/systemd/system/dev-sdb.swap", Some(System)),
            ("/usr/lib/systemd/system/dev-sda.device", Some(System)),
            ("/usr/lib/systemd/system/getty@.service", Some(System)),
            ("/usr/lib/systemd/user/pipewire.socket", Some(User)),
            ("/etc/systemd/user/x.service", Some(User)),
            (
                "/usr/lib/systemd/system/multi-user.target.wants/x.service",
                Some(System),
            ),
            // What flatwrap's copy took for units: a suffix anywhere.
            ("/usr/share/doc/foo.target", None),
            ("/usr/bin/x.path", None),
            ("/opt/app/build.mount", None),
            // A `/systemd/` folder that is no unit folder, a drop-in, a plain file.
            ("/usr/share/systemd/x.service", None),
            ("/usr/lib/systemd/system/x.service.d/10-x.conf", None),
            ("/usr/lib/systemd/system/x.service.d/y.service", None),
            ("/usr/lib/systemd/system/README", None),
            ("/usr/lib/systemd/system/.service", None),
            ("/usr/lib/systemd/system/../system/x.service", None),
            ("/usr/lib/systemd/system-generators/x.service", None),
            ("", None),
        ];
        for (p, want) in cases {
            assert_eq!(unit_scope(Path::new(p)), *want, "{p}");
            assert_eq!(is_unit(Path::new(p)), want.is_some(), "{p}");
        }
        assert_eq!(System.shipped_dir(), Path::new("usr/lib/systemd/system"));
        assert_eq!(User.shipped_dir(), Path::new("usr/lib/systemd/user"));
    }

    #[test]
    fn every_suffix_is_a_unit_name() {
        for s in UNIT_SUFFIXES {
            assert!(is_unit_file_name(&format!("x{s}")), "{s}");
            assert!(!is_unit_file_name(s), "{s}");
        }
        assert!(!is_unit_file_name("x.conf"));
    }

    #[test]
    fn unit_lines() {
        // The lines flix's and flatwrap's copies were tested with.
        let u = "[Service]\nExecStartPre=-/usr/sbin/nginx -t\nExecStart=/usr/sbin/nginx -g 'daemon on;'\nExecReload=-+/usr/sbin/nginx -s reload\nExecReload=@/bin/kill kill -HUP $MAINPID\nExecStop=true\nExecStop=kill $MAINPID\n# ExecStart=/x\n[Install]\nWantedBy=multi-user.target graphical.target\n";
        assert_eq!(
            exec_paths(u),
            [
                "/usr/sbin/nginx",
                "/usr/sbin/nginx",
                "/usr/sbin/nginx",
                "/bin/kill"
            ]
        );
        assert_eq!(wanted_by(u), ["multi-user.target", "graphical.target"]);
        assert_eq!(
            wanted_by("[Install]\nWantedBy=../../etc/x.target a/b.target ok.target .target\n"),
            ["ok.target"],
            "words that are no unit names are dropped"
        );
        assert_eq!(
            wanted_by("[Service]\nWantedBy=x.target\n"),
            Vec::<String>::new()
        );
    }

    #[test]
    fn values_of_a_key_in_a_section() {
        let t = "[Source]\nPath=/src\n[Target]\n# Path=/commented\n; Path=/too\nPath = /opt/extensions/a \nCurrentSymlink=/etc/extensions/a.raw\nPathRelativeTo=root\n[Target]\nPath=/later\n";
        assert_eq!(values(t, "Target", "Path"), ["/opt/extensions/a", "/later"]);
        assert_eq!(values(t, "Source", "Path"), ["/src"]);
        assert_eq!(
            values(t, "Target", "CurrentSymlink"),
            ["/etc/extensions/a.raw"]
        );
        assert!(values(t, "Transfer", "Path").is_empty());
    }
}
