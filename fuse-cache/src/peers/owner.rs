//! Which member of a Dataset's nodes owns a block: rendezvous (highest random weight)
//! hashing. Every member scores every key with a hash of (member, key) and the highest
//! score owns it, so each node computes the same owner from the same member list, and a
//! member joining or leaving moves only the keys it wins or held (about 1/n of them).

use crate::cache::{BlockKey, mix64, stable_hash64};

/// A node serving the Dataset: its name (the Kubernetes node, or a peers-file name) and the
/// cache endpoint its peers ask for blocks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    pub name: String,
    pub endpoint: String,
}

/// The members, each with the hash of its name.
#[derive(Clone, Debug, Default)]
pub struct Owners {
    members: Vec<(Member, u64)>,
}

impl Owners {
    /// Owners among `members`; a name given twice counts once (the last endpoint wins).
    pub fn new(members: impl IntoIterator<Item = Member>) -> Self {
        let mut by_name: Vec<(Member, u64)> = Vec::new();
        for m in members {
            let h = stable_hash64(m.name.as_bytes());
            match by_name.iter_mut().find(|(o, _)| o.name == m.name) {
                Some(slot) => *slot = (m, h),
                None => by_name.push((m, h)),
            }
        }
        by_name.sort_by(|a, b| a.0.name.cmp(&b.0.name));
        Owners { members: by_name }
    }

    pub fn members(&self) -> impl Iterator<Item = &Member> {
        self.members.iter().map(|(m, _)| m)
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// The member that owns `key`; `None` without members.
    pub fn owner(&self, key: &BlockKey) -> Option<&Member> {
        let k = key_hash(key);
        self.members
            .iter()
            .max_by_key(|(m, h)| (weight(k, *h), m.name.as_str()))
            .map(|(m, _)| m)
    }

    /// Every member, the owner of `key` first, then the one that would own it if the owner
    /// left, and so on: where to ask when the owner does not answer.
    pub fn ranked(&self, key: &BlockKey) -> Vec<&Member> {
        let k = key_hash(key);
        let mut ranked: Vec<(u64, &Member)> = self
            .members
            .iter()
            .map(|(m, h)| (weight(k, *h), m))
            .collect();
        ranked.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| b.1.name.cmp(&a.1.name)));
        ranked.into_iter().map(|(_, m)| m).collect()
    }
}

fn key_hash(key: &BlockKey) -> u64 {
    let h = key.hash128();
    (h as u64) ^ ((h >> 64) as u64)
}

/// The score of a member for a key: the two hashes mixed together, so the order of members
/// differs from key to key.
fn weight(key: u64, member: u64) -> u64 {
    mix64(key ^ mix64(member))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(names: &[&str]) -> Vec<Member> {
        names
            .iter()
            .map(|n| Member {
                name: n.to_string(),
                endpoint: format!("tcp://{n}:7788"),
            })
            .collect()
    }

    fn keys(n: u64) -> Vec<BlockKey> {
        (0..n)
            .map(|i| BlockKey::new(format!("s3:b/train/f{}", i / 7), i % 7))
            .collect()
    }

    fn owner_names(o: &Owners, keys: &[BlockKey]) -> Vec<String> {
        keys.iter()
            .map(|k| o.owner(k).map(|m| m.name.clone()).unwrap_or_default())
            .collect()
    }

    #[test]
    fn every_node_computes_the_same_owner_whatever_the_order() {
        let ks = keys(2000);
        let a = Owners::new(members(&["node-a", "node-b", "node-c"]));
        let b = Owners::new(members(&["node-c", "node-a", "node-b", "node-a"]));
        assert_eq!(owner_names(&a, &ks), owner_names(&b, &ks));
        assert_eq!(b.members().count(), 3);
        assert!(Owners::default().owner(&ks[0]).is_none());
    }

    #[test]
    fn keys_spread_evenly_and_a_change_moves_only_its_share() {
        let ks = keys(30_000);
        let three = Owners::new(members(&["node-a", "node-b", "node-c"]));
        let before = owner_names(&three, &ks);
        for name in ["node-a", "node-b", "node-c"] {
            let share = before.iter().filter(|o| *o == name).count() as f64 / ks.len() as f64;
            assert!((0.30..0.37).contains(&share), "{name}: {share}");
        }
        // node-b leaves: only its keys move, and they spread over the others.
        let two = Owners::new(members(&["node-a", "node-c"]));
        let after = owner_names(&two, &ks);
        for (b, a) in before.iter().zip(&after) {
            if b != "node-b" {
                assert_eq!(a, b, "a key of a remaining member moved");
            }
        }
        // node-d joins: about a quarter of the keys move, all to it.
        let four = Owners::new(members(&["node-a", "node-b", "node-c", "node-d"]));
        let joined = owner_names(&four, &ks);
        let moved: Vec<_> = before.iter().zip(&joined).filter(|(b, a)| b != a).collect();
        assert!(moved.iter().all(|(_, a)| *a == "node-d"));
        let share = moved.len() as f64 / ks.len() as f64;
        assert!((0.22..0.28).contains(&share), "{share}");
    }

    #[test]
    fn ranked_puts_the_owner_first_then_the_next_owner() {
        let ks = keys(500);
        let three = Owners::new(members(&["node-a", "node-b", "node-c"]));
        for k in &ks {
            let ranked = three.ranked(k);
            assert_eq!(ranked.len(), 3);
            assert_eq!(Some(ranked[0]), three.owner(k));
            let without: Vec<Member> = members(&["node-a", "node-b", "node-c"])
                .into_iter()
                .filter(|m| m.name != ranked[0].name)
                .collect();
            assert_eq!(Owners::new(without).owner(k), Some(ranked[1]));
        }
    }
}
