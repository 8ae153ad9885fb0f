//! What the node's administrator allows a tenant's volume to do on this node. A volume context
//! is written by whoever may create a Dataset or a StorageClass parameter; the daemons act on
//! it as root, so everything in it that touches the node is checked here, at NodeStage.
//!
//! - `local://` mount points: a daemon serving one reads the node's own files as root and
//!   shows them to the tenant's pods (the kubelet's pod volumes, service-account tokens,
//!   Secrets). So a local root must lie under a directory the administrator listed
//!   (`--local-roots`), after resolving symlinks; none is listed by default. The local source
//!   then never resolves a path out of its root (`openat2` with `RESOLVE_BENEATH`).
//! - Cloud identity: an S3/OSS mount without keys would be read with the AWS default chain,
//!   that is the node's own identity (instance role, environment, files): any tenant could
//!   read any bucket the platform can. Keys must come with the volume (a Secret of the
//!   Dataset's namespace) unless the administrator lends the node's identity
//!   (`--allow-ambient-credentials`).
//! - Credentials from a Secret: an S3 client sends the access key id and session token to its
//!   endpoint, which a Dataset's author chooses; with `--kubernetes` they go only to an
//!   endpoint the administrator lists (`--credential-endpoints`) or the Secret sets itself.
//! - Cache tiers: a volume's disk tier folders are made, filled and removed by root, so they
//!   must lie under the node's cache roots (`--cache-roots` and its own `--tier` folders), with
//!   no `..`; and the tiers of all volumes on the node share its budgets (`--mem-budget`,
//!   `--disk-budget`), so one tenant cannot take the node's memory or disk.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use fluid_volume::context::VolumeContext;
use fluid_volume::dataset::{self, Mount};
use fluid_volume::endpoints::{EndpointPattern, refused_endpoint};
use fluid_volume::mountpoint::Store;
use fluid_volume::roots::{describe, lies_under};
use fluid_volume::size::human_size;
use fluid_volume::tier::{TierSpec, Tiers};

use crate::config::Config;
use crate::error::{Error, Result};

/// Everything this node checks of a volume before staging it.
pub fn check_volume(
    context: &VolumeContext,
    secrets: &HashMap<String, String>,
    config: &Config,
) -> Result<()> {
    context.validate()?;
    let mounts = dataset::resolve(context.mounts_with_secrets(secrets)?, "mounts")?;
    check_local_roots(&mounts, &config.local_roots)?;
    if config.kubernetes {
        check_credential_endpoints(context, secrets, &config.credential_endpoints)?;
    }
    check_credentials(
        &mounts,
        config.allow_ambient_credentials,
        &config.hdfs_users,
    )?;
    match &context.tiers {
        Some(tiers) => check_cache_roots(tiers, &config.cache_roots()),
        None => Ok(()),
    }
}

/// Refuses disk tiers outside the cache roots (compared as written: `..` is refused, and the
/// roots are the administrator's, so no link inside them leads out).
pub fn check_cache_roots(tiers: &Tiers, roots: &[PathBuf]) -> Result<()> {
    match tiers
        .disk_dirs()
        .into_iter()
        .find(|d| !lies_under(d, roots))
    {
        Some(dir) => Err(Error::Denied(format!(
            "tier folder {}: not under a cache root of this node ({}); the administrator lists \
             them with --cache-roots / the chart's node.extraCacheDirs",
            dir.display(),
            describe(roots)
        ))),
        None => Ok(()),
    }
}

/// Memory and disk a volume's tiers hold at most: (mem, disk) bytes.
pub fn tier_bytes(tiers: &Tiers) -> (u64, u64) {
    tiers.specs().iter().fold((0, 0), |(mem, disk), t| match t {
        TierSpec::Mem { quota } => (mem + quota, disk),
        TierSpec::Disk { quota, .. } => (mem, disk + quota),
    })
}

/// Refuses a volume whose tiers would take the node past its budgets, given what the other
/// volumes on the node hold (`others`: their (mem, disk) bytes).
pub fn check_budget(tiers: &Tiers, others: &[(u64, u64)], config: &Config) -> Result<()> {
    let (mem, disk) = tier_bytes(tiers);
    let (mem_held, disk_held) = others
        .iter()
        .fold((0, 0), |(m, d), (om, od)| (m + om, d + od));
    let over = |what: &str, flag: &str, budget: Option<u64>, want: u64, held: u64| match budget {
        Some(b) if want.saturating_add(held) > b => Err(Error::ResourceExhausted(format!(
            "the volume's {what} tiers ({}) do not fit this node's {what} budget ({} of {} \
             taken by {} other volume(s), {flag}): give the volume smaller tiers or the node \
             a larger budget",
            human_size(want),
            human_size(held),
            human_size(b),
            others.len()
        ))),
        _ => Ok(()),
    };
    over("memory", "--mem-budget", config.mem_budget, mem, mem_held)?;
    over("disk", "--disk-budget", config.disk_budget, disk, disk_held)
}

/// Refuses an S3/OSS mount without keys unless the node's own identity may be lent, and an
/// HDFS user the administrator did not list.
pub fn check_credentials(
    mounts: &[Mount],
    allow_ambient: bool,
    hdfs_users: &[String],
) -> Result<()> {
    match mounts.iter().find_map(|m| {
        let why = m.mount_point.refused_identity(allow_ambient, hdfs_users)?;
        Some(format!("{}: {why}", m.mount_point.url))
    }) {
        Some(why) => Err(Error::Denied(why)),
        None => Ok(()),
    }
}

/// Refuses a mount whose credentials from the node-stage Secret would go to an endpoint the
/// volume context chose (a Dataset's author) that the administrator does not allow.
pub fn check_credential_endpoints(
    context: &VolumeContext,
    secrets: &HashMap<String, String>,
    allowed: &[EndpointPattern],
) -> Result<()> {
    let with_secrets = context.mounts_with_secrets(secrets)?;
    for (plain, full) in context.mounts.iter().zip(&with_secrets) {
        let from_secrets: BTreeMap<String, String> = full
            .options
            .iter()
            .filter(|(k, v)| plain.options.get(*k) != Some(*v))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if let Some(why) = refused_endpoint(&plain.options, &from_secrets, allowed) {
            return Err(Error::Denied(format!("mount {:?}: {why}", plain.name)));
        }
    }
    Ok(())
}

/// Refuses any `local://` mount whose directory is not under one of `allowed`.
pub fn check_local_roots(mounts: &[Mount], allowed: &[PathBuf]) -> Result<()> {
    for m in mounts {
        let Store::Local { root } = &m.mount_point.store else {
            continue;
        };
        let url = &m.mount_point.url;
        if allowed.is_empty() {
            return Err(Error::Denied(format!(
                "{url}: local:// mount points are not allowed on this node (the administrator \
                 lists the directories they may use with --local-roots / the chart's \
                 node.localRoots)"
            )));
        }
        let real = std::fs::canonicalize(root)
            .map_err(|e| Error::invalid("mountPoint", format!("{url}: {e}")))?;
        if !allowed.iter().any(|a| under(&real, a)) {
            return Err(Error::Denied(format!(
                "{url}: {} is not under a directory allowed for local:// mount points ({})",
                real.display(),
                describe(allowed)
            )));
        }
    }
    Ok(())
}

/// Whether `path` (resolved) lies at or under `root` once `root`'s own links are resolved.
fn under(path: &Path, root: &Path) -> bool {
    std::fs::canonicalize(root).is_ok_and(|r| path.starts_with(r))
}

#[cfg(test)]
mod tests {
    use super::*;
    use fluid_volume::dataset::{MountSpec, resolve};

    fn mounts(url: &str) -> Vec<Mount> {
        let spec = MountSpec {
            mount_point: url.into(),
            name: "m".into(),
            ..Default::default()
        };
        resolve(vec![spec], "mounts").unwrap()
    }

    #[test]
    fn local_roots_must_lie_under_an_allowed_directory() {
        let dir = tempfile::tempdir().unwrap();
        let allowed = dir.path().join("data");
        std::fs::create_dir_all(allowed.join("set")).unwrap();
        std::os::unix::fs::symlink("/var", allowed.join("out")).unwrap();
        let inside = format!("local://{}/set", allowed.display());
        let via_link = format!("local://{}/out", allowed.display());
        let host = "local:///var/lib/kubelet/pods";

        // Nothing allowed: every local:// mount is refused, naming the flag.
        let err = check_local_roots(&mounts(&inside), &[]).unwrap_err();
        assert!(
            matches!(&err, Error::Denied(m) if m.contains("--local-roots")),
            "{err}"
        );
        let ok = [allowed.clone()];
        check_local_roots(&mounts(&inside), &ok).unwrap();
        for url in [host, via_link.as_str(), "local:///proc/1/root"] {
            let err = check_local_roots(&mounts(url), &ok).unwrap_err();
            assert!(
                matches!(err, Error::Denied(_) | Error::Invalid { .. }),
                "{url}: {err}"
            );
        }
        // Other stores are not this check's business.
        check_local_roots(&mounts("s3://bucket/x"), &[]).unwrap();
    }

    #[test]
    fn keyless_s3_mounts_need_the_administrators_consent() {
        let keyless = mounts("s3://bucket/x");
        let err = check_credentials(&keyless, false, &[]).unwrap_err();
        assert!(
            matches!(&err, Error::Denied(m) if m.contains("--allow-ambient-credentials")),
            "{err}"
        );
        check_credentials(&keyless, true, &[]).unwrap();
        let mut keyed = mounts("s3://bucket/x");
        keyed[0]
            .mount_point
            .options
            .insert("access-key".into(), "AKID".into());
        keyed[0]
            .mount_point
            .options
            .insert("secret-key".into(), "s3cr3t".into());
        check_credentials(&keyed, false, &[]).unwrap();
        check_credentials(&mounts("local:///x"), false, &[]).unwrap();
    }

    #[test]
    fn secret_credentials_go_to_allowed_endpoints_only() {
        use fluid_volume::endpoints::EndpointPattern;
        let context = |endpoint: &str| VolumeContext {
            mounts: vec![MountSpec {
                mount_point: "s3://bucket".into(),
                name: "data".into(),
                options: [("endpoint".to_string(), endpoint.to_string())].into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        let secrets = HashMap::from([
            ("access-key".to_string(), "AKID".to_string()),
            ("secret-key".to_string(), "s3cr3t".to_string()),
        ]);
        let allowed = [EndpointPattern::parse("http://127.0.0.1:8333").unwrap()];
        let err = check_credential_endpoints(&context("http://evil.example"), &secrets, &allowed)
            .unwrap_err();
        assert!(
            matches!(&err, Error::Denied(m) if m.contains("option endpoint")
                && m.contains("--credential-endpoints") && !m.contains("AKID")),
            "{err}"
        );
        check_credential_endpoints(&context("http://127.0.0.1:8333"), &secrets, &allowed).unwrap();
        // The node-stage Secret names the endpoint itself.
        let mut pinned = secrets.clone();
        pinned.insert("data/endpoint".into(), "http://s3.internal".into());
        check_credential_endpoints(&context("http://evil.example"), &pinned, &[]).unwrap();
    }

    #[test]
    fn hdfs_users_are_the_administrators_list() {
        let mut as_hdfs = mounts("hdfs://namenode:8020/data");
        // No user named: read as the daemon's own user, as before.
        check_credentials(&as_hdfs, false, &[]).unwrap();
        as_hdfs[0]
            .mount_point
            .options
            .insert("hdfs.user".into(), "hdfs".into());
        let err = check_credentials(&as_hdfs, false, &[]).unwrap_err();
        assert!(
            matches!(&err, Error::Denied(m)
                if m.contains("\"hdfs\"") && m.contains("--hdfs-users")
                    && m.starts_with("hdfs://namenode:8020/data: ")),
            "{err}"
        );
        check_credentials(&as_hdfs, false, &["alice".into()]).unwrap_err();
        check_credentials(&as_hdfs, false, &["alice".into(), "hdfs".into()]).unwrap();
        check_credentials(&as_hdfs, false, &["*".into()]).unwrap();
    }

    fn tiers(specs: &[&str]) -> Tiers {
        Tiers::parse_each(specs).unwrap()
    }

    #[test]
    fn disk_tiers_lie_under_the_cache_roots() {
        let roots = [PathBuf::from("/var/cache/fluid")];
        check_cache_roots(&tiers(&["mem:1GiB"]), &[]).unwrap();
        check_cache_roots(&tiers(&["ssd:/var/cache/fluid/a:1GiB"]), &roots).unwrap();
        // (`..` does not even parse as a tier: fluid_volume::tier.)
        for bad in ["ssd:/var/cache/fluidx:1GiB", "hdd:/proc/1/root/etc:1GiB"] {
            let err = check_cache_roots(&tiers(&[bad]), &roots).unwrap_err();
            assert!(
                matches!(&err, Error::Denied(m) if m.contains("--cache-roots")),
                "{bad}: {err}"
            );
        }
        let err = check_cache_roots(&tiers(&["ssd:/var/cache/fluid/a:1GiB"]), &[]).unwrap_err();
        assert!(err.to_string().contains("(none)"), "{err}");
    }

    #[test]
    fn tiers_share_the_nodes_budgets() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let config = |flags: &[&str]| {
            let mut args = vec!["fluid-csi-node", "--nodeid", "n1", "--state-dir"];
            args.push(state.to_str().unwrap());
            args.extend_from_slice(flags);
            Config::try_from_args(args).unwrap()
        };
        let want = tiers(&["mem:64MiB", "ssd:/c/v:10GiB"]);
        assert_eq!(tier_bytes(&want), (64 << 20, 10 << 30));
        // No budget: no limit.
        check_budget(&want, &[(1 << 40, 1 << 40)], &config(&[])).unwrap();
        let cfg = config(&["--mem-budget", "100MiB", "--disk-budget", "15GiB"]);
        check_budget(&want, &[(32 << 20, 0)], &cfg).unwrap();
        let err = check_budget(&want, &[(32 << 20, 0), (16 << 20, 0)], &cfg).unwrap_err();
        assert!(
            matches!(&err, Error::ResourceExhausted(m)
                if m.contains("memory budget") && m.contains("--mem-budget")),
            "{err}"
        );
        let err = check_budget(&want, &[(0, 6 << 30)], &cfg).unwrap_err();
        assert!(
            matches!(&err, Error::ResourceExhausted(m) if m.contains("--disk-budget")),
            "{err}"
        );
        assert!(
            Config::try_from_args(["fluid-csi-node", "--nodeid", "n", "--mem-budget", "lots"])
                .is_err()
        );
    }
}
