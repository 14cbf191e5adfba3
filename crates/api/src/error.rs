//! Refusals: one JSON shape for every error the API returns.

use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// What went wrong, as a stable code that scripts can match on. The HTTP
/// status follows from the code ([`ErrorCode::status`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// 401: the route needs a client certificate and none was presented.
    ClientCertificateRequired,
    /// 401: the client certificate is not valid for this cluster (another
    /// CA, expired, not yet valid, or without a Cairn role).
    InvalidClientCertificate,
    /// 403: the certificate's role is below what the route needs.
    RoleTooLow,
    /// 403: the node is in maintenance mode and serves only bootstrap and
    /// join.
    MaintenanceMode,
    /// 403: the setup token does not match.
    InvalidSetupToken,
    /// 429: too many recent failures; retry after the `Retry-After` header.
    RateLimited,
    /// 409: the node already belongs to a cluster.
    AlreadyMember,
    /// 403: the join token is unknown, wrong, expired, revoked or used up.
    InvalidJoinToken,
    /// 404: the key does not exist.
    KeyNotFound,
    /// 404: no member has that name.
    MemberNotFound,
    /// 404: no join token has that id.
    TokenNotFound,
    /// 404: no image has that reference or digest.
    ImageNotFound,
    /// 404: no container has that name on this node.
    ContainerNotFound,
    /// 409: a container of that name already exists on this node.
    ContainerExists,
    /// 409: the container is running (remove it with `force`, or stop it
    /// first).
    ContainerRunning,
    /// 409: the container is not running (exec needs a running process).
    ContainerNotRunning,
    /// 422: a container request was refused (a bad name, volume, path,
    /// capability, user or limit); the message names it.
    InvalidContainer,
    /// 422: the container was created but its process could not be
    /// started (no such executable, a mount that failed); the message
    /// names the cause. It is left in state `exited` for inspection.
    ContainerStartFailed,
    /// 502: a registry refused the machine config's credentials for it
    /// (or their absence); the message names the registry.
    RegistryAuthFailed,
    /// 502: no registry (mirror or upstream) could serve an image; the
    /// message names each one tried and why.
    RegistryUnreachable,
    /// 409: compare-and-set failed: the key is at another revision; the
    /// message names it.
    RevisionConflict,
    /// 409: a node of that name is already a member.
    MemberExists,
    /// 410: a watch asked for changes older than the history keeps; list
    /// again and watch from the list's revision.
    Compacted,
    /// 502: the cluster a join named could not be reached or answered
    /// wrongly.
    ClusterUnreachable,
    /// 502: the cluster's CA is not the one the join pinned.
    CaMismatch,
    /// 503: the cluster has no leader right now (no quorum, or an
    /// election is running); retry.
    NoLeader,
    /// 504: a write was not confirmed in time; it may or may not have been
    /// applied.
    OutcomeUnknown,
    /// 400: the request is malformed (bad JSON, unknown field, bad value).
    BadRequest,
    /// 422: a machine config was refused; the message names the key and
    /// the reason.
    InvalidConfig,
    /// 422: an image archive was refused (not an OCI archive, truncated,
    /// a blob that does not match its digest or is missing, an unknown
    /// media type, a layer that escapes its root); the message names the
    /// problem. Nothing of it was stored.
    InvalidImage,
    /// 413: the request body is larger than the server accepts.
    PayloadTooLarge,
    /// 408: the request took longer than the server allows.
    Timeout,
    /// 404: no such route.
    NotFound,
    /// 405: the route exists but not with this method.
    MethodNotAllowed,
    /// 503: a part of the node the route needs is not available (for
    /// example init's D-Bus interface).
    Unavailable,
    /// 500: the node failed to do what was asked; the message says what.
    Internal,
}

impl ErrorCode {
    /// The HTTP status code this error is sent with.
    pub const fn status(self) -> u16 {
        match self {
            ErrorCode::BadRequest => 400,
            ErrorCode::ClientCertificateRequired | ErrorCode::InvalidClientCertificate => 401,
            ErrorCode::RoleTooLow
            | ErrorCode::MaintenanceMode
            | ErrorCode::InvalidSetupToken
            | ErrorCode::InvalidJoinToken => 403,
            ErrorCode::NotFound
            | ErrorCode::KeyNotFound
            | ErrorCode::MemberNotFound
            | ErrorCode::TokenNotFound
            | ErrorCode::ImageNotFound
            | ErrorCode::ContainerNotFound => 404,
            ErrorCode::MethodNotAllowed => 405,
            ErrorCode::Timeout => 408,
            ErrorCode::AlreadyMember
            | ErrorCode::RevisionConflict
            | ErrorCode::MemberExists
            | ErrorCode::ContainerExists
            | ErrorCode::ContainerRunning
            | ErrorCode::ContainerNotRunning => 409,
            ErrorCode::Compacted => 410,
            ErrorCode::PayloadTooLarge => 413,
            ErrorCode::InvalidConfig
            | ErrorCode::InvalidImage
            | ErrorCode::InvalidContainer
            | ErrorCode::ContainerStartFailed => 422,
            ErrorCode::RateLimited => 429,
            ErrorCode::Internal => 500,
            ErrorCode::ClusterUnreachable
            | ErrorCode::CaMismatch
            | ErrorCode::RegistryAuthFailed
            | ErrorCode::RegistryUnreachable => 502,
            ErrorCode::Unavailable | ErrorCode::NoLeader => 503,
            ErrorCode::OutcomeUnknown => 504,
        }
    }

    /// Every code, for documentation and tests.
    pub const ALL: [ErrorCode; 36] = [
        ErrorCode::ClientCertificateRequired,
        ErrorCode::InvalidClientCertificate,
        ErrorCode::RoleTooLow,
        ErrorCode::MaintenanceMode,
        ErrorCode::InvalidSetupToken,
        ErrorCode::RateLimited,
        ErrorCode::AlreadyMember,
        ErrorCode::InvalidJoinToken,
        ErrorCode::KeyNotFound,
        ErrorCode::MemberNotFound,
        ErrorCode::TokenNotFound,
        ErrorCode::ImageNotFound,
        ErrorCode::ContainerNotFound,
        ErrorCode::ContainerExists,
        ErrorCode::ContainerRunning,
        ErrorCode::ContainerNotRunning,
        ErrorCode::InvalidContainer,
        ErrorCode::ContainerStartFailed,
        ErrorCode::RegistryAuthFailed,
        ErrorCode::RegistryUnreachable,
        ErrorCode::RevisionConflict,
        ErrorCode::MemberExists,
        ErrorCode::Compacted,
        ErrorCode::ClusterUnreachable,
        ErrorCode::CaMismatch,
        ErrorCode::NoLeader,
        ErrorCode::OutcomeUnknown,
        ErrorCode::BadRequest,
        ErrorCode::InvalidConfig,
        ErrorCode::InvalidImage,
        ErrorCode::PayloadTooLarge,
        ErrorCode::Timeout,
        ErrorCode::NotFound,
        ErrorCode::MethodNotAllowed,
        ErrorCode::Unavailable,
        ErrorCode::Internal,
    ];
}

/// The body of every error response.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ApiError {
    /// Stable code.
    pub code: ErrorCode,
    /// One sentence for a human, naming the cause.
    pub message: String,
}

impl ApiError {
    /// An error with this code and message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ApiError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_serialize_as_snake_case_and_map_to_their_status() {
        let e = ApiError::new(ErrorCode::RoleTooLow, "needs operator");
        assert_eq!(
            serde_json::to_string(&e).unwrap(),
            r#"{"code":"role_too_low","message":"needs operator"}"#
        );
        assert_eq!(ErrorCode::RoleTooLow.status(), 403);
        assert_eq!(ErrorCode::ClientCertificateRequired.status(), 401);
    }

    #[test]
    fn every_code_is_an_error_status_and_round_trips() {
        for code in ErrorCode::ALL {
            assert!((400..600).contains(&code.status()), "{code:?}");
            let json = serde_json::to_string(&code).unwrap();
            assert_eq!(serde_json::from_str::<ErrorCode>(&json).unwrap(), code);
        }
    }
}
