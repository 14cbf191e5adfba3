//! The cluster PKI: the cluster CA, node and client certificates, roles and
//! fingerprints.
//!
//! Everything here is a pure function over bytes and an explicit `now`; the
//! file layer lives in [`store`] and the rustls glue in [`tls`].
//!
//! Issuance has two paths. The normal one signs a CSR: the node (or the CLI)
//! makes its own key and a CSR with [`node_csr`] or [`client_csr`], and the CA
//! side signs it with [`CertificateAuthority::sign_node_csr`] or
//! [`CertificateAuthority::sign_client_csr`]. Only the CSR's public key and
//! (for nodes) the requested name and addresses are taken from it; every
//! field that grants authority (organisation, key usages, basic constraints,
//! validity) is decided by the CA. The direct path
//! ([`CertificateAuthority::issue_node`], [`CertificateAuthority::issue_client`])
//! makes the key on the CA side; bootstrap uses it for the first node and the
//! first admin credential, because there is nobody else yet to make a key.

pub mod store;
pub mod tls;

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, DnValue, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    PublicKeyData, SanType, SerialNumber,
};
use rustls_pki_types::{CertificateDer, CertificateSigningRequestDer};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

/// How far every certificate's not-before is set into the past.
///
/// A node whose real-time clock runs a little behind (no NTP yet at first
/// boot, a VM restored from a template) must still accept a certificate that
/// was issued a moment ago on a node whose clock is right.
pub const NOT_BEFORE_BACKDATE: Duration = Duration::from_secs(60 * 60);

/// Validity of the cluster CA.
pub const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 60 * 60);

/// Validity of a node certificate; nodes renew well before it runs out.
pub const NODE_CERT_VALIDITY: Duration = Duration::from_secs(365 * 24 * 60 * 60);

/// Longest a name (cluster, node or user) may be.
const MAX_NAME_LEN: usize = 63;

/// Serial numbers are random and this long; RFC 5280 allows at most 20 octets.
const SERIAL_LEN: usize = 16;

/// What a certificate holder may do, carried in the certificate's
/// organisation (O) attribute.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    /// Everything, including issuing credentials.
    Admin,
    /// Day-to-day operations: configs, reboots, services.
    Operator,
    /// Read-only access.
    Reader,
    /// A cluster member talking to its peers.
    Node,
}

impl Role {
    /// Every role, most privileged first.
    pub const ALL: [Role; 4] = [Role::Admin, Role::Operator, Role::Reader, Role::Node];

    /// The organisation string this role is carried as (`cairn:admin`, ...).
    pub const fn organisation(self) -> &'static str {
        match self {
            Role::Admin => "cairn:admin",
            Role::Operator => "cairn:operator",
            Role::Reader => "cairn:reader",
            Role::Node => "cairn:node",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.organisation())
    }
}

/// A string that names no Cairn role.
#[derive(Debug, thiserror::Error)]
#[error(
    "unknown role {0:?}, expected one of cairn:admin, cairn:operator, cairn:reader, cairn:node"
)]
pub struct ParseRoleError(String);

impl TryFrom<&str> for Role {
    type Error = ParseRoleError;

    /// Parses the organisation form exactly; anything else (`cairn:root`,
    /// different case, padding) is refused, because this decides authority.
    fn try_from(value: &str) -> Result<Self, Self::Error> {
        Role::ALL
            .into_iter()
            .find(|role| role.organisation() == value)
            .ok_or_else(|| ParseRoleError(value.to_owned()))
    }
}

impl FromStr for Role {
    type Err = ParseRoleError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::try_from(s)
    }
}

/// A cluster, node or user name as it goes into a certificate's common name.
///
/// Kept to 1..=63 characters of `[A-Za-z0-9._@-]` so that it is also a valid
/// DNS label or e-mail-like user name and can never smuggle separators into
/// logs or subject strings.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SubjectName(String);

/// A name that cannot be a [`SubjectName`].
#[derive(Debug, thiserror::Error)]
#[error("invalid name {name:?}: {reason}")]
pub struct SubjectNameError {
    name: String,
    reason: &'static str,
}

impl TryFrom<&str> for SubjectName {
    type Error = SubjectNameError;

    fn try_from(value: &str) -> Result<Self, Self::Error> {
        let fail = |reason| SubjectNameError {
            name: value.to_owned(),
            reason,
        };
        if value.is_empty() {
            return Err(fail("empty"));
        }
        if value.len() > MAX_NAME_LEN {
            return Err(fail("longer than 63 characters"));
        }
        if !value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'@' | b'-'))
        {
            return Err(fail("only ASCII letters, digits and . _ @ - are allowed"));
        }
        Ok(SubjectName(value.to_owned()))
    }
}

impl SubjectName {
    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SubjectName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// SHA-256 over a certificate's DER, printed as `sha256:<hex>`.
///
/// This is what a joining node pins for the CA and what maintenance mode
/// prints for its self-signed certificate.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint([u8; 32]);

impl Fingerprint {
    /// The fingerprint of a DER-encoded certificate.
    pub fn of_der(der: &[u8]) -> Self {
        Fingerprint(Sha256::digest(der).into())
    }

    /// The raw digest.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", hex::encode(self.0))
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Text that is not `sha256:` followed by 64 hex digits.
#[derive(Debug, thiserror::Error)]
pub enum ParseFingerprintError {
    /// The `sha256:` prefix is missing.
    #[error("fingerprint must start with \"sha256:\"")]
    MissingPrefix,
    /// The digest is not 32 bytes of hex.
    #[error("fingerprint digest is not 64 hex digits")]
    BadDigest(#[source] hex::FromHexError),
}

impl FromStr for Fingerprint {
    type Err = ParseFingerprintError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let digest = s
            .strip_prefix("sha256:")
            .ok_or(ParseFingerprintError::MissingPrefix)?;
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(digest, &mut bytes).map_err(ParseFingerprintError::BadDigest)?;
        Ok(Fingerprint(bytes))
    }
}

/// A certificate and its private key, both PEM.
#[derive(Clone, PartialEq, Eq)]
pub struct IssuedCert {
    /// The certificate, PEM.
    pub cert_pem: String,
    /// The PKCS#8 private key, PEM. Secret.
    pub key_pem: String,
}

impl fmt::Debug for IssuedCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedCert")
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

/// What a node certificate is for: the node's name and the addresses peers
/// and clients reach it by.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeCertRequest {
    /// The node name; becomes the common name.
    pub name: SubjectName,
    /// DNS subject alternative names.
    pub dns_names: Vec<String>,
    /// IP address subject alternative names.
    pub ip_addresses: Vec<IpAddr>,
}

/// A freshly made key and the CSR for it, both PEM. The key stays with the
/// requester; only the CSR travels.
#[derive(Clone, PartialEq, Eq)]
pub struct CsrWithKey {
    /// The PKCS#10 request, PEM.
    pub csr_pem: String,
    /// The DER of the same request, what goes over the wire.
    pub csr_der: Vec<u8>,
    /// The PKCS#8 private key, PEM. Secret.
    pub key_pem: String,
}

impl fmt::Debug for CsrWithKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CsrWithKey")
            .field("csr_pem", &self.csr_pem)
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

/// Making a key and CSR, or reading a CSR, failed.
#[derive(Debug, thiserror::Error)]
pub enum CsrError {
    /// Key generation failed.
    #[error("cannot generate a key pair")]
    GenerateKey(#[source] rcgen::Error),
    /// A DNS name is not an IA5 string.
    #[error("invalid DNS name {0:?}")]
    BadDnsName(String, #[source] rcgen::Error),
    /// Serialising the request failed.
    #[error("cannot serialise the certificate signing request")]
    Serialize(#[source] rcgen::Error),
    /// The request does not parse, or its signature does not verify.
    #[error("invalid certificate signing request")]
    Parse(#[source] rcgen::Error),
    /// The request carries no usable common name.
    #[error("certificate signing request has no common name")]
    MissingCommonName,
    /// The request's common name is not a valid node name.
    #[error("certificate signing request names an invalid node")]
    BadName(#[source] SubjectNameError),
    /// The request asks for a kind of subject alternative name Cairn does
    /// not issue.
    #[error("certificate signing request asks for an unsupported subject alternative name {0}")]
    UnsupportedSan(String),
}

/// A verified node CSR: the signature checked (so the requester holds the
/// key) and the requested name and addresses extracted.
#[derive(Debug)]
pub struct NodeCsr {
    request: NodeCertRequest,
    public_key: rcgen::PublicKey,
}

impl NodeCsr {
    /// Parses and verifies a DER-encoded PKCS#10 request.
    pub fn from_der(der: &[u8]) -> Result<Self, CsrError> {
        let parsed =
            CertificateSigningRequestParams::from_der(&CertificateSigningRequestDer::from(der))
                .map_err(CsrError::Parse)?;
        let common_name = match parsed.params.distinguished_name.get(&DnType::CommonName) {
            Some(DnValue::Utf8String(s)) => s.as_str(),
            Some(DnValue::PrintableString(s)) => s.as_str(),
            Some(DnValue::Ia5String(s)) => s.as_str(),
            Some(_) | None => return Err(CsrError::MissingCommonName),
        };
        let name = SubjectName::try_from(common_name).map_err(CsrError::BadName)?;
        let mut dns_names = Vec::new();
        let mut ip_addresses = Vec::new();
        for san in &parsed.params.subject_alt_names {
            match san {
                SanType::DnsName(dns) => dns_names.push(dns.as_str().to_owned()),
                SanType::IpAddress(ip) => ip_addresses.push(*ip),
                other => return Err(CsrError::UnsupportedSan(format!("{other:?}"))),
            }
        }
        Ok(NodeCsr {
            request: NodeCertRequest {
                name,
                dns_names,
                ip_addresses,
            },
            public_key: parsed.public_key,
        })
    }

    /// What the node asked for; the CA side decides whether to grant it.
    pub fn request(&self) -> &NodeCertRequest {
        &self.request
    }
}

/// Makes a node key and a CSR asking for `request`. Runs on the node.
pub fn node_csr(request: &NodeCertRequest) -> Result<CsrWithKey, CsrError> {
    let mut params = CertificateParams::default();
    params.distinguished_name = subject(&request.name, Role::Node);
    params.subject_alt_names = sans(request).map_err(|(name, e)| CsrError::BadDnsName(name, e))?;
    make_csr(&params)
}

/// Makes a client key and a CSR for `user`. Runs on the operator's machine;
/// the role and lifetime are chosen by the CA side when it signs.
pub fn client_csr(user: &SubjectName) -> Result<CsrWithKey, CsrError> {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, user.as_str());
    params.distinguished_name = dn;
    make_csr(&params)
}

fn make_csr(params: &CertificateParams) -> Result<CsrWithKey, CsrError> {
    let key =
        KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(CsrError::GenerateKey)?;
    let csr = params
        .serialize_request(&key)
        .map_err(CsrError::Serialize)?;
    Ok(CsrWithKey {
        csr_pem: csr.pem().map_err(CsrError::Serialize)?,
        csr_der: csr.der().to_vec(),
        key_pem: key.serialize_pem(),
    })
}

/// Creating the cluster CA failed.
#[derive(Debug, thiserror::Error)]
pub enum CreateCaError {
    /// Key generation failed.
    #[error("cannot generate the CA key")]
    GenerateKey(#[source] rcgen::Error),
    /// `now` plus the validity does not fit a certificate date.
    #[error("CA validity period is out of range")]
    Validity(#[source] ValidityError),
    /// Self-signing failed.
    #[error("cannot self-sign the CA certificate")]
    Sign(#[source] rcgen::Error),
    /// No random serial number could be drawn.
    #[error("cannot draw a random serial number")]
    Serial(#[source] rustls::Error),
}

/// A stored certificate and key pair that does not load.
#[derive(Debug, thiserror::Error)]
pub enum MaterialError {
    /// The certificate PEM does not hold a certificate.
    #[error("certificate is not valid PEM")]
    CertPem(#[source] rustls_pki_types::pem::Error),
    /// The certificate does not parse as X.509.
    #[error("certificate does not parse")]
    Cert(#[source] x509_parser::nom::Err<x509_parser::error::X509Error>),
    /// The certificate parses but rcgen cannot use it as an issuer.
    #[error("certificate cannot be used as an issuer")]
    Issuer(#[source] rcgen::Error),
    /// The key does not parse.
    #[error("private key does not parse")]
    Key(#[source] rcgen::Error),
    /// The key is not the one the certificate was made for.
    #[error("private key does not match the certificate")]
    KeyMismatch,
}

/// Parses a certificate and key (both PEM) and checks that they belong
/// together; returns the certificate DER and the key.
pub fn check_pair(
    cert_pem: &str,
    key_pem: &str,
) -> Result<(CertificateDer<'static>, KeyPair), MaterialError> {
    use rustls_pki_types::pem::PemObject;
    let cert_der =
        CertificateDer::from_pem_slice(cert_pem.as_bytes()).map_err(MaterialError::CertPem)?;
    let key = KeyPair::from_pem(key_pem).map_err(MaterialError::Key)?;
    let (_, parsed) =
        x509_parser::parse_x509_certificate(&cert_der).map_err(MaterialError::Cert)?;
    if parsed.tbs_certificate.subject_pki.raw != key.subject_public_key_info().as_slice() {
        return Err(MaterialError::KeyMismatch);
    }
    Ok((cert_der, key))
}

/// Issuing a certificate failed.
#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    /// Key generation failed.
    #[error("cannot generate a key pair")]
    GenerateKey(#[source] rcgen::Error),
    /// A DNS name is not an IA5 string.
    #[error("invalid DNS name {0:?}")]
    BadDnsName(String, #[source] rcgen::Error),
    /// The validity window does not fit a certificate date.
    #[error("validity period is out of range")]
    Validity(#[source] ValidityError),
    /// The CSR does not parse or its signature does not verify.
    #[error("invalid certificate signing request")]
    Csr(#[source] rcgen::Error),
    /// Signing failed.
    #[error("cannot sign the certificate")]
    Sign(#[source] rcgen::Error),
    /// No random serial number could be drawn.
    #[error("cannot draw a random serial number")]
    Serial(#[source] rustls::Error),
}

/// A point in time that a certificate cannot express.
#[derive(Debug, thiserror::Error)]
#[error("time {offset_s} s from the Unix epoch is outside the certificate date range")]
pub struct ValidityError {
    offset_s: i128,
}

/// The cluster certificate authority: its certificate and signing key.
pub struct CertificateAuthority {
    cert_der: CertificateDer<'static>,
    cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertificateAuthority")
            .field("fingerprint", &self.fingerprint())
            .field("key", &"<redacted>")
            .finish()
    }
}

impl CertificateAuthority {
    /// Creates a new cluster CA for `cluster`, valid from an hour before
    /// `now` for ten years.
    pub fn create(cluster: &SubjectName, now: SystemTime) -> Result<Self, CreateCaError> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .map_err(CreateCaError::GenerateKey)?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, format!("Cairn cluster CA {cluster}"));
        params.distinguished_name = dn;
        // Path length 0: the CA signs leaf certificates only, never another CA.
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let (not_before, not_after) =
            validity_window(now, CA_VALIDITY).map_err(CreateCaError::Validity)?;
        params.not_before = not_before;
        params.not_after = not_after;
        params.serial_number = Some(random_serial().map_err(CreateCaError::Serial)?);
        let cert = params.self_signed(&key).map_err(CreateCaError::Sign)?;
        Ok(CertificateAuthority {
            cert_pem: cert.pem(),
            cert_der: cert.der().clone(),
            issuer: Issuer::new(params, key),
        })
    }

    /// Rebuilds the CA from its stored certificate and key (both PEM),
    /// refusing a key that does not belong to the certificate.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, MaterialError> {
        let (cert_der, key) = check_pair(cert_pem, key_pem)?;
        let issuer = Issuer::from_ca_cert_der(&cert_der, key).map_err(MaterialError::Issuer)?;
        Ok(CertificateAuthority {
            cert_der,
            cert_pem: cert_pem.to_owned(),
            issuer,
        })
    }

    /// The CA certificate, DER.
    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA private key, PEM. Secret: only the store should ask for it.
    pub fn key_pem(&self) -> String {
        self.issuer.key().serialize_pem()
    }

    /// The fingerprint joining nodes pin.
    pub fn fingerprint(&self) -> Fingerprint {
        Fingerprint::of_der(&self.cert_der)
    }

    /// Makes a node key on the CA side and a certificate for it. Bootstrap
    /// uses this for the first node.
    pub fn issue_node(
        &self,
        request: &NodeCertRequest,
        now: SystemTime,
    ) -> Result<IssuedCert, IssueError> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .map_err(IssueError::GenerateKey)?;
        let params = node_params(request, now)?;
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(IssueError::Sign)?;
        Ok(IssuedCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// Signs a verified node CSR; returns the certificate PEM. The caller
    /// (the join handshake) decides beforehand whether `csr.request()` is
    /// acceptable; everything that grants authority comes from here.
    pub fn sign_node_csr(&self, csr: &NodeCsr, now: SystemTime) -> Result<String, IssueError> {
        let params = node_params(&csr.request, now)?;
        let cert = params
            .signed_by(&csr.public_key, &self.issuer)
            .map_err(IssueError::Sign)?;
        Ok(cert.pem())
    }

    /// Makes a client key on the CA side and a certificate for `user` with
    /// `role`, valid for `ttl` from `now`. Bootstrap uses this for the first
    /// admin credential.
    pub fn issue_client(
        &self,
        user: &SubjectName,
        role: Role,
        ttl: Duration,
        now: SystemTime,
    ) -> Result<IssuedCert, IssueError> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .map_err(IssueError::GenerateKey)?;
        let params = client_params(user, role, ttl, now)?;
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(IssueError::Sign)?;
        Ok(IssuedCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// Signs a client CSR (DER) for `user` with `role`; returns the
    /// certificate PEM. Only the CSR's public key is used: the name, role and
    /// lifetime are the CA side's decision, not the requester's.
    pub fn sign_client_csr(
        &self,
        csr_der: &[u8],
        user: &SubjectName,
        role: Role,
        ttl: Duration,
        now: SystemTime,
    ) -> Result<String, IssueError> {
        let parsed =
            CertificateSigningRequestParams::from_der(&CertificateSigningRequestDer::from(csr_der))
                .map_err(IssueError::Csr)?;
        let params = client_params(user, role, ttl, now)?;
        let cert = params
            .signed_by(&parsed.public_key, &self.issuer)
            .map_err(IssueError::Sign)?;
        Ok(cert.pem())
    }
}

fn subject(name: &SubjectName, role: Role) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, role.organisation());
    dn.push(DnType::CommonName, name.as_str());
    dn
}

fn sans(request: &NodeCertRequest) -> Result<Vec<SanType>, (String, rcgen::Error)> {
    let mut out = Vec::with_capacity(request.dns_names.len() + request.ip_addresses.len());
    for dns in &request.dns_names {
        let ia5 = rcgen::string::Ia5String::try_from(dns.as_str()).map_err(|e| (dns.clone(), e))?;
        out.push(SanType::DnsName(ia5));
    }
    out.extend(request.ip_addresses.iter().copied().map(SanType::IpAddress));
    Ok(out)
}

fn node_params(
    request: &NodeCertRequest,
    now: SystemTime,
) -> Result<CertificateParams, IssueError> {
    let mut params = leaf_params(now, NODE_CERT_VALIDITY)?;
    params.distinguished_name = subject(&request.name, Role::Node);
    params.subject_alt_names =
        sans(request).map_err(|(name, e)| IssueError::BadDnsName(name, e))?;
    // Nodes are servers to their peers and clients of them (Raft, images).
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    Ok(params)
}

fn client_params(
    user: &SubjectName,
    role: Role,
    ttl: Duration,
    now: SystemTime,
) -> Result<CertificateParams, IssueError> {
    let mut params = leaf_params(now, ttl)?;
    params.distinguished_name = subject(user, role);
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    Ok(params)
}

fn leaf_params(now: SystemTime, validity: Duration) -> Result<CertificateParams, IssueError> {
    let mut params = CertificateParams::default();
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.use_authority_key_identifier_extension = true;
    let (not_before, not_after) = validity_window(now, validity).map_err(IssueError::Validity)?;
    params.not_before = not_before;
    params.not_after = not_after;
    params.serial_number = Some(random_serial().map_err(IssueError::Serial)?);
    Ok(params)
}

/// Not-before is backdated by [`NOT_BEFORE_BACKDATE`]; not-after is `now +
/// validity`.
fn validity_window(
    now: SystemTime,
    validity: Duration,
) -> Result<(OffsetDateTime, OffsetDateTime), ValidityError> {
    let now = OffsetDateTime::from(now);
    let out_of_range = |base: OffsetDateTime| ValidityError {
        offset_s: i128::from(base.unix_timestamp()),
    };
    let not_before = now
        .checked_sub(time::Duration::try_from(NOT_BEFORE_BACKDATE).map_err(|_| out_of_range(now))?)
        .ok_or_else(|| out_of_range(now))?;
    let not_after = now
        .checked_add(time::Duration::try_from(validity).map_err(|_| out_of_range(now))?)
        .ok_or_else(|| out_of_range(now))?;
    Ok((not_before, not_after))
}

/// Random serials keep two certificates for the same key (a renewal)
/// distinct; rcgen's default derives the serial from the public key.
fn random_serial() -> Result<SerialNumber, rustls::Error> {
    let mut bytes = [0u8; SERIAL_LEN];
    rustls::crypto::ring::default_provider()
        .secure_random
        .fill(&mut bytes)
        .map_err(rustls::Error::from)?;
    // Positive and without a leading zero octet, so it encodes in exactly
    // SERIAL_LEN bytes.
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    Ok(SerialNumber::from_slice(&bytes))
}

/// Who a TLS peer is, read from its certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerIdentity {
    /// The subject common name: a node or user name.
    pub common_name: String,
    /// The role from the subject organisation.
    pub role: Role,
}

/// A peer certificate that does not carry a Cairn identity.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// The bytes are not an X.509 certificate.
    #[error("peer certificate does not parse")]
    Parse(#[source] x509_parser::nom::Err<x509_parser::error::X509Error>),
    /// The subject has no common name, or more than one.
    #[error("peer certificate subject must have exactly one common name, found {0}")]
    CommonNameCount(usize),
    /// The common name is not a string.
    #[error("peer certificate common name is not a string")]
    CommonNameEncoding(#[source] x509_parser::error::X509Error),
    /// The subject has no organisation, or more than one.
    #[error("peer certificate subject must have exactly one organisation, found {0}")]
    OrganisationCount(usize),
    /// The organisation is not a string.
    #[error("peer certificate organisation is not a string")]
    OrganisationEncoding(#[source] x509_parser::error::X509Error),
    /// The organisation names no Cairn role.
    #[error("peer certificate organisation names no role")]
    UnknownRole(#[source] ParseRoleError),
}

/// Reads the common name and role from a peer's DER certificate, as rustls
/// hands it over after the handshake. It does not verify the chain: that is
/// the TLS verifier's job and has already happened by then.
pub fn peer_identity(der: &[u8]) -> Result<PeerIdentity, IdentityError> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(IdentityError::Parse)?;
    let subject = cert.subject();
    let common_names: Vec<_> = subject.iter_common_name().collect();
    let [common_name] = common_names.as_slice() else {
        return Err(IdentityError::CommonNameCount(common_names.len()));
    };
    let organisations: Vec<_> = subject.iter_organization().collect();
    let [organisation] = organisations.as_slice() else {
        return Err(IdentityError::OrganisationCount(organisations.len()));
    };
    let common_name = common_name
        .as_str()
        .map_err(IdentityError::CommonNameEncoding)?
        .to_owned();
    let role = Role::try_from(
        organisation
            .as_str()
            .map_err(IdentityError::OrganisationEncoding)?,
    )
    .map_err(IdentityError::UnknownRole)?;
    Ok(PeerIdentity { common_name, role })
}

/// The parts of a certificate an operator looks at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertSummary {
    /// Subject common name (empty when there is none).
    pub common_name: String,
    /// Start of validity.
    pub not_before: SystemTime,
    /// End of validity.
    pub not_after: SystemTime,
    /// SHA-256 of the DER encoding.
    pub fingerprint: Fingerprint,
    /// DNS subject alternative names.
    pub dns_names: Vec<String>,
    /// IP subject alternative names.
    pub ip_addresses: Vec<IpAddr>,
}

/// A certificate that does not parse.
#[derive(Debug, thiserror::Error)]
#[error("certificate does not parse")]
pub struct DescribeError(#[source] x509_parser::nom::Err<x509_parser::error::X509Error>);

/// Reads subject, validity, fingerprint and SANs out of a DER certificate.
pub fn describe(der: &[u8]) -> Result<CertSummary, DescribeError> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(DescribeError)?;
    let common_name = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .unwrap_or_default()
        .to_owned();
    let at = |t: x509_parser::time::ASN1Time| {
        let seconds = t.timestamp();
        if seconds >= 0 {
            SystemTime::UNIX_EPOCH + Duration::from_secs(seconds.unsigned_abs())
        } else {
            SystemTime::UNIX_EPOCH - Duration::from_secs(seconds.unsigned_abs())
        }
    };
    let mut dns_names = Vec::new();
    let mut ip_addresses = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                x509_parser::extensions::GeneralName::DNSName(dns) => {
                    dns_names.push((*dns).to_owned());
                }
                x509_parser::extensions::GeneralName::IPAddress(bytes) => {
                    if let Ok(v4) = <[u8; 4]>::try_from(*bytes) {
                        ip_addresses.push(IpAddr::from(v4));
                    } else if let Ok(v6) = <[u8; 16]>::try_from(*bytes) {
                        ip_addresses.push(IpAddr::from(v6));
                    }
                }
                _ => {}
            }
        }
    }
    Ok(CertSummary {
        common_name,
        not_before: at(cert.validity().not_before),
        not_after: at(cert.validity().not_after),
        fingerprint: Fingerprint::of_der(der),
        dns_names,
        ip_addresses,
    })
}

/// A self-signed server certificate for a node that belongs to no cluster
/// yet (maintenance mode). Nothing chains to it: clients pin its
/// [`Fingerprint`], which the node prints on its console.
pub fn self_signed_server(
    request: &NodeCertRequest,
    now: SystemTime,
) -> Result<IssuedCert, IssueError> {
    let key =
        KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(IssueError::GenerateKey)?;
    let mut params = leaf_params(now, NODE_CERT_VALIDITY)?;
    params.distinguished_name = subject(&request.name, Role::Node);
    params.subject_alt_names =
        sans(request).map_err(|(name, e)| IssueError::BadDnsName(name, e))?;
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let cert = params.self_signed(&key).map_err(IssueError::Sign)?;
    Ok(IssuedCert {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::net::Ipv4Addr;
    use x509_parser::extensions::GeneralName;

    fn name(s: &str) -> SubjectName {
        SubjectName::try_from(s).expect("valid test name")
    }

    fn der_of(pem: &str) -> CertificateDer<'static> {
        use rustls_pki_types::pem::PemObject;
        CertificateDer::from_pem_slice(pem.as_bytes()).expect("certificate pem")
    }

    #[test]
    fn describe_reads_names_validity_and_fingerprint() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let request = NodeCertRequest {
            name: name("node-a"),
            dns_names: vec!["node-a".into(), "localhost".into()],
            ip_addresses: vec![IpAddr::from(Ipv4Addr::new(10, 0, 0, 5))],
        };
        let cert = self_signed_server(&request, now).unwrap();
        let der = der_of(&cert.cert_pem);
        let summary = describe(&der).unwrap();
        assert_eq!(summary.common_name, "node-a");
        assert_eq!(summary.not_before, now - NOT_BEFORE_BACKDATE);
        assert_eq!(summary.not_after, now + NODE_CERT_VALIDITY);
        assert_eq!(summary.fingerprint, Fingerprint::of_der(&der));
        assert_eq!(summary.dns_names, ["node-a", "localhost"]);
        assert_eq!(summary.ip_addresses, request.ip_addresses);
        assert!(describe(b"not a certificate").is_err());
    }

    #[test]
    fn role_parsing_round_trips_through_display() {
        for role in Role::ALL {
            assert_eq!(Role::try_from(role.to_string().as_str()).ok(), Some(role));
        }
    }

    #[test]
    fn role_parsing_rejects_names_that_are_not_cairn_roles() {
        for bad in [
            "cairn:root",
            "admin",
            "CAIRN:ADMIN",
            " cairn:admin",
            "cairn:admin ",
            "",
        ] {
            assert!(Role::try_from(bad).is_err(), "{bad:?} must not parse");
        }
    }

    #[test]
    fn subject_names_refuse_empty_long_and_separator_characters() {
        assert!(SubjectName::try_from("node-1.example_a@b").is_ok());
        for bad in ["", "a b", "a,b", "a/b", "é", &"x".repeat(64)] {
            assert!(
                SubjectName::try_from(bad).is_err(),
                "{bad:?} must not parse"
            );
        }
    }

    #[test]
    fn fingerprint_is_stable_for_the_same_certificate_and_round_trips() {
        let ca = CertificateAuthority::create(&name("fp"), SystemTime::now()).expect("ca");
        let first = ca.fingerprint();
        let reloaded = CertificateAuthority::from_pem(ca.cert_pem(), &ca.key_pem()).expect("load");
        assert_eq!(reloaded.fingerprint(), first);
        assert_eq!(Fingerprint::of_der(ca.cert_der()), first);
        let text = first.to_string();
        assert!(
            text.starts_with("sha256:") && text.len() == 7 + 64,
            "{text}"
        );
        assert_eq!(text.parse::<Fingerprint>().expect("parses"), first);

        let other = CertificateAuthority::create(&name("fp"), SystemTime::now()).expect("ca");
        assert_ne!(other.fingerprint(), first);
    }

    #[test]
    fn fingerprint_parsing_rejects_missing_prefix_and_short_digests() {
        assert!("abcd".parse::<Fingerprint>().is_err());
        assert!("sha256:abcd".parse::<Fingerprint>().is_err());
        assert!(
            format!("sha1:{}", "0".repeat(64))
                .parse::<Fingerprint>()
                .is_err()
        );
    }

    #[test]
    fn ca_certificate_is_a_path_length_zero_ca_backdated_one_hour_valid_ten_years() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let ca = CertificateAuthority::create(&name("prod"), now).expect("ca");
        let (_, cert) = x509_parser::parse_x509_certificate(ca.cert_der()).expect("parses");
        let cn: Vec<_> = cert
            .subject()
            .iter_common_name()
            .map(|a| a.as_str().expect("utf8"))
            .collect();
        assert_eq!(cn, ["Cairn cluster CA prod"]);
        let bc = cert
            .basic_constraints()
            .expect("ext")
            .expect("present")
            .value;
        assert!(bc.ca);
        assert_eq!(bc.path_len_constraint, Some(0));
        let ku = cert.key_usage().expect("ext").expect("present").value;
        assert!(ku.key_cert_sign() && ku.crl_sign());
        assert_eq!(cert.validity().not_before.timestamp(), 1_800_000_000 - 3600);
        assert_eq!(
            cert.validity().not_after.timestamp(),
            1_800_000_000 + 10 * 365 * 24 * 3600
        );
        assert!(cert.verify_signature(None).is_ok(), "self-signed");
    }

    #[test]
    fn csr_signed_node_certificate_carries_the_requested_sans_and_node_role() {
        let ca = CertificateAuthority::create(&name("test"), SystemTime::now()).expect("ca");
        let request = NodeCertRequest {
            name: name("node-7"),
            dns_names: vec!["node-7.cairn.internal".to_owned(), "node-7".to_owned()],
            ip_addresses: vec![
                IpAddr::V4(Ipv4Addr::new(10, 0, 0, 7)),
                "fd00::7".parse().expect("ipv6"),
            ],
        };
        let csr = node_csr(&request).expect("csr");
        let parsed = NodeCsr::from_der(&csr.csr_der).expect("csr verifies");
        assert_eq!(parsed.request(), &request);
        let cert_pem = ca.sign_node_csr(&parsed, SystemTime::now()).expect("sign");
        let der = der_of(&cert_pem);

        assert_eq!(
            peer_identity(&der).expect("identity"),
            PeerIdentity {
                common_name: "node-7".to_owned(),
                role: Role::Node,
            }
        );
        let (_, cert) = x509_parser::parse_x509_certificate(&der).expect("parses");
        let san = cert
            .subject_alternative_name()
            .expect("ext")
            .expect("present")
            .value;
        let mut dns = Vec::new();
        let mut ips = Vec::new();
        for general in &san.general_names {
            match general {
                GeneralName::DNSName(d) => dns.push((*d).to_owned()),
                GeneralName::IPAddress(bytes) => ips.push(bytes.to_vec()),
                other => panic!("unexpected SAN {other:?}"),
            }
        }
        assert_eq!(dns, request.dns_names);
        assert_eq!(
            ips,
            [
                vec![10, 0, 0, 7],
                "fd00::7"
                    .parse::<std::net::Ipv6Addr>()
                    .expect("v6")
                    .octets()
                    .to_vec()
            ]
        );
        let eku = cert
            .extended_key_usage()
            .expect("ext")
            .expect("present")
            .value;
        assert!(eku.server_auth && eku.client_auth);
        let bc = cert
            .basic_constraints()
            .expect("ext")
            .expect("present")
            .value;
        assert!(!bc.ca, "a node certificate must not be a CA");
        // The key the node kept is the one certified.
        assert!(check_pair(&cert_pem, &csr.key_pem).is_ok());
        // And the CA really signed it.
        let (_, ca_cert) = x509_parser::parse_x509_certificate(ca.cert_der()).expect("ca parses");
        assert!(cert.verify_signature(Some(ca_cert.public_key())).is_ok());
    }

    #[test]
    fn node_csr_cannot_ask_for_another_role_or_ca_powers() {
        let ca = CertificateAuthority::create(&name("test"), SystemTime::now()).expect("ca");
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "cairn:admin");
        dn.push(DnType::CommonName, "node-9");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
        let csr = params.serialize_request(&key).expect("csr");

        let parsed = NodeCsr::from_der(csr.der()).expect("csr verifies");
        let der = der_of(&ca.sign_node_csr(&parsed, SystemTime::now()).expect("sign"));

        assert_eq!(peer_identity(&der).expect("identity").role, Role::Node);
        let (_, cert) = x509_parser::parse_x509_certificate(&der).expect("parses");
        let bc = cert
            .basic_constraints()
            .expect("ext")
            .expect("present")
            .value;
        assert!(!bc.ca);
        let ku = cert.key_usage().expect("ext").expect("present").value;
        assert!(!ku.key_cert_sign());
    }

    #[test]
    fn tampered_csr_is_refused() {
        let csr = node_csr(&NodeCertRequest {
            name: name("node-1"),
            dns_names: vec![],
            ip_addresses: vec![],
        })
        .expect("csr");
        let mut der = csr.csr_der.clone();
        // Flip a bit inside the subject so the signature no longer matches.
        let at = der
            .windows(6)
            .position(|w| w == b"node-1")
            .expect("cn in csr");
        der[at] ^= 0x01;
        assert!(NodeCsr::from_der(&der).is_err());
    }

    #[test]
    fn client_csr_is_signed_with_the_role_and_name_the_ca_chooses() {
        let ca = CertificateAuthority::create(&name("test"), SystemTime::now()).expect("ca");
        let csr = client_csr(&name("root")).expect("csr");
        let cert_pem = ca
            .sign_client_csr(
                &csr.csr_der,
                &name("carol"),
                Role::Reader,
                Duration::from_secs(24 * 3600),
                SystemTime::now(),
            )
            .expect("sign");
        let der = der_of(&cert_pem);
        assert_eq!(
            peer_identity(&der).expect("identity"),
            PeerIdentity {
                common_name: "carol".to_owned(),
                role: Role::Reader,
            }
        );
        let (_, cert) = x509_parser::parse_x509_certificate(&der).expect("parses");
        let eku = cert
            .extended_key_usage()
            .expect("ext")
            .expect("present")
            .value;
        assert!(eku.client_auth && !eku.server_auth);
        let validity = cert.validity();
        assert_eq!(
            validity.not_after.timestamp() - validity.not_before.timestamp(),
            24 * 3600 + 3600
        );
        assert!(check_pair(&cert_pem, &csr.key_pem).is_ok());
    }

    #[test]
    fn every_role_is_issued_and_read_back() {
        let ca = CertificateAuthority::create(&name("test"), SystemTime::now()).expect("ca");
        for role in Role::ALL {
            let issued = ca
                .issue_client(&name("u"), role, Duration::from_secs(60), SystemTime::now())
                .expect("issue");
            let identity = peer_identity(&der_of(&issued.cert_pem)).expect("identity");
            assert_eq!(identity.role, role);
        }
    }

    #[test]
    fn certificate_without_a_cairn_organisation_has_no_identity() {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "x");
        params.distinguished_name = dn.clone();
        let no_org = params.self_signed(&key).expect("cert");
        assert!(matches!(
            peer_identity(no_org.der()),
            Err(IdentityError::OrganisationCount(0))
        ));

        dn.push(DnType::OrganizationName, "cairn:root");
        params.distinguished_name = dn;
        let root_org = params.self_signed(&key).expect("cert");
        assert!(matches!(
            peer_identity(root_org.der()),
            Err(IdentityError::UnknownRole(_))
        ));
    }

    #[test]
    fn ca_refuses_a_key_that_is_not_its_own() {
        let ca = CertificateAuthority::create(&name("a"), SystemTime::now()).expect("ca");
        let other = CertificateAuthority::create(&name("a"), SystemTime::now()).expect("ca");
        assert!(matches!(
            CertificateAuthority::from_pem(ca.cert_pem(), &other.key_pem()),
            Err(MaterialError::KeyMismatch)
        ));
    }

    #[test]
    fn reloaded_ca_issues_certificates_that_chain_to_the_original() {
        let ca = CertificateAuthority::create(&name("a"), SystemTime::now()).expect("ca");
        let reloaded = CertificateAuthority::from_pem(ca.cert_pem(), &ca.key_pem()).expect("load");
        let issued = reloaded
            .issue_client(
                &name("u"),
                Role::Operator,
                Duration::from_secs(60),
                SystemTime::now(),
            )
            .expect("issue");
        let der = der_of(&issued.cert_pem);
        let (_, cert) = x509_parser::parse_x509_certificate(&der).expect("parses");
        let (_, ca_cert) = x509_parser::parse_x509_certificate(ca.cert_der()).expect("ca parses");
        assert_eq!(cert.issuer(), ca_cert.subject());
        assert!(cert.verify_signature(Some(ca_cert.public_key())).is_ok());
    }

    #[test]
    fn debug_output_never_shows_private_keys() {
        let ca = CertificateAuthority::create(&name("a"), SystemTime::now()).expect("ca");
        let issued = ca
            .issue_client(
                &name("u"),
                Role::Admin,
                Duration::from_secs(60),
                SystemTime::now(),
            )
            .expect("issue");
        for debug in [format!("{ca:?}"), format!("{issued:?}")] {
            assert!(!debug.contains("PRIVATE KEY"), "{debug}");
        }
    }

    proptest! {
        #[test]
        fn peer_identity_never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let _ = peer_identity(&bytes);
        }

        #[test]
        fn peer_identity_never_panics_on_mutated_certificates(flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8)) {
            let ca = CertificateAuthority::create(&name("p"), SystemTime::now()).expect("ca");
            let mut der = ca.cert_der().to_vec();
            let len = der.len();
            for (at, xor) in flips {
                der[at % len] ^= xor;
            }
            let _ = peer_identity(&der);
        }

        #[test]
        fn role_parsing_never_panics_and_accepts_only_the_four_roles(text in ".*") {
            match Role::try_from(text.as_str()) {
                Ok(role) => prop_assert_eq!(role.organisation(), text.as_str()),
                Err(_) => prop_assert!(Role::ALL.iter().all(|r| r.organisation() != text)),
            }
        }

        #[test]
        fn node_csr_parsing_never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..1024)) {
            let _ = NodeCsr::from_der(&bytes);
        }
    }
}
