//! glibc's own data for the relocated libc: gconv modules, locales (C.UTF-8 and one generated
//! into a locale-archive) and NSS modules are shipped under /usr/local/NAME/glibc and the
//! library dir, read by the libc copy through its short link, in a root with no libc at all;
//! and while the extension is merged on this host, the host's own iconv still loads the host's
//! gconv modules.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const FLIX: &str = env!("CARGO_BIN_EXE_flix");

/// The programs shipped, under names the host does not use, so the host's own stay visible
/// while the extension is merged.
const ENTRIES: [&str; 3] = [
    "/usr/bin/iconv:/usr/bin/trixie-iconv",
    "/usr/bin/locale:/usr/bin/trixie-locale",
    "/usr/bin/getent:/usr/bin/trixie-getent",
];

/// "hello\n" in EBCDIC-US.
const HELLO_EBCDIC: [u8; 6] = [0x88, 0x85, 0x93, 0x93, 0x96, 0x25];

fn prerequisites() -> bool {
    testkit::require_root("chroot and sysext run")
        && ["chroot", "strace", "mmdebstrap"]
            .iter()
            .all(|t| testkit::require_tool(t))
}

/// The trixie fixture as hard links (only new files are written into it, so the fixture stays
/// as it is) with de_DE.UTF-8 generated into its locale-archive by its own localedef.
fn source(dir: &Path) -> PathBuf {
    let trixie = testkit::fixtures::trixie_rootfs();
    let i18n = testkit::fixtures::trixie_locale_sources();
    let src = dir.join("src");
    testkit::run_ok(Command::new("cp").arg("-al").arg(&trixie).arg(&src));
    assert!(!src.join("usr/lib/locale/locale-archive").exists());
    let libdir = src.join("usr/lib/x86_64-linux-gnu");
    testkit::run_ok(
        Command::new(libdir.join("ld-linux-x86-64.so.2"))
            .arg("--library-path")
            .arg(&libdir)
            .arg(src.join("usr/bin/localedef"))
            .arg("--prefix")
            .arg(&src)
            .args(["-i", "de_DE", "-f", "UTF-8", "de_DE.UTF-8"])
            .env("I18NPATH", &i18n),
    );
    assert!(src.join("usr/lib/locale/locale-archive").is_file());
    src
}

fn flix(src: &Path, name: &str, extra: &[&str], out: &Path) -> String {
    let o = Command::new(FLIX)
        .arg(src)
        .arg(name)
        .args(ENTRIES)
        .args(extra)
        .arg("-o")
        .arg(out)
        .output()
        .expect("run flix");
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "{err}");
    err
}

/// Makes the extension folder the whole root of a chroot: the extension's files and three
/// files in /etc, nothing else (no libc, no loader, no glibc data outside /usr/local).
fn etc(root: &Path, passwd_sources: &str) {
    fs::create_dir_all(root.join("etc")).unwrap();
    fs::write(
        root.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nkim:x:1000:1000:Kim:/home/kim:/bin/sh\n",
    )
    .unwrap();
    fs::write(root.join("etc/group"), "root:x:0:\nkim:x:1000:\n").unwrap();
    fs::write(
        root.join("etc/nsswitch.conf"),
        format!("passwd: {passwd_sources}\ngroup: files\n"),
    )
    .unwrap();
}

/// Runs `args` in the chroot `root` with only `env` set, feeding `stdin`.
fn chrooted(root: &Path, env: &[(&str, &str)], args: &[&str], stdin: &[u8]) -> Output {
    let chroot = testkit::which("chroot").expect("chroot");
    let mut child = Command::new(chroot)
        .arg(root)
        .args(args)
        .env_clear()
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run chroot");
    // A program that does not read its input may end before it is written.
    if let Err(e) = child.stdin.take().unwrap().write_all(stdin) {
        assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe, "{e}");
    }
    child.wait_with_output().unwrap()
}

fn text(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn relocated_libc_reads_its_own_gconv_modules_locales_and_nss_modules() {
    if !prerequisites() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let src = source(dir.path());
    let root = dir.path().join("gd");
    let err = flix(&src, "gd", &[], &root);
    assert!(err.contains("glibc's data is shipped"), "{err}");
    let alias = flix::plan::alias_for("gd");

    // Where it went: under /usr/local only, through the alias; the libc copy's compiled-in
    // paths are gone.
    let link = root.join(alias.trim_start_matches('/'));
    assert_eq!(fs::read_link(&link).unwrap(), Path::new("gd/glibc"));
    for f in [
        "EBCDIC-US.so",
        "gconv-modules",
        "C.utf8/LC_CTYPE",
        "locale-archive",
    ] {
        assert!(root.join("usr/local/gd/glibc").join(f).is_file(), "{f}");
    }
    assert!(root.join("usr/local/gd/libnss_compat.so.2").is_file());
    assert!(!root.join("usr/local/gd/glibc/gconv-modules.cache").exists());
    for p in ["usr/lib/x86_64-linux-gnu", "usr/lib/locale", "etc"] {
        assert!(!root.join(p).exists(), "{p} is shipped");
    }
    let libc = fs::read(root.join("usr/local/gd/libc.so.6")).unwrap();
    for old in [
        "/usr/lib/x86_64-linux-gnu/gconv\0",
        "/usr/lib/locale\0",
        "/usr/lib/locale/locale-archive\0",
    ] {
        assert!(!contains(&libc, old.as_bytes()), "{old} is still in libc");
    }
    assert!(contains(
        &libc,
        format!("{alias}/locale-archive\0").as_bytes()
    ));

    etc(&root, "files");
    // iconv to a charset that needs a module.
    let o = chrooted(
        &root,
        &[],
        &["/usr/bin/trixie-iconv", "-f", "UTF-8", "-t", "EBCDIC-US"],
        b"hello\n",
    );
    assert!(o.status.success(), "{o:?}");
    assert_eq!(o.stdout, HELLO_EBCDIC);
    // Locales: C.UTF-8 from its folder, de_DE.UTF-8 from the archive (a comma for decimals).
    let charmap = |env: &[(&str, &str)]| {
        text(&chrooted(
            &root,
            env,
            &["/usr/bin/trixie-locale", "charmap"],
            b"",
        ))
    };
    assert_eq!(charmap(&[("LANG", "C.UTF-8")]), "UTF-8");
    assert_eq!(charmap(&[("LC_ALL", "de_DE.UTF-8")]), "UTF-8");
    let o = chrooted(
        &root,
        &[("LC_ALL", "de_DE.UTF-8")],
        &["/usr/bin/trixie-locale", "-k", "decimal_point"],
        b"",
    );
    assert_eq!(text(&o), "decimal_point=\",\"", "{o:?}");
    // NSS: files (inside libc), then compat (a module of its own, loaded with dlopen).
    let getent =
        |root: &Path| chrooted(root, &[], &["/usr/bin/trixie-getent", "passwd", "kim"], b"");
    let o = getent(&root);
    assert_eq!(text(&o), "kim:x:1000:1000:Kim:/home/kim:/bin/sh", "{o:?}");
    etc(&root, "compat");
    let o = getent(&root);
    assert_eq!(text(&o), "kim:x:1000:1000:Kim:/home/kim:/bin/sh", "{o:?}");

    // Without the data (--glibc-data none) the same calls fail: the relocated libc has nothing
    // to read, and never reads the host's.
    let bare = dir.path().join("bare");
    flix(&src, "gd", &["--glibc-data", "none"], &bare);
    assert!(!bare.join("usr/local/gd/glibc").exists());
    etc(&bare, "compat");
    let o = chrooted(
        &bare,
        &[],
        &["/usr/bin/trixie-iconv", "-f", "UTF-8", "-t", "EBCDIC-US"],
        b"hello\n",
    );
    assert!(!o.status.success(), "{o:?}");
    let o = chrooted(
        &bare,
        &[("LC_ALL", "de_DE.UTF-8")],
        &["/usr/bin/trixie-locale", "charmap"],
        b"",
    );
    assert_eq!(text(&o), "ANSI_X3.4-1968", "{o:?}");
    assert_eq!(getent(&bare).status.code(), Some(2));
}

/// Merged on this host (a different glibc), the extension hides none of the host's files:
/// the host's iconv loads the host's EBCDIC-US module, the relocated one its own.
#[test]
fn the_hosts_iconv_keeps_the_hosts_modules_while_merged() {
    if !prerequisites() {
        return;
    }
    let host_module = Path::new("/usr/lib/x86_64-linux-gnu/gconv/EBCDIC-US.so");
    assert!(
        host_module.is_file(),
        "the host has no {}",
        host_module.display()
    );
    let dir = tempfile::tempdir().unwrap();
    let src = source(dir.path());
    let raw = dir.path().join("gd.raw");
    flix(&src, "gd", &[], &raw);
    let sysext = testkit::workspace_bin("sysext");
    let check = Command::new(&sysext)
        .arg("check")
        .arg(&raw)
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&check.stdout);
    assert!(
        !report.contains("shadows-host-file") && !report.contains("hides-host-folder"),
        "{report}"
    );

    // Each iconv under strace, in the merged view: which EBCDIC-US.so did it open?
    let opened = |program: &str| -> (Vec<u8>, Vec<String>) {
        let log = dir.path().join(format!("{program}.strace"));
        let script = format!(
            "printf 'hello\\n' | strace -f -e trace=openat -o {} {program} -f UTF-8 -t EBCDIC-US",
            log.display()
        );
        let o = testkit::run_ok(
            Command::new(&sysext)
                .arg("run")
                .arg(&raw)
                .args(["--", "sh", "-c", &script]),
        );
        let opened = fs::read_to_string(&log)
            .unwrap()
            .lines()
            .filter(|l| l.contains("EBCDIC-US.so") && !l.contains("= -1"))
            .filter_map(|l| l.split('"').nth(1).map(str::to_string))
            .collect();
        (o.stdout, opened)
    };
    let (out, host_opened) = opened("iconv");
    assert_eq!(out, HELLO_EBCDIC);
    assert_eq!(host_opened, vec![host_module.display().to_string()]);
    let (out, ours) = opened("trixie-iconv");
    assert_eq!(out, HELLO_EBCDIC);
    let alias = flix::plan::alias_for("gd");
    assert_eq!(ours.len(), 1, "{ours:?}");
    assert!(
        ours[0].starts_with(&alias) && ours[0].ends_with("/EBCDIC-US.so"),
        "{ours:?}"
    );
}
