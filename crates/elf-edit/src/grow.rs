//! The growth layout: when edits do not fit in place, the grown pieces go into one new
//! PT_LOAD appended to the file, and the program header table gets room for the new entries
//! (see the crate documentation, steps 2, 3 and 5).

use super::consts::*;
use super::raw::{bad, bytes_at, bytes_at_mut, unsupported, Ehdr, Phdr, Shdr, R};
use super::{write_dyn_entries, write_dynamic_in_place, Parsed, RewriteError, Strings};

pub(crate) fn align_up(v: u64, a: u64) -> R<u64> {
    if a <= 1 {
        return Ok(v);
    }
    v.checked_add(a - 1)
        .map(|x| x / a * a)
        .ok_or_else(|| bad("address overflow"))
}

fn section_movable(sh: &Shdr, interp_off: Option<u64>) -> bool {
    if sh.flags & SHF_ALLOC == 0 || sh.flags & (SHF_WRITE | SHF_EXECINSTR) != 0 {
        return false;
    }
    matches!(
        sh.sh_type,
        SHT_NOTE
            | SHT_DYNSYM
            | SHT_STRTAB
            | SHT_HASH
            | SHT_GNU_HASH
            | SHT_GNU_VERSYM
            | SHT_GNU_VERNEED
            | SHT_GNU_VERDEF
            | SHT_RELA
            | SHT_REL
            | SHT_RELR
    ) || (sh.sh_type == SHT_PROGBITS && Some(sh.offset) == interp_off)
}

pub(crate) struct LayoutInput<'a> {
    pub(crate) dyns: Vec<(u64, u64)>,
    pub(crate) new_interp: Option<Vec<u8>>,
    pub(crate) dyn_moves: bool,
    pub(crate) strings: &'a Strings,
    pub(crate) verneed_count: Option<u64>,
    /// A complete note (header, owner, descriptor) to place in the new segment, covered by a
    /// new PT_NOTE ([`crate::add_note_section`]).
    pub(crate) note: Option<&'a [u8]>,
}

/// Where [`layout`] put a note: file offset and address.
pub(crate) type NotePlace = Option<(u64, u64)>;

/// The block of movable sections right after the program header table that must move to
/// make room for one more program header (`None`: there is room already).
fn choose_block(p: &Parsed, old_ph_end: u64, need_end: u64) -> R<Option<(u64, u64, u64)>> {
    let first = *p
        .loads()
        .find(|ph| ph.offset <= p.eh.phoff && old_ph_end <= ph.file_end())
        .ok_or_else(|| unsupported("the program header table is not inside a loadable segment"))?;
    if need_end > first.file_end() {
        return Err(unsupported(
            "the first loadable segment is too short to hold one more program header",
        ));
    }
    let interp_off = p
        .phdrs
        .iter()
        .find(|ph| ph.p_type == PT_INTERP)
        .map(|ph| ph.offset);
    // Everything with file content after the table: sections and non-LOAD segments.
    let mut occupants: Vec<u64> = p
        .shdrs
        .iter()
        .filter(|s| s.flags & SHF_ALLOC != 0 && s.sh_type != SHT_NOBITS && s.size > 0)
        .map(|s| s.offset)
        .chain(
            p.phdrs
                .iter()
                .filter(|ph| !matches!(ph.p_type, PT_LOAD | PT_PHDR) && ph.filesz > 0)
                .map(|ph| ph.offset),
        )
        .filter(|&o| o >= old_ph_end)
        .collect();
    if p.shdrs.is_empty() {
        for &(t, v) in &p.dyns {
            if is_pointer_tag(t) && v != 0 {
                if let Ok(o) = p.addr_to_off(v, 1) {
                    occupants.push(o);
                }
            }
        }
    }
    let limit = occupants.iter().copied().min().unwrap_or(u64::MAX);
    let mut block: Option<(u64, u64, u64)> = None;
    if limit < need_end {
        if p.shdrs.is_empty() {
            return block_without_sections(p, &first, limit, need_end, &occupants).map(Some);
        }
        let mut secs: Vec<(usize, &Shdr)> = p
            .shdrs
            .iter()
            .enumerate()
            .filter(|(_, s)| {
                s.flags & SHF_ALLOC != 0
                    && s.sh_type != SHT_NOBITS
                    && s.size > 0
                    && s.offset >= old_ph_end
            })
            .collect();
        secs.sort_by_key(|(_, s)| s.offset);
        let start = limit;
        let mut end = start;
        let mut idx = 0;
        loop {
            while idx < secs.len() && secs[idx].1.offset < need_end.max(end) {
                let s = secs[idx].1;
                if !section_movable(s, interp_off) {
                    return Err(unsupported(format!(
                        "no room to add a program header: section {} at {:#x} follows the table and cannot be moved",
                        idx, s.offset
                    )));
                }
                end = end.max(s.offset + s.size);
                idx += 1;
            }
            let mut grew = false;
            for ph in &p.phdrs {
                if matches!(ph.p_type, PT_LOAD | PT_PHDR) || ph.filesz == 0 {
                    continue;
                }
                if ph.offset < end && ph.file_end() > start {
                    if ph.offset < start || ph.p_type == PT_GNU_RELRO || ph.p_type == PT_TLS {
                        return Err(unsupported(
                            "a segment overlaps the sections that would have to move",
                        ));
                    }
                    if ph.file_end() > end {
                        end = ph.file_end();
                        grew = true;
                    }
                }
            }
            if !grew && (idx >= secs.len() || secs[idx].1.offset >= need_end.max(end)) {
                break;
            }
        }
        if end > first.file_end() {
            return Err(unsupported("the sections to move cross a segment boundary"));
        }
        block = Some((start, end, first.vaddr + (start - first.offset)));
    }
    Ok(block)
}

/// [`choose_block`] for an object without section headers (stripped by `sstrip` or built
/// without them): the block is made only of what program headers describe with an exact extent
/// and [`program_headers`] moves, the interpreter string and notes, which a program built by
/// GNU ld or lld has right after its table. Anything else found there (a table known only
/// through a dynamic tag, whose size is unknown) stops it.
fn block_without_sections(
    p: &Parsed,
    first: &Phdr,
    start: u64,
    need_end: u64,
    occupants: &[u64],
) -> R<(u64, u64, u64)> {
    let movable =
        |ph: &&Phdr| matches!(ph.p_type, PT_INTERP | PT_NOTE | PT_GNU_PROPERTY) && ph.filesz > 0;
    let mut end = start;
    loop {
        let reach = need_end.max(end);
        let next = p
            .phdrs
            .iter()
            .filter(movable)
            .filter(|ph| ph.offset >= start && ph.offset < reach && ph.file_end() > end)
            .map(Phdr::file_end)
            .max();
        match next {
            Some(e) => end = e,
            None => break,
        }
    }
    let reach = need_end.max(end);
    let inside_moved = |o: u64| {
        p.phdrs
            .iter()
            .filter(movable)
            .any(|ph| ph.offset <= o && o < ph.file_end() && ph.offset >= start)
    };
    if let Some(o) = occupants
        .iter()
        .find(|&&o| o >= start && o < reach && !inside_moved(o))
    {
        return Err(unsupported(format!(
            "no room to add a program header: without section headers, the data at {o:#x} after the table cannot be moved"
        )));
    }
    let crossing = p.phdrs.iter().any(|ph| {
        !matches!(ph.p_type, PT_LOAD | PT_PHDR)
            && !movable(&ph)
            && ph.filesz > 0
            && ph.offset < end
            && ph.file_end() > start
    });
    if crossing || reach > first.file_end() {
        return Err(unsupported(
            "no room to add a program header: without section headers, what follows the table cannot be moved",
        ));
    }
    Ok((start, end, first.vaddr + (start - first.offset)))
}

/// Grow: a new PT_LOAD at the end, room for one more program header in place. The steps, in
/// order: [`load_extent`], [`make_room`], the pieces placed in a [`Segment`] (interpreter,
/// string table, [`follow_moves`] for the dynamic entries, note, dynamic section, program
/// header table), [`program_headers`], [`section_headers`], [`clear_old_strtab`] and
/// [`write_out`].
pub(crate) fn layout(
    p: &Parsed,
    input: &[u8],
    out: &mut Vec<u8>,
    li: LayoutInput<'_>,
) -> R<NotePlace> {
    let fmt = p.fmt;
    let LayoutInput {
        mut dyns,
        new_interp,
        dyn_moves,
        strings,
        verneed_count,
        note,
    } = li;
    let (align, max_end) = load_extent(p)?;
    // Room for one more program header (two with a note: PT_LOAD and PT_NOTE) right after the
    // table.
    let added_phdrs: u64 = if note.is_some() { 2 } else { 1 };
    let room = make_room(p, added_phdrs)?;
    let mut seg = Segment::new(out, room.block, max_end, align)?;

    let mut placed = Placed::default();
    if let Some(b) = &new_interp {
        placed.interp = Some((seg.place(b, 1)?, b.len() as u64));
    }
    if !strings.extra.is_empty() {
        let mut all = strings.table.clone();
        all.extend_from_slice(&strings.extra);
        placed.dynstr = Some((seg.place(&all, 1)?, all.len() as u64));
    }
    follow_moves(&mut dyns, &seg, placed.dynstr);
    if let Some(n) = note {
        placed.note = Some((seg.place(n, 4)?, n.len() as u64));
    }
    if dyn_moves {
        let es = fmt.dynentsize();
        let n = dyns.len() as u64 + 1;
        let mut bytes = vec![0u8; (n * es) as usize];
        write_dyn_entries(fmt, &mut bytes, 0, n, &dyns)?;
        placed.dynamic = Some((seg.place(&bytes, fmt.word_size())?, n * es));
    } else if p.dyn_off.is_some() {
        write_dynamic_in_place(p, out, &dyns)?;
    }
    if room.phdrs_at_end {
        let table = vec![0u8; ((p.phdrs.len() as u64 + added_phdrs) * fmt.phentsize()) as usize];
        placed.phdrs = Some(seg.place(&table, fmt.word_size())?);
    }

    let phdrs = program_headers(p, &seg, &placed, added_phdrs, align);
    let shdrs = section_headers(p, &seg, &placed, room.interp_off, verneed_count)?;
    clear_old_strtab(p, out, &mut seg, &placed, room.block)?;
    write_out(p, input, out, &seg, &phdrs, &shdrs, placed.phdrs)?;
    Ok(placed
        .note
        .map(|(pos, _)| (seg.off_of(pos), seg.vaddr_of(pos))))
}

/// The largest PT_LOAD alignment (at least a page) and where the loaded image ends in memory.
fn load_extent(p: &Parsed) -> R<(u64, u64)> {
    if p.loads().next().is_none() {
        return Err(unsupported("no PT_LOAD segment"));
    }
    let mut align: u64 = 0x1000;
    let mut max_end = 0u64;
    for ph in p.loads() {
        align = align.max(ph.align);
        max_end = max_end.max(ph.mem_end());
    }
    if !align.is_power_of_two() {
        return Err(unsupported(format!(
            "PT_LOAD alignment {align:#x} is not a power of two"
        )));
    }
    if align > 0x1000_0000 {
        return Err(unsupported(format!(
            "PT_LOAD alignment {align:#x} is too large"
        )));
    }
    Ok((align, max_end))
}

/// How the program header table gets room for `added` more entries.
struct Room {
    /// The block of sections moved out of the way ([`choose_block`]): old offset, end, address.
    block: Option<(u64, u64, u64)>,
    /// The table itself moves into the new segment (a library whose table cannot grow).
    phdrs_at_end: bool,
    /// File offset of PT_INTERP's contents.
    interp_off: Option<u64>,
}

fn make_room(p: &Parsed, added: u64) -> R<Room> {
    let phsz = p.fmt.phentsize();
    let old_ph_end = p.eh.phoff + u64::from(p.eh.phnum) * phsz;
    let need_end = old_ph_end + added * phsz;
    let interp_off = p
        .phdrs
        .iter()
        .find(|ph| ph.p_type == PT_INTERP)
        .map(|ph| ph.offset);
    // An object whose dynamic section is known only from its section headers has no
    // PT_DYNAMIC, so no loader runs it as it is: its table may move like a library's.
    let library_like = p.dyn_ph.is_none()
        || !p
            .phdrs
            .iter()
            .any(|ph| matches!(ph.p_type, PT_INTERP | PT_PHDR));
    // A shared library whose table cannot grow in place gets its program headers in the new
    // segment instead (glibc reads a library's table from the file and finds it in a PT_LOAD);
    // programs never do, the kernel wants theirs in the first page.
    let (block, phdrs_at_end) = match choose_block(p, old_ph_end, need_end) {
        Ok(b) => (b, false),
        Err(RewriteError::Unsupported(_)) if library_like => (None, true),
        Err(e) => return Err(e),
    };
    Ok(Room {
        block,
        phdrs_at_end,
        interp_off,
    })
}

/// The new segment appended to the file: its bytes, file offset and address, and the moved
/// block of sections it starts with.
struct Segment {
    bytes: Vec<u8>,
    off: u64,
    vaddr: u64,
    /// The moved block: old offset, old address, length, position in the segment.
    shift: Option<(u64, u64, u64, u64)>,
}

impl Segment {
    /// A segment after the file `out` and after `max_end` in memory, starting with a copy of
    /// the moved `block` (old offset, end, address).
    fn new(out: &[u8], block: Option<(u64, u64, u64)>, max_end: u64, align: u64) -> R<Self> {
        let file_len = out.len() as u64;
        let off = match block {
            Some((start, _, _)) => align_up(file_len, 0x1000)? + start % 0x1000,
            None => align_up(file_len, 16)?,
        };
        let vaddr = align_up(max_end, align)? + off % align;
        let mut seg = Segment {
            bytes: Vec::new(),
            off,
            vaddr,
            shift: None,
        };
        if let Some((start, end, old_vaddr)) = block {
            seg.bytes
                .extend_from_slice(bytes_at(out, start, end - start)?);
            seg.shift = Some((start, old_vaddr, end - start, 0));
        }
        Ok(seg)
    }

    /// Appends `bytes` at the next multiple of `al`; returns their position.
    fn place(&mut self, bytes: &[u8], al: u64) -> R<u64> {
        let pos = align_up(self.bytes.len() as u64, al)?;
        self.bytes.resize(pos as usize, 0);
        self.bytes.extend_from_slice(bytes);
        Ok(pos)
    }

    fn vaddr_of(&self, pos: u64) -> u64 {
        self.vaddr + pos
    }

    fn off_of(&self, pos: u64) -> u64 {
        self.off + pos
    }

    /// Points a program header at `len` bytes placed at `pos`.
    fn cover(&self, ph: &mut Phdr, pos: u64, len: u64) {
        ph.offset = self.off_of(pos);
        ph.vaddr = self.vaddr_of(pos);
        ph.paddr = ph.vaddr;
        ph.filesz = len;
        ph.memsz = len;
    }

    /// Points a section header at `len` bytes placed at `pos`.
    fn cover_section(&self, sh: &mut Shdr, pos: u64, len: u64) {
        sh.offset = self.off_of(pos);
        sh.addr = self.vaddr_of(pos);
        sh.size = len;
    }

    /// The new address of `a` when it was in the moved block.
    fn moved_addr(&self, a: u64) -> Option<u64> {
        let (_, ov, len, pos) = self.shift?;
        (a >= ov && a < ov + len).then(|| self.vaddr_of(pos) + (a - ov))
    }

    /// The new file offset of `o` when it was in the moved block.
    fn moved_off(&self, o: u64) -> Option<u64> {
        let (oo, _, len, pos) = self.shift?;
        (o >= oo && o < oo + len).then(|| self.off_of(pos) + (o - oo))
    }
}

/// Where the pieces went in the segment: position and length.
#[derive(Default)]
struct Placed {
    interp: Option<(u64, u64)>,
    dynstr: Option<(u64, u64)>,
    note: Option<(u64, u64)>,
    dynamic: Option<(u64, u64)>,
    /// The program header table (position only).
    phdrs: Option<u64>,
}

/// Dynamic entries follow the moved block and the new string table.
fn follow_moves(dyns: &mut [(u64, u64)], seg: &Segment, dynstr: Option<(u64, u64)>) {
    for e in dyns.iter_mut() {
        if is_pointer_tag(e.0) {
            if let Some(n) = seg.moved_addr(e.1) {
                e.1 = n;
            }
        }
        if e.0 == DT_STRTAB {
            if let Some((pos, _)) = dynstr {
                e.1 = seg.vaddr_of(pos);
            }
        }
        if e.0 == DT_STRSZ {
            if let Some((_, len)) = dynstr {
                e.1 = len;
            }
        }
    }
}

/// The program headers: the old ones following what moved, the new PT_LOAD after the last
/// one, and a PT_NOTE for a placed note.
fn program_headers(
    p: &Parsed,
    seg: &Segment,
    placed: &Placed,
    added_phdrs: u64,
    align: u64,
) -> Vec<Phdr> {
    let phsz = p.fmt.phentsize();
    let mut phdrs = Vec::with_capacity(p.phdrs.len() + 1);
    for ph in &p.phdrs {
        let mut n = *ph;
        match ph.p_type {
            PT_PHDR => {
                n.filesz += added_phdrs * phsz;
                n.memsz += added_phdrs * phsz;
                if let Some(pos) = placed.phdrs {
                    n.offset = seg.off_of(pos);
                    n.vaddr = seg.vaddr_of(pos);
                    n.paddr = n.vaddr;
                }
            }
            PT_INTERP if placed.interp.is_some() => {
                let (pos, len) = placed.interp.unwrap_or_default();
                seg.cover(&mut n, pos, len);
                n.align = 1;
            }
            PT_DYNAMIC if placed.dynamic.is_some() => {
                let (pos, len) = placed.dynamic.unwrap_or_default();
                seg.cover(&mut n, pos, len);
            }
            PT_LOAD => {}
            _ => {
                if let (Some(o), Some(v)) = (seg.moved_off(ph.offset), seg.moved_addr(ph.vaddr)) {
                    n.paddr = v.wrapping_add(ph.paddr.wrapping_sub(ph.vaddr));
                    n.offset = o;
                    n.vaddr = v;
                }
            }
        }
        phdrs.push(n);
    }
    let last_load = phdrs
        .iter()
        .rposition(|ph| ph.p_type == PT_LOAD)
        .unwrap_or(0);
    phdrs.insert(
        last_load + 1,
        Phdr {
            p_type: PT_LOAD,
            // A segment that only adds a note (and moved read-only sections) is read-only.
            flags: if placed.note.is_some() && placed.dynamic.is_none() {
                PF_R
            } else {
                PF_R | PF_W
            },
            offset: seg.off,
            vaddr: seg.vaddr,
            paddr: seg.vaddr,
            filesz: seg.bytes.len() as u64,
            memsz: seg.bytes.len() as u64,
            align,
        },
    );
    if let Some((pos, len)) = placed.note {
        phdrs.push(Phdr {
            p_type: PT_NOTE,
            flags: PF_R,
            offset: seg.off_of(pos),
            vaddr: seg.vaddr_of(pos),
            paddr: seg.vaddr_of(pos),
            filesz: len,
            memsz: len,
            align: 4,
        });
    }
    phdrs
}

/// The section headers, following what moved; `.gnu.version_r`'s count when it changed.
fn section_headers(
    p: &Parsed,
    seg: &Segment,
    placed: &Placed,
    interp_off: Option<u64>,
    verneed_count: Option<u64>,
) -> R<Vec<Shdr>> {
    let mut shdrs = p.shdrs.clone();
    let old_strtab_addr = p.strtab.map(|(_, a, _)| a);
    for (i, sh) in p.shdrs.iter().enumerate() {
        let n = &mut shdrs[i];
        if sh.flags & SHF_ALLOC != 0 && sh.sh_type != SHT_NOBITS {
            if let (Some(o), Some(a)) = (seg.moved_off(sh.offset), seg.moved_addr(sh.addr)) {
                n.offset = o;
                n.addr = a;
            }
        }
        if let Some((pos, len)) = placed.interp {
            if sh.sh_type == SHT_PROGBITS && Some(sh.offset) == interp_off && sh.size > 0 {
                seg.cover_section(n, pos, len);
            }
        }
        if let Some((pos, len)) = placed.dynstr {
            if sh.sh_type == SHT_STRTAB && Some(sh.addr) == old_strtab_addr && sh.addr != 0 {
                seg.cover_section(n, pos, len);
            }
        }
        if let Some((pos, len)) = placed.dynamic {
            if sh.sh_type == SHT_DYNAMIC {
                seg.cover_section(n, pos, len);
            }
        }
        if let (Some(c), SHT_GNU_VERNEED) = (verneed_count, sh.sh_type) {
            n.info = u32::try_from(c).map_err(|_| bad("too many version needs"))?;
        }
    }
    Ok(shdrs)
}

/// The old string table is no longer referenced once a new one is placed: it is cleared (in
/// the file and in the moved block's copy) so stale strings (old search paths) do not linger.
fn clear_old_strtab(
    p: &Parsed,
    out: &mut [u8],
    seg: &mut Segment,
    placed: &Placed,
    block: Option<(u64, u64, u64)>,
) -> R<()> {
    if let (Some(_), Some((so, _, size))) = (placed.dynstr, p.strtab) {
        bytes_at_mut(out, so, size)?.fill(0);
        if let Some((start, end, _)) = block {
            if so >= start && so + size <= end {
                bytes_at_mut(&mut seg.bytes, so - start, size)?.fill(0);
            }
        }
    }
    Ok(())
}

/// Appends the segment and writes the program and section headers; a section header table
/// that ended the input ends the output too, after the new segment (where linkers put it and
/// tools expect it), its old place cleared.
fn write_out(
    p: &Parsed,
    input: &[u8],
    out: &mut Vec<u8>,
    seg: &Segment,
    phdrs: &[Phdr],
    shdrs: &[Shdr],
    phdr_pos: Option<u64>,
) -> R<()> {
    let fmt = p.fmt;
    let phsz = fmt.phentsize();
    out.resize(seg.off as usize, 0);
    out.extend_from_slice(&seg.bytes);
    let phnum = u16::try_from(phdrs.len()).map_err(|_| unsupported("too many program headers"))?;
    let phoff = phdr_pos.map_or(p.eh.phoff, |pos| seg.off_of(pos));
    for (i, ph) in phdrs.iter().enumerate() {
        ph.write(fmt, out, phoff + i as u64 * phsz)?;
    }
    Ehdr::write_phnum(fmt, out, phnum)?;
    if phdr_pos.is_some() {
        Ehdr::write_phoff(fmt, out, phoff)?;
    }
    for (i, sh) in shdrs.iter().enumerate() {
        if *sh != p.shdrs[i] {
            sh.write_placement(fmt, out, p.eh.shoff + i as u64 * fmt.shentsize())?;
        }
    }
    let sh_len = p.shdrs.len() as u64 * fmt.shentsize();
    let sh_loaded = p
        .loads()
        .any(|ph| p.eh.shoff < ph.file_end() && p.eh.shoff + sh_len > ph.offset);
    if sh_len > 0 && p.eh.shoff + sh_len == input.len() as u64 && !sh_loaded {
        let table = bytes_at(out, p.eh.shoff, sh_len)?.to_vec();
        bytes_at_mut(out, p.eh.shoff, sh_len)?.fill(0);
        let at = align_up(out.len() as u64, fmt.word_size())?;
        out.resize(at as usize, 0);
        out.extend_from_slice(&table);
        Ehdr::write_shoff(fmt, out, at)?;
    }
    Ok(())
}
