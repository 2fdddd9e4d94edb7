//! `ld.so.conf` and its includes, read inside the root with limits, and the glob its `include`
//! lines use.

use super::*;

/// Limits on reading `ld.so.conf` and its includes: files read in all, include patterns
/// expanded in all, include depth, bytes of one file, bytes of one include pattern. glibc's `ldconfig` has none; a rootfs that needs
/// more is not one we want to trust.
const MAX_CONF_FILES: usize = 256;
const MAX_INCLUDES: usize = 1024;
const MAX_CONF_DEPTH: usize = 8;
pub(super) const MAX_CONF_BYTES: u64 = 1 << 20;
const MAX_PATTERN: usize = 4096;

/// What [`read_ld_so_conf`] has read so far.
#[derive(Default)]
struct ConfRead {
    dirs: Vec<String>,
    seen: HashSet<String>,
    files: usize,
    includes: usize,
}

/// Reads an `ld.so.conf`-style file inside the root, following `include` globs, and appends
/// the directories it names (once each, in order) to `out`. Bounded: at most
/// [`MAX_CONF_FILES`] files and [`MAX_INCLUDES`] include patterns, includes
/// [`MAX_CONF_DEPTH`] deep, [`MAX_CONF_BYTES`] per file; what is over a bound is skipped with
/// a warning.
pub(super) fn read_ld_so_conf(root: &RootStack, file: &str, out: &mut Vec<String>) {
    let mut st = ConfRead {
        seen: out.iter().cloned().collect(),
        dirs: std::mem::take(out),
        files: 0,
        includes: 0,
    };
    read_conf_file(root, file, 0, &mut st);
    *out = st.dirs;
}

fn read_conf_file(root: &RootStack, file: &str, depth: usize, st: &mut ConfRead) {
    if depth > MAX_CONF_DEPTH {
        tracing::warn!(
            "ignoring {file} in the rootfs: ld.so.conf includes nested over {MAX_CONF_DEPTH} deep"
        );
        return;
    }
    if st.files >= MAX_CONF_FILES {
        if st.files == MAX_CONF_FILES {
            tracing::warn!(
                "ld.so.conf in the rootfs includes over {MAX_CONF_FILES} files; ignoring the rest"
            );
            st.files += 1;
        }
        return;
    }
    st.files += 1;
    let Ok(real) = root.resolve(Path::new(file), true) else {
        return;
    };
    // Regular files only (the stack's read refuses FIFOs and devices), whole or not at all.
    let Ok(bytes) = root.read(&real, MAX_CONF_BYTES + 1) else {
        return;
    };
    if bytes.len() as u64 > MAX_CONF_BYTES {
        tracing::warn!("ignoring {file} in the rootfs: over {MAX_CONF_BYTES} bytes");
        return;
    }
    let Ok(text) = String::from_utf8(bytes) else {
        return;
    };
    let here = parent_str(file);
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("include") {
            if rest.starts_with(char::is_whitespace) {
                for pat in rest.split_whitespace() {
                    if st.files > MAX_CONF_FILES || st.includes >= MAX_INCLUDES {
                        if st.includes == MAX_INCLUDES {
                            tracing::warn!("ld.so.conf in the rootfs has over {MAX_INCLUDES} include patterns; ignoring the rest");
                            st.includes += 1;
                        }
                        break;
                    }
                    st.includes += 1;
                    let pat = if pat.starts_with('/') {
                        pat.to_string()
                    } else {
                        join_str(&here, pat)
                    };
                    for f in glob(root, &pat) {
                        read_conf_file(root, &f, depth + 1, st);
                    }
                }
                continue;
            }
        }
        if line.starts_with("hwcap") && line[5..].starts_with(char::is_whitespace) {
            continue;
        }
        for d in line.split([' ', '\t', ',', ':']).filter(|s| !s.is_empty()) {
            let d = d.split('=').next().unwrap_or(d).trim_end_matches('/');
            let d = if d.is_empty() { "/" } else { d };
            if st.seen.insert(d.to_string()) {
                st.dirs.push(d.to_string());
            }
        }
    }
}

/// Expands a pattern with `*`/`?` in its last component inside the root; sorted.
pub(super) fn glob(root: &RootStack, pattern: &str) -> Vec<String> {
    let (dir, last) = pattern.rsplit_once('/').unwrap_or(("", pattern));
    let dir = if dir.is_empty() { "/" } else { dir };
    if !last.contains(['*', '?']) {
        return vec![pattern.to_string()];
    }
    if last.len() > MAX_PATTERN {
        tracing::warn!(
            "ignoring an ld.so.conf include pattern of {} bytes",
            last.len()
        );
        return Vec::new();
    }
    let Ok(real) = root.resolve(Path::new(dir), true) else {
        return Vec::new();
    };
    let mut out: Vec<String> = root
        .read_dir(&real)
        .into_iter()
        .filter_map(|n| n.to_str().map(str::to_string))
        .filter(|n| !n.starts_with('.') && glob_match(last.as_bytes(), n.as_bytes()))
        .map(|n| join_str(dir, &n))
        .collect();
    out.sort();
    out
}

/// `*` and `?` matching of one path component, in O(pattern × name) time at worst: after a
/// mismatch only the last `*` is retried one byte further (an earlier `*` never needs to be:
/// whatever it would absorb, the last one can).
fn glob_match(pat: &[u8], s: &[u8]) -> bool {
    let (mut p, mut i) = (0, 0);
    // The pattern position after the last `*` seen, and the name position it was tried at.
    let mut star: Option<(usize, usize)> = None;
    while i < s.len() {
        match pat.get(p) {
            Some(b'*') => {
                p += 1;
                star = Some((p, i));
            }
            Some(&c) if c == b'?' || c == s[i] => {
                p += 1;
                i += 1;
            }
            _ => match star {
                Some((sp, si)) => {
                    p = sp;
                    i = si + 1;
                    star = Some((sp, si + 1));
                }
                None => return false,
            },
        }
    }
    pat[p..].iter().all(|c| *c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_table() {
        for (p, s, want) in [
            ("*.conf", "libc.conf", true),
            ("*.conf", "libc.conf.bak", false),
            ("*", "", true),
            ("?.conf", "a.conf", true),
            ("?.conf", "ab.conf", false),
            ("x86_64-*.conf", "x86_64-linux-gnu.conf", true),
            ("a*b*c", "aXbYc", true),
            ("a*b*c", "aXbY", false),
        ] {
            assert_eq!(glob_match(p.as_bytes(), s.as_bytes()), want, "{p} {s}");
        }
    }

    #[test]
    fn glob_is_linear_and_agrees_with_the_naive_matcher() {
        fn naive(pat: &[u8], s: &[u8]) -> bool {
            match pat.first() {
                None => s.is_empty(),
                Some(b'*') => (0..=s.len()).any(|i| naive(&pat[1..], &s[i..])),
                Some(b'?') => !s.is_empty() && naive(&pat[1..], &s[1..]),
                Some(c) => s.first() == Some(c) && naive(&pat[1..], &s[1..]),
            }
        }
        // Every pattern and name of up to 5 bytes over a small alphabet.
        let words = |alphabet: &[u8]| {
            let mut all = vec![Vec::new()];
            let mut last = vec![Vec::new()];
            for _ in 0..5 {
                let next: Vec<Vec<u8>> = last
                    .iter()
                    .flat_map(|w: &Vec<u8>| {
                        alphabet.iter().map(move |c| {
                            let mut w = w.clone();
                            w.push(*c);
                            w
                        })
                    })
                    .collect();
                all.extend(next.iter().cloned());
                last = next;
            }
            all
        };
        let names = words(b"ab");
        for pat in words(b"a*?") {
            for name in &names {
                assert_eq!(
                    glob_match(&pat, name),
                    naive(&pat, name),
                    "{:?} {:?}",
                    String::from_utf8_lossy(&pat),
                    String::from_utf8_lossy(name)
                );
            }
        }
        // The pattern that took the naive matcher exponential time: many stars and a tail that
        // never matches. 4096 bytes of pattern against 255-byte names, 1000 times.
        let pat = "*a".repeat(2047) + "b";
        let name = "a".repeat(255);
        let start = std::time::Instant::now();
        for _ in 0..1000 {
            assert!(!glob_match(pat.as_bytes(), name.as_bytes()));
        }
        assert!(
            start.elapsed() < std::time::Duration::from_secs(10),
            "{:?}",
            start.elapsed()
        );
        assert!(glob_match(
            ("*a".repeat(100) + "*").as_bytes(),
            name.as_bytes()
        ));
    }

    #[test]
    fn ld_so_conf_reading_is_bounded() {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        std::fs::create_dir_all(r.join("etc/ld.so.conf.d")).unwrap();
        // Every file includes every file: without a bound on files read, 20^8 reads.
        for i in 0..20 {
            std::fs::write(
                r.join(format!("etc/ld.so.conf.d/{i:02}.conf")),
                format!("/lib{i}\ninclude /etc/ld.so.conf.d/*.conf\n"),
            )
            .unwrap();
        }
        std::fs::write(
            r.join("etc/ld.so.conf"),
            "include ld.so.conf.d/*.conf\ninclude ld.so.conf.d/*.conf\n",
        )
        .unwrap();
        let start = std::time::Instant::now();
        let mut dirs = Vec::new();
        read_ld_so_conf(&RootStack::single(r), "/etc/ld.so.conf", &mut dirs);
        assert!(start.elapsed() < std::time::Duration::from_secs(10));
        assert_eq!(dirs.len(), 20, "{dirs:?}");
        assert_eq!(dirs[0], "/lib0");

        // A FIFO is not read (and does not block), a file over the limit is ignored, and a
        // file of many directories is deduplicated in linear time.
        std::fs::remove_dir_all(r.join("etc/ld.so.conf.d")).unwrap();
        std::fs::create_dir_all(r.join("etc/ld.so.conf.d")).unwrap();
        testkit::mkfifo(r.join("etc/ld.so.conf.d/a.conf"));
        std::fs::write(
            r.join("etc/ld.so.conf.d/b.conf"),
            "/big\n".repeat((MAX_CONF_BYTES / 5 + 1) as usize),
        )
        .unwrap();
        let many: String = (0..100_000)
            .map(|i| format!("/d{}\n", i % 50_000))
            .collect();
        std::fs::write(r.join("etc/ld.so.conf.d/c.conf"), many).unwrap();
        let start = std::time::Instant::now();
        let mut dirs = Vec::new();
        read_ld_so_conf(&RootStack::single(r), "/etc/ld.so.conf", &mut dirs);
        assert!(start.elapsed() < std::time::Duration::from_secs(10));
        assert_eq!(dirs.len(), 50_000);
        assert!(!dirs.iter().any(|d| d == "/big"));
    }

    #[test]
    fn ld_so_conf_includes_and_globs() {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        std::fs::create_dir_all(r.join("etc/ld.so.conf.d")).unwrap();
        std::fs::create_dir_all(r.join("cfg")).unwrap();
        std::fs::write(
            r.join("etc/ld.so.conf"),
            "# comment\ninclude ld.so.conf.d/*.conf\n/opt/a/lib, /opt/b/lib\ninclude /etc/ld.so.conf\n",
        )
        .unwrap();
        std::fs::write(r.join("etc/ld.so.conf.d/b.conf"), "/b/lib # trailing\n").unwrap();
        std::fs::write(
            r.join("etc/ld.so.conf.d/a.conf"),
            "/a/lib/\nhwcap 0 nosegneg\n",
        )
        .unwrap();
        std::fs::write(r.join("etc/ld.so.conf.d/a.conf.off"), "/off\n").unwrap();
        let mut dirs = Vec::new();
        read_ld_so_conf(&RootStack::single(r), "/etc/ld.so.conf", &mut dirs);
        assert_eq!(dirs, ["/a/lib", "/b/lib", "/opt/a/lib", "/opt/b/lib"]);
    }
}
