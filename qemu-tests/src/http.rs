//! Just enough HTTP/1.1 to read a node's health port: one `GET` per
//! connection with `Connection: close`, and a response parser that handles
//! the three ways a body can end (Content-Length, chunked, connection close).
//! Pulling a full HTTP client into the harness would buy nothing here: the
//! agent's health endpoints are plain text and the harness never sends a body.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// Status and body of one response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpResponse {
    pub status: u16,
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// The body as text, with invalid UTF-8 replaced.
    #[must_use]
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A response that is not well-formed HTTP/1.x.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HttpParseError {
    #[error("response ended before the end of the headers")]
    TruncatedHead,
    #[error("malformed status line `{0}`")]
    StatusLine(String),
    #[error("malformed header line `{0}`")]
    Header(String),
    #[error("invalid Content-Length `{0}`")]
    ContentLength(String),
    #[error("body shorter than its Content-Length ({got} of {expected} bytes)")]
    TruncatedBody { got: usize, expected: usize },
    #[error("malformed chunked body")]
    Chunked,
}

/// Parses a complete response read until the server closed the connection.
///
/// # Errors
/// [`HttpParseError`] describing the first malformed part.
pub fn parse_response(raw: &[u8]) -> Result<HttpResponse, HttpParseError> {
    let head_end = find(raw, b"\r\n\r\n").ok_or(HttpParseError::TruncatedHead)?;
    let head = String::from_utf8_lossy(&raw[..head_end]);
    let rest = &raw[head_end + 4..];
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = parse_status_line(status_line)
        .ok_or_else(|| HttpParseError::StatusLine(status_line.to_owned()))?;

    let mut content_length = None;
    let mut chunked = false;
    for line in lines {
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| HttpParseError::Header(line.to_owned()))?;
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            let len: usize = value
                .parse()
                .map_err(|_| HttpParseError::ContentLength(value.to_owned()))?;
            content_length = Some(len);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value
                .to_ascii_lowercase()
                .split(',')
                .any(|v| v.trim() == "chunked");
        }
    }

    let body = if chunked {
        decode_chunked(rest)?
    } else if let Some(expected) = content_length {
        if rest.len() < expected {
            return Err(HttpParseError::TruncatedBody {
                got: rest.len(),
                expected,
            });
        }
        rest[..expected].to_vec()
    } else {
        rest.to_vec()
    };
    Ok(HttpResponse { status, body })
}

fn parse_status_line(line: &str) -> Option<u16> {
    let mut parts = line.splitn(3, ' ');
    let version = parts.next()?;
    if !version.starts_with("HTTP/1.") {
        return None;
    }
    let code = parts.next()?;
    if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    code.parse().ok()
}

fn decode_chunked(mut rest: &[u8]) -> Result<Vec<u8>, HttpParseError> {
    let mut body = Vec::new();
    loop {
        let line_end = find(rest, b"\r\n").ok_or(HttpParseError::Chunked)?;
        let size_text =
            std::str::from_utf8(&rest[..line_end]).map_err(|_| HttpParseError::Chunked)?;
        // Chunk extensions (`;name=value`) carry nothing we need.
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16).map_err(|_| HttpParseError::Chunked)?;
        rest = &rest[line_end + 2..];
        if size == 0 {
            return Ok(body);
        }
        let chunk_end = size.checked_add(2).ok_or(HttpParseError::Chunked)?;
        if rest.len() < chunk_end || &rest[size..chunk_end] != b"\r\n" {
            return Err(HttpParseError::Chunked);
        }
        body.extend_from_slice(&rest[..size]);
        rest = &rest[chunk_end..];
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Why a GET did not produce a response.
#[derive(Debug, thiserror::Error)]
pub enum HttpGetError {
    #[error("connecting to {addr}")]
    Connect {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("talking to {addr}")]
    Io {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("response from {addr}")]
    Parse {
        addr: SocketAddr,
        #[source]
        source: HttpParseError,
    },
}

/// Sends `GET path` to `addr` and reads the whole response; every socket
/// operation is bounded by `timeout` so a wedged guest cannot hang a test.
///
/// The socket is created in the calling thread's network namespace; see
/// [`crate::network::Network::http_get`] for reaching guests on a test bridge.
///
/// # Errors
/// [`HttpGetError`] for connection, I/O and parse failures.
pub fn get(addr: SocketAddr, path: &str, timeout: Duration) -> Result<HttpResponse, HttpGetError> {
    let io = |source| HttpGetError::Io { addr, source };
    let mut stream = TcpStream::connect_timeout(&addr, timeout)
        .map_err(|source| HttpGetError::Connect { addr, source })?;
    stream.set_read_timeout(Some(timeout)).map_err(io)?;
    stream.set_write_timeout(Some(timeout)).map_err(io)?;
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: cairn-qemu-tests\r\nAccept: */*\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).map_err(io)?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).map_err(io)?;
    parse_response(&raw).map_err(|source| HttpGetError::Parse { addr, source })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn content_length_bounds_the_body() {
        let raw =
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-type: text/plain\r\n\r\nokEXTRA";
        let resp = parse_response(raw).unwrap();
        assert_eq!(resp.status, 200);
        assert_eq!(resp.body, b"ok");
    }

    #[test]
    fn body_without_length_runs_to_connection_close() {
        let resp = parse_response(b"HTTP/1.0 503 Service Unavailable\r\n\r\nnot ready\n").unwrap();
        assert_eq!(resp.status, 503);
        assert_eq!(resp.text(), "not ready\n");
    }

    #[test]
    fn chunked_body_is_reassembled() {
        let raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4;x=y\r\ncair\r\n1\r\nn\r\n0\r\n\r\n";
        assert_eq!(parse_response(raw).unwrap().body, b"cairn");
    }

    #[test]
    fn malformed_responses_are_rejected() {
        assert_eq!(
            parse_response(b"HTTP/1.1 200 OK\r\n"),
            Err(HttpParseError::TruncatedHead)
        );
        assert!(matches!(
            parse_response(b"SSH-2.0-x\r\n\r\n"),
            Err(HttpParseError::StatusLine(_))
        ));
        assert!(matches!(
            parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort"),
            Err(HttpParseError::TruncatedBody {
                got: 5,
                expected: 10
            })
        ));
        assert_eq!(
            parse_response(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"),
            Err(HttpParseError::Chunked)
        );
    }

    proptest! {
        #[test]
        fn chunked_and_length_framing_yield_the_same_body(
            body in proptest::collection::vec(any::<u8>(), 0..300),
            split in 1usize..50,
            status in 100u16..600,
        ) {
            let mut chunked = format!("HTTP/1.1 {status} X\r\nTransfer-Encoding: chunked\r\n\r\n").into_bytes();
            for chunk in body.chunks(split) {
                chunked.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
                chunked.extend_from_slice(chunk);
                chunked.extend_from_slice(b"\r\n");
            }
            chunked.extend_from_slice(b"0\r\n\r\n");
            let mut framed = format!("HTTP/1.1 {status} X\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
            framed.extend_from_slice(&body);
            let a = parse_response(&chunked).unwrap();
            let b = parse_response(&framed).unwrap();
            prop_assert_eq!(&a, &b);
            prop_assert_eq!(a.body, body);
            prop_assert_eq!(a.status, status);
        }

        #[test]
        fn arbitrary_bytes_never_panic_the_parser(raw in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = parse_response(&raw);
        }
    }
}
