//! Scan and rewrite arbitrary bytes: must never panic; an accepted output must parse again.
#![no_main]

use elf_edit::{
    add_note_section, find_note_section, inspect, remove_note_section, rewrite, Edits, Note,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = inspect(data);
    // The first byte picks the edits, so both the in-place and the growing paths run.
    let Some((&sel, bytes)) = data.split_first() else {
        return;
    };
    let mut e = Edits::default();
    if sel & 1 != 0 {
        e.interpreter = Some("/usr/local/a-long-extension-name-for-fuzzing/ld-linux.so.2".into());
    }
    if sel & 2 != 0 {
        e.runpath = Some(vec!["/usr/local/fuzz".into(), "$ORIGIN/../lib".into()]);
    }
    if sel & 4 != 0 {
        e.runpath = Some(Vec::new());
    }
    e.force_rpath = sel & 8 != 0;
    e.nodeflib = sel & 16 != 0;
    if sel & 32 != 0 {
        e.soname = Some("libfuzz.so.1".into());
    }
    if sel & 64 != 0 {
        e.add_needed = vec!["libextra.so.1".into()];
        e.remove_needed = vec!["libc.so.6".into()];
        e.rename_symbols = vec![
            ("free".into(), "free_renamed_for_fuzzing".into()),
            ("main".into(), "m".into()),
        ];
    }
    let _ = elf_edit::warnings(bytes);
    if sel & 128 != 0 {
        e.replace_needed = vec![("libc.so.6".into(), "libc-renamed.so.6".into())];
    }
    if let Ok(out) = rewrite(bytes, &e) {
        inspect(&out).expect("verified output parses");
    }
    // Note sections: an added note is found again and can be removed again.
    let _ = find_note_section(bytes, ".note.fuzz");
    let _ = remove_note_section(bytes, ".note.fuzz");
    let note = Note {
        section: ".note.fuzz",
        owner: "Fuzz",
        n_type: 1,
        desc: b"lib\0=/x/lib\0\0",
    };
    if let Ok(out) = add_note_section(bytes, &note) {
        let found = find_note_section(&out, ".note.fuzz").expect("verified output parses");
        assert!(found.is_some_and(|f| f.allocated));
        let back = remove_note_section(&out, ".note.fuzz").expect("the added note is removable");
        assert!(back.is_some());
    }
});
