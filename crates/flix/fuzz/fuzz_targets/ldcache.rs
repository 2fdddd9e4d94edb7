//! glibc's ld.so.cache parser (`elf_closure::LdCache::parse`, read from untrusted root
//! filesystems by `sysext deps` and flix) on arbitrary bytes: errors, never panics; lookups on
//! what it accepts never panic either.
#![no_main]

use libfuzzer_sys::fuzz_target;
use elf_closure::LdCache;

fuzz_target!(|data: &[u8]| {
    if let Ok(cache) = LdCache::parse(data) {
        let hwcaps = ["x86-64-v3".to_string(), "x86-64-v2".to_string()];
        for key in cache.entries.iter().take(64).map(|e| e.key.clone()) {
            let _ = cache.lookup(&key, |f| f == 0x303 || f == 1, &hwcaps);
        }
        let _ = cache.lookup("libc.so.6", |_| true, &hwcaps);
    }
});
