//! One key-value write or linearizable read, spoken to either system.
//!
//! Cairn: `PUT /v1/kv/entry` with `{key, value}` and
//! `GET /v1/kv/entry?key=`, JSON text both ways. etcd: its v3 JSON gateway,
//! `POST /v3/kv/put` and `POST /v3/kv/range` with base64 keys and values; a
//! range is linearizable unless it asks for `serializable`, which this
//! never does. Both go over one kept-alive mTLS connection per client
//! ([`KvConnection`]), which reconnects after any transport failure.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::ClientConfig;
use serde::Deserialize;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::base64;
use crate::apibench::client::{self, RequestError};
use crate::apibench::wire::{self, ResponseHead};

/// Which store a request is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum System {
    /// Cairn's `/v1/kv` on cairnd.
    Cairn,
    /// etcd's v3 JSON gateway.
    Etcd,
}

impl System {
    /// Lower-case name, for tables, JSON and file names.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            System::Cairn => "cairn",
            System::Etcd => "etcd",
        }
    }

    /// The request bytes that write `value` under `key` (keep-alive).
    #[must_use]
    pub fn put_request(self, key: &str, value: &str) -> Vec<u8> {
        match self {
            System::Cairn => {
                let body = serde_json::json!({ "key": key, "value": value }).to_string();
                wire::request("PUT", "/v1/kv/entry", Some(body.as_bytes()), true)
            }
            System::Etcd => {
                let body = serde_json::json!({
                    "key": base64::encode(key.as_bytes()),
                    "value": base64::encode(value.as_bytes()),
                })
                .to_string();
                wire::request("POST", "/v3/kv/put", Some(body.as_bytes()), true)
            }
        }
    }

    /// The request bytes of a linearizable read of `key` (keep-alive).
    #[must_use]
    pub fn get_request(self, key: &str) -> Vec<u8> {
        match self {
            System::Cairn => wire::request(
                "GET",
                &format!("/v1/kv/entry?key={}", percent_encode(key)),
                None,
                true,
            ),
            System::Etcd => {
                let body = serde_json::json!({ "key": base64::encode(key.as_bytes()) }).to_string();
                wire::request("POST", "/v3/kv/range", Some(body.as_bytes()), true)
            }
        }
    }

    /// Checks the answer to [`System::put_request`].
    ///
    /// # Errors
    /// [`KvError`] unless it is a 200 with a JSON body.
    pub fn check_put(self, head: &ResponseHead, buf: &[u8]) -> Result<(), KvError> {
        check_ok(head, buf)?;
        Ok(())
    }

    /// Reads the value out of the answer to [`System::get_request`]:
    /// `None` when the key does not exist.
    ///
    /// # Errors
    /// [`KvError`] for any other status or a body of the wrong shape.
    pub fn read_value(self, head: &ResponseHead, buf: &[u8]) -> Result<Option<String>, KvError> {
        let body = body(head, buf);
        match self {
            System::Cairn => {
                if head.status == 404 && error_code(body).as_deref() == Some("key_not_found") {
                    return Ok(None);
                }
                check_ok(head, buf)?;
                let record: CairnRecord = serde_json::from_slice(body)
                    .map_err(|e| KvError::Shape(format!("not a KvRecord: {e}")))?;
                Ok(Some(record.value))
            }
            System::Etcd => {
                check_ok(head, buf)?;
                let range: EtcdRange = serde_json::from_slice(body)
                    .map_err(|e| KvError::Shape(format!("not a RangeResponse: {e}")))?;
                match range.kvs.as_slice() {
                    [] => Ok(None),
                    [kv] => {
                        let bytes = base64::decode(kv.value.as_deref().unwrap_or_default())
                            .map_err(|e| KvError::Shape(e.to_string()))?;
                        String::from_utf8(bytes)
                            .map(Some)
                            .map_err(|_| KvError::Shape("value is not UTF-8".into()))
                    }
                    more => Err(KvError::Shape(format!(
                        "a range of one key returned {} records",
                        more.len()
                    ))),
                }
            }
        }
    }
}

#[derive(Deserialize)]
struct CairnRecord {
    value: String,
}

#[derive(Deserialize)]
struct EtcdRange {
    #[serde(default)]
    kvs: Vec<EtcdKv>,
}

#[derive(Deserialize)]
struct EtcdKv {
    // etcd's gateway leaves out empty fields, an empty value included.
    #[serde(default)]
    value: Option<String>,
}

#[derive(Deserialize)]
struct CairnError {
    code: String,
}

fn body<'a>(head: &ResponseHead, buf: &'a [u8]) -> &'a [u8] {
    buf.get(head.head_len..head.total_len()).unwrap_or_default()
}

/// The `code` of a Cairn error body, if it is one.
fn error_code(body: &[u8]) -> Option<String> {
    serde_json::from_slice::<CairnError>(body)
        .ok()
        .map(|e| e.code)
}

fn check_ok(head: &ResponseHead, buf: &[u8]) -> Result<(), KvError> {
    wire::check_json_ok(head, buf).map_err(|e| match e {
        wire::ResponseError::Status { status, body: text } => KvError::Status {
            status,
            code: error_code(body(head, buf)),
            body: text,
        },
        other => KvError::Response(other),
    })
}

/// Percent-encodes everything but RFC 3986's unreserved characters and `/`.
#[must_use]
pub fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'/') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A write or read that did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum KvError {
    /// The exchange failed (connect, TLS, I/O, timeout).
    #[error("request failed")]
    Request(#[source] RequestError),
    /// The server answered with an error status.
    #[error("status {status} ({}): {body}", code.as_deref().unwrap_or("no code"))]
    Status {
        /// The HTTP status.
        status: u16,
        /// Cairn's error code (`no_leader`, `outcome_unknown`, ...).
        code: Option<String>,
        /// The start of the body.
        body: String,
    },
    /// A 200 that is not JSON.
    #[error("unusable response")]
    Response(#[source] wire::ResponseError),
    /// JSON of the wrong shape.
    #[error("unexpected response body: {0}")]
    Shape(String),
}

/// One client's kept-alive connection to one member.
pub struct KvConnection {
    system: System,
    connector: TlsConnector,
    addr: SocketAddr,
    stream: Option<TlsStream<TcpStream>>,
    buf: Vec<u8>,
}

impl std::fmt::Debug for KvConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KvConnection")
            .field("system", &self.system)
            .field("addr", &self.addr)
            .field("open", &self.stream.is_some())
            .finish_non_exhaustive()
    }
}

impl KvConnection {
    /// A connection to `addr`, opened on first use.
    #[must_use]
    pub fn new(system: System, config: Arc<ClientConfig>, addr: SocketAddr) -> Self {
        Self {
            system,
            connector: TlsConnector::from(config),
            addr,
            stream: None,
            buf: Vec::with_capacity(4096),
        }
    }

    /// The member this talks to.
    #[must_use]
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Opens the connection now if it is not open.
    ///
    /// # Errors
    /// [`KvError::Request`] if connect or handshake fail.
    pub async fn open(&mut self) -> Result<(), KvError> {
        if self.stream.is_none() {
            self.stream = Some(
                client::connect(&self.connector, self.addr)
                    .await
                    .map_err(KvError::Request)?,
            );
        }
        Ok(())
    }

    async fn exchange(
        &mut self,
        request: &[u8],
        timeout: Duration,
    ) -> Result<ResponseHead, KvError> {
        let work = async {
            self.open().await?;
            let Some(stream) = self.stream.as_mut() else {
                return Err(KvError::Request(RequestError::Closed(0)));
            };
            client::exchange(stream, request, &mut self.buf)
                .await
                .map_err(KvError::Request)
        };
        let result = tokio::time::timeout(timeout, work)
            .await
            .unwrap_or(Err(KvError::Request(RequestError::Timeout(timeout))));
        if result.is_err() {
            // Whatever state the stream is in, the next request starts over.
            self.stream = None;
        }
        result
    }

    /// Writes `value` under `key`.
    ///
    /// # Errors
    /// [`KvError`] unless the store acknowledged the write.
    pub async fn put(&mut self, key: &str, value: &str, timeout: Duration) -> Result<(), KvError> {
        let request = self.system.put_request(key, value);
        let head = self.exchange(&request, timeout).await?;
        self.system.check_put(&head, &self.buf)
    }

    /// Reads `key` linearizably; `None` when it does not exist.
    ///
    /// # Errors
    /// [`KvError`] if the read failed.
    pub async fn get(&mut self, key: &str, timeout: Duration) -> Result<Option<String>, KvError> {
        let request = self.system.get_request(key);
        let head = self.exchange(&request, timeout).await?;
        self.system.read_value(&head, &self.buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(status: u16, body: &str) -> (ResponseHead, Vec<u8>) {
        let text = format!(
            "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        let bytes = text.into_bytes();
        let head = wire::parse_head(&bytes).unwrap().unwrap();
        (head, bytes)
    }

    #[test]
    fn cairn_requests_are_json_puts_and_query_gets() {
        let put = String::from_utf8(System::Cairn.put_request("a/b", "v 1")).unwrap();
        assert!(put.starts_with("PUT /v1/kv/entry HTTP/1.1\r\n"), "{put}");
        assert!(put.contains("Connection: keep-alive"));
        assert!(put.ends_with(r#"{"key":"a/b","value":"v 1"}"#), "{put}");
        let get = String::from_utf8(System::Cairn.get_request("a b&c")).unwrap();
        assert!(
            get.starts_with("GET /v1/kv/entry?key=a%20b%26c HTTP/1.1\r\n"),
            "{get}"
        );
    }

    #[test]
    fn etcd_requests_carry_base64_keys_and_values() {
        let put = String::from_utf8(System::Etcd.put_request("foo", "bar")).unwrap();
        assert!(put.starts_with("POST /v3/kv/put HTTP/1.1\r\n"), "{put}");
        assert!(put.ends_with(r#"{"key":"Zm9v","value":"YmFy"}"#), "{put}");
        let get = String::from_utf8(System::Etcd.get_request("foo")).unwrap();
        assert!(get.starts_with("POST /v3/kv/range HTTP/1.1\r\n"), "{get}");
        assert!(get.ends_with(r#"{"key":"Zm9v"}"#), "{get}");
        assert!(!get.contains("serializable"));
    }

    #[test]
    fn values_are_read_from_either_answer() {
        let (head, buf) = response(
            200,
            r#"{"key":"k","value":"v1","revision":3,"create_revision":2,"version":2}"#,
        );
        assert_eq!(
            System::Cairn.read_value(&head, &buf).unwrap().as_deref(),
            Some("v1")
        );
        let (head, buf) = response(
            200,
            r#"{"header":{"revision":"2"},"kvs":[{"key":"Zm9v","mod_revision":"2","value":"YmFy"}],"count":"1"}"#,
        );
        assert_eq!(
            System::Etcd.read_value(&head, &buf).unwrap().as_deref(),
            Some("bar")
        );
    }

    #[test]
    fn a_missing_key_reads_as_none_on_both() {
        let (head, buf) = response(404, r#"{"code":"key_not_found","message":"no key k"}"#);
        assert_eq!(System::Cairn.read_value(&head, &buf).unwrap(), None);
        let (head, buf) = response(200, r#"{"header":{"revision":"2"}}"#);
        assert_eq!(System::Etcd.read_value(&head, &buf).unwrap(), None);
    }

    #[test]
    fn refusals_keep_cairns_error_code() {
        let (head, buf) = response(503, r#"{"code":"no_leader","message":"election"}"#);
        match System::Cairn.check_put(&head, &buf) {
            Err(KvError::Status { status, code, .. }) => {
                assert_eq!(status, 503);
                assert_eq!(code.as_deref(), Some("no_leader"));
            }
            other => panic!("{other:?}"),
        }
        let (head, buf) = response(404, r#"{"code":"not_found","message":"no route"}"#);
        assert!(System::Cairn.read_value(&head, &buf).is_err());
    }
}
