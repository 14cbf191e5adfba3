//! Who is calling, and whether they may.
//!
//! A member node offers client authentication but does not make the TLS
//! handshake fail on a bad certificate: [`DeferredClientVerifier`] checks
//! the proof of key possession (the TLS 1.3 CertificateVerify signature)
//! during the handshake and leaves the chain check to [`caller_of`], which
//! runs once per connection right after it. The outcome, a [`Caller`],
//! rides along with every request on that connection, and [`authorize`]
//! decides per route. That way a client with no certificate, or with one
//! from another CA or an expired one, gets a JSON 401 that says which,
//! instead of a bare TLS alert; and no route runs without a verified
//! identity, because [`authorize`] admits nothing else on a member node.

use std::sync::Arc;

use api::routes::Access;
use api::{ApiError, ErrorCode, Role, Route};
use rustls::client::danger::HandshakeSignatureValid;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme};
use rustls_pki_types::{CertificateDer, UnixTime};

/// The identity behind a connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Caller {
    /// No client certificate (always so in maintenance mode).
    Anonymous,
    /// A certificate that failed verification against the cluster CA; the
    /// text says why, for the 401.
    Rejected(String),
    /// A certificate issued by the cluster CA to a user.
    User {
        /// Common name.
        name: String,
        /// Role from the organisation.
        role: Role,
    },
    /// A certificate issued by the cluster CA to a node (for the peer
    /// port, not the API).
    Node {
        /// Common name.
        name: String,
    },
}

impl Caller {
    /// The name for logs: the certificate's common name, or `anonymous`.
    pub fn name(&self) -> &str {
        match self {
            Caller::User { name, .. } | Caller::Node { name } => name,
            Caller::Anonymous | Caller::Rejected(_) => "anonymous",
        }
    }
}

/// Whether the node serves as a cluster member or waits in maintenance
/// mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeMode {
    /// No cluster yet: only bootstrap and join, with the setup token.
    Maintenance,
    /// A cluster member: client certificates and roles.
    Member,
}

/// Decides whether `caller` may call `route` on a node in `mode`.
///
/// Setup-token routes are open in maintenance mode (the handler checks the
/// token); on a member they need an admin certificate, and the handler
/// answers that the node is a member already. Join-token routes are open
/// on a member (the handler checks the token: the caller is a node that
/// has no certificate yet) and closed in maintenance mode.
pub fn authorize(route: &Route, mode: NodeMode, caller: &Caller) -> Result<(), ApiError> {
    let role = match (mode, route.access) {
        (NodeMode::Maintenance, Access::SetupToken) | (NodeMode::Member, Access::JoinToken) => {
            return Ok(());
        }
        (NodeMode::Maintenance, Access::Certificate(_) | Access::JoinToken) => {
            return Err(ApiError::new(
                ErrorCode::MaintenanceMode,
                format!(
                    "this node is in maintenance mode and serves only cluster bootstrap and join, \
                     not {}; run `cairn cluster init` against it first",
                    route.operation
                ),
            ));
        }
        (NodeMode::Member, Access::Certificate(role)) => role,
        (NodeMode::Member, Access::SetupToken) => Role::Admin,
    };
    match caller {
        Caller::Anonymous => Err(ApiError::new(
            ErrorCode::ClientCertificateRequired,
            "a client certificate from the cluster CA is required",
        )),
        Caller::Rejected(why) => Err(ApiError::new(
            ErrorCode::InvalidClientCertificate,
            format!("the client certificate was refused: {why}"),
        )),
        Caller::Node { .. } => Err(ApiError::new(
            ErrorCode::RoleTooLow,
            "cairn:node certificates are for the peer port and hold no API role",
        )),
        Caller::User { role: held, .. } if held.allows(role) => Ok(()),
        Caller::User { role: held, .. } => Err(ApiError::new(
            ErrorCode::RoleTooLow,
            format!(
                "role {held} is too low for {} (needs {role})",
                route.operation
            ),
        )),
    }
}

/// Offers client authentication, checks the client's signature over the
/// handshake, and defers the chain check to [`caller_of`].
#[derive(Debug)]
pub struct DeferredClientVerifier {
    inner: Arc<dyn ClientCertVerifier>,
}

impl DeferredClientVerifier {
    /// Wraps the verifier that [`caller_of`] will use for the chain.
    pub fn new(inner: Arc<dyn ClientCertVerifier>) -> Self {
        Self { inner }
    }
}

impl ClientCertVerifier for DeferredClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        // The chain is judged by caller_of once the handshake is done; the
        // signatures below still prove the client holds the key.
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Judges the certificate chain a client presented (if any) against the
/// cluster CA, through `verifier` (a `WebPkiClientVerifier` for the CA).
pub fn caller_of(
    chain: Option<&[CertificateDer<'static>]>,
    verifier: &dyn ClientCertVerifier,
    now: UnixTime,
) -> Caller {
    let Some((end_entity, intermediates)) = chain.and_then(<[_]>::split_first) else {
        return Caller::Anonymous;
    };
    if let Err(e) = verifier.verify_client_cert(end_entity, intermediates, now) {
        return Caller::Rejected(describe_rejection(&e));
    }
    match cluster::pki::peer_identity(end_entity) {
        Ok(identity) => match identity.role {
            cluster::pki::Role::Admin => user(identity.common_name, Role::Admin),
            cluster::pki::Role::Operator => user(identity.common_name, Role::Operator),
            cluster::pki::Role::Reader => user(identity.common_name, Role::Reader),
            cluster::pki::Role::Node => Caller::Node {
                name: identity.common_name,
            },
        },
        Err(e) => Caller::Rejected(format!("it carries no Cairn role ({e})")),
    }
}

fn user(name: String, role: Role) -> Caller {
    Caller::User { name, role }
}

fn describe_rejection(error: &rustls::Error) -> String {
    match error {
        rustls::Error::InvalidCertificate(e) => match e {
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                "it has expired".to_owned()
            }
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                "it is not valid yet (is the client's or the node's clock wrong?)".to_owned()
            }
            CertificateError::UnknownIssuer | CertificateError::BadSignature => {
                "it was not issued by this cluster's CA".to_owned()
            }
            CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. } => {
                "it is not a client certificate".to_owned()
            }
            other => format!("{other:?}"),
        },
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use api::ROUTES;

    fn route(operation: &str) -> &'static Route {
        api::routes::route(operation).unwrap()
    }

    fn reader() -> Caller {
        user("r".into(), Role::Reader)
    }

    /// The least role a member asks of a certificate on `r`.
    fn needed(r: &Route) -> Role {
        r.access.role().unwrap_or(Role::Admin)
    }

    fn certificate_routes() -> impl Iterator<Item = &'static Route> {
        ROUTES.iter().filter(|r| r.access != Access::JoinToken)
    }

    #[test]
    fn maintenance_mode_serves_only_bootstrap_and_join_to_anyone() {
        for r in ROUTES {
            let verdict = authorize(r, NodeMode::Maintenance, &Caller::Anonymous);
            assert_eq!(
                verdict.is_ok(),
                r.access == Access::SetupToken,
                "{}",
                r.operation
            );
            if let Err(e) = verdict {
                assert_eq!(e.code, ErrorCode::MaintenanceMode);
            }
        }
    }

    #[test]
    fn a_member_admits_anyone_to_the_join_token_route_and_checks_the_token_there() {
        let r = route("member_add");
        assert!(authorize(r, NodeMode::Member, &Caller::Anonymous).is_ok());
        assert!(authorize(r, NodeMode::Member, &Caller::Rejected("x".into())).is_ok());
    }

    #[test]
    fn a_member_refuses_every_certificate_route_without_a_valid_certificate() {
        for r in certificate_routes() {
            let e = authorize(r, NodeMode::Member, &Caller::Anonymous).unwrap_err();
            assert_eq!(
                e.code,
                ErrorCode::ClientCertificateRequired,
                "{}",
                r.operation
            );
            let e = authorize(
                r,
                NodeMode::Member,
                &Caller::Rejected("it has expired".into()),
            )
            .unwrap_err();
            assert_eq!(e.code, ErrorCode::InvalidClientCertificate);
            assert!(e.message.ends_with("it has expired"), "{}", e.message);
            let e = authorize(r, NodeMode::Member, &Caller::Node { name: "n".into() }).unwrap_err();
            assert_eq!(e.code, ErrorCode::RoleTooLow);
        }
    }

    #[test]
    fn roles_reach_exactly_the_routes_at_or_below_them() {
        for r in certificate_routes() {
            for role in Role::ALL {
                let verdict = authorize(r, NodeMode::Member, &user("u".into(), role));
                assert_eq!(
                    verdict.is_ok(),
                    role >= needed(r),
                    "{role} on {}",
                    r.operation
                );
            }
        }
        let e = authorize(route("node_reboot"), NodeMode::Member, &reader()).unwrap_err();
        assert_eq!(
            e.message,
            "role reader is too low for node_reboot (needs operator)"
        );
    }

    #[test]
    fn a_reader_is_refused_on_every_mutating_route() {
        for r in certificate_routes().filter(|r| r.method.is_mutating()) {
            let e = authorize(r, NodeMode::Member, &reader()).unwrap_err();
            assert_eq!(e.code, ErrorCode::RoleTooLow, "{}", r.operation);
        }
    }
}
