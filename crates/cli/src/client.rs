//! A thin HTTPS client for one node: calls routes by their operation id
//! from [`api::ROUTES`], sends and decodes JSON, and turns refusals into
//! [`api::ApiError`]s. Deciding what an error means to the operator is
//! [`crate::failure`]'s job.

use std::time::Duration;

use api::{ApiError, Method, Route};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::endpoint::Endpoint;
use crate::tls::SeenFingerprint;

/// How long to wait for a TCP connection and TLS handshake.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a whole request may take (not streams, which run until the
/// node or the operator ends them).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// A client for one node endpoint.
#[derive(Debug)]
pub struct NodeClient {
    http: reqwest::Client,
    endpoint: Endpoint,
    request_timeout: Duration,
    seen: Option<SeenFingerprint>,
}

/// The HTTP client cannot be built.
#[derive(Debug, thiserror::Error)]
#[error("cannot set up the HTTPS client")]
pub struct BuildClientError(#[source] reqwest::Error);

/// A call failed.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// No answer: DNS, TCP, TLS, a timeout, or the connection broke.
    #[error("cannot reach {endpoint}")]
    Transport {
        /// Where.
        endpoint: Endpoint,
        /// Why; [`crate::failure`] digs the cause out of this chain.
        #[source]
        source: reqwest::Error,
    },
    /// The node answered with a Cairn error.
    #[error("the node refused {operation}")]
    Refused {
        /// The route's operation id.
        operation: &'static str,
        /// The error body.
        error: ApiError,
        /// Seconds from a `Retry-After` header.
        retry_after_s: Option<u64>,
    },
    /// The node answered an error status without a Cairn error body (a
    /// proxy, or not a Cairn node).
    #[error("{endpoint} answered HTTP {status} to {operation}, which is not a Cairn API answer")]
    UnexpectedStatus {
        /// Where.
        endpoint: Endpoint,
        /// The route's operation id.
        operation: &'static str,
        /// HTTP status.
        status: u16,
    },
    /// The answer is not the JSON the API promises.
    #[error("the node's answer to {operation} is not what this client understands")]
    Decode {
        /// The route's operation id.
        operation: &'static str,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
    /// The request body cannot be serialised (a bug in this client).
    #[error("cannot encode the request for {operation}")]
    Encode {
        /// The route's operation id.
        operation: &'static str,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
    /// The route table has no such operation (a bug in this client).
    #[error("the API has no operation {0}")]
    UnknownOperation(&'static str),
}

impl NodeClient {
    /// A client that talks to `endpoint` with `tls` (see [`crate::tls`]).
    /// `seen` is the pinned verifier's record, when there is one.
    pub fn new(
        endpoint: Endpoint,
        tls: rustls::ClientConfig,
        seen: Option<SeenFingerprint>,
    ) -> Result<Self, BuildClientError> {
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .connect_timeout(CONNECT_TIMEOUT)
            .user_agent(concat!("cairn/", env!("CARGO_PKG_VERSION")))
            // The API never redirects; following one would send the client
            // certificate's requests somewhere unverified by this code.
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .build()
            .map_err(BuildClientError)?;
        Ok(NodeClient {
            http,
            endpoint,
            request_timeout: REQUEST_TIMEOUT,
            seen,
        })
    }

    /// Caps each later request (not streams) at `timeout` instead of
    /// [`REQUEST_TIMEOUT`].
    pub fn set_request_timeout(&mut self, timeout: Duration) {
        self.request_timeout = timeout;
    }

    /// The endpoint this client talks to.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// What the pinned verifier saw in the last handshake.
    pub fn seen_fingerprint(&self) -> Option<cluster::pki::Fingerprint> {
        self.seen.as_ref().and_then(SeenFingerprint::get)
    }

    fn route(operation: &'static str) -> Result<&'static Route, RequestError> {
        api::routes::route(operation).ok_or(RequestError::UnknownOperation(operation))
    }

    fn request(&self, route: &Route, query: &str) -> reqwest::RequestBuilder {
        let method = match route.method {
            Method::Get => reqwest::Method::GET,
            Method::Post => reqwest::Method::POST,
            Method::Put => reqwest::Method::PUT,
            Method::Delete => reqwest::Method::DELETE,
        };
        self.http
            .request(method, self.endpoint.url(&format!("{}{query}", route.path)))
    }

    fn transport(&self, source: reqwest::Error) -> RequestError {
        RequestError::Transport {
            endpoint: self.endpoint.clone(),
            source,
        }
    }

    /// Calls `operation` with an optional JSON body and decodes the JSON
    /// answer.
    pub async fn call<B: Serialize, T: DeserializeOwned>(
        &self,
        operation: &'static str,
        body: Option<&B>,
    ) -> Result<T, RequestError> {
        let route = Self::route(operation)?;
        let mut request = self.request(route, "").timeout(self.request_timeout);
        if let Some(body) = body {
            let json = serde_json::to_vec(body)
                .map_err(|source| RequestError::Encode { operation, source })?;
            request = request
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(json);
        }
        let response = request.send().await.map_err(|e| self.transport(e))?;
        let response = self.check(operation, response).await?;
        let bytes = response.bytes().await.map_err(|e| self.transport(e))?;
        serde_json::from_slice(&bytes).map_err(|source| RequestError::Decode { operation, source })
    }

    /// Calls `operation` with `query` (starting with `?`) and hands back the
    /// open response for the caller to read as a stream, capped at
    /// `timeout` when there is one (a followed log has none).
    pub async fn stream(
        &self,
        operation: &'static str,
        query: &str,
        timeout: Option<Duration>,
    ) -> Result<reqwest::Response, RequestError> {
        let route = Self::route(operation)?;
        let mut request = self
            .request(route, query)
            .header(reqwest::header::ACCEPT, api::NDJSON);
        if let Some(timeout) = timeout {
            request = request.timeout(timeout);
        }
        let response = request.send().await.map_err(|e| self.transport(e))?;
        self.check(operation, response).await
    }

    /// The next chunk of a streamed response, `None` at its end.
    pub async fn next_chunk(
        &self,
        response: &mut reqwest::Response,
    ) -> Result<Option<Vec<u8>>, RequestError> {
        response
            .chunk()
            .await
            .map(|c| c.map(|bytes| bytes.to_vec()))
            .map_err(|e| self.transport(e))
    }

    async fn check(
        &self,
        operation: &'static str,
        response: reqwest::Response,
    ) -> Result<reqwest::Response, RequestError> {
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let retry_after_s = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse().ok());
        let bytes = response.bytes().await.map_err(|e| self.transport(e))?;
        match serde_json::from_slice::<ApiError>(&bytes) {
            Ok(error) => Err(RequestError::Refused {
                operation,
                error,
                retry_after_s,
            }),
            Err(_) => Err(RequestError::UnexpectedStatus {
                endpoint: self.endpoint.clone(),
                operation,
                status: status.as_u16(),
            }),
        }
    }
}
