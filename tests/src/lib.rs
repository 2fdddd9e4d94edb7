//! Workspace-level tests live in `tests/tests/`; this crate has no code of its own.
//!
//! `hostile_*.rs` is the hostile-input suite: crafted images, tarballs, layouts, manifests and
//! trees fed to the release binaries, each case asserting the safe outcome (nothing written in
//! a sentinel folder, no privilege bits in outputs, no injected marker, bounded RSS and time, no
//! leftovers) with `testkit::hostile`. The binaries are found with `testkit::workspace_bin`:
//! `cargo test --workspace` builds them; alone, run `cargo build --workspace --bins` first.
