//! dm-verity hash trees: format 1, sha256, 4 KiB data and hash blocks, with the 512-byte
//! superblock that `veritysetup format` writes and `veritysetup verify`/libcryptsetup read.
//!
//! Layout of a hash device (what `IMAGE.verity` and a DDI's verity partition hold): the
//! superblock in block 0, then the tree from its top level (one block, whose hash is the root
//! hash) down to level 0 (the hashes of the data blocks). Each hash is `sha256(salt || block)`;
//! a hash block holds 128 of them and is zero-padded. The salt and the superblock's UUID are
//! derived from a 128-bit seed as systemd-repart derives them ([`Params::from_seed`]), so the
//! same seed and data give the same bytes.
//!
//! [`verify`] checks a hash device against its data in userspace (every data block, every
//! hash block, the root hash), for hosts whose kernel has no device-mapper.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use sha2::{Digest, Sha256};

/// Data and hash block size.
pub const BLOCK: u64 = 4096;
/// Hashes in one hash block (sha256: 32 bytes each).
const PER_BLOCK: u64 = BLOCK / 32;
/// The superblock's size on disk (it takes a whole hash block).
const SB_SIZE: usize = 512;
/// Reads go through buffers of this many blocks.
const CHUNK_BLOCKS: u64 = 256;

/// HMAC-SHA256 (RFC 2104), what systemd's `hmac_sha256` computes.
pub fn hmac_sha256(key: &[u8], msg: &[u8]) -> [u8; 32] {
    let mut k = [0u8; 64];
    if key.len() > 64 {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let pad = |b: u8| k.map(|x| x ^ b);
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(msg)
        .finalize();
    Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize()
        .into()
}

/// A 128-bit id made a version-4 UUID (variant 1), as systemd's `id128_make_v4_uuid`.
pub fn make_v4(b: &[u8]) -> [u8; 16] {
    let mut u = [0u8; 16];
    u.copy_from_slice(&b[..16]);
    u[6] = (u[6] & 0x0f) | 0x40;
    u[8] = (u[8] & 0x3f) | 0x80;
    u
}

/// systemd-repart's derivation of an id from its seed: `hmac_sha256(seed, token)`, the first
/// 16 bytes made a v4 UUID (used for the disk UUID with `"disk-uuid"`, the verity superblock
/// UUID with `"verity-uuid"`, a partition UUID with the partition type's 16 bytes).
pub fn derive_uuid(seed: &[u8; 16], token: &[u8]) -> [u8; 16] {
    make_v4(&hmac_sha256(seed, token))
}

/// Formats 16 bytes as a UUID string (lowercase, dashed).
pub fn uuid_string(u: &[u8; 16]) -> String {
    let h = hex::encode(u);
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

/// Parses a UUID with or without dashes (32 hex digits).
pub fn parse_uuid(s: &str) -> Option<[u8; 16]> {
    let h: String = s.chars().filter(|c| *c != '-').collect();
    if h.len() != 32 {
        return None;
    }
    hex::decode(h).ok()?.try_into().ok()
}

/// The parameters of a hash tree beside its data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Params {
    pub salt: Vec<u8>,
    /// The superblock's UUID.
    pub uuid: [u8; 16],
}

impl Params {
    /// The salt and UUID systemd-repart derives from `seed` (its `--seed=`):
    /// `hmac_sha256(seed, "verity-salt")` and [`derive_uuid`]`(seed, "verity-uuid")`.
    pub fn from_seed(seed: &[u8; 16]) -> Params {
        Params {
            salt: hmac_sha256(seed, b"verity-salt").to_vec(),
            uuid: derive_uuid(seed, b"verity-uuid"),
        }
    }
}

/// The shape of a tree over `data_blocks` blocks: where each level starts (in blocks after
/// the superblock) and how many blocks it has; level 0 hashes the data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shape {
    pub data_blocks: u64,
    /// (first block after the superblock, block count) per level, level 0 first.
    pub levels: Vec<(u64, u64)>,
}

impl Shape {
    pub fn new(data_blocks: u64) -> Shape {
        let mut n = 0u32;
        while n < 9 && (data_blocks.saturating_sub(1) >> (7 * n)) > 0 {
            n += 1;
        }
        // Level i has ceil(data_blocks / 128^(i+1)) blocks; the top level comes first.
        let mut levels = vec![(0u64, 0u64); n as usize];
        let mut pos = 0;
        for i in (0..n as usize).rev() {
            let span = 1u64 << (7 * (i as u32 + 1));
            let count = data_blocks.div_ceil(span);
            levels[i] = (pos, count);
            pos += count;
        }
        Shape {
            data_blocks,
            levels,
        }
    }

    /// Blocks of the tree (without the superblock).
    pub fn tree_blocks(&self) -> u64 {
        self.levels.iter().map(|l| l.1).sum()
    }

    /// Bytes of the hash device: superblock block and tree.
    pub fn hash_bytes(&self) -> u64 {
        (1 + self.tree_blocks()) * BLOCK
    }
}

fn hash_block(salt: &[u8], block: &[u8]) -> [u8; 32] {
    Sha256::new()
        .chain_update(salt)
        .chain_update(block)
        .finalize()
        .into()
}

/// The superblock of a hash device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Superblock {
    pub params: Params,
    pub data_blocks: u64,
}

impl Superblock {
    pub fn to_bytes(&self) -> [u8; SB_SIZE] {
        let mut b = [0u8; SB_SIZE];
        b[..8].copy_from_slice(b"verity\0\0");
        b[8..12].copy_from_slice(&1u32.to_le_bytes());
        b[12..16].copy_from_slice(&1u32.to_le_bytes());
        b[16..32].copy_from_slice(&self.params.uuid);
        b[32..38].copy_from_slice(b"sha256");
        b[64..68].copy_from_slice(&(BLOCK as u32).to_le_bytes());
        b[68..72].copy_from_slice(&(BLOCK as u32).to_le_bytes());
        b[72..80].copy_from_slice(&self.data_blocks.to_le_bytes());
        b[80..82].copy_from_slice(&(self.params.salt.len() as u16).to_le_bytes());
        b[88..88 + self.params.salt.len()].copy_from_slice(&self.params.salt);
        b
    }

    /// Parses a superblock; only what we write (format 1, sha256, 4 KiB blocks) is accepted.
    pub fn parse(b: &[u8]) -> Result<Superblock, String> {
        if b.len() < SB_SIZE || &b[..8] != b"verity\0\0" {
            return Err("no dm-verity superblock (signature \"verity\") at its start".into());
        }
        let u32_at = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap());
        if u32_at(8) != 1 || u32_at(12) != 1 {
            return Err(format!(
                "superblock version {} / hash type {}; only version 1, hash type 1 is read",
                u32_at(8),
                u32_at(12)
            ));
        }
        let alg = &b[32..64];
        let alg = &alg[..alg.iter().position(|c| *c == 0).unwrap_or(32)];
        if alg != b"sha256" {
            return Err(format!(
                "hash algorithm {:?}; only sha256 is read",
                String::from_utf8_lossy(alg)
            ));
        }
        if u32_at(64) as u64 != BLOCK || u32_at(68) as u64 != BLOCK {
            return Err(format!(
                "block sizes {}/{}; only 4096-byte data and hash blocks are read",
                u32_at(64),
                u32_at(68)
            ));
        }
        let data_blocks = u64::from_le_bytes(b[72..80].try_into().unwrap());
        let salt_len = u16::from_le_bytes([b[80], b[81]]) as usize;
        if salt_len > 256 {
            return Err(format!("salt of {salt_len} bytes (at most 256)"));
        }
        Ok(Superblock {
            params: Params {
                salt: b[88..88 + salt_len].to_vec(),
                uuid: b[16..32].try_into().unwrap(),
            },
            data_blocks,
        })
    }
}

/// A finished hash device, in memory.
#[derive(Debug, Clone)]
pub struct Tree {
    /// The superblock block and the tree ([`Shape::hash_bytes`] bytes).
    pub bytes: Vec<u8>,
    pub root_hash: [u8; 32],
    pub shape: Shape,
}

/// Hashes `blocks` blocks of `data` from `offset` into `out` (32 bytes each), reading in
/// chunks, on `threads` threads.
fn hash_data(
    data: &File,
    offset: u64,
    blocks: u64,
    salt: &[u8],
    threads: usize,
) -> io::Result<Vec<u8>> {
    let mut out = vec![0u8; blocks as usize * 32];
    let threads = if threads == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        threads
    } as u64;
    let per = blocks.div_ceil(threads).max(1);
    std::thread::scope(|s| {
        let mut handles = Vec::new();
        for (t, slot) in out.chunks_mut(per as usize * 32).enumerate() {
            let first = t as u64 * per;
            handles.push(s.spawn(move || -> io::Result<()> {
                let n = slot.len() as u64 / 32;
                let mut buf = vec![0u8; (CHUNK_BLOCKS * BLOCK) as usize];
                let mut done = 0;
                while done < n {
                    let k = (n - done).min(CHUNK_BLOCKS);
                    let b = &mut buf[..(k * BLOCK) as usize];
                    data.read_exact_at(b, offset + (first + done) * BLOCK)?;
                    for (i, blk) in b.chunks(BLOCK as usize).enumerate() {
                        let at = ((done + i as u64) * 32) as usize;
                        slot[at..at + 32].copy_from_slice(&hash_block(salt, blk));
                    }
                    done += k;
                }
                Ok(())
            }));
        }
        handles
            .into_iter()
            .try_for_each(|h| h.join().expect("hash thread panicked"))
    })?;
    Ok(out)
}

/// Builds the hash device of the `size` bytes of `data` from `offset` (`size` a multiple of
/// 4096). `threads` = 0 means one per CPU; the result does not depend on it.
pub fn build(
    data: &File,
    offset: u64,
    size: u64,
    params: &Params,
    threads: usize,
) -> io::Result<Tree> {
    if size % BLOCK != 0 || size == 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("data of {size} bytes is not a whole, non-zero number of 4096-byte blocks"),
        ));
    }
    let shape = Shape::new(size / BLOCK);
    let mut bytes = vec![0u8; shape.hash_bytes() as usize];
    let sb = Superblock {
        params: params.clone(),
        data_blocks: shape.data_blocks,
    };
    bytes[..SB_SIZE].copy_from_slice(&sb.to_bytes());
    let mut hashes = hash_data(data, offset, shape.data_blocks, &params.salt, threads)?;
    for &(start, count) in &shape.levels {
        // Pack this level's hashes into its blocks, then hash those blocks for the next.
        let at = ((1 + start) * BLOCK) as usize;
        let region = &mut bytes[at..at + (count * BLOCK) as usize];
        for (i, h) in hashes.chunks(32).enumerate() {
            let b = i / PER_BLOCK as usize;
            let o = b * BLOCK as usize + (i % PER_BLOCK as usize) * 32;
            region[o..o + 32].copy_from_slice(h);
        }
        hashes = region
            .chunks(BLOCK as usize)
            .flat_map(|b| hash_block(&params.salt, b))
            .collect();
    }
    // The top level has one block (or, with no levels, there is one data block): its hash
    // is the root hash.
    let root_hash: [u8; 32] = hashes[..32].try_into().unwrap();
    Ok(Tree {
        bytes,
        root_hash,
        shape,
    })
}

/// Why a hash device does not match its data.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("the hash device is not usable: {0}")]
    Superblock(String),
    #[error("the hash device says {sb} data blocks, the data has {have}")]
    DataSize { sb: u64, have: u64 },
    #[error("the hash device says {0} data blocks, more than the {MAX_VERIFIED_BLOCKS} (16 GiB) this userspace check reads")]
    TooLarge(u64),
    #[error("the hash device has {have} bytes, its tree needs {need}")]
    HashSize { have: u64, need: u64 },
    #[error("data block {0} does not match its hash (or the root hash): the data was changed after it was hashed")]
    DataBlock(u64),
    #[error("hash block {block} (tree level {level}) does not match the hash above it: the hash tree was changed")]
    HashBlock { level: usize, block: u64 },
    #[error("the top of the hash tree does not give the root hash {expected}; the root hash or the tree was changed")]
    RootHash { expected: String },
    #[error("hash block {block} (tree level {level}) has non-zero bytes after its hashes")]
    Padding { level: usize, block: u64 },
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// The most data blocks the userspace check verifies (16 GiB of data; its hash tree and the
/// data's hashes then take at most 128 MiB each in memory).
pub const MAX_VERIFIED_BLOCKS: u64 = (16 << 30) / BLOCK;

/// A byte range of a file: a partition, or a whole file.
#[derive(Debug, Clone, Copy)]
pub struct Range<'a> {
    pub file: &'a File,
    pub offset: u64,
    pub len: u64,
}

/// Checks the `data` range against the hash device in the `hash` range and the `root_hash`
/// (userspace dm-verity: every data block and every hash block is read and compared). Returns
/// the superblock.
pub fn verify(
    data: Range<'_>,
    hash: Range<'_>,
    root_hash: &[u8; 32],
    threads: usize,
) -> Result<Superblock, VerifyError> {
    let (data_offset, data_size) = (data.offset, data.len);
    let (hash_offset, hash_size) = (hash.offset, hash.len);
    let (data, hash) = (data.file, hash.file);
    if hash_size < BLOCK {
        return Err(VerifyError::HashSize {
            have: hash_size,
            need: BLOCK,
        });
    }
    let mut sbb = vec![0u8; SB_SIZE];
    hash.read_exact_at(&mut sbb, hash_offset)?;
    let sb = Superblock::parse(&sbb).map_err(VerifyError::Superblock)?;
    let have = data_size / BLOCK;
    if sb.data_blocks == 0 || sb.data_blocks > have {
        return Err(VerifyError::DataSize {
            sb: sb.data_blocks,
            have,
        });
    }
    if sb.data_blocks > MAX_VERIFIED_BLOCKS {
        return Err(VerifyError::TooLarge(sb.data_blocks));
    }
    let shape = Shape::new(sb.data_blocks);
    if shape.hash_bytes() > hash_size {
        return Err(VerifyError::HashSize {
            have: hash_size,
            need: shape.hash_bytes(),
        });
    }
    let mut tree = vec![0u8; (shape.tree_blocks() * BLOCK) as usize];
    hash.read_exact_at(&mut tree, hash_offset + BLOCK)?;
    let salt = &sb.params.salt;
    // Top down: the tree is checked against the root hash first, so a mismatch found at a
    // level is a change of that level, and a data mismatch is a change of the data.
    let mut above: &[u8] = &root_hash[..];
    for (level, &(start, count)) in shape.levels.iter().enumerate().rev() {
        let region = &tree[(start * BLOCK) as usize..((start + count) * BLOCK) as usize];
        for (i, b) in region.chunks(BLOCK as usize).enumerate() {
            if hash_block(salt, b)[..] != above[i * 32..i * 32 + 32] {
                return Err(if level + 1 == shape.levels.len() {
                    VerifyError::RootHash {
                        expected: hex::encode(root_hash),
                    }
                } else {
                    VerifyError::HashBlock {
                        level,
                        block: i as u64,
                    }
                });
            }
        }
        // The entries past the last one this level needs must be zero.
        let entries = if level == 0 {
            sb.data_blocks
        } else {
            shape.levels[level - 1].1
        } as usize;
        if region[entries * 32..].iter().any(|b| *b != 0) {
            return Err(VerifyError::Padding {
                level,
                block: (entries * 32) as u64 / BLOCK,
            });
        }
        above = &region[..entries * 32];
    }
    let data_hashes = hash_data(data, data_offset, sb.data_blocks, salt, threads)?;
    if let Some(i) = data_hashes
        .chunks(32)
        .zip(above.chunks(32))
        .position(|(a, b)| a != b)
    {
        return Err(VerifyError::DataBlock(i as u64));
    }
    Ok(sb)
}

/// A file beside an image as systemd looks for it: the image's path with a final `.raw`
/// replaced by `suffix` (`.verity`, `.roothash`, `.roothash.p7s`), else `suffix` appended.
pub fn side_path(image: &std::path::Path, suffix: &str) -> std::path::PathBuf {
    use std::os::unix::ffi::{OsStrExt, OsStringExt};
    let s = image.as_os_str().as_bytes();
    let mut v = s.strip_suffix(b".raw").unwrap_or(s).to_vec();
    v.extend_from_slice(suffix.as_bytes());
    std::ffi::OsString::from_vec(v).into()
}

/// Parses a root hash as written in `NAME.roothash` (hex, surrounding space allowed).
pub fn parse_root_hash(text: &str) -> Option<[u8; 32]> {
    let t = text.trim();
    if t.len() != 64 {
        return None;
    }
    hex::decode(t).ok()?.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A superblock claiming more data than the check reads is refused before any hash tree
    /// is allocated (the data here is a sparse file).
    #[test]
    fn too_much_data_is_refused_before_allocating() {
        let d = tempfile::tempdir().unwrap();
        let open = |n: &str| {
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .open(d.path().join(n))
                .unwrap()
        };
        let data = open("data");
        let blocks = MAX_VERIFIED_BLOCKS + 1;
        data.set_len(blocks * BLOCK).unwrap();
        let hash = open("hash");
        let sb = Superblock {
            params: Params::from_seed(&[7; 16]),
            data_blocks: blocks,
        };
        std::os::unix::fs::FileExt::write_all_at(&hash, &sb.to_bytes(), 0).unwrap();
        hash.set_len(Shape::new(blocks).hash_bytes()).unwrap();
        let range = |file, len| Range {
            file,
            offset: 0,
            len,
        };
        let e = verify(
            range(&data, blocks * BLOCK),
            range(&hash, Shape::new(blocks).hash_bytes()),
            &[0; 32],
            1,
        )
        .unwrap_err();
        assert!(matches!(e, VerifyError::TooLarge(b) if b == blocks), "{e}");
    }

    #[test]
    fn hmac_matches_rfc4231_case_2() {
        assert_eq!(
            hex::encode(hmac_sha256(b"Jefe", b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn derived_as_systemd_repart_derives_them() {
        // Read from the superblock and GPT of `systemd-repart --make-ddi=sysext
        // --seed=0123456789abcdef0123456789abcdef` (systemd 257, trixie).
        let seed = parse_uuid("0123456789abcdef0123456789abcdef").unwrap();
        let p = Params::from_seed(&seed);
        assert_eq!(
            hex::encode(&p.salt),
            "c65b6ab68edf421fcc0cb48ba60f7f14f5186b4d003d21ab3b334b91de16759c"
        );
        assert_eq!(uuid_string(&p.uuid), "898929e6-7747-423e-8593-3659ba461e7c");
        assert_eq!(
            uuid_string(&derive_uuid(&seed, b"disk-uuid")),
            "6913f4b6-6690-4a57-a202-f1b53c56dbdf"
        );
    }

    #[test]
    fn shapes() {
        // (data blocks, blocks per level from level 0)
        let cases: &[(u64, &[u64])] = &[
            (1, &[]),
            (2, &[1]),
            (128, &[1]),
            (129, &[2, 1]),
            (485, &[4, 1]),
            (7325, &[58, 1]),
            (16384, &[128, 1]),
            (16385, &[129, 2, 1]),
        ];
        for (blocks, want) in cases {
            let s = Shape::new(*blocks);
            let got: Vec<u64> = s.levels.iter().map(|l| l.1).collect();
            assert_eq!(&got, want, "{blocks}");
            // The top level is stored first.
            if let Some(top) = s.levels.last() {
                assert_eq!(top.0, 0);
            }
        }
    }

    #[test]
    fn superblock_round_trip_and_refusals() {
        let sb = Superblock {
            params: Params::from_seed(&[7; 16]),
            data_blocks: 99,
        };
        let b = sb.to_bytes();
        assert_eq!(Superblock::parse(&b).unwrap(), sb);
        let mut bad = b;
        bad[0] = b'x';
        assert!(Superblock::parse(&bad).unwrap_err().contains("superblock"));
        let mut bad = b;
        bad[32..38].copy_from_slice(b"sha512");
        assert!(Superblock::parse(&bad).unwrap_err().contains("sha256"));
        let mut bad = b;
        bad[80] = 0xff;
        bad[81] = 0x01;
        assert!(Superblock::parse(&bad).unwrap_err().contains("salt"));
        assert!(Superblock::parse(&b[..100]).is_err());
    }

    #[test]
    fn build_then_verify_and_every_flip_is_found() {
        let d = tempfile::tempdir().unwrap();
        let (dp, hp) = (d.path().join("data"), d.path().join("hash"));
        for blocks in [1u64, 3, 200] {
            let data: Vec<u8> = (0..blocks * BLOCK).map(|i| (i * 7 % 251) as u8).collect();
            std::fs::write(&dp, &data).unwrap();
            let f = File::open(&dp).unwrap();
            let params = Params::from_seed(&[1; 16]);
            let t = build(&f, 0, data.len() as u64, &params, 2).unwrap();
            let t1 = build(&f, 0, data.len() as u64, &params, 1).unwrap();
            assert_eq!(t.bytes, t1.bytes);
            std::fs::write(&hp, &t.bytes).unwrap();
            let check = |root: &[u8; 32]| {
                let (df, hf) = (File::open(&dp).unwrap(), File::open(&hp).unwrap());
                let data = Range {
                    file: &df,
                    offset: 0,
                    len: blocks * BLOCK,
                };
                let hash = Range {
                    file: &hf,
                    offset: 0,
                    len: t.bytes.len() as u64,
                };
                verify(data, hash, root, 2)
            };
            assert_eq!(check(&t.root_hash).unwrap().data_blocks, blocks);
            let mut root = t.root_hash;
            root[5] ^= 1;
            assert!(check(&root).is_err());
            // A flipped bit in the data.
            let mut bad = data.clone();
            bad[(blocks as usize - 1) * 4096 + 9] ^= 0x10;
            std::fs::write(&dp, &bad).unwrap();
            assert!(
                matches!(check(&t.root_hash), Err(VerifyError::DataBlock(b)) if b == blocks - 1)
            );
            std::fs::write(&dp, &data).unwrap();
            // A flipped bit in each block of the tree.
            for blk in 1..t.bytes.len() / 4096 {
                let mut bad = t.bytes.clone();
                bad[blk * 4096 + 3] ^= 0x01;
                std::fs::write(&hp, &bad).unwrap();
                assert!(
                    matches!(
                        check(&t.root_hash),
                        Err(VerifyError::HashBlock { .. } | VerifyError::RootHash { .. })
                    ),
                    "{blocks} {blk}"
                );
            }
            std::fs::write(&hp, &t.bytes).unwrap();
        }
    }
}
