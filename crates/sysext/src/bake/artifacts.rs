//! Update artifacts for systemd-sysupdate: `SHA256SUMS`, transfer files (`NAME.conf`) and the
//! Butane snippets (variant flatcar) that deploy an extension with them.

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

/// The transfer file for `name` (`/etc/sysupdate.NAME.d/NAME.conf` on the host).
pub fn transfer_conf(name: &str, base_url: &str) -> String {
    let base = base_url.trim_end_matches('/');
    format!(
        "# Written by sysext bake: updates {name} from {base}.\n\
         [Transfer]\n\
         Verify=false\n\
         \n\
         [Source]\n\
         Type=url-file\n\
         Path={base}\n\
         MatchPattern={name}-@v-%a.raw\n\
         \n\
         [Target]\n\
         InstancesMax=3\n\
         Type=regular-file\n\
         Path=/opt/extensions/{name}\n\
         CurrentSymlink=/etc/extensions/{name}.raw\n\
         MatchPattern={name}-@v-%a.raw\n"
    )
}

fn indent(text: &str, by: usize) -> String {
    let pad = " ".repeat(by);
    text.lines()
        .map(|l| {
            if l.is_empty() {
                "\n".to_string()
            } else {
                format!("{pad}{l}\n")
            }
        })
        .collect()
}

/// A Butane config (variant flatcar) that installs `raw` under `/opt/extensions/NAME/`, links
/// it from `/etc/extensions/NAME.raw`, writes the transfer file and enables sysupdate for it.
pub fn butane(name: &str, raw: &str, base_url: &str) -> String {
    let base = base_url.trim_end_matches('/');
    let conf = transfer_conf(name, base_url);
    format!(
        "# Written by sysext bake. butane --strict < THIS.bu > config.json\n\
variant: flatcar\n\
version: 1.0.0\n\
storage:\n  \
  files:\n    \
    - path: /opt/extensions/{name}/{raw}\n      \
      mode: 0644\n      \
      contents:\n        \
        source: {base}/{raw}\n    \
    - path: /etc/sysupdate.{name}.d/{name}.conf\n      \
      mode: 0644\n      \
      contents:\n        \
        inline: |\n{conf_ind}    \
    - path: /etc/sysupdate.d/noop.conf\n      \
      mode: 0644\n      \
      contents:\n        \
        inline: |\n          \
          # Lets systemd-sysupdate run without a default transfer.\n          \
          [Source]\n          \
          Type=regular-file\n          \
          Path=/\n          \
          MatchPattern=invalid@v.raw\n          \
          [Target]\n          \
          Type=regular-file\n          \
          Path=/\n  \
  links:\n    \
    - path: /etc/extensions/{name}.raw\n      \
      target: /opt/extensions/{name}/{raw}\n      \
      hard: false\n\
systemd:\n  \
  units:\n    \
    - name: systemd-sysupdate.timer\n      \
      enabled: true\n    \
    - name: systemd-sysupdate.service\n      \
      dropins:\n        \
        - name: {name}.conf\n          \
          contents: |\n            \
            [Service]\n            \
            ExecStartPre=/usr/lib/systemd/systemd-sysupdate -C {name} update\n        \
        - name: sysext.conf\n          \
          contents: |\n            \
            [Service]\n            \
            ExecStartPost=systemctl restart systemd-sysext\n",
        conf_ind = indent(&conf, 10),
    )
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
        let c = transfer_conf("tools", "https://ex.org/ext/");
        let mut section = String::new();
        let mut keys = Vec::new();
        for l in c.lines() {
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
    fn butane_is_indented_consistently() {
        let b = butane("tools", "tools-1-arm64.raw", "http://h/x");
        assert!(b.starts_with("# Written"));
        assert!(b.contains("\nvariant: flatcar\n"));
        assert!(b.contains("    - path: /opt/extensions/tools/tools-1-arm64.raw\n"));
        assert!(b.contains("        source: http://h/x/tools-1-arm64.raw\n"));
        assert!(b.contains("          MatchPattern=tools-@v-%a.raw\n"));
        assert!(!b.contains('\t'));
    }
}
