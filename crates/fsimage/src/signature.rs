//! Signed root hashes, as systemd-repart makes them and systemd checks them: a detached
//! PKCS#7 signature (DER; no signed attributes, binary, the signer's certificate included:
//! what `openssl smime -sign -binary -noattr -outform DER` writes) over the root hash as lowercase
//! hex text without a newline. Beside a naked image it is `NAME.roothash.p7s`; in a DDI it is
//! the signature partition's JSON object `{"rootHash":…,"certificateFingerprint":…,
//! "signature":…}` (compact, in that order, the fingerprint the SHA-256 of the certificate's
//! DER, the signature base64), zero-padded to the partition's 16 KiB.

mod canonical;
pub mod pkcs11;

pub use canonical::canonical;

use openssl::hash::MessageDigest;
use openssl::pkcs7::{Pkcs7, Pkcs7Flags};
use openssl::pkey::{PKey, Private};
use openssl::stack::Stack;
use openssl::x509::store::X509StoreBuilder;
use serde::{Deserialize, Serialize};

/// The most bytes of a signature (a `.p7s` file or the partition's object) read.
pub const MAX_SIGNATURE: u64 = 16 * 1024;

/// Errors of signing and reading signatures.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    #[error("{what}: {reason}")]
    Bad { what: String, reason: String },
}

fn bad(what: &str, e: impl std::fmt::Display) -> SignError {
    SignError::Bad {
        what: what.to_string(),
        reason: e.to_string(),
    }
}

/// The signature partition's object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SigObject {
    pub root_hash: String,
    pub certificate_fingerprint: String,
    pub signature: String,
}

pub use openssl::x509::X509;

/// Loads the PEM certificate file `path` (at most 1 MiB).
pub fn load_cert_file(path: &std::path::Path) -> Result<X509, SignError> {
    load_cert(&read_small(path)?, &path.display().to_string())
}

/// The files of loaded certificates, for messages: `A.crt, B.crt`.
pub fn cert_names(certs: &[(std::path::PathBuf, X509)]) -> String {
    certs
        .iter()
        .map(|(p, _)| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// A key or certificate file: a regular file (opened without blocking, so a FIFO does not
/// hang the read), at most 1 MiB read.
fn read_small(p: &std::path::Path) -> Result<Vec<u8>, SignError> {
    use std::io::Read;
    let what = p.display().to_string();
    let f = safefs::tree::open_input(p).map_err(|e| bad(&what, e))?;
    let mut b = Vec::new();
    f.take(1 << 20)
        .read_to_end(&mut b)
        .map_err(|e| bad(&what, e))?;
    Ok(b)
}

/// The certificates systemd trusts for image signatures beside the kernel keyring:
/// `ROOT/etc/verity.d/*.crt`, sorted (none when the folder is missing).
pub fn verity_d(root: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut found: Vec<std::path::PathBuf> = std::fs::read_dir(root.join("etc/verity.d"))
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "crt"))
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    found
}

/// Loads a PEM certificate.
pub fn load_cert(pem: &[u8], what: &str) -> Result<X509, SignError> {
    X509::from_pem(pem).map_err(|e| bad(what, format!("not a PEM certificate ({e})")))
}

/// The SHA-256 of the certificate's DER, hex (repart's `certificateFingerprint`).
pub fn fingerprint(cert: &X509) -> Result<String, SignError> {
    let d = cert
        .digest(MessageDigest::sha256())
        .map_err(|e| bad("certificate", e))?;
    Ok(hex::encode(d))
}

/// Signs `root_hash` (hex text) with the key and certificate: DER PKCS#7 (see the module
/// docs).
pub fn sign(root_hash: &str, key: &PKey<Private>, cert: &X509) -> Result<Vec<u8>, SignError> {
    let certs = Stack::new().map_err(|e| bad("signing", e))?;
    let flags = Pkcs7Flags::DETACHED | Pkcs7Flags::NOATTR | Pkcs7Flags::BINARY;
    let p7 = Pkcs7::sign(cert, key, &certs, root_hash.as_bytes(), flags).map_err(|e| {
        bad(
            "signing the root hash (do the key and certificate match?)",
            e,
        )
    })?;
    p7.to_der().map_err(|e| bad("signing", e))
}

/// The signature partition's content for `root_hash` signed by `p7s` with `cert`:
/// the JSON object, zero-padded to `size` bytes.
pub fn partition_bytes(
    root_hash: &str,
    cert_fingerprint: &str,
    p7s: &[u8],
    size: usize,
) -> Result<Vec<u8>, SignError> {
    use base64::Engine;
    let obj = SigObject {
        root_hash: root_hash.to_string(),
        certificate_fingerprint: cert_fingerprint.to_string(),
        signature: base64::engine::general_purpose::STANDARD.encode(p7s),
    };
    let mut b = serde_json::to_vec(&obj).map_err(|e| bad("signature object", e))?;
    if b.len() > size {
        return Err(bad(
            "signature object",
            format!("{} bytes do not fit the {size}-byte partition", b.len()),
        ));
    }
    b.resize(size, 0);
    Ok(b)
}

/// Reads the signature partition's object (up to the first NUL), and its DER signature.
pub fn parse_partition(bytes: &[u8]) -> Result<(SigObject, Vec<u8>), SignError> {
    use base64::Engine;
    let end = bytes.iter().position(|b| *b == 0).unwrap_or(bytes.len());
    let obj: SigObject = serde_json::from_slice(&bytes[..end]).map_err(|e| {
        bad(
            "the signature partition",
            format!("not its JSON object ({e})"),
        )
    })?;
    let der = base64::engine::general_purpose::STANDARD
        .decode(&obj.signature)
        .map_err(|e| {
            bad(
                "the signature partition",
                format!("signature is not base64 ({e})"),
            )
        })?;
    Ok((obj, der))
}

/// Is `p7s` (DER) a signature of `root_hash` (hex text) by the key of one of `certs`? The
/// certificates are taken as they are (no chain or expiry check: systemd's keyring check
/// does not look further either); certificates inside the signature are not trusted.
/// Returns the index of the certificate that verifies it.
pub fn verify(p7s: &[u8], root_hash: &str, certs: &[X509]) -> Result<Option<usize>, SignError> {
    let p7 = Pkcs7::from_der(p7s).map_err(|e| bad("signature", format!("not DER PKCS#7 ({e})")))?;
    // An empty store: NOVERIFY, the certificates are taken as they are.
    let store = X509StoreBuilder::new()
        .map_err(|e| bad("verifying", e))?
        .build();
    for (i, c) in certs.iter().enumerate() {
        let mut stack = Stack::new().map_err(|e| bad("verifying", e))?;
        stack.push(c.clone()).map_err(|e| bad("verifying", e))?;
        let flags = Pkcs7Flags::NOINTERN | Pkcs7Flags::NOVERIFY | Pkcs7Flags::BINARY;
        if p7
            .verify(&stack, &store, Some(root_hash.as_bytes()), None, flags)
            .is_ok()
        {
            return Ok(Some(i));
        }
    }
    Ok(None)
}

/// A key and its certificate, loaded, to sign root hashes with.
#[derive(Clone)]
pub struct Signer {
    key: PKey<Private>,
    cert: X509,
    fingerprint: String,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("certificate", &self.fingerprint)
            .finish()
    }
}

impl Signer {
    /// Loads the key (a PEM file, or a `pkcs11:` URI of a key in a token, see [`pkcs11`]) and
    /// the PEM certificate file (each file at most 1 MiB) and checks they match.
    pub fn load(key: &std::path::Path, cert: &std::path::Path) -> Result<Signer, SignError> {
        let cert = load_cert_file(cert)?;
        let (pkey, shown) = if pkcs11::is_uri(key) {
            let uri = key.to_string_lossy();
            (pkcs11::load(&uri)?, pkcs11::shown(&uri))
        } else {
            let shown = key.display().to_string();
            let pkey = PKey::private_key_from_pem(&read_small(key)?)
                .map_err(|e| bad(&shown, format!("not a PEM private key ({e})")))?;
            (pkey, shown)
        };
        let public = cert.public_key().map_err(|e| bad("certificate", e))?;
        if !public.public_eq(&pkey) {
            return Err(bad(
                &shown,
                "this key does not belong to the certificate; pass the matching --key and --cert",
            ));
        }
        let fingerprint = fingerprint(&cert)?;
        Ok(Signer {
            key: pkey,
            cert,
            fingerprint,
        })
    }

    /// The certificate.
    pub fn cert(&self) -> &X509 {
        &self.cert
    }

    /// The DER PKCS#7 signature of `root_hash` (hex).
    pub fn p7s(&self, root_hash: &str) -> Result<Vec<u8>, SignError> {
        sign(root_hash, &self.key, &self.cert)
    }

    /// The signature partition's content for `root_hash`.
    pub fn partition(&self, root_hash: &str) -> Result<Vec<u8>, SignError> {
        partition_bytes(
            root_hash,
            &self.fingerprint,
            &self.p7s(root_hash)?,
            crate::ddi::SIG_BYTES as usize,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openssl::asn1::Asn1Time;
    use openssl::rsa::Rsa;
    use openssl::x509::X509NameBuilder;

    /// A self-signed certificate and its key (PEM).
    fn keypair(cn: &str) -> (Vec<u8>, X509) {
        let key = PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap();
        let mut name = X509NameBuilder::new().unwrap();
        name.append_entry_by_text("CN", cn).unwrap();
        let name = name.build();
        let mut b = X509::builder().unwrap();
        b.set_version(2).unwrap();
        let serial = openssl::bn::BigNum::from_u32(cn.len() as u32 + 7).unwrap();
        b.set_serial_number(&serial.to_asn1_integer().unwrap())
            .unwrap();
        b.set_subject_name(&name).unwrap();
        b.set_issuer_name(&name).unwrap();
        b.set_pubkey(&key).unwrap();
        b.set_not_before(&Asn1Time::days_from_now(0).unwrap())
            .unwrap();
        b.set_not_after(&Asn1Time::days_from_now(1).unwrap())
            .unwrap();
        b.sign(&key, MessageDigest::sha256()).unwrap();
        (key.private_key_to_pem_pkcs8().unwrap(), b.build())
    }

    #[test]
    fn sign_verify_and_the_partition_object() {
        let (key, cert) = keypair("a");
        let key = PKey::private_key_from_pem(&key).unwrap();
        let (_, other) = keypair("b");
        let root = "ab".repeat(32);
        let p7s = sign(&root, &key, &cert).unwrap();
        // Deterministic (RSA PKCS#1 v1.5, no signing time): the same bytes each time.
        assert_eq!(p7s, sign(&root, &key, &cert).unwrap());
        assert_eq!(
            verify(&p7s, &root, &[other.clone(), cert.clone()]).unwrap(),
            Some(1)
        );
        assert_eq!(
            verify(&p7s, &root, std::slice::from_ref(&other)).unwrap(),
            None
        );
        assert_eq!(
            verify(&p7s, &"cd".repeat(32), std::slice::from_ref(&cert)).unwrap(),
            None
        );
        let fp = fingerprint(&cert).unwrap();
        let part = partition_bytes(&root, &fp, &p7s, 16384).unwrap();
        assert_eq!(part.len(), 16384);
        let text =
            std::str::from_utf8(&part[..part.iter().position(|b| *b == 0).unwrap()]).unwrap();
        assert!(
            text.starts_with(&format!(
                "{{\"rootHash\":\"{root}\",\"certificateFingerprint\":\"{fp}\",\"signature\":\""
            )),
            "{text}"
        );
        let (obj, der) = parse_partition(&part).unwrap();
        assert_eq!(der, p7s);
        assert_eq!(obj.root_hash, root);
        assert!(partition_bytes(&root, &fp, &p7s, 100).is_err());
    }

    #[test]
    fn garbage_is_an_error() {
        for bad in [&b""[..], b"{", b"{\"rootHash\":1}", b"\0\0\0", &[0xff; 64]] {
            assert!(parse_partition(bad).is_err());
        }
        let obj = br#"{"rootHash":"00","certificateFingerprint":"00","signature":"!!"}"#;
        assert!(parse_partition(obj).is_err());
        assert!(verify(b"not der", "00", &[]).is_err());
    }

    /// A CMS signature (as `openssl cms -sign -binary -noattr` makes it) is 4 bytes shorter
    /// than PKCS#7's for the same signed value; in canonical form it is PKCS#7's, byte for
    /// byte, and verifies.
    #[test]
    fn cms_signatures_take_pkcs7_form() {
        use openssl::cms::{CMSOptions, CmsContentInfo};
        let (key, cert) = keypair("c");
        let key = PKey::private_key_from_pem(&key).unwrap();
        let root = "0f".repeat(32);
        let flags = CMSOptions::DETACHED | CMSOptions::BINARY | CMSOptions::NOATTR;
        let cms = CmsContentInfo::sign(Some(&cert), Some(&key), None, Some(root.as_bytes()), flags)
            .unwrap()
            .to_der()
            .unwrap();
        let p7 = sign(&root, &key, &cert).unwrap();
        assert_ne!(cms, p7);
        assert_eq!(cms.len() + 4, p7.len());
        assert_eq!(canonical(&cms), p7);
        assert_eq!(canonical(&p7), p7);
        assert_eq!(verify(&canonical(&cms), &root, &[cert]).unwrap(), Some(0));
    }
}
