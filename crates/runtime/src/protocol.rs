//! The shim's control socket, `shim.sock`.
//!
//! A unix stream socket speaking newline-delimited JSON, one request per
//! connection: the client writes one [`Request`] line; the shim answers one
//! [`Response`] line, except for `exec`, which answers a stream of
//! [`ExecEvent`] lines ending with `exit` (or `error`). Then the shim closes
//! the connection.
//!
//! [`ShimClient`] is a small blocking client; cairnd calls it from
//! `spawn_blocking` (it is a few syscalls, and `exec` streams until the
//! command ends).

use crate::signal::Signal;
use crate::state::{ExitStatus, ShimState};
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The longest line either side accepts (requests are small; exec chunks
/// are at most [`EXEC_CHUNK`] bytes before base64).
pub const MAX_LINE: usize = 1 << 20;
/// The largest exec output chunk the shim sends in one event.
pub const EXEC_CHUNK: usize = 32 * 1024;

/// One request.
///
/// JSON: `"state"`, `{"stop": {"timeout_s": 5}}`, `{"kill": {"signal":
/// "SIGHUP"}}`, `{"exec": {"args": ["ls"], "env": [], "cwd": null, "tty":
/// false}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// Answered with [`Response::State`].
    State,
    /// Sends the spec's stop signal, SIGKILL after `timeout_s` (the spec's
    /// `stop.timeout_s` when `None`), no restart. Answered with the final
    /// [`Response::State`] once the container is down; then the shim cleans
    /// up and exits.
    Stop {
        #[serde(default)]
        timeout_s: Option<u64>,
    },
    /// Sends a signal to the container's init. The restart policy still
    /// applies to the exit this causes. Answered with [`Response::Done`].
    Kill { signal: Signal },
    /// Runs a command in the running container; answered with
    /// [`ExecEvent`]s.
    Exec(ExecRequest),
}

/// A command to run inside the container (as the container's user, with
/// its capabilities and cgroup).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecRequest {
    pub args: Vec<String>,
    /// Added to (and overriding) the container's environment.
    #[serde(default)]
    pub env: Vec<String>,
    /// The container's working directory when `None`.
    #[serde(default)]
    pub cwd: Option<String>,
    /// Must be false: no terminals yet.
    #[serde(default)]
    pub tty: bool,
}

/// The answer to `state`, `stop` and `kill`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Response {
    State(ShimState),
    Done,
    Error(ErrorBody),
}

/// One line of an exec answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum ExecEvent {
    /// `{"stdout": "<base64>"}`
    Stdout(#[serde(with = "b64")] Vec<u8>),
    /// `{"stderr": "<base64>"}`
    Stderr(#[serde(with = "b64")] Vec<u8>),
    /// `{"exit": {"code": 0}}`; the last line.
    Exit(ExitStatus),
    /// The command could not be run; the last line.
    Error(ErrorBody),
}

/// `{"error": {"code": "not_running", "message": "..."}}`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(deny_unknown_fields)]
#[error("{code}: {message}")]
pub struct ErrorBody {
    pub code: ErrorCode,
    pub message: String,
}

/// What kind of error the shim answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The request line was not a valid request.
    BadRequest,
    /// The container has no running process (restarting, or finished).
    NotRunning,
    /// A stop is already under way.
    Stopping,
    /// The exec'd command could not be started.
    ExecFailed,
    /// The shim failed doing what was asked.
    Internal,
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::BadRequest => "bad_request",
            Self::NotRunning => "not_running",
            Self::Stopping => "stopping",
            Self::ExecFailed => "exec_failed",
            Self::Internal => "internal",
        })
    }
}

mod b64 {
    use base64::Engine as _;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(bytes))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        base64::engine::general_purpose::STANDARD
            .decode(s)
            .map_err(serde::de::Error::custom)
    }
}

/// Reads one newline-terminated line of at most [`MAX_LINE`] bytes.
/// `Ok(None)` at a clean end of stream.
///
/// # Errors
/// I/O errors, and `InvalidData` for an over-long line.
pub fn read_line(reader: &mut impl BufRead) -> std::io::Result<Option<Vec<u8>>> {
    let mut line = Vec::new();
    let mut limited = reader.take(MAX_LINE as u64 + 1);
    let n = limited.read_until(b'\n', &mut line)?;
    if n == 0 {
        return Ok(None);
    }
    if line.last() != Some(&b'\n') {
        if line.len() > MAX_LINE {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "line longer than 1 MiB",
            ));
        }
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "connection closed mid-line",
        ));
    }
    line.pop();
    Ok(Some(line))
}

/// Writes `value` as one JSON line.
///
/// # Errors
/// I/O errors.
pub fn write_line(writer: &mut impl Write, value: &impl Serialize) -> std::io::Result<()> {
    let mut bytes = serde_json::to_vec(value).map_err(std::io::Error::other)?;
    bytes.push(b'\n');
    writer.write_all(&bytes)?;
    writer.flush()
}

/// Why a call to the shim failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("could not connect to {path}")]
    Connect {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("could not talk to the shim")]
    Io(#[source] std::io::Error),
    #[error("the shim closed the connection without answering")]
    NoAnswer,
    #[error("the shim's answer is not valid")]
    Decode(#[source] serde_json::Error),
    #[error("the shim refused the request")]
    Shim(#[source] ErrorBody),
    #[error("the shim answered {0:?}, which does not fit the request")]
    Unexpected(Box<Response>),
}

/// A blocking client for one container's `shim.sock`.
#[derive(Debug, Clone)]
pub struct ShimClient {
    socket: PathBuf,
    timeout: Duration,
}

impl ShimClient {
    /// A client for the socket at `socket` with a 10 s timeout for quick
    /// requests (`stop` and `exec` wait as long as they need).
    #[must_use]
    pub fn new(socket: &Path) -> Self {
        Self {
            socket: socket.to_owned(),
            timeout: Duration::from_secs(10),
        }
    }

    fn connect(&self, timeout: Option<Duration>) -> Result<UnixStream, ClientError> {
        let stream = UnixStream::connect(&self.socket).map_err(|source| ClientError::Connect {
            path: self.socket.clone(),
            source,
        })?;
        stream.set_read_timeout(timeout).map_err(ClientError::Io)?;
        stream
            .set_write_timeout(Some(self.timeout))
            .map_err(ClientError::Io)?;
        Ok(stream)
    }

    fn call(&self, request: &Request, timeout: Option<Duration>) -> Result<Response, ClientError> {
        let mut stream = self.connect(timeout)?;
        write_line(&mut stream, request).map_err(ClientError::Io)?;
        let mut reader = BufReader::new(stream);
        let line = read_line(&mut reader)
            .map_err(ClientError::Io)?
            .ok_or(ClientError::NoAnswer)?;
        let response: Response = serde_json::from_slice(&line).map_err(ClientError::Decode)?;
        match response {
            Response::Error(body) => Err(ClientError::Shim(body)),
            Response::State(_) | Response::Done => Ok(response),
        }
    }

    /// The shim's current state.
    ///
    /// # Errors
    /// See [`ClientError`].
    pub fn state(&self) -> Result<ShimState, ClientError> {
        match self.call(&Request::State, Some(self.timeout))? {
            Response::State(state) => Ok(state),
            other @ (Response::Done | Response::Error(_)) => {
                Err(ClientError::Unexpected(Box::new(other)))
            }
        }
    }

    /// Stops the container and returns its final state. Waits as long as
    /// the stop takes: the timeout (5 minutes when the spec's applies,
    /// which the client does not know) plus 30 s for the shim's cleanup.
    ///
    /// # Errors
    /// See [`ClientError`].
    pub fn stop(&self, timeout_s: Option<u64>) -> Result<ShimState, ClientError> {
        let wait = Duration::from_secs(timeout_s.unwrap_or(300).saturating_add(30));
        match self.call(&Request::Stop { timeout_s }, Some(wait))? {
            Response::State(state) => Ok(state),
            other @ (Response::Done | Response::Error(_)) => {
                Err(ClientError::Unexpected(Box::new(other)))
            }
        }
    }

    /// Signals the container's init process.
    ///
    /// # Errors
    /// See [`ClientError`].
    pub fn kill(&self, signal: Signal) -> Result<(), ClientError> {
        match self.call(&Request::Kill { signal }, Some(self.timeout))? {
            Response::Done => Ok(()),
            other @ (Response::State(_) | Response::Error(_)) => {
                Err(ClientError::Unexpected(Box::new(other)))
            }
        }
    }

    /// Runs a command in the container, handing every output event to
    /// `on_event` as it arrives, and returns how it exited.
    ///
    /// # Errors
    /// See [`ClientError`]; a command that could not start is
    /// [`ClientError::Shim`].
    pub fn exec(
        &self,
        request: ExecRequest,
        mut on_event: impl FnMut(&ExecEvent),
    ) -> Result<ExitStatus, ClientError> {
        let mut stream = self.connect(None)?;
        write_line(&mut stream, &Request::Exec(request)).map_err(ClientError::Io)?;
        let mut reader = BufReader::new(stream);
        loop {
            let line = read_line(&mut reader)
                .map_err(ClientError::Io)?
                .ok_or(ClientError::NoAnswer)?;
            let event: ExecEvent = serde_json::from_slice(&line).map_err(ClientError::Decode)?;
            match event {
                ExecEvent::Exit(status) => return Ok(status),
                ExecEvent::Error(body) => return Err(ClientError::Shim(body)),
                ExecEvent::Stdout(_) | ExecEvent::Stderr(_) => on_event(&event),
            }
        }
    }
}

/// Decodes base64 as the protocol writes it (for callers holding raw JSON).
///
/// # Errors
/// When `s` is not standard base64.
pub fn decode_base64(s: &str) -> Result<Vec<u8>, base64::DecodeError> {
    base64::engine::general_purpose::STANDARD.decode(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_have_the_documented_json_shape() {
        let cases = [
            (Request::State, r#""state""#),
            (
                Request::Stop { timeout_s: Some(5) },
                r#"{"stop":{"timeout_s":5}}"#,
            ),
            (
                Request::Kill {
                    signal: Signal::KILL,
                },
                r#"{"kill":{"signal":"SIGKILL"}}"#,
            ),
            (
                Request::Exec(ExecRequest {
                    args: vec!["ls".into()],
                    env: vec![],
                    cwd: None,
                    tty: false,
                }),
                r#"{"exec":{"args":["ls"],"env":[],"cwd":null,"tty":false}}"#,
            ),
        ];
        for (request, json) in cases {
            assert_eq!(serde_json::to_string(&request).expect("serialize"), json);
            assert_eq!(
                serde_json::from_str::<Request>(json).expect("parse"),
                request
            );
        }
        let stop: Request = serde_json::from_str(r#"{"stop":{}}"#).expect("parse");
        assert_eq!(stop, Request::Stop { timeout_s: None });
    }

    #[test]
    fn exec_events_carry_base64_and_exit_status() {
        let out = ExecEvent::Stdout(b"hi\n\xff".to_vec());
        let json = serde_json::to_string(&out).expect("serialize");
        assert_eq!(json, r#"{"stdout":"aGkK/w=="}"#);
        assert_eq!(
            serde_json::from_str::<ExecEvent>(&json).expect("parse"),
            out
        );
        let exit = ExecEvent::Exit(ExitStatus::Code(3));
        assert_eq!(
            serde_json::to_string(&exit).expect("serialize"),
            r#"{"exit":{"code":3}}"#
        );
        let err = Response::Error(ErrorBody {
            code: ErrorCode::NotRunning,
            message: "restarting".into(),
        });
        assert_eq!(
            serde_json::to_string(&err).expect("serialize"),
            r#"{"error":{"code":"not_running","message":"restarting"}}"#
        );
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_request_bytes_are_refused_or_parsed_never_a_panic(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200)
        ) {
            let _ = serde_json::from_slice::<Request>(&bytes);
            let _ = read_line(&mut &bytes[..]);
        }

        #[test]
        fn any_exec_output_round_trips(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..2000)
        ) {
            let event = ExecEvent::Stderr(bytes);
            let json = serde_json::to_vec(&event).expect("serialize");
            proptest::prop_assert!(!json.contains(&b'\n'), "one event is one line");
            proptest::prop_assert_eq!(serde_json::from_slice::<ExecEvent>(&json).expect("parse"), event);
        }
    }

    #[test]
    fn over_long_and_truncated_lines_are_errors() {
        let long = vec![b'x'; MAX_LINE + 10];
        let err = read_line(&mut &long[..]).expect_err("too long");
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
        let err = read_line(&mut &b"{\"sta"[..]).expect_err("truncated");
        assert_eq!(err.kind(), std::io::ErrorKind::UnexpectedEof);
        assert_eq!(read_line(&mut &b""[..]).expect("eof"), None);
        assert_eq!(
            read_line(&mut &b"\"state\"\n"[..]).expect("line"),
            Some(b"\"state\"".to_vec())
        );
    }

    #[test]
    fn the_client_reads_a_state_and_streams_exec_events() {
        use std::os::unix::net::UnixListener;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("shim.sock");
        let listener = UnixListener::bind(&path).expect("bind");
        let server = std::thread::spawn(move || {
            for _ in 0..2 {
                let (stream, _) = listener.accept().expect("accept");
                let mut reader = BufReader::new(stream.try_clone().expect("clone"));
                let line = read_line(&mut reader).expect("read").expect("line");
                let mut writer = stream;
                match serde_json::from_slice::<Request>(&line).expect("request") {
                    Request::State => {
                        write_line(&mut writer, &Response::State(ShimState::new(9))).expect("w");
                    }
                    Request::Exec(req) => {
                        assert_eq!(req.args, vec!["echo".to_owned()]);
                        write_line(&mut writer, &ExecEvent::Stdout(b"a".to_vec())).expect("w");
                        write_line(&mut writer, &ExecEvent::Stderr(b"b".to_vec())).expect("w");
                        write_line(&mut writer, &ExecEvent::Exit(ExitStatus::Code(4))).expect("w");
                    }
                    other => panic!("unexpected {other:?}"),
                }
            }
        });
        let client = ShimClient::new(&path);
        assert_eq!(client.state().expect("state").shim_pid, 9);
        let mut seen = Vec::new();
        let status = client
            .exec(
                ExecRequest {
                    args: vec!["echo".into()],
                    env: vec![],
                    cwd: None,
                    tty: false,
                },
                |e| seen.push(e.clone()),
            )
            .expect("exec");
        assert_eq!(status, ExitStatus::Code(4));
        assert_eq!(
            seen,
            vec![
                ExecEvent::Stdout(b"a".to_vec()),
                ExecEvent::Stderr(b"b".to_vec())
            ]
        );
        server.join().expect("server");
    }
}
