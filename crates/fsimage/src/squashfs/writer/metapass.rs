//! Metadata pass: inodes (children before their directory), directory listings, the fragment,
//! id and xattr tables.

use super::*;

pub(super) struct XattrTable {
    pub(super) kv: MetaWriter,
    pub(super) ids: Vec<(u64, u32, u32)>,
    pub(super) by_set: HashMap<Vec<Xattr>, u32>,
}

impl XattrTable {
    pub(super) fn id(&mut self, codec: &mut Codec, set: &[Xattr]) -> Result<u32, WriteError> {
        if set.is_empty() {
            return Ok(NO_XATTR);
        }
        if let Some(&id) = self.by_set.get(set) {
            return Ok(id);
        }
        let reference = self.kv.reference();
        let mut bytes = Vec::new();
        for (ty, name, value) in set {
            bytes.extend_from_slice(&ty.to_le_bytes());
            bytes.extend_from_slice(&(name.len() as u16).to_le_bytes());
            bytes.extend_from_slice(name);
            bytes.extend_from_slice(&(value.len() as u32).to_le_bytes());
            bytes.extend_from_slice(value);
        }
        self.kv.write(codec, &bytes)?;
        let id = self.ids.len() as u32;
        self.ids
            .push((reference, set.len() as u32, bytes.len() as u32));
        self.by_set.insert(set.to_vec(), id);
        Ok(id)
    }
}

pub(super) struct MetaPass<'a> {
    pub(super) tree: &'a Tree,
    pub(super) layout: &'a DataLayout,
    pub(super) codec: Codec,
    pub(super) mtime: u32,
    pub(super) inodes: MetaWriter,
    pub(super) dirs: MetaWriter,
    pub(super) xattrs: XattrTable,
    pub(super) numbers: Vec<u32>,
    pub(super) refs: Vec<Option<u64>>,
}

pub(super) fn post_order(tree: &Tree, dir: usize, seen: &mut [bool], order: &mut Vec<usize>) {
    if let Kind::Dir { entries } = &tree.inodes[dir].kind {
        for &(_, child) in entries {
            if matches!(tree.inodes[child].kind, Kind::Dir { .. }) {
                post_order(tree, child, seen, order);
            } else if !seen[child] {
                seen[child] = true;
                order.push(child);
            }
        }
    }
    order.push(dir);
}

pub(super) fn basic_type(kind: &Kind) -> u16 {
    match kind {
        Kind::Dir { .. } => 1,
        Kind::File { .. } => 2,
        Kind::Symlink(_) => 3,
        Kind::Block(_) => 4,
        Kind::Char(_) => 5,
        Kind::Fifo => 6,
        Kind::Socket => 7,
    }
}

impl MetaPass<'_> {
    pub(super) fn header(&self, buf: &mut Vec<u8>, ty: u16, idx: usize) {
        buf.extend_from_slice(&ty.to_le_bytes());
        buf.extend_from_slice(&self.tree.inodes[idx].mode.to_le_bytes());
        buf.extend_from_slice(&0u16.to_le_bytes()); // uid index: id 0 (root)
        buf.extend_from_slice(&0u16.to_le_bytes()); // gid index
        buf.extend_from_slice(&self.mtime.to_le_bytes());
        buf.extend_from_slice(&self.numbers[idx].to_le_bytes());
    }

    pub(super) fn write_dir(&mut self, idx: usize, parent: u32) -> Result<(), WriteError> {
        let tree = self.tree;
        let Kind::Dir { entries } = &tree.inodes[idx].kind else {
            unreachable!("write_dir on a directory")
        };
        let mut subdirs = 0u32;
        for &(_, child) in entries {
            if matches!(self.tree.inodes[child].kind, Kind::Dir { .. }) {
                subdirs += 1;
                self.write_dir(child, self.numbers[idx])?;
            } else if self.refs[child].is_none() {
                self.write_other(child)?;
            }
        }
        // The listing: runs of entries sharing an inode metadata block, at most 256 each, a
        // new run (and an index entry) whenever the listing enters a new metadata block, so a
        // lookup in a large directory decompresses one block of it.
        let (dir_block, dir_offset) = self.dirs.pos();
        let mut listing_len = 0usize;
        let mut index: Vec<(u32, u32, &[u8])> = Vec::new();
        let mut last_block = dir_block;
        let mut i = 0;
        while i < entries.len() {
            let (run_block, run_offset) = self.dirs.pos();
            if run_block != last_block {
                let block = u32::try_from(run_block)
                    .map_err(|_| WriteError::TooLarge("directory table"))?;
                index.push((listing_len as u32, block, &entries[i].0));
                last_block = run_block;
            }
            let first = entries[i].1;
            let base_ref = self.refs[first].expect("child inode written");
            let base_num = self.numbers[first];
            let mut run = Vec::with_capacity(1024);
            run.extend_from_slice(&[0u8; 12]);
            let mut j = i;
            while j < entries.len() && j - i < 256 {
                let (name, c) = &entries[j];
                let r = self.refs[*c].expect("child inode written");
                let diff = self.numbers[*c] as i64 - base_num as i64;
                if r >> 16 != base_ref >> 16 || !(-32768..=32767).contains(&diff) {
                    break;
                }
                if j > i && run_offset as usize + run.len() >= METADATA_SIZE {
                    break;
                }
                run.extend_from_slice(&((r & 0xffff) as u16).to_le_bytes());
                run.extend_from_slice(&(diff as i16).to_le_bytes());
                run.extend_from_slice(&basic_type(&tree.inodes[*c].kind).to_le_bytes());
                run.extend_from_slice(&((name.len() - 1) as u16).to_le_bytes());
                run.extend_from_slice(name);
                j += 1;
            }
            run[0..4].copy_from_slice(&((j - i - 1) as u32).to_le_bytes());
            run[4..8].copy_from_slice(&((base_ref >> 16) as u32).to_le_bytes());
            run[8..12].copy_from_slice(&base_num.to_le_bytes());
            self.dirs.write(&mut self.codec, &run)?;
            listing_len += run.len();
            i = j;
        }
        let file_size = listing_len as u64 + 3;
        let xattr = self
            .xattrs
            .id(&mut self.codec, &self.tree.inodes[idx].xattrs)?;
        let nlink = 2 + subdirs;
        let dir_block =
            u32::try_from(dir_block).map_err(|_| WriteError::TooLarge("directory table"))?;
        let mut buf = Vec::with_capacity(40);
        if file_size > 0xffff || xattr != NO_XATTR || !index.is_empty() {
            self.header(&mut buf, 8, idx);
            buf.extend_from_slice(&nlink.to_le_bytes());
            buf.extend_from_slice(&(file_size as u32).to_le_bytes());
            buf.extend_from_slice(&dir_block.to_le_bytes());
            buf.extend_from_slice(&parent.to_le_bytes());
            buf.extend_from_slice(&(index.len() as u16).to_le_bytes());
            buf.extend_from_slice(&dir_offset.to_le_bytes());
            buf.extend_from_slice(&xattr.to_le_bytes());
            for (offset, block, name) in &index {
                buf.extend_from_slice(&offset.to_le_bytes());
                buf.extend_from_slice(&block.to_le_bytes());
                buf.extend_from_slice(&((name.len() - 1) as u32).to_le_bytes());
                buf.extend_from_slice(name);
            }
        } else {
            self.header(&mut buf, 1, idx);
            buf.extend_from_slice(&dir_block.to_le_bytes());
            buf.extend_from_slice(&nlink.to_le_bytes());
            buf.extend_from_slice(&(file_size as u16).to_le_bytes());
            buf.extend_from_slice(&dir_offset.to_le_bytes());
            buf.extend_from_slice(&parent.to_le_bytes());
        }
        self.refs[idx] = Some(self.inodes.reference());
        self.inodes.write(&mut self.codec, &buf)?;
        Ok(())
    }

    pub(super) fn write_other(&mut self, idx: usize) -> Result<(), WriteError> {
        let inode = &self.tree.inodes[idx];
        let xattr = self.xattrs.id(&mut self.codec, &inode.xattrs)?;
        let ext = xattr != NO_XATTR;
        let mut buf = Vec::with_capacity(64);
        match &inode.kind {
            Kind::Dir { .. } => unreachable!("directories are written by write_dir"),
            Kind::File { size, .. } => {
                let fd = &self.layout.files[&idx];
                let start = match fd.blocks.iter().find_map(|b| match b {
                    BlockRef::Seq(s) => Some(*s),
                    BlockRef::Sparse => None,
                }) {
                    Some(s) => self.layout.placed[s].0,
                    None => self
                        .layout
                        .placed
                        .get(fd.first_seq)
                        .map_or(self.layout.end, |p| p.0),
                };
                let sizes: Vec<u32> = fd
                    .blocks
                    .iter()
                    .map(|b| match b {
                        BlockRef::Seq(s) => self.layout.placed[*s].1,
                        BlockRef::Sparse => 0,
                    })
                    .collect();
                let sparse = fd
                    .blocks
                    .iter()
                    .filter(|b| matches!(b, BlockRef::Sparse))
                    .count() as u64
                    * BLOCK_SIZE as u64;
                let (frag, frag_off) = fd.fragment.unwrap_or((NO_FRAGMENT, 0));
                if ext
                    || inode.nlink > 1
                    || sparse > 0
                    || *size > u32::MAX as u64
                    || start > u32::MAX as u64
                {
                    self.header(&mut buf, 9, idx);
                    buf.extend_from_slice(&start.to_le_bytes());
                    buf.extend_from_slice(&size.to_le_bytes());
                    buf.extend_from_slice(&sparse.to_le_bytes());
                    buf.extend_from_slice(&inode.nlink.to_le_bytes());
                    buf.extend_from_slice(&frag.to_le_bytes());
                    buf.extend_from_slice(&frag_off.to_le_bytes());
                    buf.extend_from_slice(&xattr.to_le_bytes());
                } else {
                    self.header(&mut buf, 2, idx);
                    buf.extend_from_slice(&(start as u32).to_le_bytes());
                    buf.extend_from_slice(&frag.to_le_bytes());
                    buf.extend_from_slice(&frag_off.to_le_bytes());
                    buf.extend_from_slice(&(*size as u32).to_le_bytes());
                }
                for s in sizes {
                    buf.extend_from_slice(&s.to_le_bytes());
                }
            }
            Kind::Symlink(target) => {
                self.header(&mut buf, if ext { 10 } else { 3 }, idx);
                buf.extend_from_slice(&inode.nlink.to_le_bytes());
                buf.extend_from_slice(&(target.len() as u32).to_le_bytes());
                buf.extend_from_slice(target);
                if ext {
                    buf.extend_from_slice(&xattr.to_le_bytes());
                }
            }
            Kind::Block(dev) | Kind::Char(dev) => {
                let basic = basic_type(&inode.kind);
                self.header(&mut buf, if ext { basic + 7 } else { basic }, idx);
                buf.extend_from_slice(&inode.nlink.to_le_bytes());
                buf.extend_from_slice(&dev.to_le_bytes());
                if ext {
                    buf.extend_from_slice(&xattr.to_le_bytes());
                }
            }
            Kind::Fifo | Kind::Socket => {
                let basic = basic_type(&inode.kind);
                self.header(&mut buf, if ext { basic + 7 } else { basic }, idx);
                buf.extend_from_slice(&inode.nlink.to_le_bytes());
                if ext {
                    buf.extend_from_slice(&xattr.to_le_bytes());
                }
            }
        }
        self.refs[idx] = Some(self.inodes.reference());
        self.inodes.write(&mut self.codec, &buf)?;
        Ok(())
    }
}

/// A table of fixed-size entries in metadata blocks followed by the u64 array of the blocks'
/// absolute positions; returns (bytes to append at `at`, position of the array).
pub(super) fn indexed_table(
    codec: &mut Codec,
    entries: &[u8],
    at: u64,
) -> Result<(Vec<u8>, u64), WriteError> {
    let mut out = Vec::new();
    let mut starts = Vec::new();
    for chunk in entries.chunks(METADATA_SIZE) {
        starts.push(at + out.len() as u64);
        let mut m = MetaWriter::new();
        m.write(codec, chunk)?;
        out.extend_from_slice(&m.finish(codec)?);
    }
    let index_at = at + out.len() as u64;
    for s in starts {
        out.extend_from_slice(&s.to_le_bytes());
    }
    Ok((out, index_at))
}
