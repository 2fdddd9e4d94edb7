//! The detached OpenPGP signature of `SHA256SUMS` (`SHA256SUMS.gpg`) that systemd-sysupdate
//! checks when a transfer file says `Verify=yes`.
//!
//! The user gives a secret key file (`gpg --export-secret-keys`, armored or binary). It is
//! imported into a private, temporary GnuPG home (the user's own keyring is never read or
//! changed), signed with by GnuPG's `gpg`, and the home (with the agent gpg started for it) is
//! removed afterwards. A passphrase, when the key has one, comes from
//! `$SYSEXT_SIGNING_PASSPHRASE` (on gpg's standard input, never on a command line). Every gpg
//! call runs in batch mode: nothing prompts.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// The environment variable holding the signing key's passphrase.
pub const PASSPHRASE_ENV: &str = "SYSEXT_SIGNING_PASSPHRASE";

#[derive(Debug, thiserror::Error)]
pub enum SignError {
    #[error("signing key {}: {message}; give a secret key exported with `gpg --export-secret-keys --armor KEYID > FILE`", path.display())]
    Key { path: PathBuf, message: String },
    #[error("signing {} with {}: {message}", data.display(), key.display())]
    Sign {
        data: PathBuf,
        key: PathBuf,
        message: String,
    },
    #[error(
        "cannot run gpg ({0}); install GnuPG (Debian: apt-get install gpg) to sign SHA256SUMS"
    )]
    NoGpg(std::io::Error),
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// One secret key, imported into a private GnuPG home for as long as this value lives.
pub struct SigningKey {
    path: PathBuf,
    home: tempfile::TempDir,
    fingerprint: String,
    public: Vec<u8>,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("path", &self.path)
            .field("fingerprint", &self.fingerprint)
            .finish()
    }
}

impl SigningKey {
    /// Imports the secret key in `path`; it must hold exactly one secret primary key that can
    /// sign.
    pub fn load(path: &Path) -> Result<SigningKey, SignError> {
        let key_err = |message: String| SignError::Key {
            path: path.to_path_buf(),
            message,
        };
        let meta = std::fs::metadata(path).map_err(|e| key_err(e.to_string()))?;
        if !meta.is_file() {
            return Err(key_err("not a regular file".into()));
        }
        // A key file is a few KiB; a big one is a mistake, not a key.
        if meta.len() > 1 << 20 {
            return Err(key_err(format!(
                "{} bytes is too big for a key",
                meta.len()
            )));
        }
        let home = tempfile::Builder::new()
            .prefix("sysext-gnupg-")
            .tempdir()
            .map_err(|source| SignError::Io {
                path: std::env::temp_dir(),
                source,
            })?;
        let mut key = SigningKey {
            path: path.to_path_buf(),
            home,
            fingerprint: String::new(),
            public: Vec::new(),
        };
        let o = key.gpg(&["--import"], Some(path), None)?;
        if !o.status.success() {
            return Err(key_err(format!("gpg cannot import it: {}", stderr(&o))));
        }
        let o = key.gpg(
            &["--with-colons", "--fingerprint", "--list-secret-keys"],
            None,
            None,
        )?;
        let listing = String::from_utf8_lossy(&o.stdout).into_owned();
        let fprs = primary_fingerprints(&listing);
        let fpr = match fprs.as_slice() {
            [one] => one.clone(),
            [] => return Err(key_err("it holds no secret key".into())),
            many => {
                return Err(key_err(format!(
                    "it holds {} secret keys; export only the one to sign with",
                    many.len()
                )))
            }
        };
        let o = key.gpg(&["--export", &fpr], None, None)?;
        if !o.status.success() || o.stdout.is_empty() {
            return Err(key_err(format!(
                "gpg cannot export its public key: {}",
                stderr(&o)
            )));
        }
        key.public = o.stdout;
        key.fingerprint = fpr;
        // A trial signature: a missing or wrong passphrase fails here, before any image is
        // built, not after the bake.
        let probe = key.home.path().join("probe");
        std::fs::write(&probe, b"sysext bake\n").map_err(|source| SignError::Io {
            path: probe.clone(),
            source,
        })?;
        key.sign(&probe, &key.home.path().join("probe.sig"))
            .map_err(|e| match e {
                SignError::Sign { message, .. } => key_err(format!("it cannot sign: {message}")),
                other => other,
            })?;
        Ok(key)
    }

    /// The public key, as a keyring file systemd-pull's gpg reads (`--keyring`).
    pub fn public_keyring(&self) -> &[u8] {
        &self.public
    }

    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// Writes the detached binary signature of `data` to `out`.
    pub fn sign(&self, data: &Path, out: &Path) -> Result<(), SignError> {
        let pass = std::env::var(PASSPHRASE_ENV).ok();
        let mut args = vec!["--yes", "--local-user", &self.fingerprint];
        if pass.is_some() {
            args.extend(["--pinentry-mode", "loopback", "--passphrase-fd", "0"]);
        }
        let outs = out.to_string_lossy();
        let datas = data.to_string_lossy();
        args.extend(["--output", &outs, "--detach-sign", "--", &datas]);
        let o = self.gpg(&args, None, pass.as_deref())?;
        if !o.status.success() {
            return Err(SignError::Sign {
                data: data.to_path_buf(),
                key: self.path.clone(),
                message: format!(
                    "{} (a key with a passphrase needs ${PASSPHRASE_ENV})",
                    stderr(&o)
                ),
            });
        }
        Ok(())
    }

    /// Whether `sig` is a good signature of `data` by this key.
    pub fn verifies(&self, data: &Path, sig: &Path) -> bool {
        if !sig.is_file() {
            return false;
        }
        let keyring = self.home.path().join("verify.gpg");
        std::fs::write(&keyring, &self.public).is_ok()
            && verify_detached(&keyring, data, sig).is_ok()
    }

    /// Runs `gpg --batch --homedir HOME ARGS [FILE]`, `input` on its standard input.
    fn gpg(
        &self,
        args: &[&str],
        file: Option<&Path>,
        input: Option<&str>,
    ) -> Result<Output, SignError> {
        let mut c = Command::new("gpg");
        c.arg("--batch")
            .arg("--no-tty")
            .arg("--quiet")
            .arg("--homedir")
            .arg(self.home.path())
            .args(args);
        if let Some(f) = file {
            c.arg("--").arg(f);
        }
        c.stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env("LC_ALL", "C");
        let mut child = c.spawn().map_err(SignError::NoGpg)?;
        if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
            // A failed write shows as gpg's own error below.
            let _ = writeln!(stdin, "{text}");
        }
        child.wait_with_output().map_err(SignError::NoGpg)
    }
}

impl Drop for SigningKey {
    fn drop(&mut self) {
        // The agent gpg started for this home; the folder goes with the TempDir.
        let _ = Command::new("gpgconf")
            .arg("--homedir")
            .arg(self.home.path())
            .args(["--kill", "all"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// Checks that `sig` is a good detached OpenPGP signature of `data` by a key of `keyring` (a
/// binary public keyring, as `import-pubring.gpg`), as systemd-sysupdate checks
/// `SHA256SUMS.gpg`: GnuPG's `gpgv` with an empty private home, so no other keyring is read.
/// The error is gpgv's own words.
pub fn verify_detached(keyring: &Path, data: &Path, sig: &Path) -> Result<(), String> {
    let home = tempfile::tempdir().map_err(|e| format!("a private GnuPG home: {e}"))?;
    let o = Command::new("gpgv")
        .arg("--homedir")
        .arg(home.path())
        .arg("--keyring")
        .arg(keyring)
        .arg("--")
        .arg(sig)
        .arg(data)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .env("LC_ALL", "C")
        .output()
        .map_err(|e| {
            format!("cannot run gpgv ({e}); install GnuPG (Debian: apt-get install gpgv)")
        })?;
    if o.status.success() {
        Ok(())
    } else {
        Err(stderr(&o))
    }
}

fn stderr(o: &Output) -> String {
    let t = String::from_utf8_lossy(&o.stderr);
    let t = t.trim();
    if t.is_empty() {
        format!("gpg exited with {}", o.status)
    } else {
        t.lines().take(4).collect::<Vec<_>>().join("; ")
    }
}

/// The fingerprints of the primary secret keys in `gpg --with-colons --list-secret-keys`
/// output: the first `fpr` record after each `sec` record.
fn primary_fingerprints(listing: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut want = false;
    for line in listing.lines() {
        let f: Vec<&str> = line.split(':').collect();
        match f.first().copied() {
            Some("sec") => want = true,
            Some("ssb") | Some("sub") | Some("pub") => want = false,
            Some("fpr") if want => {
                if let Some(fp) = f.get(9).filter(|s| !s.is_empty()) {
                    out.push((*fp).to_string());
                }
                want = false;
            }
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::primary_fingerprints;

    #[test]
    fn fingerprints_of_primary_keys_only() {
        let l = "sec:u:255:22:AAAA:1:::u:::scSC:::+:::23::0:\n\
                 fpr:::::::::1111AAAA:\n\
                 grp:::::::::X:\n\
                 uid:u::::1::H::T <t@e>::::::::::0:\n\
                 ssb:u:255:18:BBBB:1:::::e:::+:::cv25519::\n\
                 fpr:::::::::2222BBBB:\n\
                 sec:u:255:22:CCCC:1:::u:::scSC:::+:::23::0:\n\
                 fpr:::::::::3333CCCC:\n";
        assert_eq!(primary_fingerprints(l), ["1111AAAA", "3333CCCC"]);
        assert!(primary_fingerprints("").is_empty());
    }
}
