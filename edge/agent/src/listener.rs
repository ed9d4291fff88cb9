//! Serving HTTP on a TCP listener (the kernel's, or one inside the WireGuard overlay) within
//! limits, for the API and the cluster listener alike: a
//! cap on open connections per listener and per source address (a connection over either is
//! closed at once), and a header timeout that also closes idle keep-alive connections, so
//! neither a flood of idle sockets nor slow senders can use up the process's file descriptors.
//! Bodies are the handlers' business: the API reads none before the token is checked, the
//! cluster listener screens each message's header first and reads its body against a deadline.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::throttle::Throttle;

/// What one listener allows.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    /// Open connections at once.
    pub(crate) connections: usize,
    /// Open connections at once from one source address.
    pub(crate) per_source: usize,
    /// Time to send a request's headers, counted from when the connection opened or its last
    /// answer went out: an idle or slow connection is closed after this.
    pub(crate) header_timeout: Duration,
}

/// A pause after a failed `accept` (out of file descriptors, most likely), so the loop waits
/// for connections to close instead of spinning.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// Largest request head (request line and headers) a connection may buffer.
const MAX_HEAD: usize = 16 << 10;
// hyper refuses (panics on) a buffer under 8 KiB.
const _: () = assert!(MAX_HEAD >= 8192);

/// A source of connections: the kernel's TCP listener or the overlay's.
pub(crate) trait Accept: Send + 'static {
    type Io: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    fn accept(&self) -> impl Future<Output = io::Result<(Self::Io, SocketAddr)>> + Send;
}

impl Accept for tokio::net::TcpListener {
    type Io = tokio::net::TcpStream;

    async fn accept(&self) -> io::Result<(Self::Io, SocketAddr)> {
        let (stream, peer) = tokio::net::TcpListener::accept(self).await?;
        let _ = stream.set_nodelay(true);
        Ok((stream, peer))
    }
}

impl Accept for constella_overlay::TcpListener {
    type Io = constella_overlay::TcpStream;

    async fn accept(&self) -> io::Result<(Self::Io, SocketAddr)> {
        constella_overlay::TcpListener::accept(self).await
    }
}

/// Serves `app` on `listener` within `limits` until the task is dropped.
pub(crate) async fn serve(listener: impl Accept, app: Router, limits: Limits, name: &'static str) {
    let slots = Slots::new(limits);
    let throttle = Throttle::default();
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                if let Some(unlogged) = throttle.due("accept_failed", Instant::now()) {
                    tracing::warn!(listener = name, error = %e, unlogged, "cannot accept connections");
                }
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let Some(slot) = slots.take(peer.ip()) else {
            if let Some(unlogged) = throttle.due("over_limit", Instant::now()) {
                tracing::warn!(listener = name, source = %peer.ip(), unlogged, "connection limit reached; closing new connections");
            }
            drop(stream);
            continue;
        };
        let service = TowerToHyperService::new(app.clone());
        tokio::spawn(async move {
            let _slot = slot;
            let mut http = hyper::server::conn::http1::Builder::new();
            http.timer(TokioTimer::new())
                .header_read_timeout(limits.header_timeout)
                .max_buf_size(MAX_HEAD);
            // A closed or timed-out connection is the normal end of one; nothing to report.
            let _ = http.serve_connection(TokioIo::new(stream), service).await;
        });
    }
}

/// Open connections, counted per listener and per source.
#[derive(Clone)]
struct Slots {
    limits: Limits,
    open: Arc<Mutex<Open>>,
}

#[derive(Default)]
struct Open {
    total: usize,
    by_source: HashMap<IpAddr, usize>,
}

impl Slots {
    fn new(limits: Limits) -> Slots {
        Slots {
            limits,
            open: Arc::default(),
        }
    }

    /// A slot for a connection from `source`, or none if either cap is reached.
    fn take(&self, source: IpAddr) -> Option<Slot> {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let from_source = open.by_source.get(&source).copied().unwrap_or(0);
        if open.total >= self.limits.connections || from_source >= self.limits.per_source {
            return None;
        }
        open.total += 1;
        open.by_source.insert(source, from_source + 1);
        Some(Slot {
            slots: self.clone(),
            source,
        })
    }
}

/// One open connection; dropping it frees the slot.
struct Slot {
    slots: Slots,
    source: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self
            .slots
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        open.total -= 1;
        if let Some(count) = open.by_source.get_mut(&self.source) {
            *count -= 1;
            if *count == 0 {
                open.by_source.remove(&self.source);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_cap_each_source_and_the_listener_and_free_on_drop() {
        let slots = Slots::new(Limits {
            connections: 3,
            per_source: 2,
            header_timeout: Duration::from_secs(1),
        });
        let (a, b, c) = (
            IpAddr::from([10, 0, 0, 1]),
            IpAddr::from([10, 0, 0, 2]),
            IpAddr::from([10, 0, 0, 3]),
        );
        let a1 = slots.take(a).expect("first from a");
        let _a2 = slots.take(a).expect("second from a");
        assert!(slots.take(a).is_none(), "a is at its cap");
        let _b1 = slots.take(b).expect("b has room");
        assert!(slots.take(c).is_none(), "the listener is full");
        drop(a1);
        let _c1 = slots.take(c).expect("a closed connection frees a slot");
        assert!(slots.take(a).is_none(), "the listener is full again");
    }
}
