//! A tar stream passed through while the entries a base backup's facts
//! come from are kept.

use std::io::{self, Read};

/// Captures at most this much of `backup_manifest` (it lists every file
/// with a checksum: ~100 bytes a file).
const MAX_MANIFEST: u64 = 256 << 20;

/// The block arithmetic of a tar stream fed in pieces of any size: which
/// bytes are a header block, entry data, padding, or past the end marker.
/// Headers themselves are decoded by the `tar` crate.
#[derive(Default)]
pub(super) struct TarBlocks {
    header: Vec<u8>,
    /// Data bytes left in the current entry, then its padding.
    data_left: u64,
    pad_left: u64,
    ended: bool,
}

/// One piece of a tar stream.
pub(super) enum Piece<'a> {
    /// A whole header block: call [`TarBlocks::entry`] with its size.
    Header(Vec<u8>),
    /// Entry data.
    Data(&'a [u8]),
    /// Padding after entry data.
    Pad(&'a [u8]),
    /// The first end-of-archive block: everything after it is ignored.
    End,
}

impl TarBlocks {
    /// Takes the next piece off the front of `buf`; `None` once `buf` is
    /// used up or the archive ended.
    pub(super) fn next<'a>(&mut self, buf: &mut &'a [u8]) -> Option<Piece<'a>> {
        while !buf.is_empty() && !self.ended {
            let take = |n: u64, buf: &mut &'a [u8]| {
                let (head, rest) = buf.split_at(n.min(buf.len() as u64) as usize);
                *buf = rest;
                head
            };
            if self.data_left > 0 {
                let d = take(self.data_left, buf);
                self.data_left -= d.len() as u64;
                return Some(Piece::Data(d));
            }
            if self.pad_left > 0 {
                let d = take(self.pad_left, buf);
                self.pad_left -= d.len() as u64;
                return Some(Piece::Pad(d));
            }
            let d = take(512 - self.header.len() as u64, buf);
            self.header.extend_from_slice(d);
            if self.header.len() == 512 {
                let block = std::mem::replace(&mut self.header, Vec::with_capacity(512));
                if block.iter().all(|&b| b == 0) {
                    self.ended = true;
                    return Some(Piece::End);
                }
                return Some(Piece::Header(block));
            }
        }
        None
    }

    /// The header just returned announced `size` bytes of data.
    pub(super) fn entry(&mut self, size: u64) {
        self.data_left = size;
        self.pad_left = (512 - size % 512) % 512;
    }
}

/// Passes a tar stream through, keeping the contents of the top-level
/// `backup_label` and `backup_manifest` entries.
pub struct TarWatch<R> {
    inner: R,
    blocks: TarBlocks,
    capture: Option<Captured>,
    /// `backup_label`.
    pub label: Vec<u8>,
    /// `backup_manifest`.
    pub manifest: Vec<u8>,
}

#[derive(Clone, Copy)]
enum Captured {
    Label,
    Manifest,
}

impl<R> TarWatch<R> {
    /// Watches `inner`.
    pub fn new(inner: R) -> Self {
        TarWatch {
            inner,
            blocks: TarBlocks::default(),
            capture: None,
            label: Vec::new(),
            manifest: Vec::new(),
        }
    }

    fn observe(&mut self, mut buf: &[u8]) {
        while let Some(piece) = self.blocks.next(&mut buf) {
            match piece {
                Piece::Data(d) => match self.capture {
                    Some(Captured::Label) => self.label.extend_from_slice(d),
                    Some(Captured::Manifest) => self.manifest.extend_from_slice(d),
                    None => {}
                },
                Piece::Header(block) => {
                    let h = tar::Header::from_byte_slice(&block);
                    let size = h.entry_size().unwrap_or(0);
                    let path = h.path_bytes();
                    let name = path.strip_prefix(b"./").unwrap_or(&path);
                    self.capture = match name {
                        b"backup_label" if size <= 64 << 10 => Some(Captured::Label),
                        b"backup_manifest" if size <= MAX_MANIFEST => Some(Captured::Manifest),
                        _ => None,
                    };
                    self.blocks.entry(size);
                }
                Piece::Pad(_) | Piece::End => {}
            }
        }
    }
}

impl<R: Read> Read for TarWatch<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.observe(&buf[..n]);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_and_manifest_are_kept_from_a_tar_stream() {
        let mut b = tar::Builder::new(Vec::new());
        for (name, body) in [
            ("PG_VERSION", &b"15\n"[..]),
            ("backup_label", b"START WAL LOCATION: 0/2000028\n"),
            ("base/1/1259", &[7u8; 9000][..]),
            ("backup_manifest", b"{\"WAL-Ranges\": []}"),
        ] {
            let mut h = tar::Header::new_ustar();
            h.set_size(body.len() as u64);
            h.set_mode(0o600);
            h.set_cksum();
            b.append_data(&mut h, name, body).unwrap();
        }
        let tarball = b.into_inner().unwrap();
        // Read in odd-sized pieces, as a pipe delivers them.
        let mut w = TarWatch::new(std::io::Cursor::new(tarball.clone()));
        let mut out = Vec::new();
        let mut buf = [0u8; 333];
        loop {
            let n = w.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
        }
        assert_eq!(out, tarball);
        assert_eq!(w.label, b"START WAL LOCATION: 0/2000028\n");
        assert_eq!(w.manifest, b"{\"WAL-Ranges\": []}");
    }
}
