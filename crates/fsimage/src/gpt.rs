//! A reader of GUID partition tables (UEFI 2.10, chapter 5.3) in disk image files: the
//! partitions with their type GUID, unique GUID, label and byte range.
//!
//! The table is input: the header and entry array CRCs must match, the header's fields must be
//! in range (entry size 128 to 4096 and a multiple of 8, at most 16384 entries, the array
//! inside the disk), and each partition must lie inside the disk, in the usable area. The
//! logical block size is found as the kernel finds it for a file: 512 bytes, else 4096.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// Why a disk image has no usable partition table.
#[derive(Debug, thiserror::Error)]
pub enum GptError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: no GUID partition table (no \"EFI PART\" header at LBA 1 for 512- or 4096-byte blocks); is it a whole disk image?", path.display())]
    NoTable { path: PathBuf },
    #[error("{}: bad GUID partition table: {message}", path.display())]
    Bad { path: PathBuf, message: String },
}

impl GptError {
    /// What is wrong, without the file's name (for callers that name it themselves).
    pub fn reason(&self) -> String {
        match self {
            GptError::Io { source, .. } => source.to_string(),
            GptError::NoTable { .. } => {
                "no GUID partition table (no \"EFI PART\" header at LBA 1)".into()
            }
            GptError::Bad { message, .. } => format!("bad GUID partition table: {message}"),
        }
    }
}

/// One used entry of the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    /// 1-based index in the entry array (the kernel's partition number).
    pub number: u32,
    /// The partition type GUID, lower-case text (`0fc63daf-8483-4772-8e79-3d69d8477de4`).
    pub type_guid: String,
    /// The partition's unique GUID, lower-case text.
    pub uuid: String,
    /// The label (UTF-16LE in the table, up to 36 code units).
    pub label: String,
    /// First byte of the partition in the disk image.
    pub offset: u64,
    /// Its length in bytes.
    pub size: u64,
    pub attributes: u64,
}

/// The table of a disk image.
#[derive(Debug, Clone)]
pub struct Table {
    pub block_size: u64,
    /// The disk GUID, lower-case text.
    pub disk_guid: String,
    pub partitions: Vec<Partition>,
}

impl Table {
    /// The partition labelled `label`, if exactly one is.
    pub fn by_label(&self, label: &str) -> Option<&Partition> {
        let mut it = self.partitions.iter().filter(|p| p.label == label);
        let first = it.next()?;
        it.next().is_none().then_some(first)
    }

    /// The table as `NUMBER LABEL TYPE SIZE` lines, for messages that show what a disk holds.
    pub fn describe(&self) -> String {
        if self.partitions.is_empty() {
            return "no partitions".into();
        }
        self.partitions
            .iter()
            .map(|p| {
                format!(
                    "{} \"{}\" type {} ({} bytes)",
                    p.number,
                    gentext::escape(&p.label),
                    p.type_guid,
                    p.size
                )
            })
            .collect::<Vec<_>>()
            .join("; ")
    }
}

const MAX_ENTRIES: u32 = 16384;

/// Reads the primary table of the disk image `path`.
pub fn read(path: &Path) -> Result<Table, GptError> {
    let f = safefs::tree::open_input(path).map_err(|source| GptError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    read_file(&f, path)
}

/// Reads the primary table of an open disk image (`path` for messages).
pub fn read_file(f: &File, path: &Path) -> Result<Table, GptError> {
    let io = |source| GptError::Io {
        path: path.to_path_buf(),
        source,
    };
    let bad = |message: String| GptError::Bad {
        path: path.to_path_buf(),
        message,
    };
    let disk_len = f.metadata().map_err(io)?.len();
    for bs in [512u64, 4096] {
        if disk_len < bs * 2 {
            continue;
        }
        let mut hdr = vec![0u8; bs as usize];
        f.read_exact_at(&mut hdr, bs).map_err(io)?;
        if &hdr[..8] != b"EFI PART" {
            continue;
        }
        let le32 = |o: usize| u32::from_le_bytes(hdr[o..o + 4].try_into().unwrap_or_default());
        let le64 = |o: usize| u64::from_le_bytes(hdr[o..o + 8].try_into().unwrap_or_default());
        let hsize = le32(12);
        if !(92..=bs as u32).contains(&hsize) {
            return Err(bad(format!("header size {hsize}")));
        }
        let mut h = hdr[..hsize as usize].to_vec();
        h[16..20].fill(0);
        if crc32fast::hash(&h) != le32(16) {
            return Err(bad("header CRC does not match".into()));
        }
        let blocks = disk_len / bs;
        let (first_usable, last_usable) = (le64(40), le64(48));
        if first_usable > last_usable || last_usable >= blocks {
            return Err(bad(format!(
                "usable blocks {first_usable}..={last_usable} outside a disk of {blocks} blocks"
            )));
        }
        let entries_lba = le64(72);
        let count = le32(80);
        let esize = le32(84);
        if count > MAX_ENTRIES || !(128..=4096).contains(&esize) || esize % 8 != 0 {
            return Err(bad(format!("{count} entries of {esize} bytes")));
        }
        let array_len = u64::from(count) * u64::from(esize);
        let array_end = entries_lba
            .checked_mul(bs)
            .and_then(|o| o.checked_add(array_len))
            .filter(|&e| e <= disk_len)
            .ok_or_else(|| bad(format!("entry array at block {entries_lba} past the disk")))?;
        let mut array = vec![0u8; array_len as usize];
        f.read_exact_at(&mut array, array_end - array_len)
            .map_err(io)?;
        if crc32fast::hash(&array) != le32(88) {
            return Err(bad("entry array CRC does not match".into()));
        }
        let mut partitions = Vec::new();
        for (i, e) in array.chunks_exact(esize as usize).enumerate() {
            if e[..16].iter().all(|&b| b == 0) {
                continue;
            }
            let e64 = |o: usize| u64::from_le_bytes(e[o..o + 8].try_into().unwrap_or_default());
            let (first, last) = (e64(32), e64(40));
            let number = i as u32 + 1;
            if first > last || first < first_usable || last > last_usable {
                return Err(bad(format!(
                    "partition {number} spans blocks {first}..={last}, outside the usable \
                     {first_usable}..={last_usable}"
                )));
            }
            let units: Vec<u16> = e[56..128]
                .chunks_exact(2)
                .map(|c| u16::from_le_bytes([c[0], c[1]]))
                .take_while(|&u| u != 0)
                .collect();
            partitions.push(Partition {
                number,
                type_guid: guid_text(&e[..16]),
                uuid: guid_text(&e[16..32]),
                label: String::from_utf16_lossy(&units),
                offset: first * bs,
                size: (last - first + 1) * bs,
                attributes: e64(48),
            });
        }
        let mut sorted: Vec<&Partition> = partitions.iter().collect();
        sorted.sort_by_key(|p| p.offset);
        for w in sorted.windows(2) {
            if w[0].offset + w[0].size > w[1].offset {
                return Err(bad(format!(
                    "partitions {} and {} overlap",
                    w[0].number, w[1].number
                )));
            }
        }
        return Ok(Table {
            block_size: bs,
            disk_guid: guid_text(&hdr[56..72]),
            partitions,
        });
    }
    Err(GptError::NoTable {
        path: path.to_path_buf(),
    })
}

/// A GUID between its on-disk mixed-endian form (the first three fields little-endian) and
/// the byte order of its text; the same swap both ways.
pub fn guid_swap(g: &[u8; 16]) -> [u8; 16] {
    let mut out = *g;
    out[..4].reverse();
    out[4..6].reverse();
    out[6..8].reverse();
    out
}

/// A GUID in its on-disk mixed-endian form (16 bytes) as lower-case text.
pub fn guid_text(b: &[u8]) -> String {
    let mut g = [0u8; 16];
    g.copy_from_slice(&b[..16]);
    crate::verity::uuid_string(&guid_swap(&g))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// A disk of `blocks` 512-byte blocks whose table holds `parts` (type, uuid, label,
    /// first, last) as raw bytes.
    /// Type GUID, unique GUID, label, first and last block.
    type Entry<'a> = ([u8; 16], [u8; 16], &'a str, u64, u64);

    fn disk(blocks: u64, parts: &[Entry]) -> Vec<u8> {
        let bs = 512usize;
        let mut d = vec![0u8; blocks as usize * bs];
        let mut array = vec![0u8; 128 * 128];
        for (i, (t, u, label, first, last)) in parts.iter().enumerate() {
            let e = &mut array[i * 128..(i + 1) * 128];
            e[..16].copy_from_slice(t);
            e[16..32].copy_from_slice(u);
            e[32..40].copy_from_slice(&first.to_le_bytes());
            e[40..48].copy_from_slice(&last.to_le_bytes());
            for (j, c) in label.encode_utf16().enumerate() {
                e[56 + 2 * j..58 + 2 * j].copy_from_slice(&c.to_le_bytes());
            }
        }
        d[2 * bs..2 * bs + array.len()].copy_from_slice(&array);
        let h = &mut d[bs..2 * bs];
        h[..8].copy_from_slice(b"EFI PART");
        h[8..12].copy_from_slice(&0x0001_0000u32.to_le_bytes());
        h[12..16].copy_from_slice(&92u32.to_le_bytes());
        h[24..32].copy_from_slice(&1u64.to_le_bytes());
        h[32..40].copy_from_slice(&(blocks - 1).to_le_bytes());
        h[40..48].copy_from_slice(&34u64.to_le_bytes());
        h[48..56].copy_from_slice(&(blocks - 34).to_le_bytes());
        h[56..72].copy_from_slice(&[7u8; 16]);
        h[72..80].copy_from_slice(&2u64.to_le_bytes());
        h[80..84].copy_from_slice(&128u32.to_le_bytes());
        h[84..88].copy_from_slice(&128u32.to_le_bytes());
        h[88..92].copy_from_slice(&crc32fast::hash(&array).to_le_bytes());
        let crc = crc32fast::hash(&h[..92]);
        h[16..20].copy_from_slice(&crc.to_le_bytes());
        d
    }

    fn read_bytes(b: &[u8]) -> Result<Table, GptError> {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(b).unwrap();
        read_file(&f, Path::new("disk.img"))
    }

    #[test]
    fn reads_labels_types_and_ranges() {
        let t = [
            0xaf, 0x3d, 0xc6, 0x0f, 0x83, 0x84, 0x72, 0x47, 0x8e, 0x79, 0x3d, 0x69, 0xd8, 0x47,
            0x7d, 0xe4,
        ];
        let d = disk(4096, &[(t, [1; 16], "OEM", 2048, 3071)]);
        let table = read_bytes(&d).unwrap();
        assert_eq!(table.block_size, 512);
        let p = table.by_label("OEM").unwrap();
        assert_eq!(p.type_guid, "0fc63daf-8483-4772-8e79-3d69d8477de4");
        assert_eq!((p.offset, p.size, p.number), (2048 * 512, 1024 * 512, 1));
        assert!(table.by_label("ROOT").is_none());
        assert!(table.describe().contains("\"OEM\""));
    }

    #[test]
    fn hostile_tables_are_refused() {
        let t = [9u8; 16];
        // A partition past the usable area.
        let d = disk(4096, &[(t, [1; 16], "X", 2048, 9999)]);
        assert!(read_bytes(&d).unwrap_err().to_string().contains("outside"));
        // Overlapping partitions.
        let d = disk(
            4096,
            &[(t, [1; 16], "A", 100, 200), (t, [2; 16], "B", 150, 300)],
        );
        assert!(read_bytes(&d).unwrap_err().to_string().contains("overlap"));
        // A flipped bit in the entries.
        let mut d = disk(4096, &[(t, [1; 16], "A", 100, 200)]);
        d[1024 + 60] ^= 1;
        assert!(read_bytes(&d).unwrap_err().to_string().contains("CRC"));
        // No table at all.
        let e = read_bytes(&vec![0u8; 65536]).unwrap_err().to_string();
        assert!(e.contains("disk.img") && e.contains("no GUID"), "{e}");
        // A huge entry count, CRC made to match.
        let mut d = disk(4096, &[]);
        d[512 + 80..512 + 84].copy_from_slice(&1_000_000u32.to_le_bytes());
        d[512 + 16..512 + 20].fill(0);
        let crc = crc32fast::hash(&d[512..512 + 92]);
        d[512 + 16..512 + 20].copy_from_slice(&crc.to_le_bytes());
        assert!(read_bytes(&d).unwrap_err().to_string().contains("entries"));
    }
}
