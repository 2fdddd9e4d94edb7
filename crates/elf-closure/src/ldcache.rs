//! glibc's `/etc/ld.so.cache`, as `ldconfig` writes it and `ld.so` reads it.
//!
//! The new format starts with `glibc-ld.so.cache1.1` (header of 48 bytes: magic, version,
//! `nlibs`, `len_strings`, an endianness byte, `extension_offset`), followed by 24-byte entries
//! (`flags`, `key`, `value`, unused `osversion`, `hwcap`). String offsets are relative to the
//! start of the new header. Old caches put an `ld.so-1.7.0` table (12-byte entries) in front and
//! the new header after it, aligned. Entries whose `hwcap` has bit 62 set name a
//! `glibc-hwcaps` subdirectory through the extension section (tag 1, an array of string offsets).

use std::path::Path;

use super::ElfError;

const MAGIC_OLD: &[u8] = b"ld.so-1.7.0";
const MAGIC_NEW: &[u8] = b"glibc-ld.so.cache1.1";
const EXTENSION_MAGIC: u32 = 0xeaa4_2174;
const HWCAP_EXTENSION: u64 = 1 << 62;

/// The largest cache file read (16 MiB; real ones are a few hundred KiB).
pub const MAX_LDCACHE_BYTES: u64 = 16 << 20;
/// The longest string taken from the cache (PATH_MAX).
const MAX_STRING: usize = 4096;
/// The most bytes of keys and paths one cache may yield: entries may share strings, so this
/// bounds memory by more than the file size.
const MAX_STRING_TOTAL: usize = 64 << 20;
/// The most `glibc-hwcaps` names read from the extension section.
const MAX_HWCAPS_NAMES: usize = 1024;

/// One entry: the key (a SONAME), the path it maps to, glibc's flags and, for a
/// `glibc-hwcaps` entry, the subdirectory name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LdCacheEntry {
    pub key: String,
    pub path: String,
    pub flags: i32,
    /// `Some("x86-64-v3")` for an entry found in a `glibc-hwcaps` subdirectory.
    pub hwcaps: Option<String>,
    /// Legacy hwcap bits (entries with them are ignored by current glibc).
    pub legacy_hwcap: u64,
}

/// A parsed cache, in file order (ldconfig sorts it by key, hwcaps entries first).
#[derive(Debug, Clone, Default)]
pub struct LdCache {
    pub entries: Vec<LdCacheEntry>,
}

struct Rd<'a> {
    b: &'a [u8],
    le: bool,
}

impl Rd<'_> {
    fn u32(&self, off: usize) -> Option<u32> {
        let s = self.b.get(off..off.checked_add(4)?)?;
        let a = [s[0], s[1], s[2], s[3]];
        Some(if self.le {
            u32::from_le_bytes(a)
        } else {
            u32::from_be_bytes(a)
        })
    }
    fn u64(&self, off: usize) -> Option<u64> {
        let lo = u64::from(self.u32(off)?);
        let hi = u64::from(self.u32(off + 4)?);
        Some(if self.le {
            lo | hi << 32
        } else {
            hi | lo << 32
        })
    }
    /// The NUL-terminated string at `off`, of at most [`MAX_STRING`] bytes.
    fn cstr(&self, off: usize) -> Option<String> {
        let rest = self.b.get(off..)?;
        let rest = &rest[..rest.len().min(MAX_STRING + 1)];
        let end = rest.iter().position(|b| *b == 0)?;
        Some(String::from_utf8_lossy(&rest[..end]).into_owned())
    }
}

impl LdCache {
    /// Reads and parses a cache file: a regular file (a FIFO does not block) of at most
    /// [`MAX_LDCACHE_BYTES`].
    pub fn read(path: &Path) -> Result<LdCache, ElfError> {
        use rustix::fs::{FileType, Mode, OFlags};
        use std::io::Read;
        let io = |source: std::io::Error| ElfError::Io {
            path: path.to_path_buf(),
            source,
        };
        let fd = rustix::fs::open(
            path,
            OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| io(e.into()))?;
        let st = rustix::fs::fstat(&fd).map_err(|e| io(e.into()))?;
        let bad = |reason: String| ElfError::LdCache {
            path: path.to_path_buf(),
            reason,
        };
        if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
            return Err(bad("not a regular file".into()));
        }
        let mut bytes = Vec::new();
        std::fs::File::from(fd)
            .take(MAX_LDCACHE_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(io)?;
        if bytes.len() as u64 > MAX_LDCACHE_BYTES {
            return Err(bad(format!("over {MAX_LDCACHE_BYTES} bytes")));
        }
        LdCache::parse(&bytes).map_err(|reason| ElfError::LdCache {
            path: path.to_path_buf(),
            reason,
        })
    }

    /// Parses cache bytes; `Err` carries the reason.
    pub fn parse(bytes: &[u8]) -> Result<LdCache, String> {
        if bytes.starts_with(MAGIC_NEW) {
            return parse_new(bytes);
        }
        if bytes.starts_with(MAGIC_OLD) {
            // Old header: magic (11 bytes + pad to 12), nlibs u32, entries of 12 bytes.
            // The new table follows, aligned to 8 (4 on some 32-bit ABIs): try both.
            for le in [true, false] {
                let rd = Rd { b: bytes, le };
                let Some(nlibs) = rd.u32(12) else { break };
                let Some(end) = (nlibs as usize)
                    .checked_mul(12)
                    .and_then(|n| n.checked_add(16))
                else {
                    continue;
                };
                for align in [8usize, 4] {
                    let off = end.div_ceil(align) * align;
                    if let Some(rest) = bytes.get(off..) {
                        if rest.starts_with(MAGIC_NEW) {
                            return parse_new(rest);
                        }
                    }
                }
            }
            return parse_old(bytes);
        }
        Err("unknown magic (neither glibc-ld.so.cache1.1 nor ld.so-1.7.0)".into())
    }

    /// The path glibc's `_dl_load_cache_lookup` returns for `name`: among entries with this key
    /// whose flags pass `flags_ok`, the supported `glibc-hwcaps` entry of best priority (earlier
    /// in `hwcaps` is better), else the first plain entry.
    pub fn lookup(
        &self,
        name: &str,
        flags_ok: impl Fn(i32) -> bool,
        hwcaps: &[String],
    ) -> Option<&str> {
        let mut best: Option<(usize, &str)> = None;
        for e in self.entries.iter().filter(|e| e.key == name) {
            if !flags_ok(e.flags) {
                continue;
            }
            match &e.hwcaps {
                Some(sub) => {
                    if let Some(prio) = hwcaps.iter().position(|h| h == sub) {
                        if best.is_none_or(|(p, _)| prio < p) {
                            best = Some((prio, &e.path));
                        }
                    }
                }
                None if e.legacy_hwcap != 0 => {}
                None => {
                    return Some(best.map_or(e.path.as_str(), |(_, p)| p));
                }
            }
        }
        best.map(|(_, p)| p)
    }
}

/// An old-format-only cache (`ld.so-1.7.0`, host byte order): 12-byte entries (`flags`,
/// `key`, `value`), string offsets relative to the end of the entry table.
fn parse_old(b: &[u8]) -> Result<LdCache, String> {
    let rd = Rd {
        b,
        le: cfg!(target_endian = "little"),
    };
    let nlibs = rd.u32(12).ok_or("truncated header")? as usize;
    let strings = nlibs
        .checked_mul(12)
        .and_then(|n| n.checked_add(16))
        .filter(|e| *e <= b.len())
        .ok_or_else(|| format!("{nlibs} entries do not fit in {} bytes", b.len()))?;
    let mut entries = Vec::with_capacity(nlibs);
    let mut total = 0usize;
    for off in (16..strings).step_by(12) {
        let flags = rd.u32(off).ok_or("truncated entry")? as i32;
        let key = rd.u32(off + 4).ok_or("truncated entry")? as usize;
        let value = rd.u32(off + 8).ok_or("truncated entry")? as usize;
        let get = |o: usize| {
            o.checked_add(strings)
                .and_then(|o| rd.cstr(o))
                .ok_or_else(|| format!("entry string offset {o:#x} out of range"))
        };
        let (key, path) = (get(key)?, get(value)?);
        total += key.len() + path.len();
        if total > MAX_STRING_TOTAL {
            return Err(format!(
                "entries name over {MAX_STRING_TOTAL} bytes of strings"
            ));
        }
        entries.push(LdCacheEntry {
            key,
            path,
            flags,
            hwcaps: None,
            legacy_hwcap: 0,
        });
    }
    Ok(LdCache { entries })
}

fn parse_new(b: &[u8]) -> Result<LdCache, String> {
    if b.len() < 48 {
        return Err("truncated header".into());
    }
    // Byte 28: 0 unset (host order), 2 little, 3 big.
    let le = match b[28] {
        3 => false,
        2 => true,
        _ => cfg!(target_endian = "little"),
    };
    let rd = Rd { b, le };
    let nlibs = rd.u32(20).ok_or("truncated header")? as usize;
    let ext_off = rd.u32(32).ok_or("truncated header")? as usize;
    let table_end = nlibs
        .checked_mul(24)
        .and_then(|n| n.checked_add(48))
        .filter(|e| *e <= b.len())
        .ok_or_else(|| format!("{nlibs} entries do not fit in {} bytes", b.len()))?;
    let hwcaps_names = if ext_off != 0 {
        parse_extension(&rd, ext_off)
    } else {
        Vec::new()
    };
    let mut entries = Vec::with_capacity(nlibs);
    let mut total = 0usize;
    for off in (48..table_end).step_by(24) {
        let flags = rd.u32(off).ok_or("truncated entry")? as i32;
        let key = rd.u32(off + 4).ok_or("truncated entry")? as usize;
        let value = rd.u32(off + 8).ok_or("truncated entry")? as usize;
        let hwcap = rd.u64(off + 16).ok_or("truncated entry")?;
        let key = rd
            .cstr(key)
            .ok_or_else(|| format!("entry key offset {key:#x} out of range"))?;
        let path = rd
            .cstr(value)
            .ok_or_else(|| format!("entry value offset {value:#x} out of range"))?;
        total += key.len() + path.len();
        if total > MAX_STRING_TOTAL {
            return Err(format!(
                "entries name over {MAX_STRING_TOTAL} bytes of strings"
            ));
        }
        let (hwcaps, legacy_hwcap) = if hwcap & HWCAP_EXTENSION != 0 {
            let idx = (hwcap & 0xffff_ffff) as usize;
            // An index we cannot name is never a supported subdirectory.
            let name = hwcaps_names
                .get(idx)
                .cloned()
                .unwrap_or_else(|| format!("<unknown hwcaps {idx}>"));
            (Some(name), 0)
        } else {
            (None, hwcap)
        };
        entries.push(LdCacheEntry {
            key,
            path,
            flags,
            hwcaps,
            legacy_hwcap,
        });
    }
    Ok(LdCache { entries })
}

/// The `glibc-hwcaps` subdirectory names of the extension section (empty if absent or bad).
fn parse_extension(rd: &Rd<'_>, off: usize) -> Vec<String> {
    let mut out = Vec::new();
    if rd.u32(off) != Some(EXTENSION_MAGIC) {
        return out;
    }
    let count = rd.u32(off + 4).unwrap_or(0) as usize;
    for i in 0..count.min(64) {
        let s = off + 8 + i * 16;
        let (Some(tag), Some(data), Some(size)) = (rd.u32(s), rd.u32(s + 8), rd.u32(s + 12)) else {
            break;
        };
        if tag != 1 {
            continue;
        }
        for j in 0..(size as usize / 4).min(MAX_HWCAPS_NAMES) {
            if out.len() >= MAX_HWCAPS_NAMES {
                return out;
            }
            let name = rd
                .u32(data as usize + j * 4)
                .and_then(|o| rd.cstr(o as usize))
                .unwrap_or_default();
            out.push(name);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a new-format cache: entries (flags, key, path, hwcap), hwcaps names.
    fn build(entries: &[(i32, &str, &str, u64)], hwcaps: &[&str], le: bool) -> Vec<u8> {
        let p32 = |v: u32| if le { v.to_le_bytes() } else { v.to_be_bytes() };
        let p64 = |v: u64| if le { v.to_le_bytes() } else { v.to_be_bytes() };
        let mut strings = Vec::new();
        let base = 48 + 24 * entries.len();
        let add = |s: &str, strings: &mut Vec<u8>| {
            let o = base + strings.len();
            strings.extend_from_slice(s.as_bytes());
            strings.push(0);
            o as u32
        };
        let mut table = Vec::new();
        for (flags, key, path, hwcap) in entries {
            let k = add(key, &mut strings);
            let v = add(path, &mut strings);
            table.extend_from_slice(&p32(*flags as u32));
            table.extend_from_slice(&p32(k));
            table.extend_from_slice(&p32(v));
            table.extend_from_slice(&p32(0));
            table.extend_from_slice(&p64(*hwcap));
        }
        let names: Vec<u32> = hwcaps.iter().map(|h| add(h, &mut strings)).collect();
        while (base + strings.len()) % 4 != 0 {
            strings.push(0);
        }
        let mut ext = Vec::new();
        let ext_off = base + strings.len();
        if !hwcaps.is_empty() {
            let data_off = ext_off + 8 + 16;
            ext.extend_from_slice(&p32(EXTENSION_MAGIC));
            ext.extend_from_slice(&p32(1));
            ext.extend_from_slice(&p32(1));
            ext.extend_from_slice(&p32(0));
            ext.extend_from_slice(&p32(data_off as u32));
            ext.extend_from_slice(&p32(4 * names.len() as u32));
            for n in &names {
                ext.extend_from_slice(&p32(*n));
            }
        }
        let mut out = Vec::new();
        out.extend_from_slice(MAGIC_NEW);
        out.extend_from_slice(&p32(entries.len() as u32));
        out.extend_from_slice(&p32(strings.len() as u32));
        out.push(if le { 2 } else { 3 });
        out.extend_from_slice(&[0; 3]);
        out.extend_from_slice(&p32(if hwcaps.is_empty() { 0 } else { ext_off as u32 }));
        out.extend_from_slice(&[0; 12]);
        out.extend_from_slice(&table);
        out.extend_from_slice(&strings);
        out.extend_from_slice(&ext);
        out
    }

    const X86: i32 = 0x0303;

    #[test]
    fn lookup_picks_hwcaps_then_plain_and_checks_flags() {
        for le in [true, false] {
            let bytes = build(
                &[
                    (
                        X86,
                        "libz.so.1",
                        "/usr/lib/glibc-hwcaps/x86-64-v4/libz.so.1",
                        HWCAP_EXTENSION | 1,
                    ),
                    (
                        X86,
                        "libz.so.1",
                        "/usr/lib/glibc-hwcaps/x86-64-v3/libz.so.1",
                        HWCAP_EXTENSION,
                    ),
                    (3, "libz.so.1", "/usr/lib32/libz.so.1", 0),
                    (X86, "libz.so.1", "/usr/lib/libz.so.1", 0),
                    (X86, "libq.so.1", "/usr/lib/libq.so.1", 0),
                ],
                &["x86-64-v3", "x86-64-v4"],
                le,
            );
            let c = LdCache::parse(&bytes).unwrap();
            assert_eq!(c.entries.len(), 5);
            assert_eq!(c.entries[0].hwcaps.as_deref(), Some("x86-64-v4"));
            let x86 = |f: i32| f == X86;
            let v3 = vec!["x86-64-v3".to_string(), "x86-64-v2".to_string()];
            assert_eq!(
                c.lookup("libz.so.1", x86, &v3),
                Some("/usr/lib/glibc-hwcaps/x86-64-v3/libz.so.1")
            );
            assert_eq!(c.lookup("libz.so.1", x86, &[]), Some("/usr/lib/libz.so.1"));
            assert_eq!(
                c.lookup("libz.so.1", |f| f == 3, &[]),
                Some("/usr/lib32/libz.so.1")
            );
            assert_eq!(c.lookup("libq.so.1", |f| f == 3, &[]), None);
            assert_eq!(c.lookup("libnone.so", x86, &v3), None);
        }
    }

    #[test]
    fn old_format_prefix_is_skipped() {
        let new = build(&[(X86, "liba.so", "/lib/liba.so", 0)], &[], true);
        let mut old = Vec::new();
        old.extend_from_slice(MAGIC_OLD);
        old.push(0);
        old.extend_from_slice(&1u32.to_le_bytes());
        old.extend_from_slice(&[0; 12]);
        while old.len() % 8 != 0 {
            old.push(0);
        }
        old.extend_from_slice(&new);
        let c = LdCache::parse(&old).unwrap();
        assert_eq!(c.lookup("liba.so", |f| f == X86, &[]), Some("/lib/liba.so"));
    }

    #[test]
    fn old_format_alone() {
        let mut b = Vec::new();
        b.extend_from_slice(MAGIC_OLD);
        b.push(0);
        b.extend_from_slice(&1u32.to_ne_bytes());
        for v in [X86 as u32, 0, 8] {
            b.extend_from_slice(&v.to_ne_bytes());
        }
        b.extend_from_slice(b"liba.so\0/lib/liba.so\0");
        let c = LdCache::parse(&b).unwrap();
        assert_eq!(c.lookup("liba.so", |f| f == X86, &[]), Some("/lib/liba.so"));
        for n in 0..b.len() {
            let _ = LdCache::parse(&b[..n]);
        }
        assert!(LdCache::parse(&b[..20]).is_err());
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let good = build(&[(X86, "liba.so", "/lib/liba.so", 0)], &[], true);
        for n in 0..good.len() {
            let _ = LdCache::parse(&good[..n]);
        }
        assert!(LdCache::parse(b"nonsense").is_err());
        assert!(LdCache::parse(&good[..40]).is_err());
        let mut huge = good.clone();
        huge[20..24].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(LdCache::parse(&huge).is_err());
    }

    #[test]
    fn shared_long_strings_and_odd_files_are_bounded() {
        // 200,000 entries naming one 4000-byte string: 1.6 GB of strings if decoded unbounded.
        let n = 200_000usize;
        let long = "l".repeat(4000);
        let base = 48 + 24 * n;
        let mut b = b"glibc-ld.so.cache1.1".to_vec();
        b.resize(48, 0);
        b[20..24].copy_from_slice(&(n as u32).to_le_bytes());
        b[28] = 2;
        for _ in 0..n {
            for v in [1u32, base as u32, base as u32, 0] {
                b.extend_from_slice(&v.to_le_bytes());
            }
            b.extend_from_slice(&0u64.to_le_bytes());
        }
        b.extend_from_slice(long.as_bytes());
        b.push(0);
        let start = std::time::Instant::now();
        let e = LdCache::parse(&b).unwrap_err();
        assert!(e.contains("bytes of strings"), "{e}");
        assert!(start.elapsed() < std::time::Duration::from_secs(10));
        // A string longer than PATH_MAX is not taken.
        let over = "o".repeat(MAX_STRING + 1);
        let one = build(&[(X86, &over, "/lib/x", 0)], &[], true);
        assert!(LdCache::parse(&one).is_err());

        // A FIFO or a device is not read; a file over the limit is refused.
        let t = tempfile::tempdir().unwrap();
        let fifo = t.path().join("ld.so.cache");
        testkit::mkfifo(&fifo);
        assert!(LdCache::read(&fifo).is_err());
        assert!(LdCache::read(Path::new("/dev/zero")).is_err());
        let big = t.path().join("big");
        let mut bytes = build(&[(X86, "liba.so", "/lib/liba.so", 0)], &[], true);
        bytes.resize(MAX_LDCACHE_BYTES as usize + 1, 0);
        std::fs::write(&big, &bytes).unwrap();
        assert!(LdCache::read(&big).is_err());
        bytes.truncate(MAX_LDCACHE_BYTES as usize);
        std::fs::write(&big, &bytes).unwrap();
        assert_eq!(LdCache::read(&big).unwrap().entries.len(), 1);
    }
}
