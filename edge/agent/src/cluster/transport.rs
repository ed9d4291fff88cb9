//! The cluster's transport seam: a node hands a peer address and an opaque request (a signed
//! envelope or a join request) to a `Transport` and gets the peer's opaque answer back. Today
//! that is HTTP/1.1 over the operating system's TCP; the overlay swaps in HTTP over userspace
//! WireGuard without touching membership, election or calls, which only see bytes.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

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

/// HTTP/1.1 over TCP with pooled keep-alive connections.
pub(crate) struct HttpTransport {
    client: Client<HttpConnector, Full<Bytes>>,
    pub(crate) traffic: Arc<Traffic>,
}

impl HttpTransport {
    pub(crate) fn new() -> HttpTransport {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(2)));
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
