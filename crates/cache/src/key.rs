//! Cache keys and content digests: blake3, the internal hash (sha256 is only for OCI blobs).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A blake3 digest of content (a file of the build context, a directory subtree, anything an
/// operation reads). Shown as 64 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ContentDigest(pub [u8; 32]);

/// The cache key of an operation: blake3 over its definition digest, the keys of its inputs and
/// the content digests of the files it reads (see [`CacheKeyBuilder`]).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CacheKey(pub [u8; 32]);

/// Builds a [`CacheKey`]. Every part is framed (a tag and a length), so no two different
/// sequences of parts can produce the same bytes to hash.
#[derive(Debug, Clone)]
pub struct CacheKeyBuilder {
    hasher: blake3::Hasher,
}

impl CacheKey {
    /// Starts a key from the operation's definition digest (the planner's stable digest of what
    /// the operation is: argv, env, mounts, ...).
    pub fn builder(definition_digest: &str) -> CacheKeyBuilder {
        let mut hasher = blake3::Hasher::new_derive_key("forge cache key v1");
        frame(&mut hasher, b'D', definition_digest.as_bytes());
        CacheKeyBuilder { hasher }
    }

    /// The key as 64 lowercase hex digits.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl CacheKeyBuilder {
    /// Adds the key of an input (a parent operation), in order.
    pub fn input(mut self, key: &CacheKey) -> Self {
        frame(&mut self.hasher, b'I', &key.0);
        self
    }

    /// Adds the content digest of something the operation reads (a COPY source subtree, a
    /// mounted context path), with a label saying which (e.g. the source path).
    pub fn content(mut self, label: &str, digest: &ContentDigest) -> Self {
        frame(&mut self.hasher, b'L', label.as_bytes());
        frame(&mut self.hasher, b'C', &digest.0);
        self
    }

    /// Adds any other bytes that must change the key (e.g. a resolved base manifest digest).
    pub fn extra(mut self, label: &str, bytes: &[u8]) -> Self {
        frame(&mut self.hasher, b'L', label.as_bytes());
        frame(&mut self.hasher, b'X', bytes);
        self
    }

    /// The key.
    pub fn finish(self) -> CacheKey {
        CacheKey(*self.hasher.finalize().as_bytes())
    }
}

fn frame(h: &mut blake3::Hasher, tag: u8, bytes: &[u8]) {
    h.update(&[tag]);
    h.update(&(bytes.len() as u64).to_le_bytes());
    h.update(bytes);
}

macro_rules! hex_type {
    ($t:ident, $what:literal) => {
        impl $t {
            /// Parses 64 hex digits.
            pub fn from_hex(s: &str) -> Option<Self> {
                let mut out = [0u8; 32];
                hex::decode_to_slice(s, &mut out).ok()?;
                Some($t(out))
            }

            /// Appends the 64 hex digits to `out`: what `Display` shows, without the
            /// formatter and the `String` it allocates (this runs once per file of a big copy).
            pub fn push_hex(&self, out: &mut String) {
                let mut digits = [0u8; 64];
                if hex::encode_to_slice(self.0, &mut digits).is_ok() {
                    out.extend(digits.iter().map(|&b| char::from(b)));
                }
            }
        }
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&hex::encode(self.0))
            }
        }
        impl fmt::Debug for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!($what, "({})"), hex::encode(self.0))
            }
        }
        impl FromStr for $t {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                $t::from_hex(s).ok_or_else(|| {
                    format!(
                        concat!("invalid ", $what, " {:?}: expected 64 hex digits"),
                        s
                    )
                })
            }
        }
        impl Serialize for $t {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&hex::encode(self.0))
            }
        }
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

hex_type!(CacheKey, "CacheKey");
hex_type!(ContentDigest, "ContentDigest");
