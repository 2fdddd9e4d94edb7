//! The parsed view of an ELF file the editor works on: headers, the dynamic section and
//! `.dynstr`, with the checks patchelf makes (in its wording), and the loader rule.

use super::consts::*;
use super::raw::{bad, bytes_at, cstr, unsupported, Ehdr, Fmt, Phdr, Shdr, R};
use super::{ElfSummary, RewriteError};

pub(crate) struct Parsed {
    pub(crate) fmt: Fmt,
    pub(crate) eh: Ehdr,
    pub(crate) phdrs: Vec<Phdr>,
    pub(crate) shdrs: Vec<Shdr>,
    /// Index of PT_DYNAMIC.
    pub(crate) dyn_ph: Option<usize>,
    /// File offset of the dynamic section: PT_DYNAMIC's, else the SHT_DYNAMIC section's (an
    /// object without PT_DYNAMIC is still edited through its section headers, as patchelf does).
    pub(crate) dyn_off: Option<u64>,
    /// Dynamic entries before DT_NULL.
    pub(crate) dyns: Vec<(u64, u64)>,
    /// Entries PT_DYNAMIC has room for.
    pub(crate) dyn_slots: u64,
    /// Whether a DT_NULL ends the entries inside the section.
    pub(crate) dyn_terminated: bool,
    /// `.dynstr`: file offset, address, size.
    pub(crate) strtab: Option<(u64, u64, u64)>,
}

impl Parsed {
    pub(crate) fn parse(b: &[u8]) -> R<Option<Parsed>> {
        let Some((fmt, eh)) = Ehdr::parse(b)? else {
            return Ok(None);
        };
        let mut phdrs = Vec::with_capacity(eh.phnum.into());
        for i in 0..u64::from(eh.phnum) {
            phdrs.push(Phdr::read(
                fmt,
                b,
                eh.phoff.saturating_add(i * fmt.phentsize()),
            )?);
        }
        let mut shdrs = Vec::new();
        if eh.shoff != 0 {
            if eh.shnum == 0 {
                return Err(unsupported("extended section numbering (e_shnum = 0)"));
            }
            for i in 0..u64::from(eh.shnum) {
                shdrs.push(Shdr::read(
                    fmt,
                    b,
                    eh.shoff.saturating_add(i * fmt.shentsize()),
                )?);
            }
        }
        let mut p = Parsed {
            fmt,
            eh,
            phdrs,
            shdrs,
            dyn_ph: None,
            dyn_off: None,
            dyns: Vec::new(),
            dyn_slots: 0,
            dyn_terminated: false,
            strtab: None,
        };
        p.check_section_headers(b)?;
        p.dyn_ph = p.phdrs.iter().position(|ph| ph.p_type == PT_DYNAMIC);
        let dyn_sec = p
            .shdrs
            .iter()
            .find(|s| s.sh_type == SHT_DYNAMIC && s.flags & SHF_ALLOC != 0 && s.size > 0);
        let dyn_place = match p.dyn_ph {
            Some(i) => Some((p.phdrs[i].offset, p.phdrs[i].filesz, "PT_DYNAMIC")),
            None => dyn_sec.map(|s| (s.offset, s.size, "the .dynamic section")),
        };
        if let Some((dyn_off, dyn_size, what)) = dyn_place {
            let es = fmt.dynentsize();
            p.dyn_off = Some(dyn_off);
            p.dyn_slots = dyn_size / es;
            bytes_at(b, dyn_off, p.dyn_slots * es)
                .map_err(|_| bad(format!("{what} is past the end of the file")))?;
            for k in 0..p.dyn_slots {
                let off = dyn_off + k * es;
                let tag = fmt.word(b, off)?;
                let val = fmt.word(b, off + fmt.word_size())?;
                if tag == DT_NULL {
                    p.dyn_terminated = true;
                    break;
                }
                p.dyns.push((tag, val));
            }
            let addr = p.dyn_val(DT_STRTAB);
            let size = p.dyn_val(DT_STRSZ);
            match (addr, size) {
                (Some(addr), Some(size)) => {
                    let off = p.addr_to_off(addr, size).map_err(|_| {
                        bad(format!(
                            "DT_STRTAB {addr:#x} is not inside a loaded segment"
                        ))
                    })?;
                    let table = bytes_at(b, off, size).map_err(|_| {
                        bad("dynamic string table: data region extends past file end")
                    })?;
                    if table.last() != Some(&0) {
                        return Err(bad("dynamic string table is not NUL-terminated"));
                    }
                    p.strtab = Some((off, addr, size));
                }
                _ if p.dyns.iter().any(|&(t, _)| is_string_tag(t)) => {
                    return Err(bad("dynamic section has strings but no DT_STRTAB/DT_STRSZ"))
                }
                _ => {}
            }
        }
        Ok(Some(p))
    }

    /// The section header checks patchelf makes, with its wording: the section name table and
    /// every name in it, and the placement of `.dynamic`.
    pub(crate) fn check_section_headers(&self, b: &[u8]) -> R<()> {
        if self.shdrs.is_empty() {
            return Ok(());
        }
        let idx = usize::from(self.eh.shstrndx);
        if idx != 0 {
            let Some(sh) = self.shdrs.get(idx) else {
                return Err(bad(format!(
                    "section header string table index out of bounds (e_shstrndx {idx}, {} sections)",
                    self.shdrs.len()
                )));
            };
            let names = bytes_at(b, sh.offset, sh.size).map_err(|_| {
                bad(format!(
                    "section header string table: data region extends past file end ({:#x} bytes at {:#x})",
                    sh.size, sh.offset
                ))
            })?;
            match names.last() {
                None => return Err(bad("section header string table size is zero")),
                Some(&c) if c != 0 => {
                    return Err(bad("section header string table is not zero terminated"))
                }
                _ => {}
            }
            for (i, s) in self.shdrs.iter().enumerate().skip(1) {
                if u64::from(s.name) >= sh.size {
                    return Err(bad(format!(
                        "section {i}: section name offset out of bounds ({:#x})",
                        s.name
                    )));
                }
            }
        }
        for s in &self.shdrs {
            if s.sh_type != SHT_DYNAMIC {
                continue;
            }
            if s.offset
                .checked_add(s.size)
                .is_none_or(|end| end > b.len() as u64)
            {
                return Err(bad(format!(
                    "section .dynamic: data offset extends past file end ({:#x} bytes at {:#x})",
                    s.size, s.offset
                )));
            }
            if s.offset % self.fmt.word_size() != 0 {
                return Err(bad(format!(
                    "section .dynamic: section content is not naturally aligned (offset {:#x})",
                    s.offset
                )));
            }
        }
        Ok(())
    }

    /// Name of section `i` (empty when there is no name table).
    pub(crate) fn section_name<'b>(&self, b: &'b [u8], i: usize) -> &'b [u8] {
        let (Some(names), Some(sh)) = (
            self.shdrs.get(usize::from(self.eh.shstrndx)),
            self.shdrs.get(i),
        ) else {
            return b"";
        };
        if self.eh.shstrndx == 0 {
            return b"";
        }
        bytes_at(b, names.offset, names.size)
            .ok()
            .and_then(|t| cstr(t, sh.name.into()).ok())
            .unwrap_or(b"")
    }

    pub(crate) fn dyn_val(&self, tag: u64) -> Option<u64> {
        self.dyns.iter().find(|&&(t, _)| t == tag).map(|&(_, v)| v)
    }

    pub(crate) fn loads(&self) -> impl Iterator<Item = &Phdr> {
        self.phdrs.iter().filter(|ph| ph.p_type == PT_LOAD)
    }

    /// File offset of `len` bytes at address `addr`, inside one PT_LOAD's file image.
    pub(crate) fn addr_to_off(&self, addr: u64, len: u64) -> R<u64> {
        for ph in self.loads() {
            if addr >= ph.vaddr && addr.saturating_add(len) <= ph.vaddr.saturating_add(ph.filesz) {
                return ph.offset.checked_add(addr - ph.vaddr).ok_or_else(|| {
                    bad(format!(
                        "address {addr:#x} maps past the end of the file offsets"
                    ))
                });
            }
        }
        Err(bad(format!(
            "address {addr:#x} is not inside a loaded segment"
        )))
    }

    pub(crate) fn string(&self, b: &[u8], off: u64) -> R<String> {
        let (so, _, size) = self.strtab.ok_or_else(|| bad("no dynamic string table"))?;
        let table = bytes_at(b, so, size)?;
        Ok(String::from_utf8_lossy(cstr(table, off)?).into_owned())
    }

    pub(crate) fn interp(&self, b: &[u8]) -> R<Option<String>> {
        let Some(ph) = self.phdrs.iter().find(|ph| ph.p_type == PT_INTERP) else {
            return Ok(None);
        };
        let bytes = bytes_at(b, ph.offset, ph.filesz)
            .map_err(|_| bad("PT_INTERP is past the end of the file"))?;
        let end = bytes.iter().position(|&c| c == 0).unwrap_or(bytes.len());
        Ok(Some(String::from_utf8_lossy(&bytes[..end]).into_owned()))
    }

    pub(crate) fn summary(&self, b: &[u8]) -> R<ElfSummary> {
        let mut s = ElfSummary {
            class64: self.fmt.is64,
            little_endian: self.fmt.le,
            machine: self.eh.machine,
            e_type: self.eh.e_type,
            interpreter: self.interp(b)?,
            has_dynamic: self.dyn_off.is_some(),
            ..ElfSummary::default()
        };
        for &(tag, val) in &self.dyns {
            match tag {
                DT_NEEDED => s.needed.push(self.string(b, val)?),
                DT_SONAME => s.soname = Some(self.string(b, val)?),
                DT_RPATH => s.rpath = Some(self.string(b, val)?),
                DT_RUNPATH => s.runpath = Some(self.string(b, val)?),
                DT_FLAGS_1 => s.flags_1 = val,
                _ => {}
            }
        }
        Ok(s)
    }

    /// `.dynsym`: file offset and symbol count, from the section headers.
    pub(crate) fn dynsym(&self) -> Option<(u64, u64)> {
        let sh = self.shdrs.iter().find(|s| s.sh_type == SHT_DYNSYM)?;
        let es = if self.fmt.is64 { 24 } else { 16 };
        Some((sh.offset, sh.size / es))
    }
}

/// Whether a file name is a dynamic loader's (glibc's `ld-linux*`, `ld64.so*`, `ld.so*`, musl's
/// `ld-musl-*`): the one file the editor refuses to change.
pub fn is_loader_name(name: &str) -> bool {
    name.starts_with("ld-linux")
        || name.starts_with("ld64.so")
        || name.starts_with("ld.so")
        || name.starts_with("ld-musl-")
}

impl Parsed {
    /// Parses `input` for an edit: an executable or shared object that is not the loader
    /// (recognised by SONAME, or by `file_name` when it has none).
    pub(crate) fn editable(input: &[u8], file_name: Option<&str>) -> R<Parsed> {
        let p = Parsed::parse(input)?.ok_or(RewriteError::NotElf)?;
        if p.eh.e_type != 2 && p.eh.e_type != 3 {
            return Err(unsupported(format!(
                "ELF type {} is neither an executable nor a shared object",
                p.eh.e_type
            )));
        }
        refuse_loader(&p, input, file_name)?;
        Ok(p)
    }
}

/// The loader rule: an object with no DT_NEEDED named like a loader is the loader.
fn refuse_loader(p: &Parsed, b: &[u8], file_name: Option<&str>) -> R<()> {
    if p.dyn_off.is_none() || p.dyns.iter().any(|&(t, _)| t == DT_NEEDED) {
        return Ok(());
    }
    let soname = match p.dyn_val(DT_SONAME) {
        Some(v) => Some(p.string(b, v)?),
        None => None,
    };
    for name in soname.iter().map(String::as_str).chain(file_name) {
        if is_loader_name(name) || (name == "libc.so" && p.interp(b)?.is_none()) {
            return Err(RewriteError::Loader(name.to_string()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loader_names() {
        for (name, loader) in [
            ("ld-linux-x86-64.so.2", true),
            ("ld-linux-aarch64.so.1", true),
            ("ld64.so.2", true),
            ("ld-musl-x86_64.so.1", true),
            ("libc.so.6", false),
            ("libld.so", false),
        ] {
            assert_eq!(is_loader_name(name), loader, "{name}");
        }
    }
}
