//! dm-verity images against the real oracles: cryptsetup's `veritysetup verify` (userspace,
//! this kernel has no device-mapper) over the naked form `sysext pack --verity` writes
//! (`NAME.raw`, `NAME.verity`, `NAME.roothash`).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn sysext() -> Command {
    Command::new(env!("CARGO_BIN_EXE_sysext"))
}

/// A small extension tree named `name` with some data worth hashing.
fn tree(dir: &Path, name: &str) -> PathBuf {
    let t = dir.join("tree");
    let rel = t.join("usr/lib/extension-release.d");
    fs::create_dir_all(&rel).unwrap();
    fs::write(rel.join(format!("extension-release.{name}")), "ID=_any\n").unwrap();
    fs::create_dir_all(t.join("usr/share/demo")).unwrap();
    fs::write(
        t.join("usr/share/demo/big.bin"),
        testkit::random_bytes(900 * 1024, 0x5eed),
    )
    .unwrap();
    fs::copy("/bin/true", t.join("usr/share/demo/true")).unwrap();
    t
}

fn verify(dir: &Path, name: &str, root: &str) -> Output {
    Command::new("veritysetup")
        .arg("verify")
        .arg(dir.join(format!("{name}.raw")))
        .arg(dir.join(format!("{name}.verity")))
        .arg(root)
        .output()
        .unwrap()
}

fn flip(path: &Path, at: u64) {
    let mut b = fs::read(path).unwrap();
    b[at as usize] ^= 0x04;
    fs::write(path, b).unwrap();
}

#[test]
fn naked_verity_images_pass_veritysetup_and_a_flipped_bit_fails() {
    if !testkit::require_tool("veritysetup") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let t = tree(d.path(), "vt");
    for fs_name in ["squashfs", "erofs"] {
        let out = d.path().join(fs_name);
        fs::create_dir_all(&out).unwrap();
        let o = testkit::run_ok(
            sysext()
                .arg("pack")
                .arg(&t)
                .arg(out.join("vt.raw"))
                .args(["--fs", fs_name, "--verity", "--json"]),
        );
        let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        let root = fs::read_to_string(out.join("vt.roothash")).unwrap();
        let root = root.trim_end();
        assert_eq!(report["verity"]["root_hash"], root);
        assert_eq!(root.len(), 64);
        let ok = verify(&out, "vt", root);
        assert!(ok.status.success(), "{fs_name}: {ok:?}");
        // The superblock says what veritysetup reads: format 1, sha256, 4 KiB, our salt.
        let dump = testkit::run_ok(
            Command::new("veritysetup")
                .arg("dump")
                .arg(out.join("vt.verity")),
        );
        let dump = String::from_utf8_lossy(&dump.stdout).into_owned();
        assert!(dump.contains("Hash type:       \t1"), "{dump}");
        assert!(dump.contains("sha256"), "{dump}");
        let salt = report["verity"]["salt"].as_str().unwrap();
        assert!(dump.contains(salt), "{dump}");

        // A flipped bit in a data block, then in a hash block, then in the root hash.
        flip(&out.join("vt.raw"), 4096 * 3 + 100);
        assert!(
            !verify(&out, "vt", root).status.success(),
            "{fs_name}: data"
        );
        flip(&out.join("vt.raw"), 4096 * 3 + 100);
        assert!(verify(&out, "vt", root).status.success());
        flip(&out.join("vt.verity"), 4096 + 40);
        assert!(
            !verify(&out, "vt", root).status.success(),
            "{fs_name}: hash"
        );
        flip(&out.join("vt.verity"), 4096 + 40);
        let mut bad = root.as_bytes().to_vec();
        bad[0] = if bad[0] == b'0' { b'1' } else { b'0' };
        assert!(!verify(&out, "vt", std::str::from_utf8(&bad).unwrap())
            .status
            .success());
    }
}

#[test]
fn verity_side_files_are_reproducible_and_follow_the_seed() {
    let d = tempfile::tempdir().unwrap();
    let t = tree(d.path(), "vt");
    let pack = |sub: &str, extra: &[&str]| -> (Vec<u8>, String) {
        let out = d.path().join(sub);
        fs::create_dir_all(&out).unwrap();
        testkit::run_ok(
            sysext()
                .arg("pack")
                .arg(&t)
                .arg(out.join("vt.raw"))
                .arg("--verity")
                .args(extra),
        );
        (
            fs::read(out.join("vt.verity")).unwrap(),
            fs::read_to_string(out.join("vt.roothash")).unwrap(),
        )
    };
    let a = pack("a", &[]);
    let b = pack("b", &[]);
    assert_eq!(a, b, "the same tree twice gives the same hash tree");
    let seed = "0123456789abcdef0123456789abcdef";
    let c = pack("c", &["--seed", seed]);
    assert_ne!(a.1, c.1, "another seed, another salt, another root hash");
    // The salt systemd-repart derives from this seed (read from a repart-made superblock).
    let salt = hex_at(&c.0, 88, 32);
    assert_eq!(
        salt,
        "c65b6ab68edf421fcc0cb48ba60f7f14f5186b4d003d21ab3b334b91de16759c"
    );
    // No partial output when the side file exists already, and nothing without --force.
    let out = d.path().join("a");
    let o = sysext()
        .arg("pack")
        .arg(&t)
        .arg(out.join("vt.raw"))
        .arg("--verity")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--force"));
    // --verity with a folder output is refused before any work.
    let o = sysext()
        .arg("pack")
        .arg(&t)
        .arg(d.path().join("folder"))
        .arg("--verity")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains(".raw"));
    assert!(!d.path().join("folder").exists());
}

fn hex_at(b: &[u8], at: usize, len: usize) -> String {
    b[at..at + len].iter().map(|x| format!("{x:02x}")).collect()
}

/// `sfdisk --json`'s partitions of `image`: (type, name, attrs, uuid).
fn sfdisk(image: &Path) -> (serde_json::Value, Vec<[String; 4]>) {
    let o = testkit::run_ok(Command::new("sfdisk").arg("--json").arg(image));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let parts = v["partitiontable"]["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| ["type", "name", "attrs", "uuid"].map(|k| p[k].as_str().unwrap_or("").to_string()))
        .collect();
    (v["partitiontable"].clone(), parts)
}

/// What trixie's systemd-dissect (257) says of `image` (a path under `work`): whether
/// `--validate` accepts it, and its `--json=short` report without what differs by nature (the
/// loop device, the partition UUIDs, which are the root hash's halves).
fn dissected(work: &Path, image: &str) -> (bool, serde_json::Value) {
    let o = testkit::fixtures::in_repart_root(
        work,
        &format!(
            "systemd-dissect --validate /w/{image} >/dev/null 2>&1 && echo VALID; \
             systemd-dissect --json=short /w/{image} || true"
        ),
    );
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    let valid = text.lines().any(|l| l == "VALID");
    let json = text
        .lines()
        .find(|l| l.starts_with('{'))
        .unwrap_or_else(|| {
            panic!(
                "systemd-dissect --json=short gave no report for {image}: {}",
                String::from_utf8_lossy(&o.stderr)
            )
        });
    let mut v: serde_json::Value = serde_json::from_str(json).unwrap();
    for m in v["mounts"].as_array_mut().unwrap() {
        let m = m.as_object_mut().unwrap();
        m.remove("node");
        m.remove("partition_uuid");
    }
    (valid, v)
}

#[test]
fn ddi_is_laid_out_as_systemd_repart_lays_it_out() {
    if !testkit::require_root("chroot and loop devices for systemd-repart and systemd-dissect")
        || !testkit::require_tool("mmdebstrap")
        || !testkit::require_tool("veritysetup")
        || !testkit::require_tool("sfdisk")
    {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let w = d.path();
    let t = tree(w, "vt");
    let seed = "0123456789abcdef0123456789abcdef";
    keypair(w, "");
    // Both images are named vt.raw, as their release file says.
    fs::create_dir_all(w.join("ours")).unwrap();
    fs::create_dir_all(w.join("ref")).unwrap();
    let o = testkit::run_ok(
        sysext()
            .arg("pack")
            .arg(&t)
            .arg(w.join("ours/vt.raw"))
            .args(["--format", "ddi", "--fs", "erofs", "--seed", seed])
            .arg("--key")
            .arg(w.join("key.pem"))
            .arg("--cert")
            .arg(w.join("cert.pem"))
            .arg("--json"),
    );
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let root = report["verity"]["root_hash"].as_str().unwrap().to_string();
    // repart's reference from the same tree, seed and key.
    let o = testkit::fixtures::in_repart_root(
        w,
        &format!(
            "systemd-repart --make-ddi=sysext --copy-source=/w/tree --seed={seed} \
             --offline=yes --private-key=/w/key.pem --certificate=/w/cert.pem /w/ref/vt.raw"
        ),
    );
    assert!(o.status.success(), "systemd-repart: {o:?}");

    let (ours_t, ours) = sfdisk(&w.join("ours/vt.raw"));
    let (ref_t, refs) = sfdisk(&w.join("ref/vt.raw"));
    // The same disk UUID (derived from the seed), the same types, labels and attributes.
    assert_eq!(ours_t["id"], ref_t["id"]);
    assert_eq!(ours_t["firstlba"], ref_t["firstlba"]);
    assert_eq!(ours.len(), 3);
    assert_eq!(refs.len(), 3);
    for (a, b) in ours.iter().zip(&refs) {
        assert_eq!(a[..3], b[..3]);
    }
    assert_eq!(ours[2][1], "root-x86-64-verity-sig");
    // The partition UUIDs are the root hash's halves, as repart's are.
    let uuids = format!("{}{}", ours[0][3], ours[1][3]).replace('-', "");
    assert_eq!(uuids.to_lowercase(), root);
    let parts = ours_t["partitions"].as_array().unwrap();
    assert_eq!(parts[0]["start"], ref_t["partitions"][0]["start"]);

    // veritysetup accepts our hash partition with our root hash, over our data partition.
    let cut = |i: usize, name: &str| {
        let (start, size) = (
            parts[i]["start"].as_u64().unwrap(),
            parts[i]["size"].as_u64().unwrap(),
        );
        let b = fs::read(w.join("ours/vt.raw")).unwrap();
        fs::write(
            w.join(name),
            &b[start as usize * 512..(start + size) as usize * 512],
        )
        .unwrap();
    };
    cut(0, "data.img");
    cut(1, "hash.img");
    let v = Command::new("veritysetup")
        .arg("verify")
        .arg(w.join("data.img"))
        .arg(w.join("hash.img"))
        .arg(&root)
        .output()
        .unwrap();
    assert!(v.status.success(), "{v:?}");

    // systemd-dissect (257) validates both and reports the same of them: partitions, file
    // system, verity "signed", architecture, the disk UUID, the extension's release file.
    // (No device-mapper here: it reads the file system without dm-verity, and the kernel
    // keyring does not check the signature.)
    let (ours_ok, ours_d) = dissected(w, "ours/vt.raw");
    let (ref_ok, ref_d) = dissected(w, "ref/vt.raw");
    assert!(
        ours_ok && ref_ok,
        "--validate: ours {ours_ok}, repart's {ref_ok}"
    );
    assert_eq!(ours_d["useSystemExtension"], true, "{ours_d}");
    assert_eq!(ours_d["sysextRelease"], serde_json::json!(["ID=_any"]));
    assert_eq!(ours_d["mounts"][0]["verity"], "signed", "{ours_d}");
    assert_eq!(ours_d["mounts"][0]["fstype"], "erofs", "{ours_d}");
    assert_eq!(ref_d, ours_d);

    // openssl accepts our signature partition's signature over our root hash.
    let sig = signature_of(&w.join("ours/vt.raw"), &parts[2]);
    fs::write(w.join("ours.p7s"), &sig).unwrap();
    fs::write(w.join("root.txt"), &root).unwrap();
    let v = Command::new("openssl")
        .args([
            "smime", "-verify", "-binary", "-inform", "DER", "-purpose", "any",
        ])
        .arg("-in")
        .arg(w.join("ours.p7s"))
        .arg("-content")
        .arg(w.join("root.txt"))
        .arg("-CAfile")
        .arg(w.join("cert.pem"))
        .output()
        .unwrap();
    assert!(v.status.success(), "{v:?}");
    // And our reader takes repart's DDI: its signature with the certificate, its hash tree.
    let o = sysext()
        .arg("check")
        .arg(w.join("ref/vt.raw"))
        .arg("--cert")
        .arg(w.join("cert.pem"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("signature verified"), "{err}");
    assert!(err.contains("hash tree verified"), "{err}");
}

/// A self-signed RSA key pair `keySUFFIX.pem`, `certSUFFIX.pem` in `dir`.
fn keypair(dir: &Path, suffix: &str) {
    testkit::run_ok(
        Command::new("openssl")
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=vt",
            ])
            .args(["-days", "30", "-keyout"])
            .arg(dir.join(format!("key{suffix}.pem")))
            .arg("-out")
            .arg(dir.join(format!("cert{suffix}.pem"))),
    );
}

/// The DER signature in the signature partition `part` (from `sfdisk --json`) of `image`.
fn signature_of(image: &Path, part: &serde_json::Value) -> Vec<u8> {
    let b = fs::read(image).unwrap();
    let start = part["start"].as_u64().unwrap() as usize * 512;
    let size = part["size"].as_u64().unwrap() as usize * 512;
    let obj = &b[start..start + size];
    let end = obj.iter().position(|c| *c == 0).unwrap();
    let v: serde_json::Value = serde_json::from_slice(&obj[..end]).unwrap();
    let b64 = v["signature"].as_str().unwrap().to_string();
    let o = testkit::run_ok(
        Command::new("sh")
            .arg("-c")
            .arg("printf %s \"$1\" | base64 -d")
            .arg("sh")
            .arg(b64),
    );
    o.stdout
}

/// `openssl smime -sign` (as repart signs) or `openssl cms -sign` over `root` (hex, no
/// newline): detached, binary, no signed attributes, DER.
fn openssl_sign(dir: &Path, root: &str, out: &Path, tool: &str) {
    fs::write(dir.join("root.txt"), root).unwrap();
    testkit::run_ok(
        Command::new("openssl")
            .args([tool, "-sign", "-binary", "-noattr", "-outform", "DER"])
            .arg("-signer")
            .arg(dir.join("cert.pem"))
            .arg("-inkey")
            .arg(dir.join("key.pem"))
            .arg("-in")
            .arg(dir.join("root.txt"))
            .arg("-out")
            .arg(out),
    );
}

/// The start (bytes) of partition `i` of `image`.
fn part_start(image: &Path, i: usize) -> u64 {
    let (t, _) = sfdisk(image);
    t["partitions"][i]["start"].as_u64().unwrap() * 512
}

#[test]
fn offline_signing_gives_the_bytes_of_signing_at_pack_time_and_check_judges_certificates() {
    if !testkit::require_tool("openssl") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let w = d.path();
    let t = tree(w, "vt");
    keypair(w, "");
    keypair(w, "2");
    let (key, cert, cert2) = (w.join("key.pem"), w.join("cert.pem"), w.join("cert2.pem"));
    for (kind, args) in [
        ("ddi", &["--format", "ddi"][..]),
        ("naked", &["--verity"][..]),
    ] {
        let (at_pack, later) = (w.join(kind).join("a"), w.join(kind).join("b"));
        fs::create_dir_all(&at_pack).unwrap();
        fs::create_dir_all(&later).unwrap();
        testkit::run_ok(
            sysext()
                .arg("pack")
                .arg(&t)
                .arg(at_pack.join("vt.raw"))
                .args(args)
                .arg("--key")
                .arg(&key)
                .arg("--cert")
                .arg(&cert),
        );
        let raw = later.join("vt.raw");
        let o = testkit::run_ok(
            sysext()
                .arg("pack")
                .arg(&t)
                .arg(&raw)
                .args(args)
                .arg("--json"),
        );
        let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        let root = report["verity"]["root_hash"].as_str().unwrap();
        let check = |c: &Path| {
            sysext()
                .arg("check")
                .arg(&raw)
                .arg("--cert")
                .arg(c)
                .output()
                .unwrap()
        };
        // Unsigned: refused where a certificate asks for a signature.
        let o = check(&cert);
        assert_eq!(o.status.code(), Some(2), "{kind}");
        assert!(
            String::from_utf8_lossy(&o.stderr).contains("is not signed"),
            "{kind}"
        );
        // Signed elsewhere with openssl, joined without repacking: the same bytes, whether
        // `openssl cms` signed (its encoding is 4 bytes shorter) or `openssl smime`.
        let sign = |c: &Path| {
            sysext()
                .args(["sign", "-f"])
                .arg(&raw)
                .arg("--signature")
                .arg(w.join("x.p7s"))
                .arg("--cert")
                .arg(c)
                .output()
                .unwrap()
        };
        for tool in ["cms", "smime"] {
            openssl_sign(w, root, &w.join("x.p7s"), tool);
            // A signature checked against another certificate is not joined.
            assert_eq!(sign(&cert2).status.code(), Some(2), "{kind} {tool}");
            let o = sign(&cert);
            assert!(o.status.success(), "{kind} {tool}: {o:?}");
            assert_eq!(
                fs::read(&raw).unwrap(),
                fs::read(at_pack.join("vt.raw")).unwrap(),
                "{kind} {tool}"
            );
            if kind == "naked" {
                let p7s = fs::read(later.join("vt.roothash.p7s")).unwrap();
                assert_eq!(p7s, fs::read(at_pack.join("vt.roothash.p7s")).unwrap());
                if tool == "smime" {
                    assert_eq!(p7s, fs::read(w.join("x.p7s")).unwrap());
                }
            }
        }
        let o = check(&cert);
        assert!(matches!(o.status.code(), Some(0 | 1)), "{kind}: {o:?}");
        assert!(
            String::from_utf8_lossy(&o.stderr).contains("signature verified"),
            "{kind}"
        );
        let o = check(&cert2);
        assert_eq!(o.status.code(), Some(2), "{kind}");
        assert!(
            String::from_utf8_lossy(&o.stderr).contains("wrong certificate"),
            "{kind}"
        );
        // A flipped bit in the signature: refused.
        if kind == "naked" {
            flip(&later.join("vt.roothash.p7s"), 1000);
        } else {
            // Near the end of the signature's base64 (its RSA signature value; 'A' and 'E',
            // 'a' and 'e' are base64 digits alike).
            let start = part_start(&raw, 2);
            let b = fs::read(&raw).unwrap();
            let end = b[start as usize..].iter().position(|c| *c == 0).unwrap() as u64;
            flip(&raw, start + end - 30);
        }
        let o = check(&cert);
        assert_eq!(o.status.code(), Some(2), "{kind}: {o:?}");
    }
}

/// A key in a PKCS#11 token (SoftHSM, reached through p11-kit by OpenSSL's pkcs11 engine)
/// signs as the same key in a PEM file does: the same DDI, byte for byte; a wrong PIN or an
/// object the token does not hold is an error naming the URI (without its PIN) and leaves
/// nothing.
#[test]
fn a_key_in_a_pkcs11_token_signs_as_its_pem_file() {
    if !testkit::require_tool("openssl") || !testkit::require_tool("softhsm2-util") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let w = d.path();
    let t = tree(w, "vt");
    keypair(w, "");
    fs::create_dir(w.join("tokens")).unwrap();
    let conf = w.join("softhsm2.conf");
    fs::write(
        &conf,
        format!("directories.tokendir = {}\n", w.join("tokens").display()),
    )
    .unwrap();
    let hsm = |args: &[&str]| {
        testkit::run_ok(
            Command::new("softhsm2-util")
                .env("SOFTHSM2_CONF", &conf)
                .args(args),
        );
    };
    hsm(&[
        "--init-token",
        "--free",
        "--label",
        "vt",
        "--pin",
        "1234",
        "--so-pin",
        "5678",
    ]);
    testkit::run_ok(
        Command::new("openssl")
            .args(["pkcs8", "-topk8", "-nocrypt", "-in"])
            .arg(w.join("key.pem"))
            .arg("-out")
            .arg(w.join("key8.pem")),
    );
    let key8 = w.join("key8.pem");
    hsm(&[
        "--import",
        key8.to_str().unwrap(),
        "--token",
        "vt",
        "--label",
        "roothash",
        "--id",
        "01",
        "--pin",
        "1234",
    ]);
    let pack = |out: &str, key: &str, pin: &str| {
        let o = w.join(out);
        fs::create_dir_all(&o).unwrap();
        let r = sysext()
            .env("SOFTHSM2_CONF", &conf)
            .env("SYSEXT_PKCS11_PIN", pin)
            .arg("pack")
            .arg(&t)
            .arg(o.join("vt.raw"))
            .args(["--format", "ddi", "--key", key, "--cert"])
            .arg(w.join("cert.pem"))
            .output()
            .unwrap();
        (r, o.join("vt.raw"))
    };
    let (o, pem) = pack("pem", w.join("key.pem").to_str().unwrap(), "");
    assert!(o.status.success(), "{o:?}");
    let uri = "pkcs11:token=vt;object=roothash;type=private";
    let (o, token) = pack("token", uri, "1234");
    assert!(o.status.success(), "{o:?}");
    assert_eq!(fs::read(&token).unwrap(), fs::read(&pem).unwrap());
    // The PIN in the URI works as well, and is not shown.
    let (o, _) = pack("uri-pin", &format!("{uri};pin-value=1234"), "");
    assert!(o.status.success(), "{o:?}");
    // The PIN in the URI is not shown when the key does not belong to the certificate.
    keypair(w, "2");
    let o = sysext()
        .env("SOFTHSM2_CONF", &conf)
        .arg("pack")
        .arg(&t)
        .arg(w.join("other.raw"))
        .args([
            "--format",
            "ddi",
            "--key",
            &format!("{uri};pin-value=1234"),
            "--cert",
        ])
        .arg(w.join("cert2.pem"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("does not belong to the certificate"), "{err}");
    assert!(!err.contains("1234"), "the PIN is shown: {err}");
    for (out, key, pin) in [
        ("wrong-pin", uri, "0000"),
        (
            "no-object",
            "pkcs11:token=vt;object=nope;type=private",
            "1234",
        ),
        (
            "wrong-pin-in-uri",
            "pkcs11:token=vt;object=roothash;pin-value=9999",
            "",
        ),
    ] {
        let (o, raw) = pack(out, key, pin);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{out}: {err}");
        assert!(err.contains("pkcs11:token=vt"), "{out}: {err}");
        assert!(!err.contains("9999"), "{out}: the PIN is shown: {err}");
        assert!(!raw.exists(), "{out}");
        assert_eq!(fs::read_dir(w.join(out)).unwrap().count(), 0, "{out}");
    }
}

#[test]
fn run_verifies_a_ddi_and_a_naked_image_and_refuses_a_changed_one() {
    if !testkit::require_root("sysext run: mount namespaces and loop devices")
        || !testkit::require_tool("busybox")
    {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let t = tree(d.path(), "vt");
    let bb = t.join("usr/libexec/vt/busybox");
    fs::create_dir_all(bb.parent().unwrap()).unwrap();
    fs::copy(testkit::which("busybox").unwrap(), &bb).unwrap();
    keypair(d.path(), "");
    let (key, cert) = (d.path().join("key.pem"), d.path().join("cert.pem"));
    let signed = [
        "--format",
        "ddi",
        "--key",
        key.to_str().unwrap(),
        "--cert",
        cert.to_str().unwrap(),
    ];
    let before = fs::read_to_string("/proc/self/mountinfo").unwrap();
    for (sub, args) in [
        ("ddi-signed", &signed[..]),
        ("ddi", &["--format", "ddi", "--fs", "erofs"][..]),
        ("ddi-squashfs", &["--format", "ddi"][..]),
        ("naked", &["--verity"][..]),
    ] {
        let out = d.path().join(sub);
        fs::create_dir_all(&out).unwrap();
        let raw = out.join("vt.raw");
        testkit::run_ok(sysext().arg("pack").arg(&t).arg(&raw).args(args));
        let run = || {
            sysext()
                .arg("run")
                .arg(&raw)
                .args(["--", "/usr/libexec/vt/busybox", "echo", "from-the-image"])
                .output()
                .unwrap()
        };
        let o = run();
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        assert!(o.status.success(), "{sub}: {err}");
        assert_eq!(String::from_utf8_lossy(&o.stdout), "from-the-image\n");
        assert!(err.contains("verified in userspace"), "{sub}: {err}");

        // A flipped bit in the file system: refused before anything is mounted or run.
        let start = |i: usize| {
            let j = testkit::run_ok(Command::new("sfdisk").arg("--json").arg(&raw));
            let v: serde_json::Value = serde_json::from_slice(&j.stdout).unwrap();
            v["partitiontable"]["partitions"][i]["start"]
                .as_u64()
                .unwrap()
                * 512
        };
        let at = if sub == "naked" {
            8192 + 5
        } else {
            start(0) + 8192 + 5
        };
        flip(&raw, at);
        let o = run();
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        assert_eq!(o.status.code(), Some(2), "{sub}: {err}");
        assert!(err.contains("dm-verity check failed"), "{sub}: {err}");
        assert!(err.contains("data block 2"), "{sub}: {err}");
        assert!(o.stdout.is_empty());
        // `check` refuses it the same way.
        let o = sysext().arg("check").arg(&raw).output().unwrap();
        assert_eq!(o.status.code(), Some(2), "{sub}");
        assert!(String::from_utf8_lossy(&o.stderr).contains("dm-verity check failed"));
        flip(&raw, at);
        // A changed hash tree is refused too.
        let (hash_file, hash_at) = if sub == "naked" {
            (out.join("vt.verity"), 4096 + 3)
        } else {
            (raw.clone(), start(1) + 4096 + 3)
        };
        flip(&hash_file, hash_at);
        let o = run();
        assert_eq!(o.status.code(), Some(2), "{sub}");
        assert!(String::from_utf8_lossy(&o.stderr).contains("dm-verity check failed"));
        flip(&hash_file, hash_at);
        assert!(run().status.success(), "{sub}: whole again");
    }
    assert_eq!(fs::read_to_string("/proc/self/mountinfo").unwrap(), before);
    assert!(testkit::loop_devices_on(d.path()).is_empty());
}

/// CRC-32 (IEEE), as GPT uses it, to forge headers that pass their checksums.
fn crc32(b: &[u8]) -> u32 {
    let mut c = !0u32;
    for &x in b {
        c ^= x as u32;
        for _ in 0..8 {
            c = if c & 1 != 0 {
                (c >> 1) ^ 0xedb8_8320
            } else {
                c >> 1
            };
        }
    }
    !c
}

/// Re-seals the primary GPT of `b` after an edit: the entries' and the header's checksums.
fn reseal(b: &mut [u8]) {
    let n = u32::from_le_bytes(b[592..596].try_into().unwrap()).min(128) as usize;
    let e = crc32(&b[1024..1024 + n * 128]);
    b[600..604].copy_from_slice(&e.to_le_bytes());
    b[528..532].fill(0);
    let h = crc32(&b[512..512 + 92]);
    b[528..532].copy_from_slice(&h.to_le_bytes());
}

#[test]
fn hostile_disk_images_are_refused_with_a_clear_error() {
    let d = tempfile::tempdir().unwrap();
    let t = tree(d.path(), "vt");
    let good = d.path().join("good.raw");
    testkit::run_ok(
        sysext()
            .arg("pack")
            .arg(&t)
            .arg(&good)
            .args(["--name", "vt", "--format", "ddi"]),
    );
    let orig = fs::read(&good).unwrap();
    let (table, _) = sfdisk(&good);
    let hash_at = table["partitions"][1]["start"].as_u64().unwrap() as usize * 512;
    // (name, edit, what the error says)
    type Edit = fn(&mut Vec<u8>, usize);
    let cases: &[(&str, Edit, &str)] = &[
        (
            "many-entries",
            |b, _| {
                b[592..596].copy_from_slice(&100_000u32.to_le_bytes());
                reseal(b);
            },
            "100000 entries",
        ),
        (
            "beyond-the-end",
            |b, _| {
                // The data partition's last LBA far past the file.
                b[1024 + 40..1024 + 48].copy_from_slice(&(1u64 << 40).to_le_bytes());
                reseal(b);
            },
            "outside the usable",
        ),
        (
            "bad-checksum",
            |b, _| b[1024 + 60] ^= 1,
            "CRC does not match",
        ),
        (
            "huge-data-blocks",
            |b, h| b[h + 72..h + 80].copy_from_slice(&u64::MAX.to_le_bytes()),
            "data blocks",
        ),
        (
            "salt-too-long",
            |b, h| b[h + 80..h + 82].copy_from_slice(&4000u16.to_le_bytes()),
            "salt",
        ),
        (
            "truncated",
            |b, _| b.truncate(b.len() / 2),
            "outside a disk",
        ),
    ];
    for (name, edit, says) in cases {
        let mut b = orig.clone();
        edit(&mut b, hash_at);
        let p = d.path().join(format!("{name}.raw"));
        fs::write(&p, &b).unwrap();
        for verb in ["check", "inspect"] {
            let o = sysext().arg(verb).arg(&p).output().unwrap();
            let err = String::from_utf8_lossy(&o.stderr);
            if verb == "inspect" && matches!(*name, "huge-data-blocks" | "salt-too-long") {
                // inspect reads no hash tree: the file system is shown.
                assert!(o.status.success(), "{name}: {err}");
                continue;
            }
            assert_eq!(o.status.code(), Some(2), "{verb} {name}: {err}");
            assert!(err.contains(says), "{verb} {name}: {err}");
            assert!(!err.contains("panicked"), "{verb} {name}: {err}");
        }
    }
}

#[test]
fn run_with_cert_requires_a_signature_by_it() {
    if !testkit::require_root("sysext run: mount namespaces and loop devices")
        || !testkit::require_tool("busybox")
    {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let w = d.path();
    let t = tree(w, "vt");
    let bb = t.join("usr/libexec/vt/busybox");
    fs::create_dir_all(bb.parent().unwrap()).unwrap();
    fs::copy(testkit::which("busybox").unwrap(), &bb).unwrap();
    keypair(w, "");
    keypair(w, "2");
    for sub in ["signed", "unsigned"] {
        fs::create_dir_all(w.join(sub)).unwrap();
        let mut pack = sysext();
        pack.arg("pack")
            .arg(&t)
            .arg(w.join(sub).join("vt.raw"))
            .args(["--format", "ddi"]);
        if sub == "signed" {
            pack.arg("--key")
                .arg(w.join("key.pem"))
                .arg("--cert")
                .arg(w.join("cert.pem"));
        }
        testkit::run_ok(&mut pack);
    }
    let before = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let run = |sub: &str, cert: &str| {
        sysext()
            .arg("run")
            .arg("--cert")
            .arg(w.join(cert))
            .arg(w.join(sub).join("vt.raw"))
            .args(["--", "/usr/libexec/vt/busybox", "echo", "ran"])
            .output()
            .unwrap()
    };
    let o = run("signed", "cert.pem");
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "{err}");
    assert_eq!(String::from_utf8_lossy(&o.stdout), "ran\n");
    assert!(err.contains("signature verified"), "{err}");
    // (image, certificate, what the refusal says)
    for (sub, cert, says) in [
        ("signed", "cert2.pem", "wrong certificate"),
        ("unsigned", "cert.pem", "not signed"),
    ] {
        let o = run(sub, cert);
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        assert_eq!(o.status.code(), Some(2), "{sub} {cert}: {err}");
        assert!(err.contains(says), "{sub} {cert}: {err}");
        assert!(o.stdout.is_empty());
    }
    // A folder cannot carry a signature: refused where one is required.
    let o = sysext()
        .arg("run")
        .arg("--cert")
        .arg(w.join("cert.pem"))
        .arg(&t)
        .args(["--", "/usr/libexec/vt/busybox", "echo", "ran"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("not an image file"), "{err}");
    assert!(o.stdout.is_empty());
    assert_eq!(fs::read_to_string("/proc/self/mountinfo").unwrap(), before);
    assert!(testkit::loop_devices_on(w).is_empty());
}

/// `verity = true` in a bake manifest: DDIs signed at bake time with --verity-key/--verity-cert,
/// or left unsigned and signed later with `sysext sign`, which writes the bake output's state
/// and SHA256SUMS again so that the next bake keeps the signed image.
#[test]
fn bake_makes_verity_ddis_signed_now_or_later() {
    if !testkit::require_tool("openssl") || !testkit::require_tool("busybox") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let w = d.path();
    keypair(w, "");
    fs::create_dir_all(w.join("st/bin")).unwrap();
    fs::copy(testkit::which("busybox").unwrap(), w.join("st/bin/hello")).unwrap();
    fs::write(
        w.join("m.toml"),
        "base_url = \"https://example.org/ext\"\narchitectures = [\"x86-64\"]\n\n\
         [[extension]]\nname = \"hello\"\nversion = \"1.0\"\nsource = \"./st\"\n\
         mode = \"static\"\nverity = true\npaths = [\"bin/hello:/usr/bin/\"]\n",
    )
    .unwrap();
    let bake = |out: &str, extra: &[&str]| {
        let o = sysext()
            .current_dir(w)
            .args(["bake", "m.toml", "--out", out, "--json"])
            .args(extra)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        r["entries"][0]["status"].as_str().unwrap().to_string()
    };
    let check = |image: &Path| {
        sysext()
            .arg("check")
            .arg(image)
            .arg("--cert")
            .arg(w.join("cert.pem"))
            .output()
            .unwrap()
    };
    let sums_ok = |dir: &Path| {
        testkit::run_ok(
            Command::new("sha256sum")
                .args(["-c", "SHA256SUMS"])
                .current_dir(dir),
        );
    };
    let img = "hello-1.0-x86-64.raw";

    // Signed at bake time.
    bake(
        "now",
        &["--verity-key", "key.pem", "--verity-cert", "cert.pem"],
    );
    let (table, _) = sfdisk(&w.join("now").join(img));
    assert_eq!(table["partitions"].as_array().unwrap().len(), 3, "{table}");
    // (exit 1: the file name is not the extension's name, as bake names images)
    let signed_ok = |o: Output| {
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        assert!(
            o.status.code() != Some(2) && err.contains("root hash signature verified"),
            "{err}"
        );
    };
    signed_ok(check(&w.join("now").join(img)));
    sums_ok(&w.join("now"));

    // Unsigned (deferred), then signed offline: SHA256SUMS follows, the next bake keeps it.
    bake("later", &[]);
    let later = w.join("later").join(img);
    assert_eq!(
        check(&later).status.code(),
        Some(2),
        "an unsigned DDI passed --cert"
    );
    testkit::run_ok(
        sysext()
            .arg("sign")
            .arg(&later)
            .arg("--key")
            .arg(w.join("key.pem"))
            .arg("--cert")
            .arg(w.join("cert.pem")),
    );
    signed_ok(check(&later));
    sums_ok(&w.join("later"));
    let signed = fs::read(&later).unwrap();
    assert_eq!(bake("later", &[]), "up-to-date");
    assert_eq!(
        fs::read(&later).unwrap(),
        signed,
        "the re-bake replaced the signed image"
    );
    // Signed at bake time and signed later: the same bytes.
    assert_eq!(signed, fs::read(w.join("now").join(img)).unwrap());
}
