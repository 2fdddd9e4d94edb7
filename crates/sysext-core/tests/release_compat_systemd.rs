//! Differential test: `release::check_class_compatibility` must agree with the real
//! systemd-sysext and systemd-confext on whether an extension merges. Our verdicts follow
//! systemd 257: they are compared with trixie's systemd-sysext and systemd-confext 257 (run in
//! a chroot of the shared `trixie-sysupdate` fixture) and with the host's systemd-sysext 252
//! (which has no confext), where the cases marked `differs_252` (the host's `ID_LIKE`, counted
//! from 257 on) must get the other verdict from 252.
//!
//! Each case gets its own scratch root (`usr/lib/os-release`, `etc/os-release`, one directory
//! extension under `var/lib/extensions/probe` (a confext: `var/lib/confexts/probe`) carrying a
//! marker file) and one `systemd-sysext --root=ROOT merge` in a private mount namespace. The
//! extension merged when its marker shows up in the merged `ROOT/usr` (`ROOT/etc`).

use std::path::{Path, PathBuf};

use sysext_core::release::{check_class_compatibility, host_architecture, ImageClass, OsRelease};

const NAME: &str = "probe";

#[derive(Clone)]
struct Case {
    what: String,
    host: String,
    /// `None`: the extension directory has no release file at all.
    ext: Option<String>,
    /// systemd 252 decides the other way (a rule of 257 that 252 lacks).
    differs_252: bool,
}

fn case(what: &str, host: &str, ext: Option<&str>) -> Case {
    Case {
        what: what.to_string(),
        host: host.to_string(),
        ext: ext.map(str::to_string),
        differs_252: false,
    }
}

fn cases(arch: &str) -> Vec<Case> {
    const DEB: &str = "ID=debian\nVERSION_ID=12\n";
    const DEB_ROLLING: &str = "ID=debian\n";
    const FLATCAR: &str = "ID=flatcar\nVERSION_ID=4081.2.0\nSYSEXT_LEVEL=1.0\n";
    const FLATCAR_NOLEVEL: &str = "ID=flatcar\nVERSION_ID=4081.2.0\n";
    const FLATCAR_LEVEL_ONLY: &str = "ID=flatcar\nSYSEXT_LEVEL=1.0\n";
    let own_arch_any = format!("ID=_any\nARCHITECTURE={arch}\n");
    let own_arch_deb = format!("ID=debian\nVERSION_ID=12\nARCHITECTURE={arch}\n");
    let wrong_arch = if arch == "arm64" { "x86-64" } else { "arm64" };
    let wrong_arch_any = format!("ID=_any\nARCHITECTURE={wrong_arch}\n");
    let wrong_arch_deb = format!("ID=debian\nVERSION_ID=12\nARCHITECTURE={wrong_arch}\n");
    let mut v = vec![
        case(
            "same ID and VERSION_ID",
            DEB,
            Some("ID=debian\nVERSION_ID=12\n"),
        ),
        case(
            "VERSION_ID mismatch",
            DEB,
            Some("ID=debian\nVERSION_ID=11\n"),
        ),
        case("extension without VERSION_ID", DEB, Some("ID=debian\n")),
        case("empty VERSION_ID", DEB, Some("ID=debian\nVERSION_ID=\n")),
        case("ID mismatch", DEB, Some("ID=fedora\nVERSION_ID=12\n")),
        case("ID=_any", DEB, Some("ID=_any\n")),
        case(
            "ID=_any ignores VERSION_ID",
            DEB,
            Some("ID=_any\nVERSION_ID=1\n"),
        ),
        case("no ID", DEB, Some("VERSION_ID=12\n")),
        case("empty ID", DEB, Some("ID=\nVERSION_ID=12\n")),
        case("missing release file", DEB, None),
        case("empty release file", DEB, Some("")),
        case("only comments", DEB, Some("# ID=_any\n; x\n")),
        case("only invalid lines", DEB, Some("ID _any\n")),
        case(
            "ARCHITECTURE=_any",
            DEB,
            Some("ID=_any\nARCHITECTURE=_any\n"),
        ),
        case("empty ARCHITECTURE", DEB, Some("ID=_any\nARCHITECTURE=\n")),
        case(
            "ARCHITECTURE uname spelling",
            DEB,
            Some("ID=_any\nARCHITECTURE=x86_64\n"),
        ),
        case(
            "SYSEXT_SCOPE=portable",
            DEB,
            Some("ID=_any\nSYSEXT_SCOPE=portable\n"),
        ),
        case(
            "SYSEXT_SCOPE=system",
            DEB,
            Some("ID=_any\nSYSEXT_SCOPE=system\n"),
        ),
        case(
            "SYSEXT_SCOPE quoted list",
            DEB,
            Some("ID=_any\nSYSEXT_SCOPE=\"portable  system\"\n"),
        ),
        case("empty SYSEXT_SCOPE", DEB, Some("ID=_any\nSYSEXT_SCOPE=\n")),
        case(
            "scope checked before ID",
            DEB,
            Some("ID=debian\nVERSION_ID=12\nSYSEXT_SCOPE=initrd\n"),
        ),
        case(
            "rolling host, extension without version",
            DEB_ROLLING,
            Some("ID=debian\n"),
        ),
        case(
            "rolling host, extension with version",
            DEB_ROLLING,
            Some("ID=debian\nVERSION_ID=99\n"),
        ),
        case(
            "rolling host, ID mismatch",
            DEB_ROLLING,
            Some("ID=fedora\n"),
        ),
        case(
            "SYSEXT_LEVEL both equal",
            FLATCAR,
            Some("ID=flatcar\nSYSEXT_LEVEL=1.0\n"),
        ),
        case(
            "SYSEXT_LEVEL both equal, VERSION_ID differs",
            FLATCAR,
            Some("ID=flatcar\nSYSEXT_LEVEL=1.0\nVERSION_ID=1\n"),
        ),
        case(
            "SYSEXT_LEVEL both differ, VERSION_ID equal",
            FLATCAR,
            Some("ID=flatcar\nSYSEXT_LEVEL=2.0\nVERSION_ID=4081.2.0\n"),
        ),
        case(
            "SYSEXT_LEVEL host only, VERSION_ID equal",
            FLATCAR,
            Some("ID=flatcar\nVERSION_ID=4081.2.0\n"),
        ),
        case(
            "SYSEXT_LEVEL host only, VERSION_ID differs",
            FLATCAR,
            Some("ID=flatcar\nVERSION_ID=1\n"),
        ),
        case(
            "SYSEXT_LEVEL host only, no VERSION_ID",
            FLATCAR,
            Some("ID=flatcar\n"),
        ),
        case(
            "SYSEXT_LEVEL extension only",
            FLATCAR_NOLEVEL,
            Some("ID=flatcar\nSYSEXT_LEVEL=1.0\n"),
        ),
        case(
            "host with SYSEXT_LEVEL and no VERSION_ID",
            FLATCAR_LEVEL_ONLY,
            Some("ID=flatcar\n"),
        ),
        case("host without ID", "VERSION_ID=12\n", Some("ID=_any\n")),
        Case {
            differs_252: true,
            ..case(
                "host ID_LIKE matches (257)",
                "ID=ubuntu\nID_LIKE=debian\n",
                Some("ID=debian\n"),
            )
        },
        Case {
            differs_252: true,
            ..case(
                "host ID_LIKE list, same VERSION_ID (257)",
                "ID=ubuntu\nID_LIKE=\"ubuntu-core debian\"\nVERSION_ID=24.04\n",
                Some("ID=debian\nVERSION_ID=24.04\n"),
            )
        },
        case(
            "host ID_LIKE matches, VERSION_ID differs",
            "ID=ubuntu\nID_LIKE=debian\nVERSION_ID=24.04\n",
            Some("ID=debian\nVERSION_ID=12\n"),
        ),
        case(
            "host ID_LIKE word prefix is no match",
            "ID=ubuntu\nID_LIKE=debian\n",
            Some("ID=deb\n"),
        ),
        case(
            "extension ID_LIKE is not used",
            DEB,
            Some("ID=ubuntu\nID_LIKE=debian\nVERSION_ID=12\n"),
        ),
        case(
            "quoted values",
            DEB,
            Some("ID=\"debian\"\nVERSION_ID='12'\n"),
        ),
        case(
            "last duplicate wins",
            DEB,
            Some("ID=fedora\nID=debian\nVERSION_ID=12\n"),
        ),
        case(
            "CRLF and trailing blanks",
            DEB,
            Some("ID=debian  \r\nVERSION_ID=12\t\r\n"),
        ),
        case(
            "backslash escape",
            DEB,
            Some("ID=deb\\ian\nVERSION_ID=1\\2\n"),
        ),
        // Parser fidelity, seen through the verdict.
        case("single-quoted _any", DEB, Some("ID='_any'\n")),
        case("quotes mid-value", DEB, Some("ID=\"_a\"ny\n")),
        case(
            "blanks around key, = and value",
            DEB,
            Some("  ID =  _any  \n"),
        ),
        case("# after a value is no comment", DEB, Some("ID=_any # x\n")),
        case("; comment line", DEB, Some(";ID=_any\nID=fedora\n")),
        case("escaped underscore", DEB, Some(r"ID=\_any")),
        case("line continuation", DEB, Some("ID=_a\\\nny\n")),
        case("key without =", DEB, Some("ID\nVERSION_ID=12\n")),
        case(
            "unknown escape kept in double quotes",
            DEB,
            Some("ID=\"deb\\ian\"\nVERSION_ID=12\n"),
        ),
        case(
            "known escape in double quotes",
            DEB_ROLLING,
            Some("ID=\"deb\\ian\\\"\"\n"),
        ),
    ];
    v.push(case(
        "own ARCHITECTURE with ID=_any",
        DEB,
        Some(&own_arch_any),
    ));
    v.push(case(
        "own ARCHITECTURE with ID match",
        DEB,
        Some(&own_arch_deb),
    ));
    v.push(case(
        "wrong ARCHITECTURE with ID=_any",
        DEB,
        Some(&wrong_arch_any),
    ));
    v.push(case(
        "wrong ARCHITECTURE with ID match",
        DEB,
        Some(&wrong_arch_deb),
    ));
    v
}

/// The confext cases: every sysext case as it is (so `SYSEXT_` keys are seen to be ignored by
/// systemd-confext), and each case with `SYSEXT_` keys again with `CONFEXT_` keys.
fn confext_cases(arch: &str) -> Vec<Case> {
    let all = cases(arch);
    let mut v = all.clone();
    for c in all {
        let uses =
            c.host.contains("SYSEXT_") || c.ext.as_deref().is_some_and(|e| e.contains("SYSEXT_"));
        if uses {
            v.push(Case {
                what: format!("{} (CONFEXT_ keys)", c.what),
                host: c.host.replace("SYSEXT_", "CONFEXT_"),
                ext: c.ext.map(|e| e.replace("SYSEXT_", "CONFEXT_")),
                differs_252: c.differs_252,
            });
        }
    }
    v
}

/// Which systemd judges.
enum Systemd {
    /// The host's systemd-sysext (252 on Debian 12).
    Host,
    /// systemd 257 in the trixie chroot at this path.
    Trixie(PathBuf),
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

/// Runs the real systemd-sysext (or systemd-confext) on a scratch root; true when the
/// extension merged.
fn systemd_merges(dir: &Path, case: &Case, class: ImageClass, sd: &Systemd) -> bool {
    let root = dir.join("root");
    write(&root.join("usr/lib/os-release"), &case.host);
    write(&root.join("etc/os-release"), &case.host);
    let (images, hierarchy) = match class {
        ImageClass::Sysext => ("var/lib/extensions", "usr"),
        ImageClass::Confext => ("var/lib/confexts", "etc"),
    };
    let ext = root.join(images).join(NAME);
    write(&ext.join(hierarchy).join("sysext-probe/marker"), "");
    if let Some(text) = &case.ext {
        write(&ext.join(class.release_file(NAME)), text);
    }
    // A private namespace first (so nothing can propagate back to the host), then shared
    // propagation inside it, which systemd-sysext's own mount handling expects.
    let (prelude, tool_root, seen) = match sd {
        Systemd::Host => (
            "mount -t tmpfs tmpfs /run".to_string(),
            root.display().to_string(),
            root.clone(),
        ),
        Systemd::Trixie(chroot) => (
            testkit::fixtures::chroot_prelude(chroot, &root),
            "/target".to_string(),
            chroot.join("target"),
        ),
    };
    let tool = match sd {
        Systemd::Host => class.tool().to_string(),
        Systemd::Trixie(chroot) => format!("chroot '{}' {}", chroot.display(), class.tool()),
    };
    let marker = format!("{}/{}", class.marker_dir(), class.marker_file());
    let script = format!(
        "mount --make-rshared / && {prelude} && {tool} --root='{tool_root}' merge; \
         if [ -e '{seen}/{hierarchy}/sysext-probe/marker' ]; then echo VERDICT=merged; \
         cat '{seen}/{hierarchy}/{marker}'; else echo VERDICT=skipped; fi",
        seen = seen.display()
    );
    let out = testkit::in_mount_namespace(&script);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if stdout.contains("VERDICT=merged") {
        assert!(
            stdout.lines().any(|l| l == NAME),
            "{}: marker present but {NAME} not listed as merged\n{stdout}{stderr}",
            case.what
        );
        return true;
    }
    // Skipped: only for one of the reasons we model, never because the run broke.
    assert!(
        stdout.contains("VERDICT=skipped")
            && (stderr.contains("No suitable extensions found")
                || stderr.contains("'ID' field not found or empty")),
        "{}: {} neither merged nor skipped the extension\nstdout:\n{stdout}\nstderr:\n{stderr}",
        case.what,
        class.tool()
    );
    false
}

/// Compares every case's verdict; returns (merged, skipped) counts of systemd's side.
fn compare(class: ImageClass, sd: &Systemd, cases: &[Case], arch: &str) -> (usize, usize) {
    let mut mismatches = Vec::new();
    let (mut merged, mut skipped) = (0, 0);
    for (i, case) in cases.iter().enumerate() {
        let dir = tempfile::tempdir().unwrap();
        let verdict = systemd_merges(dir.path(), case, class, sd);
        if verdict {
            merged += 1;
        } else {
            skipped += 1;
        }
        // Ours follows 257; 252 decides the other way on the cases marked so.
        let want = match sd {
            Systemd::Host if case.differs_252 => !verdict,
            _ => verdict,
        };
        let ext = case
            .ext
            .as_deref()
            .map(OsRelease::parse)
            .unwrap_or_default();
        let got = check_class_compatibility(class, &ext, &OsRelease::parse(&case.host), arch);
        if got.is_compatible() != want {
            mismatches.push(format!(
                "case {i} ({}): {} {} it{}, check_class_compatibility said {got:?}",
                case.what,
                class.tool(),
                if verdict { "merged" } else { "skipped" },
                if want != verdict {
                    " (252, which differs from 257 here)"
                } else {
                    ""
                }
            ));
        }
    }
    eprintln!(
        "{class}: {}/{} cases matched ({merged} merged, {skipped} skipped)",
        cases.len() - mismatches.len(),
        cases.len()
    );
    assert!(cases.len() >= 20);
    // Both outcomes must be exercised, or the comparison proves nothing.
    assert!(
        merged >= 8 && skipped >= 8,
        "{merged} merged, {skipped} skipped"
    );
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
    (merged, skipped)
}

#[test]
fn compatibility_matches_systemd_sysext() {
    if !testkit::require_root("the systemd-sysext differential test")
        || !testkit::require_tool("systemd-sysext")
        || !testkit::require_tool("unshare")
    {
        return;
    }
    let arch = host_architecture().expect("host architecture known to systemd");
    let cases = cases(arch);
    assert!(cases.iter().any(|c| c.differs_252));
    compare(ImageClass::Sysext, &Systemd::Host, &cases, arch);
}

#[test]
fn compatibility_matches_systemd_257_sysext_and_confext() {
    if !testkit::require_root("the systemd 257 differential test (chroot, mounts)")
        || !testkit::require_tool("mmdebstrap")
        || !testkit::require_tool("unshare")
    {
        return;
    }
    let chroot = testkit::fixtures::trixie_systemd_root();
    let arch = host_architecture().expect("host architecture known to systemd");
    let sd = Systemd::Trixie(chroot);
    compare(ImageClass::Sysext, &sd, &cases(arch), arch);
    compare(ImageClass::Confext, &sd, &confext_cases(arch), arch);
}
