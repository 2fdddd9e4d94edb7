//! `sysext install-image DISK EXT... -o OUTPUT`: extensions baked into a Flatcar OS disk
//! image (see [`sysext_core::osimage`]).

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;
use sha2::{Digest, Sha256};
use sysext_core::cli::Exit;
use sysext_core::osimage::{self, ExtensionSpec, InstallOptions, Target};

/// Put extensions into a Flatcar OS disk image (flatcar_production_image.bin, raw or
/// .bz2/.xz/.zst/.gz compressed), as the bakery's bake_flatcar_image.sh does: each image
/// into /opt/extensions/NAME/ on ROOT (or a folder on OEM, seen as /oem/... when booted), the
/// link /etc/extensions/NAME.raw (a confext's /var/lib/confexts/NAME.raw), and NAME.transfer
/// / NAME.conf / NAME.feature from beside the image into /etc/sysupdate.NAME.d/ (a transfer
/// file must keep the images and link where they go). Each image is first checked against
/// the OS image's os-release and /usr; one with errors is refused and nothing is written. The input is only
/// read; OUTPUT is a new disk image. Runs as root (loop devices, mounts in a private mount
/// namespace; nothing stays mounted or attached, also when killed). Vendor images (the
/// Flatcar SDK's image_to_vm.sh) are out of scope: convert the output with the SDK.
#[derive(Debug, Args)]
pub struct InstallImageArgs {
    /// The OS disk image (GPT with Flatcar's USR-A, ROOT and OEM partitions).
    pub disk: PathBuf,
    /// Extensions: NAME:FILE, or FILE (named by its extension-release file); with --from,
    /// NAME (the newest NAME-VERSION-ARCH.raw there) or NAME:FILE.
    #[arg(required = true, value_name = "EXT")]
    pub extensions: Vec<String>,
    /// Take the images (and their NAME.transfer / NAME.conf / NAME.feature) from a bake output
    /// served over HTTP(S), as `sysext bake` writes it and the Flatcar bakery serves it: each
    /// image is verified against that folder's SHA256SUMS. Plain HTTP only to loopback hosts,
    /// or with --insecure.
    #[arg(long, value_name = "URL")]
    pub from: Option<String>,
    /// With --from: SHA256SUMS must carry a good signature (SHA256SUMS.gpg) by a key of this
    /// OpenPGP public keyring (binary: the bake's import-pubring.gpg, or the hosts'
    /// /etc/systemd/import-pubring.gpg), as systemd-sysupdate checks it, and a transfer file
    /// taken must not say Verify=no; otherwise nothing is written.
    #[arg(long, value_name = "FILE", requires = "from")]
    pub keyring: Option<PathBuf>,
    /// Allow plain HTTP and invalid certificates for --from hosts that are not loopback.
    #[arg(long)]
    pub insecure: bool,
    /// The new disk image.
    #[arg(short, long, value_name = "PATH")]
    pub output: PathBuf,
    /// Replace an existing output (atomically).
    #[arg(short, long)]
    pub force: bool,
    /// Where extensions go, each in a folder NAME/ there: root:/DIR or oem:/DIR (default
    /// root:/opt/extensions/); NAME=oem:/DIR for one extension. Repeatable.
    #[arg(long, value_name = "[NAME=]PART:/DIR")]
    pub to: Vec<String>,
    /// The OS image's architecture (systemd's name; default: from the programs in its /usr;
    /// with --from, x86-64 unless given, as the images are chosen by it).
    #[arg(long, value_name = "ARCH")]
    pub arch: Option<String>,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: InstallImageArgs) -> Result<Exit> {
    // Downloads live in a private folder until the install is done.
    let fetched = match &args.from {
        Some(url) => Some(fetch(url, &args)?),
        None => None,
    };
    let ext_args: Vec<String> = match &fetched {
        Some((_, specs)) => specs.clone(),
        None => args.extensions.clone(),
    };
    let mut default_target = Target::default();
    let mut per_name: Vec<(String, Target)> = Vec::new();
    for t in &args.to {
        match t.split_once('=') {
            Some((name, spec)) => per_name.push((name.to_string(), Target::parse(spec)?)),
            None => default_target = Target::parse(t)?,
        }
    }
    let mut extensions: Vec<ExtensionSpec> =
        ext_args.iter().map(|e| ExtensionSpec::parse(e)).collect();
    for (name, target) in per_name {
        // Matched against NAME: or, for a plain FILE, its file name without .raw.
        let hit = extensions.iter_mut().find(|e| match &e.name {
            Some(n) => *n == name,
            None => e
                .file
                .file_name()
                .and_then(|f| f.to_str())
                .is_some_and(|f| f.strip_suffix(".raw").unwrap_or(f) == name),
        });
        match hit {
            Some(e) => e.target = Some(target),
            None => bail!("--to {name}=...: no extension named {name:?} is given (use NAME:FILE)"),
        }
    }
    let opts = InstallOptions {
        disk: args.disk.clone(),
        output: args.output.clone(),
        force: args.force,
        extensions,
        default_target,
        arch: args
            .arch
            .clone()
            .or_else(|| args.from.as_ref().map(|_| "x86-64".to_string())),
    };
    let report = osimage::install(&opts)
        .with_context(|| format!("installing extensions into {}", args.disk.display()))?;
    if args.json {
        super::print_json(&report)?;
    }
    if let Some(c) = report.decompressed {
        eprintln!("read {} through {c}", args.disk.display());
    }
    for i in &report.installed {
        eprintln!(
            "installed   {} as {} -> {}{}",
            i.name,
            i.link.display(),
            i.path.display(),
            if i.sysupdate.is_empty() {
                String::new()
            } else {
                format!(
                    " (+ {})",
                    i.sysupdate
                        .iter()
                        .map(|p| p.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            }
        );
        for w in &i.warnings {
            eprintln!("  warning: {w}");
        }
    }
    eprintln!(
        "wrote {} ({} {})",
        report.output.display(),
        report.os,
        report.architecture
    );
    Ok(Exit::OK)
}

/// Most bytes of a SHA256SUMS file read from a server.
const SUMS_LIMIT: u64 = 4 << 20;
/// Most bytes of a transfer or feature file.
const TEXT_LIMIT: u64 = 64 << 10;
/// Most bytes of one extension image.
const IMAGE_LIMIT: u64 = 16 << 30;

/// Downloads each extension the arguments name from the bake output at `url` into a private
/// folder, each image verified against the folder's SHA256SUMS, and returns that folder with
/// the `NAME:FILE` arguments for the downloaded files.
fn fetch(url: &str, args: &InstallImageArgs) -> Result<(tempfile::TempDir, Vec<String>)> {
    let base =
        gentext::BaseUrl::parse(url).with_context(|| format!("--from {url}: not a URL folder"))?;
    let arch = args.arch.as_deref().unwrap_or("x86-64");
    let dl = ocirootfs::download::Downloader::new(args.insecure)?;
    let sums_url = base.file("SHA256SUMS");
    let sums = dl
        .get_bytes(&sums_url, SUMS_LIMIT)?
        .with_context(|| format!("{sums_url}: not found; is {url} a bake output?"))?;
    let dir = tempfile::Builder::new()
        .prefix(".sysext-install-")
        .tempdir_in(
            args.output
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(std::path::Path::new(".")),
        )
        .context("creating a folder for the downloads")?;
    if let Some(keyring) = &args.keyring {
        verify_sums(&dl, &base, &sums, keyring, dir.path())?;
    }
    let sums = String::from_utf8_lossy(&sums).into_owned();
    let listed: Vec<(&str, &str)> = sums
        .lines()
        .filter_map(|l| {
            let (h, f) = l.split_once("  ").or_else(|| l.split_once(" *"))?;
            (h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit())).then_some((h, f.trim()))
        })
        .collect();
    let mut specs = Vec::new();
    for ext in &args.extensions {
        let (name, file) = match ext.split_once(':') {
            Some((n, f)) => (n.to_string(), f.to_string()),
            None => {
                let f = newest(&listed, ext, arch)
                    .with_context(|| format!("{sums_url} lists no {ext}-VERSION-{arch}.raw"))?;
                (ext.clone(), f.to_string())
            }
        };
        // The name makes file names below (NAME.transfer): one systemd accepts, or nothing.
        sysext_core::release::validate_name(&name)
            .with_context(|| format!("extension name {name:?}"))?;
        if file.contains('/') || file.starts_with('.') || gentext::has_control(&file) {
            bail!("{file:?}: not a file name in {url}");
        }
        let listed_sha = |f: &str| {
            listed
                .iter()
                .find(|(_, g)| *g == f)
                .map(|(h, _)| h.to_ascii_lowercase())
        };
        let want = listed_sha(&file).with_context(|| format!("{file} is not in {sums_url}"))?;
        let dest = dir.path().join(&file);
        let file_url = base.file(&file);
        let (_, got) = dl
            .get_file(&file_url, &dest, IMAGE_LIMIT)?
            .with_context(|| format!("{file_url}: not found"))?;
        if got != want {
            bail!(
                "{file_url} does not match {sums_url} (sha256 {got}, listed {want}); nothing \
                 was written"
            );
        }
        for ext in ["transfer", "conf", "feature"] {
            let f = format!("{name}.{ext}");
            let f_url = base.file(&f);
            if let Some(bytes) = dl.get_bytes(&f_url, TEXT_LIMIT)? {
                // Listed in SHA256SUMS by bakes since 2026-12 (and so signed with it).
                if let Some(want) = listed_sha(&f) {
                    let got = hex::encode(Sha256::digest(&bytes));
                    if got != want {
                        bail!(
                            "{f_url} does not match {sums_url} (sha256 {got}, listed {want}); \
                             nothing was written"
                        );
                    }
                }
                // With a keyring, only a transfer file that makes the hosts verify what they
                // download is taken.
                if args.keyring.is_some() && ext != "feature" && !verifies_updates(&bytes) {
                    bail!(
                        "{f_url}: it says Verify=no in [Transfer], so hosts would take updates \
                         unverified; with --keyring only transfer files of a signed \
                         bake (sysext bake --signing-key) are installed; nothing was written"
                    );
                }
                std::fs::write(dir.path().join(&f), bytes)
                    .with_context(|| format!("writing {f}"))?;
            }
        }
        specs.push(format!("{name}:{}", dest.display()));
    }
    Ok((dir, specs))
}

/// Most bytes of SHA256SUMS.gpg.
const SIG_LIMIT: u64 = 64 << 10;

/// Checks SHA256SUMS (`sums`, as downloaded) against the served SHA256SUMS.gpg with
/// `keyring`; both are kept in `dir` for gpgv.
fn verify_sums(
    dl: &ocirootfs::download::Downloader,
    base: &gentext::BaseUrl,
    sums: &[u8],
    keyring: &std::path::Path,
    dir: &std::path::Path,
) -> Result<()> {
    if !std::fs::metadata(keyring).is_ok_and(|m| m.is_file()) {
        bail!(
            "--keyring {}: not a keyring file (give the bake's import-pubring.gpg or \
             /etc/systemd/import-pubring.gpg)",
            keyring.display()
        );
    }
    let sig_url = base.file("SHA256SUMS.gpg");
    let sig = dl.get_bytes(&sig_url, SIG_LIMIT)?.with_context(|| {
        format!("{sig_url}: not found; --keyring needs a signed bake output (sysext bake --signing-key); nothing was written")
    })?;
    let (sums_path, sig_path) = (dir.join("SHA256SUMS"), dir.join("SHA256SUMS.gpg"));
    std::fs::write(&sums_path, sums).context("writing SHA256SUMS")?;
    std::fs::write(&sig_path, sig).context("writing SHA256SUMS.gpg")?;
    crate::bake::sign::verify_detached(keyring, &sums_path, &sig_path).map_err(|e| {
        anyhow::anyhow!(
            "{sig_url} is not a good signature of SHA256SUMS by a key of {}: {e}; nothing was \
             written",
            keyring.display()
        )
    })
}

/// Whether a transfer file makes systemd-sysupdate verify: `Verify=` in `[Transfer]`, yes
/// unless it says otherwise (systemd's default), the last one counting.
fn verifies_updates(text: &[u8]) -> bool {
    sysext_core::units::values(&String::from_utf8_lossy(text), "Transfer", "Verify")
        .last()
        .is_none_or(|v| sysext_core::units::parse_boolean(v) == Some(true))
}

/// The newest `NAME-VERSION-ARCH.raw` (or `.sysext.raw`, `.confext.raw`) among the listed
/// files (systemd's version order).
fn newest<'a>(listed: &[(&str, &'a str)], name: &str, arch: &str) -> Option<&'a str> {
    let pre = format!("{name}-");
    let posts = [
        format!("-{arch}.sysext.raw"),
        format!("-{arch}.confext.raw"),
        format!("-{arch}.raw"),
    ];
    listed
        .iter()
        .filter_map(|(_, f)| {
            let rest = f.strip_prefix(&pre)?;
            let v = posts.iter().find_map(|p| rest.strip_suffix(p.as_str()))?;
            (!v.is_empty() && !v.contains('/')).then_some((v, *f))
        })
        .max_by(|a, b| sysext_core::merge::version::strverscmp_improved(a.0, b.0))
        .map(|(_, f)| f)
}

#[cfg(test)]
mod tests {
    use super::{newest, verifies_updates};

    #[test]
    fn verify_is_read_from_the_transfer_section() {
        assert!(verifies_updates(
            b"[Source]\nType=url-file\n[Transfer]\nVerify=yes\n"
        ));
        assert!(!verifies_updates(b"[Transfer]\nVerify=false\n"));
        assert!(!verifies_updates(b"[Transfer]\nVerify=yes\nVerify=no\n"));
        assert!(!verifies_updates(
            b"[Source]\nVerify=yes\n[Transfer]\nVerify = 0\n"
        ));
        assert!(
            verifies_updates(b"[Source]\nVerify=no\n[Transfer]\n"),
            "systemd's default"
        );
    }

    #[test]
    fn newest_version_wins() {
        let l = [
            ("h", "tools-1.9-x86-64.raw"),
            ("h", "tools-1.10-x86-64.raw"),
            ("h", "tools-2.0-arm64.raw"),
            ("h", "tool-3-x86-64.raw"),
            ("h", "tools-1.11-x86-64.sysext.raw"),
        ];
        assert_eq!(
            newest(&l, "tools", "x86-64"),
            Some("tools-1.11-x86-64.sysext.raw")
        );
        assert_eq!(newest(&l, "tools", "arm64"), Some("tools-2.0-arm64.raw"));
        assert_eq!(newest(&l, "x", "x86-64"), None);
    }
}
