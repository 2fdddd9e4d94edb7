//! ELF rewriting: interpreter, RUNPATH/RPATH, DF_1_NODEFLIB, SONAME and DT_NEEDED edits.
//!
//! The rewriter edits the file in place and keeps every byte it does not need to change:
//!
//! 1. Edits that fit are made where the data lives: a shorter interpreter overwrites PT_INTERP
//!    (zero padded), strings already present in `.dynstr` are reused, a new RUNPATH that fits in
//!    the old one's unshared slot overwrites it, and `.dynamic` is rewritten in its own slots.
//! 2. Otherwise the grown `.interp`, `.dynstr` and `.dynamic` go into one new read-write
//!    PT_LOAD appended after everything in the file (appended payloads stay where they are),
//!    at the end of the address space, aligned to the largest PT_LOAD `p_align` (64 KiB on arm64)
//!    with `p_offset ≡ p_vaddr` modulo that alignment.
//! 3. The program header table grows where it is, inside the first PT_LOAD, so the kernel and
//!    glibc find it as they always did (PT_PHDR stays covered by a PT_LOAD; `strip` accepts the
//!    result). The room comes from moving the read-only, position-independent sections that
//!    follow the table (`.interp`, notes, hashes, `.dynsym`, `.dynstr`, version tables,
//!    relocation tables) as one block into the new segment, which keeps their relative layout;
//!    program headers (PT_NOTE, PT_INTERP, PT_GNU_PROPERTY), section headers and every
//!    address-valued dynamic tag that pointed into the block are moved with it. Without section
//!    headers (`sstrip`), the block is made of what the program headers describe there: the
//!    interpreter string and the notes.
//!    A section header table that ended the input file is written again after the new segment
//!    (its old place cleared), so it still ends the file.
//! 4. DT_NEEDED edits keep `.gnu.version_r` consistent: a replaced library's `vn_file` is renamed;
//!    a removed library's version needs are dropped and the symbols that referred to them become
//!    unversioned (`.gnu.version` index 1).
//! 5. An allocated note section ([`add_note_section`]) goes into the new segment too, covered by
//!    its own PT_NOTE, with a new section header and name; [`remove_note_section`] drops it.
//! 6. Renamed dynamic symbols get their new names appended to `.dynstr`; `.gnu.hash` and
//!    `.hash` are rebuilt for them (the hashed symbols re-sorted by bucket, with `.gnu.version`
//!    and the relocations following), see the `symbols` module.
//!
//! A RUNPATH/RPATH string that nothing else shares is overwritten with `X`s when it is replaced
//! (patchelf does the same), so an old search path does not linger in the file. An object
//! without PT_DYNAMIC is edited through its `.dynamic` section header. Malformed input is
//! refused with patchelf's wording for the same check ("string table index out of bounds",
//! "section headers have wrong size", ...).
//!
//! PT_GNU_RELRO is never split or moved. The glibc/musl loader itself is never modified: an
//! object without DT_NEEDED whose SONAME (or, for [`rewrite_named`], file name) is `ld-linux*`,
//! `ld64.so*`, `ld.so*`, `ld-musl-*` or musl's `libc.so` is refused with [`RewriteError::Loader`].
//!
//! Every output is parsed again (by this module and by `object`) and compared with what was
//! asked before it is returned (flix's `rewrite_file` replaces a file only after that).
//! Both ELF classes and both byte orders are supported.
//!
//! Why not `object::build::elf::Builder`: it re-serialises the whole file. Measured on this
//! host (release build), a no-op read+write of `/usr/bin/ls`, `libc.so.6` and `libz.so.1` is
//! not byte-identical to the input, drops a payload appended after the ELF image, and takes
//! 1.9 s for the 117 MB `libLLVM-15.so.1`; and it still leaves the growth layout to the caller.
//! Editing in place with `object`'s parser as the independent check keeps every byte we do not
//! need to touch, which is what loaders, debuggers and self-extracting payloads rely on.

mod consts;
mod datastr;
mod flags;
mod grow;
mod note;
mod parsed;
mod raw;
mod symbols;

use std::collections::BTreeSet;

pub use datastr::replace_data_strings;
pub use flags::{execstack, os_abi, set_execstack, set_os_abi};
pub use note::{
    add_note_section, find_note_section, remove_note_section, Note, NoteEntry, NoteSection,
};

use consts::*;
use grow::{align_up, layout, LayoutInput};
pub use parsed::is_loader_name;
use parsed::Parsed;
use raw::{bad, bytes_at, bytes_at_mut, cstr, unsupported, Fmt, Phdr, R};

/// Errors from reading, rewriting or verifying ELF bytes (file errors belong to the caller).
#[derive(Debug, thiserror::Error)]
pub enum RewriteError {
    #[error("not an ELF file")]
    NotElf,
    #[error("malformed ELF: {0}")]
    Malformed(String),
    #[error("unsupported ELF: {0}")]
    Unsupported(String),
    #[error("refusing to modify the dynamic loader {0}: it must stay as it is")]
    Loader(String),
    #[error("rewritten file failed verification: {0}; the input was left untouched")]
    Verify(String),
}

/// What to change. Applied in this order: DT_NEEDED replacements, removals, additions (new
/// entries go first, as patchelf does), SONAME, RUNPATH/RPATH, DF_1_NODEFLIB, DT_DEBUG, symbol
/// renames, interpreter.
#[non_exhaustive]
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Edits {
    /// New PT_INTERP path.
    pub interpreter: Option<String>,
    /// Set the search path (joined with `:`); an empty list removes DT_RUNPATH and DT_RPATH.
    pub runpath: Option<Vec<String>>,
    /// Write DT_RPATH instead of DT_RUNPATH (the other kind is removed either way).
    pub force_rpath: bool,
    /// Set DF_1_NODEFLIB in DT_FLAGS_1.
    pub nodeflib: bool,
    /// Set (or add) DT_SONAME.
    pub soname: Option<String>,
    /// Libraries to add as DT_NEEDED (already present ones are skipped).
    pub add_needed: Vec<String>,
    /// Libraries whose DT_NEEDED entries (and version needs) are removed.
    pub remove_needed: Vec<String>,
    /// `(old, new)` DT_NEEDED renames; `.gnu.version_r` follows.
    pub replace_needed: Vec<(String, String)>,
    /// Add a DT_DEBUG entry when there is none (debuggers find `r_debug` through it).
    pub add_debug_tag: bool,
    /// `(old, new)` renames of `.dynsym` entries; the hash tables are rebuilt to match.
    pub rename_symbols: Vec<(String, String)>,
}

impl Edits {
    fn touches_dynamic(&self) -> bool {
        self.runpath.is_some()
            || self.nodeflib
            || self.soname.is_some()
            || !self.add_needed.is_empty()
            || !self.remove_needed.is_empty()
            || !self.replace_needed.is_empty()
            || self.add_debug_tag
            || !self.rename_symbols.is_empty()
    }
}

/// What the rewriter reads from a file: the fields the edits act on.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ElfSummary {
    pub class64: bool,
    pub little_endian: bool,
    pub machine: u16,
    pub e_type: u16,
    pub interpreter: Option<String>,
    pub has_dynamic: bool,
    pub needed: Vec<String>,
    pub soname: Option<String>,
    pub rpath: Option<String>,
    pub runpath: Option<String>,
    pub flags_1: u64,
}

/// Read the interpreter and dynamic strings of an ELF file.
pub fn inspect(input: &[u8]) -> Result<ElfSummary, RewriteError> {
    let p = Parsed::parse(input)?.ok_or(RewriteError::NotElf)?;
    p.summary(input)
}

/// Strings for `.dynstr`: existing ones are reused, new ones appended.
struct Strings {
    table: Vec<u8>,
    extra: Vec<u8>,
}

/// Offset of `s` followed by NUL in `hay` (a suffix of a longer string counts, as linkers
/// share tails): checks the bytes before each NUL, so it is linear in the table size.
fn find_cstr(hay: &[u8], s: &str) -> Option<usize> {
    let n = s.len();
    hay.iter()
        .enumerate()
        .filter(|&(j, &c)| c == 0 && j >= n)
        .map(|(j, _)| j - n)
        .find(|&start| &hay[start..start + n] == s.as_bytes())
}

/// Offset of the NUL ending the string that starts at `off` in `table`.
fn string_end(table: &[u8], off: u64) -> Option<u64> {
    let start = usize::try_from(off).ok()?;
    let rest = table.get(start..)?;
    rest.iter().position(|&c| c == 0).map(|n| off + n as u64)
}

impl Strings {
    fn get(&self, off: u64) -> R<String> {
        let bytes = if off < self.table.len() as u64 {
            cstr(&self.table, off)?
        } else {
            cstr(&self.extra, off - self.table.len() as u64)?
        };
        Ok(String::from_utf8_lossy(bytes).into_owned())
    }
    /// Append `s` without looking for it in the table.
    fn append(&mut self, s: &str) -> u64 {
        let off = (self.table.len() + self.extra.len()) as u64;
        self.extra.extend_from_slice(s.as_bytes());
        self.extra.push(0);
        off
    }
    fn add(&mut self, s: &str) -> u64 {
        if let Some(i) = find_cstr(&self.table, s) {
            return i as u64;
        }
        if let Some(i) = find_cstr(&self.extra, s) {
            return (self.table.len() + i) as u64;
        }
        let off = (self.table.len() + self.extra.len()) as u64;
        self.extra.extend_from_slice(s.as_bytes());
        self.extra.push(0);
        off
    }
}

/// Every `.dynstr` offset referenced outside `.dynamic` (symbols, version tables), or `None`
/// when they cannot all be found.
fn other_string_refs(p: &Parsed, b: &[u8]) -> R<Option<Vec<u64>>> {
    let fmt = p.fmt;
    let mut refs = Vec::new();
    let Some((off, count)) = p.dynsym() else {
        return Ok(None);
    };
    let es = if fmt.is64 { 24 } else { 16 };
    for i in 0..count {
        refs.push(fmt.u32(b, off + i * es)?.into());
    }
    if let (Some(addr), Some(num)) = (p.dyn_val(DT_VERNEED), p.dyn_val(DT_VERNEEDNUM)) {
        for e in read_verneed(p, b, addr, num)? {
            refs.push(e.file);
            refs.extend(e.aux.iter().map(|a| a.name));
        }
    }
    if let (Some(addr), Some(num)) = (p.dyn_val(DT_VERDEF), p.dyn_val(DT_VERDEFNUM)) {
        let mut at = p.addr_to_off(addr, 20)?;
        for _ in 0..num.min(65536) {
            let cnt = fmt.u16(b, at + 6)?;
            let mut aux = at + u64::from(fmt.u32(b, at + 12)?);
            for _ in 0..cnt {
                refs.push(fmt.u32(b, aux)?.into());
                let next = fmt.u32(b, aux + 4)?;
                if next == 0 {
                    break;
                }
                aux += u64::from(next);
            }
            let next = fmt.u32(b, at + 16)?;
            if next == 0 {
                break;
            }
            at += u64::from(next);
        }
    }
    Ok(Some(refs))
}

#[derive(Debug, Clone)]
struct Vernaux {
    hash: u32,
    flags: u16,
    other: u16,
    name: u64,
}

#[derive(Debug, Clone)]
struct Verneed {
    version: u16,
    file: u64,
    aux: Vec<Vernaux>,
}

fn read_verneed(p: &Parsed, b: &[u8], addr: u64, num: u64) -> R<Vec<Verneed>> {
    let fmt = p.fmt;
    let mut at = p.addr_to_off(addr, 16)?;
    let mut out = Vec::new();
    for _ in 0..num.min(65536) {
        let version = fmt.u16(b, at)?;
        let cnt = fmt.u16(b, at + 2)?;
        let file = fmt.u32(b, at + 4)?.into();
        let mut aux_at = at + u64::from(fmt.u32(b, at + 8)?);
        let mut aux = Vec::new();
        for _ in 0..cnt {
            aux.push(Vernaux {
                hash: fmt.u32(b, aux_at)?,
                flags: fmt.u16(b, aux_at + 4)?,
                other: fmt.u16(b, aux_at + 6)?,
                name: fmt.u32(b, aux_at + 8)?.into(),
            });
            let next = fmt.u32(b, aux_at + 12)?;
            if next == 0 {
                break;
            }
            aux_at += u64::from(next);
        }
        out.push(Verneed { version, file, aux });
        let next = fmt.u32(b, at + 12)?;
        if next == 0 {
            break;
        }
        at += u64::from(next);
    }
    Ok(out)
}

fn u32_of(v: u64) -> R<u32> {
    u32::try_from(v).map_err(|_| unsupported(format!("string offset {v:#x} too large")))
}

/// Write version needs compactly at `off`, zero-filling the old extent `old_len`.
fn write_verneed(fmt: Fmt, b: &mut [u8], off: u64, old_len: u64, list: &[Verneed]) -> R<()> {
    bytes_at_mut(b, off, old_len)?.fill(0);
    let mut at = off;
    for (i, e) in list.iter().enumerate() {
        let cnt = u16::try_from(e.aux.len()).map_err(|_| bad("too many version needs"))?;
        let size = 16 + 16 * u64::from(cnt);
        fmt.put16(b, at, e.version)?;
        fmt.put16(b, at + 2, cnt)?;
        fmt.put32(b, at + 4, u32_of(e.file)?)?;
        fmt.put32(b, at + 8, if cnt > 0 { 16 } else { 0 })?;
        fmt.put32(b, at + 12, if i + 1 < list.len() { size as u32 } else { 0 })?;
        for (k, a) in e.aux.iter().enumerate() {
            let ao = at + 16 + 16 * k as u64;
            fmt.put32(b, ao, a.hash)?;
            fmt.put16(b, ao + 4, a.flags)?;
            fmt.put16(b, ao + 6, a.other)?;
            fmt.put32(b, ao + 8, u32_of(a.name)?)?;
            fmt.put32(b, ao + 12, if k + 1 < e.aux.len() { 16 } else { 0 })?;
        }
        at += size;
    }
    if at > off + old_len {
        return Err(bad("version needs grew while being rewritten"));
    }
    Ok(())
}

/// Rewrite an ELF image in memory. The result is verified before it is returned.
pub fn rewrite(input: &[u8], edits: &Edits) -> Result<Vec<u8>, RewriteError> {
    rewrite_named(input, edits, None)
}

/// [`rewrite`], also refusing a loader recognised by its `file_name` (a loader without SONAME).
pub fn rewrite_named(
    input: &[u8],
    edits: &Edits,
    file_name: Option<&str>,
) -> Result<Vec<u8>, RewriteError> {
    let p = Parsed::editable(input, file_name)?;
    let fmt = p.fmt;
    let before = p.summary(input)?;
    let mut out = input.to_vec();

    if edits.touches_dynamic() && p.dyn_off.is_none() {
        return Err(unsupported(
            "no dynamic section (statically linked?): nothing to set the search path, soname or needed libraries in",
        ));
    }
    if edits.touches_dynamic() && !p.dyn_terminated {
        return Err(bad(
            "cannot edit .dynamic: no DT_NULL ends it (setSubstr: write extends past end of section)",
        ));
    }
    if edits.interpreter.is_some() && before.interpreter.is_none() {
        return Err(unsupported(
            "no PT_INTERP program header (a library or a statically linked program): cannot set the interpreter",
        ));
    }

    let mut dyns = p.dyns.clone();
    let mut strings = Strings {
        table: match p.strtab {
            Some((o, _, s)) => bytes_at(input, o, s)?.to_vec(),
            None => Vec::new(),
        },
        extra: Vec::new(),
    };
    let mut expect = before.clone();

    // RUNPATH first: it may overwrite its old slot, which later lookups must then see.
    if let Some(dirs) = &edits.runpath {
        let first = dyns
            .iter()
            .position(|&(t, _)| t == DT_RPATH || t == DT_RUNPATH);
        let old_off = dyns
            .iter()
            .find(|&&(t, _)| t == DT_RUNPATH)
            .or_else(|| dyns.iter().find(|&&(t, _)| t == DT_RPATH))
            .map(|&(_, v)| v);
        dyns.retain(|&(t, _)| t != DT_RPATH && t != DT_RUNPATH);
        expect.rpath = None;
        expect.runpath = None;
        if !dirs.is_empty() {
            let s = dirs.join(":");
            let tag = if edits.force_rpath {
                DT_RPATH
            } else {
                DT_RUNPATH
            };
            let mut val = None;
            if let Some(o) = old_off {
                let old_len = cstr(&strings.table, o)?.len() as u64;
                if let Some(refs) = other_string_refs(&p, input)? {
                    let dyn_refs = dyns
                        .iter()
                        .filter(|&&(t, _)| is_string_tag(t))
                        .map(|&(_, v)| v);
                    // Shared: another reference reads a string that ends where the old
                    // search path ends (the same string, a tail of it, or a longer one).
                    let end = o + old_len;
                    let shared = refs
                        .into_iter()
                        .chain(dyn_refs)
                        .any(|r| string_end(&strings.table, r) == Some(end));
                    if !shared {
                        // Nothing else uses the old string: overwrite it so the old search
                        // path does not linger (patchelf's 'X' taint), then reuse its slot
                        // when the new one fits.
                        let start = o as usize;
                        let slot = &mut strings.table[start..start + old_len as usize];
                        slot.fill(b'X');
                        if s.len() as u64 <= old_len && find_cstr(&strings.table, &s).is_none() {
                            let slot = &mut strings.table[start..start + old_len as usize];
                            slot.fill(0);
                            slot[..s.len()].copy_from_slice(s.as_bytes());
                            val = Some(o);
                        }
                    }
                }
            }
            let val = match val {
                Some(v) => v,
                None => strings.add(&s),
            };
            let at = first
                .unwrap_or_else(|| last_needed_pos(&dyns))
                .min(dyns.len());
            dyns.insert(at, (tag, val));
            if edits.force_rpath {
                expect.rpath = Some(s);
            } else {
                expect.runpath = Some(s);
            }
        }
    }

    let mut renames: Vec<(String, String)> = Vec::new();
    for (old, new) in &edits.replace_needed {
        let mut hit = false;
        for entry in dyns.iter_mut() {
            if entry.0 == DT_NEEDED && strings.get(entry.1)? == *old {
                entry.1 = strings.add(new);
                hit = true;
            }
        }
        if hit {
            renames.push((old.clone(), new.clone()));
            for n in expect.needed.iter_mut().filter(|n| *n == old) {
                n.clone_from(new);
            }
        }
    }
    let mut removed: BTreeSet<String> = BTreeSet::new();
    if !edits.remove_needed.is_empty() {
        let mut kept = Vec::with_capacity(dyns.len());
        for &(t, v) in &dyns {
            if t == DT_NEEDED {
                let name = strings.get(v)?;
                if edits.remove_needed.contains(&name) {
                    removed.insert(name);
                    continue;
                }
            }
            kept.push((t, v));
        }
        dyns = kept;
        expect.needed.retain(|n| !removed.contains(n));
    }
    let mut added = Vec::new();
    for name in &edits.add_needed {
        if expect.needed.contains(name) || added.contains(name) {
            continue;
        }
        added.push(name.clone());
    }
    for (i, name) in added.iter().enumerate() {
        let v = strings.add(name);
        dyns.insert(i, (DT_NEEDED, v));
    }
    expect.needed.splice(0..0, added.iter().cloned());
    if let Some(soname) = &edits.soname {
        let v = strings.add(soname);
        match dyns.iter_mut().find(|(t, _)| *t == DT_SONAME) {
            Some(e) => e.1 = v,
            None => {
                let at = last_needed_pos(&dyns);
                dyns.insert(at, (DT_SONAME, v));
            }
        }
        expect.soname = Some(soname.clone());
    }
    if edits.nodeflib {
        match dyns.iter_mut().find(|(t, _)| *t == DT_FLAGS_1) {
            Some(e) => e.1 |= DF_1_NODEFLIB,
            None => dyns.push((DT_FLAGS_1, DF_1_NODEFLIB)),
        }
        expect.flags_1 |= DF_1_NODEFLIB;
    }

    if edits.add_debug_tag && !dyns.iter().any(|&(t, _)| t == DT_DEBUG) {
        dyns.push((DT_DEBUG, 0));
    }

    let renamed = symbols::rename(&p, &mut out, &mut strings, &edits.rename_symbols)?;

    // Version needs follow DT_NEEDED.
    let mut verneed_count = None;
    if (!renames.is_empty() || !removed.is_empty()) && p.dyn_val(DT_VERNEED).is_some() {
        let addr = p.dyn_val(DT_VERNEED).unwrap_or(0);
        let num = p.dyn_val(DT_VERNEEDNUM).unwrap_or(0);
        let list = read_verneed(&p, input, addr, num)?;
        let vn_off = p.addr_to_off(addr, 16)?;
        let mut kept = Vec::new();
        let mut dropped_idx = BTreeSet::new();
        let mut changed = false;
        for mut e in list.clone() {
            let name = strings.get(e.file)?;
            if removed.contains(&name) {
                dropped_idx.extend(e.aux.iter().map(|a| a.other & 0x7fff));
                changed = true;
                continue;
            }
            if let Some((_, new)) = renames.iter().find(|(o, _)| *o == name) {
                e.file = strings.add(new);
                changed = true;
            }
            kept.push(e);
        }
        if changed {
            let old_len: u64 = list.iter().map(|e| 16 + 16 * e.aux.len() as u64).sum();
            write_verneed(fmt, &mut out, vn_off, old_len, &kept)?;
            verneed_count = Some(kept.len() as u64);
            if let Some(e) = dyns.iter_mut().find(|(t, _)| *t == DT_VERNEEDNUM) {
                e.1 = kept.len() as u64;
            }
            if kept.is_empty() {
                dyns.retain(|&(t, _)| t != DT_VERNEED && t != DT_VERNEEDNUM);
            }
        }
        if !dropped_idx.is_empty() {
            if let Some(vs) = p.dyn_val(DT_VERSYM) {
                let (_, count) = p.dynsym().ok_or_else(|| {
                    unsupported("cannot remove a versioned library without section headers")
                })?;
                let vs_off = p.addr_to_off(vs, count * 2)?;
                for i in 0..count {
                    let v = fmt.u16(&out, vs_off + 2 * i)?;
                    if dropped_idx.contains(&(v & 0x7fff)) {
                        fmt.put16(&mut out, vs_off + 2 * i, 1)?;
                    }
                }
            }
        }
    }

    // The interpreter.
    let interp_ph = p.phdrs.iter().position(|ph| ph.p_type == PT_INTERP);
    let mut new_interp: Option<Vec<u8>> = None;
    if let (Some(s), Some(i)) = (&edits.interpreter, interp_ph) {
        let ph = p.phdrs[i];
        let mut bytes = s.as_bytes().to_vec();
        bytes.push(0);
        if bytes.len() as u64 <= ph.filesz {
            let slot = bytes_at_mut(&mut out, ph.offset, ph.filesz)?;
            slot.fill(0);
            slot[..bytes.len()].copy_from_slice(&bytes);
        } else {
            new_interp = Some(bytes);
        }
        expect.interpreter = Some(s.clone());
    }

    // Write the in-place part of .dynstr (an overwritten RUNPATH slot).
    if let Some((so, _, size)) = p.strtab {
        bytes_at_mut(&mut out, so, size)?.copy_from_slice(&strings.table);
    }

    let dyn_moves = edits.touches_dynamic() && dyns.len() as u64 + 1 > p.dyn_slots;
    let str_moves = !strings.extra.is_empty();
    if new_interp.is_none() && !dyn_moves && !str_moves {
        if edits.touches_dynamic() {
            write_dynamic_in_place(&p, &mut out, &dyns)?;
        }
        if let Some(n) = verneed_count {
            set_verneed_info(&p, &mut out, n)?;
        }
        verify(&out, input, &expect)?;
        if renamed > 0 {
            verify_symbols(&out)?;
        }
        return Ok(out);
    }

    layout(
        &p,
        input,
        &mut out,
        LayoutInput {
            dyns,
            new_interp,
            dyn_moves,
            strings: &strings,
            verneed_count,
            note: None,
        },
    )?;
    verify(&out, input, &expect)?;
    if renamed > 0 {
        verify_symbols(&out)?;
    }
    Ok(out)
}

/// After renaming symbols: every hashed symbol is found through `.gnu.hash`.
fn verify_symbols(out: &[u8]) -> R<()> {
    let p = Parsed::parse(out)
        .map_err(|e| RewriteError::Verify(format!("cannot parse the output: {e}")))?
        .ok_or_else(|| RewriteError::Verify("output is not ELF".into()))?;
    symbols::check_gnu_hash(&p, out).map_err(|e| RewriteError::Verify(e.to_string()))
}

/// Problems worth a warning that do not stop an edit (patchelf's wording where it has one),
/// e.g. symbol table entries that refer to a section without a name.
pub fn warnings(input: &[u8]) -> Result<Vec<String>, RewriteError> {
    let p = Parsed::parse(input)?.ok_or(RewriteError::NotElf)?;
    Ok(symbols::unnamed_section_refs(&p, input))
}

fn last_needed_pos(dyns: &[(u64, u64)]) -> usize {
    dyns.iter()
        .rposition(|&(t, _)| t == DT_NEEDED || t == DT_SONAME)
        .map_or(0, |i| i + 1)
}

fn write_dyn_entries(fmt: Fmt, b: &mut [u8], off: u64, slots: u64, dyns: &[(u64, u64)]) -> R<()> {
    let es = fmt.dynentsize();
    bytes_at_mut(b, off, slots * es)?.fill(0);
    for (i, &(t, v)) in dyns.iter().enumerate() {
        let at = off + i as u64 * es;
        fmt.put_word(b, at, t)?;
        fmt.put_word(b, at + fmt.word_size(), v)?;
    }
    Ok(())
}

fn write_dynamic_in_place(p: &Parsed, out: &mut [u8], dyns: &[(u64, u64)]) -> R<()> {
    let off = p.dyn_off.ok_or_else(|| bad("no dynamic section"))?;
    write_dyn_entries(p.fmt, out, off, p.dyn_slots, dyns)
}

fn set_verneed_info(p: &Parsed, out: &mut [u8], n: u64) -> R<()> {
    for (i, sh) in p.shdrs.iter().enumerate() {
        if sh.sh_type == SHT_GNU_VERNEED {
            let mut s = *sh;
            s.info = u32::try_from(n).map_err(|_| bad("too many version needs"))?;
            s.write_placement(p.fmt, out, p.eh.shoff + i as u64 * p.fmt.shentsize())?;
        }
    }
    Ok(())
}

/// Where the ELF image ends: the furthest segment, section or header table.
fn elf_extent(p: &Parsed) -> u64 {
    let mut end = p.eh.phoff + u64::from(p.eh.phnum) * p.fmt.phentsize();
    end = end.max(p.eh.shoff + p.shdrs.len() as u64 * p.fmt.shentsize());
    for ph in &p.phdrs {
        end = end.max(ph.file_end());
    }
    for sh in &p.shdrs {
        if sh.sh_type != SHT_NOBITS {
            end = end.max(sh.offset.saturating_add(sh.size));
        }
    }
    end
}

/// Parse the output again and check it says what was asked and is laid out sanely.
fn verify(out: &[u8], input: &[u8], expect: &ElfSummary) -> R<()> {
    let fail = |m: String| RewriteError::Verify(m);
    let p = Parsed::parse(out)
        .map_err(|e| fail(format!("cannot parse the output: {e}")))?
        .ok_or_else(|| fail("output is not ELF".into()))?;
    let got = p
        .summary(out)
        .map_err(|e| fail(format!("cannot read the output: {e}")))?;
    if got != *expect {
        return Err(fail(format!("expected {expect:?}, got {got:?}")));
    }
    // Program headers: loads sorted and disjoint, PT_PHDR inside a load.
    let loads: Vec<&Phdr> = p.loads().filter(|ph| ph.memsz > 0).collect();
    for w in loads.windows(2) {
        if w[1].vaddr < w[0].mem_end() {
            return Err(fail("PT_LOAD segments overlap or are out of order".into()));
        }
    }
    for ph in &loads {
        if ph.align > 1 && ph.offset % ph.align != ph.vaddr % ph.align {
            return Err(fail("PT_LOAD offset and address are not congruent".into()));
        }
        if ph.file_end() > out.len() as u64 {
            return Err(fail("PT_LOAD extends past the end of the file".into()));
        }
    }
    let ph_end = p.eh.phoff + u64::from(p.eh.phnum) * p.fmt.phentsize();
    if let Some(pp) = p.phdrs.iter().find(|ph| ph.p_type == PT_PHDR) {
        let inside = loads.iter().any(|l| {
            pp.vaddr >= l.vaddr
                && pp.mem_end() <= l.vaddr + l.filesz
                && pp.offset >= l.offset
                && pp.offset - l.offset == pp.vaddr - l.vaddr
        });
        if !inside || pp.offset != p.eh.phoff || pp.file_end() != ph_end {
            return Err(fail(
                "PT_PHDR does not describe the program header table inside a PT_LOAD".into(),
            ));
        }
    }
    // Address-valued dynamic tags point into the file image of a load.
    for &(t, v) in &p.dyns {
        if is_pointer_tag(t)
            && v != 0
            && matches!(
                t,
                DT_HASH | DT_STRTAB | 6 | DT_VERSYM | DT_VERNEED | DT_VERDEF | DT_GNU_HASH
            )
        {
            p.addr_to_off(v, 1).map_err(|_| {
                fail(format!(
                    "dynamic tag {t:#x} points outside the loaded file ({v:#x})"
                ))
            })?;
        }
    }
    // Anything appended to the input (past every segment, section and header table) is still
    // there, at the same offset, byte for byte.
    if let Ok(Some(orig)) = Parsed::parse(input) {
        let extent = elf_extent(&orig);
        if extent < input.len() as u64 {
            let tail = &input[extent as usize..];
            if out.get(extent as usize..input.len()) != Some(tail) {
                return Err(fail(
                    "data appended after the ELF image was not preserved".into(),
                ));
            }
        }
    }
    // And object agrees it is a well-formed ELF file.
    object::File::parse(out).map_err(|e| fail(format!("object cannot parse the output: {e}")))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn string_lookup_reuses_tails_and_appends_new() {
        let mut s = Strings {
            table: b"\0libfoo.so.1\0/usr/lib\0".to_vec(),
            extra: Vec::new(),
        };
        for (name, want) in [
            ("libfoo.so.1", 1),
            ("foo.so.1", 4),
            ("lib", 18),
            ("", 0),
            ("/usr/lib", 13),
        ] {
            assert_eq!(s.add(name), want, "{name}");
        }
        assert!(s.extra.is_empty());
        let new = s.add("/opt/x");
        assert_eq!(new, 22);
        assert_eq!(s.add("/opt/x"), 22);
        assert_eq!(s.get(new).unwrap(), "/opt/x");
        assert_eq!(s.get(4).unwrap(), "foo.so.1");
        assert!(s.get(999).is_err());
    }

    #[test]
    fn tag_kinds() {
        for (tag, ptr, string) in [
            (DT_NEEDED, false, true),
            (DT_STRTAB, true, false),
            (DT_STRSZ, false, false),
            (DT_DEBUG, true, false),
            (DT_GNU_HASH, true, false),
            (DT_VERNEED, true, false),
            (DT_VERNEEDNUM, false, false),
            (DT_RUNPATH, false, true),
            (DT_FLAGS_1, false, false),
            (36, true, false),  // DT_RELR
            (35, false, false), // DT_RELRSZ
            (DT_AUDIT, false, true),
        ] {
            assert_eq!(is_pointer_tag(tag), ptr, "{tag:#x}");
            assert_eq!(is_string_tag(tag), string, "{tag:#x}");
        }
    }

    #[test]
    fn not_elf_and_truncated_headers() {
        assert!(matches!(inspect(b"hello"), Err(RewriteError::NotElf)));
        assert!(matches!(
            inspect(b"\x7fELF\x02\x01\x01"),
            Err(RewriteError::Malformed(_))
        ));
        let mut h = vec![0u8; 64];
        h[..4].copy_from_slice(b"\x7fELF");
        h[4] = 3;
        assert!(inspect(&h).unwrap_err().to_string().contains("class"));
    }

    #[test]
    fn segment_offsets_near_the_top_are_an_error_not_an_overflow() {
        // A real program whose PT_LOAD offsets are moved to the top of the u64 range (found
        // by the `rewrite` fuzz target): mapping DT_STRTAB's address must not overflow.
        let mut b = std::fs::read("/usr/bin/true").expect("/usr/bin/true");
        assert_eq!(&b[..6], b"\x7fELF\x02\x01", "a 64-bit little-endian ELF");
        let u64_at = |b: &[u8], o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap());
        let phoff = u64_at(&b, 0x20) as usize;
        let phentsize = u16::from_le_bytes([b[0x36], b[0x37]]) as usize;
        let phnum = u16::from_le_bytes([b[0x38], b[0x39]]) as usize;
        let mut moved = 0;
        for i in 0..phnum {
            let ph = phoff + i * phentsize;
            if u32::from_le_bytes(b[ph..ph + 4].try_into().unwrap()) == PT_LOAD {
                b[ph + 8..ph + 16].copy_from_slice(&(u64::MAX - 0x10).to_le_bytes());
                moved += 1;
            }
        }
        assert!(moved > 0);
        assert!(matches!(inspect(&b), Err(RewriteError::Malformed(_))));
    }
}
