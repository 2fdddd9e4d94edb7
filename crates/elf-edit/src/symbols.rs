//! Renaming dynamic symbols (`.dynsym`), keeping the symbol lookup tables right.
//!
//! A renamed symbol gets its new name appended to `.dynstr` (the caller's layout moves the
//! grown table). The hash tables are then rebuilt for the new names:
//!
//! - `.gnu.hash` needs the hashed symbols (those from `symoffset` on) grouped by bucket, in
//!   bucket order, so they are stably re-sorted; `.gnu.version` entries move with their
//!   symbols and the symbol indices in every relocation table linked to `.dynsym` are
//!   remapped. Bucket count, bloom size and shift stay as they were.
//! - `.hash` (SysV) is rebuilt over the final order with its bucket count unchanged.
//!
//! Every table is edited in place (sizes do not change). Headers that do not fit their
//! section are errors ("hash table header out of range"), never panics.

use std::collections::HashMap;

use super::consts::*;
use super::raw::{bad, bytes_at, bytes_at_mut, unsupported, Shdr, R};
use super::{Parsed, Strings};

const SHT_SYMTAB: u32 = 2;
const SHN_LORESERVE: u16 = 0xff00;

/// The GNU hash function (DJB 33).
pub(crate) fn gnu_hash(name: &[u8]) -> u32 {
    name.iter().fold(5381u32, |h, &c| {
        h.wrapping_mul(33).wrapping_add(u32::from(c))
    })
}

/// The SysV ELF hash function.
pub(crate) fn sysv_hash(name: &[u8]) -> u32 {
    let mut h = 0u32;
    for &c in name {
        h = (h << 4).wrapping_add(u32::from(c));
        let g = h & 0xf000_0000;
        if g != 0 {
            h ^= g >> 24;
        }
        h &= !g;
    }
    h
}

fn sym_size(p: &Parsed) -> u64 {
    if p.fmt.is64 {
        24
    } else {
        16
    }
}

/// `.dynsym`: its section index and header.
fn dynsym_section(p: &Parsed) -> Option<(usize, Shdr)> {
    p.shdrs
        .iter()
        .enumerate()
        .find(|(_, s)| s.sh_type == SHT_DYNSYM)
        .map(|(i, s)| (i, *s))
}

fn section_of_type(p: &Parsed, t: u32) -> Option<Shdr> {
    p.shdrs.iter().find(|s| s.sh_type == t).copied()
}

/// Rename the `.dynsym` entries named in `map` (old name → new name) inside `out`; new names
/// go to `strings`. Returns how many symbols were renamed (0: nothing was changed).
pub(crate) fn rename(
    p: &Parsed,
    out: &mut [u8],
    strings: &mut Strings,
    map: &[(String, String)],
) -> R<usize> {
    if map.is_empty() {
        return Ok(0);
    }
    let fmt = p.fmt;
    let Some((_, dynsym)) = dynsym_section(p) else {
        return Err(unsupported(
            "cannot rename dynamic symbols: no .dynsym section header",
        ));
    };
    let es = sym_size(p);
    let count = dynsym.size / es;
    bytes_at(out, dynsym.offset, count * es)
        .map_err(|_| bad(".dynsym: data region extends past file end"))?;
    let wanted: HashMap<&[u8], &str> = map
        .iter()
        .map(|(o, n)| (o.as_bytes(), n.as_str()))
        .collect();
    // New names are appended once each (no search of the whole table per name).
    let mut added: HashMap<&str, u64> = HashMap::new();
    let mut names: Vec<Vec<u8>> = Vec::with_capacity(count as usize);
    let mut renamed = 0;
    for i in 0..count {
        let at = dynsym.offset + i * es;
        let name = strings.get(fmt.u32(out, at)?.into())?.into_bytes();
        match wanted.get(name.as_slice()) {
            Some(&new) => {
                let off = match added.get(new) {
                    Some(&o) => o,
                    None => {
                        let o = strings.append(new);
                        added.insert(new, o);
                        o
                    }
                };
                let off = u32::try_from(off)
                    .map_err(|_| unsupported("the dynamic string table grew past 4 GiB"))?;
                fmt.put32(out, at, off)?;
                names.push(new.as_bytes().to_vec());
                renamed += 1;
            }
            None => names.push(name),
        }
    }
    if renamed == 0 {
        return Ok(0);
    }
    rebuild_gnu_hash(p, out, &dynsym, &mut names)?;
    rebuild_sysv_hash(p, out, &names)?;
    Ok(renamed)
}

struct GnuHeader {
    nbuckets: u64,
    symoffset: u64,
    maskwords: u64,
    shift2: u32,
}

fn gnu_header(p: &Parsed, b: &[u8], sh: &Shdr) -> R<GnuHeader> {
    let fmt = p.fmt;
    let out_of_range = || bad(".gnu.hash table header out of range");
    if sh.size < 16 {
        return Err(bad(".gnu.hash section is too small"));
    }
    let h = GnuHeader {
        nbuckets: fmt.u32(b, sh.offset)?.into(),
        symoffset: fmt.u32(b, sh.offset + 4)?.into(),
        maskwords: fmt.u32(b, sh.offset + 8)?.into(),
        shift2: fmt.u32(b, sh.offset + 12)?,
    };
    let need = 16 + h.maskwords * fmt.word_size() + h.nbuckets * 4;
    if h.nbuckets == 0 || h.maskwords == 0 || need > sh.size {
        return Err(out_of_range());
    }
    Ok(h)
}

fn rebuild_gnu_hash(p: &Parsed, out: &mut [u8], dynsym: &Shdr, names: &mut [Vec<u8>]) -> R<()> {
    let Some(sh) = section_of_type(p, SHT_GNU_HASH) else {
        return Ok(());
    };
    let fmt = p.fmt;
    let h = gnu_header(p, out, &sh)?;
    bytes_at(out, sh.offset, sh.size)
        .map_err(|_| bad(".gnu.hash: data region extends past file end"))?;
    let count = names.len() as u64;
    if h.symoffset > count {
        return Err(bad(format!(
            ".gnu.hash symbol offset {} is past the {count} dynamic symbols",
            h.symoffset
        )));
    }
    let hashed = count - h.symoffset;
    let chain_off = sh.offset + 16 + h.maskwords * fmt.word_size() + h.nbuckets * 4;
    if hashed == 0 {
        return Ok(());
    }
    if chain_off + hashed * 4 > sh.offset + sh.size {
        return Err(bad(
            ".gnu.hash chain table is shorter than the hashed dynamic symbols",
        ));
    }
    let first = h.symoffset as usize;
    // (hash, bucket, old position), stably sorted by bucket.
    let mut entries: Vec<(u32, u64, usize)> = names[first..]
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let hash = gnu_hash(n);
            (hash, u64::from(hash) % h.nbuckets, i)
        })
        .collect();
    entries.sort_by_key(|e| e.1);
    let mut old2new = vec![0u32; entries.len()];
    for (new, e) in entries.iter().enumerate() {
        old2new[e.2] = u32::try_from(new + first).map_err(|_| bad("too many symbols"))?;
    }
    let moved = entries.iter().enumerate().any(|(new, e)| new != e.2);
    if moved {
        // Symbols, their version entries and their names follow the new order.
        let es = sym_size(p);
        let start = dynsym.offset + h.symoffset * es;
        let old = bytes_at(out, start, hashed * es)?.to_vec();
        let dst = bytes_at_mut(out, start, hashed * es)?;
        for (i, &n) in old2new.iter().enumerate() {
            let n = (n as usize - first) * es as usize;
            let o = i * es as usize;
            dst[n..n + es as usize].copy_from_slice(&old[o..o + es as usize]);
        }
        let old_names = names[first..].to_vec();
        for (i, name) in old_names.into_iter().enumerate() {
            names[old2new[i] as usize] = name;
        }
        if let Some(vs) = section_of_type(p, SHT_GNU_VERSYM) {
            if vs.size < count * 2 {
                return Err(bad(
                    ".gnu.version has fewer entries than .dynsym: cannot reorder the symbols",
                ));
            }
            {
                let vstart = vs.offset + h.symoffset * 2;
                let old = bytes_at(out, vstart, hashed * 2)?.to_vec();
                let dst = bytes_at_mut(out, vstart, hashed * 2)?;
                for (i, &n) in old2new.iter().enumerate() {
                    let n = (n as usize - first) * 2;
                    dst[n..n + 2].copy_from_slice(&old[i * 2..i * 2 + 2]);
                }
            }
        }
        remap_relocations(p, out, h.symoffset, &old2new)?;
    }
    // Bloom filter, buckets and chains for the new order.
    let bits = fmt.word_size() * 8;
    let bloom_off = sh.offset + 16;
    let mut bloom = vec![0u64; h.maskwords as usize];
    for e in &entries {
        let hash = u64::from(e.0);
        let w = ((hash / bits) % h.maskwords) as usize;
        bloom[w] |= 1 << (hash % bits);
        bloom[w] |= 1 << ((hash >> h.shift2) % bits);
    }
    for (i, w) in bloom.iter().enumerate() {
        fmt.put_word(out, bloom_off + i as u64 * fmt.word_size(), *w)?;
    }
    let buckets_off = bloom_off + h.maskwords * fmt.word_size();
    let mut buckets = vec![0u32; h.nbuckets as usize];
    for (i, e) in entries.iter().enumerate() {
        let b = &mut buckets[e.1 as usize];
        if *b == 0 {
            *b = u32::try_from(i + first).map_err(|_| bad("too many symbols"))?;
        }
    }
    for (i, b) in buckets.iter().enumerate() {
        fmt.put32(out, buckets_off + i as u64 * 4, *b)?;
    }
    for (i, e) in entries.iter().enumerate() {
        let last = entries.get(i + 1).is_none_or(|n| n.1 != e.1);
        let v = if last { e.0 | 1 } else { e.0 & !1 };
        fmt.put32(out, chain_off + i as u64 * 4, v)?;
    }
    Ok(())
}

/// Remap symbol indices from `first` on in every relocation table that refers to `.dynsym`.
fn remap_relocations(p: &Parsed, out: &mut [u8], first: u64, old2new: &[u32]) -> R<()> {
    let fmt = p.fmt;
    let dynsym_idx = dynsym_section(p).map(|(i, _)| i as u32);
    for sh in &p.shdrs {
        let rela = match sh.sh_type {
            SHT_RELA => true,
            SHT_REL => false,
            _ => continue,
        };
        // Static relocations (`--emit-relocs`) refer to `.symtab`: leave them alone.
        let linked = Some(sh.link) == dynsym_idx || (sh.link == 0 && sh.flags & SHF_ALLOC != 0);
        if !linked {
            continue;
        }
        let w = fmt.word_size();
        let es = if rela { 3 * w } else { 2 * w };
        bytes_at(out, sh.offset, sh.size / es * es)
            .map_err(|_| bad("relocation table: data region extends past file end"))?;
        for k in 0..sh.size / es {
            let at = sh.offset + k * es + w;
            let info = fmt.word(out, at)?;
            let (sym, rest) = if fmt.is64 {
                (info >> 32, info & 0xffff_ffff)
            } else {
                (info >> 8, info & 0xff)
            };
            if sym < first {
                continue;
            }
            let Some(&n) = old2new.get((sym - first) as usize) else {
                return Err(bad(format!(
                    "relocation refers to symbol {sym}, past the dynamic symbol table"
                )));
            };
            let info = if fmt.is64 {
                (u64::from(n) << 32) | rest
            } else {
                (u64::from(n) << 8) | rest
            };
            fmt.put_word(out, at, info)?;
        }
    }
    Ok(())
}

fn rebuild_sysv_hash(p: &Parsed, out: &mut [u8], names: &[Vec<u8>]) -> R<()> {
    let Some(sh) = section_of_type(p, SHT_HASH) else {
        return Ok(());
    };
    let fmt = p.fmt;
    if sh.size < 8 {
        return Err(bad(".hash section is too small"));
    }
    let nbuckets = u64::from(fmt.u32(out, sh.offset)?);
    if nbuckets == 0 || 8 + nbuckets * 4 > sh.size {
        return Err(bad(".hash table header out of range"));
    }
    bytes_at(out, sh.offset, sh.size)
        .map_err(|_| bad(".hash: data region extends past file end"))?;
    let nchain = (sh.size - 8 - nbuckets * 4) / 4;
    let count = names.len() as u64;
    let first = count.saturating_sub(nchain) as usize;
    let mut buckets = vec![0u32; nbuckets as usize];
    let mut chain = vec![0u32; nchain as usize];
    for (i, name) in names.iter().enumerate().skip(first) {
        if name.is_empty() {
            continue;
        }
        let rel = i - first;
        let b = (u64::from(sysv_hash(name)) % nbuckets) as usize;
        chain[rel] = buckets[b];
        buckets[b] = u32::try_from(rel).map_err(|_| bad("too many symbols"))?;
    }
    let boff = sh.offset + 8;
    for (i, v) in buckets.iter().enumerate() {
        fmt.put32(out, boff + i as u64 * 4, *v)?;
    }
    let coff = boff + nbuckets * 4;
    for (i, v) in chain.iter().enumerate() {
        fmt.put32(out, coff + i as u64 * 4, *v)?;
    }
    Ok(())
}

/// Find `name` through the `.gnu.hash` table (as the loader does): its `.dynsym` index.
pub(crate) fn gnu_lookup(p: &Parsed, b: &[u8], name: &str) -> R<Option<u64>> {
    let (Some(sh), Some((_, dynsym))) = (section_of_type(p, SHT_GNU_HASH), dynsym_section(p))
    else {
        return Ok(None);
    };
    let fmt = p.fmt;
    let h = gnu_header(p, b, &sh)?;
    let hash = gnu_hash(name.as_bytes());
    let buckets_off = sh.offset + 16 + h.maskwords * fmt.word_size();
    let chain_off = buckets_off + h.nbuckets * 4;
    let mut i = u64::from(fmt.u32(b, buckets_off + (u64::from(hash) % h.nbuckets) * 4)?);
    if i == 0 || i < h.symoffset {
        return Ok(None);
    }
    let (so, _, size) = p.strtab.ok_or_else(|| bad("no dynamic string table"))?;
    let table = bytes_at(b, so, size)?;
    let es = sym_size(p);
    loop {
        let ch = fmt.u32(b, chain_off + (i - h.symoffset) * 4)?;
        if ch | 1 == hash | 1 {
            let st_name = fmt.u32(b, dynsym.offset + i * es)?;
            if super::raw::cstr(table, st_name.into())? == name.as_bytes() {
                return Ok(Some(i));
            }
        }
        if ch & 1 == 1 {
            return Ok(None);
        }
        i += 1;
    }
}

/// Check that every symbol `.gnu.hash` covers is found through it under its name.
pub(crate) fn check_gnu_hash(p: &Parsed, b: &[u8]) -> R<()> {
    let (Some(sh), Some((_, dynsym)), Some((so, _, size))) = (
        section_of_type(p, SHT_GNU_HASH),
        dynsym_section(p),
        p.strtab,
    ) else {
        return Ok(());
    };
    let h = gnu_header(p, b, &sh)?;
    let es = sym_size(p);
    let table = bytes_at(b, so, size)?.to_vec();
    for i in h.symoffset..dynsym.size / es {
        let st_name = p.fmt.u32(b, dynsym.offset + i * es)?;
        let name = String::from_utf8_lossy(super::raw::cstr(&table, st_name.into())?).into_owned();
        if gnu_lookup(p, b, &name)?.is_none() {
            return Err(bad(format!(
                "symbol {i} ({name}) is not found through .gnu.hash"
            )));
        }
    }
    Ok(())
}

/// Warnings for symbol table entries whose section has no name (patchelf's warning; such a
/// file was usually damaged by a tool that rewrote the section headers).
pub(crate) fn unnamed_section_refs(p: &Parsed, b: &[u8]) -> Vec<String> {
    let mut warnings = Vec::new();
    let fmt = p.fmt;
    let es = sym_size(p);
    let shndx_at = if fmt.is64 { 6 } else { 14 };
    for (t, sh) in p.shdrs.iter().enumerate() {
        if sh.sh_type != SHT_SYMTAB && sh.sh_type != SHT_DYNSYM {
            continue;
        }
        let table = String::from_utf8_lossy(p.section_name(b, t)).into_owned();
        let mut seen = std::collections::BTreeSet::new();
        for k in 0..sh.size / es {
            let Ok(shndx) = fmt.u16(b, sh.offset + k * es + shndx_at) else {
                break;
            };
            if shndx == 0 || shndx >= SHN_LORESERVE || !seen.insert(shndx) {
                continue;
            }
            if usize::from(shndx) < p.shdrs.len() && p.section_name(b, shndx.into()).is_empty() {
                warnings.push(format!(
                    "symbol table entry {k} in section {t} ({table}) refers to an unnamed section (index {shndx})"
                ));
            }
        }
    }
    warnings
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_functions_match_the_abi_examples() {
        assert_eq!(gnu_hash(b""), 5381);
        assert_eq!(gnu_hash(b"printf"), 0x156b_2bb8);
        assert_eq!(gnu_hash(b"exit"), 0x7c96_7e3f);
        assert_eq!(sysv_hash(b""), 0);
        assert_eq!(sysv_hash(b"printf"), 0x077905a6);
        assert_eq!(sysv_hash(b"exit"), 0x0006cf04);
    }
}
