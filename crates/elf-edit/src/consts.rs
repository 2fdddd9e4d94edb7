//! The ELF constants the rewriter needs, as plain integers (gABI and GNU extensions).

pub const PT_LOAD: u32 = 1;
pub const PT_DYNAMIC: u32 = 2;
pub const PT_INTERP: u32 = 3;
pub const PT_NOTE: u32 = 4;
pub const PT_PHDR: u32 = 6;
pub const PT_TLS: u32 = 7;
pub const PT_GNU_RELRO: u32 = 0x6474_e552;
pub const PT_GNU_PROPERTY: u32 = 0x6474_e553;

pub const PF_W: u32 = 2;
pub const PF_R: u32 = 4;

pub const SHT_NOBITS: u32 = 8;
pub const SHT_STRTAB: u32 = 3;
pub const SHT_RELA: u32 = 4;
pub const SHT_HASH: u32 = 5;
pub const SHT_DYNAMIC: u32 = 6;
pub const SHT_NOTE: u32 = 7;
pub const SHT_REL: u32 = 9;
pub const SHT_DYNSYM: u32 = 11;
pub const SHT_RELR: u32 = 19;
pub const SHT_GNU_HASH: u32 = 0x6fff_fff6;
pub const SHT_GNU_VERDEF: u32 = 0x6fff_fffd;
pub const SHT_GNU_VERNEED: u32 = 0x6fff_fffe;
pub const SHT_GNU_VERSYM: u32 = 0x6fff_ffff;
pub const SHT_PROGBITS: u32 = 1;

pub const SHF_WRITE: u64 = 1;
pub const SHF_ALLOC: u64 = 2;
pub const SHF_EXECINSTR: u64 = 4;

pub const DT_NULL: u64 = 0;
pub const DT_NEEDED: u64 = 1;
pub const DT_HASH: u64 = 4;
pub const DT_STRTAB: u64 = 5;
pub const DT_STRSZ: u64 = 10;
pub const DT_SONAME: u64 = 14;
pub const DT_DEBUG: u64 = 21;
pub const DT_RPATH: u64 = 15;
pub const DT_RUNPATH: u64 = 29;
pub const DT_FLAGS_1: u64 = 0x6fff_fffb;
pub const DT_VERSYM: u64 = 0x6fff_fff0;
pub const DT_VERDEF: u64 = 0x6fff_fffc;
pub const DT_VERDEFNUM: u64 = 0x6fff_fffd;
pub const DT_VERNEED: u64 = 0x6fff_fffe;
pub const DT_VERNEEDNUM: u64 = 0x6fff_ffff;
pub const DT_GNU_HASH: u64 = 0x6fff_fef5;
pub const DT_AUXILIARY: u64 = 0x7fff_fffd;
pub const DT_FILTER: u64 = 0x7fff_ffff;
pub const DT_CONFIG: u64 = 0x6fff_fefa;
pub const DT_DEPAUDIT: u64 = 0x6fff_fefb;
pub const DT_AUDIT: u64 = 0x6fff_fefc;

pub const DF_1_NODEFLIB: u64 = 0x800;

/// Dynamic tags whose value is a string-table offset.
pub fn is_string_tag(tag: u64) -> bool {
    matches!(
        tag,
        DT_NEEDED
            | DT_SONAME
            | DT_RPATH
            | DT_RUNPATH
            | DT_AUXILIARY
            | DT_FILTER
            | DT_CONFIG
            | DT_DEPAUDIT
            | DT_AUDIT
    )
}

/// Dynamic tags whose value is an address (`d_ptr`), per the gABI and the GNU ranges.
pub fn is_pointer_tag(tag: u64) -> bool {
    match tag {
        3 | 4 | 5 | 6 | 7 | 12 | 13 | 17 | 21 | 23 | 25 | 26 | 32 | 34 | 36 => true,
        DT_CONFIG | DT_DEPAUDIT | DT_AUDIT => false,
        0x6fff_fe00..=0x6fff_feff => true,
        DT_VERSYM | DT_VERDEF | DT_VERNEED => true,
        // DT_ENCODING and above in the standard range: even tags are pointers.
        32..0x6000_000d => tag % 2 == 0,
        _ => false,
    }
}
