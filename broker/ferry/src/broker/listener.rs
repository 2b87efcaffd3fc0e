//! The accept loop: HTTP/1.1 over hyper, with the bounds `axum::serve` does not have. A
//! client that opens sockets and sends nothing must not be able to take the broker to its
//! file-descriptor limit (about 20,000 idle sockets once kept `/healthz` down for 38 s).
//!
//! - **At most `max_connections` at once.** At the cap, the oldest connection is asked to
//!   close — at once if it is idle (waiting for a request), after its current request
//!   otherwise — and the new one waits briefly for the slot it frees. So a flood of idle
//!   sockets sheds itself and a real client still gets in; if no slot frees up (every
//!   connection is busy), the new one is closed at once rather than queued.
//! - **A header-read timeout.** A connection must send a complete request head within
//!   `header_read_timeout` of being opened or of its previous response; hyper closes it
//!   otherwise. For a kept-alive connection that is also its idle time between requests.
//! - **An idle timeout.** A connection on which nothing was read or written for
//!   `idle_timeout` is dropped: a request body that stalls, a client that stops reading
//!   its response. (Event streams send a keep-alive every 15 s and are not idle.)

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, Semaphore};
use tower::ServiceExt as _;

/// The bounds on connections (`[http]` of the config).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectionLimits {
    pub max_connections: usize,
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
}

pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
        }
    }
}

/// How long a new connection at the cap waits for the oldest one to close.
const SHED_WAIT: Duration = Duration::from_millis(200);
/// How long the server waits for open connections to finish when it stops.
const DRAIN_WAIT: Duration = Duration::from_secs(5);

/// The open connections, oldest first, each with the signal that asks it to close.
#[derive(Default)]
struct Open {
    next_id: u64,
    by_age: BTreeMap<u64, Arc<Notify>>,
}

impl Open {
    fn add(&mut self) -> (u64, Arc<Notify>) {
        let id = self.next_id;
        self.next_id += 1;
        let shed = Arc::new(Notify::new());
        self.by_age.insert(id, Arc::clone(&shed));
        (id, shed)
    }

    /// Asks the oldest connection not yet asked to close.
    fn shed_oldest(&mut self) {
        if let Some((_, shed)) = self.by_age.pop_first() {
            // `notify_one` keeps the signal if the connection is not waiting for it yet.
            shed.notify_one();
        }
    }
}

fn lock(open: &Mutex<Open>) -> std::sync::MutexGuard<'_, Open> {
    // The map stays consistent whatever panicked while holding it.
    open.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Serves `app` on `listener` until `shutdown` resolves, then lets open connections finish
/// their requests (for [`DRAIN_WAIT`] at most).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ConnectionLimits,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let open = Arc::new(Mutex::new(Open::default()));
    let (stopping, _) = tokio::sync::watch::channel(false);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, client) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors, or a connection reset before it was
                    // accepted: neither ends the server. A pause keeps an exhausted
                    // process from spinning.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let slot = match Arc::clone(&slots).try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => {
                lock(&open).shed_oldest();
                match tokio::time::timeout(SHED_WAIT, Arc::clone(&slots).acquire_owned()).await {
                    Ok(Ok(slot)) => slot,
                    _ => {
                        tracing::warn!(%client, "at the connection cap with no idle connection to close; refused");
                        drop(stream);
                        continue;
                    }
                }
            }
        };
        let (id, shed) = lock(&open).add();
        let open = Arc::clone(&open);
        let app = app.clone();
        let mut stopping = stopping.subscribe();
        tokio::spawn(async move {
            serve_connection(stream, client, app, limits, &shed, &mut stopping).await;
            lock(&open).by_age.remove(&id);
            drop(slot);
        });
    }
    let _ = stopping.send(true);
    // Every slot back means every connection closed.
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    let _ = tokio::time::timeout(DRAIN_WAIT, slots.acquire_many(all)).await;
    Ok(())
}

async fn serve_connection(
    stream: TcpStream,
    client: SocketAddr,
    app: Router,
    limits: ConnectionLimits,
    shed: &Notify,
    stopping: &mut tokio::sync::watch::Receiver<bool>,
) {
    let began = Instant::now();
    let activity = Arc::new(AtomicU64::new(0));
    let io = TokioIo::new(Watched {
        inner: stream,
        began,
        activity: Arc::clone(&activity),
    });
    let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        request.extensions_mut().insert(ConnectInfo(client));
        app.clone().oneshot(request)
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(true);
    let connection = builder.serve_connection(io, service);
    let mut connection = std::pin::pin!(connection);
    let mut closing = false;
    let check_every = (limits.idle_timeout / 4).max(Duration::from_millis(50));
    loop {
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(error) = result {
                    tracing::debug!(%client, %error, "connection ended");
                }
                return;
            }
            () = shed.notified(), if !closing => {
                connection.as_mut().graceful_shutdown();
                closing = true;
            }
            _ = stopping.changed(), if !closing => {
                connection.as_mut().graceful_shutdown();
                closing = true;
            }
            () = tokio::time::sleep(check_every) => {
                let last = Duration::from_millis(activity.load(Ordering::Relaxed));
                if began.elapsed().saturating_sub(last) >= limits.idle_timeout {
                    tracing::debug!(%client, "idle connection dropped");
                    return;
                }
            }
        }
    }
}

/// A stream that notes when it last moved a byte (milliseconds since `began`).
struct Watched {
    inner: TcpStream,
    began: Instant,
    activity: Arc<AtomicU64>,
}

impl Watched {
    fn moved(&self) {
        let millis = u64::try_from(self.began.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.activity.store(millis, Ordering::Relaxed);
    }
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.moved();
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.moved();
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.moved();
        }
        polled
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
#[allow(clippy::unwrap_used, reason = "a test reports failure by panicking")]
mod tests {
    use super::*;
    use axum::routing::get;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn start(limits: ConnectionLimits) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = Router::new().route("/healthz", get(|| async { "ok" }));
        tokio::spawn(serve(listener, app, limits, std::future::pending()));
        addr
    }

    /// One `GET /healthz` on a new connection; the status line.
    async fn healthz(addr: SocketAddr) -> String {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.unwrap();
        answer.lines().next().unwrap_or_default().to_owned()
    }

    /// Whether the server closed `stream` (EOF or reset) within `within`.
    async fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
        let mut byte = [0u8; 1];
        match tokio::time::timeout(within, stream.read(&mut byte)).await {
            Ok(Ok(0) | Err(_)) => true,
            Ok(Ok(_)) | Err(_) => false,
        }
    }

    #[tokio::test]
    async fn idle_connections_beyond_the_cap_are_shed_and_healthz_still_answers() {
        let limits = ConnectionLimits {
            max_connections: 8,
            header_read_timeout: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(60),
        };
        let addr = start(limits).await;
        // Three times the cap of sockets that send nothing.
        let mut idle = Vec::new();
        for _ in 0..24 {
            idle.push(TcpStream::connect(addr).await.unwrap());
        }
        assert_eq!(healthz(addr).await, "HTTP/1.1 200 OK");
        // The oldest were closed to make room; the cap holds (at most 8 still open).
        let mut still_open = 0;
        for stream in &mut idle {
            if !closed_within(stream, Duration::from_millis(300)).await {
                still_open += 1;
            }
        }
        assert!(still_open <= 8, "{still_open} idle connections are open");
        assert!(
            closed_within(&mut idle[0], Duration::from_millis(10)).await,
            "the oldest idle connection was not shed"
        );
    }

    #[tokio::test]
    async fn a_connection_that_sends_no_headers_is_closed_after_the_header_timeout() {
        let limits = ConnectionLimits {
            header_read_timeout: Duration::from_millis(300),
            ..ConnectionLimits::default()
        };
        let addr = start(limits).await;
        let mut silent = TcpStream::connect(addr).await.unwrap();
        let mut partial = TcpStream::connect(addr).await.unwrap();
        partial
            .write_all(b"GET /healthz HTTP/1.1\r\n")
            .await
            .unwrap();
        let began = Instant::now();
        assert!(closed_within(&mut silent, Duration::from_secs(5)).await);
        assert!(closed_within(&mut partial, Duration::from_secs(5)).await);
        let took = began.elapsed();
        assert!(took >= Duration::from_millis(250), "closed after {took:?}");
        // And a prompt client is served as before.
        assert_eq!(healthz(addr).await, "HTTP/1.1 200 OK");
    }

    #[tokio::test]
    async fn a_stalled_request_body_is_dropped_after_the_idle_timeout() {
        let limits = ConnectionLimits {
            idle_timeout: Duration::from_millis(400),
            ..ConnectionLimits::default()
        };
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = Router::new().route(
            "/upload",
            axum::routing::post(|body: axum::body::Bytes| async move { body.len().to_string() }),
        );
        tokio::spawn(serve(listener, app, limits, std::future::pending()));
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(b"POST /upload HTTP/1.1\r\nhost: x\r\ncontent-length: 1000\r\n\r\nabc")
            .await
            .unwrap();
        assert!(closed_within(&mut stream, Duration::from_secs(5)).await);
    }
}
