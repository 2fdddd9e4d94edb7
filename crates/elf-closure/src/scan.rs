//! The ELF header scan: the loader's view (program headers, PT_DYNAMIC through PT_LOAD), so
//! files without section headers are read like the loader reads them.
//!
//! Reads are bounded: no single read (program headers, PT_INTERP, the dynamic section, the
//! string table) may exceed [`MAX_ELF_READ`], whatever sizes the file declares, and files are
//! read in place through [`ReadCache`] (only the parts asked for).

use std::io::{Read, Seek};
use std::ops::Range;
use std::path::Path;

use object::elf;
use object::read::elf::{Dyn, FileHeader, ProgramHeader};
use object::read::{ReadCache, ReadRef};
use object::Endianness;

use super::{ElfError, ElfInfo};

/// Scans ELF bytes. `Ok(None)` when the bytes do not start with the ELF magic.
pub fn scan(bytes: &[u8]) -> Result<Option<ElfInfo>, ElfError> {
    scan_ref(bytes, "ELF data")
}

/// The most one read of the scan may ask for: 16 MiB (a real PT_INTERP, dynamic section or
/// string table is far smaller).
pub const MAX_ELF_READ: u64 = 16 << 20;

/// Scans a file on the host, reading only the parts the scan needs. The file is opened
/// without blocking (a FIFO does not hang) and must be a regular file.
pub fn scan_file(path: &Path) -> Result<Option<ElfInfo>, ElfError> {
    let opened = safefs::tree::open_regular(path).map_err(|source| ElfError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    match opened {
        Ok(file) => scan_reader(file, &path.display().to_string()),
        Err(_) => Ok(None),
    }
}

/// Scans what `r` reads (a file of an image, read in place), reading only the parts the scan
/// needs, each at most [`MAX_ELF_READ`]; `what` names it in errors.
pub fn scan_reader<R: Read + Seek>(r: R, what: &str) -> Result<Option<ElfInfo>, ElfError> {
    let cache = ReadCache::new(r);
    scan_ref(Capped(&cache), what)
}

/// A [`ReadRef`] refusing single reads larger than [`MAX_ELF_READ`].
#[derive(Clone, Copy)]
struct Capped<R>(R);

impl<'data, R: ReadRef<'data>> ReadRef<'data> for Capped<R> {
    fn len(self) -> Result<u64, ()> {
        self.0.len()
    }

    fn read_bytes_at(self, offset: u64, size: u64) -> Result<&'data [u8], ()> {
        if size > MAX_ELF_READ {
            return Err(());
        }
        self.0.read_bytes_at(offset, size)
    }

    fn read_bytes_at_until(self, range: Range<u64>, delimiter: u8) -> Result<&'data [u8], ()> {
        self.0.read_bytes_at_until(range, delimiter)
    }
}

fn malformed(what: &str, reason: impl Into<String>) -> ElfError {
    ElfError::Malformed {
        what: what.to_string(),
        reason: reason.into(),
    }
}

fn scan_ref<'data, R: ReadRef<'data>>(data: R, what: &str) -> Result<Option<ElfInfo>, ElfError> {
    let ident = match data.read_bytes_at(0, 16) {
        Ok(b) => b,
        Err(()) => {
            // Shorter than an ELF ident: an ELF file only if the magic is there.
            let n = data.len().unwrap_or(0).min(4);
            let head = data.read_bytes_at(0, n).unwrap_or(&[]);
            if n == 4 && head == &elf::ELFMAG[..] {
                return Err(malformed(what, "truncated ELF header"));
            }
            return Ok(None);
        }
    };
    if ident[..4] != elf::ELFMAG[..] {
        return Ok(None);
    }
    match elf::FileClass(ident[4]) {
        elf::ELFCLASS32 => parse::<elf::FileHeader32<Endianness>, R>(data, what).map(Some),
        elf::ELFCLASS64 => parse::<elf::FileHeader64<Endianness>, R>(data, what).map(Some),
        c => Err(malformed(what, format!("unknown ELF class {}", c.0))),
    }
}

fn parse<'data, H: FileHeader<Endian = Endianness>, R: ReadRef<'data>>(
    data: R,
    what: &str,
) -> Result<ElfInfo, ElfError> {
    let header = H::parse(data).map_err(|e| malformed(what, e.to_string()))?;
    let endian = header
        .endian()
        .map_err(|e| malformed(what, e.to_string()))?;
    let phdrs = header
        .program_headers(endian, data)
        .map_err(|e| malformed(what, e.to_string()))?;
    let mut info = ElfInfo {
        class64: header.is_class_64(),
        little_endian: header.is_little_endian(),
        machine: header.e_machine(endian).0,
        e_type: header.e_type(endian).0,
        interpreter: None,
        needed: Vec::new(),
        soname: None,
        rpath: Vec::new(),
        runpath: Vec::new(),
        nodeflib: false,
        is_dynamic: false,
    };
    let mut dynamic = None;
    for ph in phdrs {
        match ph.p_type(endian) {
            elf::PT_INTERP => {
                let bytes = ph
                    .data(endian, data)
                    .map_err(|()| malformed(what, "PT_INTERP lies outside the file"))?;
                let end = bytes.iter().position(|b| *b == 0).unwrap_or(bytes.len());
                info.interpreter = Some(String::from_utf8_lossy(&bytes[..end]).into_owned());
            }
            elf::PT_DYNAMIC => {
                info.is_dynamic = true;
                let dyns = ph
                    .dynamic(endian, data)
                    .map_err(|e| malformed(what, e.to_string()))?;
                dynamic = dyns;
            }
            _ => {}
        }
    }
    let Some(dyns) = dynamic else {
        return Ok(info);
    };
    let mut strtab = None;
    let mut strsz = None;
    let mut needed = Vec::new();
    let mut soname = None;
    let mut rpath = None;
    let mut runpath = None;
    for d in dyns {
        let tag = d.d_tag(endian);
        let val: u64 = d.d_val(endian).into();
        match tag {
            elf::DT_NULL => break,
            elf::DT_STRTAB => strtab = Some(val),
            elf::DT_STRSZ => strsz = Some(val),
            elf::DT_NEEDED => needed.push(val),
            elf::DT_SONAME => soname = Some(val),
            elf::DT_RPATH => rpath = Some(val),
            elf::DT_RUNPATH => runpath = Some(val),
            elf::DT_FLAGS_1 => info.nodeflib |= val & elf::DF_1_NODEFLIB.0 != 0,
            _ => {}
        }
    }
    let has_strings =
        !needed.is_empty() || soname.is_some() || rpath.is_some() || runpath.is_some();
    if !has_strings {
        return Ok(info);
    }
    let strtab = strtab.ok_or_else(|| malformed(what, "DT_STRTAB missing"))?;
    let (str_off, str_len) = vaddr_to_file::<H>(phdrs, endian, strtab, strsz).ok_or_else(|| {
        malformed(
            what,
            format!("DT_STRTAB {strtab:#x} is not in a PT_LOAD segment"),
        )
    })?;
    let table = data
        .read_bytes_at(str_off, str_len)
        .map_err(|()| malformed(what, "string table lies outside the file"))?;
    let get = |off: u64| -> Result<String, ElfError> {
        let start = usize::try_from(off)
            .ok()
            .filter(|s| *s < table.len())
            .ok_or_else(|| malformed(what, format!("string offset {off:#x} out of range")))?;
        let rest = &table[start..];
        let end = rest
            .iter()
            .position(|b| *b == 0)
            .ok_or_else(|| malformed(what, format!("string at {off:#x} is not terminated")))?;
        Ok(String::from_utf8_lossy(&rest[..end]).into_owned())
    };
    for n in needed {
        info.needed.push(get(n)?);
    }
    if let Some(s) = soname {
        info.soname = Some(get(s)?);
    }
    if let Some(r) = rpath {
        info.rpath = get(r)?.split(':').map(str::to_string).collect();
    }
    if let Some(r) = runpath {
        info.runpath = get(r)?.split(':').map(str::to_string).collect();
    }
    Ok(info)
}

/// Maps a virtual address to (file offset, bytes available in the file from there), capped by
/// `size` when given.
fn vaddr_to_file<H: FileHeader<Endian = Endianness>>(
    phdrs: &[H::ProgramHeader],
    endian: Endianness,
    addr: u64,
    size: Option<u64>,
) -> Option<(u64, u64)> {
    for ph in phdrs {
        if ph.p_type(endian) != elf::PT_LOAD {
            continue;
        }
        let vaddr: u64 = ph.p_vaddr(endian).into();
        let filesz: u64 = ph.p_filesz(endian).into();
        let offset: u64 = ph.p_offset(endian).into();
        if addr >= vaddr && addr - vaddr < filesz {
            let delta = addr - vaddr;
            let avail = filesz - delta;
            let len = size.map_or(avail, |s| s.min(avail));
            return Some((offset.checked_add(delta)?, len));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_elf_is_none() {
        for bytes in [&b""[..], b"#!/bin/sh\n", b"\x7fEL", b"MZ\x90\x00"] {
            assert_eq!(scan(bytes).unwrap(), None, "{bytes:?}");
        }
    }

    #[test]
    fn bad_class_and_short_header_are_errors() {
        assert!(scan(b"\x7fELF").is_err());
        let mut b = vec![0u8; 64];
        b[..4].copy_from_slice(&elf::ELFMAG);
        b[4] = 7;
        assert!(scan(&b).is_err());
    }

    /// Builds a minimal dynamic ELF of any class and byte order: one PT_LOAD mapping the whole
    /// file at address 0x1000 + offset, PT_INTERP, PT_DYNAMIC.
    fn synth(class64: bool, le: bool, machine: u16) -> Vec<u8> {
        let word = if class64 { 8 } else { 4 };
        let put = |out: &mut Vec<u8>, v: u64, n: usize| {
            let b = v.to_be_bytes();
            let b = &b[8 - n..];
            if le {
                out.extend(b.iter().rev());
            } else {
                out.extend_from_slice(b);
            }
        };
        let (ehsize, phentsize) = if class64 { (64, 56) } else { (52, 32) };
        let base = 0x1000u64;
        let interp = b"/lib/ld-test.so.1\0";
        let strtab = b"\0libfoo.so.1\0libbar.so\0libme.so\0/opt/a:$ORIGIN/../lib\0/r\0";
        let interp_off = ehsize + 3 * phentsize;
        let str_off = interp_off + interp.len();
        let dyn_off = (str_off + strtab.len()).next_multiple_of(8);
        let dyns: [(u64, u64); 9] = [
            (1, 1),
            (1, 13),
            (14, 23),
            (15, 32),
            (29, 54),
            (0x6fff_fffb, 0x800),
            (5, base + str_off as u64),
            (10, strtab.len() as u64),
            (0, 0),
        ];
        let total = dyn_off + dyns.len() * 2 * word;
        let mut o = Vec::new();
        o.extend_from_slice(&elf::ELFMAG);
        o.extend_from_slice(&[if class64 { 2 } else { 1 }, if le { 1 } else { 2 }, 1, 0]);
        o.extend_from_slice(&[0; 8]);
        put(&mut o, 3, 2);
        put(&mut o, u64::from(machine), 2);
        put(&mut o, 1, 4);
        put(&mut o, 0, word);
        put(&mut o, ehsize as u64, word);
        put(&mut o, 0, word);
        put(&mut o, 0, 4);
        for v in [ehsize, phentsize, 3, 0, 0, 0] {
            put(&mut o, v as u64, 2);
        }
        assert_eq!(o.len(), ehsize);
        for (ty, off, size) in [
            (1u64, 0usize, total),
            (3, interp_off, interp.len()),
            (2, dyn_off, total - dyn_off),
        ] {
            let (off, size, addr) = (off as u64, size as u64, base + off as u64);
            put(&mut o, ty, 4);
            if class64 {
                put(&mut o, 4, 4);
            }
            for v in [off, addr, addr, size, size] {
                put(&mut o, v, word);
            }
            if !class64 {
                put(&mut o, 4, 4);
            }
            put(&mut o, 8, word);
        }
        o.extend_from_slice(interp);
        o.extend_from_slice(strtab);
        o.resize(dyn_off, 0);
        for (t, v) in dyns {
            put(&mut o, t, word);
            put(&mut o, v, word);
        }
        assert_eq!(o.len(), total);
        o
    }

    #[test]
    fn all_classes_and_byte_orders() {
        for (class64, le, machine) in [
            (true, true, elf::EM_X86_64.0),
            (true, false, elf::EM_S390.0),
            (false, true, elf::EM_386.0),
            (false, false, elf::EM_PPC.0),
        ] {
            let bytes = synth(class64, le, machine);
            let info = scan(&bytes).unwrap().unwrap();
            assert_eq!(
                info,
                ElfInfo {
                    class64,
                    little_endian: le,
                    machine,
                    e_type: elf::ET_DYN.0,
                    interpreter: Some("/lib/ld-test.so.1".into()),
                    needed: vec!["libfoo.so.1".into(), "libbar.so".into()],
                    soname: Some("libme.so".into()),
                    rpath: vec!["/opt/a".into(), "$ORIGIN/../lib".into()],
                    runpath: vec!["/r".into()],
                    nodeflib: true,
                    is_dynamic: true,
                },
                "class64={class64} le={le}"
            );
            for n in 0..bytes.len() {
                let r = scan(&bytes[..n]);
                assert!(!matches!(r, Ok(Some(_))), "cut at {n} of {}", bytes.len());
            }
        }
    }
}
