//! (being written: see the crate map in lib.rs)
