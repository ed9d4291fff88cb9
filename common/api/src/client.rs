//! A typed client of one agent's API over plain HTTP (the agent has no TLS; reach it on
//! loopback, a LAN or the overlay).

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::ErrorBody;

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No HTTP answer at all (nothing listening, connection refused or reset).
    #[error("cannot reach the agent's API at {authority}: {reason}")]
    Unreachable {
        /// `HOST:PORT` that was tried.
        authority: String,
        /// What the connection said.
        reason: String,
    },
    /// The agent answered with an error body.
    #[error("{}", .body.error.message)]
    Api {
        /// HTTP status.
        status: u16,
        /// The error.
        body: ErrorBody,
    },
    /// The answer was not the expected JSON (a different version, or not the agent).
    #[error("unexpected answer from {path} (HTTP {status}): {reason}")]
    Decode {
        /// The path called.
        path: String,
        /// HTTP status.
        status: u16,
        /// What did not fit.
        reason: String,
    },
}

/// One agent's API: its `HOST:PORT` and bearer token.
#[derive(Clone)]
pub struct Client {
    authority: String,
    token: String,
    http: HyperClient<HttpConnector, Full<Bytes>>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The token stays out of logs.
        f.debug_struct("Client")
            .field("authority", &self.authority)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// A client of the API at `authority` (`127.0.0.1:4747`) with `token`.
    pub fn new(authority: impl Into<String>, token: impl Into<String>) -> Client {
        Client {
            authority: authority.into(),
            token: token.into(),
            http: HyperClient::builder(TokioExecutor::new()).build_http(),
        }
    }

    /// `GET path`, decoded as `T`.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.call("GET", path, Bytes::new()).await
    }

    /// `POST path` with `body` as JSON, decoded as `T`.
    pub async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        // Encoding the crate's own request types cannot fail.
        let bytes = serde_json::to_vec(body).unwrap_or_default();
        self.call("POST", path, Bytes::from(bytes)).await
    }

    /// `DELETE path`; the answer's body is ignored.
    pub async fn delete(&self, path: &str) -> Result<(), ClientError> {
        self.call::<serde::de::IgnoredAny>("DELETE", path, Bytes::new())
            .await
            .map(drop)
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: Bytes,
    ) -> Result<T, ClientError> {
        let unreachable = |reason: String| ClientError::Unreachable {
            authority: self.authority.clone(),
            reason,
        };
        let request = hyper::Request::builder()
            .method(method)
            .uri(format!("http://{}{path}", self.authority))
            .header("authorization", format!("Bearer {}", self.token))
            .header("content-type", "application/json")
            .body(Full::new(body))
            .map_err(|e| unreachable(e.to_string()))?;
        let response = self
            .http
            .request(request)
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        let status = response.status().as_u16();
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(|e| unreachable(e.to_string()))?
            .to_bytes();
        let decode = |reason: String| ClientError::Decode {
            path: path.to_string(),
            status,
            reason,
        };
        if !(200..300).contains(&status) {
            let body: ErrorBody =
                serde_json::from_slice(&bytes).map_err(|e| decode(e.to_string()))?;
            return Err(ClientError::Api { status, body });
        }
        serde_json::from_slice(&bytes).map_err(|e| decode(e.to_string()))
    }
}
