//! `GET /healthz` over plain HTTP for the kubelet's liveness probe, served by each plugin
//! itself instead of a livenessprobe sidecar: 200 when the plugin's own CSI endpoint answers
//! Probe in time (so a wedged gRPC server fails it, as it would fail the sidecar's check), 503
//! when it does not, 404 for any other path.

use std::future::Future;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::{Method, Request, StatusCode};
use tokio::net::TcpListener;

use crate::Endpoint;
use crate::csi::ProbeRequest;
use crate::csi::identity_client::IdentityClient;
use crate::http::{self, Reply};

/// How long the CSI Probe may take before the plugin counts as unhealthy.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

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
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(listen = %addr, "answering liveness probes on /healthz");
    }
    let handle = move |req: Request<Incoming>| {
        let csi = csi.clone();
        async move { answer(&req, &csi).await }
    };
    http::serve(listener, handle, stop).await
}

async fn answer(req: &Request<Incoming>, csi: &Endpoint) -> Reply {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return http::text(StatusCode::METHOD_NOT_ALLOWED, "GET /healthz\n");
    }
    if req.uri().path() != "/healthz" {
        return http::text(StatusCode::NOT_FOUND, "GET /healthz\n");
    }
    match probe(csi).await {
        Ok(()) => http::text(StatusCode::OK, "ok\n"),
        Err(why) => {
            tracing::warn!("health check failed: {why}");
            http::text(StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::csi::identity_server::IdentityServer;
    use crate::identity::IdentityService;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

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
        let down = get(
            addr,
            "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert!(down.starts_with("HTTP/1.1 503"), "{down}");

        let bound = csi.bind().await.unwrap();
        let router = tonic::transport::Server::builder()
            .add_service(IdentityServer::new(IdentityService::new("x.csi.io", false)));
        let (csi_stop_tx, csi_stop_rx) = tokio::sync::oneshot::channel::<()>();
        let csi_server = tokio::spawn(bound.serve(router, async {
            let _ = csi_stop_rx.await;
        }));
        let up = get(
            addr,
            "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert!(
            up.starts_with("HTTP/1.1 200") && up.ends_with("ok\n"),
            "{up}"
        );
        let other = get(addr, "GET / HTTP/1.1\r\nConnection: close\r\n\r\n").await;
        assert!(other.starts_with("HTTP/1.1 404"), "{other}");
        let post = get(addr, "POST /healthz HTTP/1.1\r\nConnection: close\r\n\r\n").await;
        assert!(post.starts_with("HTTP/1.1 405"), "{post}");

        let _ = csi_stop_tx.send(());
        csi_server.await.unwrap().unwrap();
        let _ = stop_tx.send(());
        server.await.unwrap();
    }
}
