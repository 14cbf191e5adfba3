//! What went wrong, as one sentence for the operator and an exit code for
//! scripts.
//!
//! Everything here is pure: it reads error values (including the chain
//! under a `reqwest::Error`, where rustls and socket errors hide) and
//! returns a [`Failure`]. Nothing prints a `Debug` dump.

use std::error::Error as StdError;
use std::fmt::Write as _;
use std::io;

use api::{ApiError, ErrorCode};
use rustls::{AlertDescription, CertificateError};

use crate::client::{RequestError, UrlError};
use crate::config::{ContextError, ContextName, LoadConfigError, SaveConfigError};
use crate::duration::Span;
use crate::endpoint::Endpoint;
use crate::tls::{CredentialError, FingerprintMismatch};

/// The documented exit codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// 0: the command did what was asked.
    Success,
    /// 1: something else failed (the node reported an internal error, a
    /// local file could not be written, a wait timed out).
    Failure,
    /// 2: the command line or the CLI config file is wrong (clap's own
    /// usage errors exit 2 as well).
    Usage,
    /// 3: the node could not be reached (name resolution, connection
    /// refused, timeout, connection lost).
    Unreachable,
    /// 4: TLS or authentication failed: the node's certificate is not the
    /// pinned or trusted one, the node refused the client certificate, or
    /// a joining node found a cluster CA other than `--ca-hash`.
    Authentication,
    /// 5: the node refused the request: role too low, wrong setup token,
    /// maintenance mode, rate limited.
    PermissionDenied,
    /// 6: the node refused the input: invalid machine config, malformed
    /// request; or a local input file could not be read.
    InvalidInput,
    /// 7: what the command names is not there or not as expected: no such
    /// kv key or member, `--if-revision` did not match, the name is taken.
    /// Scripts doing compare-and-set loops tell this apart from a broken
    /// cluster by the code alone.
    Conflict,
}

impl Exit {
    /// Every code, in order.
    pub const ALL: [Exit; 8] = [
        Exit::Success,
        Exit::Failure,
        Exit::Usage,
        Exit::Unreachable,
        Exit::Authentication,
        Exit::PermissionDenied,
        Exit::InvalidInput,
        Exit::Conflict,
    ];

    /// The process exit code.
    pub const fn code(self) -> u8 {
        match self {
            Exit::Success => 0,
            Exit::Failure => 1,
            Exit::Usage => 2,
            Exit::Unreachable => 3,
            Exit::Authentication => 4,
            Exit::PermissionDenied => 5,
            Exit::InvalidInput => 6,
            Exit::Conflict => 7,
        }
    }

    /// One line for `--help` and the docs.
    pub const fn meaning(self) -> &'static str {
        match self {
            Exit::Success => "success",
            Exit::Failure => "failure (node error, local file, wait timed out)",
            Exit::Usage => "usage error (command line or CLI config file)",
            Exit::Unreachable => "node unreachable (DNS, refused, timeout, connection lost)",
            Exit::Authentication => "TLS or authentication failure (fingerprint, CA, certificate)",
            Exit::PermissionDenied => "permission denied (role, setup token, maintenance mode)",
            Exit::InvalidInput => "invalid input (config refused, bad request, unreadable file)",
            Exit::Conflict => "not found or conflict (kv key, member, --if-revision mismatch)",
        }
    }

    /// The table printed under `cairn --help`.
    pub fn help_table() -> String {
        let mut out = String::from("Exit codes:\n");
        for exit in Exit::ALL {
            let _ = writeln!(out, "  {}  {}", exit.code(), exit.meaning());
        }
        out
    }
}

/// A failed command as the operator sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// The exit code.
    pub exit: Exit,
    /// One sentence, lower-case, no trailing period.
    pub message: String,
}

impl Failure {
    fn new(exit: Exit, message: impl Into<String>) -> Self {
        Failure {
            exit,
            message: message.into(),
        }
    }
}

/// How the failed connection trusted the node; decides which sentence a
/// certificate problem gets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Trust {
    /// Verified against the CA of this context.
    Member(ContextName),
    /// Pinned by fingerprint (maintenance mode).
    Pinned,
}

/// A command failed.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// A flag is missing or a value is wrong in a way clap cannot see.
    #[error("{0}")]
    Usage(String),
    /// The config file cannot be located.
    #[error("cannot find the config file: neither XDG_CONFIG_HOME nor HOME is set, pass --config")]
    NoConfigPath,
    /// The config file cannot be read.
    #[error("cannot load the CLI config")]
    LoadConfig(#[source] LoadConfigError),
    /// The config file cannot be written.
    #[error("cannot save the CLI config")]
    SaveConfig(#[source] SaveConfigError),
    /// The config file cannot be written, but a credential that cannot be
    /// fetched again was saved to another file.
    #[error(
        "cannot save the CLI config, so the new credential was saved to {} (mode 0600): move it into place or pass it with --config",
        rescue.display()
    )]
    SaveConfigRescued {
        /// Where the whole config, with the new context, went.
        rescue: std::path::PathBuf,
        /// Why the real file could not be written.
        #[source]
        source: SaveConfigError,
    },
    /// No context can be used.
    #[error("cannot pick a context")]
    Context(#[source] ContextError),
    /// The context's credential is unusable.
    #[error("context {context} holds an unusable credential")]
    Credential {
        /// Which context.
        context: ContextName,
        /// Why.
        #[source]
        source: CredentialError,
    },
    /// The TLS configuration for maintenance mode cannot be built.
    #[error("cannot set up TLS")]
    Tls(#[source] rustls::Error),
    /// The HTTP client cannot be built.
    #[error("cannot set up the HTTPS client")]
    Client(#[source] crate::client::BuildClientError),
    /// A call to the node failed.
    #[error("request failed")]
    Request {
        /// How the node was trusted.
        trust: Trust,
        /// What failed.
        #[source]
        source: RequestError,
    },
    /// Making a key and CSR failed.
    #[error("cannot make a key and certificate request")]
    Csr(#[source] cluster::pki::CsrError),
    /// The node's bootstrap answer does not hold together.
    #[error("{0}")]
    BadCredential(String),
    /// A local input file cannot be read.
    #[error("cannot read {path}")]
    ReadInput {
        /// The file (`-` for standard input).
        path: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A local output file cannot be written.
    #[error("cannot write {path}")]
    WriteOutput {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// Standard output cannot be written.
    #[error("cannot write to standard output")]
    Stdout(#[source] io::Error),
    /// The node did not come back in time.
    #[error("the node at {endpoint} did not come back within {waited} ({last})")]
    WaitTimedOut {
        /// Where.
        endpoint: Endpoint,
        /// How long the CLI waited.
        waited: Span,
        /// The last thing seen.
        last: String,
    },
    /// `ctr exec` could not run the command or lost it.
    #[error("exec in container {container} failed: {message}")]
    Exec {
        /// The container.
        container: String,
        /// What the node said.
        message: String,
    },
    /// A stream ended before its last line said how the work went.
    #[error("the node ended {0} without saying how it went")]
    Incomplete(&'static str),
    /// A streamed line is not what the route promises.
    #[error("the node sent a {what} this client does not understand")]
    BadLine {
        /// What the line should have been (`log line`, `watch event`).
        what: &'static str,
        /// Why it is not.
        #[source]
        source: serde_json::Error,
    },
}

/// `error` and its causes, joined with `: `.
fn chain(error: &(dyn StdError + 'static)) -> String {
    let mut out = error.to_string();
    let mut next = error.source();
    while let Some(cause) = next {
        let text = cause.to_string();
        if !out.ends_with(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        next = cause.source();
    }
    out
}

/// Describes a failed command.
pub fn describe(error: &CommandError) -> Failure {
    match error {
        CommandError::Usage(_) | CommandError::NoConfigPath => {
            Failure::new(Exit::Usage, chain(error))
        }
        CommandError::Context(e) => Failure::new(Exit::Usage, e.to_string()),
        CommandError::LoadConfig(e) => Failure::new(Exit::Usage, chain(e)),
        CommandError::SaveConfig(_)
        | CommandError::SaveConfigRescued { .. }
        | CommandError::Tls(_)
        | CommandError::Client(_)
        | CommandError::Csr(_)
        | CommandError::WriteOutput { .. }
        | CommandError::Stdout(_)
        | CommandError::WaitTimedOut { .. }
        | CommandError::BadLine { .. }
        | CommandError::Exec { .. }
        | CommandError::Incomplete(_) => Failure::new(Exit::Failure, chain(error)),
        CommandError::Credential { .. } | CommandError::BadCredential(_) => {
            Failure::new(Exit::Authentication, chain(error))
        }
        CommandError::ReadInput { .. } => Failure::new(Exit::InvalidInput, chain(error)),
        CommandError::Request { trust, source } => describe_request(source, trust),
    }
}

/// Describes a failed call.
pub fn describe_request(error: &RequestError, trust: &Trust) -> Failure {
    match error {
        RequestError::Transport { endpoint, source } => {
            describe_transport(endpoint, source, source.is_timeout(), trust)
        }
        RequestError::Refused {
            operation,
            error,
            retry_after_s,
        } => describe_refusal(operation, error, *retry_after_s, trust),
        RequestError::UnexpectedStatus { .. } | RequestError::UnknownOperation(_) => {
            Failure::new(Exit::Failure, error.to_string())
        }
        RequestError::Url { source, .. } => match source {
            // A value typed on the command line that no path can carry.
            UrlError::UnusableValue { .. } => Failure::new(Exit::Usage, source.to_string()),
            UrlError::MissingParameter(_)
            | UrlError::UnusedParameter(_)
            | UrlError::Base(_)
            | UrlError::Query(_) => Failure::new(Exit::Failure, chain(error)),
        },
        RequestError::Decode { .. } | RequestError::Encode { .. } => {
            Failure::new(Exit::Failure, chain(error))
        }
    }
}

fn sentence(message: &str) -> &str {
    message.trim().trim_end_matches('.')
}

/// Describes an [`ApiError`] the node answered with.
pub fn describe_refusal(
    operation: &str,
    error: &ApiError,
    retry_after_s: Option<u64>,
    trust: &Trust,
) -> Failure {
    let said = sentence(&error.message);
    let said = if said.is_empty() {
        format!("{operation} failed ({})", code_name(error.code))
    } else {
        said.to_owned()
    };
    let mut message = match error.code {
        // The node accepted the request and then failed at it.
        ErrorCode::Internal
        | ErrorCode::Unavailable
        | ErrorCode::Timeout
        | ErrorCode::NoLeader
        | ErrorCode::OutcomeUnknown
        | ErrorCode::ClusterUnreachable
        | ErrorCode::CaMismatch
        | ErrorCode::RegistryAuthFailed
        | ErrorCode::RegistryUnreachable => {
            format!("the node failed to carry out {operation}: {said}")
        }
        // The answer is a plain "no such thing" or "not at that revision":
        // the node's sentence says it all.
        ErrorCode::KeyNotFound
        | ErrorCode::MemberNotFound
        | ErrorCode::TokenNotFound
        | ErrorCode::ImageNotFound
        | ErrorCode::RevisionConflict
        | ErrorCode::MemberExists
        | ErrorCode::ContainerNotFound
        | ErrorCode::ContainerExists
        | ErrorCode::ContainerRunning
        | ErrorCode::ContainerNotRunning => said,
        ErrorCode::ContainerStartFailed => format!("the container could not start: {said}"),
        ErrorCode::ClientCertificateRequired
        | ErrorCode::InvalidClientCertificate
        | ErrorCode::RoleTooLow
        | ErrorCode::MaintenanceMode
        | ErrorCode::InvalidSetupToken
        | ErrorCode::RateLimited
        | ErrorCode::AlreadyMember
        | ErrorCode::InvalidJoinToken
        | ErrorCode::Compacted
        | ErrorCode::BadRequest
        | ErrorCode::InvalidConfig
        | ErrorCode::InvalidImage
        | ErrorCode::InvalidContainer
        | ErrorCode::PayloadTooLarge
        | ErrorCode::NotFound
        | ErrorCode::MethodNotAllowed => format!("the node refused the request: {said}"),
    };
    let hint = match error.code {
        ErrorCode::ClientCertificateRequired => Some(
            "this client sent no certificate; check the context's cert-pem and key-pem".to_owned(),
        ),
        ErrorCode::InvalidClientCertificate => Some(match trust {
            Trust::Member(context) => format!(
                "the credential of context {context} may have expired or belong to another cluster"
            ),
            Trust::Pinned => "the credential may have expired or belong to another cluster".to_owned(),
        }),
        ErrorCode::MaintenanceMode => Some(
            "the node belongs to no cluster yet; bootstrap it with `cairn cluster init` or join it with `cairn node join`".to_owned(),
        ),
        ErrorCode::InvalidSetupToken => Some(
            "the token is printed on the node's console or set as cluster.setup-token in its machine config"
                .to_owned(),
        ),
        ErrorCode::RateLimited => retry_after_s.map(|s| format!("retry in {s} s")),
        ErrorCode::AlreadyMember => Some(
            "it belongs to a cluster already; talk to it with that cluster's context".to_owned(),
        ),
        ErrorCode::NoLeader => Some(
            "the cluster has no quorum or is electing a leader; retry in a few seconds".to_owned(),
        ),
        ErrorCode::OutcomeUnknown => Some(
            "the write may or may not have been applied; read the key before retrying".to_owned(),
        ),
        ErrorCode::CaMismatch => Some(
            "the cluster's CA fingerprint differs from --ca-hash; check the hash printed by `cairn cluster token create`"
                .to_owned(),
        ),
        ErrorCode::Compacted => Some(
            "list the keys again and watch from the list's revision".to_owned(),
        ),
        ErrorCode::InvalidJoinToken => Some(
            "tokens expire, can be revoked and may be used up; make a new one with `cairn cluster token create`".to_owned(),
        ),
        ErrorCode::RevisionConflict => Some(
            "read the current revision with `cairn kv get -o json KEY` and retry with it".to_owned(),
        ),
        ErrorCode::MemberNotFound => Some(
            "`cairn cluster status` lists the members".to_owned(),
        ),
        ErrorCode::ClusterUnreachable => Some(
            "the joining node could not reach the --cluster endpoint; check that it can, from the joining node's network".to_owned(),
        ),
        ErrorCode::ContainerRunning => Some(
            "stop it with `cairn ctr stop` first, or remove it with `cairn ctr rm --force`".to_owned(),
        ),
        ErrorCode::ContainerStartFailed => Some(
            "`cairn ctr inspect` and `cairn ctr logs` show what happened".to_owned(),
        ),
        ErrorCode::ContainerNotFound => Some("`cairn ctr list` lists the containers".to_owned()),
        ErrorCode::RegistryAuthFailed => Some(
            "the credentials come from the registry's auth in the node's machine config ([[registries]])".to_owned(),
        ),
        ErrorCode::RegistryUnreachable => Some(
            "check that the node can reach the registry and its mirrors, and their CA in [[registries]]".to_owned(),
        ),
        ErrorCode::RoleTooLow
        | ErrorCode::ContainerExists
        | ErrorCode::ContainerNotRunning
        | ErrorCode::InvalidContainer
        | ErrorCode::KeyNotFound
        | ErrorCode::TokenNotFound
        | ErrorCode::ImageNotFound
        | ErrorCode::MemberExists
        | ErrorCode::BadRequest
        | ErrorCode::InvalidConfig
        | ErrorCode::InvalidImage
        | ErrorCode::PayloadTooLarge
        | ErrorCode::Timeout
        | ErrorCode::NotFound
        | ErrorCode::MethodNotAllowed
        | ErrorCode::Unavailable
        | ErrorCode::Internal => None,
    };
    if let Some(hint) = hint {
        message.push_str(" (");
        message.push_str(&hint);
        message.push(')');
    }
    Failure::new(refusal_exit(error.code), message)
}

fn code_name(code: ErrorCode) -> String {
    serde_json::to_value(code)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| "error".to_owned())
}

/// The exit code for an API error code.
pub fn refusal_exit(code: ErrorCode) -> Exit {
    match code {
        // A CA other than the pinned one is the join's version of a
        // fingerprint mismatch.
        ErrorCode::ClientCertificateRequired
        | ErrorCode::InvalidClientCertificate
        | ErrorCode::CaMismatch
        | ErrorCode::RegistryAuthFailed => Exit::Authentication,
        ErrorCode::RoleTooLow
        | ErrorCode::MaintenanceMode
        | ErrorCode::InvalidSetupToken
        | ErrorCode::RateLimited
        | ErrorCode::AlreadyMember
        | ErrorCode::InvalidJoinToken => Exit::PermissionDenied,
        ErrorCode::BadRequest
        | ErrorCode::InvalidConfig
        | ErrorCode::InvalidImage
        | ErrorCode::InvalidContainer
        | ErrorCode::PayloadTooLarge => Exit::InvalidInput,
        ErrorCode::KeyNotFound
        | ErrorCode::MemberNotFound
        | ErrorCode::TokenNotFound
        | ErrorCode::ImageNotFound
        | ErrorCode::RevisionConflict
        | ErrorCode::MemberExists
        | ErrorCode::ContainerNotFound
        | ErrorCode::ContainerExists
        | ErrorCode::ContainerRunning
        | ErrorCode::ContainerNotRunning => Exit::Conflict,
        ErrorCode::Compacted
        | ErrorCode::ClusterUnreachable
        | ErrorCode::RegistryUnreachable
        | ErrorCode::NoLeader
        | ErrorCode::OutcomeUnknown
        | ErrorCode::Timeout
        | ErrorCode::NotFound
        | ErrorCode::MethodNotAllowed
        | ErrorCode::Unavailable
        | ErrorCode::ContainerStartFailed
        | ErrorCode::Internal => Exit::Failure,
    }
}

/// What a transport error chain boils down to.
enum Found<'a> {
    Mismatch(&'a FingerprintMismatch),
    Tls(&'a rustls::Error),
    Io(&'a io::Error),
}

/// Walks the chain for the most telling cause: our fingerprint mismatch,
/// then a rustls error, then the innermost socket error. `io::Error`
/// hides a wrapped error from `source()`, so it is opened by hand.
fn find_cause<'a>(error: &'a (dyn StdError + 'static)) -> Option<Found<'a>> {
    let mut io_found = None;
    let mut next: Option<&'a (dyn StdError + 'static)> = Some(error);
    while let Some(current) = next {
        if let Some(mismatch) = current.downcast_ref::<FingerprintMismatch>() {
            return Some(Found::Mismatch(mismatch));
        }
        if let Some(tls) = current.downcast_ref::<rustls::Error>() {
            if let rustls::Error::InvalidCertificate(CertificateError::Other(other)) = tls
                && let Some(mismatch) = other.0.downcast_ref::<FingerprintMismatch>()
            {
                return Some(Found::Mismatch(mismatch));
            }
            return Some(Found::Tls(tls));
        }
        if let Some(io) = current.downcast_ref::<io::Error>() {
            if let Some(inner) = io.get_ref()
                && let Some(found) = find_cause(inner)
            {
                return Some(found);
            }
            io_found = Some(io);
        }
        next = current.source();
    }
    io_found.map(Found::Io)
}

fn is_dns_failure(error: &(dyn StdError + 'static)) -> bool {
    let mut next = Some(error);
    while let Some(current) = next {
        if current.to_string().starts_with("dns error") {
            return true;
        }
        next = current.source();
    }
    false
}

/// Describes a request that got no answer.
pub fn describe_transport(
    endpoint: &Endpoint,
    error: &(dyn StdError + 'static),
    timed_out: bool,
    trust: &Trust,
) -> Failure {
    let unreachable =
        |why: &str| Failure::new(Exit::Unreachable, format!("cannot reach {endpoint}: {why}"));
    match find_cause(error) {
        Some(Found::Mismatch(mismatch)) => Failure::new(
            Exit::Authentication,
            format!(
                "{mismatch}; refusing to talk to {endpoint} (check the fingerprint on the node's console; a node that already belongs to a cluster no longer presents its maintenance certificate)"
            ),
        ),
        Some(Found::Tls(tls)) => describe_tls(endpoint, tls, trust),
        Some(Found::Io(_)) | None if timed_out => unreachable("timed out"),
        Some(Found::Io(io)) if is_dns_failure(error) => {
            unreachable(&format!("cannot resolve the host name ({})", io_text(io)))
        }
        Some(Found::Io(io)) => unreachable(&io_text(io)),
        None if is_dns_failure(error) => unreachable("cannot resolve the host name"),
        None => unreachable(&chain(error)),
    }
}

fn io_text(error: &io::Error) -> String {
    match error.kind() {
        io::ErrorKind::ConnectionRefused => "connection refused".to_owned(),
        io::ErrorKind::TimedOut => "timed out".to_owned(),
        io::ErrorKind::ConnectionReset
        | io::ErrorKind::ConnectionAborted
        | io::ErrorKind::BrokenPipe
        | io::ErrorKind::UnexpectedEof => "the connection was closed".to_owned(),
        io::ErrorKind::HostUnreachable => "no route to host".to_owned(),
        io::ErrorKind::NetworkUnreachable => "the network is unreachable".to_owned(),
        io::ErrorKind::AddrNotAvailable => "the address is not available".to_owned(),
        _ => {
            // The OS text without the "(os error N)" suffix, lower-cased
            // like every other sentence here.
            let text = error.to_string();
            let text = match text.find(" (os error") {
                Some(at) => &text[..at],
                None => text.as_str(),
            };
            let mut chars = text.chars();
            match chars.next() {
                Some(first) => first.to_lowercase().chain(chars).collect(),
                None => "unknown error".to_owned(),
            }
        }
    }
}

fn describe_tls(endpoint: &Endpoint, error: &rustls::Error, trust: &Trust) -> Failure {
    let auth = |message: String| Failure::new(Exit::Authentication, message);
    let cert = |what: &str| auth(format!("the certificate of the node at {endpoint} {what}"));
    match error {
        rustls::Error::InvalidCertificate(problem) => match problem {
            // Two clusters with the same name have CAs with the same
            // subject, so a node of the other one fails the signature
            // check rather than the issuer lookup.
            CertificateError::UnknownIssuer | CertificateError::BadSignature => match trust {
                Trust::Member(context) => cert(&format!(
                    "is not signed by the cluster CA of context {context} (is this node in another cluster, or still in maintenance mode?)"
                )),
                Trust::Pinned => cert("is not trusted"),
            },
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                cert("has expired")
            }
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                cert("is not valid yet (check the clocks of this machine and the node)")
            }
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                cert(
                    "does not name this host; connect by a name or address the node's certificate lists",
                )
            }
            CertificateError::Revoked => cert("is revoked"),
            CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. } => {
                cert("is not a server certificate")
            }
            other => cert(&format!(
                "is refused: {}",
                rustls::Error::InvalidCertificate(other.clone())
            )),
        },
        rustls::Error::AlertReceived(alert) => match alert {
            AlertDescription::CertificateRequired => auth(format!(
                "the node at {endpoint} requires a client certificate and this client has none for it"
            )),
            AlertDescription::BadCertificate
            | AlertDescription::UnknownCA
            | AlertDescription::CertificateExpired
            | AlertDescription::CertificateRevoked
            | AlertDescription::CertificateUnknown
            | AlertDescription::UnsupportedCertificate
            | AlertDescription::AccessDenied => auth(format!(
                "the node at {endpoint} refused this client's certificate (it may have expired or belong to another cluster)"
            )),
            AlertDescription::ProtocolVersion | AlertDescription::HandshakeFailure => {
                auth(format!(
                    "the TLS handshake with {endpoint} failed: the node does not speak TLS 1.3 with this client's algorithms"
                ))
            }
            other => auth(format!(
                "the TLS handshake with {endpoint} failed: the node sent the alert {other:?}"
            )),
        },
        rustls::Error::InvalidMessage(_) => Failure::new(
            Exit::Unreachable,
            format!("cannot reach {endpoint}: it does not speak TLS (is this a Cairn API port?)"),
        ),
        other => auth(format!("the TLS handshake with {endpoint} failed: {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cluster::pki::Fingerprint;
    use std::sync::Arc;

    fn ep() -> Endpoint {
        "10.0.0.5:7443".parse().expect("endpoint")
    }

    fn member() -> Trust {
        Trust::Member("lab".parse().expect("name"))
    }

    /// The shape hyper/reqwest produce: an outer error whose source is an
    /// `io::Error` wrapping the real cause.
    #[derive(Debug, thiserror::Error)]
    #[error("error sending request")]
    struct Outer(#[source] io::Error);

    #[test]
    fn a_refused_connection_is_one_sentence_with_the_cause() {
        let err = Outer(io::Error::from(io::ErrorKind::ConnectionRefused));
        let failure = describe_transport(&ep(), &err, false, &member());
        assert_eq!(failure.exit, Exit::Unreachable);
        assert_eq!(
            failure.message,
            "cannot reach 10.0.0.5:7443: connection refused"
        );
    }

    #[test]
    fn a_name_that_does_not_resolve_says_so() {
        #[derive(Debug, thiserror::Error)]
        #[error("dns error")]
        struct Dns(#[source] io::Error);
        let err = Outer(io::Error::other(Dns(io::Error::other(
            "failed to lookup address information: Name or service not known",
        ))));
        let failure = describe_transport(&ep(), &err, false, &member());
        assert_eq!(failure.exit, Exit::Unreachable);
        assert!(
            failure
                .message
                .starts_with("cannot reach 10.0.0.5:7443: cannot resolve the host name"),
            "{}",
            failure.message
        );
    }

    #[test]
    fn a_timeout_says_timed_out() {
        let err = Outer(io::Error::other("operation timed out"));
        let failure = describe_transport(&ep(), &err, true, &member());
        assert_eq!(failure.message, "cannot reach 10.0.0.5:7443: timed out");
    }

    #[test]
    fn a_fingerprint_mismatch_names_both_fingerprints() {
        let mismatch = FingerprintMismatch {
            seen: Fingerprint::of_der(b"a"),
            pinned: Fingerprint::of_der(b"b"),
        };
        let tls = rustls::Error::InvalidCertificate(CertificateError::Other(rustls::OtherError(
            Arc::new(mismatch.clone()),
        )));
        let err = Outer(io::Error::new(io::ErrorKind::InvalidData, tls));
        let failure = describe_transport(&ep(), &err, false, &Trust::Pinned);
        assert_eq!(failure.exit, Exit::Authentication);
        assert!(
            failure.message.starts_with(&format!(
                "the node's certificate fingerprint {} does not match the pinned {}",
                mismatch.seen, mismatch.pinned
            )),
            "{}",
            failure.message
        );
    }

    #[test]
    fn certificate_problems_map_to_authentication_sentences() {
        let cases = [
            (
                CertificateError::UnknownIssuer,
                "is not signed by the cluster CA of context lab",
            ),
            (CertificateError::Expired, "has expired"),
            (CertificateError::NotValidForName, "does not name this host"),
            (
                CertificateError::BadSignature,
                "is not signed by the cluster CA of context lab",
            ),
        ];
        for (problem, expected) in cases {
            let err = Outer(io::Error::new(
                io::ErrorKind::InvalidData,
                rustls::Error::InvalidCertificate(problem),
            ));
            let failure = describe_transport(&ep(), &err, false, &member());
            assert_eq!(failure.exit, Exit::Authentication);
            assert!(failure.message.contains(expected), "{}", failure.message);
            assert!(
                !failure.message.contains("InvalidCertificate"),
                "{}",
                failure.message
            );
        }
    }

    #[test]
    fn a_refused_client_certificate_is_an_authentication_failure() {
        let err = Outer(io::Error::new(
            io::ErrorKind::InvalidData,
            rustls::Error::AlertReceived(AlertDescription::UnknownCA),
        ));
        let failure = describe_transport(&ep(), &err, false, &member());
        assert_eq!(failure.exit, Exit::Authentication);
        assert!(
            failure
                .message
                .contains("refused this client's certificate"),
            "{}",
            failure.message
        );
    }

    #[test]
    fn role_too_low_is_rendered_as_the_nodes_sentence() {
        let error = ApiError::new(
            ErrorCode::RoleTooLow,
            "role reader is too low for node_reboot (needs operator).",
        );
        let failure = describe_refusal("node_reboot", &error, None, &member());
        assert_eq!(failure.exit, Exit::PermissionDenied);
        assert_eq!(
            failure.message,
            "the node refused the request: role reader is too low for node_reboot (needs operator)"
        );
    }

    #[test]
    fn refusals_get_hints_and_their_exit_codes() {
        let limited = ApiError::new(ErrorCode::RateLimited, "too many failed setup tokens");
        let failure = describe_refusal("cluster_bootstrap", &limited, Some(30), &Trust::Pinned);
        assert_eq!(failure.exit, Exit::PermissionDenied);
        assert!(
            failure.message.ends_with("(retry in 30 s)"),
            "{}",
            failure.message
        );

        let config = ApiError::new(
            ErrorCode::InvalidConfig,
            "network.links.eth0.dhcp: expected a boolean",
        );
        let failure = describe_refusal("node_config_apply", &config, None, &member());
        assert_eq!(failure.exit, Exit::InvalidInput);
        assert!(
            failure.message.contains("network.links.eth0.dhcp"),
            "{}",
            failure.message
        );

        let empty = ApiError::new(ErrorCode::BadRequest, "");
        let failure = describe_refusal("node_info", &empty, None, &member());
        assert_eq!(
            failure.message,
            "the node refused the request: node_info failed (bad_request)"
        );

        let init = ApiError::new(ErrorCode::Unavailable, "cannot reach cairn-init");
        let failure = describe_refusal("node_reboot", &init, None, &member());
        assert_eq!(failure.exit, Exit::Failure);
        assert_eq!(
            failure.message,
            "the node failed to carry out node_reboot: cannot reach cairn-init"
        );
    }

    #[test]
    fn missing_things_and_conflicts_are_the_nodes_sentence_and_exit_7() {
        let missing = ApiError::new(ErrorCode::KeyNotFound, "key \"a/b\" does not exist.");
        let failure = describe_refusal("kv_get", &missing, None, &member());
        assert_eq!(failure.exit, Exit::Conflict);
        assert_eq!(failure.message, "key \"a/b\" does not exist");

        let conflict = ApiError::new(
            ErrorCode::RevisionConflict,
            "key \"a\" is at revision 7, not 5",
        );
        let failure = describe_refusal("kv_put", &conflict, None, &member());
        assert_eq!(failure.exit, Exit::Conflict);
        assert!(
            failure
                .message
                .starts_with("key \"a\" is at revision 7, not 5 (read the current revision"),
            "{}",
            failure.message
        );
    }

    #[test]
    fn join_refusals_say_what_to_check() {
        let token = ApiError::new(ErrorCode::InvalidJoinToken, "the join token expired");
        let failure = describe_refusal("cluster_join", &token, None, &Trust::Pinned);
        assert_eq!(failure.exit, Exit::PermissionDenied);
        assert!(
            failure.message.contains("`cairn cluster token create`"),
            "{}",
            failure.message
        );

        let ca = ApiError::new(
            ErrorCode::CaMismatch,
            "the cluster CA is sha256:00.., not the pinned sha256:11..",
        );
        let failure = describe_refusal("cluster_join", &ca, None, &Trust::Pinned);
        assert_eq!(failure.exit, Exit::Authentication);
        assert!(failure.message.contains("--ca-hash"), "{}", failure.message);
    }

    #[test]
    fn every_api_error_code_has_an_exit_code_other_than_success_and_usage() {
        for code in ErrorCode::ALL {
            let exit = refusal_exit(code);
            assert!(!matches!(exit, Exit::Success | Exit::Usage), "{code:?}");
        }
    }

    #[test]
    fn exit_codes_are_distinct_and_documented_in_order() {
        let codes: Vec<u8> = Exit::ALL.iter().map(|e| e.code()).collect();
        assert_eq!(codes, (0..8).collect::<Vec<u8>>());
        let help = Exit::help_table();
        for exit in Exit::ALL {
            assert!(help.contains(&format!("  {}  {}", exit.code(), exit.meaning())));
        }
    }

    #[test]
    fn local_errors_keep_their_cause_in_the_sentence() {
        let err = CommandError::ReadInput {
            path: "node.toml".to_owned(),
            source: io::Error::from(io::ErrorKind::NotFound),
        };
        let failure = describe(&err);
        assert_eq!(failure.exit, Exit::InvalidInput);
        assert_eq!(failure.message, "cannot read node.toml: entity not found");
    }
}
