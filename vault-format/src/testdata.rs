//! Deterministic test data, for tests, benches and the fuzz corpus.
//!
//! **Not part of the vault format**: nothing here is read or written in a
//! vault, and nothing in the format depends on it. It lives in this crate
//! so the unit tests, the integration tests and benches of both crates and
//! `fuzz/examples/gen_corpus.rs` share one generator instead of each
//! carrying its own copy of the same loop.
//!
//! Two kinds of data, because they exercise different paths:
//!
//! - [`Xorshift64::bytes`] / [`noise`]: incompressible bytes. zstd cannot
//!   shrink them, so blobs of them are stored raw ([`crate::blob::Codec::Raw`]),
//!   and FastCDC finds cut points in them at the configured average.
//! - [`Xorshift64::dump_like`] / [`dump_like`]: text rows with the repeated
//!   structure of a database dump (tab-separated columns, a few names and
//!   streets, dates, a JSON column), which zstd compresses a few times over,
//!   so blobs of them are stored as zstd frames.
//!
//! # Stability
//!
//! The output for a given seed and length is fixed, and pinned by tests
//! (`output_is_stable`). Changing it changes the data every benchmark
//! measures (numbers in `docs/` stop being comparable), the fuzz seed
//! corpus, and the inputs of every test that uses it: do not change it;
//! add a new function instead.

/// Seeded bytes from BLAKE3's extendable output (key derived from "coffer
/// tests testdata v1"): incompressible like [`Xorshift64::bytes`], but
/// every byte depends on the whole seed, so different seeds never share a
/// stretch. The backward-compatibility fixtures (tests/fixtures/vaults) are
/// made from it, so its output is pinned too.
pub struct Xof(blake3::OutputReader);

impl Xof {
    /// A stream for `seed`.
    pub fn new(seed: u64) -> Xof {
        let mut h = blake3::Hasher::new_derive_key("coffer tests testdata v1");
        h.update(&seed.to_le_bytes());
        Xof(h.finalize_xof())
    }

    /// The next `n` bytes.
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut v = vec![0u8; n];
        self.0.fill(&mut v);
        v
    }

    /// The next little-endian u64.
    pub fn next_u64(&mut self) -> u64 {
        let mut b = [0u8; 8];
        self.0.fill(&mut b);
        u64::from_le_bytes(b)
    }
}

/// `n` bytes of [`Xof`] for `seed`.
pub fn random(seed: u64, n: usize) -> Vec<u8> {
    Xof::new(seed).bytes(n)
}

/// The seed of [`dump_like`] (the 64-bit golden ratio), and a good default.
pub const DEFAULT_SEED: u64 = 0x9e37_79b9_7f4a_7c15;

/// Marsaglia's xorshift64 generator (shifts 13, 7, 17): fast, seedable,
/// and plenty for test data. Not for anything that needs real randomness.
#[derive(Debug, Clone)]
pub struct Xorshift64 {
    state: u64,
}

impl Xorshift64 {
    /// A generator seeded with `seed`. The state must not be zero (xorshift
    /// would then only produce zeros), so the low bit is set: odd seeds are
    /// used as they are, and `seed` and `seed | 1` give the same output.
    pub fn new(seed: u64) -> Self {
        Xorshift64 { state: seed | 1 }
    }

    /// Advances the generator and returns the new state.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.state;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.state = x;
        x
    }

    /// Fills `buf` with incompressible bytes: each byte is the low 8 bits of
    /// one step (one step per byte, as the copies this replaced did, so
    /// existing tests and corpus seeds kept their data).
    pub fn fill(&mut self, buf: &mut [u8]) {
        for b in buf {
            *b = self.next_u64() as u8;
        }
    }

    /// `len` incompressible bytes (see [`Xorshift64::fill`]).
    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        let mut v = vec![0; len];
        self.fill(&mut v);
        v
    }

    /// `len` bytes of compressible, dump-like text: rows of
    ///
    /// ```text
    /// id \t name \t house-number street \t amount \t timestamp \t {"plan": .., "seats": .., "note": "<16 hex>"} \n
    /// ```
    ///
    /// with two steps of the generator per row (the second one is the
    /// note, the part zstd cannot shrink), cut at exactly `len` bytes. zstd
    /// level 3 stores it in roughly a third of its size.
    pub fn dump_like(&mut self, len: usize) -> Vec<u8> {
        const NAMES: [&str; 8] = [
            "alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi",
        ];
        const STREETS: [&str; 5] = ["Elm St", "Oak Ave", "Pine Rd", "Maple Dr", "Cedar Ln"];
        let mut out = Vec::with_capacity(len + 256);
        let mut id = 0u64;
        while out.len() < len {
            id += 1;
            let r = self.next_u64();
            let note = self.next_u64();
            let line = format!(
                "{id}\t{}\t{} {}\t{}.{:02}\t2026-{:02}-{:02} {:02}:{:02}:{:02}+00\t{{\"plan\": \"p{}\", \"seats\": {}, \"note\": \"{:016x}\"}}\n",
                NAMES[(r % 8) as usize],
                r % 9000 + 1,
                STREETS[(r >> 8) as usize % 5],
                r % 100_000,
                (r >> 20) % 100,
                (r >> 24) % 12 + 1,
                (r >> 28) % 28 + 1,
                (r >> 32) % 24,
                (r >> 36) % 60,
                (r >> 40) % 60,
                (r >> 44) % 7,
                (r >> 48) % 500,
                note
            );
            out.extend_from_slice(line.as_bytes());
        }
        out.truncate(len);
        out
    }
}

/// `len` incompressible bytes from `seed`: `Xorshift64::new(seed).bytes(len)`.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    Xorshift64::new(seed).bytes(len)
}

/// `len` bytes of dump-like rows from [`DEFAULT_SEED`]:
/// `Xorshift64::new(DEFAULT_SEED).dump_like(len)`. This is the data of the
/// `stages` benchmark.
pub fn dump_like(len: usize) -> Vec<u8> {
    Xorshift64::new(DEFAULT_SEED).dump_like(len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blob::{BlobEncoder, Codec};

    /// Pins the output: if this fails, the generator changed, and with it
    /// every benchmark's data and the fuzz corpus (see the module doc).
    #[test]
    fn output_is_stable() {
        let mut g = Xorshift64::new(1);
        assert_eq!(
            [g.next_u64(), g.next_u64(), g.next_u64()],
            [0x4082_2041, 0x1000_4106_0c01_1441, 0x9b1e_842f_6e86_2629]
        );
        assert_eq!(
            noise(8, 12345),
            [0x19, 0x65, 0xb1, 0x18, 0xee, 0xc3, 0xde, 0x5b]
        );
        assert_eq!(
            blake3::hash(&noise(1 << 20, 42)).to_hex().as_str(),
            "30f6687dbe299fc2a3f2571c8f248c669a434bbfbc8db46321a83453e057b133"
        );
        let rows = dump_like(1 << 20);
        assert!(rows.starts_with(b"1\t"), "{:?}", &rows[..80]);
        assert_eq!(
            blake3::hash(&rows).to_hex().as_str(),
            "76dea7f03c520a6beb18cd8a8a910d7e03012e400f4b9b08d6186cf19b4b363c"
        );
    }

    #[test]
    fn seed_and_seed_with_low_bit_set_are_the_same_stream() {
        assert_eq!(noise(64, 12344), noise(64, 12345));
        assert_ne!(noise(64, 2), noise(64, 4));
        assert!(noise(64, 0).iter().any(|&b| b != 0));
    }

    #[test]
    fn fill_continues_the_stream() {
        let mut g = Xorshift64::new(7);
        let mut a = vec![0; 10];
        g.fill(&mut a[..4]);
        g.fill(&mut a[4..]);
        assert_eq!(a, noise(10, 7));
    }

    #[test]
    fn dump_like_is_a_prefix_of_longer_dump_like() {
        let long = dump_like(10_000);
        let short = dump_like(3_333);
        assert_eq!(short.len(), 3_333);
        assert_eq!(&long[..3_333], &short[..]);
    }

    /// The property the tests rely on: noise stays raw, dump-like rows compress.
    #[test]
    fn noise_is_incompressible_and_dump_like_compresses() {
        let mut enc = BlobEncoder::new(3).unwrap();
        let mut out = Vec::new();
        let n = noise(1 << 20, 1);
        assert_eq!(enc.encode(&n, &mut out).unwrap(), Codec::Raw);
        let d = dump_like(1 << 20);
        assert_eq!(enc.encode(&d, &mut out).unwrap(), Codec::Zstd);
        assert!(out.len() < d.len() / 2, "{} of {}", out.len(), d.len());
    }
}
