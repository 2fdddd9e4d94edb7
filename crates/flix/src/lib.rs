//! Flix: relocate programs and their library closure into a self-contained extension.
//!
//! - [`rewrite`]: the ELF rewriter (interpreter, RUNPATH/RPATH, SONAME, DT_NEEDED,
//!   DF_1_NODEFLIB), with our own layout step for growing sections; used by `flix-patchelf`.

pub mod rewrite;
