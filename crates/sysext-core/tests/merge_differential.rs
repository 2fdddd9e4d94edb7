//! Differential test of `sysext_core::merge::merge` against the real systemd-sysext 252 (the
//! host's) and systemd-sysext plus systemd-confext 257 (trixie's, in a chroot of the shared
//! `trixie-sysupdate` fixture) on scratch roots: for each scenario both merge a fresh copy of the same root (each in its own
//! mount namespace with a private /run), and the merged trees (paths, types, modes, owners,
//! symlink targets, file contents), the merged and the skipped images (with systemd's
//! messages) and success or failure must be identical.
//!
//! Our side runs in a child process: this test binary re-executes itself to run the ignored
//! `ours_merge_helper` test inside `unshare -m`, so a failure cannot leak mounts.

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use sysext_core::merge::{merge, status, unmerge, MergeOptions, Mutable};
use sysext_core::release::ImageClass;

/// An image: format (`dir`, `sq` for squashfs, `ero` for erofs by mkfs.erofs, `our` for an
/// lz4hc EROFS image by our own writer), the extension directory
/// inside the root, the image name, and the spec lines of its content.
struct Ext {
    format: &'static str,
    dir: &'static str,
    name: &'static str,
    lines: Vec<&'static str>,
}

struct Scenario {
    name: &'static str,
    /// Spec lines applied to the root after the default host (os-release ID=debian
    /// VERSION_ID=12, usr/bin/host-tool, opt/host-file).
    host: Vec<&'static str>,
    exts: Vec<Ext>,
}

fn ext(format: &'static str, dir: &'static str, name: &'static str, lines: &[&'static str]) -> Ext {
    Ext {
        format,
        dir,
        name,
        lines: lines.to_vec(),
    }
}

const VL: &str = "var/lib/extensions";
/// Where systemd-confext finds confexts.
const CL: &str = "var/lib/confexts";

/// Apply spec lines to a tree:
/// `R text` release file for `name`, `C text` confext release file for `name`, `F path=content` (0644), `X path=content` (0755) (`\n`
/// escapes in both), `D path mode`, `L path>target`, `RM path`.
fn apply(tree: &Path, name: &str, lines: &[&str]) {
    for line in lines {
        let (op, rest) = line.split_once(' ').unwrap();
        let mkparent = |p: &Path| fs::create_dir_all(p.parent().unwrap()).unwrap();
        match op {
            "R" => {
                let p = tree.join(format!(
                    "usr/lib/extension-release.d/extension-release.{name}"
                ));
                mkparent(&p);
                fs::write(p, rest.replace("\\n", "\n")).unwrap();
            }
            "C" => {
                let p = tree.join(ImageClass::Confext.release_file(name));
                mkparent(&p);
                fs::write(p, rest.replace("\\n", "\n")).unwrap();
            }
            "F" | "X" => {
                let (path, content) = rest.split_once('=').unwrap();
                let p = tree.join(path);
                mkparent(&p);
                fs::write(&p, content.replace("\\n", "\n")).unwrap();
                let mode = if op == "X" { 0o755 } else { 0o644 };
                fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
            }
            "D" => {
                let (path, mode) = rest.split_once(' ').unwrap();
                let p = tree.join(path);
                fs::create_dir_all(&p).unwrap();
                let mode = u32::from_str_radix(mode, 8).unwrap();
                fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
            }
            "L" => {
                let (path, target) = rest.split_once('>').unwrap();
                let p = tree.join(path);
                mkparent(&p);
                std::os::unix::fs::symlink(target, p).unwrap();
            }
            "A" => {
                // A path name=value: set an extended attribute.
                let (path, kv) = rest.split_once(' ').unwrap();
                let (k, v) = kv.split_once('=').unwrap();
                rustix::fs::lsetxattr(
                    tree.join(path),
                    k,
                    v.as_bytes(),
                    rustix::fs::XattrFlags::empty(),
                )
                .unwrap();
            }
            "RM" => {
                let p = tree.join(rest);
                if p.is_dir() {
                    fs::remove_dir_all(p).unwrap();
                } else {
                    fs::remove_file(p).unwrap();
                }
            }
            other => panic!("bad spec op {other}"),
        }
    }
}

fn build_root(root: &Path, sc: &Scenario, stage: &Path) {
    apply(
        root,
        "",
        &[
            "F usr/lib/os-release=ID=debian\nVERSION_ID=12\n",
            "F etc/os-release=ID=debian\nVERSION_ID=12\n",
            "X usr/bin/host-tool=host",
            "F usr/share/doc/host=doc",
            "F opt/host-file=host",
            "D var/lib/extensions 0755",
        ],
    );
    apply(root, "", &sc.host);
    for (i, e) in sc.exts.iter().enumerate() {
        let tree = stage.join(format!("{i}-{}", e.name));
        fs::create_dir_all(&tree).unwrap();
        fs::set_permissions(&tree, fs::Permissions::from_mode(0o755)).unwrap();
        apply(&tree, e.name, &e.lines);
        let dir = root.join(e.dir);
        fs::create_dir_all(&dir).unwrap();
        match e.format {
            "dir" => {
                let out = dir.join(e.name);
                testkit::run_ok(Command::new("cp").arg("-a").arg(&tree).arg(&out));
            }
            "sq" => {
                // Fixed times: both copies of a root hold byte-identical images.
                testkit::mksquashfs(
                    &tree,
                    &dir.join(format!("{}.raw", e.name)),
                    &["-mkfs-time", "0", "-all-time", "0"],
                );
            }
            "ero" => {
                testkit::run_ok(
                    Command::new("mkfs.erofs")
                        .arg("--all-root")
                        .arg("-T0")
                        .arg(dir.join(format!("{}.raw", e.name)))
                        .arg(&tree),
                );
            }
            "our" => {
                let mut o = sysext_core::pack::PackOptions::default();
                o.fs = sysext_core::pack::Fs::Erofs;
                o.erofs_compression = sysext_core::pack::ErofsCompression::Lz4hc;
                o.name = Some(e.name.to_string());
                o.mtime = Some(0);
                if tree.join("etc/extension-release.d").is_dir() {
                    o.class = ImageClass::Confext;
                }
                sysext_core::pack::pack(&tree, &dir.join(format!("{}.raw", e.name)), &o)
                    .unwrap_or_else(|err| panic!("packing {}: {err}", e.name));
            }
            other => panic!("bad format {other}"),
        }
    }
}

fn scenarios() -> Vec<Scenario> {
    let any = "R ID=_any";
    vec![
        Scenario {
            name: "one folder",
            host: vec![],
            exts: vec![ext("dir", VL, "tools", &[any, "X usr/bin/tool=t"])],
        },
        Scenario {
            name: "three colliding raws",
            host: vec![],
            exts: vec![
                ext("sq", VL, "a", &[any, "X usr/bin/tool=a", "F usr/share/a=a"]),
                ext(
                    "sq",
                    VL,
                    "c",
                    &[any, "X usr/bin/tool=c", "X usr/bin/host-tool=c"],
                ),
                ext(
                    "sq",
                    VL,
                    "b",
                    &[any, "X usr/bin/tool=b", "F usr/share/doc/host=b"],
                ),
            ],
        },
        Scenario {
            name: "UAPI version order",
            host: vec![],
            exts: vec![
                ext("dir", VL, "tool-10", &[any, "F usr/share/v=10"]),
                ext("dir", VL, "tool-2", &[any, "F usr/share/v=2"]),
                ext("sq", VL, "tool-1.5", &[any, "F usr/share/v=1.5"]),
                ext("dir", VL, "tool-10~rc1", &[any, "F usr/share/w=rc"]),
            ],
        },
        Scenario {
            name: "incompatible ID",
            host: vec![],
            exts: vec![
                ext("dir", VL, "good", &[any, "F usr/share/g=g"]),
                ext(
                    "sq",
                    VL,
                    "fedora",
                    &["R ID=fedora\\nVERSION_ID=39", "F usr/share/f=f"],
                ),
            ],
        },
        Scenario {
            name: "VERSION_ID match and mismatch",
            host: vec![],
            exts: vec![
                ext(
                    "dir",
                    VL,
                    "v12",
                    &["R ID=debian\\nVERSION_ID=12", "F usr/share/v12=x"],
                ),
                ext(
                    "dir",
                    VL,
                    "v11",
                    &["R ID=debian\\nVERSION_ID=11", "F usr/share/v11=x"],
                ),
                ext("dir", VL, "noversion", &["R ID=debian", "F usr/share/nv=x"]),
            ],
        },
        Scenario {
            name: "SYSEXT_LEVEL",
            host: vec![
                "F etc/os-release=ID=flatcar\nVERSION_ID=3815.2.0\nSYSEXT_LEVEL=1.0\n",
                "F usr/lib/os-release=ID=flatcar\nVERSION_ID=3815.2.0\nSYSEXT_LEVEL=1.0\n",
            ],
            exts: vec![
                ext(
                    "dir",
                    VL,
                    "lvl",
                    &[
                        "R ID=flatcar\\nSYSEXT_LEVEL=1.0\\nVERSION_ID=1",
                        "F usr/share/l=1",
                    ],
                ),
                ext(
                    "dir",
                    VL,
                    "lvl2",
                    &["R ID=flatcar\\nSYSEXT_LEVEL=2.0", "F usr/share/l2=2"],
                ),
                ext(
                    "sq",
                    VL,
                    "ver",
                    &["R ID=flatcar\\nVERSION_ID=3815.2.0", "F usr/share/v=v"],
                ),
            ],
        },
        Scenario {
            name: "_any with wrong architecture",
            host: vec![],
            exts: vec![
                ext(
                    "sq",
                    VL,
                    "arm",
                    &["R ID=_any\\nARCHITECTURE=arm64", "X usr/bin/tool=arm"],
                ),
                ext(
                    "sq",
                    VL,
                    "x86",
                    &["R ID=_any\\nARCHITECTURE=x86-64", "X usr/bin/tool=x86"],
                ),
                ext(
                    "dir",
                    VL,
                    "wrongname",
                    &["R ID=_any\\nARCHITECTURE=x86_64", "F usr/share/w=w"],
                ),
            ],
        },
        Scenario {
            name: "masked by an empty directory",
            host: vec!["D etc/extensions/tools 0755"],
            exts: vec![
                ext("sq", VL, "tools", &[any, "X usr/bin/tool=t"]),
                ext("dir", VL, "other", &[any, "F usr/share/o=o"]),
            ],
        },
        Scenario {
            name: "earlier directory wins a name",
            host: vec![],
            exts: vec![
                ext("sq", VL, "tools", &[any, "X usr/bin/tool=var"]),
                ext(
                    "dir",
                    "run/extensions",
                    "tools",
                    &[any, "X usr/bin/tool=run"],
                ),
                ext(
                    "sq",
                    "usr/lib/extensions",
                    "vendor",
                    &[any, "F usr/share/vendor=v"],
                ),
                ext(
                    "sq",
                    "usr/local/lib/extensions",
                    "local",
                    &[any, "F usr/share/local=l"],
                ),
            ],
        },
        Scenario {
            name: "folder plus raw plus erofs plus our lz4hc erofs",
            host: vec![],
            exts: vec![
                ext(
                    "dir",
                    VL,
                    "folder",
                    &[any, "X usr/bin/tool=folder", "F usr/share/f=f"],
                ),
                ext("sq", VL, "raw", &[any, "X usr/bin/tool=raw"]),
                ext(
                    "ero",
                    VL,
                    "zero",
                    &[any, "X usr/bin/tool=erofs", "F opt/zero/z=z"],
                ),
                ext(
                    "our",
                    VL,
                    "ours",
                    &[any, "F usr/share/ours/o=ours", "F opt/ours/o=o"],
                ),
            ],
        },
        Scenario {
            name: "a folder image inside /usr overlaps the host layer",
            host: vec![],
            exts: vec![ext(
                "dir",
                "usr/lib/extensions",
                "vendor",
                &[any, "F usr/share/vendor=v"],
            )],
        },
        Scenario {
            name: "release file under another name, accepted through the strict=0 xattr",
            host: vec![],
            exts: vec![
                ext("dir", VL, "renamed", &[
                    "F usr/lib/extension-release.d/extension-release.orig=ID=_any",
                    "A usr/lib/extension-release.d/extension-release.orig user.extension-release.strict=0",
                    "F usr/share/r=r",
                ]),
                ext("sq", VL, "renamed-raw", &[
                    "F usr/lib/extension-release.d/extension-release.orig2=ID=_any",
                    "A usr/lib/extension-release.d/extension-release.orig2 user.extension-release.strict=false",
                    "F usr/share/rr=rr",
                ]),
                ext("dir", VL, "ambiguous", &[
                    "F usr/lib/extension-release.d/extension-release.one=ID=_any",
                    "A usr/lib/extension-release.d/extension-release.one user.extension-release.strict=0",
                    "F usr/lib/extension-release.d/extension-release.two=ID=_any",
                    "A usr/lib/extension-release.d/extension-release.two user.extension-release.strict=0",
                    "F usr/share/amb=a",
                ]),
                ext("dir", VL, "strict", &[
                    "F usr/lib/extension-release.d/extension-release.orig=ID=_any",
                    "A usr/lib/extension-release.d/extension-release.orig user.extension-release.strict=1",
                    "F usr/share/s=s",
                ]),
            ],
        },
        Scenario {
            name: "host os-release only in usr/lib",
            host: vec!["RM etc/os-release", "F usr/lib/os-release=ID=debian\nVERSION_ID=13\n"],
            exts: vec![
                ext("dir", VL, "thirteen", &["R ID=debian\nVERSION_ID=13", "F usr/share/t=13"]),
                ext("dir", VL, "twelve", &["R ID=debian\nVERSION_ID=12", "F usr/share/t=12"]),
            ],
        },
        Scenario {
            name: "etc/os-release wins over usr/lib/os-release",
            host: vec!["F etc/os-release=ID=fedora\nVERSION_ID=40\n"],
            exts: vec![
                ext("dir", VL, "fedora", &["R ID=fedora\nVERSION_ID=40", "F usr/share/f=f"]),
                ext("dir", VL, "debian", &["R ID=debian\nVERSION_ID=12", "F usr/share/d=d"]),
            ],
        },
        Scenario {
            name: "empty /opt on the host",
            host: vec!["RM opt/host-file"],
            exts: vec![ext("sq", VL, "optional", &[any, "X opt/optional/bin/o=o"])],
        },
        Scenario {
            name: "no /opt on the host",
            host: vec!["RM opt"],
            exts: vec![ext("dir", VL, "optional", &[any, "F opt/optional/o=o"])],
        },
        Scenario {
            name: "scope",
            host: vec![],
            exts: vec![
                ext(
                    "dir",
                    VL,
                    "portable",
                    &["R ID=_any\\nSYSEXT_SCOPE=portable", "F usr/share/p=p"],
                ),
                ext(
                    "dir",
                    VL,
                    "both",
                    &["R ID=_any\\nSYSEXT_SCOPE=initrd system", "F usr/share/b=b"],
                ),
            ],
        },
        Scenario {
            name: "missing and empty metadata in folders",
            host: vec![],
            exts: vec![
                ext("dir", VL, "norelease", &["F usr/share/n=n"]),
                ext("dir", VL, "empty", &["R ", "F usr/share/e=e"]),
                ext("dir", VL, "noid", &["R VERSION_ID=12", "F usr/share/i=i"]),
                ext("dir", VL, "ok", &[any, "F usr/share/ok=ok"]),
            ],
        },
        Scenario {
            name: "raw without metadata aborts",
            host: vec![],
            exts: vec![
                ext("sq", VL, "bare", &["X usr/bin/bare=b"]),
                ext("dir", VL, "ok", &[any, "F usr/share/ok=ok"]),
            ],
        },
        Scenario {
            name: "image with usr/lib/os-release aborts",
            host: vec![],
            exts: vec![ext("sq", VL, "os", &[any, "F usr/lib/os-release=ID=x"])],
        },
        Scenario {
            name: "nothing compatible",
            host: vec![],
            exts: vec![ext("sq", VL, "fedora", &["R ID=fedora", "F usr/share/f=f"])],
        },
        Scenario {
            name: "no extensions at all",
            host: vec![],
            exts: vec![],
        },
        Scenario {
            name: "directory modes and a directory over the host's symlink",
            host: vec!["L usr/sbin>bin", "D usr/share/games 0750"],
            exts: vec![ext(
                "sq",
                VL,
                "modes",
                &[
                    any,
                    "X usr/sbin/tool=t",
                    "D usr/share/games 0700",
                    "D usr/share/private 0700",
                    "L usr/bin/link>tool",
                ],
            )],
        },
        Scenario {
            name: "symlinks in an extension directory are ignored with a root",
            host: vec![
                "L var/lib/extensions/linked.raw>/store/linked.raw",
                "L var/lib/extensions/rel.raw>../../../store/linked.raw",
            ],
            exts: vec![
                ext("sq", "store", "linked", &[any, "F usr/share/l=l"]),
                ext("dir", VL, "plain", &[any, "F usr/share/p=p"]),
            ],
        },
    ]
}

#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    ok: bool,
    using: Vec<String>,
    skipped: BTreeSet<String>,
    dump: String,
}

const DUMP: &str = r#"cd "$ROOT" && for h in usr opt etc; do [ -e "$h" ] || continue; mountpoint -q "$h" && echo "MOUNTED $h"; find "$h" -printf '%p %y %m %U:%G %l\n'; find "$h" -type f ! -path '*/.systemd-sysext/dev' ! -path '*/.systemd-confext/dev' -exec sha256sum {} +; done | LC_ALL=C sort"#;

/// Runs `merge_cmd` in a new mount namespace cut off from the host's peer groups (private),
/// then made shared inside, so that systemd-sysext's child namespace can propagate its merge
/// back to ours but nothing reaches the host even where the host's `/` is shared (systemd
/// hosts, where `unshare --propagation shared` alone would mount over the host's /run).
fn in_namespace(root: &Path, out: &Path, merge_cmd: &str) -> Outcome {
    let script = format!(
        "mount --make-rshared / && mount -t tmpfs tmpfs /run || exit 99; {merge_cmd}; echo $? > \"$OUT/rc\"; ({DUMP}) > \"$OUT/dump\""
    );
    let o = testkit::mount_namespace_command(&script)
        .env("ROOT", root)
        .env("OUT", out)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "namespace script failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let rc: i32 = fs::read_to_string(out.join("rc"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    Outcome {
        ok: rc == 0,
        using: Vec::new(),
        skipped: BTreeSet::new(),
        dump: fs::read_to_string(out.join("dump")).unwrap(),
    }
}

/// Which systemd merges.
enum Systemd {
    /// The host's systemd-sysext (252 on Debian 12; it has no systemd-confext).
    Host,
    /// systemd-sysext, then systemd-confext, 257 in the trixie chroot at this path.
    Trixie(PathBuf),
}

fn systemd(root: &Path, out: &Path, sd: &Systemd) -> Outcome {
    let cmd = match sd {
        Systemd::Host => {
            "SYSTEMD_LOG_LEVEL=debug systemd-sysext --root=\"$ROOT\" merge 2> \"$OUT/log\"".to_string()
        }
        Systemd::Trixie(chroot) => format!(
            "{} || exit 98; for t in systemd-sysext systemd-confext; do \
             SYSTEMD_LOG_LEVEL=debug chroot '{r}' $t --root=/target merge 2>> \"$OUT/log\" || rc=1; done; \
             (exit ${{rc:-0}})",
            testkit::fixtures::chroot_prelude(chroot, root),
            r = chroot.display()
        ),
    };
    let mut o = in_namespace(root, out, &cmd);
    let log = fs::read_to_string(out.join("log")).unwrap();
    let trixie = matches!(sd, Systemd::Trixie(_));
    for line in log.lines() {
        if let Some(names) = line
            .strip_prefix("Using extensions '")
            .and_then(|l| l.strip_suffix("'."))
        {
            // 257 names a .raw image by its file name in this line; the image name is without.
            o.using.extend(names.split("', '").map(|n| {
                let n = if trixie {
                    n.trim_end_matches(".raw")
                } else {
                    n
                };
                n.to_string()
            }));
        } else if line.starts_with("Extension '") && !line.contains(" matches ") {
            o.skipped.insert(if trixie {
                skipped_name(line)
            } else {
                line.to_string()
            });
        }
        // systemd 252 exits 0 when its merging child fails (it returns the child's exit status
        // 1 as "did something"); the child's failure is in the debug log. Status 123 means
        // "nothing to merge", not a failure.
        let failed = line
            .strip_prefix("(sd-sysext) failed with exit status ")
            .or_else(|| line.strip_prefix("(sd-merge) failed with exit status "));
        if let Some(st) = failed {
            if st.trim_end_matches('.') != "123" {
                o.ok = false;
            }
        }
    }
    o
}

/// The image name of a skip message ("Extension 'NAME' ..."): our messages are 252's, and
/// 257 words some of them differently, so against 257 only the skipped names are compared.
fn skipped_name(message: &str) -> String {
    let rest = message.strip_prefix("Extension '").unwrap_or(message);
    rest.split('\'').next().unwrap_or(rest).to_string()
}

fn ours(root: &Path, out: &Path, names_only: bool) -> Outcome {
    let exe = std::env::current_exe().unwrap();
    let cmd = format!(
        "SYSEXT_MERGE_HELPER_ROOT=\"$ROOT\" SYSEXT_MERGE_HELPER_OUT=\"$OUT/log\" '{}' --ignored --exact ours_merge_helper --test-threads=1 -q > \"$OUT/helper\" 2>&1; grep -q '^OK' \"$OUT/log\"",
        exe.display()
    );
    let mut o = in_namespace(root, out, &cmd);
    let log = fs::read_to_string(out.join("log")).unwrap_or_default();
    for line in log.lines() {
        if let Some(names) = line.strip_prefix("USING ") {
            o.using.extend(names.split(' ').map(String::from));
        } else if let Some(m) = line.strip_prefix("SKIP ") {
            o.skipped.insert(if names_only {
                skipped_name(m)
            } else {
                m.to_string()
            });
        }
    }
    o
}

/// Runs only when re-executed by `differential_against_systemd_sysext`, inside a namespace.
#[test]
#[ignore = "helper, run by differential_against_systemd_sysext inside a mount namespace"]
fn ours_merge_helper() {
    let (Some(root), Some(out)) = (
        std::env::var_os("SYSEXT_MERGE_HELPER_ROOT"),
        std::env::var_os("SYSEXT_MERGE_HELPER_OUT"),
    ) else {
        panic!("run by differential_against_systemd_sysext only");
    };
    let mut opts = MergeOptions::default();
    opts.root = root.into();
    opts.discover = true;
    if let Ok(m) = std::env::var("SYSEXT_MERGE_HELPER_MUTABLE") {
        opts.mutable = m.parse().unwrap();
    }
    let action = std::env::var("SYSEXT_MERGE_HELPER_ACTION").unwrap_or_default();
    if action == "unmerge" || action == "status" {
        let text = if action == "unmerge" {
            match unmerge(&opts.root, &opts.hierarchies) {
                Ok(done) => format!("OK\nUNMERGED {}\n", done.len()),
                Err(e) => format!("ERROR {e}\n"),
            }
        } else {
            match status(&opts.root, &opts.hierarchies) {
                Ok(st) => {
                    let mut t = String::from("OK\n");
                    for h in st {
                        let e = h.extensions.map(|e| e.join(" "));
                        t += &format!(
                            "STATUS {} {}\n",
                            h.hierarchy,
                            e.as_deref().unwrap_or("none")
                        );
                    }
                    t
                }
                Err(e) => format!("ERROR {e}\n"),
            }
        };
        fs::write(out, text).unwrap();
        return;
    }
    let text = match merge(&opts) {
        Ok(r) => {
            let mut t = String::from("OK\n");
            // One line per class, sysexts first, as systemd-sysext then systemd-confext say.
            for class in [ImageClass::Sysext, ImageClass::Confext] {
                let names: Vec<&str> = r
                    .extensions
                    .iter()
                    .filter(|l| l.class == class)
                    .map(|l| l.name.as_str())
                    .collect();
                if !names.is_empty() {
                    t += &format!("USING {}\n", names.join(" "));
                }
            }
            for s in &r.skipped {
                t += &format!("SKIP {}\n", s.message);
            }
            t
        }
        Err(e) => format!("ERROR {e}\n"),
    };
    fs::write(out, text).unwrap();
}

/// Runs every scenario through `sd` and ours; panics listing the scenarios that differ.
fn compare(all: &[Scenario], sd: &Systemd, what: &str) {
    let mut failures = Vec::new();
    for sc in all {
        let t = tempfile::tempdir().unwrap();
        let (r1, r2) = (t.path().join("sd/root"), t.path().join("us/root"));
        let (o1, o2) = (t.path().join("sd/out"), t.path().join("us/out"));
        for d in [&r1, &r2, &o1, &o2] {
            fs::create_dir_all(d).unwrap();
        }
        build_root(&r1, sc, &t.path().join("sd/stage"));
        build_root(&r2, sc, &t.path().join("us/stage"));
        let want = systemd(&r1, &o1, sd);
        let got = ours(&r2, &o2, matches!(sd, Systemd::Trixie(_)));
        // Our own EROFS images must be among what systemd merged, not skipped by both.
        for e in sc.exts.iter().filter(|e| e.format == "our") {
            assert!(
                want.using.iter().any(|u| u.contains(e.name)),
                "{what} did not merge our EROFS image {} in '{}': {want:#?}",
                e.name,
                sc.name
            );
        }
        // Whatever fails, both must agree on it; after a failure nothing is merged, and the
        // messages logged before it may differ in number.
        let same = if want.ok {
            want == got
        } else {
            !got.ok && want.dump == got.dump
        };
        if same {
            eprintln!(
                "match: {} (ok: {}, merged: {:?}, skipped: {:?})",
                sc.name, want.ok, want.using, want.skipped
            );
        } else {
            let log = fs::read_to_string(o2.join("log")).unwrap_or_default();
            failures.push(format!(
                "scenario '{}':\n {what}: {want:#?}\n ours:    {got:#?}\n our log: {log}",
                sc.name
            ));
        }
    }
    eprintln!(
        "{} of {} scenarios identical to {what}",
        all.len() - failures.len(),
        all.len()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn differential_against_systemd_sysext() {
    if !testkit::require_root("the differential merge test")
        || !testkit::require_tool("systemd-sysext")
        || !testkit::require_tool("mksquashfs")
        || !testkit::require_tool("mkfs.erofs")
    {
        return;
    }
    let all = scenarios();
    assert!(all.len() >= 15);
    compare(&all, &Systemd::Host, "systemd-sysext 252");
}

#[test]
fn differential_against_systemd_257_sysext_and_confext() {
    if !testkit::require_root("the differential merge test against systemd 257")
        || !testkit::require_tool("mmdebstrap")
        || !testkit::require_tool("mksquashfs")
        || !testkit::require_tool("mkfs.erofs")
    {
        return;
    }
    let chroot = testkit::fixtures::trixie_systemd_root();
    let mut all: Vec<Scenario> = scenarios()
        .into_iter()
        .filter(|s| !DIFFER_257.contains(&s.name))
        .collect();
    all.extend(confext_scenarios());
    compare(
        &all,
        &Systemd::Trixie(chroot),
        "systemd-sysext and systemd-confext 257",
    );
}

/// After a merge: try to write into the merged /usr and /etc, and list what lies in the
/// mutable folder, into `$OUT/after`.
const AFTER: &str = r#"{ for h in usr etc; do echo w 2>/dev/null > "$ROOT/$h/written-$h" && echo "WROTE $h"; done; cd "$ROOT" && find var/lib/extensions.mutable -printf '%p %y %m %U:%G %l\n' 2>/dev/null | LC_ALL=C sort; } > "$OUT/after""#;

/// `--mutable=` in every mode gives the same merged trees, the same writability and the
/// same mutable folder as systemd-sysext and systemd-confext 257.
#[test]
fn mutable_modes_match_systemd_257() {
    if !testkit::require_root("the --mutable differential test against systemd 257")
        || !testkit::require_tool("mmdebstrap")
        || !testkit::require_tool("mksquashfs")
    {
        return;
    }
    let chroot = testkit::fixtures::trixie_systemd_root();
    let kept = [
        "F var/lib/extensions.mutable/usr/share/kept=k",
        "F var/lib/extensions.mutable/etc/kept=k",
    ];
    let cases: Vec<(&str, Vec<&'static str>)> = vec![
        ("no", vec![]),
        ("yes", vec![]),
        ("auto", vec![]),
        ("auto", kept.to_vec()),
        ("import", kept.to_vec()),
        ("ephemeral", kept.to_vec()),
        ("ephemeral-import", kept.to_vec()),
    ];
    let mut failures = Vec::new();
    for (mode, host) in cases {
        mode.parse::<Mutable>().unwrap();
        let sc = Scenario {
            name: "mutable",
            host,
            exts: vec![
                ext("sq", VL, "e", &["R ID=_any", "F usr/share/e=e"]),
                ext("dir", CL, "c", &["C ID=_any", "F etc/c=c"]),
            ],
        };
        let t = tempfile::tempdir().unwrap();
        let (r1, r2) = (t.path().join("sd/root"), t.path().join("us/root"));
        let (o1, o2) = (t.path().join("sd/out"), t.path().join("us/out"));
        for d in [&r1, &r2, &o1, &o2] {
            fs::create_dir_all(d).unwrap();
        }
        build_root(&r1, &sc, &t.path().join("sd/stage"));
        build_root(&r2, &sc, &t.path().join("us/stage"));
        let sd_cmd = format!(
            "{} || exit 98; for t in systemd-sysext systemd-confext; do \
             chroot '{r}' $t --root=/target --mutable={mode} merge 2>> \"$OUT/log\" || rc=1; done; {AFTER}; (exit ${{rc:-0}})",
            testkit::fixtures::chroot_prelude(&chroot, &r1),
            r = chroot.display()
        );
        let want = in_namespace(&r1, &o1, &sd_cmd);
        let exe = std::env::current_exe().unwrap();
        let our_cmd = format!(
            "SYSEXT_MERGE_HELPER_MUTABLE={mode} SYSEXT_MERGE_HELPER_ROOT=\"$ROOT\" SYSEXT_MERGE_HELPER_OUT=\"$OUT/log\" '{}' --ignored --exact ours_merge_helper --test-threads=1 -q > \"$OUT/helper\" 2>&1; grep -q '^OK' \"$OUT/log\"; rc=$?; {AFTER}; (exit $rc)",
            exe.display()
        );
        let got = in_namespace(&r2, &o2, &our_cmd);
        let (a1, a2) = (
            fs::read_to_string(o1.join("after")).unwrap(),
            fs::read_to_string(o2.join("after")).unwrap(),
        );
        if want.ok != got.ok || want.dump != got.dump || a1 != a2 {
            let (l1, l2): (BTreeSet<&str>, BTreeSet<&str>) =
                (want.dump.lines().collect(), got.dump.lines().collect());
            failures.push(format!(
                "--mutable={mode}: ok {} / {}; only systemd 257's merged tree has {:?}, only ours {:?}\n systemd's writes and mutable folder:\n{a1}\n ours:\n{a2}\n our log: {}",
                want.ok,
                got.ok,
                l1.difference(&l2).collect::<Vec<_>>(),
                l2.difference(&l1).collect::<Vec<_>>(),
                fs::read_to_string(o2.join("log")).unwrap_or_default()
            ));
        } else {
            eprintln!(
                "match: --mutable={mode} (writes: {:?})",
                a1.lines()
                    .filter(|l| l.starts_with("WROTE"))
                    .collect::<Vec<_>>()
            );
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// Sysext scenarios where 257 differs from 252, whose behaviour our merge keeps (see README):
/// 257 no longer searches `/usr/local/lib/extensions` and `/usr/lib/extensions`, and it skips
/// (instead of refusing to merge anything) a `.raw` image holding `usr/lib/os-release`.
const DIFFER_257: &[&str] = &[
    "earlier directory wins a name",
    "a folder image inside /usr overlaps the host layer",
    "image with usr/lib/os-release aborts",
];

/// Confexts over /etc, alone and beside sysexts (systemd-confext exists from 254 on).
fn confext_scenarios() -> Vec<Scenario> {
    let any = "C ID=_any";
    let host = vec!["F etc/host.conf=host", "F etc/shared.conf=host"];
    vec![
        Scenario {
            name: "confext folder, squashfs, erofs and our lz4hc erofs over /etc",
            host: host.clone(),
            exts: vec![
                ext(
                    "dir",
                    CL,
                    "c1",
                    &[any, "F etc/c1.conf=1", "F etc/shared.conf=c1"],
                ),
                ext(
                    "sq",
                    CL,
                    "c2",
                    &[
                        any,
                        "F etc/shared.conf=c2",
                        "D etc/c2.d 0755",
                        "F etc/c2.d/x=x",
                    ],
                ),
                ext("ero", CL, "c3", &[any, "F etc/c3.conf=3"]),
                ext(
                    "our",
                    CL,
                    "c4",
                    &[any, "F etc/c4.conf=4", "F etc/shared.conf=c4"],
                ),
            ],
        },
        Scenario {
            name: "confext compatibility: VERSION_ID, CONFEXT_LEVEL, ID, scope",
            host: host.clone(),
            exts: vec![
                ext(
                    "dir",
                    CL,
                    "ver",
                    &["C ID=debian\nVERSION_ID=12", "F etc/ver=v"],
                ),
                ext(
                    "dir",
                    CL,
                    "lvl",
                    &["C ID=debian\nCONFEXT_LEVEL=1", "F etc/lvl=l"],
                ),
                ext("sq", CL, "fed", &["C ID=fedora", "F etc/fed=f"]),
                ext(
                    "dir",
                    CL,
                    "scoped",
                    &["C ID=_any\nCONFEXT_SCOPE=portable", "F etc/scoped=s"],
                ),
                ext(
                    "dir",
                    CL,
                    "sysscope",
                    &["C ID=_any\nSYSEXT_SCOPE=portable", "F etc/sysscope=s"],
                ),
            ],
        },
        Scenario {
            name: "host CONFEXT_LEVEL",
            host: vec![
                "F etc/os-release=ID=debian\nVERSION_ID=12\nCONFEXT_LEVEL=2\n",
                "F usr/lib/os-release=ID=debian\nVERSION_ID=12\nCONFEXT_LEVEL=2\n",
            ],
            exts: vec![
                ext(
                    "dir",
                    CL,
                    "two",
                    &["C ID=debian\nCONFEXT_LEVEL=2", "F etc/two=2"],
                ),
                ext(
                    "dir",
                    CL,
                    "three",
                    &[
                        "C ID=debian\nCONFEXT_LEVEL=3\nVERSION_ID=12",
                        "F etc/three=3",
                    ],
                ),
            ],
        },
        Scenario {
            name: "sysexts and confexts together",
            host: host.clone(),
            exts: vec![
                ext("sq", VL, "tools", &["R ID=_any", "X usr/bin/tool=t"]),
                ext("dir", CL, "conf", &[any, "F etc/tool.conf=c"]),
                ext("sq", CL, "conf2", &[any, "F etc/tool.conf=c2"]),
            ],
        },
        Scenario {
            name: "a confext folder among sysexts and a sysext folder among confexts are skipped",
            host: host.clone(),
            exts: vec![
                ext("dir", VL, "wrongplace", &[any, "F etc/w=w"]),
                ext("dir", CL, "alsowrong", &["R ID=_any", "F usr/share/a=a"]),
                ext("dir", CL, "right", &[any, "F etc/r=r"]),
            ],
        },
        Scenario {
            name: "a confext raw holding only a sysext release file is skipped",
            host: host.clone(),
            exts: vec![
                ext("sq", CL, "bare", &["R ID=_any", "F etc/b=b"]),
                ext("dir", CL, "good", &[any, "F etc/g=g"]),
            ],
        },
        Scenario {
            name: "a confext raw without any release file aborts",
            host: host.clone(),
            exts: vec![
                ext("sq", CL, "none", &["F etc/n=n"]),
                ext("dir", CL, "good", &[any, "F etc/g=g"]),
            ],
        },
        Scenario {
            name: "confext names in version order, the last wins",
            host,
            exts: vec![
                ext("dir", CL, "conf-10", &[any, "F etc/v=10"]),
                ext("sq", CL, "conf-9", &[any, "F etc/v=9"]),
            ],
        },
    ]
}

/// Our marker files are systemd's: systemd-sysext unmerges what we merged, and we see and
/// unmerge what it merged.
#[test]
fn interoperates_with_systemd_sysext() {
    if !testkit::require_root("the merge interoperability test")
        || !testkit::require_tool("systemd-sysext")
        || !testkit::require_tool("mksquashfs")
    {
        return;
    }
    let sc = Scenario {
        name: "interop",
        host: vec![],
        exts: vec![
            ext(
                "sq",
                VL,
                "a",
                &["R ID=_any", "X usr/bin/tool=a", "F opt/a/x=a"],
            ),
            ext("dir", VL, "b", &["R ID=_any", "X usr/bin/tool=b"]),
        ],
    };
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("root");
    fs::create_dir_all(&root).unwrap();
    build_root(&root, &sc, &t.path().join("stage"));
    let exe = std::env::current_exe().unwrap();
    let helper = |action: &str| {
        format!(
            "SYSEXT_MERGE_HELPER_ACTION={action} SYSEXT_MERGE_HELPER_ROOT=\"$ROOT\" SYSEXT_MERGE_HELPER_OUT=\"$OUT/{action}.log\" '{}' --ignored --exact ours_merge_helper --test-threads=1 -q >/dev/null 2>&1",
            exe.display()
        )
    };
    let script = format!(
        "mount --make-rshared / && mount -t tmpfs tmpfs /run || exit 99
         {merge}
         cat \"$ROOT/usr/bin/tool\" > \"$OUT/tool1\"
         systemd-sysext --root=\"$ROOT\" unmerge 2> \"$OUT/sd-unmerge.log\" || exit 1
         mountpoint -q \"$ROOT/usr\" && exit 2
         mountpoint -q \"$ROOT/opt\" && exit 3
         systemd-sysext --root=\"$ROOT\" merge 2> \"$OUT/sd-merge.log\" || exit 4
         {status}
         {unmerge}
         mountpoint -q \"$ROOT/usr\" && exit 5
         mountpoint -q \"$ROOT/opt\" && exit 6
         cat \"$ROOT/usr/bin/tool\" > \"$OUT/tool2\"
         exit 0",
        merge = helper("merge"),
        status = helper("status"),
        unmerge = helper("unmerge"),
    );
    let out = t.path().join("out");
    fs::create_dir_all(&out).unwrap();
    let o = testkit::mount_namespace_command(&script)
        .env("ROOT", &root)
        .env("OUT", &out)
        .output()
        .unwrap();
    let read = |f: &str| fs::read_to_string(out.join(f)).unwrap_or_default();
    assert!(
        o.status.success(),
        "{o:?}\nmerge: {}\nsystemd unmerge: {}\nsystemd merge: {}\nstatus: {}\nunmerge: {}",
        read("merge.log"),
        read("sd-unmerge.log"),
        read("sd-merge.log"),
        read("status.log"),
        read("unmerge.log")
    );
    assert_eq!(read("tool1"), "b");
    // systemd lists every merged extension in each hierarchy's marker.
    assert_eq!(read("status.log"), "OK\nSTATUS /opt a b\nSTATUS /usr a b\n");
    assert_eq!(read("unmerge.log"), "OK\nUNMERGED 2\n");
    assert_eq!(read("tool2"), "", "the host has no /usr/bin/tool");
}
