//! The two kinds of extension images: system extensions (systemd-sysext, `/usr` and `/opt`)
//! and configuration extensions (systemd-confext, v254+, `/etc`). One table of what differs.

use std::path::PathBuf;

use serde::Serialize;

/// The host folder holding each extension's images in a folder of its own,
/// `/opt/extensions/NAME/` (the Flatcar bakery's layout, for both classes): where `sysext
/// bake`'s transfer files keep the versions (`[Target] Path=`), its Butane snippets put the
/// image, and `sysext install-image` installs by default.
pub const IMAGES_DIR: &str = "/opt/extensions";

/// Which tool takes an image, and so where its metadata lives and what it merges.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ImageClass {
    /// systemd-sysext: merged over `/usr` and `/opt`.
    #[default]
    Sysext,
    /// systemd-confext: merged over `/etc`.
    Confext,
}

impl ImageClass {
    /// The word in messages, JSON and file names: `sysext` or `confext`.
    pub fn name(self) -> &'static str {
        match self {
            ImageClass::Sysext => "sysext",
            ImageClass::Confext => "confext",
        }
    }

    /// The systemd tool that merges this class.
    pub fn tool(self) -> &'static str {
        match self {
            ImageClass::Sysext => "systemd-sysext",
            ImageClass::Confext => "systemd-confext",
        }
    }

    /// The folder of the release file, relative to the image root.
    pub fn release_dir(self) -> &'static str {
        match self {
            ImageClass::Sysext => "usr/lib/extension-release.d",
            ImageClass::Confext => "etc/extension-release.d",
        }
    }

    /// `RELEASE_DIR/extension-release.NAME`, relative to the image root.
    pub fn release_file(self, name: &str) -> PathBuf {
        PathBuf::from(format!("{}/extension-release.{name}", self.release_dir()))
    }

    /// The top-level folders of an image that are merged (`usr`, `opt` / `etc`).
    pub fn top_dirs(self) -> &'static [&'static str] {
        match self {
            ImageClass::Sysext => &["usr", "opt"],
            ImageClass::Confext => &["etc"],
        }
    }

    /// The hierarchies merged on the host (`/usr`, `/opt` / `/etc`).
    pub fn hierarchies(self) -> &'static [&'static str] {
        match self {
            ImageClass::Sysext => &["/usr", "/opt"],
            ImageClass::Confext => &["/etc"],
        }
    }

    /// The API level key compared with the host's os-release.
    pub fn level_key(self) -> &'static str {
        match self {
            ImageClass::Sysext => "SYSEXT_LEVEL",
            ImageClass::Confext => "CONFEXT_LEVEL",
        }
    }

    /// The scope key (default `system portable`).
    pub fn scope_key(self) -> &'static str {
        match self {
            ImageClass::Sysext => "SYSEXT_SCOPE",
            ImageClass::Confext => "CONFEXT_SCOPE",
        }
    }

    /// The folder a merged hierarchy carries with the merged names (`.systemd-sysext` /
    /// `.systemd-confext`).
    pub fn marker_dir(self) -> &'static str {
        match self {
            ImageClass::Sysext => ".systemd-sysext",
            ImageClass::Confext => ".systemd-confext",
        }
    }

    /// The file in [`ImageClass::marker_dir`] listing the merged names, one a line
    /// (`extensions` / `confexts`, as systemd 257 writes them).
    pub fn marker_file(self) -> &'static str {
        match self {
            ImageClass::Sysext => "extensions",
            ImageClass::Confext => "confexts",
        }
    }

    /// The suffix systemd v255+ recommends before `.raw` (`.sysext` / `.confext`).
    pub fn raw_suffix(self) -> &'static str {
        match self {
            ImageClass::Sysext => ".sysext.raw",
            ImageClass::Confext => ".confext.raw",
        }
    }

    /// Where systemd looks for images of this class (the first folder wins for a name).
    /// Sysext: 252's list (later versions dropped the last two); confext: 254+'s.
    pub fn search_path(self) -> &'static [&'static str] {
        match self {
            ImageClass::Sysext => &[
                "/etc/extensions",
                "/run/extensions",
                "/var/lib/extensions",
                "/usr/local/lib/extensions",
                "/usr/lib/extensions",
            ],
            ImageClass::Confext => &[
                "/run/confexts",
                "/var/lib/confexts",
                "/usr/local/lib/confexts",
                "/usr/lib/confexts",
            ],
        }
    }

    /// Where the host links NAME's current image (sysupdate's `CurrentSymlink=`):
    /// `/etc/extensions/NAME{suffix}`, for a confext `/var/lib/confexts/NAME{suffix}`
    /// (systemd-confext does not look in /etc). `suffix` is [`ImageClass::link_suffix`]'s.
    pub fn current_link(self, name: &str, suffix: &str) -> String {
        match self {
            ImageClass::Sysext => format!("/etc/extensions/{name}{suffix}"),
            ImageClass::Confext => format!("/var/lib/confexts/{name}{suffix}"),
        }
    }

    /// The suffix of the link to an image file: this class's [`ImageClass::raw_suffix`] when
    /// the file is named with it (`NAME-1-x86-64.sysext.raw`), else `.raw`.
    pub fn link_suffix(self, file_name: &str) -> &'static str {
        if file_name.ends_with(self.raw_suffix()) {
            self.raw_suffix()
        } else {
            ".raw"
        }
    }

    /// The image name of a `.raw` file name: without `.sysext.raw` / `.confext.raw` (for this
    /// class, systemd v255+), else without `.raw`; `None` for a file name without `.raw`.
    pub fn image_name(self, file_name: &str) -> Option<&str> {
        file_name
            .strip_suffix(self.raw_suffix())
            .filter(|n| !n.is_empty())
            .or_else(|| file_name.strip_suffix(".raw"))
    }
}

impl ImageClass {
    /// The class of an image from its entry paths (relative to the image root): a confext when
    /// it has a release file under `etc/extension-release.d/` and none under
    /// `usr/lib/extension-release.d/`, else a sysext (as systemd-sysext would take it).
    pub fn detect<'a>(paths: impl IntoIterator<Item = &'a str>) -> ImageClass {
        let release_in = |p: &str, class: ImageClass| {
            p.strip_prefix(class.release_dir())
                .and_then(|r| r.strip_prefix("/extension-release."))
                .is_some_and(|r| !r.is_empty() && !r.contains('/'))
        };
        let mut confext = false;
        for p in paths {
            if release_in(p, ImageClass::Sysext) {
                return ImageClass::Sysext;
            }
            confext |= release_in(p, ImageClass::Confext);
        }
        if confext {
            ImageClass::Confext
        } else {
            ImageClass::Sysext
        }
    }
}

impl std::fmt::Display for ImageClass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
