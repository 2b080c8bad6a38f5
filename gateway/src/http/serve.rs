//! The HTTP server: an accept loop of our own around hyper, because the bounds the gateway needs
//! are not in `axum::serve` (axum 0.8 has no header timeout, no connection limit and no idle
//! timeout).
//!
//! Guarantees, each from `[http]` in the config:
//! - at most `max_connections` connections are open; one more is answered `503` and closed at
//!   once (it costs a descriptor for the moment of the answer, never a task);
//! - a client that does not finish a request's headers within `header_read_timeout_s` (or keeps
//!   a connection idle between requests that long) is disconnected;
//! - a connection on which nothing was read or written for `idle_timeout_s` is closed (a client
//!   that stops reading a live stream, or stalls in a body);
//! - a request head is at most [`MAX_HEAD_BYTES`]; a JSON body at most [`MAX_JSON_BODY_BYTES`];
//!   a roster at most `roster_max_bytes` (see `roster.rs`);
//! - at most `max_sse_clients` live streams, one roster check at a time ([`Limits`]);
//! - at shutdown ([`Api::shutdown`] cancelled) no new connection is accepted, every live stream
//!   ends, requests in flight get `shutdown_grace_s` to finish, then every connection is closed:
//!   [`serve`] always returns.

use super::Api;
use crate::config::HttpConfig;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Instant;

/// Largest request head (request line and headers) and read buffer of a connection.
pub const MAX_HEAD_BYTES: usize = 64 << 10;

/// Largest JSON body of a staff action (a few hundred bytes in practice).
pub const MAX_JSON_BODY_BYTES: usize = 64 << 10;

/// The body of the answer to a connection over `max_connections`: small enough to fit in any
/// socket buffer, so it is written without waiting.
const TOO_MANY_CONNECTIONS: &str = "{\"error\":\"the gateway has as many HTTP connections open as http.max_connections allows; try again in a moment\"}\n";

/// The configured limits and the slots that count against them.
#[derive(Debug)]
pub struct Limits {
    /// `[http]` as configured.
    pub config: HttpConfig,
    /// One permit per open live stream.
    pub(super) sse_slots: Arc<Semaphore>,
    /// One permit per roster being read and checked (a roster is held in memory meanwhile).
    pub(super) roster_slot: Arc<Semaphore>,
}

impl Limits {
    /// Limits as configured under `[http]`.
    pub fn new(config: &HttpConfig) -> Arc<Limits> {
        Arc::new(Limits {
            config: config.clone(),
            sse_slots: Arc::new(Semaphore::new(config.max_sse_clients)),
            roster_slot: Arc::new(Semaphore::new(1)),
        })
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s.max(1))
    }

    /// How long a connection may be silent.
    pub fn idle_timeout(&self) -> Duration {
        Self::secs(self.config.idle_timeout_s)
    }
}

/// Serves `api` on `listener` until `api.shutdown` is cancelled and the connections are closed:
/// HTTPS when `tls` is given (`[http] tls_cert`, `tls_key`), else plain HTTP.
pub async fn serve(listener: TcpListener, api: Api, tls: Option<Arc<rustls::ServerConfig>>) {
    let tls = tls.map(tokio_rustls::TlsAcceptor::from);
    raise_descriptor_limit(api.limits.config.max_connections);
    let cfg = api.limits.config.clone();
    let shutdown = api.shutdown.clone();
    let idle = api.limits.idle_timeout();
    let router = super::router(api);
    let mut http1 = hyper::server::conn::http1::Builder::new();
    http1
        .timer(TokioTimer::new())
        .header_read_timeout(Limits::secs(cfg.header_read_timeout_s))
        .max_buf_size(MAX_HEAD_BYTES);
    let slots = Arc::new(Semaphore::new(cfg.max_connections));
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of descriptors (EMFILE) and the like: wait instead of spinning.
                        metrics::counter!("eldergate_http_accept_errors_total").increment(1);
                        tracing::warn!(error = %e, "cannot accept an HTTP connection");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let Ok(slot) = slots.clone().try_acquire_owned() else {
                    refuse(stream, cfg.max_connections);
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let conn = Connection {
                    http1: http1.clone(),
                    router: router.clone(),
                    peer,
                    shutdown: shutdown.clone(),
                    idle,
                    handshake: Limits::secs(cfg.header_read_timeout_s),
                };
                metrics::gauge!("eldergate_http_connections").increment(1);
                let tls = tls.clone();
                connections.spawn(async move {
                    let _slot = slot;
                    match tls {
                        None => conn.run(stream).await,
                        Some(acceptor) => conn.run_tls(acceptor, stream).await,
                    }
                    metrics::gauge!("eldergate_http_connections").decrement(1);
                });
            }
        }
    }
    drop(listener);
    let open = connections.len();
    let grace = Limits::secs(cfg.shutdown_grace_s);
    tracing::info!(
        open,
        "HTTP server stopping: no new connections, {grace:?} for requests in flight"
    );
    let drained = tokio::time::timeout(grace, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            open = connections.len(),
            "closing HTTP connections whose requests did not finish within http.shutdown_grace_s"
        );
        connections.shutdown().await;
    }
    tracing::info!("HTTP server stopped");
}

/// One accepted connection and what serving it needs.
struct Connection {
    http1: hyper::server::conn::http1::Builder,
    router: axum::Router,
    peer: std::net::SocketAddr,
    shutdown: tokio_util::sync::CancellationToken,
    idle: Duration,
    /// How long a TLS handshake may take (as long as a request's headers may).
    handshake: Duration,
}

impl Connection {
    /// TLS first: a client that does not finish its handshake within the header timeout is
    /// disconnected, and a failed handshake is counted and logged (not an error of the server).
    async fn run_tls(self, acceptor: tokio_rustls::TlsAcceptor, stream: TcpStream) {
        let activity = Arc::new(Activity::new());
        let watched = Watched {
            inner: stream,
            activity: activity.clone(),
        };
        match tokio::time::timeout(self.handshake, acceptor.accept(watched)).await {
            Ok(Ok(tls)) => self.serve(tls, activity).await,
            Ok(Err(e)) => {
                metrics::counter!("eldergate_http_tls_handshake_failed_total").increment(1);
                tracing::info!(peer = %self.peer, error = %e, "TLS handshake failed");
            }
            Err(_) => {
                metrics::counter!("eldergate_http_tls_handshake_failed_total").increment(1);
                tracing::info!(peer = %self.peer, "TLS handshake not finished within http.header_read_timeout_s");
            }
        }
    }

    async fn run(self, stream: TcpStream) {
        let activity = Arc::new(Activity::new());
        let watched = Watched {
            inner: stream,
            activity: activity.clone(),
        };
        self.serve(watched, activity).await
    }

    async fn serve<S>(self, io: S, activity: Arc<Activity>)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let peer = self.peer;
        // Every request carries its TCP peer (the auth layer: loopback, throttling).
        let service = TowerToHyperService::new(tower::ServiceExt::map_request(
            self.router,
            move |mut r: hyper::Request<hyper::body::Incoming>| {
                r.extensions_mut()
                    .insert(crate::auth::layer::PeerAddr(peer));
                r
            },
        ));
        let conn = self.http1.serve_connection(TokioIo::new(io), service);
        tokio::pin!(conn);
        let mut draining = false;
        loop {
            tokio::select! {
                done = conn.as_mut() => {
                    if let Err(e) = done {
                        tracing::debug!(error = %e, "HTTP connection ended with an error");
                    }
                    break;
                }
                _ = self.shutdown.cancelled(), if !draining => {
                    conn.as_mut().graceful_shutdown();
                    draining = true;
                }
                _ = activity.silent_for(self.idle) => {
                    metrics::counter!("eldergate_http_idle_closed_total").increment(1);
                    tracing::debug!("closing an HTTP connection idle for {:?}", self.idle);
                    break;
                }
            }
        }
    }
}

/// Answers a connection over the limit with 503 and closes it, without waiting for the client.
fn refuse(stream: TcpStream, max: usize) {
    metrics::counter!("eldergate_http_rejected_total", "reason" => "too_many_connections")
        .increment(1);
    tracing::warn!(
        max_connections = max,
        "HTTP connection refused: http.max_connections are open"
    );
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\nretry-after: 1\r\n\r\n{TOO_MANY_CONNECTIONS}",
        TOO_MANY_CONNECTIONS.len()
    );
    let _ = stream.try_write(answer.as_bytes());
}

/// Raises the soft limit of open descriptors to the hard limit: the connection limit, not the
/// descriptor limit, should be what refuses a client (a systemd service starts with a soft limit
/// of 1024 and a much higher hard one).
fn raise_descriptor_limit(max_connections: usize) {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let before = getrlimit(Resource::Nofile);
    let raised = Rlimit {
        current: before.maximum,
        maximum: before.maximum,
    };
    let now = match setrlimit(Resource::Nofile, raised) {
        Ok(()) => getrlimit(Resource::Nofile),
        Err(e) => {
            tracing::warn!(error = %e, "cannot raise the open-file limit (RLIMIT_NOFILE)");
            before
        }
    };
    let soft = now.current.unwrap_or(u64::MAX);
    tracing::info!(
        before = before.current.unwrap_or(u64::MAX),
        now = soft,
        "open-file limit (soft RLIMIT_NOFILE)"
    );
    // Connections, plus the journal, the brokers, central and some room.
    let needed = u64::try_from(max_connections)
        .unwrap_or(u64::MAX)
        .saturating_add(128);
    if soft < needed {
        tracing::warn!(
            soft,
            needed,
            "the open-file limit is below http.max_connections + 128: lower http.max_connections or raise LimitNOFILE"
        );
    }
}

/// When a connection last moved a byte either way.
struct Activity {
    start: Instant,
    last_ms: AtomicU64,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    /// Completes once nothing moved for `limit`.
    async fn silent_for(&self, limit: Duration) {
        loop {
            let last = self.start + Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
            let deadline = last + limit;
            if Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline).await;
        }
    }
}

/// A TCP stream that records progress (bytes read or written) in its [`Activity`].
struct Watched {
    inner: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.touch();
        }
        r
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_connection_is_idle_only_after_the_limit_without_a_byte() {
        let activity = Arc::new(Activity::new());
        let limit = Duration::from_secs(60);
        tokio::time::sleep(Duration::from_secs(50)).await;
        activity.touch();
        let idle = tokio::spawn({
            let activity = activity.clone();
            async move { activity.silent_for(limit).await }
        });
        tokio::time::sleep(Duration::from_secs(59)).await;
        assert!(!idle.is_finished(), "a byte 59 s ago keeps it open");
        tokio::time::sleep(Duration::from_secs(2)).await;
        tokio::task::yield_now().await;
        assert!(idle.is_finished());
    }
}
