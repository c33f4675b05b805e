//! Content-defined chunking: FastCDC v2020 with normalization, seeded from
//! the dedup key.
//!
//! Why ~8 KiB average: in nightly `pg_dump -Fc -Z0` dumps, updated rows
//! scatter changes every 50-160 KB through the dump. With restic's or borg's
//! 1-2 MiB chunks nearly every chunk contains a change and night-over-night
//! dedup is 0%; each halving of the chunk size below that roughly halves
//! what a night of scattered updates costs (SPEC.md, "Chunking", has the
//! measurements behind 8 KiB rather than 16 or 4).
//!
//! The chunker is a pure function from a window of bytes to the length of the
//! next chunk: the caller owns the buffer and reuses it, so the hot path makes
//! no allocation per chunk.

use serde::{Deserialize, Serialize};

use crate::error::{FormatError, Result};
use crate::keys::DedupKey;
use fastcdc::v2020 as cdc;

/// The only chunking algorithm so far; recorded in the vault config so a
/// later one can be added without breaking dedup of existing vaults.
pub const ALGORITHM_FASTCDC_V2020: &str = "fastcdc-v2020";

/// Chunker parameters, recorded in the vault config: dedup is only stable
/// while they stay the same, so they are fixed at `init`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkerParams {
    /// Always [`ALGORITHM_FASTCDC_V2020`] for now.
    pub algorithm: String,
    /// Smallest chunk (except the last of a stream).
    pub min_size: u32,
    /// Target average chunk size.
    pub avg_size: u32,
    /// Largest chunk.
    pub max_size: u32,
    /// FastCDC normalization level (0-3).
    pub normalization: u8,
}

impl Default for ChunkerParams {
    fn default() -> Self {
        ChunkerParams {
            algorithm: ALGORITHM_FASTCDC_V2020.to_string(),
            min_size: 2 * 1024,
            avg_size: 8 * 1024,
            max_size: 32 * 1024,
            normalization: 1,
        }
    }
}

impl ChunkerParams {
    /// Checks the parameters against what FastCDC accepts.
    ///
    /// # Errors
    /// [`FormatError::Corrupt`] when out of range (a config from a newer or
    /// damaged vault).
    pub fn validate(&self) -> Result<()> {
        let bad = |d: &str| Err(FormatError::corrupt("chunker parameters", d));
        if self.algorithm != ALGORITHM_FASTCDC_V2020 {
            return bad(&format!("unknown algorithm {:?}", self.algorithm));
        }
        let (min, avg, max) = (
            self.min_size as usize,
            self.avg_size as usize,
            self.max_size as usize,
        );
        if !(cdc::MINIMUM_MIN..=cdc::MINIMUM_MAX).contains(&min)
            || !(cdc::AVERAGE_MIN..=cdc::AVERAGE_MAX).contains(&avg)
            || !(cdc::MAXIMUM_MIN..=cdc::MAXIMUM_MAX).contains(&max)
        {
            return bad("sizes out of FastCDC's range");
        }
        if !(min < avg && avg < max) || min % 2 != 0 || avg % 2 != 0 || max % 2 != 0 {
            return bad("sizes must be even and min < avg < max");
        }
        if self.normalization > 3 {
            return bad("normalization level must be 0-3");
        }
        Ok(())
    }
}

/// A configured chunker. Cheap to clone; holds the seeded gear tables.
#[derive(Clone)]
pub struct Chunker {
    min: usize,
    avg: usize,
    max: usize,
    mask_s: u64,
    mask_l: u64,
    gear: Box<[u64]>,
    gear_ls: Box<[u64]>,
}

impl Chunker {
    /// Builds a chunker for a vault.
    ///
    /// # Errors
    /// When the parameters are invalid (see [`ChunkerParams::validate`]).
    pub fn new(params: &ChunkerParams, key: &DedupKey) -> Result<Self> {
        params.validate()?;
        let level = match params.normalization {
            0 => cdc::Normalization::Level0,
            1 => cdc::Normalization::Level1,
            2 => cdc::Normalization::Level2,
            _ => cdc::Normalization::Level3,
        };
        let (mask_s, mask_l) = cdc::select_masks(params.avg_size as usize, level);
        let (gear, gear_ls) = cdc::get_gear_with_seed(key.chunker_seed());
        Ok(Chunker {
            min: params.min_size as usize,
            avg: params.avg_size as usize,
            max: params.max_size as usize,
            mask_s,
            mask_l,
            gear: gear.into_owned().into_boxed_slice(),
            gear_ls: gear_ls.into_owned().into_boxed_slice(),
        })
    }

    /// The largest chunk this chunker emits: a caller's buffer must hold at
    /// least this much unconsumed data (or the end of the stream) before
    /// asking for a cut.
    pub fn max_size(&self) -> usize {
        self.max
    }

    /// Length of the chunk that starts at `window[0]`, or `None` when the
    /// window is empty, or when more data is needed to decide (the window is
    /// shorter than the maximum chunk, holds no cut point, and `eof` is false).
    ///
    /// A cut found in a short window is the same cut a longer window would
    /// give: FastCDC decides from the bytes before the cut point only.
    pub fn next_cut(&self, window: &[u8], eof: bool) -> Option<usize> {
        if window.is_empty() {
            return None;
        }
        let (_, len) = cdc::cut_gear(
            window,
            self.min,
            self.avg,
            self.max,
            self.mask_s,
            self.mask_l,
            self.mask_s << 1,
            self.mask_l << 1,
            &self.gear,
            &self.gear_ls,
        );
        if len < window.len() || window.len() >= self.max || eof {
            Some(len)
        } else {
            None
        }
    }

    /// Splits a whole in-memory buffer (tests, chunk lists).
    pub fn split<'a>(&self, data: &'a [u8]) -> Vec<&'a [u8]> {
        let mut out = Vec::new();
        let mut pos = 0;
        while let Some(n) = self.next_cut(&data[pos..], true) {
            out.push(&data[pos..pos + n]);
            pos += n;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testdata::noise;

    #[test]
    fn streaming_windows_give_the_same_cuts_as_one_buffer() {
        let key = DedupKey::from_bytes([1; 32]);
        let c = Chunker::new(&ChunkerParams::default(), &key).unwrap();
        let data = noise(2_000_000, 42);
        let whole: Vec<usize> = c.split(&data).iter().map(|s| s.len()).collect();
        // Feed in odd-sized windows, as a reader would.
        let mut cuts = Vec::new();
        let mut start = 0;
        let mut end = 0;
        while start < data.len() {
            end = (end + 10_007).min(data.len());
            while let Some(n) = c.next_cut(&data[start..end], end == data.len()) {
                cuts.push(n);
                start += n;
            }
        }
        assert_eq!(cuts, whole);
        assert_eq!(whole.iter().sum::<usize>(), data.len());
        let p = ChunkerParams::default();
        let avg = data.len() / whole.len();
        let target = p.avg_size as usize;
        assert!(
            (target / 2..target * 2).contains(&avg),
            "average chunk {avg}"
        );
        assert!(whole[..whole.len() - 1]
            .iter()
            .all(|&n| (p.min_size as usize..=p.max_size as usize).contains(&n)));
    }

    #[test]
    fn seed_changes_boundaries() {
        let data = noise(500_000, 9);
        let p = ChunkerParams::default();
        let a: Vec<usize> = Chunker::new(&p, &DedupKey::from_bytes([1; 32]))
            .unwrap()
            .split(&data)
            .iter()
            .map(|s| s.len())
            .collect();
        let b: Vec<usize> = Chunker::new(&p, &DedupKey::from_bytes([2; 32]))
            .unwrap()
            .split(&data)
            .iter()
            .map(|s| s.len())
            .collect();
        assert_ne!(a, b);
    }

    #[test]
    fn invalid_params_are_rejected() {
        let p = ChunkerParams {
            min_size: 3,
            ..ChunkerParams::default()
        };
        assert!(p.validate().is_err());
        let p = ChunkerParams {
            algorithm: "rabin".into(),
            ..ChunkerParams::default()
        };
        assert!(p.validate().unwrap_err().to_string().contains("rabin"));
    }
}
