//! The little HTTP/1.1 the load generator speaks.
//!
//! A full client library would add its own cost to every request and hide
//! where a response ends. Both servers answer `GET` with a `Content-Length`
//! body (axum's `Json` and nginx's static file), so the client writes one
//! fixed request and reads exactly head + length bytes; anything else
//! (chunked bodies, a missing length, a status other than 200, a body that
//! is not JSON) is an error the round counts.

/// The request bytes for `GET path`. `keep_alive` false asks the server to
/// close after answering, which is what a fresh-connection client does.
#[must_use]
pub fn get_request(path: &str, keep_alive: bool) -> Vec<u8> {
    request("GET", path, None, keep_alive)
}

/// The request bytes for `method path` with an optional JSON body.
#[must_use]
pub fn request(method: &str, path: &str, json_body: Option<&[u8]>, keep_alive: bool) -> Vec<u8> {
    let connection = if keep_alive { "keep-alive" } else { "close" };
    let mut out = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nUser-Agent: cairn-api-bench\r\nAccept: application/json\r\nConnection: {connection}\r\n"
    );
    if let Some(body) = json_body {
        out.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    out.push_str("\r\n");
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(json_body.unwrap_or_default());
    bytes
}

/// A parsed response head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHead {
    /// The status code.
    pub status: u16,
    /// Bytes of the head, including the blank line.
    pub head_len: usize,
    /// The body length from `Content-Length`.
    pub content_length: usize,
    /// The `Content-Type` value, if any.
    pub content_type: Option<String>,
}

impl ResponseHead {
    /// Bytes the whole response takes.
    #[must_use]
    pub fn total_len(&self) -> usize {
        self.head_len + self.content_length
    }
}

/// A response head the load generator cannot use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeadError {
    /// The head grew past the limit without ending.
    #[error("response head longer than {0} bytes")]
    TooLong(usize),
    /// The status line is not `HTTP/1.x NNN ...`.
    #[error("malformed status line {0:?}")]
    StatusLine(String),
    /// A header line has no colon or is not text.
    #[error("malformed header line {0:?}")]
    HeaderLine(String),
    /// `Content-Length` is not a number.
    #[error("invalid content-length {0:?}")]
    ContentLength(String),
    /// The body is chunked or has no declared length.
    #[error("response has no content-length (chunked or close-delimited bodies are not expected)")]
    NoLength,
}

/// The longest head accepted; both servers send a few hundred bytes.
pub const MAX_HEAD: usize = 16 * 1024;

/// Parses the head at the start of `buf`. `Ok(None)` means more bytes are
/// needed.
///
/// # Errors
/// [`HeadError`] when the head is malformed or declares no length.
pub fn parse_head(buf: &[u8]) -> Result<Option<ResponseHead>, HeadError> {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return if buf.len() > MAX_HEAD {
            Err(HeadError::TooLong(MAX_HEAD))
        } else {
            Ok(None)
        };
    };
    let head_len = end + 4;
    let text = std::str::from_utf8(&buf[..end])
        .map_err(|_| HeadError::HeaderLine(String::from_utf8_lossy(&buf[..end]).into_owned()))?;
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = parse_status_line(status_line)
        .ok_or_else(|| HeadError::StatusLine(status_line.to_owned()))?;
    let mut content_length = None;
    let mut content_type = None;
    for line in lines {
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| HeadError::HeaderLine(line.to_owned()))?;
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            content_length = Some(
                value
                    .parse::<usize>()
                    .map_err(|_| HeadError::ContentLength(value.to_owned()))?,
            );
        } else if name.eq_ignore_ascii_case("content-type") {
            content_type = Some(value.to_owned());
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(HeadError::NoLength);
        }
    }
    Ok(Some(ResponseHead {
        status,
        head_len,
        content_length: content_length.ok_or(HeadError::NoLength)?,
        content_type,
    }))
}

fn parse_status_line(line: &str) -> Option<u16> {
    let rest = line
        .strip_prefix("HTTP/1.1 ")
        .or_else(|| line.strip_prefix("HTTP/1.0 "))?;
    let code = rest.get(..3)?;
    if !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if rest.len() > 3 && !rest[3..].starts_with(' ') {
        return None;
    }
    code.parse().ok()
}

/// Why a complete response does not count as a success.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResponseError {
    /// Not 200.
    #[error("status {status}: {body}")]
    Status {
        /// The status.
        status: u16,
        /// The start of the body, for the report.
        body: String,
    },
    /// Not declared as JSON.
    #[error("content-type {0:?} is not application/json")]
    ContentType(Option<String>),
    /// Declared as JSON but does not parse as JSON.
    #[error("body is not JSON: {0}")]
    NotJson(String),
}

/// Checks a complete response (`buf` holds exactly head + body) is 200
/// with a JSON body.
///
/// # Errors
/// [`ResponseError`] naming what was wrong.
pub fn check_json_ok(head: &ResponseHead, buf: &[u8]) -> Result<(), ResponseError> {
    let body = buf.get(head.head_len..head.total_len()).unwrap_or_default();
    if head.status != 200 {
        let shown = &body[..body.len().min(200)];
        return Err(ResponseError::Status {
            status: head.status,
            body: String::from_utf8_lossy(shown).into_owned(),
        });
    }
    let is_json = head.content_type.as_deref().is_some_and(|t| {
        t.split(';')
            .next()
            .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
    });
    if !is_json {
        return Err(ResponseError::ContentType(head.content_type.clone()));
    }
    serde_json::from_slice::<serde::de::IgnoredAny>(body)
        .map_err(|e| ResponseError::NotJson(e.to_string()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const AXUM: &[u8] =
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 11\r\ndate: x\r\n\r\n{\"a\":[1,2]}";
    const NGINX: &[u8] = b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}";

    #[test]
    fn a_request_names_its_path_and_connection_policy() {
        let close = String::from_utf8(get_request("/v1/node", false)).unwrap();
        assert!(close.starts_with("GET /v1/node HTTP/1.1\r\n"));
        assert!(close.contains("\r\nConnection: close\r\n"));
        assert!(close.ends_with("\r\n\r\n"));
        let reuse = String::from_utf8(get_request("/v1/node", true)).unwrap();
        assert!(reuse.contains("\r\nConnection: keep-alive\r\n"));
        assert!(!reuse.contains("Content-Length"));
    }

    #[test]
    fn a_post_carries_its_json_body_and_length() {
        let post =
            String::from_utf8(request("POST", "/v1/certs", Some(b"{\"a\":1}"), false)).unwrap();
        assert!(post.starts_with("POST /v1/certs HTTP/1.1\r\n"));
        assert!(post.contains("\r\nContent-Length: 7\r\n"));
        assert!(post.ends_with("\r\n\r\n{\"a\":1}"));
    }

    #[test]
    fn heads_from_both_servers_parse_with_their_lengths() {
        let head = parse_head(AXUM).unwrap().unwrap();
        assert_eq!(head.status, 200);
        assert_eq!(head.content_length, 11);
        assert_eq!(head.total_len(), AXUM.len());
        assert_eq!(head.content_type.as_deref(), Some("application/json"));
        check_json_ok(&head, AXUM).unwrap();

        let head = parse_head(NGINX).unwrap().unwrap();
        assert_eq!(head.total_len(), NGINX.len());
        check_json_ok(&head, NGINX).unwrap();
    }

    #[test]
    fn a_partial_head_asks_for_more_bytes() {
        for cut in 0..AXUM.len() {
            let partial = &AXUM[..cut];
            let complete = partial.windows(4).any(|w| w == b"\r\n\r\n");
            assert_eq!(
                parse_head(partial).unwrap().is_some(),
                complete,
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn chunked_or_lengthless_responses_are_refused() {
        let chunked = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n";
        assert_eq!(parse_head(chunked), Err(HeadError::NoLength));
        let bare = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\r\n{}";
        assert_eq!(parse_head(bare), Err(HeadError::NoLength));
        let bad = b"HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n";
        assert_eq!(parse_head(bad), Err(HeadError::ContentLength("-1".into())));
        let junk = b"SSH-2.0-OpenSSH\r\n\r\n";
        assert!(matches!(parse_head(junk), Err(HeadError::StatusLine(_))));
        let endless = vec![b'a'; MAX_HEAD + 1];
        assert_eq!(parse_head(&endless), Err(HeadError::TooLong(MAX_HEAD)));
    }

    #[test]
    fn refusals_wrong_types_and_broken_json_are_failures() {
        let refused = b"HTTP/1.1 403 Forbidden\r\ncontent-type: application/json\r\ncontent-length: 19\r\n\r\n{\"code\":\"role_low\"}";
        let head = parse_head(refused).unwrap().unwrap();
        assert!(matches!(
            check_json_ok(&head, refused),
            Err(ResponseError::Status { status: 403, .. })
        ));
        let html = b"HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: 2\r\n\r\n{}";
        let head = parse_head(html).unwrap().unwrap();
        assert!(matches!(
            check_json_ok(&head, html),
            Err(ResponseError::ContentType(_))
        ));
        let broken = b"HTTP/1.1 200 OK\r\ncontent-type: application/json; charset=utf-8\r\ncontent-length: 2\r\n\r\n{]";
        let head = parse_head(broken).unwrap().unwrap();
        assert!(matches!(
            check_json_ok(&head, broken),
            Err(ResponseError::NotJson(_))
        ));
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic_the_head_parser(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = parse_head(&bytes);
        }
    }
}
