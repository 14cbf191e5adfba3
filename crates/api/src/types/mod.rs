//! Request and response bodies.
//!
//! Requests deny unknown fields, so a typo in a script is an error rather
//! than a silently ignored option. Responses are open for additions.

use std::net::IpAddr;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::Timestamp;
use crate::routes::Role;

mod cluster;
mod containers;
mod images;
mod kv;

pub use cluster::{
    ClusterBackup, ClusterStatus, CreatedToken, JoinResponse, MemberGrant, MemberJoinRequest,
    MemberRecord, MemberRemoved, MemberRole, MemberState, MemberStatus, RestoreRequest,
    RestoreResponse, TokenCreateRequest, TokenInfo, TokenList, TokenState,
};
pub use containers::{
    ContainerCreateRequest, ContainerInfo, ContainerList, ContainerLogLine, ContainerLogQuery,
    ContainerRemoveQuery, ContainerRemoved, ContainerState, ContainerStopRequest, ContainerSummary,
    ExecFrame, ExecRequest, ExitStatus, HealthCheck, HealthProbe, HealthReport, HealthStatus,
    Limits, LogStream, NetworkMode, ProbeResult, RestartMode, RestartPolicy, VolumeMount,
};
pub use images::{
    ImageList, ImageRefQuery, ImageRemoved, ImageSummary, ImportResponse, ImportedImage,
    OCI_ARCHIVE, PruneResponse, PullBlob, PullEvent, PullRequest, PullSource, PullSourceRole,
};
pub use kv::{
    KvEvent, KvEventKind, KvKeyQuery, KvList, KvListQuery, KvPutRequest, KvRecord, KvWatchQuery,
    KvWritten,
};

/// `GET /v1/version`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct VersionInfo {
    /// Cairn version of the node (`0.1.0`).
    pub version: String,
    /// API version (`v1`).
    pub api: String,
}

/// `GET /v1/node`: who the node is and how it booted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct NodeInfo {
    /// Host name.
    pub name: String,
    /// Cairn version.
    pub version: String,
    /// Addresses in CIDR form (`10.0.0.5/24`), every managed link.
    pub addresses: Vec<String>,
    /// Seconds since the kernel started.
    pub uptime_s: u64,
    /// Kernel release (`uname -r`).
    pub kernel: String,
    /// This boot's identity (`/proc/sys/kernel/random/boot_id`); changes
    /// on every boot.
    pub boot_id: String,
    /// How the node booted.
    pub boot: BootInfo,
    /// Cluster membership; absent in maintenance mode.
    pub cluster: Option<ClusterInfo>,
    /// Certificates the node holds, with their expiry.
    pub certificates: Vec<CertificateInfo>,
}

/// What the boot loader reported (through init's `BootStatus`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct BootInfo {
    /// `uefi` or `bios`.
    pub firmware: String,
    /// The boot loader entry booted (`cairn-0.1.0.conf`), empty when the
    /// loader did not say (PXE, direct kernel boot).
    pub entry: String,
    /// The boot counter of that entry: `good` (blessed or never counted),
    /// `indeterminate` (on probation), `bad`, or `unknown`.
    pub counter: String,
    /// Tries left on the entry while it is on probation.
    pub tries_left: Option<u32>,
    /// The boot loader's name and version.
    pub loader: String,
}

/// The cluster the node belongs to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ClusterInfo {
    /// Cluster name (the CA's common name).
    pub name: String,
    /// SHA-256 fingerprint of the cluster CA certificate (`sha256:<hex>`),
    /// what joining nodes and new clients pin.
    pub ca_fingerprint: String,
}

/// One certificate the node holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct CertificateInfo {
    /// What it is for: `cluster-ca`, `node` or `maintenance`.
    pub purpose: String,
    /// Subject common name.
    pub subject: String,
    /// SHA-256 fingerprint (`sha256:<hex>`).
    pub fingerprint: String,
    /// Start of validity.
    pub not_before: Timestamp,
    /// End of validity.
    pub not_after: Timestamp,
}

/// Query of `GET /v1/node/logs`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LogQuery {
    /// Which boot: `0` this one (the default), `-1` the one before, and so
    /// on.
    #[serde(default)]
    pub boot: i32,
    /// Keep the response open and stream new entries as they are written
    /// (only for the current boot).
    #[serde(default)]
    pub follow: bool,
    /// Only the last this many entries (before following).
    pub tail: Option<u32>,
}

/// Where a log entry came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum LogSource {
    /// cairn-init, PID 1.
    Init,
    /// cairnd, the node agent.
    Cairnd,
}

/// Severity of a log entry.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum LogLevel {
    /// Something failed.
    Error,
    /// Something is off but handled.
    Warn,
    /// Normal operation.
    Info,
    /// Detail for debugging.
    Debug,
}

/// One line of the system log. `GET /v1/node/logs` answers with these as
/// NDJSON (one object per line), oldest first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct LogEntry {
    /// When it was written (wall clock of the node).
    pub ts: Timestamp,
    /// The boot it belongs to (a boot id).
    pub boot_id: String,
    /// Who wrote it.
    pub source: LogSource,
    /// Severity.
    pub level: LogLevel,
    /// The text.
    pub message: String,
}

/// `GET /v1/node/dmesg`: the kernel ring buffer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct KernelLog {
    /// Records, oldest first.
    pub entries: Vec<KernelLogEntry>,
}

/// One record of the kernel log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct KernelLogEntry {
    /// Sequence number in the ring buffer.
    pub seq: u64,
    /// Microseconds since boot (CLOCK_MONOTONIC).
    pub monotonic_us: u64,
    /// Syslog priority, 0 (emergency) to 7 (debug).
    pub priority: u8,
    /// The text.
    pub message: String,
}

/// `GET /v1/node/network`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct NetworkState {
    /// Host name and where it came from (`config`, `dhcp`, `generated`).
    pub hostname: Option<HostnameState>,
    /// Links the agent manages.
    pub links: Vec<LinkState>,
    /// IPv4 routes in the main table.
    pub routes: Vec<RouteState>,
    /// Name servers in force.
    pub dns: Vec<IpAddr>,
    /// Search domains in force.
    pub search: Vec<String>,
    /// NTP servers learned from DHCP.
    pub ntp: Vec<IpAddr>,
}

/// The host name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct HostnameState {
    /// The name.
    pub name: String,
    /// `config`, `dhcp` or `generated`.
    pub source: String,
}

/// One link.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct LinkState {
    /// Kernel name (`eth0`).
    pub name: String,
    /// Hardware address.
    pub mac: Option<String>,
    /// How it is addressed: `loopback`, `up_only`, `dhcp`, `static`,
    /// `dhcp_and_static`.
    pub addressing: String,
    /// Addresses in CIDR form.
    pub addresses: Vec<String>,
    /// The DHCP lease, when there is one.
    pub dhcp: Option<DhcpState>,
    /// The last error on this link, until the next success.
    pub error: Option<String>,
}

/// A DHCP lease.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct DhcpState {
    /// The server that granted it.
    pub server: IpAddr,
    /// Lease time in seconds.
    pub lease_time_s: u64,
}

/// One route.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RouteState {
    /// Destination in CIDR form (`0.0.0.0/0` for the default route).
    pub destination: String,
    /// Next hop; absent for on-link routes.
    pub gateway: Option<IpAddr>,
    /// Outgoing link.
    pub link: Option<String>,
}

/// `GET /v1/node/config`: the machine config in force.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct MachineConfigDocument {
    /// Where it came from (`api`, `esp`, `fw_cfg`, `cmdline`, `default`),
    /// with the path or URL.
    pub source: String,
    /// The TOML text, with secrets replaced by `"<redacted>"`.
    pub toml: String,
    /// Key paths that were redacted (`cluster.setup-token`).
    pub redacted: Vec<String>,
}

/// `PUT /v1/node/config`: replace the machine config.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ApplyConfigRequest {
    /// The new machine config, as TOML.
    pub toml: String,
    /// Validate and report, change nothing.
    #[serde(default)]
    pub dry_run: bool,
}

/// The answer to [`ApplyConfigRequest`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ApplyConfigResponse {
    /// Whether the node now runs the new config (false for a dry run).
    pub applied: bool,
    /// Echo of the request's `dry_run`.
    pub dry_run: bool,
    /// Top-level sections that differ from the config in force
    /// (`node`, `network`, `cluster`).
    pub changed: Vec<String>,
}

/// `POST /v1/node/reboot` and `POST /v1/node/shutdown`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PowerResponse {
    /// `reboot` or `poweroff`.
    pub action: String,
    /// The boot that is ending; after a reboot [`NodeInfo::boot_id`]
    /// differs.
    pub boot_id: String,
}

/// `POST /v1/node/agent/restart`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct AgentRestartResponse {
    /// The agent process that is exiting; cairn-init starts a new one.
    pub pid: u32,
}

/// `POST /v1/certs`: issue a client certificate for a role.
///
/// The client keeps its private key: it sends a PKCS#10 request and gets
/// back the certificate.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IssueCertificateRequest {
    /// The holder's name (certificate common name).
    pub name: String,
    /// The role to grant.
    pub role: Role,
    /// Validity in seconds.
    pub ttl_s: u64,
    /// PEM-encoded PKCS#10 certificate signing request.
    pub csr_pem: String,
}

/// A client certificate issued by the cluster CA.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct IssuedCertificate {
    /// The holder's name.
    pub name: String,
    /// The role granted.
    pub role: Role,
    /// PEM certificate.
    pub cert_pem: String,
    /// PEM of the cluster CA, to verify the nodes with.
    pub ca_pem: String,
    /// SHA-256 fingerprint of the cluster CA.
    pub ca_fingerprint: String,
    /// End of validity.
    pub not_after: Timestamp,
}

/// `POST /v1/cluster/bootstrap`: make this node the first member of a new
/// cluster (maintenance mode only).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BootstrapRequest {
    /// The node's setup token (from its machine config or its console).
    pub setup_token: String,
    /// Name of the new cluster (the CA's common name); defaults to `cairn`.
    pub cluster_name: Option<String>,
    /// Common name of the first admin credential.
    pub admin_name: String,
    /// PEM PKCS#10 request for the admin certificate; the admin keeps the
    /// private key.
    pub admin_csr_pem: String,
}

/// The answer to [`BootstrapRequest`]: the admin credential and what to
/// trust from now on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct BootstrapResponse {
    /// The node's name.
    pub node_name: String,
    /// The cluster's name.
    pub cluster_name: String,
    /// The admin certificate.
    pub admin: IssuedCertificate,
}

/// `POST /v1/cluster/join`: join an existing cluster (maintenance mode
/// only).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JoinRequest {
    /// The node's setup token.
    pub setup_token: String,
    /// API endpoint of a cluster member (`host:7443`).
    pub cluster: String,
    /// Join token (`<id>.<secret>`).
    pub token: String,
    /// SHA-256 fingerprint of the cluster CA to pin.
    pub ca_hash: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_refuse_unknown_fields() {
        let err =
            serde_json::from_str::<ApplyConfigRequest>(r#"{"toml":"","dryrun":true}"#).unwrap_err();
        assert!(err.to_string().contains("unknown field `dryrun`"), "{err}");
    }

    #[test]
    fn log_query_defaults_to_this_boot_without_follow() {
        let q: LogQuery = serde_json::from_str("{}").unwrap();
        assert_eq!(q, LogQuery::default());
    }

    #[test]
    fn roles_cross_the_wire_as_plain_names() {
        let req: IssueCertificateRequest =
            serde_json::from_str(r#"{"name":"bob","role":"reader","ttl_s":3600,"csr_pem":"x"}"#)
                .unwrap();
        assert_eq!(req.role, Role::Reader);
        assert!(
            serde_json::from_str::<IssueCertificateRequest>(
                r#"{"name":"bob","role":"root","ttl_s":3600,"csr_pem":"x"}"#
            )
            .is_err()
        );
    }
}
