//! Update artifacts for systemd-sysupdate: `SHA256SUMS` (with its detached OpenPGP signature
//! `SHA256SUMS.gpg` when a signing key is given, see [`super::sign`]), transfer files
//! (`NAME.transfer`, or `NAME.conf` for hosts older than systemd 257) and the Butane configs
//! (variant flatcar) that deploy an extension with them.
//!
//! Nothing here is put together with format strings from unchecked values: the base URL is
//! parsed by [`BaseUrl::parse`] (in [`gentext`]) (http, https or file; no blanks, control characters, query,
//! fragment or credentials), values on transfer-file and unit lines go through
//! [`gentext`] (`%` escaped), and the Butane config is built as a JSON value and
//! written by serde_json: JSON is YAML 1.2, which Butane reads (`butane --strict < NAME.bu`).

use bake_manifest::ImageSuffix;
use base64::Engine;
use gentext::TextError;
use serde_json::json;
use sysext_core::release::{ImageClass, IMAGES_DIR};

/// Why a base URL or a name cannot go into the artifacts.
#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    #[error(transparent)]
    Text(#[from] TextError),
}

pub use gentext::BaseUrl;

/// Where systemd-pull (run by systemd-sysupdate) looks first for the keyring that verifies
/// `SHA256SUMS.gpg`; `/usr/lib/systemd/import-pubring.gpg` is its fallback.
pub const HOST_KEYRING: &str = "/etc/systemd/import-pubring.gpg";

/// The public keyring file a signed bake writes beside `SHA256SUMS.gpg`.
pub const KEYRING_FILE: &str = "import-pubring.gpg";

/// The name of the transfer files: systemd 257 reads `*.transfer` and warns about `*.conf`;
/// older systemd-sysupdate reads only `*.conf`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TransferSuffix {
    #[default]
    Transfer,
    Conf,
}

impl TransferSuffix {
    /// `transfer` or `conf`.
    pub fn ext(self) -> &'static str {
        match self {
            TransferSuffix::Transfer => "transfer",
            TransferSuffix::Conf => "conf",
        }
    }

    /// `NAME.transfer` or `NAME.conf`.
    pub fn file_name(self, name: &str) -> String {
        format!("{name}.{}", self.ext())
    }
}

/// What every transfer file and Butane config of a bake shares.
#[derive(Debug, Clone, Copy)]
pub struct Sysupdate<'a> {
    /// The URL folder the images and SHA256SUMS are served from.
    pub base: &'a BaseUrl,
    /// How the images are named: `.raw`, or `.sysext.raw` / `.confext.raw`.
    pub image_suffix: ImageSuffix,
    pub suffix: TransferSuffix,
    /// The public keyring (OpenPGP, binary) that verifies `SHA256SUMS.gpg`; `None` for an
    /// unsigned bake, whose transfer files say `Verify=false`.
    pub keyring: Option<&'a [u8]>,
}

/// The image file name `NAME-VERSION-ARCH.raw` (`suffix`: `.raw`, `.sysext.raw` or
/// `.confext.raw`).
pub fn raw_name(name: &str, version: &str, arch: &str, suffix: &str) -> String {
    format!("{name}-{version}-{arch}{suffix}")
}

/// `SHA256SUMS` as systemd-sysupdate reads it: `<64 hex>  <file>` lines, sorted by file name.
pub fn sha256sums<'a>(entries: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let mut v: Vec<(&str, &str)> = entries.into_iter().collect();
    v.sort_by(|a, b| a.0.cmp(b.0));
    v.dedup_by(|a, b| a.0 == b.0);
    v.iter().map(|(f, h)| format!("{h}  {f}\n")).collect()
}

/// The image suffix of a class under `su`'s naming.
fn suffix_of(su: &Sysupdate, class: ImageClass) -> &'static str {
    su.image_suffix.of(class == ImageClass::Confext)
}

/// The transfer file for `name`, an image of `class` (`/etc/sysupdate.NAME.d/NAME.transfer`
/// on the host; the images in [`IMAGES_DIR`]`/NAME`, the current link
/// [`ImageClass::current_link`]'s). Values are checked and `%`-escaped
/// ([`gentext::unit_word`]): `%` starts a specifier there. `Verify=yes` when the bake is
/// signed: systemd-sysupdate then downloads `SHA256SUMS.gpg` and refuses the update unless
/// the host's keyring verifies it. An `optional` extension's transfer belongs to the feature
/// `NAME` ([`feature_file`]).
pub fn transfer_file(
    class: ImageClass,
    name: &str,
    optional: bool,
    su: &Sysupdate,
) -> Result<String, ArtifactError> {
    let n = gentext::unit_word("extension name", name)?;
    let sfx = suffix_of(su, class);
    let link = class.current_link(&n, sfx);
    let path = gentext::unit_escape(&su.base.folder());
    let shown = su.base.folder();
    let verify = if su.keyring.is_some() { "yes" } else { "false" };
    let features = if optional {
        format!("Features={n}\n")
    } else {
        String::new()
    };
    Ok(format!(
        "# Written by sysext bake: updates {name} from {shown}.\n\
         [Transfer]\n\
         Verify={verify}\n\
         {features}\
         \n\
         [Source]\n\
         Type=url-file\n\
         Path={path}\n\
         MatchPattern={n}-@v-%a{sfx}\n\
         \n\
         [Target]\n\
         InstancesMax=3\n\
         Type=regular-file\n\
         Path={IMAGES_DIR}/{n}\n\
         CurrentSymlink={link}\n\
         MatchPattern={n}-@v-%a{sfx}\n"
    ))
}

/// The feature file of an optional extension (`/etc/sysupdate.NAME.d/NAME.feature`, systemd
/// 257): the host installs and updates it only once enabled (`updatectl enable NAME`, or a
/// drop-in `NAME.feature.d/*.conf` saying `Enabled=true`).
pub fn feature_file(class: ImageClass, name: &str, enabled: bool) -> Result<String, ArtifactError> {
    let n = gentext::unit_word("extension name", name)?;
    let what = match class {
        ImageClass::Sysext => "system extension",
        ImageClass::Confext => "configuration extension",
    };
    Ok(format!(
        "# Written by sysext bake: the optional extension {name}.\n\
         [Feature]\n\
         Description=The {n} {what}\n\
         Enabled={enabled}\n"
    ))
}

/// A Butane config (variant flatcar) that installs `raw` under `/opt/extensions/NAME/`, links
/// it from `/etc/extensions/NAME.raw` (a confext from `/var/lib/confexts/NAME.raw`, restarting
/// systemd-confext after updates), writes the transfer file (and, for a signed bake, the
/// public keyring at [`HOST_KEYRING`], inline as a data URL) and enables sysupdate for it.
/// For an optional extension it writes the feature file enabled: applying the snippet is
/// opting in. Written as JSON (YAML 1.2) by serde_json; unit lines in it are `%`-escaped.
pub fn butane(
    class: ImageClass,
    name: &str,
    optional: bool,
    raw: &str,
    su: &Sysupdate,
) -> Result<String, ArtifactError> {
    gentext::check_text("image file name", raw)?;
    let conf = transfer_file(class, name, optional, su)?;
    let restart = format!(
        "[Service]\nExecStartPost=systemctl restart {}\n",
        class.tool()
    );
    let n = gentext::unit_word("extension name", name)?;
    let noop = "# Lets systemd-sysupdate run without a default transfer.\n\
                [Source]\nType=regular-file\nPath=/\nMatchPattern=invalid@v.raw\n\
                [Target]\nType=regular-file\nPath=/\n";
    let mut files = vec![
        json!({
            "path": format!("{IMAGES_DIR}/{name}/{raw}"),
            "mode": 0o644,
            "contents": { "source": su.base.file(raw) },
        }),
        json!({
            "path": format!("/etc/sysupdate.{name}.d/{}", su.suffix.file_name(name)),
            "mode": 0o644,
            "contents": { "inline": conf },
        }),
        json!({
            "path": format!("/etc/sysupdate.d/{}", su.suffix.file_name("noop")),
            "mode": 0o644,
            "contents": { "inline": noop },
        }),
    ];
    if optional {
        files.push(json!({
            "path": format!("/etc/sysupdate.{name}.d/{name}.feature"),
            "mode": 0o644,
            "contents": { "inline": feature_file(class, name, true)? },
        }));
    }
    if let Some(keyring) = su.keyring {
        let data = base64::engine::general_purpose::STANDARD.encode(keyring);
        files.push(json!({
            "path": HOST_KEYRING,
            "mode": 0o644,
            "overwrite": true,
            "contents": { "source": format!("data:;base64,{data}") },
        }));
    }
    let doc = json!({
        "variant": "flatcar",
        "version": "1.0.0",
        "storage": {
            "files": files,
            "links": [
                {
                    "path": class.current_link(name, suffix_of(su, class)),
                    "target": format!("{IMAGES_DIR}/{name}/{raw}"),
                    "hard": false,
                },
            ],
        },
        "systemd": {
            "units": [
                { "name": "systemd-sysupdate.timer", "enabled": true },
                {
                    "name": "systemd-sysupdate.service",
                    "dropins": [
                        {
                            "name": format!("{name}.conf"),
                            "contents": format!(
                                "[Service]\nExecStartPre=/usr/lib/systemd/systemd-sysupdate -C {n} update\n"
                            ),
                        },
                        {
                            // One drop-in per class: snippets of both kinds merge.
                            "name": format!("{}.conf", class.name()),
                            "contents": restart,
                        },
                    ],
                },
            ],
        },
    });
    let mut text = serde_json::to_string_pretty(&doc).unwrap_or_default();
    text.push('\n');
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// systemd-sysupdate's @v/%a matching for the names we produce: NAME-@v-%a.raw with
    /// @v in [A-Za-z0-9.,_+-] and %a an architecture name.
    fn matches(pattern: &str, file: &str, arch: &str) -> Option<String> {
        let (pre, rest) = pattern.split_once("@v")?;
        let post = rest.replace("%a", arch);
        let v = file.strip_prefix(pre)?.strip_suffix(post.as_str())?;
        super::super::manifest::valid_version(v).then(|| v.to_string())
    }

    #[test]
    fn transfer_file_has_systemd_sections_and_keys() {
        let base = url("https://ex.org/ext/");
        let c = transfer_file(ImageClass::Sysext, "tools", false, &plain(&base)).unwrap();
        let keys = sections_and_keys(&c);
        for want in [
            "[Transfer]Verify=false",
            "[Source]Type=url-file",
            "[Source]Path=https://ex.org/ext",
            "[Source]MatchPattern=tools-@v-%a.raw",
            "[Target]Type=regular-file",
            "[Target]Path=/opt/extensions/tools",
            "[Target]CurrentSymlink=/etc/extensions/tools.raw",
            "[Target]MatchPattern=tools-@v-%a.raw",
            "[Target]InstancesMax=3",
        ] {
            assert!(keys.iter().any(|k| k == want), "{want} in {keys:?}");
        }
        assert_eq!(keys.len(), 9, "{keys:?}");
        let pat = "tools-@v-%a.raw";
        assert_eq!(
            matches(pat, &raw_name("tools", "1.2.3", "arm64", ".raw"), "arm64").as_deref(),
            Some("1.2.3")
        );
        assert_eq!(matches(pat, "tools-1.2.3-arm64.raw", "x86-64"), None);
    }

    #[test]
    fn sha256sums_format() {
        let h1 = "a".repeat(64);
        let h2 = "b".repeat(64);
        let s = sha256sums([
            ("z-1-arm64.raw", h1.as_str()),
            ("a-1-x86-64.raw", h2.as_str()),
        ]);
        assert_eq!(s, format!("{h2}  a-1-x86-64.raw\n{h1}  z-1-arm64.raw\n"));
    }

    #[test]
    fn butane_is_a_document_with_the_expected_keys() {
        let base = url("http://h/x");
        let b = butane(
            ImageClass::Sysext,
            "tools",
            false,
            "tools-1-arm64.raw",
            &plain(&base),
        )
        .unwrap();
        let d: serde_json::Value = serde_json::from_str(&b).unwrap();
        assert_eq!(d["variant"], "flatcar");
        let files = &d["storage"]["files"];
        assert_eq!(files[0]["path"], "/opt/extensions/tools/tools-1-arm64.raw");
        assert_eq!(files[0]["mode"], 0o644);
        assert_eq!(
            files[0]["contents"]["source"],
            "http://h/x/tools-1-arm64.raw"
        );
        assert_eq!(files[1]["path"], "/etc/sysupdate.tools.d/tools.transfer");
        assert_eq!(files[2]["path"], "/etc/sysupdate.d/noop.transfer");
        assert_eq!(files.as_array().unwrap().len(), 3, "no keyring unsigned");
        let conf = files[1]["contents"]["inline"].as_str().unwrap();
        assert!(conf.contains("\nMatchPattern=tools-@v-%a.raw\n"), "{conf}");
        assert_eq!(
            d["storage"]["links"][0],
            serde_json::json!({"path": "/etc/extensions/tools.raw", "target": "/opt/extensions/tools/tools-1-arm64.raw", "hard": false})
        );
        let dropin = &d["systemd"]["units"][1]["dropins"][0]["contents"];
        assert_eq!(
            dropin,
            "[Service]\nExecStartPre=/usr/lib/systemd/systemd-sysupdate -C tools update\n"
        );
        let mut top: Vec<_> = d.as_object().unwrap().keys().cloned().collect();
        top.sort();
        assert_eq!(top, ["storage", "systemd", "variant", "version"]);
    }

    #[test]
    fn base_urls() {
        for good in [
            "https://ex.org/ext",
            "http://127.0.0.1:8080/a/b/",
            "file:///srv/ext",
            "https://ex.org/a%20b",
        ] {
            BaseUrl::parse(good).unwrap_or_else(|e| panic!("{good}: {e}"));
        }
        for bad in [
            "https://ex.org/x\n[Transfer]\nVerify=no",
            "https://ex.org/x\tb",
            " https://ex.org/x",
            "https://ex.org/a b",
            "ftp://ex.org/x",
            "javascript:alert(1)",
            "/srv/ext",
            "https://ex.org/x?y=1",
            "https://ex.org/x#f",
            "https://user:pw@ex.org/x",
            "http://",
            "",
        ] {
            let e = BaseUrl::parse(bad).unwrap_err().to_string();
            assert!(e.contains("base URL"), "{bad:?}: {e}");
        }
        let u = url("https://ex.org/a%20b/");
        assert_eq!(u.folder(), "https://ex.org/a%20b");
        assert_eq!(u.file("n%h-1-x.raw"), "https://ex.org/a%20b/n%25h-1-x.raw");
    }

    #[test]
    fn percent_is_escaped_on_unit_lines() {
        let base = url("https://ex.org/a%20b");
        let c = transfer_file(ImageClass::Sysext, "n%h", false, &plain(&base)).unwrap();
        let keys = sections_and_keys(&c);
        assert!(
            keys.contains(&"[Source]Path=https://ex.org/a%%20b".to_string()),
            "{keys:?}"
        );
        assert!(
            keys.contains(&"[Target]Path=/opt/extensions/n%%h".to_string()),
            "{keys:?}"
        );
        assert!(
            keys.contains(&"[Source]MatchPattern=n%%h-@v-%a.raw".to_string()),
            "{keys:?}"
        );
        let b = butane(
            ImageClass::Sysext,
            "n%h",
            false,
            "n%h-1-x86-64.raw",
            &plain(&base),
        )
        .unwrap();
        let d: serde_json::Value = serde_json::from_str(&b).unwrap();
        assert_eq!(
            d["systemd"]["units"][1]["dropins"][0]["contents"],
            "[Service]\nExecStartPre=/usr/lib/systemd/systemd-sysupdate -C n%%h update\n"
        );
        assert!(transfer_file(ImageClass::Sysext, "a b", false, &plain(&base)).is_err());
    }

    fn plain(base: &BaseUrl) -> Sysupdate<'_> {
        Sysupdate {
            base,
            image_suffix: ImageSuffix::Raw,
            suffix: TransferSuffix::Transfer,
            keyring: None,
        }
    }

    #[test]
    fn signed_bakes_verify_and_ship_the_keyring() {
        let base = url("https://ex.org/ext");
        let keyring = b"\x99\x00\x33not really a key";
        let su = Sysupdate {
            base: &base,
            image_suffix: ImageSuffix::Raw,
            suffix: TransferSuffix::Conf,
            keyring: Some(keyring),
        };
        let keys =
            sections_and_keys(&transfer_file(ImageClass::Sysext, "tools", false, &su).unwrap());
        assert!(
            keys.contains(&"[Transfer]Verify=yes".to_string()),
            "{keys:?}"
        );
        let b = butane(
            ImageClass::Sysext,
            "tools",
            false,
            "tools-1-x86-64.raw",
            &su,
        )
        .unwrap();
        let d: serde_json::Value = serde_json::from_str(&b).unwrap();
        let files = d["storage"]["files"].as_array().unwrap();
        assert_eq!(files[1]["path"], "/etc/sysupdate.tools.d/tools.conf");
        assert_eq!(files[2]["path"], "/etc/sysupdate.d/noop.conf");
        let k = files.iter().find(|f| f["path"] == HOST_KEYRING).unwrap();
        let src = k["contents"]["source"].as_str().unwrap();
        let b64 = src.strip_prefix("data:;base64,").unwrap();
        let back = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap();
        assert_eq!(back, keyring);
    }

    #[test]
    fn optional_extensions_are_features() {
        let base = url("https://ex.org/ext");
        let su = plain(&base);
        let keys =
            sections_and_keys(&transfer_file(ImageClass::Sysext, "tools", true, &su).unwrap());
        assert!(
            keys.contains(&"[Transfer]Features=tools".to_string()),
            "{keys:?}"
        );
        let keys =
            sections_and_keys(&transfer_file(ImageClass::Sysext, "tools", false, &su).unwrap());
        assert!(!keys.iter().any(|k| k.contains("Features")), "{keys:?}");
        let f = sections_and_keys(&feature_file(ImageClass::Sysext, "tools", false).unwrap());
        assert_eq!(
            f,
            [
                "[Feature]Description=The tools system extension",
                "[Feature]Enabled=false"
            ]
        );
        let b = butane(ImageClass::Sysext, "tools", true, "tools-1-x86-64.raw", &su).unwrap();
        let d: serde_json::Value = serde_json::from_str(&b).unwrap();
        let files = d["storage"]["files"].as_array().unwrap();
        let feat = files
            .iter()
            .find(|f| f["path"] == "/etc/sysupdate.tools.d/tools.feature")
            .unwrap();
        assert!(feat["contents"]["inline"]
            .as_str()
            .unwrap()
            .contains("\nEnabled=true\n"));
    }

    #[test]
    fn class_suffixes_name_images_links_and_patterns() {
        let base = url("https://ex.org/ext");
        let su = Sysupdate {
            image_suffix: ImageSuffix::Class,
            ..plain(&base)
        };
        let keys = sections_and_keys(&transfer_file(ImageClass::Confext, "c", false, &su).unwrap());
        for want in [
            "[Source]MatchPattern=c-@v-%a.confext.raw",
            "[Target]CurrentSymlink=/var/lib/confexts/c.confext.raw",
        ] {
            assert!(keys.iter().any(|k| k == want), "{want} in {keys:?}");
        }
        let raw = raw_name("t", "1", "x86-64", ".sysext.raw");
        let b = butane(ImageClass::Sysext, "t", false, &raw, &su).unwrap();
        let d: serde_json::Value = serde_json::from_str(&b).unwrap();
        assert_eq!(
            d["storage"]["links"][0]["path"],
            "/etc/extensions/t.sysext.raw"
        );
        assert_eq!(
            d["storage"]["files"][0]["path"],
            "/opt/extensions/t/t-1-x86-64.sysext.raw"
        );
    }

    fn url(s: &str) -> BaseUrl {
        BaseUrl::parse(s).unwrap()
    }

    /// `[Section]Key=value` for every assignment of a unit-style file.
    fn sections_and_keys(text: &str) -> Vec<String> {
        let mut section = String::new();
        let mut keys = Vec::new();
        for l in text.lines() {
            let l = l.trim();
            if l.is_empty() || l.starts_with('#') {
                continue;
            }
            if l.starts_with('[') {
                assert!(l.ends_with(']'), "{l}");
                section = l.to_string();
                continue;
            }
            let (k, v) = l.split_once('=').expect("key=value");
            keys.push(format!("{section}{k}={v}"));
        }
        keys
    }
}
