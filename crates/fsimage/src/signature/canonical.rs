//! One encoding for one signature: `openssl cms -sign` and `openssl smime -sign` (what
//! systemd-repart calls) make the same signature value over the same root hash, but CMS leaves
//! the digest algorithm's parameters out where PKCS#7 writes an explicit NULL (RFC 5754 allows
//! both). A signature joined with `sysext sign --signature` is stored in PKCS#7's form, so an
//! image signed offline is byte-identical to one signed at pack time whichever tool signed.

/// A DER element's tag, body and what follows it; `None` for anything but a short tag with a
/// definite length inside `b`.
fn tlv(b: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = b.split_first()?;
    if tag & 0x1f == 0x1f {
        return None;
    }
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = match first {
        0..=0x7f => (usize::from(first), rest),
        0x81..=0x84 => {
            let n = usize::from(first & 0x7f);
            if rest.len() < n {
                return None;
            }
            let len = rest[..n]
                .iter()
                .fold(0usize, |a, &x| (a << 8) | usize::from(x));
            (len, &rest[n..])
        }
        _ => return None,
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

/// The elements of a constructed body; `None` when one is not well formed.
fn elements(mut body: &[u8]) -> Option<Vec<(u8, &[u8])>> {
    let mut out = Vec::new();
    while !body.is_empty() {
        let (tag, b, rest) = tlv(body)?;
        out.push((tag, b));
        body = rest;
    }
    Some(out)
}

/// The DER encoding of a tag and body.
fn encode(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = body.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(body);
    out
}

fn join(parts: &[(u8, &[u8])]) -> Vec<u8> {
    parts.iter().flat_map(|(t, b)| encode(*t, b)).collect()
}

const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const OID: u8 = 0x06;
const INTEGER: u8 = 0x02;
const CONTEXT_0: u8 = 0xa0;
/// 1.2.840.113549.1.7.2, PKCS#7 signedData.
const SIGNED_DATA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x02];

/// The body of the one element of `body`, when it has one and with tag `tag`.
fn only(tag: u8, body: &[u8]) -> Option<&[u8]> {
    match elements(body)?.as_slice() {
        [(t, b)] if *t == tag => Some(b),
        _ => None,
    }
}

/// An AlgorithmIdentifier with its parameters left out gets an explicit NULL.
fn with_null(body: &[u8]) -> Option<Vec<u8>> {
    match elements(body)?.as_slice() {
        [(OID, oid)] => Some([encode(OID, oid), vec![0x05, 0x00]].concat()),
        [(OID, _), _] => Some(body.to_vec()),
        _ => None,
    }
}

/// `p7s` with the digest algorithms' parameters written as PKCS#7 writes them (an explicit
/// NULL), when it is a DER signedData with one digest algorithm and one signer; anything else
/// comes back unchanged (the caller verifies what it stores either way).
pub fn canonical(p7s: &[u8]) -> Vec<u8> {
    rewrite(p7s).unwrap_or_else(|| p7s.to_vec())
}

fn rewrite(p7s: &[u8]) -> Option<Vec<u8>> {
    let (SEQUENCE, ci, []) = tlv(p7s)? else {
        return None;
    };
    let ci = elements(ci)?;
    let [(OID, SIGNED_DATA), (CONTEXT_0, explicit)] = ci.as_slice() else {
        return None;
    };
    let mut sd = elements(only(SEQUENCE, explicit)?)?;
    // version, digestAlgorithms, contentInfo, [0] certificates, [1] crls, signerInfos.
    let last = sd.len().checked_sub(1)?;
    if sd.len() < 4 || sd[0].0 != INTEGER || sd[1].0 != SET || sd[last].0 != SET {
        return None;
    }
    let digests = encode(SEQUENCE, &with_null(only(SEQUENCE, sd[1].1)?)?);
    let mut si = elements(only(SEQUENCE, sd[last].1)?)?;
    // version, sid, digestAlgorithm, ...
    if si.len() < 5 || si[2].0 != SEQUENCE {
        return None;
    }
    let digest_alg = with_null(si[2].1)?;
    si[2].1 = &digest_alg;
    let signer = encode(SEQUENCE, &join(&si));
    sd[1].1 = &digests;
    sd[last].1 = &signer;
    let sd = join(&sd);
    let ci = [
        encode(OID, SIGNED_DATA),
        encode(CONTEXT_0, &encode(SEQUENCE, &sd)),
    ]
    .concat();
    Some(encode(SEQUENCE, &ci))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_round_trip() {
        for len in [0usize, 1, 127, 128, 255, 256, 65535, 65536] {
            let body = vec![7u8; len];
            let e = encode(0x04, &body);
            let (tag, b, rest) = tlv(&e).unwrap();
            assert_eq!((tag, b.len(), rest.len()), (0x04, len, 0));
        }
    }

    #[test]
    fn garbage_and_truncation_come_back_unchanged() {
        for b in [
            &b""[..],
            b"\x30",
            b"\x30\x84\xff\xff\xff\xff",
            b"\x30\x80\x00\x00",
            b"abc",
        ] {
            assert_eq!(canonical(b), b);
        }
    }
}
