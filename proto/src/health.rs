//! `GET /healthz` over plain HTTP for the kubelet's liveness probe, served by each plugin
//! itself instead of a livenessprobe sidecar: 200 when the plugin's own CSI endpoint answers
//! Probe in time (so a wedged gRPC server fails it, as it would fail the sidecar's check), 503
//! when it does not, 404 for any other path.

use std::future::Future;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::Endpoint;
use crate::csi::ProbeRequest;
use crate::csi::identity_client::IdentityClient;

/// How long the CSI Probe may take before the plugin counts as unhealthy.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// A probe's request is one short line and a few headers; more is not a probe.
const MAX_REQUEST: usize = 8 << 10;
/// A client that sends nothing is dropped after this.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Whether the plugin on `csi` answers Probe as ready, or why not.
pub async fn probe(csi: &Endpoint) -> Result<(), String> {
    let check = async {
        let channel = csi.connect().await.map_err(|e| e.to_string())?;
        let answer = IdentityClient::new(channel)
            .probe(ProbeRequest {})
            .await
            .map_err(|s| s.message().to_string())?
            .into_inner();
        match answer.ready {
            Some(false) => Err("the plugin says it is not ready".to_string()),
            _ => Ok(()),
        }
    };
    tokio::time::timeout(PROBE_TIMEOUT, check)
        .await
        .map_err(|_| format!("no answer to Probe within {PROBE_TIMEOUT:?}"))?
}

/// Serves `/healthz` on `listener` for the plugin on `csi` until `stop` completes.
pub async fn serve(listener: TcpListener, csi: Endpoint, stop: impl Future<Output = ()>) {
    tokio::pin!(stop);
    loop {
        let accepted = tokio::select! {
            _ = &mut stop => return,
            a = listener.accept() => a,
        };
        match accepted {
            Ok((stream, _)) => {
                let csi = csi.clone();
                tokio::spawn(async move {
                    if let Err(e) = answer(stream, &csi).await {
                        tracing::debug!("health check connection: {e}");
                    }
                });
            }
            Err(e) => {
                tracing::warn!("accepting a health check: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn answer(mut stream: tokio::net::TcpStream, csi: &Endpoint) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    let head_done = |b: &[u8]| b.windows(4).any(|w| w == b"\r\n\r\n");
    while !head_done(&buf) && buf.len() < MAX_REQUEST {
        let n = match tokio::time::timeout(READ_TIMEOUT, stream.read(&mut chunk)).await {
            Ok(read) => read?,
            Err(_) => return Ok(()),
        };
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let line = buf.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut words = line.split_whitespace();
    let (method, path) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let (status, body) = if method != "GET" && method != "HEAD" {
        ("405 Method Not Allowed", "GET /healthz\n".to_string())
    } else if path != "/healthz" {
        ("404 Not Found", "GET /healthz\n".to_string())
    } else {
        match probe(csi).await {
            Ok(()) => ("200 OK", "ok\n".to_string()),
            Err(why) => {
                tracing::warn!("health check failed: {why}");
                ("503 Service Unavailable", format!("{why}\n"))
            }
        }
    };
    let reply = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
        body.len(),
        if method == "HEAD" { "" } else { body.as_str() }
    );
    stream.write_all(reply.as_bytes()).await?;
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::csi::identity_server::IdentityServer;
    use crate::identity::IdentityService;

    async fn get(addr: std::net::SocketAddr, request: &str) -> String {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(request.as_bytes()).await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn healthz_follows_the_csi_probe() {
        let dir = tempfile::tempdir().unwrap();
        let csi = Endpoint::Unix(dir.path().join("csi.sock"));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(listener, csi.clone(), async {
            let _ = stop_rx.await;
        }));

        // No CSI server yet: unhealthy, with the reason.
        let down = get(addr, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(down.starts_with("HTTP/1.1 503"), "{down}");

        let bound = csi.bind().await.unwrap();
        let router = tonic::transport::Server::builder()
            .add_service(IdentityServer::new(IdentityService::new("x.csi.io", false)));
        let (csi_stop_tx, csi_stop_rx) = tokio::sync::oneshot::channel::<()>();
        let csi_server = tokio::spawn(bound.serve(router, async {
            let _ = csi_stop_rx.await;
        }));
        let up = get(addr, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(
            up.starts_with("HTTP/1.1 200") && up.ends_with("ok\n"),
            "{up}"
        );
        let other = get(addr, "GET / HTTP/1.1\r\n\r\n").await;
        assert!(other.starts_with("HTTP/1.1 404"), "{other}");
        let post = get(addr, "POST /healthz HTTP/1.1\r\n\r\n").await;
        assert!(post.starts_with("HTTP/1.1 405"), "{post}");

        let _ = csi_stop_tx.send(());
        csi_server.await.unwrap().unwrap();
        let _ = stop_tx.send(());
        server.await.unwrap();
    }
}
