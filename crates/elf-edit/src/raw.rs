//! Bounds-checked, class- and byte-order-generic access to the ELF structures the rewriter
//! edits (file header, program headers, section headers, dynamic entries).
//!
//! Every read returns an error instead of panicking, so arbitrary bytes can be fed in.

use super::RewriteError;

pub(crate) type R<T> = Result<T, RewriteError>;

pub(crate) fn bad(msg: impl Into<String>) -> RewriteError {
    RewriteError::Malformed(msg.into())
}

pub(crate) fn unsupported(msg: impl Into<String>) -> RewriteError {
    RewriteError::Unsupported(msg.into())
}

/// Class (32/64-bit) and byte order of one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Fmt {
    pub is64: bool,
    pub le: bool,
}

fn slice(b: &[u8], off: u64, len: usize) -> R<&[u8]> {
    let start = usize::try_from(off).map_err(|_| bad(format!("offset {off:#x} out of range")))?;
    let end = start
        .checked_add(len)
        .ok_or_else(|| bad(format!("offset {off:#x} out of range")))?;
    b.get(start..end).ok_or_else(|| {
        bad(format!(
            "read of {len} bytes at {off:#x} is past the end of the file"
        ))
    })
}

fn slice_mut(b: &mut [u8], off: u64, len: usize) -> R<&mut [u8]> {
    let start = usize::try_from(off).map_err(|_| bad(format!("offset {off:#x} out of range")))?;
    let end = start
        .checked_add(len)
        .ok_or_else(|| bad(format!("offset {off:#x} out of range")))?;
    b.get_mut(start..end).ok_or_else(|| {
        bad(format!(
            "write of {len} bytes at {off:#x} is past the end of the file"
        ))
    })
}

impl Fmt {
    pub fn word_size(self) -> u64 {
        if self.is64 {
            8
        } else {
            4
        }
    }
    pub fn u16(self, b: &[u8], off: u64) -> R<u16> {
        let s: [u8; 2] = slice(b, off, 2)?
            .try_into()
            .map_err(|_| bad("short read"))?;
        Ok(if self.le {
            u16::from_le_bytes(s)
        } else {
            u16::from_be_bytes(s)
        })
    }
    pub fn u32(self, b: &[u8], off: u64) -> R<u32> {
        let s: [u8; 4] = slice(b, off, 4)?
            .try_into()
            .map_err(|_| bad("short read"))?;
        Ok(if self.le {
            u32::from_le_bytes(s)
        } else {
            u32::from_be_bytes(s)
        })
    }
    pub fn u64(self, b: &[u8], off: u64) -> R<u64> {
        let s: [u8; 8] = slice(b, off, 8)?
            .try_into()
            .map_err(|_| bad("short read"))?;
        Ok(if self.le {
            u64::from_le_bytes(s)
        } else {
            u64::from_be_bytes(s)
        })
    }
    /// An address-sized field (Elf32_Addr/Off/Word or Elf64_Addr/Off/Xword).
    pub fn word(self, b: &[u8], off: u64) -> R<u64> {
        if self.is64 {
            self.u64(b, off)
        } else {
            self.u32(b, off).map(u64::from)
        }
    }
    pub fn put16(self, b: &mut [u8], off: u64, v: u16) -> R<()> {
        let bytes = if self.le {
            v.to_le_bytes()
        } else {
            v.to_be_bytes()
        };
        slice_mut(b, off, 2)?.copy_from_slice(&bytes);
        Ok(())
    }
    pub fn put32(self, b: &mut [u8], off: u64, v: u32) -> R<()> {
        let bytes = if self.le {
            v.to_le_bytes()
        } else {
            v.to_be_bytes()
        };
        slice_mut(b, off, 4)?.copy_from_slice(&bytes);
        Ok(())
    }
    pub fn put64(self, b: &mut [u8], off: u64, v: u64) -> R<()> {
        let bytes = if self.le {
            v.to_le_bytes()
        } else {
            v.to_be_bytes()
        };
        slice_mut(b, off, 8)?.copy_from_slice(&bytes);
        Ok(())
    }
    pub fn put_word(self, b: &mut [u8], off: u64, v: u64) -> R<()> {
        if self.is64 {
            self.put64(b, off, v)
        } else {
            let v = u32::try_from(v)
                .map_err(|_| unsupported(format!("value {v:#x} does not fit a 32-bit ELF")))?;
            self.put32(b, off, v)
        }
    }
    pub fn phentsize(self) -> u64 {
        if self.is64 {
            56
        } else {
            32
        }
    }
    pub fn shentsize(self) -> u64 {
        if self.is64 {
            64
        } else {
            40
        }
    }
    pub fn dynentsize(self) -> u64 {
        2 * self.word_size()
    }
}

pub(crate) fn bytes_at(b: &[u8], off: u64, len: u64) -> R<&[u8]> {
    let len = usize::try_from(len).map_err(|_| bad(format!("length {len:#x} out of range")))?;
    slice(b, off, len)
}

pub(crate) fn bytes_at_mut(b: &mut [u8], off: u64, len: u64) -> R<&mut [u8]> {
    let len = usize::try_from(len).map_err(|_| bad(format!("length {len:#x} out of range")))?;
    slice_mut(b, off, len)
}

/// The fields of the ELF file header the rewriter uses.
#[derive(Debug, Clone)]
pub(crate) struct Ehdr {
    pub e_type: u16,
    pub machine: u16,
    pub phoff: u64,
    pub shoff: u64,
    pub phnum: u16,
    pub shnum: u16,
    /// Index of the section name string table (`e_shstrndx`).
    pub shstrndx: u16,
}

impl Ehdr {
    fn off(fmt: Fmt, field: &str) -> u64 {
        let w = fmt.word_size();
        match field {
            "phoff" => 24 + w,
            "shoff" => 24 + 2 * w,
            "phentsize" => 30 + 3 * w,
            "phnum" => 32 + 3 * w,
            "shentsize" => 34 + 3 * w,
            "shnum" => 36 + 3 * w,
            "shstrndx" => 38 + 3 * w,
            _ => 0,
        }
    }

    pub fn parse(b: &[u8]) -> R<Option<(Fmt, Ehdr)>> {
        if b.len() < 4 || &b[..4] != b"\x7fELF" {
            return Ok(None);
        }
        if b.len() < 52 {
            return Err(bad("file header is truncated"));
        }
        let is64 = match b[4] {
            1 => false,
            2 => true,
            c => return Err(bad(format!("unknown ELF class {c}"))),
        };
        let le = match b[5] {
            1 => true,
            2 => false,
            d => return Err(bad(format!("unknown ELF byte order {d}"))),
        };
        let fmt = Fmt { is64, le };
        if is64 && b.len() < 64 {
            return Err(bad("file header is truncated"));
        }
        let e = Ehdr {
            e_type: fmt.u16(b, 16)?,
            machine: fmt.u16(b, 18)?,
            phoff: fmt.word(b, Self::off(fmt, "phoff"))?,
            shoff: fmt.word(b, Self::off(fmt, "shoff"))?,
            phnum: fmt.u16(b, Self::off(fmt, "phnum"))?,
            shnum: fmt.u16(b, Self::off(fmt, "shnum"))?,
            shstrndx: fmt.u16(b, Self::off(fmt, "shstrndx"))?,
        };
        let phentsize = fmt.u16(b, Self::off(fmt, "phentsize"))?;
        let shentsize = fmt.u16(b, Self::off(fmt, "shentsize"))?;
        // The tables must lie inside the file (checked with the sizes the header claims).
        let table_end = |off: u64, num: u16, size: u16| {
            off.checked_add(u64::from(num) * u64::from(size))
                .filter(|&end| end <= b.len() as u64)
        };
        if e.phnum > 0 && table_end(e.phoff, e.phnum, phentsize).is_none() {
            return Err(bad(format!(
                "program header table out of bounds ({} entries at {:#x})",
                e.phnum, e.phoff
            )));
        }
        if e.shoff != 0 && e.shnum > 0 && table_end(e.shoff, e.shnum, shentsize).is_none() {
            return Err(bad(format!(
                "section header table out of bounds ({} entries at {:#x})",
                e.shnum, e.shoff
            )));
        }
        if e.phnum == 0xffff {
            return Err(unsupported("extended program header numbering (PN_XNUM)"));
        }
        if e.phnum > 0 && u64::from(phentsize) != fmt.phentsize() {
            return Err(bad(format!(
                "program headers have wrong size ({phentsize} bytes)"
            )));
        }
        if e.shnum > 0 && u64::from(shentsize) != fmt.shentsize() {
            return Err(bad(format!(
                "section headers have wrong size ({shentsize} bytes)"
            )));
        }
        Ok(Some((fmt, e)))
    }

    pub fn write_phoff(fmt: Fmt, b: &mut [u8], phoff: u64) -> R<()> {
        fmt.put_word(b, Self::off(fmt, "phoff"), phoff)
    }

    pub fn write_shoff(fmt: Fmt, b: &mut [u8], shoff: u64) -> R<()> {
        fmt.put_word(b, Self::off(fmt, "shoff"), shoff)
    }

    pub fn write_phnum(fmt: Fmt, b: &mut [u8], phnum: u16) -> R<()> {
        fmt.put16(b, Self::off(fmt, "phnum"), phnum)
    }
}

/// One program header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Phdr {
    pub p_type: u32,
    pub flags: u32,
    pub offset: u64,
    pub vaddr: u64,
    pub paddr: u64,
    pub filesz: u64,
    pub memsz: u64,
    pub align: u64,
}

impl Phdr {
    pub fn read(fmt: Fmt, b: &[u8], off: u64) -> R<Phdr> {
        if fmt.is64 {
            Ok(Phdr {
                p_type: fmt.u32(b, off)?,
                flags: fmt.u32(b, off + 4)?,
                offset: fmt.u64(b, off + 8)?,
                vaddr: fmt.u64(b, off + 16)?,
                paddr: fmt.u64(b, off + 24)?,
                filesz: fmt.u64(b, off + 32)?,
                memsz: fmt.u64(b, off + 40)?,
                align: fmt.u64(b, off + 48)?,
            })
        } else {
            Ok(Phdr {
                p_type: fmt.u32(b, off)?,
                offset: fmt.u32(b, off + 4)?.into(),
                vaddr: fmt.u32(b, off + 8)?.into(),
                paddr: fmt.u32(b, off + 12)?.into(),
                filesz: fmt.u32(b, off + 16)?.into(),
                memsz: fmt.u32(b, off + 20)?.into(),
                flags: fmt.u32(b, off + 24)?,
                align: fmt.u32(b, off + 28)?.into(),
            })
        }
    }
    pub fn write(&self, fmt: Fmt, b: &mut [u8], off: u64) -> R<()> {
        if fmt.is64 {
            fmt.put32(b, off, self.p_type)?;
            fmt.put32(b, off + 4, self.flags)?;
            fmt.put64(b, off + 8, self.offset)?;
            fmt.put64(b, off + 16, self.vaddr)?;
            fmt.put64(b, off + 24, self.paddr)?;
            fmt.put64(b, off + 32, self.filesz)?;
            fmt.put64(b, off + 40, self.memsz)?;
            fmt.put64(b, off + 48, self.align)
        } else {
            fmt.put32(b, off, self.p_type)?;
            fmt.put_word(b, off + 4, self.offset)?;
            fmt.put_word(b, off + 8, self.vaddr)?;
            fmt.put_word(b, off + 12, self.paddr)?;
            fmt.put_word(b, off + 16, self.filesz)?;
            fmt.put_word(b, off + 20, self.memsz)?;
            fmt.put32(b, off + 24, self.flags)?;
            fmt.put_word(b, off + 28, self.align)
        }
    }
    pub fn file_end(&self) -> u64 {
        self.offset.saturating_add(self.filesz)
    }
    pub fn mem_end(&self) -> u64 {
        self.vaddr.saturating_add(self.memsz)
    }
}

/// One section header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Shdr {
    pub name: u32,
    pub sh_type: u32,
    pub flags: u64,
    pub addr: u64,
    pub offset: u64,
    pub size: u64,
    pub link: u32,
    pub info: u32,
    pub addralign: u64,
    pub entsize: u64,
}

impl Shdr {
    pub fn read(fmt: Fmt, b: &[u8], off: u64) -> R<Shdr> {
        if fmt.is64 {
            Ok(Shdr {
                name: fmt.u32(b, off)?,
                sh_type: fmt.u32(b, off + 4)?,
                flags: fmt.u64(b, off + 8)?,
                addr: fmt.u64(b, off + 16)?,
                offset: fmt.u64(b, off + 24)?,
                size: fmt.u64(b, off + 32)?,
                link: fmt.u32(b, off + 40)?,
                info: fmt.u32(b, off + 44)?,
                addralign: fmt.u64(b, off + 48)?,
                entsize: fmt.u64(b, off + 56)?,
            })
        } else {
            Ok(Shdr {
                name: fmt.u32(b, off)?,
                sh_type: fmt.u32(b, off + 4)?,
                flags: fmt.u32(b, off + 8)?.into(),
                addr: fmt.u32(b, off + 12)?.into(),
                offset: fmt.u32(b, off + 16)?.into(),
                size: fmt.u32(b, off + 20)?.into(),
                link: fmt.u32(b, off + 24)?,
                info: fmt.u32(b, off + 28)?,
                addralign: fmt.u32(b, off + 32)?.into(),
                entsize: fmt.u32(b, off + 36)?.into(),
            })
        }
    }
    /// Write back the fields the rewriter changes (address, offset, size, info).
    pub fn write_placement(&self, fmt: Fmt, b: &mut [u8], off: u64) -> R<()> {
        if fmt.is64 {
            fmt.put64(b, off + 16, self.addr)?;
            fmt.put64(b, off + 24, self.offset)?;
            fmt.put64(b, off + 32, self.size)?;
            fmt.put32(b, off + 44, self.info)
        } else {
            fmt.put_word(b, off + 12, self.addr)?;
            fmt.put_word(b, off + 16, self.offset)?;
            fmt.put_word(b, off + 20, self.size)?;
            fmt.put32(b, off + 28, self.info)
        }
    }
}

/// Read a NUL-terminated string at `off` inside `table`.
pub(crate) fn cstr(table: &[u8], off: u64) -> R<&[u8]> {
    let start = usize::try_from(off)
        .map_err(|_| bad(format!("string table index out of bounds ({off:#x})")))?;
    let rest = table
        .get(start..)
        .ok_or_else(|| bad(format!("string table index out of bounds ({off:#x})")))?;
    let end = rest
        .iter()
        .position(|&c| c == 0)
        .ok_or_else(|| bad(format!("string at {off:#x} is not terminated")))?;
    Ok(&rest[..end])
}
