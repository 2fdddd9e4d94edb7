//! The closure's ELF reader (`elf_closure::scan`, used by `sysext deps` and `sysext check`
//! on files from untrusted images) must return an error for any input, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = elf_closure::scan(data);
});
