//! Private keys in a PKCS#11 token (a hardware security module, a smart card, SoftHSM), named
//! by an RFC 7512 URI (`pkcs11:token=…;object=…`), loaded through OpenSSL's `pkcs11` engine
//! (libp11's, Debian's `libengine-pkcs11-openssl`, which reaches the token's module through
//! p11-kit) — what systemd-repart does with `--private-key-source=engine:pkcs11`. The key
//! never leaves the token: OpenSSL asks the token to sign.
//!
//! The PIN comes from the URI (`pin-value=`, taken out of it before the engine sees the URI, so
//! no message shows it) or from `SYSEXT_PKCS11_PIN`.
#![allow(unsafe_code)]

use std::ffi::{c_char, c_int, c_void, CString};

use foreign_types::ForeignType;
use openssl::pkey::{PKey, Private};

use super::{bad, SignError};

/// OpenSSL's ENGINE, opaque.
#[repr(C)]
struct Engine {
    _private: [u8; 0],
}

// libcrypto (linked through openssl-sys); deprecated in OpenSSL 3 but present in every build
// that has engines, which Debian's has.
extern "C" {
    fn ENGINE_load_builtin_engines();
    fn ENGINE_by_id(id: *const c_char) -> *mut Engine;
    fn ENGINE_init(e: *mut Engine) -> c_int;
    fn ENGINE_finish(e: *mut Engine) -> c_int;
    fn ENGINE_free(e: *mut Engine) -> c_int;
    fn ENGINE_ctrl_cmd_string(
        e: *mut Engine,
        cmd: *const c_char,
        arg: *const c_char,
        optional: c_int,
    ) -> c_int;
    fn ENGINE_load_private_key(
        e: *mut Engine,
        key_id: *const c_char,
        ui_method: *mut c_void,
        callback_data: *mut c_void,
    ) -> *mut openssl_sys::EVP_PKEY;
}

/// Is `key` a PKCS#11 URI rather than a file?
pub fn is_uri(key: &std::path::Path) -> bool {
    key.to_str().is_some_and(|s| s.starts_with("pkcs11:"))
}

/// The engine, initialised; finished and freed when dropped (a key loaded from it holds its
/// own reference).
struct Loaded(*mut Engine);

impl Drop for Loaded {
    fn drop(&mut self) {
        // SAFETY: self.0 came from ENGINE_by_id and ENGINE_init succeeded on it.
        unsafe {
            ENGINE_finish(self.0);
            ENGINE_free(self.0);
        }
    }
}

/// OpenSSL's error queue as text (and emptied).
fn openssl_errors() -> String {
    let e = openssl::error::ErrorStack::get();
    if e.errors().is_empty() {
        "no detail from OpenSSL".into()
    } else {
        e.to_string()
    }
}

/// The URI without its `pin-value` attribute (in the path or the query, RFC 7512), and the
/// PIN it held, percent-decoded.
fn split_pin(uri: &str) -> (String, Option<String>) {
    let (path, query) = match uri.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (uri, None),
    };
    let mut pin = None;
    let mut keep = |sep: char, part: &str| -> String {
        part.split(sep)
            .filter(|a| match a.strip_prefix("pin-value=") {
                Some(v) => {
                    pin = Some(percent_decode(v));
                    false
                }
                None => true,
            })
            .collect::<Vec<_>>()
            .join(&sep.to_string())
    };
    let mut out = keep(';', path);
    if let Some(q) = query {
        let q = keep('&', q);
        if !q.is_empty() {
            out.push('?');
            out.push_str(&q);
        }
    }
    (out, pin)
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = b.get(i + 1..i + 3).and_then(|h| {
            std::str::from_utf8(h)
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        });
        match (b[i], hex) {
            (b'%', Some(x)) => {
                out.push(x);
                i += 3;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The URI as messages show it: without its PIN.
pub fn shown(uri: &str) -> String {
    split_pin(uri).0
}

/// Loads the private key the URI names.
pub fn load(uri: &str) -> Result<PKey<Private>, SignError> {
    let (what, uri_pin) = split_pin(uri);
    let c_uri = CString::new(what.as_str()).map_err(|_| bad(&what, "a NUL byte in the URI"))?;
    let pin = uri_pin.or_else(|| std::env::var("SYSEXT_PKCS11_PIN").ok());
    let c_pin = pin
        .map(CString::new)
        .transpose()
        .map_err(|_| bad(&what, "a NUL byte in the PIN"))?;
    openssl_sys::init();
    // SAFETY: plain calls into libcrypto with valid C strings; every pointer returned is
    // checked before use, and the engine is released by `Loaded`.
    unsafe {
        ENGINE_load_builtin_engines();
        let e = ENGINE_by_id(c"pkcs11".as_ptr());
        if e.is_null() {
            let _ = openssl_errors();
            return Err(bad(
                &what,
                "OpenSSL has no pkcs11 engine: install libengine-pkcs11-openssl (Debian) or \
                 openssl-pkcs11 (Fedora), or sign elsewhere and join the signature with \
                 `sysext sign --signature`",
            ));
        }
        if ENGINE_init(e) != 1 {
            let detail = openssl_errors();
            ENGINE_free(e);
            return Err(bad(
                &what,
                format!("the pkcs11 engine did not start ({detail})"),
            ));
        }
        let engine = Loaded(e);
        if let Some(pin) = &c_pin {
            if ENGINE_ctrl_cmd_string(engine.0, c"PIN".as_ptr(), pin.as_ptr(), 0) != 1 {
                return Err(bad(
                    &what,
                    format!("the pkcs11 engine refused the PIN ({})", openssl_errors()),
                ));
            }
        }
        let k = ENGINE_load_private_key(
            engine.0,
            c_uri.as_ptr(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
        );
        if k.is_null() {
            return Err(bad(
                &what,
                format!(
                    "no private key found there (is the token present, the URI's object right and \
                     the PIN given in the URI or SYSEXT_PKCS11_PIN?): {}",
                    openssl_errors()
                ),
            ));
        }
        Ok(PKey::from_ptr(k))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pin_is_taken_out_of_the_uri() {
        for (uri, rest, pin) in [
            ("pkcs11:token=a;object=b", "pkcs11:token=a;object=b", None),
            (
                "pkcs11:token=a;pin-value=12%334;object=b",
                "pkcs11:token=a;object=b",
                Some("1234"),
            ),
            ("pkcs11:token=a?pin-value=99", "pkcs11:token=a", Some("99")),
            (
                "pkcs11:token=a?module-path=/m.so&pin-value=7",
                "pkcs11:token=a?module-path=/m.so",
                Some("7"),
            ),
        ] {
            assert_eq!(
                split_pin(uri),
                (rest.to_string(), pin.map(String::from)),
                "{uri}"
            );
        }
    }
}
