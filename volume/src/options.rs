//! The options a mount point takes, one table per store: each option's canonical name, the
//! spellings users copy from existing Fluid/Alluxio/Hadoop Dataset specs, and whether its value
//! is a secret. The sources read their options through these entries and redaction knows the
//! secrets from them, so the two cannot drift apart.

use std::collections::BTreeMap;

/// One option of a store.
#[derive(Debug)]
pub struct MountOption {
    /// The names it is given by, the canonical one first.
    pub names: &'static [&'static str],
    /// Its value is a credential: never shown, never in a volume context, never a
    /// StorageClass parameter.
    pub secret: bool,
}

impl MountOption {
    /// The canonical name, used in messages.
    pub fn name(&self) -> &'static str {
        self.names[0]
    }

    /// Whether `key` is one of its spellings (case-insensitive, as Hadoop-style names are
    /// written in either case).
    pub fn is_named(&self, key: &str) -> bool {
        self.names.iter().any(|n| n.eq_ignore_ascii_case(key))
    }
}

/// S3 and the stores reached through its API: AWS, Ceph RGW, SeaweedFS, MinIO, Aliyun OSS.
pub mod s3 {
    use super::MountOption;

    pub const ENDPOINT: MountOption = MountOption {
        names: &["endpoint", "fs.oss.endpoint", "alluxio.underfs.s3.endpoint"],
        secret: false,
    };
    pub const REGION: MountOption = MountOption {
        names: &["region", "aws.region", "alluxio.underfs.s3.region"],
        secret: false,
    };
    pub const PATH_STYLE: MountOption = MountOption {
        names: &["path-style", "alluxio.underfs.s3.disable.dns.buckets"],
        secret: false,
    };
    /// The access key id names the account; it is not the secret half.
    pub const ACCESS_KEY: MountOption = MountOption {
        names: &["access-key", "aws.accessKeyId", "fs.oss.accessKeyId"],
        secret: false,
    };
    pub const SECRET_KEY: MountOption = MountOption {
        names: &[
            "secret-key",
            "secret-access-key",
            "aws.secretKey",
            "fs.oss.accessKeySecret",
        ],
        secret: true,
    };
    pub const SESSION_TOKEN: MountOption = MountOption {
        names: &["session-token", "aws.sessionToken", "fs.oss.securityToken"],
        secret: true,
    };

    pub const ALL: &[&MountOption] = &[
        &ENDPOINT,
        &REGION,
        &PATH_STYLE,
        &ACCESS_KEY,
        &SECRET_KEY,
        &SESSION_TOKEN,
    ];
}

/// HDFS through hdfs-native.
pub mod hdfs {
    use super::MountOption;

    pub const USER: MountOption = MountOption {
        names: &["user", "hdfs.user"],
        secret: false,
    };

    pub const ALL: &[&MountOption] = &[&USER];

    /// Hadoop settings given as options (HA name services, timeouts) are handed to the client
    /// as they are; [`super::is_secret`] still knows the credentials among them by name.
    pub const PASSTHROUGH_PREFIXES: &[&str] = &["dfs.", "hadoop.", "fs."];

    pub fn is_passthrough(key: &str) -> bool {
        PASSTHROUGH_PREFIXES.iter().any(|p| key.starts_with(p))
    }
}

/// A POSIX directory takes no options.
pub mod local {
    use super::MountOption;

    pub const ALL: &[&MountOption] = &[];
}

/// Every store's table, for checks that walk them all.
pub const STORES: &[(&str, &[&MountOption])] =
    &[("s3", s3::ALL), ("hdfs", hdfs::ALL), ("local", local::ALL)];

/// Words that make an option a credential whatever store it is for: Hadoop settings passed
/// through (`fs.s3a.secret.key`, `fs.azure.account.key.ACCOUNT`, `hadoop.security.*.password`)
/// and names no table lists yet. Matched in lower case anywhere in the name.
const SECRET_WORDS: &[&str] = &[
    "secret",
    "password",
    "passwd",
    "token",
    "private",
    "account.key",
];

/// Whether an option's value is a secret: a secret entry of any store's table by any of its
/// spellings, or a name holding one of the credential words.
pub fn is_secret(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    STORES
        .iter()
        .flat_map(|(_, table)| table.iter())
        .any(|o| o.secret && o.is_named(name))
        || SECRET_WORDS.iter().any(|w| lower.contains(w))
}

/// Whether a Dataset may give the option a Secret's value (`encryptOptions`): a secret, or
/// the access key id that goes with one. Any other option's value is sent or shown in clear (an
/// endpoint, a region), so a Secret mapped to it would hand the Secret to whoever wrote the
/// Dataset: an `endpoint` pointed at their own server, say.
pub fn is_credential(name: &str) -> bool {
    is_secret(name) || s3::ACCESS_KEY.is_named(name)
}

/// The value shown instead of a secret.
pub const REDACTED: &str = "<redacted>";

/// The options as they may be shown: secret values replaced.
pub fn redacted(options: &BTreeMap<String, String>) -> BTreeMap<&str, &str> {
    options
        .iter()
        .map(|(k, v)| {
            let shown = if is_secret(k) { REDACTED } else { v.as_str() };
            (k.as_str(), shown)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_secret_spelling_of_every_store_is_a_secret() {
        let mut secrets = 0;
        for (store, table) in STORES {
            for option in *table {
                for name in option.names {
                    assert_eq!(is_secret(name), option.secret, "{store}: {name}");
                    let upper = name.to_ascii_uppercase();
                    assert_eq!(is_secret(&upper), option.secret, "{store}: {upper}");
                    secrets += usize::from(option.secret);
                }
            }
        }
        assert!(secrets >= 7, "the S3 table lists its credentials");
        for name in ["aws.sessionToken", "fs.oss.securityToken", "session-token"] {
            assert!(is_secret(name), "{name}");
        }
    }

    #[test]
    fn passed_through_hadoop_credentials_are_secrets() {
        for name in [
            "fs.s3a.secret.key",
            "fs.s3a.session.token",
            "fs.azure.account.key.myaccount.dfs.core.windows.net",
            "hadoop.security.ldap.bind.password",
            "dfs.webhdfs.oauth2.refresh.token",
        ] {
            assert!(is_secret(name), "{name}");
        }
        for name in [
            "dfs.client.retries",
            "fs.s3a.access.key",
            "user",
            "endpoint",
        ] {
            assert!(!is_secret(name), "{name}");
        }
    }

    #[test]
    fn redaction_keeps_names_and_hides_values() {
        let options = BTreeMap::from([
            ("endpoint".to_string(), "http://s3".to_string()),
            ("aws.sessionToken".to_string(), "TOKEN-VALUE".to_string()),
        ]);
        let shown = redacted(&options);
        assert_eq!(shown["endpoint"], "http://s3");
        assert_eq!(shown["aws.sessionToken"], REDACTED);
    }
}
