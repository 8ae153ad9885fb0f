//! Serving and dialing gRPC endpoints written as `unix:///path/to.sock` or `tcp://host:port`.
//!
//! Serving a unix socket removes a stale socket file left by a dead process (but refuses to
//! take over one that still answers), creates the parent directory, restricts the socket to
//! owner and group, and removes the file again on shutdown.

use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, UnixListener, UnixStream};
use tokio_stream::StreamExt;
use tokio_stream::wrappers::{TcpListenerStream, UnixListenerStream};
use tonic::transport::server::Router;
use tonic::transport::{Channel, Uri};

/// Mode of a served unix socket: kubelet and the sidecars run as root or in the group.
const SOCKET_MODE: u32 = 0o660;

#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    #[error("invalid endpoint {0:?}: expected unix:///absolute/path or tcp://host:port")]
    Invalid(String),
    #[error("cannot resolve tcp endpoint {0:?}: {1}")]
    Resolve(String, io::Error),
    #[error("{path} is in use by a running server")]
    InUse { path: PathBuf },
    #[error("{path} exists and is not a socket; refusing to replace it")]
    NotASocket { path: PathBuf },
    #[error("cannot listen on {endpoint}: {source}")]
    Bind { endpoint: String, source: io::Error },
    #[error("cannot connect to {endpoint}: {source}")]
    Connect {
        endpoint: String,
        source: tonic::transport::Error,
    },
    #[error("server on {endpoint} failed: {source}")]
    Serve {
        endpoint: String,
        source: tonic::transport::Error,
    },
}

/// Where a gRPC server listens or a client dials.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Endpoint {
    Unix(PathBuf),
    Tcp(SocketAddr),
}

impl FromStr for Endpoint {
    type Err = EndpointError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = || EndpointError::Invalid(s.to_string());
        if let Some(path) = s.strip_prefix("unix://") {
            // Accept unix:/abs (one slash) too: kubelet's plugin registration writes that form.
            let path = Path::new(path);
            if !path.is_absolute() || path.as_os_str().len() <= 1 {
                return Err(invalid());
            }
            Ok(Endpoint::Unix(path.to_path_buf()))
        } else if let Some(path) = s.strip_prefix("unix:") {
            Endpoint::from_str(&format!("unix://{path}"))
        } else if let Some(hostport) = s.strip_prefix("tcp://") {
            let hostport = hostport.trim_end_matches('/');
            std::net::ToSocketAddrs::to_socket_addrs(hostport)
                .map_err(|e| EndpointError::Resolve(s.to_string(), e))?
                .next()
                .map(Endpoint::Tcp)
                .ok_or_else(invalid)
        } else {
            Err(invalid())
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Unix(p) => write!(f, "unix://{}", p.display()),
            Endpoint::Tcp(a) => write!(f, "tcp://{a}"),
        }
    }
}

/// A listening socket, bound before serving so that bind errors surface at start-up.
pub enum Bound {
    Unix {
        listener: UnixListener,
        path: PathBuf,
    },
    Tcp {
        listener: TcpListener,
        addr: SocketAddr,
    },
}

impl Endpoint {
    /// Binds the socket (see the module doc for what happens to an existing unix socket).
    pub async fn bind(&self) -> Result<Bound, EndpointError> {
        let bind_err = |source| EndpointError::Bind {
            endpoint: self.to_string(),
            source,
        };
        match self {
            Endpoint::Unix(path) => {
                if let Some(dir) = path.parent() {
                    tokio::fs::create_dir_all(dir).await.map_err(bind_err)?;
                }
                remove_stale_socket(path).await?;
                let listener = UnixListener::bind(path).map_err(bind_err)?;
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(SOCKET_MODE))
                    .map_err(bind_err)?;
                Ok(Bound::Unix {
                    listener,
                    path: path.clone(),
                })
            }
            Endpoint::Tcp(addr) => {
                let listener = TcpListener::bind(addr).await.map_err(bind_err)?;
                let addr = listener.local_addr().map_err(bind_err)?;
                Ok(Bound::Tcp { listener, addr })
            }
        }
    }

    /// Binds and serves `router` until `shutdown` completes, then drains in-flight calls.
    pub async fn serve(
        &self,
        router: Router,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), EndpointError> {
        self.bind().await?.serve(router, shutdown).await
    }

    /// Opens a channel to a gRPC server at this endpoint. Connection is lazy-checked: the
    /// first connect happens here, so an absent server is reported now.
    pub async fn connect(&self) -> Result<Channel, EndpointError> {
        let connect_err = |source| EndpointError::Connect {
            endpoint: self.to_string(),
            source,
        };
        match self {
            Endpoint::Tcp(addr) => {
                // Infallible for a socket address rendered as http://ip:port.
                let ep = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
                    .map_err(connect_err)?;
                ep.connect().await.map_err(connect_err)
            }
            Endpoint::Unix(path) => {
                let path = path.clone();
                // The URI is a placeholder: the connector below ignores it.
                let ep = tonic::transport::Endpoint::from_static("http://localhost");
                ep.connect_with_connector(tower::service_fn(move |_: Uri| {
                    let path = path.clone();
                    async move { UnixStream::connect(path).await.map(TokioIo::new) }
                }))
                .await
                .map_err(connect_err)
            }
        }
    }
}

impl Endpoint {
    /// A channel that connects at its first call (and again after a failure), each connect
    /// bounded by `connect_timeout`: for peers that may be down when the channel is made.
    /// Its HTTP/2 windows fit a few blocks in flight, so a transfer is not held to 64 KiB
    /// round trips.
    pub fn lazy_channel(
        &self,
        connect_timeout: std::time::Duration,
    ) -> Result<Channel, EndpointError> {
        let tune = |ep: tonic::transport::Endpoint| {
            ep.connect_timeout(connect_timeout)
                .tcp_nodelay(true)
                .initial_stream_window_size(Some(8 << 20))
                .initial_connection_window_size(Some(32 << 20))
        };
        match self {
            Endpoint::Tcp(addr) => {
                let ep = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
                    .map_err(|_| EndpointError::Invalid(self.to_string()))?;
                Ok(tune(ep).connect_lazy())
            }
            Endpoint::Unix(path) => {
                let path = path.clone();
                let ep = tune(tonic::transport::Endpoint::from_static("http://localhost"));
                Ok(
                    ep.connect_with_connector_lazy(tower::service_fn(move |_: Uri| {
                        let path = path.clone();
                        async move { UnixStream::connect(path).await.map(TokioIo::new) }
                    })),
                )
            }
        }
    }
}

/// How long a server waits for calls in flight after its shutdown signal.
pub const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(3);

impl Bound {
    /// The endpoint actually bound (a `tcp://…:0` endpoint gets its real port here).
    pub fn endpoint(&self) -> Endpoint {
        match self {
            Bound::Unix { path, .. } => Endpoint::Unix(path.clone()),
            Bound::Tcp { addr, .. } => Endpoint::Tcp(*addr),
        }
    }

    /// Serves until `shutdown` resolves, then lets calls in flight finish for at most
    /// [`SHUTDOWN_GRACE`]: a client that keeps an idle connection open (kubelet, a sidecar)
    /// must not keep the process from exiting.
    pub async fn serve(
        self,
        router: Router,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), EndpointError> {
        let endpoint = self.endpoint();
        let serve_err = |source| EndpointError::Serve {
            endpoint: endpoint.to_string(),
            source,
        };
        let (signalled, on_signal) = tokio::sync::oneshot::channel::<()>();
        let shutdown = async move {
            shutdown.await;
            let _ = signalled.send(());
        };
        let grace_over = async move {
            match on_signal.await {
                Ok(()) => tokio::time::sleep(SHUTDOWN_GRACE).await,
                Err(_) => std::future::pending().await,
            }
        };
        match self {
            Bound::Unix { listener, path } => {
                // Every connection through the authority pump (see `authority`): the kubelet
                // names the socket path as its HTTP/2 authority.
                let incoming = UnixListenerStream::new(listener)
                    .map(|accepted| accepted.and_then(crate::authority::fronted));
                let serving = router.serve_with_incoming_shutdown(incoming, shutdown);
                let result = tokio::select! {
                    r = serving => r.map_err(serve_err),
                    () = grace_over => Ok(()),
                };
                // Leave no socket behind for the next start to trip over.
                let _ = std::fs::remove_file(&path);
                result
            }
            Bound::Tcp { listener, .. } => {
                let serving =
                    router.serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown);
                tokio::select! {
                    r = serving => r.map_err(serve_err),
                    () = grace_over => Ok(()),
                }
            }
        }
    }
}

async fn remove_stale_socket(path: &Path) -> Result<(), EndpointError> {
    let meta = match tokio::fs::symlink_metadata(path).await {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(EndpointError::Bind {
                endpoint: format!("unix://{}", path.display()),
                source,
            });
        }
    };
    if !meta.file_type().is_socket() {
        return Err(EndpointError::NotASocket {
            path: path.to_path_buf(),
        });
    }
    if UnixStream::connect(path).await.is_ok() {
        return Err(EndpointError::InUse {
            path: path.to_path_buf(),
        });
    }
    tokio::fs::remove_file(path)
        .await
        .map_err(|source| EndpointError::Bind {
            endpoint: format!("unix://{}", path.display()),
            source,
        })
}

/// Completes on SIGTERM or SIGINT: what kubelet and a terminal send to stop a daemon.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM received, shutting down"),
                _ = int.recv() => tracing::info!("SIGINT received, shutting down"),
            }
        }
        // Without signal handlers the process still stops on the default action.
        _ => std::future::pending::<()>().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fluid::cache_node_client::CacheNodeClient;
    use crate::fluid::cache_node_server::{CacheNode, CacheNodeServer};
    use crate::fluid::*;
    use std::pin::Pin;
    use tokio::sync::oneshot;
    use tokio_stream::Stream;
    use tonic::{Request, Response, Status};

    /// A fixed-answer CacheNode, only to prove the transport.
    struct FixedStats;

    #[tonic::async_trait]
    impl CacheNode for FixedStats {
        async fn get_stats(
            &self,
            _: Request<GetStatsRequest>,
        ) -> Result<Response<GetStatsResponse>, Status> {
            Ok(Response::new(GetStatsResponse {
                hits: 7,
                misses: 3,
                ..Default::default()
            }))
        }
        type WarmupStream = Pin<Box<dyn Stream<Item = Result<WarmupProgress, Status>> + Send>>;
        async fn warmup(
            &self,
            _: Request<WarmupRequest>,
        ) -> Result<Response<Self::WarmupStream>, Status> {
            Err(Status::unimplemented("not in this test"))
        }
        async fn evict(&self, _: Request<EvictRequest>) -> Result<Response<EvictResponse>, Status> {
            Err(Status::unimplemented("not in this test"))
        }

        async fn release(
            &self,
            _: Request<ReleaseRequest>,
        ) -> Result<Response<ReleaseResponse>, Status> {
            Err(Status::unimplemented("not in this test"))
        }

        type ReadBlockStream = Pin<Box<dyn Stream<Item = Result<BlockChunk, Status>> + Send>>;
        async fn read_block(
            &self,
            _: Request<ReadBlockRequest>,
        ) -> Result<Response<Self::ReadBlockStream>, Status> {
            Err(Status::unimplemented("not in this test"))
        }
    }

    fn router() -> Router {
        tonic::transport::Server::builder().add_service(CacheNodeServer::new(FixedStats))
    }

    #[test]
    fn parses_endpoints() {
        assert_eq!(
            "unix:///csi/csi.sock".parse::<Endpoint>().unwrap(),
            Endpoint::Unix("/csi/csi.sock".into())
        );
        assert_eq!(
            "unix:/csi/csi.sock".parse::<Endpoint>().unwrap(),
            Endpoint::Unix("/csi/csi.sock".into())
        );
        assert_eq!(
            "tcp://127.0.0.1:10000".parse::<Endpoint>().unwrap(),
            Endpoint::Tcp("127.0.0.1:10000".parse().unwrap())
        );
        for bad in [
            "",
            "/csi.sock",
            "unix://relative.sock",
            "unix://",
            "http://x:1",
            "tcp://nohostport",
        ] {
            assert!(
                bad.parse::<Endpoint>().is_err(),
                "{bad:?} should be refused"
            );
        }
    }

    #[tokio::test]
    async fn serves_unix_socket_replacing_a_stale_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested/dir/node.sock");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        // A socket file whose server is gone, as after a crash.
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        assert!(path.exists());

        let ep = Endpoint::Unix(path.clone());
        let bound = ep.bind().await.unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, SOCKET_MODE);

        // A second server must not steal a live socket.
        assert!(matches!(ep.bind().await, Err(EndpointError::InUse { .. })));

        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(bound.serve(router(), async {
            stopped.await.ok();
        }));
        let mut client = CacheNodeClient::new(ep.connect().await.unwrap());
        let stats = client
            .get_stats(GetStatsRequest::default())
            .await
            .unwrap()
            .into_inner();
        assert_eq!((stats.hits, stats.misses), (7, 3));

        stop.send(()).unwrap();
        server.await.unwrap().unwrap();
        assert!(!path.exists(), "socket file removed on shutdown");
    }

    #[tokio::test]
    async fn refuses_to_replace_a_regular_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("not-a-socket");
        std::fs::write(&path, b"data").unwrap();
        let err = Endpoint::Unix(path.clone()).bind().await.err().unwrap();
        assert!(matches!(err, EndpointError::NotASocket { .. }), "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), b"data");
    }

    #[tokio::test]
    async fn serves_tcp_and_reports_unreachable() {
        let bound = "tcp://127.0.0.1:0"
            .parse::<Endpoint>()
            .unwrap()
            .bind()
            .await
            .unwrap();
        let ep = bound.endpoint();
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(bound.serve(router(), async {
            stopped.await.ok();
        }));
        let mut client = CacheNodeClient::new(ep.connect().await.unwrap());
        assert_eq!(
            client
                .get_stats(GetStatsRequest::default())
                .await
                .unwrap()
                .into_inner()
                .hits,
            7
        );
        stop.send(()).unwrap();
        server.await.unwrap().unwrap();

        let gone = Endpoint::Unix("/nonexistent/fluid-test.sock".into());
        assert!(matches!(
            gone.connect().await,
            Err(EndpointError::Connect { .. })
        ));
    }
}
