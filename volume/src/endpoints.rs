//! Where credentials from a Secret may be sent. An S3 client sends the access key id (in the
//! SigV4 `Authorization` header) and the session token to its endpoint, so a Dataset that maps
//! a Secret it cannot read to `access-key` and names its own server as `endpoint` would learn
//! them. Credentials from a Secret therefore go only to an endpoint that the administrator
//! allows (`--credential-endpoints`) or that the Secret names itself (its key `endpoint`,
//! which then wins over the Dataset's option). Without an endpoint the store's own (AWS, by
//! region) is used, and that is never the tenant's host.

use std::collections::BTreeMap;

use crate::options::{is_credential, s3::ENDPOINT};

/// The key of a credentials Secret that names the endpoint its credentials are for.
pub const SECRET_ENDPOINT_KEY: &str = "endpoint";

/// An endpoint as a request goes to it: scheme, host (lower case), port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    pub scheme: String,
    pub host: String,
    pub port: u16,
}

impl Endpoint {
    /// Parses an endpoint as the S3 source uses it (`https://` when no scheme is given).
    /// Only plain `http(s)://host[:port][/path]` is understood: user info (`a@b`), percent
    /// escapes and other schemes give `None`, so no spelling can make the checked host differ
    /// from the one dialled.
    pub fn parse(endpoint: &str) -> Option<Endpoint> {
        let endpoint = endpoint.trim();
        let (scheme, rest) = match endpoint.split_once("://") {
            Some((s, r)) => (s.to_ascii_lowercase(), r),
            None => ("https".to_string(), endpoint),
        };
        let default_port = match scheme.as_str() {
            "http" => 80,
            "https" => 443,
            _ => return None,
        };
        let authority = rest.split('/').next().unwrap_or_default();
        let (host, port) = split_host_port(authority)?;
        let port = match port {
            Some(p) => p,
            None => default_port,
        };
        Some(Endpoint { scheme, host, port })
    }
}

/// `host[:port]` or `[v6][:port]`, host in lower case without a trailing dot; `None` for any
/// other character.
fn split_host_port(authority: &str) -> Option<(String, Option<u16>)> {
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let (v6, after) = rest.split_once(']')?;
        if v6.is_empty()
            || !v6
                .chars()
                .all(|c| c.is_ascii_hexdigit() || c == ':' || c == '.')
        {
            return None;
        }
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':')?),
        };
        (format!("[{}]", v6.to_ascii_lowercase()), port)
    } else {
        let (host, port) = match authority.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        };
        let host = host.strip_suffix('.').unwrap_or(host);
        if host.is_empty()
            || !host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
        {
            return None;
        }
        (host.to_ascii_lowercase(), port)
    };
    let port = match port {
        None => None,
        Some(p) if !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()) => Some(p.parse().ok()?),
        Some(_) => return None,
    };
    Some((host, port))
}

/// One entry of `--credential-endpoints`: `*` (any endpoint), or `[SCHEME://]HOST[:PORT]`
/// where HOST may start with `*.` (any host under it); a part left out matches any.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointPattern {
    text: String,
    any: bool,
    scheme: Option<String>,
    host: String,
    port: Option<u16>,
}

impl EndpointPattern {
    pub fn parse(text: &str) -> Result<EndpointPattern, String> {
        let text = text.trim();
        let bad = || {
            format!("{text:?}: expected `*` or [http(s)://]HOST[:PORT] (HOST may start with `*.`)")
        };
        if text == "*" {
            return Ok(EndpointPattern {
                text: text.into(),
                any: true,
                scheme: None,
                host: String::new(),
                port: None,
            });
        }
        let (scheme, rest) = match text.split_once("://") {
            Some((s, r)) => {
                let s = s.to_ascii_lowercase();
                if s != "http" && s != "https" {
                    return Err(bad());
                }
                (Some(s), r)
            }
            None => (None, text),
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        let (wild, rest) = match rest.strip_prefix("*.") {
            Some(r) => (true, r),
            None => (false, rest),
        };
        let (host, port) = split_host_port(rest).ok_or_else(bad)?;
        Ok(EndpointPattern {
            text: text.into(),
            any: false,
            scheme,
            host: if wild { format!(".{host}") } else { host },
            port,
        })
    }

    pub fn matches(&self, e: &Endpoint) -> bool {
        if self.any {
            return true;
        }
        let host = match self.host.strip_prefix('.') {
            Some(_) => e.host.ends_with(&self.host),
            None => e.host == self.host,
        };
        host && self.scheme.as_ref().is_none_or(|s| *s == e.scheme)
            && self.port.is_none_or(|p| p == e.port)
    }
}

impl std::fmt::Display for EndpointPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

/// The flag's parser (comma separated by clap).
pub fn pattern_flag(text: &str) -> Result<EndpointPattern, String> {
    EndpointPattern::parse(text)
}

/// The first non-empty endpoint among `options` by the spellings' order, as
/// [`crate::mountpoint::MountPoint::option`] finds it.
fn endpoint_of(options: &BTreeMap<String, String>) -> Option<&str> {
    ENDPOINT
        .names
        .iter()
        .filter_map(|n| options.get(*n))
        .map(|v| v.trim())
        .find(|v| !v.is_empty())
}

/// Why a mount's credentials from a Secret may not go to its endpoint, or `None` when they may:
/// no credential comes from a Secret, no endpoint is set, the Secret set the endpoint itself,
/// or the administrator allows it. `plain` are the mount's options as the Dataset wrote them,
/// `from_secrets` those that Secrets add (and override). The message names the option.
pub fn refused_endpoint(
    plain: &BTreeMap<String, String>,
    from_secrets: &BTreeMap<String, String>,
    allowed: &[EndpointPattern],
) -> Option<String> {
    let credentials = from_secrets
        .iter()
        .any(|(k, v)| is_credential(k) && !v.trim().is_empty());
    if !credentials {
        return None;
    }
    let mut merged = plain.clone();
    merged.extend(from_secrets.iter().map(|(k, v)| (k.clone(), v.clone())));
    let endpoint = endpoint_of(&merged)?;
    let set_by_secret = from_secrets
        .iter()
        .any(|(k, v)| ENDPOINT.names.contains(&k.as_str()) && v.trim() == endpoint);
    if set_by_secret {
        return None;
    }
    if Endpoint::parse(endpoint).is_some_and(|e| allowed.iter().any(|p| p.matches(&e))) {
        return None;
    }
    let list: Vec<String> = allowed.iter().map(|p| p.to_string()).collect();
    let list = if list.is_empty() {
        "none".to_string()
    } else {
        list.join(", ")
    };
    Some(format!(
        "option {} {endpoint:?}: credentials from a Secret are sent only to an endpoint the \
         administrator allows (--credential-endpoints / the chart's credentialEndpoints: {list}) \
         or one the Secret names itself (its key {SECRET_ENDPOINT_KEY:?})",
        ENDPOINT.name()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn patterns(list: &[&str]) -> Vec<EndpointPattern> {
        list.iter()
            .map(|p| EndpointPattern::parse(p).unwrap())
            .collect()
    }

    #[test]
    fn endpoints_parse_as_they_are_dialled() {
        let e = Endpoint::parse("http://127.0.0.1:8333").unwrap();
        assert_eq!(
            (e.scheme.as_str(), e.host.as_str(), e.port),
            ("http", "127.0.0.1", 8333)
        );
        let e = Endpoint::parse("OSS-cn-hangzhou.aliyuncs.com.").unwrap();
        assert_eq!(
            (e.scheme.as_str(), e.host.as_str(), e.port),
            ("https", "oss-cn-hangzhou.aliyuncs.com", 443)
        );
        let e = Endpoint::parse("http://[::1]:9000/path").unwrap();
        assert_eq!((e.host.as_str(), e.port), ("[::1]", 9000));
        for bad in [
            "http://127.0.0.1:8333@evil.example",
            "http://evil%2eexample",
            "ftp://host",
            "http://host:port",
            "http://host\\@evil",
            "http://",
        ] {
            assert_eq!(Endpoint::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn patterns_match_scheme_host_and_port_when_given() {
        let p = patterns(&["http://127.0.0.1:8333", "*.aliyuncs.com", "s3.example.com"]);
        let ok = |e: &str| {
            let e = Endpoint::parse(e).unwrap();
            p.iter().any(|p| p.matches(&e))
        };
        assert!(ok("http://127.0.0.1:8333/"));
        assert!(!ok("https://127.0.0.1:8333"));
        assert!(!ok("http://127.0.0.1:8334"));
        assert!(ok("oss-cn-hangzhou.aliyuncs.com"));
        assert!(!ok("aliyuncs.com.evil.example"));
        assert!(!ok("evilaliyuncs.com"));
        assert!(ok("http://s3.example.com:9000"));
        assert!(!ok("s3.example.com.evil.example"));
        assert!(patterns(&["*"])[0].matches(&Endpoint::parse("evil.example").unwrap()));
        for bad in ["ftp://x", "a@b", "", "host:x"] {
            assert!(EndpointPattern::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn secret_credentials_go_only_to_allowed_or_secret_named_endpoints() {
        let evil = map(&[("endpoint", "http://evil.example"), ("region", "r")]);
        let keys = map(&[("access-key", "AKID"), ("secret-key", "s")]);
        // Refused with no list, naming the option and the flag.
        let why = refused_endpoint(&evil, &keys, &[]).unwrap();
        assert!(
            why.contains("option endpoint") && why.contains("--credential-endpoints"),
            "{why}"
        );
        assert!(!why.contains("AKID"), "{why}");
        // A session token alone is a credential too; another spelling of endpoint as well.
        let oss = map(&[("fs.oss.endpoint", "evil.example")]);
        assert!(refused_endpoint(&oss, &map(&[("session-token", "t")]), &[]).is_some());
        // Allowed by the administrator.
        let lab = map(&[("endpoint", "http://127.0.0.1:8333")]);
        assert_eq!(
            refused_endpoint(&lab, &keys, &patterns(&["http://127.0.0.1:8333"])),
            None
        );
        assert!(refused_endpoint(&evil, &keys, &patterns(&["http://127.0.0.1:8333"])).is_some());
        // Named by the Secret itself: its value wins over the Dataset's.
        let mut pinned = keys.clone();
        pinned.insert("endpoint".into(), "http://s3.internal".into());
        assert_eq!(refused_endpoint(&evil, &pinned, &[]), None);
        // ... but not when the Dataset's spelling comes first.
        let mut pinned_oss = keys.clone();
        pinned_oss.insert("fs.oss.endpoint".into(), "http://s3.internal".into());
        assert!(refused_endpoint(&evil, &pinned_oss, &[]).is_some());
        // No endpoint (the store's own), or no credentials from a Secret: nothing to refuse.
        assert_eq!(refused_endpoint(&map(&[("region", "r")]), &keys, &[]), None);
        assert_eq!(refused_endpoint(&evil, &map(&[]), &[]), None);
    }
}
