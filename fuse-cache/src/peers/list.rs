//! The members of a Dataset's cache without Kubernetes: a list of `name=endpoint` items (the
//! `--peers` flag of `fluid-fuse mount`) or a peers file (`--peers-file`) the daemon reads
//! again when it changes, one member a line (`name endpoint` or `name=endpoint`; `#` starts a
//! comment). Endpoints are checked for form only here: a peer whose name does not resolve yet
//! is skipped when asked, not refused at start.

use std::path::Path;

use super::owner::Member;
use crate::error::{Error, Result};

/// Members from `name=endpoint` items (what `--peers` will take).
pub fn from_flag(items: &[String]) -> Result<Vec<Member>> {
    items
        .iter()
        .map(|item| {
            let (name, endpoint) = item.split_once('=').ok_or_else(|| {
                Error::invalid("--peers", format!("{item:?} is not NAME=ENDPOINT"))
            })?;
            member(name, endpoint).map_err(|m| Error::invalid("--peers", m))
        })
        .collect()
}

/// Members from the text of a peers file.
pub fn parse(text: &str, file: &Path) -> Result<Vec<Member>> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let field = || format!("{} line {}", file.display(), i + 1);
        let (name, endpoint) = line
            .split_once('=')
            .or_else(|| line.split_once(char::is_whitespace))
            .ok_or_else(|| Error::invalid(field(), format!("{line:?} is not NAME ENDPOINT")))?;
        out.push(member(name.trim(), endpoint.trim()).map_err(|m| Error::invalid(field(), m))?);
    }
    Ok(out)
}

/// Reads and parses a peers file.
pub fn read(file: &Path) -> Result<Vec<Member>> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| Error::io(format!("reading the peers file {}", file.display()), e))?;
    parse(&text, file)
}

fn member(name: &str, endpoint: &str) -> std::result::Result<Member, String> {
    if name.is_empty() || name.contains(char::is_whitespace) {
        return Err(format!("peer name {name:?}: give one word"));
    }
    let ok = match (
        endpoint.strip_prefix("tcp://"),
        endpoint.strip_prefix("unix://"),
    ) {
        (Some(hostport), _) => hostport
            .rsplit_once(':')
            .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok()),
        (_, Some(path)) => path.starts_with('/') && path.len() > 1,
        _ => false,
    };
    if !ok {
        return Err(format!(
            "peer {name}: endpoint {endpoint:?}: expected tcp://host:port or unix:///path"
        ));
    }
    Ok(Member {
        name: name.to_string(),
        endpoint: endpoint.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peers_file_and_the_flag_give_the_members() {
        let text = "# the Dataset's nodes\nnode-a tcp://10.0.0.1:7788\n\nnode-b=tcp://node-b.local:7788  # same rack\n  node-c   unix:///run/fluid/c.sock\n";
        let m = parse(text, Path::new("peers")).unwrap();
        let names: Vec<_> = m.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["node-a", "node-b", "node-c"]);
        assert_eq!(m[1].endpoint, "tcp://node-b.local:7788");
        let f = from_flag(&["node-a=tcp://127.0.0.1:1".to_string()]).unwrap();
        assert_eq!(f[0].endpoint, "tcp://127.0.0.1:1");
    }

    #[test]
    fn bad_lines_are_refused_naming_the_line() {
        let err = parse(
            "node-a tcp://x:1\nnode-b http://x:1\n",
            Path::new("/etc/peers"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("/etc/peers line 2") && err.contains("tcp://host:port"),
            "{err}"
        );
        let err = parse("lonely\n", Path::new("p")).unwrap_err().to_string();
        assert!(err.contains("p line 1"), "{err}");
        for bad in [
            "a=tcp://:1",
            "a=tcp://h:port",
            "a=unix://rel",
            "=tcp://h:1",
            "a",
        ] {
            assert!(from_flag(&[bad.to_string()]).is_err(), "{bad}");
        }
        let err = read(Path::new("/no/such/peers")).unwrap_err().to_string();
        assert!(err.contains("/no/such/peers"), "{err}");
    }
}
