//! Object identifiers.
//!
//! - [`ChunkId`]: keyed BLAKE3 of a plaintext chunk under the vault's chunk-id
//!   key (derived from the dedup key). Keyed so that the storage side, which
//!   sees no chunk ids anyway, could not confirm a guessed plaintext even if
//!   ids leaked (e.g. from a stolen catalog).
//! - [`PackId`]: plain BLAKE3 of a pack's *ciphertext*, so anyone holding the
//!   tier can check its integrity without any key.
//! - [`SnapshotId`], [`VaultId`]: random.
//!
//! All are written as lowercase hex on the wire and on the command line.

use std::fmt;
use std::str::FromStr;

use crate::error::FormatError;

macro_rules! hex_id {
    ($(#[$meta:meta])* $name:ident, $len:expr, $what:expr) => {
        $(#[$meta])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub [u8; $len]);

        impl $name {
            /// Length of the id in bytes.
            pub const LEN: usize = $len;

            /// The raw bytes.
            pub fn as_bytes(&self) -> &[u8; $len] {
                &self.0
            }

            /// Lowercase hex, as used in object names and JSON.
            pub fn to_hex(&self) -> String {
                hex::encode(self.0)
            }

            /// Parses an id from a byte slice of exactly the right length.
            pub fn from_slice(b: &[u8]) -> Option<Self> {
                <[u8; $len]>::try_from(b).ok().map(Self)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.to_hex())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), &self.to_hex()[..12])
            }
        }

        impl FromStr for $name {
            type Err = FormatError;
            fn from_str(s: &str) -> Result<Self, FormatError> {
                let mut out = [0u8; $len];
                hex::decode_to_slice(s, &mut out).map_err(|_| FormatError::InvalidKey {
                    what: $what,
                    detail: format!("expected {} hex characters", 2 * $len),
                })?;
                Ok(Self(out))
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.to_hex())
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

hex_id!(
    /// Keyed BLAKE3 of a plaintext chunk.
    ChunkId, 32, "chunk id"
);
hex_id!(
    /// BLAKE3 of a pack's ciphertext: the pack's object name.
    PackId, 32, "pack id"
);
hex_id!(
    /// Random id of a snapshot: the manifest's object name.
    SnapshotId, 16, "snapshot id"
);
hex_id!(
    /// Random id of a vault, fixed at `init`.
    VaultId, 16, "vault id"
);

impl PackId {
    /// Computes the id of a pack from its complete ciphertext.
    pub fn of_ciphertext(ciphertext: &[u8]) -> Self {
        PackId(*blake3::hash(ciphertext).as_bytes())
    }
}

fn random<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    // The OS RNG failing is not something a backup can recover from.
    getrandom::fill(&mut b).expect("the operating system's random number generator failed");
    b
}

impl SnapshotId {
    /// A fresh random snapshot id.
    pub fn random() -> Self {
        SnapshotId(random())
    }
}

impl VaultId {
    /// A fresh random vault id.
    pub fn random() -> Self {
        VaultId(random())
    }
}

pub(crate) fn random_bytes<const N: usize>() -> [u8; N] {
    random()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip() {
        let id = SnapshotId::random();
        assert_eq!(id.to_hex().parse::<SnapshotId>().unwrap(), id);
        assert!("zz".parse::<SnapshotId>().is_err());
        assert!(id.to_hex()[..10].parse::<SnapshotId>().is_err());
    }

    #[test]
    fn pack_id_is_unkeyed_blake3() {
        assert_eq!(
            PackId::of_ciphertext(b"abc").to_hex(),
            blake3::hash(b"abc").to_hex().to_string()
        );
    }
}
