//! The daemons' small plain-HTTP endpoints (`/healthz`, `/metrics`), served by hyper: the one
//! HTTP server of the product, so no request is ever parsed by hand (a request that arrives in
//! several segments, pipelined or kept alive is hyper's to handle).

use std::convert::Infallible;
use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;

/// A client that has not sent its request head within this is dropped.
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// What a handler answers.
pub type Reply = Response<Full<Bytes>>;

/// A reply of `status` with a body of type `content_type`.
pub fn reply(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Reply {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(content_type),
    );
    r
}

/// A plain-text reply.
pub fn text(status: StatusCode, body: impl Into<Bytes>) -> Reply {
    reply(status, "text/plain; charset=utf-8", body)
}

/// Serves HTTP/1.1 on one connection (plain TCP, or a TLS stream its caller accepted) until
/// the client closes it; `handle` answers each request.
pub async fn serve_connection<I, H, F>(io: I, handle: H) -> Result<(), hyper::Error>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    H: Fn(Request<Incoming>) -> F + Send + Sync + 'static,
    F: Future<Output = Reply> + Send + 'static,
{
    let service = hyper::service::service_fn(move |req| {
        let answer = handle(req);
        async move { Ok::<_, Infallible>(answer.await) }
    });
    hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .serve_connection(TokioIo::new(io), service)
        .await
}

/// Accepts connections on `listener` and serves each with `handle` until `stop` completes
/// (connections already open finish on their own).
pub async fn serve<H, F>(listener: TcpListener, handle: H, stop: impl Future<Output = ()>)
where
    H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Reply> + Send + 'static,
{
    tokio::pin!(stop);
    loop {
        let accepted = tokio::select! {
            _ = &mut stop => return,
            a = listener.accept() => a,
        };
        match accepted {
            Ok((stream, peer)) => {
                let handle = handle.clone();
                tokio::spawn(async move {
                    if let Err(e) = serve_connection(stream, handle).await {
                        tracing::debug!(%peer, "http connection ended: {e}");
                    }
                });
            }
            Err(e) => {
                // Out of descriptors and the like: pause rather than spin.
                tracing::warn!("accepting an http connection: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Sends `parts` one write at a time, with a pause between, and reads the whole answer.
    async fn exchange(addr: std::net::SocketAddr, parts: &[&str]) -> String {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.set_nodelay(true).unwrap();
        for p in parts {
            s.write_all(p.as_bytes()).await.unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn a_request_in_pieces_and_requests_kept_alive_are_answered() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(
            listener,
            |req: Request<Incoming>| async move {
                match req.uri().path() {
                    "/x" => text(StatusCode::OK, "x\n"),
                    _ => text(StatusCode::NOT_FOUND, "no\n"),
                }
            },
            async {
                let _ = stop_rx.await;
            },
        ));
        // The request line split mid-word, as a client writing piece by piece sends it (the
        // hand-written server this replaces saw only "GET " and answered 404).
        let split = exchange(
            addr,
            &[
                "GET ",
                "/x HTTP/1.1\r\n",
                "Host: a\r\nConnection: close\r\n",
                "\r\n",
            ],
        )
        .await;
        assert!(split.starts_with("HTTP/1.1 200"), "{split}");
        assert!(split.ends_with("x\n"), "{split}");
        // Two requests on one connection, the second closing it.
        let two = exchange(
            addr,
            &["GET /x HTTP/1.1\r\nHost: a\r\n\r\nGET /y HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"],
        )
        .await;
        assert_eq!(two.matches("HTTP/1.1 ").count(), 2, "{two}");
        assert!(two.contains("HTTP/1.1 404"), "{two}");
        // Not HTTP at all: an error status, not a crash of the server.
        let junk = exchange(addr, &["\x16\x03\x01 hello\r\n\r\n"]).await;
        assert!(
            junk.is_empty() || junk.starts_with("HTTP/1.1 400"),
            "{junk}"
        );
        let after = exchange(addr, &["GET /x HTTP/1.1\r\nConnection: close\r\n\r\n"]).await;
        assert!(after.starts_with("HTTP/1.1 200"), "{after}");
        let _ = stop_tx.send(());
        server.await.unwrap();
    }
}
