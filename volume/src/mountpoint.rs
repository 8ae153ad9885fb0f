//! The one parser of mount point URLs: `s3://bucket/prefix`, `oss://bucket/prefix`,
//! `hdfs://host:port/path` and `local:///abs/path`.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use crate::error::{Error, Result};
use crate::options::{self, MountOption, redacted};

/// Where a mount's data lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Store {
    /// An S3 API: AWS, Ceph RGW, SeaweedFS, or Aliyun OSS (`oss` true) on its S3 endpoint.
    S3 {
        bucket: String,
        prefix: String,
        oss: bool,
    },
    /// HDFS, `namenode` as `hdfs://host:port`.
    Hdfs { namenode: String, path: String },
    /// A POSIX directory on this machine.
    Local { root: PathBuf },
}

/// A parsed mount point with its options (endpoint, region, credentials, ...).
#[derive(Clone, PartialEq, Eq)]
pub struct MountPoint {
    pub url: String,
    pub store: Store,
    pub options: BTreeMap<String, String>,
}

impl fmt::Debug for MountPoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MountPoint")
            .field("url", &self.url)
            .field("options", &redacted(&self.options))
            .finish()
    }
}

impl fmt::Display for MountPoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.url)
    }
}

impl MountPoint {
    /// Parses `url`; `field` names it in errors (e.g. `mounts[1].mountPoint`).
    pub fn parse(url: &str, options: BTreeMap<String, String>, field: &str) -> Result<Self> {
        let bad = |msg: &str| Error::invalid(field, format!("{url:?}: {msg}"));
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| bad("expected SCHEME://..., e.g. s3://bucket/prefix"))?;
        if url.contains('@') && scheme != "local" {
            return Err(Error::invalid(
                field,
                "credentials in the URL are not allowed; pass them as options or secrets",
            ));
        }
        let store = match scheme {
            "s3" | "oss" => {
                let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
                if bucket.is_empty() {
                    return Err(bad("missing bucket name"));
                }
                if !bucket.chars().all(|c| {
                    c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.' || c == '_'
                }) {
                    return Err(bad(
                        "bucket names are lowercase letters, digits, '-', '.' and '_'",
                    ));
                }
                Store::S3 {
                    bucket: bucket.to_string(),
                    prefix: normalize_prefix(prefix),
                    oss: scheme == "oss",
                }
            }
            "hdfs" => {
                let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
                if authority.is_empty() {
                    return Err(bad("missing namenode host:port"));
                }
                Store::Hdfs {
                    namenode: format!("hdfs://{authority}"),
                    path: format!("/{}", normalize_prefix(path)),
                }
            }
            "local" => {
                if !rest.starts_with('/') {
                    return Err(bad("local paths are absolute: local:///abs/path"));
                }
                let root = PathBuf::from(rest);
                if root
                    .components()
                    .any(|c| matches!(c, std::path::Component::ParentDir))
                {
                    return Err(bad("'..' is not allowed"));
                }
                Store::Local { root }
            }
            other => {
                return Err(bad(&format!(
                    "unsupported scheme {other:?}; use s3, oss, hdfs or local"
                )));
            }
        };
        let mp = MountPoint {
            url: url.to_string(),
            store,
            options,
        };
        mp.check_options()?;
        Ok(mp)
    }

    /// The rules on options that hold whatever the credentials: they are checked wherever a
    /// mount point is parsed, at CreateVolume as on the node.
    fn check_options(&self) -> Result<()> {
        if let Store::S3 { oss, .. } = self.store {
            if oss && self.option(&options::s3::ENDPOINT).is_none() {
                return Err(Error::invalid(
                    format!("option {}", options::s3::ENDPOINT.name()),
                    format!(
                        "{}: oss:// needs an endpoint among the options, e.g. oss-cn-hangzhou.aliyuncs.com",
                        self.url
                    ),
                ));
            }
            self.bool_option(&options::s3::PATH_STYLE)?;
        }
        Ok(())
    }

    /// The first non-empty value of an option by any of its spellings, trimmed.
    /// Whether the store would be read with whatever identity the reading process has (an S3
    /// or OSS mount without keys falls back to the AWS default chain: environment, files,
    /// instance role). Servers that act for tenants refuse that unless told otherwise.
    pub fn uses_ambient_credentials(&self) -> bool {
        use crate::options::s3::{ACCESS_KEY, SECRET_KEY};
        matches!(self.store, Store::S3 { .. })
            && self.option(&ACCESS_KEY).is_none()
            && self.option(&SECRET_KEY).is_none()
    }

    /// The HDFS user an hdfs:// mount acts as (its `user` option). With simple authentication
    /// the namenode believes whatever name it is told, so servers that act for tenants accept
    /// only the names they were told to.
    pub fn hdfs_user(&self) -> Option<&str> {
        match self.store {
            Store::Hdfs { .. } => self.option(&crate::options::hdfs::USER),
            _ => None,
        }
    }

    /// Why a server acting for tenants may not read this mount as it is written: it would lend
    /// the server's own cloud identity (`allow_ambient` off), or act as an HDFS user not in
    /// `hdfs_users` (`*` allows any). The message (without the URL) names the flags that allow
    /// it.
    pub fn refused_identity(&self, allow_ambient: bool, hdfs_users: &[String]) -> Option<String> {
        use crate::options::s3::{ACCESS_KEY, SECRET_KEY};
        if !allow_ambient && self.uses_ambient_credentials() {
            return Some(format!(
                "no {} and {} are given (put them in a Secret of the Dataset's namespace, named \
                 by encryptOptions or the StorageClass's node-stage secret); Fluid does not lend \
                 its own cloud identity to a Dataset unless the administrator allows it \
                 (--allow-ambient-credentials / the chart's allowAmbientCredentials)",
                ACCESS_KEY.name(),
                SECRET_KEY.name()
            ));
        }
        match self.hdfs_user() {
            Some(user) if !hdfs_users.iter().any(|u| u == "*" || u == user) => Some(format!(
                "acting as HDFS user {user:?} is not allowed (the namenode believes any name it \
                 is told); the administrator lists the users Datasets may name with \
                 --hdfs-users / the chart's hdfsUsers"
            )),
            _ => None,
        }
    }

    pub fn option(&self, option: &MountOption) -> Option<&str> {
        option
            .names
            .iter()
            .filter_map(|n| self.options.get(*n))
            .map(|v| v.trim())
            .find(|v| !v.is_empty())
    }

    /// A boolean option; the error names it for a value that is not a boolean.
    pub fn bool_option(&self, option: &MountOption) -> Result<Option<bool>> {
        match self.option(option) {
            None => Ok(None),
            Some("true" | "1" | "yes") => Ok(Some(true)),
            Some("false" | "0" | "no") => Ok(Some(false)),
            Some(v) => Err(Error::invalid(
                format!("option {}", option.name()),
                format!("{v:?} is not true or false"),
            )),
        }
    }
}

/// `a//b/` -> `a/b`: a prefix without leading, trailing or doubled slashes.
fn normalize_prefix(p: &str) -> String {
    p.split('/')
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join("/")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(url: &str) -> Result<MountPoint> {
        MountPoint::parse(url, BTreeMap::new(), "mountPoint")
    }

    #[test]
    fn parses_each_scheme() {
        assert_eq!(
            parse("s3://imagenet/train//v1/").unwrap().store,
            Store::S3 {
                bucket: "imagenet".into(),
                prefix: "train/v1".into(),
                oss: false
            }
        );
        assert_eq!(
            MountPoint::parse(
                "oss://b",
                BTreeMap::from([("endpoint".into(), "oss-cn-hangzhou.aliyuncs.com".into())]),
                "mountPoint"
            )
            .unwrap()
            .store,
            Store::S3 {
                bucket: "b".into(),
                prefix: "".into(),
                oss: true
            }
        );
        assert_eq!(
            parse("hdfs://127.0.0.1:9820/data/x").unwrap().store,
            Store::Hdfs {
                namenode: "hdfs://127.0.0.1:9820".into(),
                path: "/data/x".into()
            }
        );
        assert_eq!(
            parse("hdfs://nn:8020").unwrap().store,
            Store::Hdfs {
                namenode: "hdfs://nn:8020".into(),
                path: "/".into()
            }
        );
        assert_eq!(
            parse("local:///srv/data").unwrap().store,
            Store::Local {
                root: "/srv/data".into()
            }
        );
    }

    #[test]
    fn refuses_bad_urls_naming_the_field() {
        for bad in [
            "",
            "s3:/b",
            "s3://",
            "s3://Upper/x",
            "ftp://h/x",
            "local://rel",
            "local:///a/../b",
            "hdfs:///x",
            "s3://ak:sk@b/x",
        ] {
            let err = parse(bad).expect_err(bad).to_string();
            assert!(err.contains("mountPoint"), "{bad}: {err}");
        }
    }

    #[test]
    fn oss_needs_an_endpoint_and_path_style_a_boolean() {
        let with = |k: &str, v: &str| BTreeMap::from([(k.to_string(), v.to_string())]);
        let err = parse("oss://b/x").unwrap_err().to_string();
        assert!(
            err.contains("option endpoint") && err.contains("oss://"),
            "{err}"
        );
        MountPoint::parse(
            "oss://b",
            with("fs.oss.endpoint", "oss-cn-hangzhou.aliyuncs.com"),
            "m",
        )
        .unwrap();
        let err = MountPoint::parse("s3://b", with("path-style", "sometimes"), "m")
            .unwrap_err()
            .to_string();
        assert!(err.contains("option path-style"), "{err}");
        let mp = MountPoint::parse("s3://b", with("region", "  "), "m").unwrap();
        assert_eq!(mp.option(&options::s3::REGION), None, "blank is unset");
    }

    #[test]
    fn debug_redacts_secrets() {
        let opts = BTreeMap::from([
            ("access-key".to_string(), "AK".to_string()),
            ("secret-key".to_string(), "TOPSECRET".to_string()),
            ("aws.sessionToken".to_string(), "SESSIONTOKEN".to_string()),
        ]);
        let mp = MountPoint::parse("s3://b", opts, "m").unwrap();
        let shown = format!("{mp:?} {mp}");
        assert!(
            !shown.contains("TOPSECRET") && !shown.contains("SESSIONTOKEN"),
            "{shown}"
        );
        assert!(shown.contains("AK"));
    }
}
