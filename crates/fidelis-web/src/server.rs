//! The HTTP server: an accept loop serving each connection with hyper's HTTP/1.1 under
//! bounds a client cannot stretch.
//!
//! - **Head timeout**: a client has [`ServerConfig::header_timeout`] to send a request's
//!   head — from the connection's opening, and again whenever a kept-alive connection
//!   goes idle between requests — or the connection is closed. A head trickled a byte at
//!   a time, or a connection that never sends a byte, holds nothing for long.
//! - **Connection cap**: at most [`ServerConfig::max_connections`] are open (by default
//!   what the process's file-descriptor limit allows, less a reserve for the database and
//!   files, at most 4,096). When a new connection arrives at the cap, the oldest
//!   connection with no request in flight is closed to make room — so idle connections
//!   piled up by one client never lock out a health check or a real request; only when
//!   every connection is busy is the newcomer closed at once.
//! - **Unread answers**: a connection whose client stops reading — the answer waits to be
//!   written for longer than [`ServerConfig::request_timeout`] — is closed, and with it
//!   whatever produced the answer (a streamed batch stops reading its body).
//! - **Head size**: hyper's own hard limits are set well above those of [`crate::edge`],
//!   which answers a problem; only a head beyond them gets hyper's bare status line.
//!
//! HTTP/2 and TLS are a reverse proxy's business; this serves HTTP/1.1.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, watch};

use crate::{AppState, ServerConfig, app};

/// hyper's hard limits: far above what [`crate::edge`] lets through, so that the edge
/// answers with a problem (hyper could only answer with a bare status).
const HYPER_MAX_HEADERS: usize = 1_000;
const HYPER_MAX_HEADER_BYTES: usize = 256 * 1024;

/// File descriptors kept for everything but client connections: database connections,
/// SQLite's files, logs.
const RESERVED_DESCRIPTORS: u64 = 256;

/// The connection cap when none is configured: what the file-descriptor limit (raised to
/// its hard maximum first) leaves after the reserve, at most 4,096.
pub fn default_max_connections() -> usize {
    let limit = rlimit::increase_nofile_limit(u64::MAX).unwrap_or(1_024);
    let room = if limit > 2 * RESERVED_DESCRIPTORS {
        limit - RESERVED_DESCRIPTORS
    } else {
        limit / 2
    };
    usize::try_from(room.clamp(16, 4_096)).unwrap_or(4_096)
}

/// One open connection: how many of its requests are in flight, and how to close it.
struct Open {
    in_flight: Arc<AtomicUsize>,
    close: Arc<Notify>,
}

#[derive(Default)]
struct Connections {
    /// By id, which grows with each connection: the first is the oldest.
    open: Mutex<BTreeMap<u64, Open>>,
    /// Told when the last connection has closed.
    drained: Notify,
}

impl Connections {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Open>> {
        self.open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Registers a new connection if there is room — made, if need be, by closing the
    /// oldest idle one. `None`: every connection is busy.
    fn admit(&self, id: u64, max: usize) -> Option<(Arc<AtomicUsize>, Arc<Notify>)> {
        let mut open = self.lock();
        if open.len() >= max {
            let idle = open
                .iter()
                .find(|(_, c)| c.in_flight.load(Ordering::Acquire) == 0)
                .map(|(&id, _)| id)?;
            if let Some(evicted) = open.remove(&idle) {
                evicted.close.notify_one();
            }
        }
        let entry = Open {
            in_flight: Arc::default(),
            close: Arc::default(),
        };
        let handles = (Arc::clone(&entry.in_flight), Arc::clone(&entry.close));
        open.insert(id, entry);
        Some(handles)
    }

    fn remove(&self, id: u64) {
        let mut open = self.lock();
        open.remove(&id);
        if open.is_empty() {
            self.drained.notify_waiters();
        }
    }
}

/// A connection's socket that notes since when a write has been waiting for the client to
/// read: milliseconds since `opened`, or 0 while nothing waits.
struct Watched {
    stream: TcpStream,
    opened: std::time::Instant,
    blocked_since: Arc<AtomicU64>,
}

impl Watched {
    fn note_write<T>(&self, poll: &Poll<std::io::Result<T>>) {
        match poll {
            Poll::Pending => {
                let now = self.opened.elapsed().as_millis().max(1) as u64;
                let _ = self.blocked_since.compare_exchange(
                    0,
                    now,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                );
            }
            Poll::Ready(_) => self.blocked_since.store(0, Ordering::Release),
        }
    }
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let poll = Pin::new(&mut self.stream).poll_write(cx, buf);
        self.note_write(&poll);
        poll
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let poll = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        self.note_write(&poll);
        poll
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let poll = Pin::new(&mut self.stream).poll_flush(cx);
        self.note_write(&poll);
        poll
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// Counts a request in flight on its connection while it lives.
struct InFlight(Arc<AtomicUsize>);

impl InFlight {
    fn new(counter: &Arc<AtomicUsize>) -> Self {
        counter.fetch_add(1, Ordering::AcqRel);
        Self(Arc::clone(counter))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Serves the application on `listen` until SIGINT or SIGTERM, then lets the requests in
/// flight finish (up to the request timeout) before returning.
pub async fn serve(state: AppState, listen: SocketAddr) -> std::io::Result<()> {
    let listener = TcpListener::bind(listen).await?;
    serve_on(listener, state, crate::shutdown()).await
}

/// [`serve`] on a bound listener, until `stop` completes.
pub async fn serve_on(
    listener: TcpListener,
    state: AppState,
    stop: impl std::future::Future<Output = ()>,
) -> std::io::Result<()> {
    let config: Arc<ServerConfig> = Arc::clone(&state.config);
    let router = app(state);
    let connections = Arc::new(Connections::default());
    let (stopping, stopped) = watch::channel(false);
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(config.header_timeout)
        .max_headers(HYPER_MAX_HEADERS)
        .max_header_size(HYPER_MAX_HEADER_BYTES)
        .keep_alive(true);
    let http = Arc::new(http);
    tokio::pin!(stop);
    let mut next_id: u64 = 0;
    loop {
        let (stream, peer) = tokio::select! {
            () = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of descriptors (EMFILE/ENFILE) or a connection reset before
                    // it was accepted: wait a little rather than spin.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        next_id += 1;
        let Some((in_flight, close)) = connections.admit(next_id, config.max_connections) else {
            tracing::warn!(%peer, "every connection is busy: closing a new one");
            drop(stream);
            continue;
        };
        tokio::spawn(connection(
            stream,
            peer,
            next_id,
            config.request_timeout,
            router.clone(),
            Arc::clone(&http),
            Arc::clone(&connections),
            (in_flight, close),
            stopped.clone(),
        ));
    }
    drop(listener);
    let _ = stopping.send(true);
    let grace = config.request_timeout + Duration::from_secs(2);
    let drained = async {
        loop {
            let wait = connections.drained.notified();
            if connections.lock().is_empty() {
                return;
            }
            wait.await;
        }
    };
    let _ = tokio::time::timeout(grace, drained).await;
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    id: u64,
    write_stall: Duration,
    router: Router,
    http: Arc<hyper::server::conn::http1::Builder>,
    connections: Arc<Connections>,
    (in_flight, close): (Arc<AtomicUsize>, Arc<Notify>),
    mut stopped: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
        let counted = InFlight::new(&in_flight);
        let response = tower::ServiceExt::oneshot(router.clone(), request);
        async move {
            let response = response.await;
            drop(counted);
            response
        }
    });
    let blocked_since = Arc::new(AtomicU64::new(0));
    let watched = Watched {
        stream,
        opened: std::time::Instant::now(),
        blocked_since: Arc::clone(&blocked_since),
    };
    let opened = watched.opened;
    let conn = http.serve_connection(TokioIo::new(watched), service);
    tokio::pin!(conn);
    let mut closing = false;
    let mut check = tokio::time::interval(Duration::from_secs(1).min(write_stall));
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = check.tick() => {
                let since = blocked_since.load(Ordering::Acquire);
                let now = opened.elapsed().as_millis() as u64;
                if since != 0 && now.saturating_sub(since) > write_stall.as_millis() as u64 {
                    tracing::debug!(%peer, "the client stopped reading: closing the connection");
                    break;
                }
            }
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(%peer, error = %e, "connection ended");
                }
                break;
            }
            () = close.notified(), if !closing => {
                conn.as_mut().graceful_shutdown();
                closing = true;
            }
            _ = stopped.wait_for(|stop| *stop), if !closing => {
                conn.as_mut().graceful_shutdown();
                closing = true;
            }
        }
    }
    connections.remove(id);
}
