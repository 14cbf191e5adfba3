//! A thin HTTPS client for one node: calls routes by their operation id
//! from [`api::ROUTES`], sends and decodes JSON, and turns refusals into
//! [`api::ApiError`]s. Deciding what an error means to the operator is
//! [`crate::failure`]'s job.
//!
//! A [`Call`] names the operation and carries what the route's path and
//! query need. [`Call::url`] is the one place URLs are made: each
//! `{name}` placeholder becomes one percent-encoded path segment, and the
//! query is the API's own query type, form-encoded, so that kv keys with
//! `/`, `?`, `&`, spaces or any Unicode reach the node as they were typed.

use std::time::Duration;

use api::{ApiError, Method, Route};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::endpoint::Endpoint;
use crate::tls::SeenFingerprint;

/// One call: an operation from [`api::ROUTES`], values for the `{name}`
/// placeholders of its path, and its query string.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Call {
    operation: &'static str,
    path: Vec<(&'static str, String)>,
    query: Option<String>,
}

/// A [`Call`] that cannot become a URL (a bug in this client, or a path
/// value no URL can carry).
#[derive(Debug, thiserror::Error)]
pub enum UrlError {
    /// The route's path has a placeholder the call gave no value for.
    #[error("no value for the path parameter {{{0}}}")]
    MissingParameter(String),
    /// The call gave a value for a placeholder the path does not have.
    #[error("the path has no parameter {{{0}}}")]
    UnusedParameter(&'static str),
    /// `.` and `..` would be resolved away as path segments, and an empty
    /// segment names nothing.
    #[error("{value:?} cannot be the path parameter {{{name}}}")]
    UnusableValue {
        /// The placeholder.
        name: &'static str,
        /// The value.
        value: String,
    },
    /// The endpoint does not make a base URL.
    #[error("the endpoint does not make a URL")]
    Base(#[source] url::ParseError),
    /// The query cannot be form-encoded.
    #[error("cannot encode the query")]
    Query(#[source] serde_urlencoded::ser::Error),
}

impl Call {
    /// A call of `operation` with no path parameters and no query.
    pub fn new(operation: &'static str) -> Self {
        Call {
            operation,
            path: Vec::new(),
            query: None,
        }
    }

    /// Fills the `{name}` placeholder of the route's path with `value`.
    pub fn path(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.path.push((name, value.into()));
        self
    }

    /// Sets the query from the route's query type (`None` fields are left
    /// out).
    pub fn query<Q: Serialize>(mut self, query: &Q) -> Result<Self, RequestError> {
        let encoded = serde_urlencoded::to_string(query).map_err(|e| RequestError::Url {
            operation: self.operation,
            source: UrlError::Query(e),
        })?;
        self.query = (!encoded.is_empty()).then_some(encoded);
        Ok(self)
    }

    /// The operation id.
    pub fn operation(&self) -> &'static str {
        self.operation
    }

    /// The URL of this call on `endpoint`, for a route whose path is
    /// `template`.
    pub fn url(&self, endpoint: &Endpoint, template: &str) -> Result<url::Url, UrlError> {
        let mut url = url::Url::parse(&endpoint.url("/")).map_err(UrlError::Base)?;
        let mut used = vec![false; self.path.len()];
        {
            let Ok(mut segments) = url.path_segments_mut() else {
                // An https URL always has a path; this is the same failure
                // as a base that does not parse.
                return Err(UrlError::Base(
                    url::ParseError::RelativeUrlWithCannotBeABaseBase,
                ));
            };
            segments.clear();
            for segment in template.trim_start_matches('/').split('/') {
                let Some(name) = segment
                    .strip_prefix('{')
                    .and_then(|rest| rest.strip_suffix('}'))
                else {
                    segments.push(segment);
                    continue;
                };
                let Some(at) = self.path.iter().position(|(n, _)| *n == name) else {
                    return Err(UrlError::MissingParameter(name.to_owned()));
                };
                let (name, value) = &self.path[at];
                if matches!(value.as_str(), "" | "." | "..") {
                    return Err(UrlError::UnusableValue {
                        name,
                        value: value.clone(),
                    });
                }
                used[at] = true;
                segments.push(value);
            }
        }
        if let Some(at) = used.iter().position(|u| !u) {
            return Err(UrlError::UnusedParameter(self.path[at].0));
        }
        url.set_query(self.query.as_deref());
        Ok(url)
    }
}

impl From<&'static str> for Call {
    fn from(operation: &'static str) -> Self {
        Call::new(operation)
    }
}

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
    /// The call cannot be made into a URL.
    #[error("cannot make the URL for {operation}")]
    Url {
        /// The route's operation id.
        operation: &'static str,
        /// Why.
        #[source]
        source: UrlError,
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

    fn request(&self, call: &Call) -> Result<reqwest::RequestBuilder, RequestError> {
        let route = Self::route(call.operation)?;
        let url = call
            .url(&self.endpoint, route.path)
            .map_err(|source| RequestError::Url {
                operation: call.operation,
                source,
            })?;
        let method = match route.method {
            Method::Get => reqwest::Method::GET,
            Method::Post => reqwest::Method::POST,
            Method::Put => reqwest::Method::PUT,
            Method::Delete => reqwest::Method::DELETE,
        };
        Ok(self.http.request(method, url))
    }

    fn transport(&self, source: reqwest::Error) -> RequestError {
        RequestError::Transport {
            endpoint: self.endpoint.clone(),
            source,
        }
    }

    /// Makes `call` with an optional JSON body and decodes the JSON
    /// answer.
    pub async fn call<B: Serialize, T: DeserializeOwned>(
        &self,
        call: impl Into<Call>,
        body: Option<&B>,
    ) -> Result<T, RequestError> {
        let call = call.into();
        let operation = call.operation;
        let mut request = self.request(&call)?.timeout(self.request_timeout);
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

    /// Makes `call` and hands back the open response for the caller to read
    /// as an NDJSON stream, capped at `timeout` when there is one (a
    /// followed log or a watch has none).
    pub async fn stream(
        &self,
        call: Call,
        timeout: Option<Duration>,
    ) -> Result<reqwest::Response, RequestError> {
        self.stream_with(call, None::<&()>, timeout).await
    }

    /// [`NodeClient::stream`] with a JSON request body.
    pub async fn stream_with<B: Serialize>(
        &self,
        call: Call,
        body: Option<&B>,
        timeout: Option<Duration>,
    ) -> Result<reqwest::Response, RequestError> {
        let mut request = self
            .request(&call)?
            .header(reqwest::header::ACCEPT, api::NDJSON);
        if let Some(body) = body {
            let json = serde_json::to_vec(body).map_err(|source| RequestError::Encode {
                operation: call.operation,
                source,
            })?;
            request = request
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(json);
        }
        if let Some(timeout) = timeout {
            request = request.timeout(timeout);
        }
        let response = request.send().await.map_err(|e| self.transport(e))?;
        self.check(call.operation, response).await
    }

    /// Makes `call` with a JSON `body` and hands back the open response
    /// for the caller to read as an NDJSON stream, capped at `timeout`.
    pub async fn stream_json<B: Serialize>(
        &self,
        call: impl Into<Call>,
        body: &B,
        timeout: Duration,
    ) -> Result<reqwest::Response, RequestError> {
        let call = call.into();
        let operation = call.operation;
        let json = serde_json::to_vec(body)
            .map_err(|source| RequestError::Encode { operation, source })?;
        let response = self
            .request(&call)?
            .timeout(timeout)
            .header(reqwest::header::ACCEPT, api::NDJSON)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(json)
            .send()
            .await
            .map_err(|e| self.transport(e))?;
        self.check(operation, response).await
    }

    /// Makes `call` with `body` (of `content_type`, sent as it is read)
    /// and decodes the JSON answer, capped at `timeout`.
    pub async fn upload<T: DeserializeOwned>(
        &self,
        call: impl Into<Call>,
        content_type: &str,
        body: reqwest::Body,
        timeout: Duration,
    ) -> Result<T, RequestError> {
        let call = call.into();
        let operation = call.operation;
        let response = self
            .request(&call)?
            .timeout(timeout)
            .header(reqwest::header::CONTENT_TYPE, content_type)
            .body(body)
            .send()
            .await
            .map_err(|e| self.transport(e))?;
        let response = self.check(operation, response).await?;
        let bytes = response.bytes().await.map_err(|e| self.transport(e))?;
        serde_json::from_slice(&bytes).map_err(|source| RequestError::Decode { operation, source })
    }

    /// Makes `call` and hands back the open response, whose body (of
    /// `accept`) the caller reads with [`NodeClient::next_chunk`].
    pub async fn download(
        &self,
        call: Call,
        accept: &str,
        timeout: Duration,
    ) -> Result<reqwest::Response, RequestError> {
        let response = self
            .request(&call)?
            .timeout(timeout)
            .header(reqwest::header::ACCEPT, accept)
            .send()
            .await
            .map_err(|e| self.transport(e))?;
        self.check(call.operation, response).await
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

#[cfg(test)]
mod tests {
    use super::*;
    use api::types::{KvKeyQuery, KvWatchQuery, LogQuery};
    use proptest::prelude::*;

    fn endpoint() -> Endpoint {
        "10.0.0.5:7443".parse().expect("endpoint")
    }

    fn url_of(call: &Call) -> Result<url::Url, UrlError> {
        let route = api::routes::route(call.operation()).expect("a route of the API");
        call.url(&endpoint(), route.path)
    }

    #[test]
    fn a_path_parameter_becomes_one_percent_encoded_segment() {
        let call = Call::new("member_remove").path("name", "a/b c?x=1&y#%é");
        assert_eq!(
            url_of(&call).expect("url").as_str(),
            "https://10.0.0.5:7443/v1/cluster/members/a%2Fb%20c%3Fx=1&y%23%25%C3%A9"
        );
        let call = Call::new("token_revoke").path("id", "abc123");
        assert_eq!(
            url_of(&call).expect("url").path(),
            "/v1/cluster/tokens/abc123/revoke"
        );
    }

    #[test]
    fn path_values_that_would_vanish_or_mismatch_the_route_are_refused() {
        for value in ["", ".", ".."] {
            let call = Call::new("member_remove").path("name", value);
            assert!(
                matches!(url_of(&call), Err(UrlError::UnusableValue { .. })),
                "{value:?}"
            );
        }
        assert!(matches!(
            url_of(&Call::new("member_remove")),
            Err(UrlError::MissingParameter(name)) if name == "name"
        ));
        assert!(matches!(
            url_of(&Call::new("node_info").path("name", "x")),
            Err(UrlError::UnusedParameter("name"))
        ));
    }

    #[test]
    fn absent_query_fields_are_left_out() {
        let call = Call::new("kv_watch")
            .query(&KvWatchQuery {
                prefix: String::new(),
                after: None,
            })
            .expect("query");
        assert_eq!(url_of(&call).expect("url").query(), Some("prefix="));
        let call = Call::new("node_logs")
            .query(&LogQuery {
                boot: -1,
                follow: true,
                tail: Some(5),
            })
            .expect("query");
        assert_eq!(
            url_of(&call).expect("url").query(),
            Some("boot=-1&follow=true&tail=5")
        );
        assert_eq!(url_of(&Call::new("node_info")).expect("url").query(), None);
    }

    proptest! {
        #[test]
        fn any_key_survives_the_query_string_exactly(key in "(?s).{0,40}", rev in proptest::option::of(any::<u64>())) {
            let sent = KvKeyQuery { key, if_revision: rev };
            let call = Call::new("kv_delete").query(&sent).expect("query");
            let url = url_of(&call).expect("url");
            // What the node's query extractor (serde_urlencoded) reads back
            // from the URL as it goes over the wire.
            let on_the_wire: url::Url = url.as_str().parse().expect("the URL parses again");
            let received: KvKeyQuery =
                serde_urlencoded::from_str(on_the_wire.query().unwrap_or("")).expect("decodes");
            prop_assert_eq!(received, sent);
        }
    }
}
