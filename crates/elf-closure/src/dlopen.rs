//! ELF dlopen metadata: the `.note.dlopen` notes of the UAPI "ELF dlopen metadata" spec
//! (owner `FDO`, type `0x407c0c0a`), in which an object lists the libraries it loads at run
//! time with `dlopen`, grouped by feature, with a priority (`required`, `recommended`,
//! `suggested`) and alternative SONAMEs (the first one found is used). systemd's libraries
//! carry them since v256.
//!
//! Notes are read from the PT_NOTE segments (and, for objects whose program headers do not
//! cover them, SHT_NOTE sections), never by running anything. Each note's JSON is bounded.

use std::path::Path;

use object::read::elf::{FileHeader, ProgramHeader, SectionHeader};
use object::{elf, Endianness, FileKind, ReadCache, ReadRef};

use super::ElfError;

/// The note type of dlopen metadata.
pub const NT_FDO_DLOPEN_METADATA: u32 = 0x407c_0c0a;

/// The largest note description read (a note's JSON; real ones are a few hundred bytes).
const MAX_NOTE_JSON: usize = 1 << 20;

/// How much a feature's libraries matter, most important first.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum DlopenPriority {
    /// The object does not work without it.
    Required,
    /// Core functionality needs it (the spec's default).
    Recommended,
    /// Optional functionality.
    Suggested,
}

impl std::fmt::Display for DlopenPriority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DlopenPriority::Required => "required",
            DlopenPriority::Recommended => "recommended",
            DlopenPriority::Suggested => "suggested",
        })
    }
}

/// Which dlopen dependencies a closure follows: none, or those of this priority and higher.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DlopenFollow {
    /// None: what the loader itself loads at start-up, and nothing else.
    None,
    /// Required ones.
    Required,
    /// Required and recommended ones.
    #[default]
    Recommended,
    /// All of them.
    Suggested,
}

impl DlopenFollow {
    /// True when a note of priority `p` is followed.
    pub fn follows(self, p: DlopenPriority) -> bool {
        let max = match self {
            DlopenFollow::None => return false,
            DlopenFollow::Required => DlopenPriority::Required,
            DlopenFollow::Recommended => DlopenPriority::Recommended,
            DlopenFollow::Suggested => DlopenPriority::Suggested,
        };
        p <= max
    }
}

impl std::str::FromStr for DlopenFollow {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "none" => Ok(DlopenFollow::None),
            "required" => Ok(DlopenFollow::Required),
            "recommended" => Ok(DlopenFollow::Recommended),
            "suggested" => Ok(DlopenFollow::Suggested),
            _ => Err(format!(
                "unknown dlopen level {s:?}: use required, recommended, suggested or none"
            )),
        }
    }
}

/// One feature of an object's dlopen metadata.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DlopenNote {
    pub feature: Option<String>,
    pub description: Option<String>,
    pub priority: DlopenPriority,
    /// Alternative SONAMEs, in order of preference.
    pub sonames: Vec<String>,
}

#[derive(serde::Deserialize)]
struct RawNote {
    feature: Option<String>,
    description: Option<String>,
    priority: Option<String>,
    #[serde(default)]
    soname: Vec<String>,
}

fn malformed(what: &str, reason: impl Into<String>) -> ElfError {
    ElfError::Malformed {
        what: what.to_string(),
        reason: reason.into(),
    }
}

/// Parses one note description: a JSON array of features (trailing NULs allowed).
pub fn parse_note_json(desc: &[u8], what: &str) -> Result<Vec<DlopenNote>, ElfError> {
    let end = desc.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    let json = &desc[..end];
    if json.len() > MAX_NOTE_JSON {
        return Err(malformed(what, "dlopen note larger than 1 MiB"));
    }
    let raw: Vec<RawNote> = serde_json::from_slice(json).map_err(|e| {
        malformed(
            what,
            format!("dlopen note is not a JSON array of features: {e}"),
        )
    })?;
    Ok(raw
        .into_iter()
        .filter(|r| !r.soname.is_empty())
        .map(|r| DlopenNote {
            // Unknown priorities count as the spec's default.
            priority: match r.priority.as_deref() {
                Some("required") => DlopenPriority::Required,
                Some("suggested") => DlopenPriority::Suggested,
                _ => DlopenPriority::Recommended,
            },
            feature: r.feature,
            description: r.description,
            sonames: r.soname,
        })
        .collect())
}

/// The dlopen notes of an ELF image in memory; empty for non-ELF data or objects without any.
pub fn dlopen_notes(data: &[u8]) -> Result<Vec<DlopenNote>, ElfError> {
    notes_ref(data, "ELF data")
}

/// The dlopen notes of a file on the host, reading only the headers and the notes.
pub fn dlopen_notes_file(path: &Path) -> Result<Vec<DlopenNote>, ElfError> {
    let file = std::fs::File::open(path).map_err(|source| ElfError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let cache = ReadCache::new(file);
    notes_ref(&cache, &path.display().to_string())
}

fn notes_ref<'data, R: ReadRef<'data>>(data: R, what: &str) -> Result<Vec<DlopenNote>, ElfError> {
    match FileKind::parse(data) {
        Ok(FileKind::Elf32) => notes_of::<elf::FileHeader32<Endianness>, R>(data, what),
        Ok(FileKind::Elf64) => notes_of::<elf::FileHeader64<Endianness>, R>(data, what),
        _ => Ok(Vec::new()),
    }
}

fn notes_of<'data, Elf: FileHeader<Endian = Endianness>, R: ReadRef<'data>>(
    data: R,
    what: &str,
) -> Result<Vec<DlopenNote>, ElfError> {
    let bad = |e: object::Error| malformed(what, e.to_string());
    let header = Elf::parse(data).map_err(bad)?;
    let endian = header.endian().map_err(bad)?;
    let mut out = Vec::new();
    let mut found = false;
    for ph in header.program_headers(endian, data).map_err(bad)? {
        let Some(mut notes) = ph.notes(endian, data).map_err(bad)? else {
            continue;
        };
        while let Some(note) = notes.next().map_err(bad)? {
            if note.n_type(endian).0 == NT_FDO_DLOPEN_METADATA && note.name() == b"FDO" {
                found = true;
                out.extend(parse_note_json(note.desc(), what)?);
            }
        }
    }
    if found {
        return Ok(out);
    }
    // No PT_NOTE holds them (or no program headers): the SHT_NOTE sections.
    let Ok(sections) = header.sections(endian, data) else {
        return Ok(out);
    };
    for section in sections.iter() {
        let Some(mut notes) = section.notes(endian, data).map_err(bad)? else {
            continue;
        };
        while let Some(note) = notes.next().map_err(bad)? {
            if note.n_type(endian).0 == NT_FDO_DLOPEN_METADATA && note.name() == b"FDO" {
                out.extend(parse_note_json(note.desc(), what)?);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn note_json_with_defaults_and_padding() {
        let notes = parse_note_json(
            br#"[{"feature":"lz4","description":"d","priority":"suggested","soname":["liblz4.so.1"]},{"soname":["a.so.1","a.so.0"]},{"feature":"empty","soname":[]}]"#
                .iter()
                .copied()
                .chain([0, 0, 0])
                .collect::<Vec<u8>>()
                .as_slice(),
            "t",
        )
        .unwrap();
        assert_eq!(notes.len(), 2);
        assert_eq!(notes[0].priority, DlopenPriority::Suggested);
        assert_eq!(notes[0].feature.as_deref(), Some("lz4"));
        assert_eq!(notes[1].priority, DlopenPriority::Recommended);
        assert_eq!(notes[1].sonames, vec!["a.so.1", "a.so.0"]);
        assert!(parse_note_json(b"{not json", "t").is_err());
        assert!(parse_note_json(b"{\"soname\":1}", "t").is_err());
    }

    #[test]
    fn follow_levels() {
        use DlopenPriority::*;
        assert!(!DlopenFollow::None.follows(Required));
        assert!(DlopenFollow::Required.follows(Required));
        assert!(!DlopenFollow::Required.follows(Recommended));
        assert!(DlopenFollow::Recommended.follows(Recommended));
        assert!(!DlopenFollow::Recommended.follows(Suggested));
        assert!(DlopenFollow::Suggested.follows(Suggested));
        assert_eq!("none".parse::<DlopenFollow>(), Ok(DlopenFollow::None));
        assert!("all".parse::<DlopenFollow>().is_err());
    }

    #[test]
    fn not_elf_has_no_notes() {
        assert!(dlopen_notes(b"#!/bin/sh\n").unwrap().is_empty());
    }
}
