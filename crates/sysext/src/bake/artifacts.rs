//! Update artifacts for systemd-sysupdate: `SHA256SUMS`, transfer files (`NAME.conf`) and the
//! Butane configs (variant flatcar) that deploy an extension with them.
//!
//! Nothing here is put together with format strings from unchecked values: the base URL is
//! parsed by [`BaseUrl::parse`] (in [`gentext`]) (http, https or file; no blanks, control characters, query,
//! fragment or credentials), values on transfer-file and unit lines go through
//! [`gentext`] (`%` escaped), and the Butane config is built as a JSON value and
//! written by serde_json: JSON is YAML 1.2, which Butane reads (`butane --strict < NAME.bu`).

use gentext::TextError;
use serde_json::json;
use sysext_core::release::ImageClass;

/// Why a base URL or a name cannot go into the artifacts.
#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    #[error(transparent)]
    Text(#[from] TextError),
}

pub use gentext::BaseUrl;

/// The image file name `NAME-VERSION-ARCH.raw`.
pub fn raw_name(name: &str, version: &str, arch: &str) -> String {
    format!("{name}-{version}-{arch}.raw")
}

/// `SHA256SUMS` as systemd-sysupdate reads it: `<64 hex>  <file>` lines, sorted by file name.
pub fn sha256sums<'a>(entries: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let mut v: Vec<(&str, &str)> = entries.into_iter().collect();
    v.sort_by(|a, b| a.0.cmp(b.0));
    v.dedup_by(|a, b| a.0 == b.0);
    v.iter().map(|(f, h)| format!("{h}  {f}\n")).collect()
}

/// Where the host links the current image of a class: `/etc/extensions/NAME.raw`, or for a
/// confext `/var/lib/confexts/NAME.raw` (systemd-confext does not look in /etc).
fn current_link(class: ImageClass, name: &str) -> String {
    match class {
        ImageClass::Sysext => format!("/etc/extensions/{name}.raw"),
        ImageClass::Confext => format!("/var/lib/confexts/{name}.raw"),
    }
}

/// The transfer file for `name` (`/etc/sysupdate.NAME.d/NAME.conf` on the host), an image of
/// `class` (its current link is [`current_link`]'s). Values are checked and `%`-escaped
/// ([`gentext::unit_word`]): `%` starts a specifier there.
pub fn transfer_conf(
    class: ImageClass,
    name: &str,
    base: &BaseUrl,
) -> Result<String, ArtifactError> {
    let n = gentext::unit_word("extension name", name)?;
    let link = current_link(class, &n);
    let path = gentext::unit_escape(&base.folder());
    let shown = base.folder();
    Ok(format!(
        "# Written by sysext bake: updates {name} from {shown}.\n\
         [Transfer]\n\
         Verify=false\n\
         \n\
         [Source]\n\
         Type=url-file\n\
         Path={path}\n\
         MatchPattern={n}-@v-%a.raw\n\
         \n\
         [Target]\n\
         InstancesMax=3\n\
         Type=regular-file\n\
         Path=/opt/extensions/{n}\n\
         CurrentSymlink={link}\n\
         MatchPattern={n}-@v-%a.raw\n"
    ))
}

/// A Butane config (variant flatcar) that installs `raw` under `/opt/extensions/NAME/`, links
/// it from `/etc/extensions/NAME.raw` (a confext from `/var/lib/confexts/NAME.raw`, restarting
/// systemd-confext after updates), writes the transfer file and enables sysupdate for it.
/// Written as JSON (YAML 1.2) by serde_json; unit lines in it are `%`-escaped.
pub fn butane(
    class: ImageClass,
    name: &str,
    raw: &str,
    base: &BaseUrl,
) -> Result<String, ArtifactError> {
    gentext::check_text("image file name", raw)?;
    let conf = transfer_conf(class, name, base)?;
    let restart = format!(
        "[Service]\nExecStartPost=systemctl restart {}\n",
        class.tool()
    );
    let n = gentext::unit_word("extension name", name)?;
    let noop = "# Lets systemd-sysupdate run without a default transfer.\n\
                [Source]\nType=regular-file\nPath=/\nMatchPattern=invalid@v.raw\n\
                [Target]\nType=regular-file\nPath=/\n";
    let doc = json!({
        "variant": "flatcar",
        "version": "1.0.0",
        "storage": {
            "files": [
                {
                    "path": format!("/opt/extensions/{name}/{raw}"),
                    "mode": 0o644,
                    "contents": { "source": base.file(raw) },
                },
                {
                    "path": format!("/etc/sysupdate.{name}.d/{name}.conf"),
                    "mode": 0o644,
                    "contents": { "inline": conf },
                },
                {
                    "path": "/etc/sysupdate.d/noop.conf",
                    "mode": 0o644,
                    "contents": { "inline": noop },
                },
            ],
            "links": [
                {
                    "path": current_link(class, name),
                    "target": format!("/opt/extensions/{name}/{raw}"),
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
                            "name": "sysext.conf",
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
        let c = transfer_conf(ImageClass::Sysext, "tools", &url("https://ex.org/ext/")).unwrap();
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
            matches(pat, &raw_name("tools", "1.2.3", "arm64"), "arm64").as_deref(),
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
        let b = butane(
            ImageClass::Sysext,
            "tools",
            "tools-1-arm64.raw",
            &url("http://h/x"),
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
        assert_eq!(files[1]["path"], "/etc/sysupdate.tools.d/tools.conf");
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
        let c = transfer_conf(ImageClass::Sysext, "n%h", &base).unwrap();
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
        let b = butane(ImageClass::Sysext, "n%h", "n%h-1-x86-64.raw", &base).unwrap();
        let d: serde_json::Value = serde_json::from_str(&b).unwrap();
        assert_eq!(
            d["systemd"]["units"][1]["dropins"][0]["contents"],
            "[Service]\nExecStartPre=/usr/lib/systemd/systemd-sysupdate -C n%%h update\n"
        );
        assert!(transfer_conf(ImageClass::Sysext, "a b", &base).is_err());
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
