//! The route table: every path the node serves, the least role it needs,
//! and its body types.
//!
//! `cairnd` builds its router from [`ROUTES`] and checks each request's
//! role against [`Route::role`]; the OpenAPI document is generated from
//! the same table. A route added here without a handler fails the server's
//! tests, and a handler without a row here is unreachable.

use std::fmt;

use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Serialize};

use crate::ApiError;
use crate::types::{
    AgentRestartResponse, ApplyConfigRequest, ApplyConfigResponse, BootstrapRequest,
    BootstrapResponse, ClusterBackup, ClusterStatus, ContainerCreateRequest, ContainerInfo,
    ContainerList, ContainerLogLine, ContainerLogQuery, ContainerRemoveQuery, ContainerRemoved,
    ContainerStopRequest, CreatedToken, ExecFrame, ExecRequest, ImageList, ImageRefQuery,
    ImageRemoved, ImportResponse, IssueCertificateRequest, IssuedCertificate, JoinRequest,
    JoinResponse, KernelLog, KvEvent, KvKeyQuery, KvList, KvListQuery, KvPutRequest, KvRecord,
    KvWatchQuery, KvWritten, LogEntry, LogQuery, MachineConfigDocument, MemberGrant,
    MemberJoinRequest, MemberRemoved, NetworkState, NodeInfo, PowerResponse, PruneResponse,
    RestoreRequest, RestoreResponse, TokenCreateRequest, TokenInfo, TokenList, VersionInfo,
};

/// What a client certificate allows, least to most. `cairn:node`
/// certificates are for the peer port and hold no role here.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Read-only: node info, logs, network, config (redacted).
    Reader,
    /// Day-to-day changes: config, reboot, shutdown.
    Operator,
    /// Everything, including issuing credentials.
    Admin,
}

impl Role {
    /// Every role, least first.
    pub const ALL: [Role; 3] = [Role::Reader, Role::Operator, Role::Admin];

    /// Whether a holder of `self` may call a route that needs `needed`.
    pub fn allows(self, needed: Role) -> bool {
        self >= needed
    }

    /// The lowercase name (`reader`).
    pub const fn as_str(self) -> &'static str {
        match self {
            Role::Reader => "reader",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A name that is not a role.
#[derive(Debug, thiserror::Error)]
#[error("unknown role {0:?}, expected reader, operator or admin")]
pub struct ParseRoleError(String);

impl std::str::FromStr for Role {
    type Err = ParseRoleError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| ParseRoleError(s.to_owned()))
    }
}

/// HTTP methods the API uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Method {
    /// Read.
    Get,
    /// Act or create.
    Post,
    /// Replace.
    Put,
    /// Remove.
    Delete,
}

impl Route {
    /// Whether the route carries operators' data (`/v1/kv`) rather than
    /// acting on the node or the cluster. Data writes come by the
    /// thousand per second; they are not audited one by one.
    pub fn is_data(&self) -> bool {
        self.path == "/v1/kv" || self.path.starts_with("/v1/kv/")
    }
}

impl Method {
    /// Upper-case name (`GET`).
    pub const fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Delete => "DELETE",
        }
    }

    /// Whether a call changes something on the node.
    pub const fn is_mutating(self) -> bool {
        !matches!(self, Method::Get)
    }
}

/// Who may call a route, and with what proof.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// A member node, with a client certificate from the cluster CA whose
    /// role is at least this one.
    Certificate(Role),
    /// A node in maintenance mode, with its setup token in the body; no
    /// client certificate.
    SetupToken,
    /// A member node, with a join token in the body; no client certificate
    /// (the caller is a node that is not a member yet).
    JoinToken,
}

impl Access {
    /// The stable name used in the OpenAPI document (`certificate`,
    /// `setup_token`, `join_token`).
    pub const fn as_str(self) -> &'static str {
        match self {
            Access::Certificate(_) => "certificate",
            Access::SetupToken => "setup_token",
            Access::JoinToken => "join_token",
        }
    }

    /// The role a certificate needs, for certificate routes.
    pub const fn role(self) -> Option<Role> {
        match self {
            Access::Certificate(role) => Some(role),
            Access::SetupToken | Access::JoinToken => None,
        }
    }
}

/// Writes a type's schema into the generator and returns a reference to
/// it.
pub type SchemaFn = fn(&mut SchemaGenerator) -> Schema;

fn schema<T: JsonSchema>(generator: &mut SchemaGenerator) -> Schema {
    generator.subschema_for::<T>()
}

/// What a successful call returns.
#[derive(Clone, Copy, Debug)]
pub enum Success {
    /// A JSON object with this status code.
    Json {
        /// HTTP status (200, 202).
        status: u16,
        /// The body's schema.
        body: SchemaFn,
    },
    /// `application/x-ndjson`: one JSON object of this schema per line.
    NdJson {
        /// The schema of each line.
        line: SchemaFn,
    },
    /// An OCI archive ([`crate::types::OCI_ARCHIVE`]), streamed.
    Archive,
}

/// Routes whose request body is an OCI archive streamed as it is read
/// ([`crate::types::OCI_ARCHIVE`]), not JSON; they carry no
/// [`Route::request`] schema.
pub const ARCHIVE_UPLOADS: &[&str] = &["image_import"];

/// One route.
#[derive(Clone, Copy, Debug)]
pub struct Route {
    /// Method.
    pub method: Method,
    /// Path, with `{name}` placeholders.
    pub path: &'static str,
    /// Stable identifier (`node_info`), the OpenAPI `operationId`.
    pub operation: &'static str,
    /// One line for humans.
    pub summary: &'static str,
    /// Who may call it.
    pub access: Access,
    /// Query string, described by a struct whose fields are the
    /// parameters.
    pub query: Option<SchemaFn>,
    /// JSON request body.
    pub request: Option<SchemaFn>,
    /// What success looks like.
    pub success: Success,
}

/// Every route the API serves.
pub const ROUTES: &[Route] = &[
    Route {
        method: Method::Get,
        path: "/v1/version",
        operation: "version",
        summary: "Cairn and API version of the node",
        access: Access::Certificate(Role::Reader),
        query: None,
        request: None,
        success: Success::Json {
            status: 200,
            body: schema::<VersionInfo>,
        },
    },
    Route {
        method: Method::Get,
        path: "/v1/node",
        operation: "node_info",
        summary: "Name, version, addresses, uptime, kernel, boot entry and certificates",
        access: Access::Certificate(Role::Reader),
        query: None,
        request: None,
        success: Success::Json {
            status: 200,
            body: schema::<NodeInfo>,
        },
    },
    Route {
        method: Method::Get,
        path: "/v1/node/logs",
        operation: "node_logs",
        summary: "System log of init and cairnd, this boot or an earlier one, optionally followed",
        access: Access::Certificate(Role::Reader),
        query: Some(schema::<LogQuery>),
        request: None,
        success: Success::NdJson {
            line: schema::<LogEntry>,
        },
    },
    Route {
        method: Method::Get,
        path: "/v1/node/dmesg",
        operation: "node_dmesg",
        summary: "Kernel log",
        access: Access::Certificate(Role::Reader),
        query: None,
        request: None,
        success: Success::Json {
            status: 200,
            body: schema::<KernelLog>,
        },
    },
    Route {
        method: Method::Get,
        path: "/v1/node/network",
        operation: "node_network",
        summary: "Links, addresses, routes, DNS and host name",
        access: Access::Certificate(Role::Reader),
        query: None,
        request: None,
        success: Success::Json {
            status: 200,
            body: schema::<NetworkState>,
        },
    },
    Route {
        method: Method::Get,
        path: "/v1/node/config",
        operation: "node_config_get",
        summary: "The machine config in force, secrets redacted",
        access: Access::Certificate(Role::Reader),
        query: None,
        request: None,
        success: Success::Json {
            status: 200,
            body: schema::<MachineConfigDocument>,
        },
    },
    Route {
        method: Method::Put,
        path: "/v1/node/config",
        operation: "node_config_apply",
        summary: "Validate and apply a new machine config (or only validate, with dry_run)",
        access: Access::Certificate(Role::Operator),
        query: None,
        request: Some(schema::<ApplyConfigRequest>),
        success: Success::Json {
            status: 200,
            body: schema::<ApplyConfigResponse>,
        },
    },
    Route {
        method: Method::Post,
        path: "/v1/node/reboot",
        operation: "node_reboot",
        summary: "Orderly reboot through cairn-init",
        access: Access::Certificate(Role::Operator),
        query: None,
        request: None,
        success: Success::Json {
            status: 202,
            body: schema::<PowerResponse>,
        },
    },
    Route {
        method: Method::Post,
        path: "/v1/node/agent/restart",
        operation: "node_agent_restart",
        summary: "Restart cairnd (containers keep running; cairn-init starts the agent again)",
        access: Access::Certificate(Role::Admin),
        query: None,
        request: None,
        success: Success::Json {
            status: 202,
            body: schema::<AgentRestartResponse>,
        },
    },
    Route {
        method: Method::Post,
        path: "/v1/node/shutdown",
        operation: "node_shutdown",
        summary: "Orderly power-off through cairn-init",
        access: Access::Certificate(Role::Operator),
        query: None,
        request: None,
        success: Success::Json {
            status: 202,
            body: schema::<PowerResponse>,
        },
    },
    Route {
        method: Method::Post,
        path: "/v1/certs",
        operation: "cert_issue",
        summary: "Issue a client certificate for a role from a CSR",
        access: Access::Certificate(Role::Admin),
        query: None,
        request: Some(schema::<IssueCertificateRequest>),
        success: Success::Json {
            status: 200,
            body: schema::<IssuedCertificate>,
        },
    },
    Route {
        method: Method::Post,
        path: "/v1/cluster/bootstrap",
        operation: "cluster_bootstrap",
        summary: "Create a new cluster with this node as its first member",
        access: Access::SetupToken,
        query: None,
        request: Some(schema::<BootstrapRequest>),
        success: Success::Json {
            status: 200,
            body: schema::<BootstrapResponse>,
        },
    },
    Route {
        method: Method::Post,
        path: "/v1/cluster/join",
        operation: "cluster_join",
        summary: "Join an existing cluster with a join token, pinning its CA",
        access: Access::SetupToken,
        query: None,
        request: Some(schema::<JoinRequest>),
        success: Success::Json {
            status: 200,
            body: schema::<JoinResponse>,
        },
    },
    Route {
        method: Method::Get,
        path: "/v1/cluster",
        operation: "cluster_status",
        summary: "Members, their roles and conditions, leader, term and indexes",
        access: Access::Certificate(Role::Reader),
        query: None,
        request: None,
        success: Success::Json {
            status: 200,
            body: schema::<ClusterStatus>,
        },
    },
    Route {
        method: Method::Post,
        path: "/v1/cluster/tokens",
        operation: "token_create",
        summary: "Make a join token (the secret is shown once)",
        access: Access::Certificate(Role::Admin),
        query: None,
        request: Some(schema::<TokenCreateRequest>),
        success: Success::Json {
            status: 200,
            body: schema::<CreatedToken>,
        },
    },
    Route {
        method: Method::Get,
        path: "/v1/cluster/tokens",
        operation: "token_list",
        summary: "Join tokens, without their secrets",
        access: Access::Certificate(Role::Admin),
        query: None,
        request: None,
        success: Success::Json {
            status: 200,
            body: schema::<TokenList>,
        },
    },
    Route {
        method: Method::Post,
        path: "/v1/cluster/tokens/{id}/revoke",
        operation: "token_revoke",
        summary: "Revoke a join token",
        access: Access::Certificate(Role::Admin),
        query: None,
        request: None,
        success: Success::Json {
            status: 200,
            body: schema::<TokenInfo>,
        },
    },
    Route {
        method: Method::Post,
        path: "/v1/cluster/members",
        operation: "member_add",
        summary: "Admit a node that presents a join token (called by the joining node)",
        access: Access::JoinToken,
        query: None,
        request: Some(schema::<MemberJoinRequest>),
        success: Success::Json {
            status: 200,
            body: schema::<MemberGrant>,
        },
    },
    Route {
        method: Method::Delete,
        path: "/v1/cluster/members/{name}",
        operation: "member_remove",
        summary: "Remove a member from the cluster",
        access: Access::Certificate(Role::Admin),
        query: None,
        request: None,
        success: Success::Json {
            status: 200,
            body: schema::<MemberRemoved>,
        },
    },
    Route {
        method: Method::Get,
        path: "/v1/cluster/backup",
        operation: "cluster_backup",
        summary: "The whole replicated store, for disaster recovery",
        access: Access::Certificate(Role::Admin),
        query: None,
        request: None,
        success: Success::Json {
            status: 200,
            body: schema::<ClusterBackup>,
        },
    },
    Route {
        method: Method::Post,
        path: "/v1/cluster/restore",
        operation: "cluster_restore",
        summary: "Start a new one-voter cluster on this member from a backup (after quorum is lost for good)",
        access: Access::Certificate(Role::Admin),
        query: None,
        request: Some(schema::<RestoreRequest>),
        success: Success::Json {
            status: 200,
            body: schema::<RestoreResponse>,
        },
    },
    Route {
        method: Method::Get,
        path: "/v1/kv",
        operation: "kv_list",
        summary: "Records whose keys start with a prefix, in key order (linearizable)",
        access: Access::Certificate(Role::Reader),
        query: Some(schema::<KvListQuery>),
        request: None,
        success: Success::Json {
            status: 200,
            body: schema::<KvList>,
        },
    },
    Route {
        method: Method::Get,
        path: "/v1/kv/entry",
        operation: "kv_get",
        summary: "One record (linearizable)",
        access: Access::Certificate(Role::Reader),
        query: Some(schema::<KvKeyQuery>),
        request: None,
        success: Success::Json {
            status: 200,
            body: schema::<KvRecord>,
        },
    },
    Route {
        method: Method::Put,
        path: "/v1/kv/entry",
        operation: "kv_put",
        summary: "Write a value, optionally only at a given revision (compare-and-set)",
        access: Access::Certificate(Role::Operator),
        query: None,
        request: Some(schema::<KvPutRequest>),
        success: Success::Json {
            status: 200,
            body: schema::<KvWritten>,
        },
    },
    Route {
        method: Method::Delete,
        path: "/v1/kv/entry",
        operation: "kv_delete",
        summary: "Delete a key, optionally only at a given revision",
        access: Access::Certificate(Role::Operator),
        query: Some(schema::<KvKeyQuery>),
        request: None,
        success: Success::Json {
            status: 200,
            body: schema::<KvWritten>,
        },
    },
    Route {
        method: Method::Get,
        path: "/v1/kv/watch",
        operation: "kv_watch",
        summary: "Stream changes under a prefix, resuming after a revision",
        access: Access::Certificate(Role::Reader),
        query: Some(schema::<KvWatchQuery>),
        request: None,
        success: Success::NdJson {
            line: schema::<KvEvent>,
        },
    },
    Route {
        method: Method::Get,
        path: "/v1/images",
        operation: "image_list",
        summary: "Images in the node's content store, once per reference",
        access: Access::Certificate(Role::Reader),
        query: None,
        request: None,
        success: Success::Json {
            status: 200,
            body: schema::<ImageList>,
        },
    },
    Route {
        method: Method::Post,
        path: "/v1/images/import",
        operation: "image_import",
        summary: "Import every named image of an oci-archive (the request body, streamed)",
        access: Access::Certificate(Role::Operator),
        query: None,
        request: None,
        success: Success::Json {
            status: 200,
            body: schema::<ImportResponse>,
        },
    },
    Route {
        method: Method::Post,
        path: "/v1/images/pull",
        operation: "image_pull",
        summary: "Pull an image from its registry (mirrors first), answering progress as NDJSON",
        access: Access::Certificate(Role::Operator),
        query: None,
        request: Some(schema::<crate::types::PullRequest>),
        success: Success::NdJson {
            line: schema::<crate::types::PullEvent>,
        },
    },
    Route {
        method: Method::Get,
        path: "/v1/images/export",
        operation: "image_export",
        summary: "One image as an oci-archive, streamed",
        access: Access::Certificate(Role::Reader),
        query: Some(schema::<ImageRefQuery>),
        request: None,
        success: Success::Archive,
    },
    Route {
        method: Method::Delete,
        path: "/v1/images/{ref}",
        operation: "image_remove",
        summary: "Remove a reference (or every reference to a digest); content goes at the next prune",
        access: Access::Certificate(Role::Operator),
        query: None,
        request: None,
        success: Success::Json {
            status: 200,
            body: schema::<ImageRemoved>,
        },
    },
    Route {
        method: Method::Post,
        path: "/v1/images/prune",
        operation: "image_prune",
        summary: "Remove unnamed images and every blob and unpacked layer no image or container uses",
        access: Access::Certificate(Role::Operator),
        query: None,
        request: None,
        success: Success::Json {
            status: 200,
            body: schema::<PruneResponse>,
        },
    },
    Route {
        method: Method::Get,
        path: "/v1/containers",
        operation: "container_list",
        summary: "Containers on this node, with state, restarts and health",
        access: Access::Certificate(Role::Reader),
        query: None,
        request: None,
        success: Success::Json {
            status: 200,
            body: schema::<ContainerList>,
        },
    },
    Route {
        method: Method::Post,
        path: "/v1/containers",
        operation: "container_create",
        summary: "Create a container from an image in the store and start it",
        access: Access::Certificate(Role::Operator),
        query: None,
        request: Some(schema::<ContainerCreateRequest>),
        success: Success::Json {
            status: 201,
            body: schema::<ContainerInfo>,
        },
    },
    Route {
        method: Method::Get,
        path: "/v1/containers/{name}",
        operation: "container_inspect",
        summary: "One container in detail: resolved command, last exit, health probes",
        access: Access::Certificate(Role::Reader),
        query: None,
        request: None,
        success: Success::Json {
            status: 200,
            body: schema::<ContainerInfo>,
        },
    },
    Route {
        method: Method::Delete,
        path: "/v1/containers/{name}",
        operation: "container_remove",
        summary: "Remove a stopped container (or a running one with force): its mounts, cgroup, logs and writable layer",
        access: Access::Certificate(Role::Operator),
        query: Some(schema::<ContainerRemoveQuery>),
        request: None,
        success: Success::Json {
            status: 200,
            body: schema::<ContainerRemoved>,
        },
    },
    Route {
        method: Method::Post,
        path: "/v1/containers/{name}/start",
        operation: "container_start",
        summary: "Start a stopped or exited container",
        access: Access::Certificate(Role::Operator),
        query: None,
        request: None,
        success: Success::Json {
            status: 200,
            body: schema::<ContainerInfo>,
        },
    },
    Route {
        method: Method::Post,
        path: "/v1/containers/{name}/stop",
        operation: "container_stop",
        summary: "Stop a container: its stop signal, then SIGKILL after the timeout; no restart follows",
        access: Access::Certificate(Role::Operator),
        query: None,
        request: Some(schema::<ContainerStopRequest>),
        success: Success::Json {
            status: 200,
            body: schema::<ContainerInfo>,
        },
    },
    Route {
        method: Method::Post,
        path: "/v1/containers/{name}/restart",
        operation: "container_restart",
        summary: "Stop a container, then start it again",
        access: Access::Certificate(Role::Operator),
        query: None,
        request: Some(schema::<ContainerStopRequest>),
        success: Success::Json {
            status: 200,
            body: schema::<ContainerInfo>,
        },
    },
    Route {
        method: Method::Get,
        path: "/v1/containers/{name}/logs",
        operation: "container_logs",
        summary: "A container's output, one line per NDJSON line, optionally followed",
        access: Access::Certificate(Role::Reader),
        query: Some(schema::<ContainerLogQuery>),
        request: None,
        success: Success::NdJson {
            line: schema::<ContainerLogLine>,
        },
    },
    Route {
        method: Method::Post,
        path: "/v1/containers/{name}/exec",
        operation: "container_exec",
        summary: "Run a command in a running container; its output streams back, then its exit",
        access: Access::Certificate(Role::Admin),
        query: None,
        request: Some(schema::<ExecRequest>),
        success: Success::NdJson {
            line: schema::<ExecFrame>,
        },
    },
];

/// The route with this operation id.
pub fn route(operation: &str) -> Option<&'static Route> {
    ROUTES.iter().find(|r| r.operation == operation)
}

/// The schema of error bodies.
pub(crate) fn error_schema(generator: &mut SchemaGenerator) -> Schema {
    schema::<ApiError>(generator)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn roles_are_ordered_least_first() {
        assert!(Role::Admin.allows(Role::Reader));
        assert!(Role::Operator.allows(Role::Operator));
        assert!(!Role::Reader.allows(Role::Operator));
        assert!(!Role::Operator.allows(Role::Admin));
        assert_eq!("operator".parse::<Role>().unwrap(), Role::Operator);
        assert!("cairn:admin".parse::<Role>().is_err());
    }

    #[test]
    fn operations_and_method_paths_are_unique() {
        let mut ops = HashSet::new();
        let mut endpoints = HashSet::new();
        for r in ROUTES {
            assert!(ops.insert(r.operation), "duplicate {}", r.operation);
            assert!(endpoints.insert((r.method, r.path)), "duplicate {}", r.path);
            assert!(r.path.starts_with("/v1/"), "{}", r.path);
        }
    }

    #[test]
    fn only_the_kv_routes_carry_data() {
        let data: Vec<_> = ROUTES
            .iter()
            .filter(|r| r.is_data())
            .map(|r| r.operation)
            .collect();
        assert_eq!(
            data,
            ["kv_list", "kv_get", "kv_put", "kv_delete", "kv_watch"]
        );
    }

    #[test]
    fn every_mutating_certificate_route_needs_more_than_reader() {
        for r in ROUTES.iter().filter(|r| r.method.is_mutating()) {
            if let Access::Certificate(role) = r.access {
                assert!(role > Role::Reader, "{} is mutating", r.operation);
            }
        }
    }

    #[test]
    fn only_bootstrap_and_join_take_a_setup_token_and_only_member_add_a_join_token() {
        let with = |access: Access| -> Vec<_> {
            ROUTES
                .iter()
                .filter(|r| r.access == access)
                .map(|r| r.operation)
                .collect()
        };
        assert_eq!(
            with(Access::SetupToken),
            ["cluster_bootstrap", "cluster_join"]
        );
        assert_eq!(with(Access::JoinToken), ["member_add"]);
    }
}
