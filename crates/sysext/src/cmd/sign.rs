//! `sysext sign IMAGE`: sign the root hash of a verity image that was packed without a key,
//! without repacking it (the offline split of Flatcar's bakery and mkosi's `Verity=defer`).

use std::fs;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;
use fsimage::dissect::{Dissected, Layout};
use fsimage::{ddi, signature, verity};
use safefs::atomic::AtomicOutput;
use sysext_core::cli::Exit;

use crate::bake;

/// Sign the root hash of a DDI (`pack --format ddi`) or a naked verity image (`pack --verity`):
/// with --key and --cert here, or join a signature made elsewhere (--signature FILE.p7s, DER
/// PKCS#7 or CMS as `openssl smime|cms -sign -binary -noattr -outform DER -in ROOTHASH` writes
/// over the root hash in hex without a newline; it is stored in PKCS#7's encoding, as
/// systemd-repart writes it). The hash tree is checked against the data first. A DDI gets its
/// signature partition (the result is the same bytes as signing at pack time); a naked image
/// gets NAME.roothash.p7s beside it.
#[derive(Debug, Args)]
pub struct SignArgs {
    /// The image (NAME.raw).
    pub image: PathBuf,
    /// A detached DER PKCS#7 signature of the root hash made elsewhere.
    #[arg(long, value_name = "FILE.p7s", conflicts_with = "key")]
    pub signature: Option<PathBuf>,
    /// Sign with this PEM private key, or the key in a PKCS#11 token that a `pkcs11:` URI
    /// names (PIN in the URI or SYSEXT_PKCS11_PIN).
    #[arg(long, value_name = "KEY.pem|URI")]
    pub key: Option<PathBuf>,
    /// The signer's PEM certificate (the signature is checked against it, and a DDI names
    /// its fingerprint).
    #[arg(long, value_name = "CERT.pem")]
    pub cert: PathBuf,
    /// Replace an existing signature.
    #[arg(short, long)]
    pub force: bool,
    /// When the image is in a `sysext bake` output whose SHA256SUMS is signed
    /// (SHA256SUMS.gpg): the OpenPGP secret key to sign the updated SHA256SUMS with.
    #[arg(long, env = "SYSEXT_SIGNING_KEY", value_name = "FILE")]
    pub signing_key: Option<PathBuf>,
}

/// The bake output an image is in: its folder, the folder's state and the image's file name
/// (`None` for an image outside a bake output, or one the state does not list).
fn bake_output_of(image: &std::path::Path) -> Result<Option<(PathBuf, bake::State, String)>> {
    let dir = image
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."))
        .to_path_buf();
    let Some(name) = image.file_name().map(|n| n.to_string_lossy().into_owned()) else {
        return Ok(None);
    };
    let state_path = dir.join(bake::STATE_FILE);
    let Ok(bytes) = bake::read_limited(&state_path) else {
        return Ok(None);
    };
    let state: bake::State = serde_json::from_slice(&bytes)
        .with_context(|| format!("reading {}", state_path.display()))?;
    Ok(state
        .images
        .contains_key(&name)
        .then_some((dir, state, name)))
}

pub fn run(args: SignArgs) -> Result<Exit> {
    let shown = args.image.display().to_string();
    // An image of a bake output: its SHA256SUMS (and a signature of it) are written again
    // after signing; a key for SHA256SUMS.gpg is loaded before anything changes.
    let bake_out = bake_output_of(&args.image)?;
    let sums_key = match &bake_out {
        Some((dir, _, _)) if dir.join("SHA256SUMS.gpg").exists() => {
            let Some(k) = &args.signing_key else {
                bail!(
                    "{shown} is in a bake output whose SHA256SUMS is signed ({}): pass \
                     --signing-key with the OpenPGP key that signed it, so that the updated \
                     SHA256SUMS is signed again",
                    dir.join("SHA256SUMS.gpg").display()
                );
            };
            Some(bake::sign::SigningKey::load(k)?)
        }
        _ => None,
    };
    let d = Dissected::open(&args.image).with_context(|| format!("signing {shown}"))?;
    let Some(v) = &d.verity else {
        bail!("{shown} has no dm-verity hash tree to sign; pack it with --format ddi or --verity");
    };
    if v.signature.is_some() && !args.force {
        bail!("{shown} is signed already; pass --force to replace its signature");
    }
    // Only a root hash that matches the data is worth a signature.
    v.verify(&d, 0)
        .with_context(|| format!("{shown}: the dm-verity check failed; not signing it"))?;
    let root = v.root_hash.clone();
    let (p7s, cert) = match (&args.signature, &args.key) {
        (Some(p), None) => {
            use std::io::Read;
            let mut b = Vec::new();
            safefs::tree::open_input(p)
                .and_then(|f| f.take(signature::MAX_SIGNATURE + 1).read_to_end(&mut b))
                .with_context(|| format!("reading the signature {}", p.display()))?;
            if b.len() as u64 > signature::MAX_SIGNATURE {
                bail!(
                    "{} is larger than {} bytes; not a root hash signature",
                    p.display(),
                    signature::MAX_SIGNATURE
                );
            }
            let cert = signature::load_cert_file(&args.cert)?;
            // CMS's encoding of the same signature becomes PKCS#7's, as signing here makes it.
            (signature::canonical(&b), cert)
        }
        (None, Some(k)) => {
            let s = signature::Signer::load(k, &args.cert)?;
            (s.p7s(&root)?, s.cert().clone())
        }
        _ => bail!("give --signature FILE.p7s or --key KEY.pem (with --cert CERT.pem)"),
    };
    if signature::verify(&p7s, &root, std::slice::from_ref(&cert))?.is_none() {
        bail!(
            "the signature does not verify with {} over the root hash {root} of {shown}: made with another key, or over another root hash",
            args.cert.display()
        );
    }
    match v.layout {
        Layout::Naked => {
            let path = verity::side_path(&args.image, ".roothash.p7s");
            let out = AtomicOutput::file(&path, args.force)?;
            fs::write(out.path(), &p7s)
                .with_context(|| format!("writing {}", out.path().display()))?;
            out.commit()?;
            eprintln!("{shown}: root hash {root} signed: {}", path.display());
        }
        Layout::Ddi => {
            rewrite_ddi(&args, &d, &root, &p7s, &cert)?;
            eprintln!("{shown}: root hash {root} signed: signature partition written");
            if let Some((dir, mut state, name)) = bake_out {
                let sha = bake::build::file_sha256(&args.image)?;
                let bytes = fs::metadata(&args.image)?.len();
                if let Some(e) = state.images.get_mut(&name) {
                    e.sha256 = sha;
                    e.bytes = bytes;
                }
                let text = serde_json::to_string_pretty(&state)? + "\n";
                bake::write_if_changed(&dir.join(bake::STATE_FILE), &text)?;
                bake::write_sums(&dir, &state, sums_key.as_ref())?;
                eprintln!(
                    "{}: SHA256SUMS updated{}",
                    dir.display(),
                    if sums_key.is_some() {
                        " and signed"
                    } else {
                        ""
                    }
                );
            }
        }
    }
    Ok(Exit::OK)
}

/// Writes the DDI again with its signature partition: the same data and hash tree, the same
/// disk UUID, laid out as `pack --format ddi --key` lays it out.
fn rewrite_ddi(
    args: &SignArgs,
    d: &Dissected,
    root: &str,
    p7s: &[u8],
    cert: &openssl::x509::X509,
) -> Result<()> {
    use std::os::unix::fs::FileExt;
    let v = d.verity.as_ref().expect("a verity image");
    let f = safefs::tree::open_input(&args.image)?;
    let len = f.metadata()?.len();
    let gpt = ddi::read(&f, len).map_err(anyhow::Error::msg)?;
    let found = ddi::Ddi::find(&gpt).map_err(anyhow::Error::msg)?;
    let mut sb = vec![0u8; 512];
    f.read_exact_at(&mut sb, v.hash_offset)?;
    let sb = verity::Superblock::parse(&sb).map_err(anyhow::Error::msg)?;
    let mut hash = vec![0u8; verity::Shape::new(sb.data_blocks).hash_bytes() as usize];
    f.read_exact_at(&mut hash, v.hash_offset)?;
    let root_hash = verity::parse_root_hash(root).expect("a checked root hash");
    let sig = signature::partition_bytes(
        root,
        &signature::fingerprint(cert)?,
        p7s,
        ddi::SIG_BYTES as usize,
    )?;
    let out = AtomicOutput::file(&args.image, true)?;
    let o = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(out.path())?;
    let contents = ddi::Contents {
        data: &f,
        data_offset: d.data_offset,
        data_bytes: d.data_bytes,
        hash: &hash,
        root_hash,
        sig: Some(&sig),
    };
    ddi::assemble(&o, found.arch, &gpt.disk_uuid, &contents)
        .with_context(|| format!("writing {}", out.path().display()))?;
    out.commit()?;
    Ok(())
}
