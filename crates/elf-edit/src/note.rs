//! Allocated note sections: find one by section name, add one, remove one.
//!
//! [`add_note_section`] places the note (header, owner, descriptor) in a new PT_LOAD appended
//! after everything in the file, through the same layout step that grows `.dynamic`: the
//! program header table grows where it is by two entries (the PT_LOAD and a PT_NOTE covering
//! exactly the note, so a loader walking the program headers finds it). The section header
//! table and the section name table, which are not loaded, are written again after the new
//! segment with one more entry (`SHT_NOTE`, `SHF_ALLOC`) and its name; nothing before them
//! moves.
//!
//! [`remove_note_section`] undoes that: the note's bytes are zeroed, the PT_LOAD and PT_NOTE
//! that cover exactly the note are dropped, and its section header is removed with every
//! section index that follows it renumbered (`e_shstrndx`, `sh_link`, `sh_info` of relocation
//! sections, `st_shndx` of `.symtab` and `.dynsym`).
//!
//! Both outputs are parsed and verified again before they are returned.

use super::consts::*;
use super::raw::{bad, bytes_at, bytes_at_mut, cstr, unsupported, Fmt, Phdr, Shdr, R};
use super::{layout, verify, LayoutInput, Parsed, RewriteError, Strings};

const SHT_SYMTAB: u32 = 2;
const SHF_INFO_LINK: u64 = 0x40;
const SHN_LORESERVE: u16 = 0xff00;

/// A note to add as its own allocated section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note<'a> {
    /// Section name, e.g. `.note.nixos.ldcache`.
    pub section: &'a str,
    /// The note's owner (`n_name`, written NUL-terminated).
    pub owner: &'a str,
    /// `n_type`.
    pub n_type: u32,
    /// The descriptor, written as is (padded to 4 bytes).
    pub desc: &'a [u8],
}

/// The first note of a section, when its header is well formed and fits the section.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct NoteEntry {
    pub owner: String,
    pub n_type: u32,
    pub desc: Vec<u8>,
}

/// A section found by name with [`find_note_section`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct NoteSection {
    /// Index in the section header table.
    pub index: usize,
    /// `SHF_ALLOC` is set.
    pub allocated: bool,
    /// `None` when the section is too short for a note or its sizes do not fit it.
    pub entry: Option<NoteEntry>,
}

fn shstrndx_off(fmt: Fmt) -> u64 {
    38 + 3 * fmt.word_size()
}

fn shoff_off(fmt: Fmt) -> u64 {
    24 + 2 * fmt.word_size()
}

fn shnum_off(fmt: Fmt) -> u64 {
    36 + 3 * fmt.word_size()
}

/// The section name table's index and bytes.
fn name_table<'b>(p: &Parsed, b: &'b [u8]) -> R<(usize, &'b [u8])> {
    let idx = usize::from(p.fmt.u16(b, shstrndx_off(p.fmt))?);
    let sh = p.shdrs.get(idx).ok_or_else(|| {
        bad(format!(
            "section name table index {idx} is past the {} section headers",
            p.shdrs.len()
        ))
    })?;
    if idx == 0 || sh.sh_type == SHT_NOBITS {
        return Err(bad("no section name table"));
    }
    let table = bytes_at(b, sh.offset, sh.size)
        .map_err(|_| bad("the section name table is past the end of the file"))?;
    Ok((idx, table))
}

/// The section named `name`; none when there are no section names to look at (edits of such
/// a file must not fail for the lack of a note).
fn find_index(p: &Parsed, b: &[u8], name: &str) -> R<Option<usize>> {
    let Ok((_, table)) = name_table(p, b) else {
        return Ok(None);
    };
    Ok(p.shdrs
        .iter()
        .position(|sh| cstr(table, sh.name.into()).ok() == Some(name.as_bytes())))
}

fn parse_entry(fmt: Fmt, bytes: &[u8]) -> Option<NoteEntry> {
    let namesz = u64::from(fmt.u32(bytes, 0).ok()?);
    let descsz = u64::from(fmt.u32(bytes, 4).ok()?);
    let n_type = fmt.u32(bytes, 8).ok()?;
    let name = bytes_at(bytes, 12, namesz).ok()?;
    let desc_at = 12u64.checked_add(namesz.checked_add(3)? / 4 * 4)?;
    let desc = bytes_at(bytes, desc_at, descsz).ok()?;
    let end = name.iter().position(|&c| c == 0).unwrap_or(name.len());
    Some(NoteEntry {
        owner: String::from_utf8_lossy(&name[..end]).into_owned(),
        n_type,
        desc: desc.to_vec(),
    })
}

/// The section named `name`, with its first note when it holds one.
pub fn find_note_section(input: &[u8], name: &str) -> Result<Option<NoteSection>, RewriteError> {
    let p = Parsed::parse(input)?.ok_or(RewriteError::NotElf)?;
    let Some(index) = find_index(&p, input, name)? else {
        return Ok(None);
    };
    let sh = p.shdrs[index];
    let entry = if sh.sh_type == SHT_NOBITS {
        None
    } else {
        bytes_at(input, sh.offset, sh.size)
            .ok()
            .and_then(|b| parse_entry(p.fmt, b))
    };
    Ok(Some(NoteSection {
        index,
        allocated: sh.flags & SHF_ALLOC != 0,
        entry,
    }))
}

/// The bytes of one note: header, owner padded to 4, descriptor padded to 4.
fn note_bytes(fmt: Fmt, note: &Note<'_>) -> R<Vec<u8>> {
    let too_big = || unsupported("the note is too large");
    let namesz = u32::try_from(note.owner.len() + 1).map_err(|_| too_big())?;
    let descsz = u32::try_from(note.desc.len()).map_err(|_| too_big())?;
    let pad = |n: usize| n.div_ceil(4) * 4;
    let mut b = vec![0u8; 12 + pad(namesz as usize) + pad(note.desc.len())];
    fmt.put32(&mut b, 0, namesz)?;
    fmt.put32(&mut b, 4, descsz)?;
    fmt.put32(&mut b, 8, note.n_type)?;
    b[12..12 + note.owner.len()].copy_from_slice(note.owner.as_bytes());
    let d = 12 + pad(namesz as usize);
    b[d..d + note.desc.len()].copy_from_slice(note.desc);
    Ok(b)
}

/// Write every field of a section header.
fn write_shdr(fmt: Fmt, b: &mut [u8], off: u64, sh: &Shdr) -> R<()> {
    let w = fmt.word_size();
    fmt.put32(b, off, sh.name)?;
    fmt.put32(b, off + 4, sh.sh_type)?;
    fmt.put_word(b, off + 8, sh.flags)?;
    fmt.put_word(b, off + 8 + w, sh.addr)?;
    fmt.put_word(b, off + 8 + 2 * w, sh.offset)?;
    fmt.put_word(b, off + 8 + 3 * w, sh.size)?;
    fmt.put32(b, off + 8 + 4 * w, sh.link)?;
    fmt.put32(b, off + 12 + 4 * w, sh.info)?;
    fmt.put_word(b, off + 16 + 4 * w, sh.addralign)?;
    fmt.put_word(b, off + 16 + 5 * w, sh.entsize)
}

/// A copy of `input` with `note` added as an allocated note section covered by a PT_NOTE.
///
/// Refused when a section of that name exists already, when the file has no section headers,
/// or when it is the dynamic loader.
pub fn add_note_section(input: &[u8], note: &Note<'_>) -> Result<Vec<u8>, RewriteError> {
    let p = Parsed::editable(input, None)?;
    let fmt = p.fmt;
    if p.shdrs.is_empty() {
        return Err(unsupported("no section headers: cannot add a note section"));
    }
    if find_index(&p, input, note.section)?.is_some() {
        return Err(unsupported(format!(
            "a section named {} exists already",
            note.section
        )));
    }
    let shnum = p.shdrs.len() + 1;
    if shnum >= usize::from(SHN_LORESERVE) {
        return Err(unsupported("too many sections to add one"));
    }
    let (names_idx, names) = name_table(&p, input)?;
    let mut new_names = names.to_vec();
    let name_off =
        u32::try_from(new_names.len()).map_err(|_| unsupported("section name table too large"))?;
    new_names.extend_from_slice(note.section.as_bytes());
    new_names.push(0);
    let before = p.summary(input)?;
    let bytes = note_bytes(fmt, note)?;

    let mut out = input.to_vec();
    let strings = Strings {
        table: match p.strtab {
            Some((o, _, s)) => bytes_at(input, o, s)?.to_vec(),
            None => Vec::new(),
        },
        extra: Vec::new(),
    };
    let (note_off, note_addr) = layout(
        &p,
        input,
        &mut out,
        LayoutInput {
            dyns: p.dyns.clone(),
            new_interp: None,
            dyn_moves: false,
            strings: &strings,
            verneed_count: None,
            note: Some(&bytes),
        },
    )?
    .ok_or_else(|| bad("the note was not placed"))?;

    // The section headers as layout left them, then the new one; the section name table
    // with the new name; both after the new segment.
    let shsz = fmt.shentsize();
    let shoff = fmt.word(&out, shoff_off(fmt))?;
    let mut shdrs = Vec::with_capacity(shnum);
    for i in 0..p.shdrs.len() as u64 {
        shdrs.push(Shdr::read(fmt, &out, shoff + i * shsz)?);
    }
    // Layout moved the table to the end when it ended the input: clear it there, it is
    // written again below with the new entry.
    if shoff != p.eh.shoff {
        out.truncate(shoff as usize);
    }
    let names_at = out.len() as u64;
    out.extend_from_slice(&new_names);
    shdrs[names_idx].offset = names_at;
    shdrs[names_idx].size = new_names.len() as u64;
    shdrs.push(Shdr {
        name: name_off,
        sh_type: SHT_NOTE,
        flags: SHF_ALLOC,
        addr: note_addr,
        offset: note_off,
        size: bytes.len() as u64,
        link: 0,
        info: 0,
        addralign: 4,
        entsize: 0,
    });
    let table_at = super::align_up(out.len() as u64, fmt.word_size())?;
    out.resize((table_at + shnum as u64 * shsz) as usize, 0);
    for (i, sh) in shdrs.iter().enumerate() {
        write_shdr(fmt, &mut out, table_at + i as u64 * shsz, sh)?;
    }
    fmt.put_word(&mut out, shoff_off(fmt), table_at)?;
    fmt.put16(&mut out, shnum_off(fmt), shnum as u16)?;

    verify(&out, input, &before)?;
    verify_note(&out, note, &bytes)?;
    Ok(out)
}

/// The added note is where its section header says, allocated, inside a PT_LOAD and covered
/// by a PT_NOTE.
fn verify_note(out: &[u8], note: &Note<'_>, bytes: &[u8]) -> R<()> {
    let fail = |m: &str| RewriteError::Verify(format!("the added note {}: {m}", note.section));
    let p = Parsed::parse(out)?.ok_or_else(|| fail("output is not ELF"))?;
    let idx = find_index(&p, out, note.section)?.ok_or_else(|| fail("no such section"))?;
    let sh = p.shdrs[idx];
    if sh.sh_type != SHT_NOTE || sh.flags & SHF_ALLOC == 0 {
        return Err(fail("not an allocated SHT_NOTE section"));
    }
    if bytes_at(out, sh.offset, sh.size).ok() != Some(bytes) {
        return Err(fail("its bytes differ from the note"));
    }
    if p.addr_to_off(sh.addr, sh.size).ok() != Some(sh.offset) {
        return Err(fail("not inside a PT_LOAD at its address"));
    }
    let covered = p.phdrs.iter().any(|ph| {
        ph.p_type == PT_NOTE
            && ph.offset == sh.offset
            && ph.vaddr == sh.addr
            && ph.filesz == sh.size
    });
    if !covered {
        return Err(fail("no PT_NOTE covers it"));
    }
    let entry = parse_entry(p.fmt, bytes).ok_or_else(|| fail("malformed"))?;
    if entry.owner != note.owner || entry.n_type != note.n_type || entry.desc != note.desc {
        return Err(fail("reads back differently"));
    }
    Ok(())
}

fn renumber(v: u32, removed: usize) -> u32 {
    match (v as usize).cmp(&removed) {
        std::cmp::Ordering::Equal => 0,
        std::cmp::Ordering::Greater => v - 1,
        std::cmp::Ordering::Less => v,
    }
}

/// A copy of `input` without the section named `name` (`None`: there is none).
///
/// The note's bytes are zeroed (the descriptor may name paths that are stale now), the
/// PT_LOAD and PT_NOTE covering exactly it are dropped and later section indices renumbered.
pub fn remove_note_section(input: &[u8], name: &str) -> Result<Option<Vec<u8>>, RewriteError> {
    let p = Parsed::parse(input)?.ok_or(RewriteError::NotElf)?;
    let fmt = p.fmt;
    let Some(idx) = find_index(&p, input, name)? else {
        return Ok(None);
    };
    let (names_idx, _) = name_table(&p, input)?;
    if names_idx == idx {
        return Err(unsupported(format!(
            "cannot remove {name}: it is the section name table"
        )));
    }
    let before = p.summary(input)?;
    let sh = p.shdrs[idx];
    let mut out = input.to_vec();
    if sh.sh_type != SHT_NOBITS {
        if let Ok(b) = bytes_at_mut(&mut out, sh.offset, sh.size) {
            b.fill(0);
        }
    }

    // Program headers.
    if sh.flags & SHF_ALLOC != 0 && sh.size > 0 {
        let covers = |ph: &Phdr| {
            matches!(ph.p_type, PT_LOAD | PT_NOTE) && ph.offset == sh.offset && ph.filesz == sh.size
        };
        let dropped = p.phdrs.iter().filter(|ph| covers(ph)).count() as u64;
        if dropped > 0 {
            let phsz = fmt.phentsize();
            let mut kept: Vec<Phdr> = p.phdrs.iter().filter(|ph| !covers(ph)).copied().collect();
            for ph in kept.iter_mut().filter(|ph| ph.p_type == PT_PHDR) {
                ph.filesz = ph.filesz.saturating_sub(dropped * phsz);
                ph.memsz = ph.memsz.saturating_sub(dropped * phsz);
            }
            bytes_at_mut(&mut out, p.eh.phoff, p.phdrs.len() as u64 * phsz)?.fill(0);
            for (i, ph) in kept.iter().enumerate() {
                ph.write(fmt, &mut out, p.eh.phoff + i as u64 * phsz)?;
            }
            super::raw::Ehdr::write_phnum(fmt, &mut out, kept.len() as u16)?;
        }
    }

    // Section headers: later ones move down a slot, indices follow.
    let shsz = fmt.shentsize();
    let mut shdrs: Vec<Shdr> = p.shdrs.clone();
    shdrs.remove(idx);
    for s in shdrs.iter_mut() {
        s.link = renumber(s.link, idx);
        if matches!(s.sh_type, SHT_REL | SHT_RELA) || s.flags & SHF_INFO_LINK != 0 {
            s.info = renumber(s.info, idx);
        }
    }
    bytes_at_mut(&mut out, p.eh.shoff, p.shdrs.len() as u64 * shsz)?.fill(0);
    for (i, s) in shdrs.iter().enumerate() {
        write_shdr(fmt, &mut out, p.eh.shoff + i as u64 * shsz, s)?;
    }
    fmt.put16(&mut out, shnum_off(fmt), shdrs.len() as u16)?;
    let names_new = renumber(names_idx as u32, idx) as u16;
    fmt.put16(&mut out, shstrndx_off(fmt), names_new)?;

    // Symbols that name a section by index.
    for s in &shdrs {
        if s.sh_type != SHT_SYMTAB && s.sh_type != SHT_DYNSYM {
            continue;
        }
        let (es, at) = if fmt.is64 { (24, 6) } else { (16, 14) };
        bytes_at(&out, s.offset, s.size)
            .map_err(|_| bad("a symbol table is past the end of the file"))?;
        for k in 0..s.size / es {
            let off = s.offset + k * es + at;
            let shndx = fmt.u16(&out, off)?;
            if shndx != 0 && shndx < SHN_LORESERVE && usize::from(shndx) >= idx {
                fmt.put16(&mut out, off, renumber(shndx.into(), idx) as u16)?;
            }
        }
    }

    verify(&out, input, &before)?;
    let q = Parsed::parse(&out)?.ok_or(RewriteError::NotElf)?;
    if find_index(&q, &out, name)?.is_some() {
        return Err(RewriteError::Verify(format!(
            "section {name} is still there after its removal"
        )));
    }
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn note_bytes_are_padded_and_read_back() {
        for fmt in [
            Fmt {
                is64: true,
                le: true,
            },
            Fmt {
                is64: false,
                le: false,
            },
        ] {
            let n = Note {
                section: ".note.x",
                owner: "NixOS",
                n_type: 0x63a8_6cb6,
                desc: b"a\0=b\0\0",
            };
            let b = note_bytes(fmt, &n).unwrap();
            assert_eq!(b.len(), 12 + 8 + 8);
            let e = parse_entry(fmt, &b).unwrap();
            assert_eq!(e.owner, "NixOS");
            assert_eq!(e.n_type, 0x63a8_6cb6);
            assert_eq!(e.desc, n.desc);
            // Truncated or oversized notes are not read past their end.
            assert!(parse_entry(fmt, &b[..11]).is_none());
            assert!(parse_entry(fmt, &b[..20]).is_none());
            assert!(parse_entry(fmt, b"x").is_none());
        }
    }

    #[test]
    fn renumbering_follows_the_removed_index() {
        assert_eq!(renumber(3, 5), 3);
        assert_eq!(renumber(5, 5), 0);
        assert_eq!(renumber(6, 5), 5);
    }
}
