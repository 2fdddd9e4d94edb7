//! Small rootfs folders built with gcc and musl-gcc, one per behaviour the shell tool got
//! wrong: symlinked entries, `$ORIGIN` rpaths and dlopen'd plugins, musl, soname conflicts,
//! units and `/usr/sbin`, shebang interpreters, and a source left untouched.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const FLIX: &str = env!("CARGO_BIN_EXE_flix");

fn cc(compiler: &str, args: &[&str], dir: &Path) {
    testkit::run_ok(Command::new(compiler).args(args).current_dir(dir));
}

fn flix(args: &[&str], cwd: &Path) -> Output {
    Command::new(FLIX)
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("run flix")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Every file of a tree with its content, to show the source is not modified.
fn snapshot(root: &Path) -> Vec<(PathBuf, Vec<u8>, u32)> {
    let mut v = Vec::new();
    for e in walkdir::WalkDir::new(root).sort_by_file_name() {
        let e = e.unwrap();
        let m = fs::symlink_metadata(e.path()).unwrap();
        let data = if m.is_file() {
            fs::read(e.path()).unwrap()
        } else {
            Vec::new()
        };
        v.push((
            e.path().to_path_buf(),
            data,
            std::os::unix::fs::PermissionsExt::mode(&m.permissions()),
        ));
    }
    v
}

/// A musl rootfs: /usr/bin/hello (RUNPATH $ORIGIN/../lib/hello and .../plugins) needing
/// libgreet.so.1 and libm, dlopen'ing libplug.so; /usr/bin/hello-link -> hello.
fn musl_rootfs(dir: &Path) -> PathBuf {
    let root = dir.join("musl-root");
    let src = dir.join("src");
    for d in ["usr/bin", "usr/lib/hello/plugins", "lib"] {
        fs::create_dir_all(root.join(d)).unwrap();
    }
    fs::create_dir_all(&src).unwrap();
    fs::write(
        src.join("greet.c"),
        "const char *greet(void) { return \"hello from greet\"; }\n",
    )
    .unwrap();
    fs::write(
        src.join("plug.c"),
        "const char *plug(void) { return \"plugin loaded\"; }\n",
    )
    .unwrap();
    fs::write(
        src.join("main.c"),
        r#"#include <stdio.h>
#include <math.h>
#include <dlfcn.h>
const char *greet(void);
int main(int argc, char **argv) {
    void *h = dlopen("libplug.so", RTLD_NOW);
    if (!h) { printf("dlopen failed: %s\n", dlerror()); return 3; }
    const char *(*plug)(void) = (const char *(*)(void))dlsym(h, "plug");
    printf("%s, %s, %.3f\n", greet(), plug(), sqrt((double)argc + 1.0));
    return 0;
}
"#,
    )
    .unwrap();
    let lib = root.join("usr/lib/hello");
    cc(
        "musl-gcc",
        &[
            "-shared",
            "-fPIC",
            "-Wl,-soname,libgreet.so.1",
            "-o",
            lib.join("libgreet.so.1").to_str().unwrap(),
            "greet.c",
        ],
        &src,
    );
    cc(
        "musl-gcc",
        &[
            "-shared",
            "-fPIC",
            "-o",
            lib.join("plugins/libplug.so").to_str().unwrap(),
            "plug.c",
        ],
        &src,
    );
    cc(
        "musl-gcc",
        &[
            "-o",
            root.join("usr/bin/hello").to_str().unwrap(),
            "main.c",
            lib.join("libgreet.so.1").to_str().unwrap(),
            "-lm",
            "-Wl,--enable-new-dtags,-rpath,$ORIGIN/../lib/hello:$ORIGIN/../lib/hello/plugins",
        ],
        &src,
    );
    let musl_libc = fs::canonicalize("/lib/ld-musl-x86_64.so.1").expect("musl-tools");
    fs::copy(musl_libc, root.join("lib/ld-musl-x86_64.so.1")).unwrap();
    symlink("hello", root.join("usr/bin/hello-link")).unwrap();
    root
}

fn busybox_root(dir: &Path, raw: &Path) -> PathBuf {
    let root = dir.join("bb-root");
    for d in [
        "usr/bin",
        "usr/lib",
        "etc",
        "var/lib/extensions",
        "proc",
        "tmp",
        "run",
    ] {
        fs::create_dir_all(root.join(d)).unwrap();
    }
    fs::copy(
        testkit::which("busybox").unwrap(),
        root.join("usr/bin/busybox"),
    )
    .unwrap();
    symlink("busybox", root.join("usr/bin/sh")).unwrap();
    fs::write(root.join("usr/lib/os-release"), "ID=bb\n").unwrap();
    fs::write(root.join("etc/os-release"), "ID=bb\n").unwrap();
    fs::copy(
        raw,
        root.join("var/lib/extensions")
            .join(raw.file_name().unwrap()),
    )
    .unwrap();
    root
}

#[test]
fn musl_program_with_origin_rpath_and_plugin_runs_from_a_symlinked_entry() {
    if !testkit::require_root("systemd-sysext merge")
        || !["musl-gcc", "busybox", "systemd-sysext", "unshare"]
            .iter()
            .all(|t| testkit::require_tool(t))
    {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = musl_rootfs(dir.path());
    let before = snapshot(&root);
    let out = flix(
        &[
            root.to_str().unwrap(),
            "hello",
            "/usr/bin/hello-link",
            "/usr/lib/hello/plugins",
        ],
        dir.path(),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(before, snapshot(&root), "the source rootfs was modified");
    let raw = dir.path().join("hello.raw");
    let image = sysext_core::inspect::Image::open(&raw).unwrap();
    let report = sysext_core::check::check_image(&image, None).unwrap();
    assert!(report.is_clean(), "{:#?}", report.findings);

    // The tree as shipped: link kept, target and plugin patched.
    let tree = dir.path().join("tree");
    testkit::run_ok(
        Command::new("unsquashfs")
            .arg("-q")
            .arg("-d")
            .arg(&tree)
            .arg(&raw),
    );
    assert_eq!(
        fs::read_link(tree.join("usr/bin/hello-link")).unwrap(),
        PathBuf::from("hello")
    );
    let hello = fs::read(tree.join("usr/bin/hello")).unwrap();
    let info = elf_closure::scan(&hello).unwrap().unwrap();
    assert_eq!(
        info.interpreter.as_deref(),
        Some("/usr/local/hello/ld-musl-x86_64.so.1")
    );
    assert_eq!(
        info.runpath,
        vec!["/usr/local/hello", "/usr/lib/hello/plugins"],
        "the $ORIGIN dir of the shipped plugins is translated"
    );
    assert!(info.nodeflib);
    let plug = elf_closure::scan(&fs::read(tree.join("usr/lib/hello/plugins/libplug.so")).unwrap())
        .unwrap()
        .unwrap();
    assert_eq!(plug.runpath, vec!["/usr/local/hello"]);
    assert!(
        plug.nodeflib,
        "plugins inside resource folders are patched too"
    );
    assert!(tree.join("usr/local/hello/libgreet.so.1").is_file());
    let release =
        fs::read_to_string(tree.join("usr/lib/extension-release.d/extension-release.hello"))
            .unwrap();
    assert!(
        release.contains("ID=_any") && release.contains("ARCHITECTURE=x86-64"),
        "{release}"
    );

    let bb = busybox_root(dir.path(), &raw);
    let script = format!(
        "unshare -m --propagation shared sh -c 'mount -t tmpfs tmpfs /run && systemd-sysext --root={r} merge >/dev/null && chroot {r} /usr/bin/hello-link x'",
        r = bb.display()
    );
    let run = Command::new("sh").arg("-c").arg(&script).output().unwrap();
    assert!(
        run.status.success(),
        "{}{}",
        String::from_utf8_lossy(&run.stdout),
        stderr(&run)
    );
    assert_eq!(
        String::from_utf8_lossy(&run.stdout),
        "hello from greet, plugin loaded, 1.732\n"
    );
}

#[test]
fn two_different_libraries_under_one_soname_are_an_error() {
    if !testkit::require_tool("gcc") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let src = dir.path().join("src");
    for d in ["usr/bin", "usr/lib/a", "usr/lib/b", "lib64"] {
        fs::create_dir_all(root.join(d)).unwrap();
    }
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("a.c"), "int foo(void) { return 1; }\n").unwrap();
    fs::write(src.join("b.c"), "int foo(void) { return 2; }\n").unwrap();
    fs::write(
        src.join("m.c"),
        "int foo(void); int main(void) { return foo(); }\n",
    )
    .unwrap();
    for x in ["a", "b"] {
        let lib = root.join(format!("usr/lib/{x}/libfoo.so.1"));
        cc(
            "gcc",
            &[
                "-shared",
                "-fPIC",
                "-Wl,-soname,libfoo.so.1",
                "-o",
                lib.to_str().unwrap(),
                &format!("{x}.c"),
            ],
            &src,
        );
        cc(
            "gcc",
            &[
                "-o",
                root.join(format!("usr/bin/prog-{x}")).to_str().unwrap(),
                "m.c",
                lib.to_str().unwrap(),
                &format!("-Wl,--enable-new-dtags,-rpath,/usr/lib/{x}"),
            ],
            &src,
        );
    }
    // The glibc those programs need, from the host, so the closure is complete.
    let glibc = root.join("lib/x86_64-linux-gnu");
    fs::create_dir_all(&glibc).unwrap();
    fs::copy("/lib/x86_64-linux-gnu/libc.so.6", glibc.join("libc.so.6")).unwrap();
    fs::copy(
        "/lib64/ld-linux-x86-64.so.2",
        root.join("lib64/ld-linux-x86-64.so.2"),
    )
    .unwrap();

    let out = flix(
        &[
            root.to_str().unwrap(),
            "foo",
            "/usr/bin/prog-a",
            "/usr/bin/prog-b",
        ],
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("two different files are loaded as libfoo.so.1"),
        "{err}"
    );
    assert!(
        err.contains("/usr/lib/a/libfoo.so.1") && err.contains("/usr/lib/b/libfoo.so.1"),
        "{err}"
    );
    assert!(!dir.path().join("foo.raw").exists(), "no partial output");
    assert_eq!(
        fs::read_dir(dir.path()).unwrap().count(),
        2,
        "nothing left beside the output"
    );

    // One of them alone is fine; a library given with EXTRALIBS goes to extralibs/ and every
    // object's RUNPATH names that folder.
    let out = Command::new(FLIX)
        .env("EXTRALIBS", "/usr/lib/b/libfoo.so.1")
        .args([
            root.to_str().unwrap(),
            "foo",
            "/usr/bin/prog-a",
            "--format",
            "dir",
        ])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let t = dir.path().join("foo");
    let extra =
        elf_closure::scan(&fs::read(t.join("usr/local/foo/extralibs/libfoo.so.1")).unwrap())
            .unwrap()
            .unwrap();
    assert!(extra.nodeflib, "extra libraries are patched too");
    let prog = elf_closure::scan(&fs::read(t.join("usr/bin/prog-a")).unwrap())
        .unwrap()
        .unwrap();
    assert_eq!(
        prog.runpath,
        vec!["/usr/local/foo", "/usr/local/foo/extralibs"]
    );
    assert_eq!(
        prog.interpreter.as_deref(),
        Some("/usr/local/foo/ld-linux-x86-64.so.2")
    );
    fs::remove_dir_all(&t).unwrap();
    let out = flix(
        &[
            root.to_str().unwrap(),
            "foo",
            "/usr/bin/prog-a",
            "--format",
            "dir",
        ],
        dir.path(),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(dir.path().join("foo/usr/local/foo/libfoo.so.1").is_file());
}

#[test]
fn units_and_sbin_are_placed_for_merged_usr_hosts() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    for d in ["usr/sbin", "usr/lib/systemd/system", "etc/terminfo/x"] {
        fs::create_dir_all(root.join(d)).unwrap();
    }
    fs::write(
        root.join("usr/sbin/demod"),
        "#!/usr/bin/python3\nprint('hi')\n",
    )
    .unwrap();
    fs::write(root.join("etc/terminfo/x/xterm"), "terminfo").unwrap();
    fs::write(
        root.join("usr/lib/systemd/system/demo.service"),
        "[Unit]\nDescription=demo\n[Service]\nExecStartPre=-/usr/sbin/demod --check\nExecStart=/usr/sbin/demod\n[Install]\nWantedBy=multi-user.target\n",
    )
    .unwrap();
    let before = snapshot(&root);
    let out = flix(
        &[
            root.to_str().unwrap(),
            "demo",
            "/usr/sbin/demod",
            "/usr/lib/systemd/system/demo.service",
            "/etc/terminfo:/usr/share/terminfo",
            "--enable",
            "demo.service",
            "--format",
            "dir",
        ],
        dir.path(),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(before, snapshot(&root));
    let err = stderr(&out);
    assert!(
        err.contains("runs /usr/bin/python3, which is not in the image"),
        "{err}"
    );
    let t = dir.path().join("demo");
    assert!(
        !t.join("usr/sbin").exists(),
        "usr/sbin must not be shipped as a directory"
    );
    assert!(t.join("usr/bin/demod").is_file());
    assert_eq!(
        fs::read(t.join("usr/share/terminfo/x/xterm")).unwrap(),
        b"terminfo"
    );
    let unit = fs::read_to_string(t.join("usr/lib/systemd/system/demo.service")).unwrap();
    assert!(
        unit.contains("ExecStartPre=-/usr/bin/demod --check\n")
            && unit.contains("ExecStart=/usr/bin/demod\n"),
        "{unit}"
    );
    let dropin = fs::read_to_string(
        t.join("usr/lib/systemd/system/multi-user.target.d/10-demo-demo.service.conf"),
    )
    .unwrap();
    assert!(
        dropin.contains("[Unit]\nUpholds=demo.service\n"),
        "{dropin}"
    );
    let release =
        fs::read_to_string(t.join("usr/lib/extension-release.d/extension-release.demo")).unwrap();
    assert!(release.contains("EXTENSION_RELOAD_MANAGER=1"), "{release}");

    // Entries outside /usr need a target; unknown units cannot be enabled; lib64 is refused.
    let cases: &[(&[&str], &str)] = &[
        (&["/etc/terminfo"], "outside /usr"),
        (
            &["/usr/sbin/demod", "--enable", "nope.service"],
            "--enable nope.service",
        ),
        (&["/etc/terminfo:/usr/lib64/terminfo"], "usr/lib64"),
        (&["/usr/bin/missing"], "/usr/bin/missing not found in"),
    ];
    for (args, want) in cases {
        let mut all = vec![root.to_str().unwrap(), "bad"];
        all.extend_from_slice(args);
        let out = flix(&all, dir.path());
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(stderr(&out).contains(want), "{args:?}: {}", stderr(&out));
        assert!(!dir.path().join("bad.raw").exists());
    }
}

/// Resource entries that are symlinks (Debian's /usr/share/misc/magic.mgc ->
/// ../../lib/file/magic.mgc), alone in their folder: a relative link, an absolute one, a chain
/// of two (shipped as one link to the final target), and a link to a folder. Each link is
/// shipped at its place with its parent folders, and what it points to is shipped too, so the
/// link resolves inside the image.
#[test]
fn symlinked_resource_entries_ship_links_parents_and_targets() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    for d in [
        "usr/lib/file",
        "usr/share/misc",
        "usr/share/a",
        "usr/lib/data/sub",
    ] {
        fs::create_dir_all(root.join(d)).unwrap();
    }
    fs::write(root.join("usr/lib/file/magic.mgc"), b"magic database").unwrap();
    fs::write(root.join("usr/lib/data/sub/x.txt"), b"x").unwrap();
    symlink(
        "../../lib/file/magic.mgc",
        root.join("usr/share/misc/magic.mgc"),
    )
    .unwrap();
    symlink("/usr/lib/file/magic.mgc", root.join("usr/share/a/abs.mgc")).unwrap();
    symlink("abs.mgc", root.join("usr/share/a/chain.mgc")).unwrap();
    symlink("../lib/data", root.join("usr/share/data")).unwrap();
    let out = flix(
        &[
            root.to_str().unwrap(),
            "n",
            "/usr/share/misc/magic.mgc",
            "/usr/share/a/chain.mgc",
            "/usr/share/data",
        ],
        dir.path(),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let tree = dir.path().join("tree");
    testkit::run_ok(
        Command::new("unsquashfs")
            .args(["-q", "-d"])
            .arg(&tree)
            .arg(dir.path().join("n.raw")),
    );
    // (A chain is shipped as one link to its final target.)
    for link in ["usr/share/misc/magic.mgc", "usr/share/a/chain.mgc"] {
        let meta = fs::symlink_metadata(tree.join(link)).unwrap_or_else(|e| panic!("{link}: {e}"));
        assert!(meta.file_type().is_symlink(), "{link} is not a link");
        // Resolve inside the image: the link's target is shipped.
        let real = safefs::rootfs::resolve(&tree, &Path::new("/").join(link), true)
            .unwrap_or_else(|e| panic!("{link}: {e}"));
        assert_eq!(real, Path::new("/usr/lib/file/magic.mgc"), "{link}");
    }
    assert_eq!(
        fs::read(tree.join("usr/lib/file/magic.mgc")).unwrap(),
        b"magic database"
    );
    assert!(fs::symlink_metadata(tree.join("usr/share/data"))
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(
        fs::read(tree.join("usr/share/data/sub/x.txt")).unwrap(),
        b"x"
    );
}

/// The note about glibc's data (gconv modules, locales, NSS) appears only when a shipped
/// object calls a function that loads them, and names the object and the function.
#[test]
fn glibc_data_note_only_for_programs_that_use_it() {
    if !testkit::require_tool("gcc") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    fs::create_dir_all(root.join("usr/bin")).unwrap();
    testkit::host_glibc(&root);
    fs::write(
        dir.path().join("plain.c"),
        "#include <stdio.h>\nint main(void) { puts(\"hi\"); return 0; }\n",
    )
    .unwrap();
    fs::write(
        dir.path().join("loc.c"),
        "#include <locale.h>\n#include <pwd.h>\nint main(void) { setlocale(LC_ALL, \"\"); return getpwnam(\"root\") == 0; }\n",
    )
    .unwrap();
    for p in ["plain", "loc"] {
        cc(
            "gcc",
            &[
                "-o",
                root.join("usr/bin").join(p).to_str().unwrap(),
                &format!("{p}.c"),
            ],
            dir.path(),
        );
    }
    let plain = flix(
        &[root.to_str().unwrap(), "plain", "/usr/bin/plain"],
        dir.path(),
    );
    assert!(plain.status.success(), "{}", stderr(&plain));
    assert!(!stderr(&plain).contains("gconv"), "{}", stderr(&plain));
    let loc = flix(&[root.to_str().unwrap(), "loc", "/usr/bin/loc"], dir.path());
    assert!(loc.status.success(), "{}", stderr(&loc));
    let err = stderr(&loc);
    assert!(
        err.contains("/usr/bin/loc (getpwnam: NSS modules, setlocale: locales)"),
        "{err}"
    );
}

/// Paths compiled into a program that exist in the rootfs and are not shipped are suggested
/// (text and --json), never shipped; absent, shipped, generic and host-owned paths are not.
#[test]
fn data_paths_in_programs_are_suggested_not_shipped() {
    if !testkit::require_tool("gcc") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    for d in ["usr/bin", "usr/share/myapp", "usr/share/shipped", "etc"] {
        fs::create_dir_all(root.join(d)).unwrap();
    }
    testkit::host_glibc(&root);
    fs::write(root.join("usr/share/myapp/data.db"), b"db").unwrap();
    fs::write(root.join("usr/share/shipped/x"), b"x").unwrap();
    fs::write(root.join("etc/myapp.conf"), b"conf").unwrap();
    fs::write(root.join("etc/passwd"), b"root:x:0:0::/:/bin/sh\n").unwrap();
    fs::write(
        dir.path().join("app.c"),
        r#"#include <stdio.h>
const char *paths[] = {"/usr/share/myapp/data.db", "/usr/share/myapp/absent", "/etc/myapp.conf",
    "/usr/share/shipped/x", "/usr/lib/x86_64-linux-gnu", "/etc/passwd", "/usr/share/%s/fmt"};
int main(int c, char **v) { puts(paths[c % 7]); return 0; }
"#,
    )
    .unwrap();
    cc(
        "gcc",
        &["-o", root.join("usr/bin/app").to_str().unwrap(), "app.c"],
        dir.path(),
    );
    let out = flix(
        &[
            root.to_str().unwrap(),
            "app",
            "/usr/bin/app",
            "/usr/share/shipped",
            "--json",
        ],
        dir.path(),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let got: Vec<(String, String)> = v["plan"]["suggestions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["path"].as_str().unwrap().to_string(),
                s["kind"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            ("/etc/myapp.conf".to_string(), "file".to_string()),
            ("/usr/share/myapp/data.db".to_string(), "file".to_string()),
        ]
    );
    assert_eq!(
        v["plan"]["suggestions"][0]["mentioned_by"][0],
        "/usr/bin/app"
    );
    let err = stderr(&out);
    assert!(
        err.contains("/usr/share/myapp/data.db (file, in /usr/bin/app)"),
        "{err}"
    );
    // Suggested, not shipped.
    let image = sysext_core::inspect::Image::open(&dir.path().join("app.raw")).unwrap();
    assert!(!image.entries().iter().any(|e| e.path.contains("myapp")));
}
