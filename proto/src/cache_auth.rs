//! The shared token of the node plugins' cache endpoints (`fluid-csi-node --cache-endpoint`).
//! Those listen on the host network, where any pod or host could otherwise evict caches, start
//! warm-ups or read cache figures; with a token set, every call must carry it as
//! `authorization: Bearer <token>`. The node plugin checks it ([`RequireToken`]), the
//! controller sends it ([`BearerToken`]); both read it from [`TOKEN_ENV`] (the chart fills it
//! from a generated Secret). The token never appears in an error or a log line.

use tonic::Status;
use tonic::metadata::{AsciiMetadataValue, MetadataMap};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use crate::fluid::cache_node_client::CacheNodeClient;

/// The environment variable (and flag value) that holds the token.
pub const TOKEN_ENV: &str = "FLUID_CACHE_TOKEN";

const HEADER: &str = "authorization";

/// A CacheNode client that sends the token, if any.
pub type NodeClient = CacheNodeClient<InterceptedService<Channel, BearerToken>>;

/// A token as read from the command line or environment; its `Debug` form hides it, so a
/// logged configuration never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl Token {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

/// Checks a token given on a command line: printable ASCII without spaces, 16 characters or
/// more (the chart generates 48).
pub fn parse_token(s: &str) -> Result<Token, String> {
    if s.len() < 16 {
        return Err(format!(
            "the token must have 16 characters or more (it has {})",
            s.len()
        ));
    }
    if !s.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("the token must be printable ASCII without spaces".into());
    }
    Ok(Token(s.to_string()))
}

/// Client side: adds `authorization: Bearer <token>` to every call.
#[derive(Clone, Default)]
pub struct BearerToken(Option<AsciiMetadataValue>);

impl BearerToken {
    /// `None` sends no header (an endpoint without a token).
    pub fn new(token: Option<&str>) -> Result<BearerToken, String> {
        token
            .map(|t| {
                format!("Bearer {t}")
                    .parse::<AsciiMetadataValue>()
                    .map_err(|_| "the cache token is not a valid header value".to_string())
            })
            .transpose()
            .map(BearerToken)
    }

    pub fn client(&self, channel: Channel) -> NodeClient {
        CacheNodeClient::with_interceptor(channel, self.clone())
    }
}

impl Interceptor for BearerToken {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert(HEADER, v.clone());
        }
        Ok(req)
    }
}

/// Server side: refuses calls without the token (UNAUTHENTICATED); with no token configured,
/// lets every call through.
#[derive(Clone, Default)]
pub struct RequireToken(Option<String>);

impl RequireToken {
    pub fn new(token: Option<&str>) -> RequireToken {
        RequireToken(token.map(|t| format!("Bearer {t}")))
    }

    fn check(&self, metadata: &MetadataMap) -> Result<(), Status> {
        let Some(want) = &self.0 else {
            return Ok(());
        };
        let given = metadata
            .get(HEADER)
            .map(|v| v.as_bytes())
            .unwrap_or_default();
        if constant_time_eq(given, want.as_bytes()) {
            Ok(())
        } else {
            Err(Status::unauthenticated(format!(
                "this cache endpoint needs the shared token ({TOKEN_ENV}) as `{HEADER}: Bearer <token>`"
            )))
        }
    }
}

impl Interceptor for RequireToken {
    fn call(&mut self, req: tonic::Request<()>) -> Result<tonic::Request<()>, Status> {
        self.check(req.metadata())?;
        Ok(req)
    }
}

/// Compares without stopping at the first difference, so the time taken says nothing about
/// how much of a guess was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request_with(header: Option<&str>) -> tonic::Request<()> {
        let mut req = tonic::Request::new(());
        if let Some(h) = header {
            req.metadata_mut().insert(HEADER, h.parse().unwrap());
        }
        req
    }

    #[test]
    fn the_token_is_required_when_set() {
        let token = "0123456789abcdef-token";
        let mut open = RequireToken::new(None);
        assert!(open.call(request_with(None)).is_ok());
        let mut guarded = RequireToken::new(Some(token));
        for bad in [None, Some("Bearer wrong"), Some(token)] {
            let err = guarded.call(request_with(bad)).unwrap_err();
            assert_eq!(err.code(), tonic::Code::Unauthenticated);
            assert!(!err.message().contains(token), "{}", err.message());
        }
        // What the client side sends passes.
        let mut client = BearerToken::new(Some(token)).unwrap();
        let sent = client.call(tonic::Request::new(())).unwrap();
        assert!(guarded.call(sent).is_ok());
        let mut none = BearerToken::new(None).unwrap();
        assert!(
            none.call(tonic::Request::new(()))
                .unwrap()
                .metadata()
                .is_empty()
        );
    }

    #[test]
    fn tokens_are_checked() {
        assert!(parse_token("short").is_err());
        assert!(parse_token("has a space in it, long enough").is_err());
        let t = parse_token("0123456789abcdef").unwrap();
        assert_eq!(t.as_str(), "0123456789abcdef");
        assert!(!format!("{t:?}").contains("0123"));
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd") && !constant_time_eq(b"abc", b"ab"));
    }
}
