//! Metadata blocks: 8 KiB blocks, each behind a 16-bit length header.

use super::*;

pub(super) struct MetaWriter {
    pub(super) out: Vec<u8>,
    pub(super) buf: Vec<u8>,
}

impl MetaWriter {
    pub(super) fn new() -> Self {
        Self {
            out: Vec::new(),
            buf: Vec::with_capacity(METADATA_SIZE * 2),
        }
    }

    /// (start of the current block relative to the table, offset inside it).
    pub(super) fn pos(&self) -> (u64, u16) {
        (self.out.len() as u64, self.buf.len() as u16)
    }

    pub(super) fn reference(&self) -> u64 {
        let (b, o) = self.pos();
        (b << 16) | o as u64
    }

    pub(super) fn write(&mut self, codec: &mut Codec, bytes: &[u8]) -> Result<(), WriteError> {
        self.buf.extend_from_slice(bytes);
        while self.buf.len() >= METADATA_SIZE {
            let rest = self.buf.split_off(METADATA_SIZE);
            let block = std::mem::replace(&mut self.buf, rest);
            self.emit(codec, block)?;
        }
        Ok(())
    }

    pub(super) fn emit(&mut self, codec: &mut Codec, block: Vec<u8>) -> Result<(), WriteError> {
        let len = block.len();
        let (bytes, raw) = codec.block(block)?;
        let header = bytes.len() as u16 | if raw { 0x8000 } else { 0 };
        debug_assert!(raw || bytes.len() < len);
        self.out.extend_from_slice(&header.to_le_bytes());
        self.out.extend_from_slice(&bytes);
        Ok(())
    }

    pub(super) fn finish(mut self, codec: &mut Codec) -> Result<Vec<u8>, WriteError> {
        if !self.buf.is_empty() {
            let block = std::mem::take(&mut self.buf);
            self.emit(codec, block)?;
        }
        Ok(self.out)
    }
}
