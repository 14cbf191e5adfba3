//! A small QMP (QEMU Machine Protocol) client.
//!
//! QMP is JSON objects separated by newlines over a unix socket. The server
//! greets with `{"QMP": {...}}`; the client must send `qmp_capabilities`
//! before anything else; every command gets one `return` or `error` reply
//! carrying the command's `id`; asynchronous `event`s (POWERDOWN, SHUTDOWN,
//! ...) may arrive at any point, including between a command and its reply.
//!
//! The protocol part ([`QmpCommand::encode`], [`parse_message`]) does no I/O
//! and is unit tested; [`QmpClient`] is the thin blocking shell around it.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// Commands the harness sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QmpCommand {
    /// Leaves capabilities negotiation mode; must be first.
    Capabilities,
    /// Presses the ACPI power button.
    SystemPowerdown,
    /// Hard reset, like the reset button.
    SystemReset,
    /// Exits QEMU immediately.
    Quit,
    /// Asks for the run state.
    QueryStatus,
    /// Sets a NIC's link up or down (network partitions).
    SetLink { device: String, up: bool },
}

impl QmpCommand {
    /// The wire name of the command.
    #[must_use]
    pub fn name(&self) -> &'static str {
        match self {
            Self::Capabilities => "qmp_capabilities",
            Self::SystemPowerdown => "system_powerdown",
            Self::SystemReset => "system_reset",
            Self::Quit => "quit",
            Self::QueryStatus => "query-status",
            Self::SetLink { .. } => "set_link",
        }
    }

    /// One JSON line (with the trailing newline) carrying `id`.
    #[must_use]
    pub fn encode(&self, id: u64) -> String {
        let mut message = json!({ "execute": self.name(), "id": id });
        match self {
            Self::SetLink { device, up } => {
                message["arguments"] = json!({ "name": device, "up": up });
            }
            Self::Capabilities
            | Self::SystemPowerdown
            | Self::SystemReset
            | Self::Quit
            | Self::QueryStatus => {}
        }
        let mut line = message.to_string();
        line.push('\n');
        line
    }
}

/// One message from the server.
#[derive(Debug, Clone, PartialEq)]
pub enum QmpMessage {
    Greeting {
        version: String,
    },
    Return {
        id: Option<u64>,
        value: Value,
    },
    Error {
        id: Option<u64>,
        class: String,
        desc: String,
    },
    Event(QmpEvent),
}

/// An asynchronous event, e.g. `POWERDOWN` or `SHUTDOWN`.
#[derive(Debug, Clone, PartialEq)]
pub struct QmpEvent {
    pub name: String,
    pub data: Value,
}

/// A line from the server that is not a QMP message.
#[derive(Debug, thiserror::Error)]
pub enum QmpParseError {
    #[error("not JSON")]
    Json(#[source] serde_json::Error),
    #[error("not a QMP message: {0}")]
    Shape(String),
}

/// Parses one line received from QMP.
///
/// # Errors
/// [`QmpParseError`] when the line is not JSON or not a known message kind.
pub fn parse_message(line: &str) -> Result<QmpMessage, QmpParseError> {
    let value: Value = serde_json::from_str(line).map_err(QmpParseError::Json)?;
    let Value::Object(map) = &value else {
        return Err(QmpParseError::Shape(line.to_owned()));
    };
    let id = map.get("id").and_then(Value::as_u64);
    if let Some(greeting) = map.get("QMP") {
        let v = &greeting["version"]["qemu"];
        let version = format!("{}.{}.{}", v["major"], v["minor"], v["micro"]);
        return Ok(QmpMessage::Greeting { version });
    }
    if let Some(ret) = map.get("return") {
        return Ok(QmpMessage::Return {
            id,
            value: ret.clone(),
        });
    }
    if let Some(err) = map.get("error") {
        let text = |key: &str| {
            err.get(key)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        return Ok(QmpMessage::Error {
            id,
            class: text("class"),
            desc: text("desc"),
        });
    }
    if let Some(name) = map.get("event").and_then(Value::as_str) {
        let data = map.get("data").cloned().unwrap_or(Value::Null);
        return Ok(QmpMessage::Event(QmpEvent {
            name: name.to_owned(),
            data,
        }));
    }
    Err(QmpParseError::Shape(line.to_owned()))
}

/// Failures talking to QMP.
#[derive(Debug, thiserror::Error)]
pub enum QmpError {
    #[error("connecting to QMP socket {path} (waited {waited:?})")]
    Connect {
        path: String,
        waited: Duration,
        #[source]
        source: std::io::Error,
    },
    #[error("QMP socket I/O")]
    Io(#[source] std::io::Error),
    #[error("QMP connection closed")]
    Closed,
    #[error("QMP sent an unparseable line")]
    Parse(#[source] QmpParseError),
    #[error("QMP did not greet first")]
    NoGreeting,
    #[error("QMP command `{command}` failed: {class}: {desc}")]
    Command {
        command: &'static str,
        class: String,
        desc: String,
    },
    #[error("QMP reply to `{command}` had an unexpected shape: {value}")]
    UnexpectedReply { command: &'static str, value: Value },
}

/// The VM's run state as reported by `query-status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunStatus {
    pub running: bool,
    /// e.g. `running`, `paused`, `shutdown`.
    pub status: String,
}

/// A connected, negotiated QMP session.
#[derive(Debug)]
pub struct QmpClient {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    next_id: u64,
    version: String,
    events: Vec<QmpEvent>,
}

impl QmpClient {
    /// Connects (retrying until QEMU has created the socket) and negotiates
    /// capabilities.
    ///
    /// # Errors
    /// [`QmpError`] if the socket never appears or the handshake fails.
    pub fn connect(path: &Path, timeout: Duration, io_timeout: Duration) -> Result<Self, QmpError> {
        let start = Instant::now();
        let stream = loop {
            match UnixStream::connect(path) {
                Ok(stream) => break stream,
                Err(source) if start.elapsed() >= timeout => {
                    return Err(QmpError::Connect {
                        path: path.display().to_string(),
                        waited: start.elapsed(),
                        source,
                    });
                }
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        };
        stream
            .set_read_timeout(Some(io_timeout))
            .map_err(QmpError::Io)?;
        stream
            .set_write_timeout(Some(io_timeout))
            .map_err(QmpError::Io)?;
        let writer = stream.try_clone().map_err(QmpError::Io)?;
        let mut client = Self {
            reader: BufReader::new(stream),
            writer,
            next_id: 1,
            version: String::new(),
            events: Vec::new(),
        };
        match client.read_message()? {
            QmpMessage::Greeting { version } => client.version = version,
            QmpMessage::Return { .. } | QmpMessage::Error { .. } | QmpMessage::Event(_) => {
                return Err(QmpError::NoGreeting);
            }
        }
        client.execute(&QmpCommand::Capabilities)?;
        Ok(client)
    }

    /// QEMU's version from the greeting, e.g. `7.2.22`.
    #[must_use]
    pub fn version(&self) -> &str {
        &self.version
    }

    /// Sends a command and waits for its reply, keeping any events that
    /// arrive meanwhile.
    ///
    /// # Errors
    /// [`QmpError::Command`] when QEMU answers with an error, or I/O errors.
    pub fn execute(&mut self, command: &QmpCommand) -> Result<Value, QmpError> {
        let id = self.next_id;
        self.next_id += 1;
        self.writer
            .write_all(command.encode(id).as_bytes())
            .map_err(QmpError::Io)?;
        loop {
            match self.read_message()? {
                QmpMessage::Return {
                    id: Some(got),
                    value,
                } if got == id => return Ok(value),
                QmpMessage::Error {
                    id: Some(got),
                    class,
                    desc,
                } if got == id => {
                    return Err(QmpError::Command {
                        command: command.name(),
                        class,
                        desc,
                    });
                }
                QmpMessage::Event(event) => self.events.push(event),
                // Replies to other ids cannot happen with one command in
                // flight; a greeting mid-session neither. Both are ignored.
                QmpMessage::Return { .. }
                | QmpMessage::Error { .. }
                | QmpMessage::Greeting { .. } => {}
            }
        }
    }

    /// Presses the ACPI power button.
    ///
    /// # Errors
    /// See [`QmpClient::execute`].
    pub fn system_powerdown(&mut self) -> Result<(), QmpError> {
        self.execute(&QmpCommand::SystemPowerdown).map(drop)
    }

    /// Resets the machine like its reset button: no orderly shutdown, the
    /// guest boots again from its disk. With `-no-reboot` QEMU exits instead.
    ///
    /// # Errors
    /// See [`QmpClient::execute`].
    pub fn system_reset(&mut self) -> Result<(), QmpError> {
        self.execute(&QmpCommand::SystemReset).map(drop)
    }

    /// Sets the link of NIC backend `device` (the harness names it `net0`,
    /// see [`crate::vm::NETDEV`]) up or down: the guest sees carrier loss
    /// and its frames go nowhere, a network partition of this one machine.
    ///
    /// # Errors
    /// See [`QmpClient::execute`].
    pub fn set_link(&mut self, device: &str, up: bool) -> Result<(), QmpError> {
        self.execute(&QmpCommand::SetLink {
            device: device.to_owned(),
            up,
        })
        .map(drop)
    }

    /// Asks QEMU to exit; QEMU may close the socket before replying, which
    /// counts as success.
    ///
    /// # Errors
    /// See [`QmpClient::execute`].
    pub fn quit(&mut self) -> Result<(), QmpError> {
        match self.execute(&QmpCommand::Quit) {
            Ok(_) | Err(QmpError::Closed) => Ok(()),
            Err(QmpError::Io(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// `query-status`.
    ///
    /// # Errors
    /// See [`QmpClient::execute`]; [`QmpError::UnexpectedReply`] if fields are missing.
    pub fn query_status(&mut self) -> Result<RunStatus, QmpError> {
        let command = QmpCommand::QueryStatus;
        let value = self.execute(&command)?;
        let running = value.get("running").and_then(Value::as_bool);
        let status = value.get("status").and_then(Value::as_str);
        match (running, status) {
            (Some(running), Some(status)) => Ok(RunStatus {
                running,
                status: status.to_owned(),
            }),
            _ => Err(QmpError::UnexpectedReply {
                command: command.name(),
                value,
            }),
        }
    }

    /// Events received so far (drained).
    pub fn take_events(&mut self) -> Vec<QmpEvent> {
        std::mem::take(&mut self.events)
    }

    fn read_message(&mut self) -> Result<QmpMessage, QmpError> {
        let mut line = String::new();
        loop {
            line.clear();
            let n = self.reader.read_line(&mut line).map_err(QmpError::Io)?;
            if n == 0 {
                return Err(QmpError::Closed);
            }
            if !line.trim().is_empty() {
                return parse_message(line.trim()).map_err(QmpError::Parse);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn commands_encode_as_one_json_line_with_id() {
        let line = QmpCommand::SystemPowerdown.encode(7);
        assert!(line.ends_with('\n'));
        assert_eq!(line.matches('\n').count(), 1);
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v, json!({"execute": "system_powerdown", "id": 7}));
        let v: Value = serde_json::from_str(
            &QmpCommand::SetLink {
                device: "net0".into(),
                up: false,
            }
            .encode(1),
        )
        .unwrap();
        assert_eq!(v["arguments"], json!({"name": "net0", "up": false}));
    }

    #[test]
    fn parses_greeting_returns_errors_and_events() {
        let greeting = r#"{"QMP": {"version": {"qemu": {"micro": 22, "minor": 2, "major": 7}, "package": "Debian"}, "capabilities": ["oob"]}}"#;
        assert_eq!(
            parse_message(greeting).unwrap(),
            QmpMessage::Greeting {
                version: "7.2.22".into()
            }
        );
        assert_eq!(
            parse_message(r#"{"return": {}, "id": 3}"#).unwrap(),
            QmpMessage::Return {
                id: Some(3),
                value: json!({})
            }
        );
        assert_eq!(
            parse_message(r#"{"id": 4, "error": {"class": "CommandNotFound", "desc": "The command nope has not been found"}}"#).unwrap(),
            QmpMessage::Error { id: Some(4), class: "CommandNotFound".into(), desc: "The command nope has not been found".into() }
        );
        let event = r#"{"timestamp": {"seconds": 1, "microseconds": 2}, "event": "SHUTDOWN", "data": {"guest": true, "reason": "guest-shutdown"}}"#;
        assert_eq!(
            parse_message(event).unwrap(),
            QmpMessage::Event(QmpEvent {
                name: "SHUTDOWN".into(),
                data: json!({"guest": true, "reason": "guest-shutdown"})
            })
        );
    }

    #[test]
    fn rejects_non_qmp_lines() {
        assert!(matches!(
            parse_message("[1,2]"),
            Err(QmpParseError::Shape(_))
        ));
        assert!(matches!(
            parse_message(r#"{"hello": 1}"#),
            Err(QmpParseError::Shape(_))
        ));
        assert!(matches!(
            parse_message("{not json"),
            Err(QmpParseError::Json(_))
        ));
    }

    /// A scripted QMP server: greets, then answers each received line with
    /// the next canned reply lines (ids are copied from the request).
    fn fake_server(
        replies: Vec<Vec<&'static str>>,
    ) -> (tempfile::TempDir, std::thread::JoinHandle<Vec<Value>>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("qmp.sock");
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let handle = std::thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            let mut writer = stream.try_clone().unwrap();
            let mut reader = BufReader::new(stream);
            writer.write_all(b"{\"QMP\": {\"version\": {\"qemu\": {\"major\": 7, \"minor\": 2, \"micro\": 0}}, \"capabilities\": []}}\r\n").unwrap();
            let mut received = Vec::new();
            for reply in replies {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap() == 0 {
                    break;
                }
                let request: Value = serde_json::from_str(&line).unwrap();
                let id = request["id"].clone();
                received.push(request);
                for template in reply {
                    writer
                        .write_all(template.replace("$ID", &id.to_string()).as_bytes())
                        .unwrap();
                    writer.write_all(b"\r\n").unwrap();
                }
            }
            received
        });
        (dir, handle)
    }

    #[test]
    fn client_negotiates_then_keeps_events_that_arrive_before_a_reply() {
        let (dir, server) = fake_server(vec![
            vec![r#"{"return": {}, "id": $ID}"#],
            vec![
                r#"{"event": "POWERDOWN", "data": {}, "timestamp": {"seconds": 1, "microseconds": 0}}"#,
                r#"{"return": {}, "id": $ID}"#,
            ],
            vec![
                r#"{"return": {"status": "running", "running": true, "singlestep": false}, "id": $ID}"#,
            ],
            vec![r#"{"error": {"class": "GenericError", "desc": "nope"}, "id": $ID}"#],
        ]);
        let path = dir.path().join("qmp.sock");
        let mut client =
            QmpClient::connect(&path, Duration::from_secs(5), Duration::from_secs(5)).unwrap();
        assert_eq!(client.version(), "7.2.0");
        client.system_powerdown().unwrap();
        assert_eq!(
            client
                .take_events()
                .iter()
                .map(|e| e.name.as_str())
                .collect::<Vec<_>>(),
            ["POWERDOWN"]
        );
        assert_eq!(
            client.query_status().unwrap(),
            RunStatus {
                running: true,
                status: "running".into()
            }
        );
        let err = client.execute(&QmpCommand::SystemReset).unwrap_err();
        assert!(
            matches!(err, QmpError::Command { command: "system_reset", ref desc, .. } if desc == "nope"),
            "{err:?}"
        );
        drop(client);
        let sent: Vec<String> = server
            .join()
            .unwrap()
            .iter()
            .map(|v| v["execute"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(
            sent,
            [
                "qmp_capabilities",
                "system_powerdown",
                "query-status",
                "system_reset"
            ]
        );
    }

    #[test]
    fn quit_counts_a_closed_connection_as_success() {
        let (dir, server) = fake_server(vec![vec![r#"{"return": {}, "id": $ID}"#], vec![]]);
        let mut client = QmpClient::connect(
            &dir.path().join("qmp.sock"),
            Duration::from_secs(5),
            Duration::from_secs(5),
        )
        .unwrap();
        let sent = std::thread::spawn(move || server.join().unwrap());
        client.quit().unwrap();
        assert_eq!(sent.join().unwrap().len(), 2);
    }

    #[test]
    fn set_link_and_system_reset_send_their_commands_and_arguments() {
        let (dir, server) = fake_server(vec![
            vec![r#"{"return": {}, "id": $ID}"#],
            vec![r#"{"return": {}, "id": $ID}"#],
            vec![r#"{"return": {}, "id": $ID}"#],
            vec![r#"{"return": {}, "id": $ID}"#],
        ]);
        let mut client = QmpClient::connect(
            &dir.path().join("qmp.sock"),
            Duration::from_secs(5),
            Duration::from_secs(5),
        )
        .unwrap();
        client.set_link("net0", false).unwrap();
        client.set_link("net0", true).unwrap();
        client.system_reset().unwrap();
        drop(client);
        let sent = server.join().unwrap();
        assert_eq!(
            sent[1],
            json!({"execute": "set_link", "id": 2, "arguments": {"name": "net0", "up": false}})
        );
        assert_eq!(sent[2]["arguments"], json!({"name": "net0", "up": true}));
        assert_eq!(sent[3]["execute"], "system_reset");
    }

    proptest! {
        #[test]
        fn encoded_commands_carry_their_id_and_name(id in any::<u64>(), up in any::<bool>(), device in "[a-z0-9]{1,10}") {
            for command in [QmpCommand::Capabilities, QmpCommand::QueryStatus, QmpCommand::Quit, QmpCommand::SetLink { device: device.clone(), up }] {
                let v: Value = serde_json::from_str(&command.encode(id)).unwrap();
                prop_assert_eq!(v["id"].as_u64(), Some(id));
                prop_assert_eq!(v["execute"].as_str(), Some(command.name()));
            }
        }

        #[test]
        fn return_replies_round_trip_their_id(id in any::<u64>(), n in any::<i64>()) {
            let line = json!({"return": {"n": n}, "id": id}).to_string();
            prop_assert_eq!(parse_message(&line).unwrap(), QmpMessage::Return { id: Some(id), value: json!({"n": n}) });
        }

        #[test]
        fn arbitrary_text_never_panics_the_parser(text in "\\PC{0,200}") {
            let _ = parse_message(&text);
        }
    }
}
