//! Padmé padding (Nikitin et al., "Reducing Metadata Leakage from Encrypted
//! Files and Communication with PURBs", PETS 2019): a length is rounded up
//! so that only its top bits remain, leaking O(log log n) bits of it instead
//! of all of them, for at most 12% more bytes (less as lengths grow).
//!
//! Used where it is cheap and the size says something: a manifest's length
//! grows with the stream's (its chunk list), so without padding the bucket
//! learns each snapshot's size to the chunk.

/// The padded length for `len` bytes (`>= len`).
pub fn padme(len: usize) -> usize {
    if len < 2 {
        return len;
    }
    let e = usize::BITS - 1 - len.leading_zeros(); // floor(log2 len)
    let s = u32::BITS - e.leading_zeros(); // floor(log2 e) + 1
    let last_bits = e - s;
    let mask = (1usize << last_bits) - 1;
    (len + mask) & !mask
}

#[cfg(test)]
mod tests {
    use super::padme;

    #[test]
    fn padded_lengths_are_long_enough_and_at_most_12_percent_longer() {
        for len in (0..70_000).chain([1 << 20, (1 << 20) + 1, 5_000_000, 16 << 20]) {
            let p = padme(len);
            assert!(p >= len, "{len}");
            assert!(p - len <= len / 8 + 1, "{len} -> {p}");
        }
    }

    #[test]
    fn padding_collapses_nearby_lengths() {
        // Lengths within a power of two share few padded values.
        let distinct: std::collections::BTreeSet<usize> =
            (1 << 20..2 << 20).step_by(97).map(padme).collect();
        assert!(distinct.len() <= 64, "{}", distinct.len());
        assert_eq!(padme(1 << 20), 1 << 20);
    }

    #[test]
    fn padding_is_monotonic() {
        let mut last = 0;
        for len in 0..100_000 {
            let p = padme(len);
            assert!(p >= last);
            last = p;
        }
    }
}
