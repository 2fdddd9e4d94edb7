//! Scan and rewrite arbitrary bytes: must never panic; an accepted output must parse again.
#![no_main]

use flix_rewrite::{inspect, rewrite, Edits};
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
    let _ = flix_rewrite::warnings(bytes);
    if sel & 128 != 0 {
        e.replace_needed = vec![("libc.so.6".into(), "libc-renamed.so.6".into())];
    }
    if let Ok(out) = rewrite(bytes, &e) {
        inspect(&out).expect("verified output parses");
    }
});
