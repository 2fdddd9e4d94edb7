//! Closures of programs built for the test, compared with the real loaders run in a chroot:
//! musl (RPATH with `$ORIGIN`, the `ld-musl-ARCH.path` file, reserved names) and glibc (a
//! wrong-class library earlier in the search path is skipped; RPATH inherited, RUNPATH not).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use elf_closure::{self as elf, ClosureOptions, Reason};
use safefs::rootfs;

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

fn copy_host(from: &str, root: &Path, to: &str) {
    let real = std::fs::canonicalize(from).unwrap();
    let dest = root.join(to.trim_start_matches('/'));
    std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
    std::fs::copy(real, dest).unwrap();
}

fn cc(compiler: &str, args: &[&str]) {
    testkit::run_ok(Command::new(compiler).args(args));
}

/// Builds the shared library `out` named `soname` from `src`, `extra` arguments last.
fn shared_lib(compiler: &str, soname: &str, out: &Path, src: &Path, extra: &[&str]) {
    let soname = format!("-Wl,-soname,{soname}");
    let (out, src) = (out.to_str().unwrap(), src.to_str().unwrap());
    let mut args = vec!["-shared", "-fPIC", &soname, "-o", out, src];
    args.extend_from_slice(extra);
    cc(compiler, &args);
}

/// The host's glibc loader and libc, and a static busybox at `/busybox` (see [`loader_list`]).
fn glibc_root(root: &Path) {
    for f in [
        "/lib64/ld-linux-x86-64.so.2",
        "/lib/x86_64-linux-gnu/libc.so.6",
    ] {
        copy_host(f, root, f);
    }
    copy_host(
        testkit::which("busybox").unwrap().to_str().unwrap(),
        root,
        "/busybox",
    );
}

/// (real paths, missing names) the loader reports for `file` in `root`.
fn loader_list(root: &Path, loader: &str, file: &str) -> (BTreeSet<PathBuf>, BTreeSet<String>) {
    // glibc's `--list` aborts on a missing indirect dependency; the ldd way
    // (LD_TRACE_LOADED_OBJECTS) reports it as "not found". The variable is set inside the
    // chroot by a static busybox so it does not trace the host's chroot binary.
    let out = if loader.contains("ld-musl") {
        Command::new("chroot")
            .arg(root)
            .args([loader, "--list", file])
            .output()
    } else {
        Command::new("chroot")
            .arg(root)
            .args(["/busybox", "env", "LD_TRACE_LOADED_OBJECTS=1", loader, file])
            .output()
    }
    .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    let mut paths = BTreeSet::new();
    let mut missing = BTreeSet::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let line = line.trim();
        if line.is_empty() || line.contains("vdso") {
            continue;
        }
        let path = match line.split_once(" => ") {
            Some((name, rest)) if rest.trim() == "not found" => {
                missing.insert(name.trim().to_string());
                continue;
            }
            Some((_, rest)) => rest.rsplit_once(" (").map_or(rest, |(p, _)| p).trim(),
            None => line.rsplit_once(" (").map_or(line, |(p, _)| p).trim(),
        };
        let real = rootfs::resolve(root, Path::new(path), true)
            .unwrap_or_else(|e| panic!("loader output {text}: {path}: {e}"));
        paths.insert(real);
    }
    // The interpreter is mapped in every process, but glibc lists it only when some DT_NEEDED
    // names it (libc.so.6 does): count it in.
    paths.insert(rootfs::resolve(root, Path::new(loader), true).unwrap());
    // musl's ldd reports a missing library on stderr: "Error loading shared library NAME: ..."
    for line in String::from_utf8_lossy(&out.stderr).lines() {
        if let Some(rest) = line.strip_prefix("Error loading shared library ") {
            missing.insert(rest.split(':').next().unwrap().trim().to_string());
        }
    }
    assert!(
        !paths.is_empty(),
        "no output from {loader} --list {file}: {text}"
    );
    (paths, missing)
}

/// Our closure of `file` as the loader running on this machine sees it: the `glibc-hwcaps`
/// level is the running CPU's (checked against the loader in [`loader_hwcaps_level`]).
fn ours(root: &Path, file: &str) -> (elf::Closure, BTreeSet<PathBuf>, BTreeSet<String>) {
    ours_with(root, file, &ClosureOptions::for_running_cpu())
}

fn ours_with(
    root: &Path,
    file: &str,
    opts: &ClosureOptions,
) -> (elf::Closure, BTreeSet<PathBuf>, BTreeSet<String>) {
    let c = elf::closure(root, &[PathBuf::from(file)], opts).unwrap();
    let paths = c
        .objects
        .iter()
        .filter(|o| o.reason != Reason::Requested)
        .map(|o| o.real_path.clone())
        .collect();
    let missing = c.missing.iter().map(|m| m.name.clone()).collect();
    (c, paths, missing)
}

fn reason_of(c: &elf::Closure, name: &str) -> String {
    c.objects
        .iter()
        .find(|o| o.name == name)
        .unwrap_or_else(|| panic!("{name} not in {c:#?}"))
        .reason
        .to_string()
}

/// musl: a program finding its own library through `$ORIGIN` in RPATH, that library finding
/// another through the path file (or musl's default dirs when there is none), libc/libm being
/// the loader itself.
#[test]
fn musl_closure_matches_musl_ldd() {
    if !testkit::require_root("chroot") || !testkit::require_tool("musl-gcc") {
        return;
    }
    for with_path_file in [true, false] {
        let t = tempfile::tempdir().unwrap();
        let root = t.path();
        let src = root.join("src");
        copy_host("/lib/ld-musl-x86_64.so.1", root, "/lib/ld-musl-x86_64.so.1");
        let helper_dir = if with_path_file {
            write(
                &root.join("etc/ld-musl-x86_64.path"),
                "/opt/musl-extra/lib\n/lib\n",
            );
            "opt/musl-extra/lib"
        } else {
            "usr/local/lib"
        };
        write(
            &src.join("helper.c"),
            "int helper(int x) { return x * 2; }\n",
        );
        write(
            &src.join("greet.c"),
            "#include <stdio.h>\nint helper(int);\nvoid greet(void) { printf(\"%d\\n\", helper(21)); }\n",
        );
        write(
            &src.join("main.c"),
            "#include <math.h>\nvoid greet(void);\nint main(int c, char **v) { greet(); return (int)sqrt((double)c) - 1; }\n",
        );
        let helper = root.join(helper_dir).join("libhelper.so");
        let lib = root.join("opt/app/lib/libgreet.so");
        let prog = root.join("opt/app/bin/prog");
        for d in [&helper, &lib, &prog] {
            std::fs::create_dir_all(d.parent().unwrap()).unwrap();
        }
        let s = |p: &Path| p.to_str().unwrap().to_string();
        shared_lib(
            "musl-gcc",
            "libhelper.so",
            &helper,
            &src.join("helper.c"),
            &[],
        );
        shared_lib(
            "musl-gcc",
            "libgreet.so",
            &lib,
            &src.join("greet.c"),
            &[&format!("-L{}", s(helper.parent().unwrap())), "-lhelper"],
        );
        cc(
            "musl-gcc",
            &[
                "-o",
                &s(&prog),
                &s(&src.join("main.c")),
                &format!("-L{}", s(lib.parent().unwrap())),
                "-lgreet",
                "-lm",
                "-Wl,-rpath,$ORIGIN/../lib",
                &format!("-Wl,-rpath-link,{}", s(helper.parent().unwrap())),
            ],
        );
        let info = elf::scan_file(&prog).unwrap().unwrap();
        assert_eq!(
            info.interpreter.as_deref(),
            Some("/lib/ld-musl-x86_64.so.1")
        );
        let want = loader_list(root, "/lib/ld-musl-x86_64.so.1", "/opt/app/bin/prog");
        let (c, got, got_missing) = ours(root, "/opt/app/bin/prog");
        assert_eq!(
            (got, got_missing),
            want,
            "path file: {with_path_file}\n{c:#?}"
        );
        let greet = reason_of(&c, "libgreet.so");
        assert!(greet.ends_with("PATH of /opt/app/bin/prog"), "{greet}");
        let expect_helper = if with_path_file {
            "/etc/ld-musl-x86_64.path"
        } else {
            "system dir"
        };
        assert_eq!(reason_of(&c, "libhelper.so"), expect_helper);
        let loader = c.objects.iter().find(|o| o.is_interpreter).unwrap();
        assert_eq!(loader.real_path, Path::new("/lib/ld-musl-x86_64.so.1"));
        assert!(!c
            .objects
            .iter()
            .any(|o| o.name == "libc.so" && !o.is_interpreter));
    }
}

/// The highest `x86-64-vN` that the glibc loader at `loader` inside `root` lists as
/// "supported" (glibc's `ld.so --help`), 1 when it lists none.
fn loader_hwcaps_level(root: &Path, loader: &str) -> u8 {
    let out = Command::new("chroot")
        .arg(root)
        .args([loader, "--help"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let levels: Vec<u8> = text
        .lines()
        .filter(|l| l.contains("(supported"))
        .filter_map(|l| l.trim().strip_prefix("x86-64-v"))
        .filter_map(|l| l.split_whitespace().next()?.parse().ok())
        .collect();
    assert!(
        text.contains("glibc-hwcaps"),
        "{loader} --help does not list glibc-hwcaps subdirectories:\n{text}"
    );
    levels.into_iter().max().unwrap_or(1)
}

/// glibc: an i386 library of the same name sits earlier in the search path and is skipped;
/// a dependency of the library is found through the executable's inherited RPATH, but not
/// through a RUNPATH (which is not inherited) — both as the real loader does it.
#[test]
fn glibc_skips_wrong_class_and_inherits_rpath_only() {
    if !testkit::require_root("chroot")
        || !testkit::require_tool("busybox")
        || !testkit::require_tool("gcc")
        || !testkit::require_tool("i686-linux-gnu-gcc")
    {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let root = t.path();
    let src = root.join("src");
    glibc_root(root);
    write(&src.join("deep.c"), "int deep(void) { return 1; }\n");
    write(
        &src.join("wc.c"),
        "int deep(void);\nint wc(void) { return deep(); }\n",
    );
    write(&src.join("wc32.c"), "int wc(void) { return 2; }\n");
    write(
        &src.join("main.c"),
        "int wc(void);\nint hw(void);\nint main(void) { return wc() + hw() - 2; }\n",
    );
    write(&src.join("hw.c"), "int hw(void) { return 1; }\n");
    let s = |p: PathBuf| p.to_str().unwrap().to_string();
    for d in ["opt/w32", "opt/w64", "opt/deep", "opt/bin"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    shared_lib(
        "gcc",
        "libdeep.so",
        &root.join("opt/deep/libdeep.so"),
        &src.join("deep.c"),
        &[],
    );
    shared_lib(
        "gcc",
        "libwc.so",
        &root.join("opt/w64/libwc.so"),
        &src.join("wc.c"),
        &[&format!("-L{}", s(root.join("opt/deep"))), "-ldeep"],
    );
    shared_lib(
        "i686-linux-gnu-gcc",
        "libwc.so",
        &root.join("opt/w32/libwc.so"),
        &src.join("wc32.c"),
        &["-nostdlib"],
    );
    // glibc-hwcaps: the loader takes the copy of the highest level this CPU supports; the
    // closure does too at the running CPU's level, and takes v2 at its default level whatever
    // the CPU.
    for d in [
        "opt/w64",
        "opt/w64/glibc-hwcaps/x86-64-v2",
        "opt/w64/glibc-hwcaps/x86-64-v3",
        "opt/w64/glibc-hwcaps/x86-64-v4",
    ] {
        std::fs::create_dir_all(root.join(d)).unwrap();
        shared_lib(
            "gcc",
            "libhw.so",
            &root.join(d).join("libhw.so"),
            &src.join("hw.c"),
            &[],
        );
    }
    // Our reading of the CPU is the loader's.
    let level = elf::running_x86_64_level();
    assert_eq!(
        level,
        loader_hwcaps_level(root, "/lib64/ld-linux-x86-64.so.2"),
        "running_x86_64_level() disagrees with the loader's --help"
    );
    let w32 = elf::scan_file(&root.join("opt/w32/libwc.so"))
        .unwrap()
        .unwrap();
    assert!(!w32.class64 && w32.machine == object::elf::EM_386.0);
    for (prog, dtags) in [
        ("prog-rpath", "-Wl,--disable-new-dtags"),
        ("prog-runpath", "-Wl,--enable-new-dtags"),
        ("prog-nodeflib", "-Wl,-z,nodefaultlib,--disable-new-dtags"),
    ] {
        cc(
            "gcc",
            &[
                "-o",
                &s(root.join("opt/bin").join(prog)),
                &s(src.join("main.c")),
                &format!("-L{}", s(root.join("opt/w64"))),
                "-lwc",
                "-lhw",
                &format!("-Wl,-rpath-link,{}", s(root.join("opt/deep"))),
                "-Wl,-rpath,/opt/w32:/opt/w64:/opt/deep",
                dtags,
            ],
        );
        let file = format!("/opt/bin/{prog}");
        let want = loader_list(root, "/lib64/ld-linux-x86-64.so.2", &file);
        let (c, got, got_missing) = ours(root, &file);
        assert_eq!((got, got_missing.clone()), want, "{prog}\n{c:#?}");
        let wc = c.objects.iter().find(|o| o.name == "libwc.so").unwrap();
        assert_eq!(wc.real_path, Path::new("/opt/w64/libwc.so"));
        let hw = c.objects.iter().find(|o| o.name == "libhw.so").unwrap();
        let expected_hw = match level {
            0 | 1 => PathBuf::from("/opt/w64/libhw.so"),
            l => PathBuf::from(format!(
                "/opt/w64/glibc-hwcaps/x86-64-v{}/libhw.so",
                l.min(4)
            )),
        };
        assert_eq!(hw.real_path, expected_hw, "running CPU level {level}");
        // The default (images for any host) takes v2 on every CPU.
        let (c2, _, _) = ours_with(root, &file, &ClosureOptions::default());
        let hw2 = c2.objects.iter().find(|o| o.name == "libhw.so").unwrap();
        assert_eq!(
            hw2.real_path,
            Path::new("/opt/w64/glibc-hwcaps/x86-64-v2/libhw.so")
        );
        if prog == "prog-nodeflib" {
            // The executable may not use the system dirs: its libc.so.6 is not found (and the
            // name stays unresolved for the whole process), as with the real loader.
            assert!(c.objects[0].info.nodeflib);
            assert!(got_missing.contains("libc.so.6"), "{got_missing:?}");
            continue;
        }
        if prog == "prog-rpath" {
            assert_eq!(wc.reason.to_string(), "RPATH of /opt/bin/prog-rpath");
            assert_eq!(reason_of(&c, "libdeep.so"), "RPATH of /opt/bin/prog-rpath");
            assert!(got_missing.is_empty());
        } else {
            assert_eq!(wc.reason.to_string(), "RUNPATH of /opt/bin/prog-runpath");
            assert_eq!(got_missing, BTreeSet::from(["libdeep.so".to_string()]));
            assert_eq!(c.missing[0].needed_by, Path::new("/opt/w64/libwc.so"));
        }
        assert_eq!(reason_of(&c, "libc.so.6"), "system dir");
    }
}

/// Without a cache the dirs of `/etc/ld.so.conf` (with its include globs) are searched; after
/// `ldconfig -r ROOT` writes a cache from the same configuration, the closure finds the same
/// files through the cache, and the real loader agrees.
#[test]
fn ld_so_conf_then_ldconfig_cache_agree_with_the_loader() {
    if !testkit::require_root("chroot and ldconfig -r")
        || !testkit::require_tool("busybox")
        || !testkit::require_tool("gcc")
    {
        return;
    }
    let ldconfig = ["/sbin/ldconfig", "/usr/sbin/ldconfig"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("ldconfig (libc-bin) is installed");
    let t = tempfile::tempdir().unwrap();
    let root = t.path();
    let src = root.join("src");
    glibc_root(root);
    write(
        &root.join("etc/ld.so.conf"),
        "include /etc/ld.so.conf.d/*.conf\n",
    );
    write(
        &root.join("etc/ld.so.conf.d/app.conf"),
        "# app\n/opt/conf/lib\n",
    );
    write(
        &root.join("etc/ld.so.conf.d/app.conf.disabled"),
        "/opt/off/lib\n",
    );
    write(&src.join("c.c"), "int c(void) { return 0; }\n");
    write(
        &src.join("main.c"),
        "int c(void);\nint main(void) { return c(); }\n",
    );
    let s = |p: PathBuf| p.to_str().unwrap().to_string();
    for d in ["opt/off/lib", "opt/conf/lib", "opt/bin"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    // A decoy in the disabled file's dir: only the glob-matched file counts.
    for d in ["opt/off/lib", "opt/conf/lib"] {
        shared_lib(
            "gcc",
            "libc1.so",
            &root.join(d).join("libc1.so"),
            &src.join("c.c"),
            &[],
        );
    }
    cc(
        "gcc",
        &[
            "-o",
            &s(root.join("opt/bin/prog")),
            &s(src.join("main.c")),
            &format!("-L{}", s(root.join("opt/conf/lib"))),
            "-lc1",
        ],
    );
    let (c, before, missing) = ours(root, "/opt/bin/prog");
    assert!(missing.is_empty(), "{missing:?}");
    assert_eq!(reason_of(&c, "libc1.so"), "ld.so.conf");
    assert!(
        before.contains(Path::new("/opt/conf/lib/libc1.so")),
        "{before:?}"
    );

    testkit::run_ok(Command::new(ldconfig).arg("-r").arg(root));
    assert!(root.join("etc/ld.so.cache").exists());
    let (c, after, missing) = ours(root, "/opt/bin/prog");
    assert!(missing.is_empty(), "{missing:?}");
    assert_eq!(reason_of(&c, "libc1.so"), "ld.so.cache");
    assert_eq!(reason_of(&c, "libc.so.6"), "ld.so.cache");
    assert_eq!(before, after);
    let want = loader_list(root, "/lib64/ld-linux-x86-64.so.2", "/opt/bin/prog");
    assert_eq!((after, missing), want);
}
