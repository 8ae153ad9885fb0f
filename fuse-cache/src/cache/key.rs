//! The name of one cached block, and its stable hash for file names; the object version a
//! block belongs to, and the sets of objects eviction selects. Only this module knows how an
//! object's name is spelled.

use std::fmt;
use std::sync::Arc;

/// Between the parts of an object's name: a character that URLs and paths do not hold.
const SEP: char = '\u{1}';

/// One version of one object: the mount it is read through (its URL), its path in the mount and
/// its version at the source ([`fluid_source::Meta::version`]), so that a changed object
/// never matches the blocks of its old version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectId<'a> {
    pub mount: &'a str,
    pub path: &'a str,
    pub version: &'a str,
}

impl ObjectId<'_> {
    /// The name its blocks are cached under (also kept in disk block headers: stable across
    /// releases, so a disk tier stays valid).
    pub fn name(&self) -> Arc<str> {
        format!("{}{SEP}{}{SEP}{}", self.mount, self.path, self.version).into()
    }
}

/// The name the pieces of `piece_size` bytes of the object named `object` are cached under
/// (what a random reader fetches instead of whole blocks): distinct from every object's name,
/// and from the pieces of another size, and under the object's eviction scopes.
pub fn pieces_name(object: &str, piece_size: u64) -> Arc<str> {
    format!("{object}{SEP}pieces{SEP}{piece_size}").into()
}

/// A set of cached objects, every version of them: what eviction drops at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ObjectScope<'a> {
    /// Every object of a mount.
    Mount(&'a str),
    /// Every object under a directory of a mount (`path` without slashes at its ends).
    Dir { mount: &'a str, path: &'a str },
    /// One file of a mount.
    File { mount: &'a str, path: &'a str },
}

impl ObjectScope<'_> {
    /// The start every object name of the set has, and no other has.
    pub(crate) fn name_prefix(&self) -> String {
        match self {
            ObjectScope::Mount(mount) | ObjectScope::Dir { mount, path: "" } => {
                format!("{mount}{SEP}")
            }
            ObjectScope::Dir { mount, path } => format!("{mount}{SEP}{path}/"),
            ObjectScope::File { mount, path } => format!("{mount}{SEP}{path}{SEP}"),
        }
    }
}

/// One block of one object version. `object` is built by the caller from the mount, the path
/// and the object's version ([`fluid_source::Meta::version`]), so a changed object never
/// matches the blocks of its old version; `index` is the block number within the object.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BlockKey {
    pub object: Arc<str>,
    pub index: u64,
}

impl BlockKey {
    pub fn new(object: impl Into<Arc<str>>, index: u64) -> Self {
        BlockKey {
            object: object.into(),
            index,
        }
    }

    /// A 128-bit hash of the key that is the same in every process and on every machine
    /// (unlike std's randomized hasher): two independent 64-bit hashes of the key's bytes.
    pub fn hash128(&self) -> u128 {
        let len = (self.object.len() as u64).to_le_bytes();
        let index = self.index.to_le_bytes();
        let parts: [&[u8]; 3] = [&len, self.object.as_bytes(), &index];
        let a = fmix64(fnv1a(&parts, FNV_OFFSET, FNV_PRIME));
        let b = fmix64(fnv1a(&parts, SEED_B, PRIME_B));
        (u128::from(a) << 64) | u128::from(b)
    }

    /// [`Self::hash128`] as 32 lowercase hex digits: the block's file name in a disk tier.
    pub fn hash_hex(&self) -> String {
        format!("{:032x}", self.hash128())
    }
}

impl fmt::Display for BlockKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}#{}", self.object, self.index)
    }
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;
// The second hash: same scheme, another seed and another odd multiplier.
const SEED_B: u64 = 0x9e37_79b9_7f4a_7c15;
const PRIME_B: u64 = 0xff51_afd7_ed55_8ccd;

/// A 64-bit hash of `bytes` that is the same in every process and on every machine.
pub fn stable_hash64(bytes: &[u8]) -> u64 {
    fmix64(fnv1a(&[bytes], FNV_OFFSET, FNV_PRIME))
}

/// Mixes the bits of `k` (the 64-bit finalizer of MurmurHash3): a good hash of a hash.
pub fn mix64(k: u64) -> u64 {
    fmix64(k)
}

fn fnv1a(parts: &[&[u8]], seed: u64, prime: u64) -> u64 {
    let mut h = seed;
    for part in parts {
        for &b in *part {
            h ^= u64::from(b);
            h = h.wrapping_mul(prime);
        }
    }
    h
}

/// MurmurHash3's 64-bit finalizer: spreads every input bit over the whole word.
fn fmix64(mut k: u64) -> u64 {
    k ^= k >> 33;
    k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
    k ^= k >> 33;
    k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    k ^= k >> 33;
    k
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_are_named_apart_from_blocks_and_evicted_with_their_object() {
        let object = ObjectId {
            mount: "s3://b",
            path: "d/f",
            version: "e1",
        }
        .name();
        let pieces = pieces_name(&object, 65536);
        assert_ne!(pieces, object);
        assert_ne!(pieces, pieces_name(&object, 131072));
        for scope in [
            ObjectScope::Mount("s3://b"),
            ObjectScope::Dir {
                mount: "s3://b",
                path: "d",
            },
            ObjectScope::File {
                mount: "s3://b",
                path: "d/f",
            },
        ] {
            assert!(pieces.starts_with(&scope.name_prefix()), "{scope:?}");
        }
        let other = ObjectScope::File {
            mount: "s3://b",
            path: "d/f2",
        };
        assert!(!pieces.starts_with(&other.name_prefix()));
    }
    use std::collections::HashSet;

    #[test]
    fn scopes_hold_exactly_their_objects() {
        let name = |mount, path| {
            ObjectId {
                mount,
                path,
                version: "e1",
            }
            .name()
        };
        let objects = [
            name("s3://b", "a/x"),
            name("s3://b", "a/xy"),
            name("s3://b", "ab/z"),
            name("s3://b/p", "a/x"),
            name("s3://b", "a"),
        ];
        let held = |scope: ObjectScope| -> Vec<usize> {
            let prefix = scope.name_prefix();
            (0..objects.len())
                .filter(|&i| objects[i].starts_with(&prefix))
                .collect()
        };
        assert_eq!(
            held(ObjectScope::File {
                mount: "s3://b",
                path: "a/x"
            }),
            [0]
        );
        assert_eq!(
            held(ObjectScope::Dir {
                mount: "s3://b",
                path: "a"
            }),
            [0, 1]
        );
        assert_eq!(
            held(ObjectScope::Dir {
                mount: "s3://b",
                path: ""
            }),
            [0, 1, 2, 4]
        );
        assert_eq!(held(ObjectScope::Mount("s3://b")), [0, 1, 2, 4]);
        assert_eq!(held(ObjectScope::Mount("s3://b/p")), [3]);
        // The spelling of the names disk tiers already hold.
        assert_eq!(&*name("s3://b", "a/x"), "s3://b\u{1}a/x\u{1}e1");
    }

    #[test]
    fn hash_is_stable_and_32_hex_digits() {
        let k = BlockKey::new("s3://bucket/train/a.tar@e1234", 7);
        let hex = k.hash_hex();
        assert_eq!(hex.len(), 32);
        assert!(
            hex.bytes()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
        // Pinned: file names written by one version must be found by the next.
        assert_eq!(
            hex,
            BlockKey::new("s3://bucket/train/a.tar@e1234", 7).hash_hex()
        );
        assert_eq!(BlockKey::new("", 0).hash_hex(), PINNED_EMPTY);
    }

    const PINNED_EMPTY: &str = "a5e0dba6c385580a141e87993f0d71e3";

    #[test]
    fn hash_separates_object_and_index() {
        // Length prefix: ("ab", n) and ("a", m) never share bytes by concatenation.
        let mut seen = HashSet::new();
        for obj in ["", "a", "ab", "abc", "b", "ba"] {
            for index in 0..1000 {
                assert!(
                    seen.insert(BlockKey::new(obj, index).hash128()),
                    "collision at {obj:?}#{index}"
                );
            }
        }
        assert_ne!(
            BlockKey::new("x", 1).hash128(),
            BlockKey::new("x", 1 << 8).hash128()
        );
    }

    #[test]
    fn display() {
        assert_eq!(BlockKey::new("m/p@v", 3).to_string(), "m/p@v#3");
    }
}
