//! The Node labels and annotation by which the node plugin tells the controller, the scheduler
//! and the webhook which Datasets it serves and where its cache endpoint is.

use sha2::{Digest, Sha256};

/// Node annotation the node plugin writes: `HOST:PORT` of its `fluid.v1.CacheNode` endpoint
/// (plain gRPC), where the controller asks for a Dataset's cache figures, warm-up and eviction.
pub const CACHE_ENDPOINT_ANNOTATION: &str = "fluid.io/cache-endpoint";
/// Every node label key made by [`dataset_label_key`] starts with this.
pub const DATASET_LABEL_PREFIX: &str = "fluid.io/s-";
/// The value of a dataset label while the node holds cache for the Dataset.
pub const DATASET_LABEL_VALUE: &str = "true";
/// Longest name part of a label key (the part after `prefix/`).
const MAX_LABEL_NAME: usize = 63;
/// Hex digits of sha256 in a shortened label key.
const LABEL_HASH_HEX: usize = 8;

/// The node label key that says a node holds cache for a Dataset: `fluid.io/s-<namespace>-<name>`,
/// Fluid's own convention (the scheduler and the admission webhook prefer nodes with it).
///
/// A label name (after `fluid.io/`) has at most 63 characters. A longer one keeps its first 54
/// characters (less trailing `-`, `.`, `_`) and ends with `-` and the first 8 hex digits of
/// sha256(`<namespace>/<name>`), so it stays within the limit, ends alphanumeric and still tells
/// Datasets apart. The short form is ambiguous when names hold `-` (`a-b/c` and `a/b-c`), as
/// it is upstream; keep it for compatibility. Namespace and name are Kubernetes object names,
/// so every character is valid in a label name.
pub fn dataset_label_key(namespace: &str, name: &str) -> String {
    format!(
        "fluid.io/{}",
        fit_label(format!("s-{namespace}-{name}"), namespace, name)
    )
}

/// Node label set while the node serves a Dataset with `placement: Exclusive` (Fluid's
/// `fluid_exclusive`); its value is [`exclusive_label_value`]. Pods of other Datasets are kept
/// off such nodes (webhook) and their volumes are refused there (node plugin).
pub const EXCLUSIVE_LABEL: &str = "fluid_exclusive";

/// The value of [`EXCLUSIVE_LABEL`]: `<namespace>_<name>` (Fluid's), shortened with a hash
/// like [`dataset_label_key`] when it would pass 63 characters.
pub fn exclusive_label_value(namespace: &str, name: &str) -> String {
    fit_label(format!("{namespace}_{name}"), namespace, name)
}

/// `label` if it is short enough for a label name (or value), else its head and a hash of
/// `<namespace>/<name>`.
fn fit_label(label: String, namespace: &str, name: &str) -> String {
    if label.len() <= MAX_LABEL_NAME {
        return label;
    }
    let digest = Sha256::digest(format!("{namespace}/{name}").as_bytes());
    let hash: String = digest
        .iter()
        .take(LABEL_HASH_HEX / 2)
        .map(|b| format!("{b:02x}"))
        .collect();
    let keep = MAX_LABEL_NAME - 1 - LABEL_HASH_HEX;
    // Object names are ASCII; the boundary search only keeps odd input from panicking.
    let cut = (0..=keep)
        .rev()
        .find(|&i| label.is_char_boundary(i))
        .unwrap_or(0);
    let head = label[..cut].trim_end_matches(|c: char| !c.is_ascii_alphanumeric());
    format!("{head}-{hash}")
}

/// Whether `s` is a valid label name (the part of a key after `prefix/`): at most 63
/// characters of `[-A-Za-z0-9_.]`, alphanumeric at both ends.
pub fn is_label_name(s: &str) -> bool {
    let b = s.as_bytes();
    let (Some(first), Some(last)) = (b.first(), b.last()) else {
        return false;
    };
    b.len() <= MAX_LABEL_NAME
        && first.is_ascii_alphanumeric()
        && last.is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn label_name(key: &str) -> &str {
        key.strip_prefix("fluid.io/").unwrap()
    }

    #[test]
    fn dataset_label_keys() {
        assert_eq!(
            dataset_label_key("default", "imagenet"),
            "fluid.io/s-default-imagenet"
        );
        assert!(dataset_label_key("default", "imagenet").starts_with(DATASET_LABEL_PREFIX));

        // Exactly 63 characters after the prefix: kept as is. One more: shortened to 63.
        let name63 = "n".repeat(63 - "s-ns-".len());
        let key = dataset_label_key("ns", &name63);
        assert_eq!(key, format!("fluid.io/s-ns-{name63}"));
        assert_eq!(label_name(&key).len(), 63);
        let name64 = format!("{name63}x");
        let key = dataset_label_key("ns", &name64);
        assert_eq!(label_name(&key).len(), 63, "{key}");
        assert_ne!(key, format!("fluid.io/s-ns-{name64}"));

        // Long names: the first 8 hex digits of sha256("ns/name") at the end.
        let (ns, name) = ("a".repeat(63), "b".repeat(253));
        let key = dataset_label_key(&ns, &name);
        let hash = Sha256::digest(format!("{ns}/{name}").as_bytes());
        let hex = format!(
            "{:02x}{:02x}{:02x}{:02x}",
            hash[0], hash[1], hash[2], hash[3]
        );
        assert_eq!(key, format!("fluid.io/s-{}-{hex}", &ns[..52]));
        assert!(key.starts_with(DATASET_LABEL_PREFIX));

        // Deterministic, and distinct for names that share the kept prefix.
        assert_eq!(dataset_label_key(&ns, &name), key);
        assert_ne!(dataset_label_key(&ns, &format!("{name}c")), key);
        assert_ne!(dataset_label_key("x", &name), dataset_label_key("y", &name));

        // Valid whatever the cut lands on (a '-' or '.' just before the hash is dropped).
        for (ns, name) in [
            ("default".to_string(), "imagenet".to_string()),
            ("ns".to_string(), name63.clone()),
            ("ns".to_string(), name64.clone()),
            (ns.clone(), name.clone()),
            (
                "kube-system".into(),
                format!("{}-.-{}", "d".repeat(40), "e".repeat(40)),
            ),
            ("x".into(), format!("{}.{}", "a".repeat(49), "z".repeat(30))),
            ("x".into(), format!("{}-{}", "a".repeat(50), "z".repeat(30))),
        ] {
            let key = dataset_label_key(&ns, &name);
            assert!(is_label_name(label_name(&key)), "{ns}/{name} -> {key}");
        }
        assert!(
            !dataset_label_key("x", &format!("{}-{}", "a".repeat(50), "z".repeat(30)))
                .contains("--")
        );
    }

    #[test]
    fn label_names() {
        for good in ["a", "s-default-x", "A_b.c-9", &"z".repeat(63)] {
            assert!(is_label_name(good), "{good}");
        }
        for bad in ["", "-a", "a-", "a/b", "a b", &"z".repeat(64), "ä"] {
            assert!(!is_label_name(bad), "{bad}");
        }
    }

    #[test]
    fn exclusive_label_values() {
        assert_eq!(exclusive_label_value("ml", "imagenet"), "ml_imagenet");
        let long = exclusive_label_value(&"n".repeat(40), &"d".repeat(40));
        assert!(is_label_name(&long) && long.len() <= 63, "{long}");
        assert_ne!(
            long,
            exclusive_label_value(&"n".repeat(40), &"d".repeat(41))
        );
    }
}
