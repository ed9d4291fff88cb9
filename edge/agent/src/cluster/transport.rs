//! The cluster's transport seam: a node hands a peer address and an opaque request (a signed
//! envelope or a join request) to a `Transport` and gets the peer's opaque answer back: HTTP/1.1
//! with pooled keep-alive connections. A peer address inside the overlay's network is reached
//! over TCP in the userspace WireGuard overlay, any other over the operating system's TCP;
//! membership, election and calls only see bytes.

use std::future::Future;
use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::Uri;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::{TokioExecutor, TokioIo};
use ipnet::Ipv4Net;

use constella_cluster::envelope::MAX_BODY;

/// The HTTP path for signed envelopes.
pub(crate) const MESSAGE_PATH: &str = "/cluster/v1/message";
/// The HTTP path for join requests.
pub(crate) const JOIN_PATH: &str = "/cluster/v1/join";

#[derive(Debug, thiserror::Error)]
pub(crate) enum TransportError {
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("cannot reach {addr}: {reason}")]
    Unreachable { addr: String, reason: String },
    #[error("peer refused the message (HTTP {0})")]
    Refused(u16),
}

pub(crate) type Exchange = Pin<Box<dyn Future<Output = Result<Vec<u8>, TransportError>> + Send>>;

/// Sends one request to a peer and returns its answer.
pub(crate) trait Transport: Send + Sync + 'static {
    fn exchange(
        &self,
        addr: &str,
        path: &'static str,
        body: Vec<u8>,
        timeout: Duration,
    ) -> Exchange;
}

/// Bytes this node sent and received on the cluster transport (for the traffic benchmark).
#[derive(Debug, Default)]
pub(crate) struct Traffic {
    pub(crate) sent: AtomicU64,
    pub(crate) received: AtomicU64,
}

/// How long a TCP connection to a peer may take to open, either way.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// The overlay and its network: addresses in it are reached through it.
#[derive(Clone)]
pub(crate) struct OverlayRoute {
    pub(crate) overlay: constella_overlay::Overlay,
    pub(crate) network: Ipv4Net,
}

/// Opens the connections hyper's pool keeps: through the overlay for its addresses, through the
/// kernel otherwise. The speed-test client dials with it too, so a test between two nodes
/// measures the overlay path.
#[derive(Clone)]
pub(crate) struct Connector {
    overlay: Option<OverlayRoute>,
}

impl Connector {
    pub(crate) fn new(overlay: Option<OverlayRoute>) -> Connector {
        Connector { overlay }
    }
}

/// One connection either way.
pub(crate) enum Conn {
    Kernel(TokioIo<tokio::net::TcpStream>),
    Overlay(TokioIo<constella_overlay::TcpStream>),
}

impl tower::Service<Uri> for Connector {
    type Response = Conn;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Conn>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let overlay = self.overlay.clone();
        Box::pin(async move {
            let host = uri.host().unwrap_or_default().to_string();
            let port = uri.port_u16().unwrap_or(80);
            let through_overlay = host.parse::<Ipv4Addr>().ok().and_then(|ip| {
                overlay
                    .filter(|route| route.network.contains(&ip))
                    .map(|route| (ip, route))
            });
            let timed_out = || io::Error::new(io::ErrorKind::TimedOut, "connect timed out");
            match through_overlay {
                Some((ip, route)) => {
                    let stream = tokio::time::timeout(
                        CONNECT_TIMEOUT,
                        route.overlay.connect(SocketAddrV4::new(ip, port)),
                    )
                    .await
                    .map_err(|_| timed_out())??;
                    Ok(Conn::Overlay(TokioIo::new(stream)))
                }
                None => {
                    let stream = tokio::time::timeout(
                        CONNECT_TIMEOUT,
                        tokio::net::TcpStream::connect((host.as_str(), port)),
                    )
                    .await
                    .map_err(|_| timed_out())??;
                    stream.set_nodelay(true)?;
                    Ok(Conn::Kernel(TokioIo::new(stream)))
                }
            }
        })
    }
}

impl Connection for Conn {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

impl hyper::rt::Read for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Kernel(io) => Pin::new(io).poll_read(cx, buf),
            Conn::Overlay(io) => Pin::new(io).poll_read(cx, buf),
        }
    }
}

impl hyper::rt::Write for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Kernel(io) => Pin::new(io).poll_write(cx, buf),
            Conn::Overlay(io) => Pin::new(io).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Kernel(io) => Pin::new(io).poll_flush(cx),
            Conn::Overlay(io) => Pin::new(io).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Kernel(io) => Pin::new(io).poll_shutdown(cx),
            Conn::Overlay(io) => Pin::new(io).poll_shutdown(cx),
        }
    }
}

/// HTTP/1.1 with pooled keep-alive connections, over the overlay or the kernel's TCP.
pub(crate) struct HttpTransport {
    client: Client<Connector, Full<Bytes>>,
    pub(crate) traffic: Arc<Traffic>,
}

impl HttpTransport {
    pub(crate) fn new(overlay: Option<OverlayRoute>) -> HttpTransport {
        let connector = Connector::new(overlay);
        HttpTransport {
            client: Client::builder(TokioExecutor::new())
                // Shorter than the listener's idle close (`server::LIMITS`), so a pooled connection
                // is never reused just as the far side closes it.
                .pool_idle_timeout(Duration::from_secs(10))
                .build(connector),
            traffic: Arc::default(),
        }
    }
}

/// Approximate HTTP framing per exchange (request line, headers, status line), for counting.
const HTTP_OVERHEAD: u64 = 160;

impl Transport for HttpTransport {
    fn exchange(
        &self,
        addr: &str,
        path: &'static str,
        body: Vec<u8>,
        timeout: Duration,
    ) -> Exchange {
        let client = self.client.clone();
        let traffic = self.traffic.clone();
        let addr = addr.to_string();
        Box::pin(async move {
            let unreachable = |reason: String| TransportError::Unreachable {
                addr: addr.clone(),
                reason,
            };
            traffic
                .sent
                .fetch_add(body.len() as u64 + HTTP_OVERHEAD, Ordering::Relaxed);
            let request = hyper::Request::post(format!("http://{addr}{path}"))
                .header(hyper::header::CONTENT_TYPE, "application/octet-stream")
                .body(Full::new(Bytes::from(body)))
                .map_err(|e| unreachable(e.to_string()))?;
            let exchange = async {
                let response = client
                    .request(request)
                    .await
                    .map_err(|e| unreachable(format!("{e:#}")))?;
                let status = response.status();
                let body = Limited::new(response.into_body(), MAX_BODY + 4096)
                    .collect()
                    .await
                    .map_err(|e| unreachable(e.to_string()))?
                    .to_bytes();
                traffic
                    .received
                    .fetch_add(body.len() as u64 + HTTP_OVERHEAD, Ordering::Relaxed);
                if !status.is_success() {
                    return Err(TransportError::Refused(status.as_u16()));
                }
                Ok(body.to_vec())
            };
            tokio::time::timeout(timeout, exchange)
                .await
                .map_err(|_| TransportError::Timeout(timeout))?
        })
    }
}
