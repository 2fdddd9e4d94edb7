//! Same-length replacement of strings compiled into an object's read-only data: how flix points
//! its private copy of glibc at the data it ships (gconv modules, locales) instead of the
//! host's. Code reads such strings in place, and may copy them with a length fixed at compile
//! time (`sizeof`, an inlined 32-byte copy), so a string can only be overwritten by one of
//! exactly the same length; the caller pads (e.g. with `/`, which path lookup ignores).

use super::consts::{PF_W, PT_LOAD};
use super::raw::{bad, unsupported};
use super::{Parsed, RewriteError};

/// Overwrites, in `bytes`, every whole NUL-terminated string equal to a pair's old text with
/// its new text, inside the file ranges of the PT_LOAD segments that are not writable (on arm64
/// read-only data often shares the executable segment with the code). A
/// whole string starts at the beginning of such a range or right after a NUL, so a longer
/// string that merely ends with the old text is left alone. Returns how many strings each pair
/// replaced. A pair whose texts differ in length, are empty, or contain a NUL is an error.
pub fn replace_data_strings(
    bytes: &mut [u8],
    pairs: &[(String, String)],
) -> Result<Vec<usize>, RewriteError> {
    for (old, new) in pairs {
        if old.len() != new.len() || old.is_empty() || old.contains('\0') || new.contains('\0') {
            return Err(unsupported(format!(
                "cannot replace {old:?} with {new:?}: a compiled-in string is replaced only by \
                 another of the same length, without NUL"
            )));
        }
    }
    let p = Parsed::parse(bytes)?.ok_or(RewriteError::NotElf)?;
    let ranges: Vec<(usize, usize)> = p
        .phdrs
        .iter()
        .filter(|ph| ph.p_type == PT_LOAD && ph.flags & PF_W == 0 && ph.filesz > 0)
        .map(|ph| {
            let start = usize::try_from(ph.offset).map_err(|_| bad("PT_LOAD offset"))?;
            let end = ph
                .offset
                .checked_add(ph.filesz)
                .and_then(|e| usize::try_from(e).ok())
                .filter(|&e| e <= bytes.len())
                .ok_or_else(|| bad("a PT_LOAD segment lies beyond the end of the file"))?;
            Ok((start, end))
        })
        .collect::<Result<_, RewriteError>>()?;
    let mut counts = vec![0; pairs.len()];
    for (start, end) in ranges {
        let seg = &mut bytes[start..end];
        let mut at = 0;
        // Each whole string of the segment once: compare it with every pair.
        while at < seg.len() {
            let len = seg[at..].iter().position(|&c| c == 0);
            let Some(len) = len else { break };
            if len > 0 {
                if let Some(i) = pairs
                    .iter()
                    .position(|(old, _)| old.as_bytes() == &seg[at..at + len])
                {
                    seg[at..at + len].copy_from_slice(pairs[i].1.as_bytes());
                    counts[i] += 1;
                }
            }
            at += len + 1;
        }
    }
    Ok(counts)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal ELF64 little-endian file with one read-only and executable PT_LOAD over
    /// `data`, and a second, writable one over `rw`.
    fn elf_with(data: &[u8], rw: &[u8]) -> Vec<u8> {
        let mut b = vec![0u8; 64 + 2 * 56];
        b[..4].copy_from_slice(b"\x7fELF");
        b[4] = 2; // ELFCLASS64
        b[5] = 1; // little-endian
        b[6] = 1;
        b[16..18].copy_from_slice(&3u16.to_le_bytes()); // ET_DYN
        b[18..20].copy_from_slice(&62u16.to_le_bytes()); // x86-64
        b[20..24].copy_from_slice(&1u32.to_le_bytes());
        b[32..40].copy_from_slice(&64u64.to_le_bytes()); // e_phoff
        b[52..54].copy_from_slice(&64u16.to_le_bytes()); // e_ehsize
        b[54..56].copy_from_slice(&56u16.to_le_bytes()); // e_phentsize
        b[56..58].copy_from_slice(&2u16.to_le_bytes()); // e_phnum
        let data_off = b.len() as u64;
        let rw_off = data_off + data.len() as u64;
        for (i, (off, len, flags)) in [(data_off, data.len(), 5u32), (rw_off, rw.len(), 6u32)]
            .into_iter()
            .enumerate()
        {
            let ph = 64 + i * 56;
            b[ph..ph + 4].copy_from_slice(&PT_LOAD.to_le_bytes());
            b[ph + 4..ph + 8].copy_from_slice(&flags.to_le_bytes());
            b[ph + 8..ph + 16].copy_from_slice(&off.to_le_bytes());
            b[ph + 16..ph + 24].copy_from_slice(&off.to_le_bytes());
            b[ph + 24..ph + 32].copy_from_slice(&off.to_le_bytes());
            b[ph + 32..ph + 40].copy_from_slice(&(len as u64).to_le_bytes());
            b[ph + 40..ph + 48].copy_from_slice(&(len as u64).to_le_bytes());
            b[ph + 48..ph + 56].copy_from_slice(&1u64.to_le_bytes());
        }
        b.extend_from_slice(data);
        b.extend_from_slice(rw);
        b
    }

    fn pair(a: &str, b: &str) -> (String, String) {
        (a.into(), b.into())
    }

    #[test]
    fn whole_strings_outside_writable_segments_only() {
        let data = b"/usr/lib/locale\0x/usr/lib/locale\0/usr/lib/locale/locale-archive\0";
        let rw = b"/usr/lib/locale\0";
        let mut b = elf_with(data, rw);
        let counts = replace_data_strings(
            &mut b,
            &[
                pair("/usr/lib/locale", "/usr/local/a1bc"),
                pair(
                    "/usr/lib/locale/locale-archive",
                    "/usr/local/a1bc/locale-archive",
                ),
            ],
        )
        .unwrap();
        assert_eq!(counts, vec![1, 1]);
        let text = String::from_utf8_lossy(&b[64 + 112..]).into_owned();
        assert_eq!(
            text,
            "/usr/local/a1bc\0x/usr/lib/locale\0/usr/local/a1bc/locale-archive\0/usr/lib/locale\0",
            "a longer string ending in the old text and the writable copy stay"
        );
    }

    #[test]
    fn lengths_must_match() {
        let mut b = elf_with(b"/usr/lib/locale\0", b"");
        let before = b.clone();
        let err = replace_data_strings(&mut b, &[pair("/usr/lib/locale", "/x")]).unwrap_err();
        assert!(err.to_string().contains("same length"), "{err}");
        assert_eq!(b, before);
        assert!(matches!(
            replace_data_strings(&mut b"not elf".to_vec(), &[]),
            Err(RewriteError::NotElf)
        ));
    }
}
