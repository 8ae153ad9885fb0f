//! The cache-aware scheduling webhook: a mutating admission webhook over HTTPS that adds node
//! affinity for the cache of the Datasets a pod mounts (see [`mutate`] for what is added).
//!
//! Routes: `POST /mutate-pods` (AdmissionReview v1; always `allowed: true`, with a JSON patch
//! when there is something to add; HTTP 400 for a body that is not a review) and
//! `GET /healthz`. HTTP/1.1 over rustls; the certificate is read once at start.

pub mod lookup;
pub mod mutate;
pub mod review;
pub mod tls;

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use fluid_proto::http::{self, Reply};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, StatusCode};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::error::{Error, Result};
use lookup::KubeResolver;
use review::Resolver;

/// The path the webhook configuration's clientConfig names.
pub const MUTATE_PATH: &str = "/mutate-pods";
pub const HEALTH_PATH: &str = "/healthz";
/// The largest review accepted: the API server refuses requests over 3 MiB, and a review holds
/// the object once (twice on updates, which are not mutated).
const MAX_BODY: usize = 8 << 20;
/// A client that opens a connection and never finishes the handshake must not hold a task.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The bound webhook server, ready to [`serve`](Webhook::serve).
pub struct Webhook {
    listener: TcpListener,
    acceptor: TlsAcceptor,
    resolver: Arc<KubeResolver>,
}

impl Webhook {
    /// Loads the certificate and key and binds `addr`; every failure names its flag.
    pub async fn bind(
        addr: SocketAddr,
        cert: &Path,
        key: &Path,
        client: kube::Client,
        driver: &str,
    ) -> Result<Self> {
        let config = tls::server_config(cert, key)?;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|e| Error::Webhook(format!("--webhook-listen {addr}: {e}")))?;
        Ok(Webhook {
            listener,
            acceptor: TlsAcceptor::from(config),
            resolver: Arc::new(KubeResolver::new(client, driver)),
        })
    }

    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.listener.local_addr().ok()
    }

    /// Serves until `shutdown` completes; each connection is its own task.
    pub async fn serve(self, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        loop {
            let (tcp, peer) = tokio::select! {
                accepted = self.listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of descriptors and the like: pause rather than spin.
                        tracing::warn!("webhook: accepting a connection failed: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
                () = &mut shutdown => break,
            };
            let acceptor = self.acceptor.clone();
            let resolver = self.resolver.clone();
            tokio::spawn(async move {
                let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await
                {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, "webhook: TLS handshake failed: {e}");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%peer, "webhook: TLS handshake timed out");
                        return;
                    }
                };
                let handle = move |req| {
                    let resolver = resolver.clone();
                    async move { handle(req, resolver.as_ref()).await }
                };
                if let Err(e) = fluid_proto::http::serve_connection(tls, handle).await {
                    tracing::debug!(%peer, "webhook: connection ended: {e}");
                }
            });
        }
        tracing::info!("webhook stopped");
    }
}

/// Starts the webhook when `--webhook-listen` is given: binds now (so a bad flag stops the
/// controller at start) and serves on a task until `shutdown`.
pub async fn start(
    config: &crate::Config,
    client: &kube::Client,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<Option<tokio::task::JoinHandle<()>>> {
    let Some(addr) = config.webhook_listen else {
        return Ok(None);
    };
    let server = Webhook::bind(
        addr,
        &config.webhook_cert,
        &config.webhook_key,
        client.clone(),
        &config.drivername,
    )
    .await?;
    let local = server.local_addr().unwrap_or(addr);
    tracing::info!(listen = %local, path = MUTATE_PATH, "serving the scheduling webhook");
    Ok(Some(tokio::spawn(server.serve(shutdown))))
}

async fn handle<R: Resolver>(req: Request<Incoming>, resolver: &R) -> Reply {
    match (req.method(), req.uri().path()) {
        (&Method::GET, HEALTH_PATH) => text(StatusCode::OK, "ok"),
        (&Method::POST, MUTATE_PATH) => {
            let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
                Ok(b) => b.to_bytes(),
                Err(e) => {
                    return text(StatusCode::BAD_REQUEST, &format!("reading the body: {e}"));
                }
            };
            match review::review(&body, resolver, review::LOOKUP_TIMEOUT).await {
                Ok(json) => http::reply(StatusCode::OK, "application/json", json),
                Err(e @ Error::Invalid { .. }) => text(StatusCode::BAD_REQUEST, &e.to_string()),
                Err(e) => {
                    tracing::warn!("webhook: {e}");
                    text(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string())
                }
            }
        }
        (_, MUTATE_PATH | HEALTH_PATH) => {
            text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
        }
        _ => text(StatusCode::NOT_FOUND, "not found"),
    }
}

fn text(status: StatusCode, message: &str) -> Reply {
    http::text(status, format!("{message}\n"))
}
