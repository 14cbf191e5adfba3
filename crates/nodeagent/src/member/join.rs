//! The joining node's side of a join: one call to a member's
//! `POST /v1/cluster/members`, trusting the member only if its chain holds
//! the CA the operator pinned (`--ca-hash`).
//!
//! The pinned CA is all the joining node knows about the cluster, so it is
//! checked during the TLS handshake ([`cluster::pki::tls::ca_pinned_config`]),
//! before the join token leaves the node. What comes back is checked again
//! before anything is saved: the CA in the grant must be the pinned one,
//! and the node certificate must match the key this node made.

use std::error::Error as StdError;
use std::fmt;
use std::time::Duration;

use api::ApiError;
use api::types::{MemberGrant, MemberJoinRequest};
use cluster::pki::Fingerprint;
use cluster::pki::tls::CaMismatch;

/// How long the member may take to admit the node (it waits for a Raft
/// configuration change to commit).
const JOIN_TIMEOUT: Duration = Duration::from_secs(30);

/// A member's API endpoint, `host:port`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberEndpoint(reqwest::Url);

/// An endpoint that is not `host:port`.
#[derive(Debug, thiserror::Error)]
#[error("invalid cluster endpoint {0:?}: want host:port, for example 10.0.0.5:7443")]
pub struct EndpointError(String);

impl std::str::FromStr for MemberEndpoint {
    type Err = EndpointError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || EndpointError(text.to_owned());
        if text.is_empty() || text.contains(['/', '?', '#', '@']) {
            return Err(bad());
        }
        let url = reqwest::Url::parse(&format!("https://{text}/")).map_err(|_| bad())?;
        if url.host().is_none() || url.port().is_none() {
            return Err(bad());
        }
        Ok(Self(url))
    }
}

impl fmt::Display for MemberEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.0.host_str(), self.0.port()) {
            (Some(host), Some(port)) => write!(f, "{host}:{port}"),
            _ => f.write_str(self.0.as_str()),
        }
    }
}

/// The join call failed.
#[derive(Debug, thiserror::Error)]
pub enum JoinCallError {
    /// The member's CA is not the pinned one.
    #[error(transparent)]
    CaMismatch(CaMismatch),
    /// The member could not be reached or the connection failed.
    #[error("cannot reach the cluster member at {endpoint}")]
    Unreachable {
        /// The member.
        endpoint: MemberEndpoint,
        /// The failure.
        #[source]
        source: reqwest::Error,
    },
    /// The member refused.
    #[error("the cluster member at {endpoint} refused the join: {error}")]
    Refused {
        /// The member.
        endpoint: MemberEndpoint,
        /// Its answer.
        error: ApiError,
    },
    /// The member answered something that is not a grant.
    #[error("the cluster member at {endpoint} answered the join with something unusable: {detail}")]
    BadAnswer {
        /// The member.
        endpoint: MemberEndpoint,
        /// What was wrong.
        detail: String,
    },
    /// The TLS configuration could not be built.
    #[error("cannot set up TLS for the join")]
    Tls(#[source] rustls::Error),
}

/// The pinned-CA mismatch somewhere in `error`'s chain, if that is what
/// failed the handshake.
fn ca_mismatch(error: &(dyn StdError + 'static)) -> Option<CaMismatch> {
    let mut next = Some(error);
    while let Some(current) = next {
        if let Some(rustls::Error::InvalidCertificate(rustls::CertificateError::Other(other))) =
            current.downcast_ref::<rustls::Error>()
            && let Some(mismatch) = other.0.downcast_ref::<CaMismatch>()
        {
            return Some(mismatch.clone());
        }
        if let Some(io) = current.downcast_ref::<std::io::Error>()
            && let Some(inner) = io.get_ref()
            && let Some(found) = ca_mismatch(inner)
        {
            return Some(found);
        }
        next = current.source();
    }
    None
}

/// Asks the member at `endpoint` to admit this node.
pub async fn request_membership(
    endpoint: &MemberEndpoint,
    ca: Fingerprint,
    request: &MemberJoinRequest,
) -> Result<MemberGrant, JoinCallError> {
    let tls = cluster::pki::tls::ca_pinned_config(ca).map_err(JoinCallError::Tls)?;
    let unreachable = |source: reqwest::Error| match ca_mismatch(&source) {
        Some(mismatch) => JoinCallError::CaMismatch(mismatch),
        None => JoinCallError::Unreachable {
            endpoint: endpoint.clone(),
            source,
        },
    };
    let client = reqwest::Client::builder()
        .timeout(JOIN_TIMEOUT)
        .tls_backend_preconfigured(tls)
        .build()
        .map_err(unreachable)?;
    let url = endpoint
        .0
        .join("v1/cluster/members")
        .map_err(|e| JoinCallError::BadAnswer {
            endpoint: endpoint.clone(),
            detail: e.to_string(),
        })?;
    let response = client
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(serde_json::to_vec(request).unwrap_or_default())
        .send()
        .await
        .map_err(unreachable)?;
    let status = response.status();
    let body = response.bytes().await.map_err(unreachable)?;
    if !status.is_success() {
        let error =
            serde_json::from_slice::<ApiError>(&body).map_err(|_| JoinCallError::BadAnswer {
                endpoint: endpoint.clone(),
                detail: format!("HTTP {status} without an API error body"),
            })?;
        return Err(JoinCallError::Refused {
            endpoint: endpoint.clone(),
            error,
        });
    }
    serde_json::from_slice(&body).map_err(|e| JoinCallError::BadAnswer {
        endpoint: endpoint.clone(),
        detail: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_host_and_port_only() {
        let e: MemberEndpoint = "10.0.0.5:7443".parse().unwrap();
        assert_eq!(e.to_string(), "10.0.0.5:7443");
        assert_eq!(
            "node-1.lab:7443"
                .parse::<MemberEndpoint>()
                .unwrap()
                .to_string(),
            "node-1.lab:7443"
        );
        for bad in [
            "",
            "10.0.0.5",
            "https://10.0.0.5:7443",
            "10.0.0.5:7443/x",
            "a@b:1",
            ":7443",
        ] {
            let err = bad.parse::<MemberEndpoint>().unwrap_err().to_string();
            assert!(err.contains("want host:port"), "{bad:?}: {err}");
        }
    }
}
