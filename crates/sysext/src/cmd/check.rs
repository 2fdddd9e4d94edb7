//! `sysext check IMAGE`: lint an image as systemd-sysext will see it on a host.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use sysext_core::cli::Exit;

use anyhow::{Context, Result};
use clap::Args;
use gentext::escape;
use sysext_core::check::{check_image, Host, Report, Severity};
use sysext_core::inspect::Image;

/// Check an image (NAME.raw or a folder) for what would make systemd-sysext skip it or change
/// the host: release file name and contents, compatibility with the host, usr/lib/os-release,
/// content outside usr/ and opt/, owners, directory modes, risky names, ELF files built for
/// another CPU than the release file's ARCHITECTURE, and dynamic ELF files whose interpreter or
/// libraries are neither in the image nor on the host (the image's usr/ and opt/ over the
/// host's root folder, searched as the loader would; only presence is checked, not symbol
/// versions; skipped with --host-os-release, which gives no host tree), files with a setuid or
/// setgid bit or file capabilities, and (with a host tree) files that would hide the host's own
/// while merged. A confext (an image holding etc/extension-release.d/extension-release.NAME) is
/// checked by systemd-confext's rules instead: CONFEXT_LEVEL and CONFEXT_SCOPE, content only
/// under etc/, no ELF checks. Verdicts follow systemd 257 (the host's ID_LIKE counts).
/// Nothing is extracted: the image is read in place.
/// Exit status: 0 clean, 1 findings, 2 error.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// A NAME.raw image (NAME.sysext.raw / NAME.confext.raw name the image NAME) or an
    /// extension folder.
    pub image: PathBuf,
    /// Check against the OS in this root folder (its etc/os-release, else
    /// usr/lib/os-release, and its libraries) instead of the running host.
    #[arg(long, value_name = "DIR", conflicts_with = "host_os_release")]
    pub root: Option<PathBuf>,
    /// Check compatibility with the host described by this os-release file (the ELF files'
    /// libraries are then not checked: there is no host tree to look in).
    #[arg(long, value_name = "FILE")]
    pub host_os_release: Option<PathBuf>,
    /// The host's architecture in systemd's naming (x86-64, arm64, ...); default: this machine's.
    #[arg(long, value_name = "ARCH")]
    pub host_arch: Option<String>,
    /// Print the report (findings, host, verdict) as JSON.
    #[arg(long)]
    pub json: bool,
    /// Require the image's root hash to be signed by one of these PEM certificates (repeat
    /// for several); default: ROOT/etc/verity.d/*.crt when there are any. A DDI or verity
    /// image's hash tree is always checked against its data.
    #[arg(long, value_name = "CERT.pem")]
    pub cert: Vec<PathBuf>,
}

pub fn run(args: CheckArgs) -> Result<Exit> {
    let arch = args.host_arch.as_deref();
    let host = match (&args.root, &args.host_os_release) {
        (Some(root), _) => Host::from_root(root, arch),
        (None, Some(file)) => Host::from_os_release_file(file, arch),
        (None, None) => Host::from_root(Path::new("/"), arch),
    }
    .context("reading the host to check against")?;
    let path = image_path(&args.image)?;
    let image = Image::open(&path).with_context(|| format!("checking {}", path.display()))?;
    check_signature(&image, &args)?;
    // A verity image is judged only once its hash tree matches its data (exit 2 otherwise).
    if image
        .verify()
        .with_context(|| format!("checking {}", path.display()))?
    {
        let v = image.verity().expect("verified");
        eprintln!(
            "{}: dm-verity hash tree verified in userspace, root hash {} ({})",
            path.display(),
            v.root_hash,
            super::inspect::root_hash_source(v)
        );
    }
    let report =
        check_image(&image, Some(&host)).with_context(|| format!("checking {}", path.display()))?;
    super::write_stdout(|out| print(&report, &path, args.json, out))?;
    Ok(Exit::findings_if(!report.is_clean()))
}

/// A path whose last component names the image (`.` or `dir/..` are made absolute first).
fn image_path(p: &Path) -> Result<PathBuf> {
    match p.file_name() {
        Some(_) => Ok(p.to_path_buf()),
        None => p
            .canonicalize()
            .with_context(|| format!("cannot open image {}", p.display())),
    }
}

fn print(report: &Report, path: &Path, json: bool, out: &mut impl Write) -> io::Result<()> {
    if json {
        serde_json::to_writer_pretty(&mut *out, report)?;
        return writeln!(out);
    }
    for n in &report.notes {
        writeln!(out, "note: {}", escape(n))?;
    }
    if report.is_clean() {
        let host = report
            .host
            .as_ref()
            .map(|h| format!(", merges on {} ({})", h.origin.display(), h.architecture))
            .unwrap_or_default();
        return writeln!(out, "{}: ok{host}", path.display());
    }
    for f in &report.findings {
        let sev = match f.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        match &f.path {
            // Paths and messages quote the image: escaped (the JSON report is not).
            Some(p) => writeln!(
                out,
                "{sev}[{}] {}: {}",
                f.code,
                escape(p),
                escape(&f.message)
            )?,
            None => writeln!(out, "{sev}[{}] {}", f.code, escape(&f.message))?,
        }
    }
    let errors = report
        .findings
        .iter()
        .filter(|f| f.severity == Severity::Error)
        .count();
    writeln!(
        out,
        "{}: {errors} error(s), {} warning(s)",
        path.display(),
        report.findings.len() - errors
    )
}

/// The certificates a signature must verify with: --cert, else ROOT/etc/verity.d/*.crt.
fn certificates(args: &CheckArgs) -> Result<Vec<(PathBuf, openssl::x509::X509)>> {
    let paths = if args.cert.is_empty() {
        fsimage::signature::verity_d(args.root.as_deref().unwrap_or(Path::new("/")))
    } else {
        args.cert.clone()
    };
    paths
        .into_iter()
        .map(|p| {
            let c = fsimage::signature::load_cert_file(&p)?;
            Ok((p, c))
        })
        .collect()
}

/// With certificates (--cert or /etc/verity.d), the image must carry a signature of its root
/// hash by one of them; without, a signature is only mentioned.
fn check_signature(image: &Image, args: &CheckArgs) -> Result<()> {
    use fsimage::dissect::SignatureVerdict;
    let certs = certificates(args)?;
    let shown = image.path().display();
    let Some(v) = image.verity() else {
        if !certs.is_empty() {
            anyhow::bail!(
                "{shown} is not signed (it has no dm-verity hash tree), and a signature is required ({}); pack it with --format ddi --key KEY --cert CERT",
                fsimage::signature::cert_names(&certs)
            );
        }
        return Ok(());
    };
    if certs.is_empty() {
        if let Some(sig) = &v.signature {
            eprintln!(
                "{shown}: root hash signed ({}), not checked: pass --cert CERT.pem or put the certificate in /etc/verity.d",
                sig.from
            );
        }
        return Ok(());
    }
    let x509: Vec<_> = certs.iter().map(|(_, c)| c.clone()).collect();
    match v
        .check_signature(&x509)
        .with_context(|| format!("checking the signature of {shown}"))?
    {
        SignatureVerdict::Verified(i) => {
            eprintln!(
                "{shown}: root hash signature verified with {}",
                certs[i].0.display()
            );
            Ok(())
        }
        SignatureVerdict::WrongCertificate => anyhow::bail!(
            "{shown}: the root hash signature does not verify with {}: wrong certificate (it was signed with another key), or the signature was changed",
            fsimage::signature::cert_names(&certs)
        ),
        SignatureVerdict::Unsigned => anyhow::bail!(
            "{shown} is not signed, and a signature is required ({}); sign it with `sysext sign`",
            fsimage::signature::cert_names(&certs)
        ),
    }
}
