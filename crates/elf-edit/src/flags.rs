//! Small header edits `flix-patchelf` offers beside [`super::Edits`]: the OS ABI byte of
//! `e_ident` and the executable-stack flag of PT_GNU_STACK. Both change bytes in place.

use super::raw::{unsupported, Phdr};
use super::{Parsed, RewriteError};

const EI_OSABI: usize = 7;
const PT_GNU_STACK: u32 = 0x6474_e551;
const PF_X: u32 = 1;

fn parse(input: &[u8]) -> Result<Parsed, RewriteError> {
    Parsed::parse(input)?.ok_or(RewriteError::NotElf)
}

/// The OS ABI byte (`e_ident[EI_OSABI]`).
pub fn os_abi(input: &[u8]) -> Result<u8, RewriteError> {
    parse(input)?;
    Ok(input[EI_OSABI])
}

/// A copy of `input` with another OS ABI byte.
pub fn set_os_abi(input: &[u8], abi: u8) -> Result<Vec<u8>, RewriteError> {
    parse(input)?;
    let mut out = input.to_vec();
    out[EI_OSABI] = abi;
    Ok(out)
}

/// Whether PT_GNU_STACK asks for an executable stack; `None` without PT_GNU_STACK.
pub fn execstack(input: &[u8]) -> Result<Option<bool>, RewriteError> {
    let p = parse(input)?;
    Ok(p.phdrs
        .iter()
        .find(|ph| ph.p_type == PT_GNU_STACK)
        .map(|ph| ph.flags & PF_X != 0))
}

/// A copy of `input` whose PT_GNU_STACK asks for (or refuses) an executable stack.
pub fn set_execstack(input: &[u8], on: bool) -> Result<Vec<u8>, RewriteError> {
    let p = parse(input)?;
    let i = p
        .phdrs
        .iter()
        .position(|ph| ph.p_type == PT_GNU_STACK)
        .ok_or_else(|| unsupported("no PT_GNU_STACK program header to change"))?;
    let mut ph: Phdr = p.phdrs[i];
    if on {
        ph.flags |= PF_X;
    } else {
        ph.flags &= !PF_X;
    }
    let mut out = input.to_vec();
    ph.write(p.fmt, &mut out, p.eh.phoff + i as u64 * p.fmt.phentsize())?;
    Ok(out)
}
