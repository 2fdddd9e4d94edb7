//! Discoverable Disk Images: the GPT disk image `systemd-repart --make-ddi=sysext` writes,
//! planned, written and read here (the one GPT module).
//!
//! An image holds a data partition (`root-ARCH`, the file system), its dm-verity hash
//! partition (`root-ARCH-verity`, see [`crate::verity`]) and optionally a signature partition
//! (`root-ARCH-verity-sig`, a JSON object, 16 KiB). As repart does: the labels are the type
//! names, the data and hash partitions' UUIDs are the two halves of the root hash, the disk
//! UUID is derived from the seed ([`crate::verity::derive_uuid`]`(seed, "disk-uuid")`), data
//! and hash partitions carry the read-only attribute
//! (bit 60), partitions follow each other on 4 KiB boundaries, and the placement follows
//! libfdisk's: the first partition at 1 MiB, except on disks of at most 4 MiB, where it is at
//! 20 KiB and the hash partition takes the slack (repart sized the disk for 1 MiB).
//!
//! One difference: repart derives the signature partition's UUID from its seed and the type;
//! here it is derived from the disk UUID and the type (the same HMAC keyed by the disk UUID),
//! so `sysext sign` can add the partition later, without the seed, and give the same bytes as
//! signing at pack time.
//!
//! [`read`] parses a GPT with bounds (512-byte sectors, at most 128 entries of 128 bytes,
//! checksums checked) and [`Ddi::find`] picks the three partitions by type.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use crate::verity::{derive_uuid, parse_uuid};

const SECTOR: u64 = 512;
const ENTRIES: u64 = 128;
const ENTRY_SIZE: u64 = 128;
/// Sectors of the entry array.
const ENTRY_SECTORS: u64 = ENTRIES * ENTRY_SIZE / SECTOR;
/// The read-only partition attribute (GPT bit 60).
pub const ATTR_READ_ONLY: u64 = 1 << 60;
/// The size of a signature partition.
pub const SIG_BYTES: u64 = 16 * 1024;
/// libfdisk's "small disk": at most this size, partitions are not aligned to 1 MiB.
const SMALL_DISK: u64 = 4 * 1024 * 1024;
const MIB_LBA: u64 = 2048;

/// The partition types of one architecture (Discoverable Partitions Specification).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArchTypes {
    /// systemd's architecture name.
    pub arch: &'static str,
    pub root: &'static str,
    pub verity: &'static str,
    pub verity_sig: &'static str,
}

/// The architectures whose DDIs are written and read here.
pub const ARCHES: &[ArchTypes] = &[
    ArchTypes {
        arch: "x86-64",
        root: "4f68bce3-e8cd-4db1-96e7-fbcaf984b709",
        verity: "2c7357ed-ebd2-46d9-aec1-23d437ec2bf5",
        verity_sig: "41092b05-9fc8-4523-994f-2def0408b176",
    },
    ArchTypes {
        arch: "arm64",
        root: "b921b045-1df0-41c3-af44-4c6f280d3fae",
        verity: "df3300ce-d69f-4c92-978c-9bfb0f38d820",
        verity_sig: "6db69de6-29f4-4758-a7a5-962190f00ce3",
    },
    ArchTypes {
        arch: "x86",
        root: "44479540-f297-41b2-9af7-d131d5f0458a",
        verity: "d13c5d3b-b5d1-422a-b29f-9454fdc89d76",
        verity_sig: "5996fc05-109c-48de-808b-23fa0830b676",
    },
];

/// The types of `arch` (systemd's name), if known here.
pub fn arch_types(arch: &str) -> Option<&'static ArchTypes> {
    ARCHES.iter().find(|a| a.arch == arch)
}

/// What a partition is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Data,
    Verity,
    VeritySig,
}

impl ArchTypes {
    pub fn type_of(&self, role: Role) -> &'static str {
        match role {
            Role::Data => self.root,
            Role::Verity => self.verity,
            Role::VeritySig => self.verity_sig,
        }
    }

    /// The label repart gives: the type's name, `root-x86-64-verity`.
    pub fn label(&self, role: Role) -> String {
        match role {
            Role::Data => format!("root-{}", self.arch),
            Role::Verity => format!("root-{}-verity", self.arch),
            Role::VeritySig => format!("root-{}-verity-sig", self.arch),
        }
    }
}

/// A partition to write or one read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    pub type_uuid: [u8; 16],
    pub uuid: [u8; 16],
    pub first_lba: u64,
    /// Sectors.
    pub sectors: u64,
    pub attrs: u64,
    pub label: String,
}

impl Partition {
    pub fn offset(&self) -> u64 {
        self.first_lba * SECTOR
    }
    pub fn bytes(&self) -> u64 {
        self.sectors * SECTOR
    }
}

/// Where each partition goes, for partitions of the given sizes (multiples of 4 KiB).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub total_sectors: u64,
    pub first_usable: u64,
    /// (first LBA, sectors) in the order given.
    pub parts: Vec<(u64, u64)>,
}

/// Plans a disk for partitions of `sizes` bytes, the second of them (the hash partition)
/// taking the slack of a small disk (see the module docs).
pub fn plan(sizes: &[u64]) -> Plan {
    let sum: u64 = sizes.iter().map(|s| s / SECTOR).sum();
    let round8 = |n: u64| n.div_ceil(8) * 8;
    // repart sizes the disk as if the first partition started at 1 MiB.
    let total = round8(MIB_LBA + sum + 1 + ENTRY_SECTORS);
    let (first_usable, start) = if total * SECTOR <= SMALL_DISK {
        (2 + ENTRY_SECTORS, round8(2 + ENTRY_SECTORS))
    } else {
        (MIB_LBA, MIB_LBA)
    };
    let slack = MIB_LBA - start;
    let mut parts = Vec::new();
    let mut at = start;
    for (i, s) in sizes.iter().enumerate() {
        let mut n = s / SECTOR;
        if i == 1 {
            n += slack;
        }
        parts.push((at, n));
        at += n;
    }
    Plan {
        total_sectors: total,
        first_usable,
        parts,
    }
}

/// A UUID of a type constant.
pub fn type_uuid(s: &str) -> [u8; 16] {
    parse_uuid(s).expect("a partition type constant")
}

/// The partitions of a verity DDI for `root_hash` on `arch`, placed by `plan` (data, hash,
/// and a signature partition when `sig` is set).
pub fn partitions(
    arch: &ArchTypes,
    root_hash: &[u8; 32],
    disk_uuid: &[u8; 16],
    plan: &Plan,
    sig: bool,
) -> Vec<Partition> {
    let roles: &[Role] = if sig {
        &[Role::Data, Role::Verity, Role::VeritySig]
    } else {
        &[Role::Data, Role::Verity]
    };
    roles
        .iter()
        .zip(&plan.parts)
        .map(|(role, &(first_lba, sectors))| {
            let t = type_uuid(arch.type_of(*role));
            let (uuid, attrs) = match role {
                Role::Data => (root_hash[..16].try_into().unwrap(), ATTR_READ_ONLY),
                Role::Verity => (root_hash[16..].try_into().unwrap(), ATTR_READ_ONLY),
                Role::VeritySig => (derive_uuid(disk_uuid, &t), 0),
            };
            Partition {
                type_uuid: t,
                uuid,
                first_lba,
                sectors,
                attrs,
                label: arch.label(*role),
            }
        })
        .collect()
}

fn entry_bytes(parts: &[Partition]) -> Vec<u8> {
    let mut e = vec![0u8; (ENTRIES * ENTRY_SIZE) as usize];
    for (i, p) in parts.iter().enumerate() {
        let b = &mut e[i * ENTRY_SIZE as usize..(i + 1) * ENTRY_SIZE as usize];
        b[..16].copy_from_slice(&crate::gpt::guid_swap(&p.type_uuid));
        b[16..32].copy_from_slice(&crate::gpt::guid_swap(&p.uuid));
        b[32..40].copy_from_slice(&p.first_lba.to_le_bytes());
        b[40..48].copy_from_slice(&(p.first_lba + p.sectors - 1).to_le_bytes());
        b[48..56].copy_from_slice(&p.attrs.to_le_bytes());
        for (j, c) in p.label.encode_utf16().take(36).enumerate() {
            b[56 + 2 * j..58 + 2 * j].copy_from_slice(&c.to_le_bytes());
        }
    }
    e
}

fn header(
    plan: &Plan,
    disk: &[u8; 16],
    my_lba: u64,
    alt_lba: u64,
    entries_lba: u64,
    entries_crc: u32,
) -> [u8; 512] {
    let mut h = [0u8; 512];
    h[..8].copy_from_slice(b"EFI PART");
    h[8..12].copy_from_slice(&0x0001_0000u32.to_le_bytes());
    h[12..16].copy_from_slice(&92u32.to_le_bytes());
    h[24..32].copy_from_slice(&my_lba.to_le_bytes());
    h[32..40].copy_from_slice(&alt_lba.to_le_bytes());
    h[40..48].copy_from_slice(&plan.first_usable.to_le_bytes());
    let last_usable = plan.total_sectors - 2 - ENTRY_SECTORS;
    h[48..56].copy_from_slice(&last_usable.to_le_bytes());
    h[56..72].copy_from_slice(&crate::gpt::guid_swap(disk));
    h[72..80].copy_from_slice(&entries_lba.to_le_bytes());
    h[80..84].copy_from_slice(&(ENTRIES as u32).to_le_bytes());
    h[84..88].copy_from_slice(&(ENTRY_SIZE as u32).to_le_bytes());
    h[88..92].copy_from_slice(&entries_crc.to_le_bytes());
    let crc = crc32fast::hash(&h[..92]);
    h[16..20].copy_from_slice(&crc.to_le_bytes());
    h
}

/// Writes the protective MBR, both GPT headers and entry arrays of `parts` into `f`, and sets
/// its length to the plan's (partition contents are written by the caller).
pub fn write_gpt(f: &File, plan: &Plan, disk: &[u8; 16], parts: &[Partition]) -> io::Result<()> {
    let total = plan.total_sectors;
    f.set_len(total * SECTOR)?;
    let mut mbr = [0u8; 512];
    let size = (total - 1).min(u32::MAX as u64) as u32;
    mbr[446..462].copy_from_slice(&[
        0x00, 0x00, 0x02, 0x00, 0xee, 0xff, 0xff, 0xff, 0x01, 0x00, 0x00, 0x00, 0, 0, 0, 0,
    ]);
    mbr[458..462].copy_from_slice(&size.to_le_bytes());
    mbr[510] = 0x55;
    mbr[511] = 0xaa;
    f.write_all_at(&mbr, 0)?;
    let entries = entry_bytes(parts);
    let ecrc = crc32fast::hash(&entries);
    let backup_entries = total - 1 - ENTRY_SECTORS;
    f.write_all_at(&header(plan, disk, 1, total - 1, 2, ecrc), SECTOR)?;
    f.write_all_at(&entries, 2 * SECTOR)?;
    f.write_all_at(&entries, backup_entries * SECTOR)?;
    f.write_all_at(
        &header(plan, disk, total - 1, 1, backup_entries, ecrc),
        (total - 1) * SECTOR,
    )?;
    Ok(())
}

/// What goes into a DDI: the file system (a range of a file), its hash device, root hash and
/// optionally the signature partition's content ([`SIG_BYTES`]).
pub struct Contents<'a> {
    pub data: &'a File,
    pub data_offset: u64,
    pub data_bytes: u64,
    pub hash: &'a [u8],
    pub root_hash: [u8; 32],
    pub sig: Option<&'a [u8]>,
}

/// Writes the DDI of `c` into the empty file `out`: plan, GPT, the partitions' contents.
pub fn assemble(
    out: &File,
    arch: &ArchTypes,
    disk_uuid: &[u8; 16],
    c: &Contents<'_>,
) -> io::Result<Vec<Partition>> {
    let mut sizes = vec![c.data_bytes, c.hash.len() as u64];
    if c.sig.is_some() {
        sizes.push(SIG_BYTES);
    }
    let plan = plan(&sizes);
    let parts = partitions(arch, &c.root_hash, disk_uuid, &plan, c.sig.is_some());
    write_gpt(out, &plan, disk_uuid, &parts)?;
    copy_range(c.data, c.data_offset, out, parts[0].offset(), c.data_bytes)?;
    out.write_all_at(c.hash, parts[1].offset())?;
    if let Some(sig) = c.sig {
        out.write_all_at(sig, parts[2].offset())?;
    }
    Ok(parts)
}

/// Copies `len` bytes at `from_off` of `from` to `at` of `to`, in the kernel where it can.
fn copy_range(from: &File, from_off: u64, to: &File, at: u64, len: u64) -> io::Result<()> {
    let mut off_in = from_off;
    let mut off_out = at;
    while off_in < from_off + len {
        let want = (from_off + len - off_in).min(1 << 30) as usize;
        let n = rustix::fs::copy_file_range(from, Some(&mut off_in), to, Some(&mut off_out), want)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the file system image ended early",
            ));
        }
    }
    Ok(())
}

/// A GPT as read.
#[derive(Debug, Clone)]
pub struct Gpt {
    pub disk_uuid: [u8; 16],
    pub partitions: Vec<Partition>,
}

/// Does `f` start like a GPT disk (a protective MBR's signature, and "EFI PART" in sector 1
/// of 512 or 4096 bytes, as [`crate::gpt::read_file`] reads them)?
pub fn is_gpt(f: &File) -> bool {
    let mut mbr = [0u8; 2];
    f.read_exact_at(&mut mbr, 510).is_ok()
        && mbr == [0x55, 0xaa]
        && [512, 4096].into_iter().any(|at| {
            let mut b = [0u8; 8];
            f.read_exact_at(&mut b, at).is_ok() && &b == b"EFI PART"
        })
}

/// Reads the primary GPT of `f` (`len` bytes) through [`crate::gpt`], the one GPT reader
/// (bounds and checksums checked there).
pub fn read(f: &File, len: u64) -> Result<Gpt, String> {
    let t = crate::gpt::read_file(f, std::path::Path::new("")).map_err(|e| e.reason())?;
    let uuid = |s: &str| parse_uuid(s).ok_or_else(|| format!("bad GUID {s}"));
    let mut partitions = Vec::new();
    for p in &t.partitions {
        if p.offset + p.size > len {
            return Err(format!(
                "partition {} ends past the image's {len} bytes",
                p.number
            ));
        }
        partitions.push(Partition {
            type_uuid: uuid(&p.type_guid)?,
            uuid: uuid(&p.uuid)?,
            first_lba: p.offset / SECTOR,
            sectors: p.size / SECTOR,
            attrs: p.attributes,
            label: p.label.clone(),
        });
    }
    Ok(Gpt {
        disk_uuid: uuid(&t.disk_guid)?,
        partitions,
    })
}

/// The partitions of a verity DDI, as found by type.
#[derive(Debug, Clone)]
pub struct Ddi {
    pub arch: &'static ArchTypes,
    pub data: Partition,
    pub verity: Option<Partition>,
    pub sig: Option<Partition>,
}

impl Ddi {
    /// Finds the data partition (`root-ARCH`, one architecture only) and its verity and
    /// signature partitions.
    pub fn find(gpt: &Gpt) -> Result<Ddi, String> {
        let mut found: Option<Ddi> = None;
        for a in ARCHES {
            let pick = |role| {
                let t = type_uuid(a.type_of(role));
                let mut it = gpt.partitions.iter().filter(move |p| p.type_uuid == t);
                let first = it.next().cloned();
                (first, it.next().is_some())
            };
            let (data, dup) = pick(Role::Data);
            let Some(data) = data else { continue };
            if dup {
                return Err(format!("two root-{} partitions; one is read", a.arch));
            }
            if found.is_some() {
                return Err("root partitions of two architectures; one is read".into());
            }
            found = Some(Ddi {
                arch: a,
                data,
                verity: pick(Role::Verity).0,
                sig: pick(Role::VeritySig).0,
            });
        }
        found.ok_or_else(|| {
            format!(
                "no root partition of a known architecture ({}) in the GPT",
                ARCHES.iter().map(|a| a.arch).collect::<Vec<_>>().join(", ")
            )
        })
    }

    /// The root hash the data and hash partitions' UUIDs spell (as repart writes them); not
    /// authenticated by itself.
    pub fn uuid_root_hash(&self) -> Option<[u8; 32]> {
        let v = self.verity.as_ref()?;
        let mut r = [0u8; 32];
        r[..16].copy_from_slice(&self.data.uuid);
        r[16..].copy_from_slice(&v.uuid);
        Some(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_as_repart_placed_them() {
        // systemd-repart 257 --make-ddi=sysext (sfdisk -d): a 1.9 MB and a 30 MB EROFS.
        let p = plan(&[1986560, 24576, SIG_BYTES]);
        assert_eq!(p.total_sectors, 6048);
        assert_eq!(p.first_usable, 34);
        assert_eq!(p.parts, vec![(40, 3880), (3920, 2056), (5976, 32)]);
        let p = plan(&[30003200, 245760, SIG_BYTES]);
        assert_eq!(p.total_sectors, 61200);
        assert_eq!(p.first_usable, 2048);
        assert_eq!(p.parts, vec![(2048, 58600), (60648, 480), (61128, 32)]);
    }

    #[test]
    fn write_then_read() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("d.raw");
        let f = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        let p = plan(&[8192, 8192, SIG_BYTES]);
        let a = arch_types("arm64").unwrap();
        let parts = partitions(a, &[9; 32], &[2; 16], &p, true);
        write_gpt(&f, &p, &[2; 16], &parts).unwrap();
        let g = read(&f, f.metadata().unwrap().len()).unwrap();
        assert_eq!(g.partitions, parts);
        assert_eq!(g.disk_uuid, [2; 16]);
        let ddi = Ddi::find(&g).unwrap();
        assert_eq!(ddi.arch.arch, "arm64");
        assert_eq!(ddi.uuid_root_hash(), Some([9; 32]));
        assert_eq!(ddi.data.label, "root-arm64");
        // A flipped bit in the entries is caught by the checksum (CRC32).
        let mut b = [0u8; 1];
        f.read_exact_at(&mut b, 1024 + 60).unwrap();
        f.write_all_at(&[b[0] ^ 1], 1024 + 60).unwrap();
        assert!(read(&f, 1 << 30).unwrap_err().contains("CRC"));
    }
}
