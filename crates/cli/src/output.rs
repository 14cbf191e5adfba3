//! Rendering answers for people (`-o table`) and scripts (`-o json`).
//!
//! Pure functions from values to text. JSON is the API's own types
//! serialised as they are (snake_case), one object per command, or one
//! object per line for log streams. Tables are plain aligned text.

use std::fmt::Write as _;

use api::types::{
    AgentRestartResponse, ApplyConfigResponse, BootstrapResponse, ClusterBackup, ClusterStatus,
    ContainerInfo, ContainerList, ContainerRemoved, CreatedToken, ExitStatus, ImageList,
    ImageRemoved, ImportResponse, IssuedCertificate, JoinResponse, KernelLog, KvEvent, KvEventKind,
    KvList, KvWritten, LogEntry, LogLevel, LogSource, MachineConfigDocument, MemberRemoved,
    MemberRole, MemberState, NetworkState, NodeInfo, PowerResponse, PruneResponse, RestoreResponse,
    TokenInfo, TokenList, TokenState, VersionInfo,
};
use serde::Serialize;

use crate::duration::Span;

/// `cairn version`: this client, and the node when it answered.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct VersionReport {
    /// This binary.
    pub client: VersionInfo,
    /// The node, when reachable.
    pub server: Option<VersionInfo>,
    /// Why the node's version is missing, when it is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_error: Option<String>,
}

/// `cairn config contexts`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ContextsReport {
    /// The current context.
    pub current_context: Option<String>,
    /// Every context.
    pub contexts: Vec<ContextSummary>,
}

/// One context, without its secrets.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ContextSummary {
    /// Name.
    pub name: String,
    /// Endpoints.
    pub endpoints: Vec<String>,
    /// Cluster name.
    pub cluster: Option<String>,
    /// Credential common name.
    pub user: Option<String>,
    /// Credential role.
    pub role: Option<api::Role>,
}

/// `cairn node reboot --wait`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RebootReport {
    /// `reboot`.
    pub action: String,
    /// The boot that ended.
    pub previous_boot_id: String,
    /// The boot the node came back with.
    pub boot_id: String,
    /// Seconds from the request to the node answering again.
    pub waited_s: u64,
}

/// `cairn cert issue`: the certificate and where its key went.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CertIssueReport {
    /// The certificate as the node issued it.
    #[serde(flatten)]
    pub certificate: IssuedCertificate,
    /// The context it was stored as, if any.
    pub context: Option<String>,
    /// The files it was written to, if any.
    pub files: Vec<String>,
}

/// A value as one pretty JSON object and a newline.
pub fn json<T: Serialize>(value: &T) -> String {
    // The values printed are plain data (strings, numbers, maps with
    // string keys), which serde_json always serialises.
    let mut text = serde_json::to_string_pretty(value)
        .unwrap_or_else(|e| format!("{{\"error\":\"cannot serialise: {e}\"}}"));
    text.push('\n');
    text
}

/// Rows aligned in columns under upper-case headers, two spaces apart.
pub fn columns(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let mut out = String::new();
    let line = |out: &mut String, cells: &mut dyn Iterator<Item = &str>| {
        let cells: Vec<&str> = cells.collect();
        let last = cells.len().saturating_sub(1);
        for (i, cell) in cells.iter().enumerate() {
            if i == last {
                out.push_str(cell);
            } else {
                let pad = widths.get(i).copied().unwrap_or(0);
                let _ = write!(out, "{cell:<pad$}  ");
            }
        }
        out.push('\n');
    };
    line(&mut out, &mut headers.iter().copied());
    for row in rows {
        line(&mut out, &mut row.iter().map(String::as_str));
    }
    out
}

/// `KEY  value` lines, keys aligned.
fn fields(pairs: &[(&str, String)]) -> String {
    let width = pairs.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    let mut out = String::new();
    for (key, value) in pairs {
        let _ = writeln!(out, "{key:<width$}  {value}");
    }
    out
}

fn list(items: &[String]) -> String {
    if items.is_empty() {
        "-".to_owned()
    } else {
        items.join(", ")
    }
}

fn or_dash(value: Option<String>) -> String {
    value.unwrap_or_else(|| "-".to_owned())
}

/// `cairn node info`.
pub fn node_info(info: &NodeInfo) -> String {
    let boot = &info.boot;
    let mut counter = boot.counter.clone();
    if let Some(left) = boot.tries_left {
        let _ = write!(counter, ", {left} tries left");
    }
    let entry = if boot.entry.is_empty() {
        "-".to_owned()
    } else {
        format!("{} ({counter})", boot.entry)
    };
    let mut out = fields(&[
        ("NAME", info.name.clone()),
        ("VERSION", info.version.clone()),
        ("KERNEL", info.kernel.clone()),
        ("UPTIME", Span::from_secs(info.uptime_s).to_string()),
        ("BOOT ID", info.boot_id.clone()),
        ("FIRMWARE", boot.firmware.clone()),
        ("BOOT ENTRY", entry),
        (
            "LOADER",
            if boot.loader.is_empty() {
                "-".to_owned()
            } else {
                boot.loader.clone()
            },
        ),
        ("ADDRESSES", list(&info.addresses)),
        (
            "CLUSTER",
            match &info.cluster {
                Some(c) => format!("{} (CA {})", c.name, c.ca_fingerprint),
                None => "- (maintenance mode)".to_owned(),
            },
        ),
    ]);
    if !info.certificates.is_empty() {
        out.push('\n');
        let rows: Vec<Vec<String>> = info
            .certificates
            .iter()
            .map(|c| {
                vec![
                    c.purpose.clone(),
                    c.subject.clone(),
                    c.not_after.to_string(),
                    c.fingerprint.clone(),
                ]
            })
            .collect();
        out.push_str(&columns(
            &["CERTIFICATE", "SUBJECT", "NOT AFTER", "FINGERPRINT"],
            &rows,
        ));
    }
    out
}

/// One log entry as a line.
pub fn log_entry(entry: &LogEntry) -> String {
    let level = match entry.level {
        LogLevel::Error => "ERROR",
        LogLevel::Warn => "WARN ",
        LogLevel::Info => "INFO ",
        LogLevel::Debug => "DEBUG",
    };
    let source = match entry.source {
        LogSource::Init => "init  ",
        LogSource::Cairnd => "cairnd",
    };
    format!("{}  {level}  {source}  {}\n", entry.ts, entry.message)
}

/// `cairn node dmesg`, like `dmesg`: seconds since boot, then the text.
pub fn kernel_log(log: &KernelLog) -> String {
    let mut out = String::new();
    for e in &log.entries {
        let _ = writeln!(
            out,
            "[{:>5}.{:06}] {}",
            e.monotonic_us / 1_000_000,
            e.monotonic_us % 1_000_000,
            e.message
        );
    }
    out
}

/// `cairn node network`.
pub fn network(state: &NetworkState) -> String {
    let ips = |v: &[std::net::IpAddr]| list(&v.iter().map(ToString::to_string).collect::<Vec<_>>());
    let mut out = fields(&[
        (
            "HOSTNAME",
            match &state.hostname {
                Some(h) => format!("{} ({})", h.name, h.source),
                None => "-".to_owned(),
            },
        ),
        ("DNS", ips(&state.dns)),
        ("SEARCH", list(&state.search)),
        ("NTP", ips(&state.ntp)),
    ]);
    out.push('\n');
    let links: Vec<Vec<String>> = state
        .links
        .iter()
        .map(|l| {
            vec![
                l.name.clone(),
                or_dash(l.mac.clone()),
                l.addressing.clone(),
                list(&l.addresses),
                or_dash(
                    l.dhcp
                        .as_ref()
                        .map(|d| format!("{} ({})", d.server, Span::from_secs(d.lease_time_s))),
                ),
                or_dash(l.error.clone()),
            ]
        })
        .collect();
    out.push_str(&columns(
        &[
            "LINK",
            "MAC",
            "ADDRESSING",
            "ADDRESSES",
            "DHCP SERVER",
            "ERROR",
        ],
        &links,
    ));
    out.push('\n');
    let routes: Vec<Vec<String>> = state
        .routes
        .iter()
        .map(|r| {
            vec![
                r.destination.clone(),
                or_dash(r.gateway.map(|g| g.to_string())),
                or_dash(r.link.clone()),
            ]
        })
        .collect();
    out.push_str(&columns(&["ROUTE", "GATEWAY", "LINK"], &routes));
    out
}

/// `cairn node config get`: the TOML, headed by where it came from. The
/// header lines are TOML comments, so the output can be edited and
/// applied as it is.
pub fn config_document(doc: &MachineConfigDocument) -> String {
    let mut out = format!("# source: {}\n", doc.source);
    if !doc.redacted.is_empty() {
        let _ = writeln!(out, "# redacted: {}", doc.redacted.join(", "));
    }
    out.push_str(&doc.toml);
    if !doc.toml.ends_with('\n') {
        out.push('\n');
    }
    out
}

/// `cairn node config apply`.
pub fn apply_result(result: &ApplyConfigResponse) -> String {
    let changed = if result.changed.is_empty() {
        "nothing".to_owned()
    } else {
        result.changed.join(", ")
    };
    if result.dry_run {
        format!("the config is valid; applying it would change: {changed}\n")
    } else if result.applied {
        format!("config applied; changed: {changed}\n")
    } else {
        format!("config not applied; changed: {changed}\n")
    }
}

/// `cairn node reboot` and `cairn node shutdown`.
pub fn power(response: &PowerResponse) -> String {
    let what = match response.action.as_str() {
        "reboot" => "the node is rebooting".to_owned(),
        "poweroff" => "the node is powering off".to_owned(),
        other => format!("the node accepted {other}"),
    };
    format!("{what} (boot {} ends)\n", response.boot_id)
}

/// `cairn node reboot --wait`.
pub fn reboot_report(report: &RebootReport) -> String {
    format!(
        "the node rebooted and is back after {} (boot {} replaced {})\n",
        Span::from_secs(report.waited_s),
        report.boot_id,
        report.previous_boot_id
    )
}

/// `cairn cert issue`.
pub fn cert_issue(report: &CertIssueReport) -> String {
    let c = &report.certificate;
    let mut pairs = vec![
        ("NAME", c.name.clone()),
        ("ROLE", c.role.to_string()),
        ("NOT AFTER", c.not_after.to_string()),
        ("CA", c.ca_fingerprint.clone()),
    ];
    if let Some(context) = &report.context {
        pairs.push(("CONTEXT", context.clone()));
    }
    if !report.files.is_empty() {
        pairs.push(("FILES", report.files.join(", ")));
    }
    fields(&pairs)
}

/// `cairn cluster init`.
pub fn bootstrap(response: &BootstrapResponse, context: &str) -> String {
    format!(
        "cluster {} created on node {}; context {context} is now current (admin {} valid until {}, CA {})\n",
        response.cluster_name,
        response.node_name,
        response.admin.name,
        response.admin.not_after,
        response.admin.ca_fingerprint
    )
}

/// How many characters of a value `kv list` shows.
const VALUE_WIDTH: usize = 60;

/// `text` on one line: line breaks and other control characters escaped,
/// cut to `max` characters with a trailing `...` when longer.
fn one_line(text: &str, max: usize) -> String {
    let mut out = String::new();
    for (shown, c) in text.chars().enumerate() {
        if shown == max {
            out.push_str("...");
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// `cairn kv put`.
pub fn kv_put(written: &KvWritten) -> String {
    format!("OK (revision {})\n", written.revision)
}

/// `cairn kv del`.
pub fn kv_del(written: &KvWritten) -> String {
    match written.deleted {
        Some(false) => format!(
            "{} did not exist, nothing deleted (revision {})\n",
            written.key, written.revision
        ),
        Some(true) | None => format!("deleted {} (revision {})\n", written.key, written.revision),
    }
}

/// `cairn kv list`.
pub fn kv_list(list: &KvList) -> String {
    let rows: Vec<Vec<String>> = list
        .records
        .iter()
        .map(|r| {
            vec![
                one_line(&r.key, usize::MAX),
                r.revision.to_string(),
                one_line(&r.value, VALUE_WIDTH),
            ]
        })
        .collect();
    let mut out = columns(&["KEY", "REVISION", "VALUE"], &rows);
    if list.more {
        out.push_str("(more keys match: raise --limit or narrow the prefix)\n");
    }
    out
}

/// One event of `cairn kv watch`: revision, what happened, key, and the
/// new value on one line.
pub fn kv_event(event: &KvEvent) -> String {
    let key = one_line(&event.key, usize::MAX);
    match event.kind {
        KvEventKind::Put => format!(
            "{}  put     {key}  {}\n",
            event.revision,
            one_line(event.value.as_deref().unwrap_or(""), usize::MAX)
        ),
        KvEventKind::Delete => format!("{}  delete  {key}\n", event.revision),
    }
}

const fn role_name(role: MemberRole) -> &'static str {
    match role {
        MemberRole::Voter => "voter",
        MemberRole::Learner => "learner",
    }
}

const fn state_name(state: MemberState) -> &'static str {
    match state {
        MemberState::Ready => "ready",
        MemberState::NotReady => "not_ready",
        MemberState::Lost => "lost",
    }
}

/// Milliseconds as a table shows them: `850ms`, `12s`, `3m 5s`.
fn millis(ms: u64) -> String {
    if ms < 1000 {
        format!("{ms}ms")
    } else {
        Span::from_secs(ms / 1000).to_string()
    }
}

/// `cairn cluster status`: one header line, then the members.
pub fn cluster_status(status: &ClusterStatus) -> String {
    let mut out = format!(
        "cluster {}: leader {}, term {}, commit {}, applied {} (answered by {})\n\n",
        status.name,
        status.leader.as_deref().unwrap_or("none"),
        status.term,
        status.commit,
        status.applied,
        status.answered_by
    );
    let rows: Vec<Vec<String>> = status
        .members
        .iter()
        .map(|m| {
            let leader = status.leader.as_deref() == Some(m.name.as_str());
            vec![
                if leader {
                    format!("{} *", m.name)
                } else {
                    m.name.clone()
                },
                m.address.clone(),
                role_name(m.role).to_owned(),
                state_name(m.state).to_owned(),
                or_dash(m.lag.map(|l| l.to_string())),
                or_dash(m.last_contact_ms.map(millis)),
                or_dash(m.domain.clone()),
            ]
        })
        .collect();
    out.push_str(&columns(
        &[
            "NAME",
            "ADDRESS",
            "ROLE",
            "STATE",
            "LAG",
            "LAST CONTACT",
            "DOMAIN",
        ],
        &rows,
    ));
    out
}

/// `cairn cluster token create`: the token, then the command that joins
/// a node with it.
pub fn created_token(token: &CreatedToken) -> String {
    let mut out = fields(&[
        ("TOKEN", token.token.clone()),
        ("CA HASH", token.ca_hash.clone()),
        ("EXPIRES", token.expires_at.to_string()),
        (
            "USES",
            token
                .uses
                .map_or_else(|| "unlimited".to_owned(), |n| n.to_string()),
        ),
    ]);
    let _ = write!(
        out,
        "\nJoin a node in maintenance mode with (fill in its endpoint and setup token):\n\n  {}\n",
        token.join_command
    );
    out
}

const fn token_state_name(state: TokenState) -> &'static str {
    match state {
        TokenState::Valid => "valid",
        TokenState::Expired => "expired",
        TokenState::Revoked => "revoked",
        TokenState::UsedUp => "used_up",
    }
}

/// `cairn cluster token list`.
pub fn token_list(list: &TokenList) -> String {
    let rows: Vec<Vec<String>> = list
        .tokens
        .iter()
        .map(|t| {
            vec![
                t.id.clone(),
                token_state_name(t.state).to_owned(),
                match t.uses {
                    Some(allowed) => format!("{}/{allowed}", t.used),
                    None => format!("{}/unlimited", t.used),
                },
                t.expires_at.to_string(),
                or_dash(t.description.as_deref().map(|d| one_line(d, VALUE_WIDTH))),
            ]
        })
        .collect();
    columns(&["ID", "STATE", "USED", "EXPIRES", "DESCRIPTION"], &rows)
}

/// `cairn cluster token revoke`.
pub fn token_revoked(token: &TokenInfo) -> String {
    format!(
        "token {} is {} (used {} times)\n",
        token.id,
        token_state_name(token.state),
        token.used
    )
}

/// `cairn cluster snapshot save`.
pub fn backup_saved(backup: &ClusterBackup, file: &std::path::Path) -> String {
    format!(
        "saved cluster {} at revision {} ({} members, taken from {}) to {}\n",
        backup.cluster_name,
        backup.revision,
        backup.members.len(),
        backup.taken_from,
        file.display()
    )
}

/// `cairn cluster snapshot restore`.
pub fn restored(restored: &RestoreResponse) -> String {
    format!(
        "restored revision {}; {} is the one voter of a new cluster: reset the other nodes and join them again\n",
        restored.revision, restored.node_name
    )
}

/// `cairn node join`.
pub fn joined(response: &JoinResponse) -> String {
    format!(
        "node {} joined cluster {} as member {} (a learner until it has caught up)\n",
        response.node_name, response.cluster_name, response.member_id
    )
}

/// `cairn node remove`.
pub fn member_removed(removed: &MemberRemoved) -> String {
    format!(
        "member {} (id {}) removed from the cluster\n",
        removed.name, removed.id
    )
}

/// What `cairn image export` wrote.
#[derive(Debug, Serialize)]
pub struct ExportReport {
    /// The archive.
    pub file: String,
    /// Its size.
    pub bytes: u64,
}

/// A digest shortened for tables, as docker and nerdctl show image ids.
fn short_digest(digest: &str) -> String {
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    hex.chars().take(12).collect()
}

/// Bytes in binary units with one decimal (`34.2 MiB`).
fn size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    let name = UNITS.get(unit).copied().unwrap_or("B");
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {name}")
    }
}

/// `cairn image import`: one line per reference, with its full digest.
pub fn images_imported(response: &ImportResponse) -> String {
    response
        .images
        .iter()
        .map(|i| format!("imported {} {}\n", i.reference, i.digest))
        .collect()
}

/// `cairn image list`.
pub fn image_list(list: &ImageList) -> String {
    let rows: Vec<Vec<String>> = list
        .images
        .iter()
        .map(|i| {
            vec![
                i.reference.clone().unwrap_or_else(|| "<none>".to_owned()),
                short_digest(&i.digest),
                size(i.size),
                or_dash(i.created.clone()),
            ]
        })
        .collect();
    columns(&["REFERENCE", "DIGEST", "SIZE", "CREATED"], &rows)
}

/// `cairn image rm`.
pub fn image_removed(removed: &ImageRemoved) -> String {
    if removed.removed.is_empty() {
        return "no reference named the image; prune removes it\n".to_owned();
    }
    removed
        .removed
        .iter()
        .map(|r| format!("removed {r}\n"))
        .collect()
}

/// `cairn image prune`.
pub fn image_pruned(pruned: &PruneResponse) -> String {
    format!(
        "removed {} images, {} blobs and {} unpacked layers; freed {}\n",
        pruned.images.len(),
        pruned.blobs.len(),
        pruned.layers.len(),
        size(pruned.bytes_freed)
    )
}

/// `cairn image export`.
pub fn image_exported(report: &ExportReport) -> String {
    format!("wrote {} ({})\n", report.file, size(report.bytes))
}

/// `cairn version`.
pub fn version(report: &VersionReport) -> String {
    let server = match (&report.server, &report.server_error) {
        (Some(v), _) => format!("{} (api {})", v.version, v.api),
        (None, Some(e)) => format!("unknown ({e})"),
        (None, None) => "unknown".to_owned(),
    };
    fields(&[
        (
            "CLIENT",
            format!("{} (api {})", report.client.version, report.client.api),
        ),
        ("SERVER", server),
    ])
}

/// `cairn config contexts`.
pub fn contexts(report: &ContextsReport) -> String {
    let rows: Vec<Vec<String>> = report
        .contexts
        .iter()
        .map(|c| {
            let current = report.current_context.as_deref() == Some(c.name.as_str());
            vec![
                if current { "*" } else { "" }.to_owned(),
                c.name.clone(),
                c.endpoints.join(", "),
                or_dash(c.cluster.clone()),
                or_dash(c.user.clone()),
                or_dash(c.role.map(|r| r.to_string())),
            ]
        })
        .collect();
    columns(
        &["CURRENT", "NAME", "ENDPOINTS", "CLUSTER", "USER", "ROLE"],
        &rows,
    )
}

/// `cairn node restart-agent`.
pub fn agent_restarting(restarting: &AgentRestartResponse) -> String {
    format!(
        "cairnd (pid {}) is restarting; containers keep running\n",
        restarting.pid
    )
}

/// `cairn ctr list`.
pub fn container_list(list: &ContainerList) -> String {
    let rows: Vec<Vec<String>> = list
        .containers
        .iter()
        .map(|c| {
            vec![
                c.name.clone(),
                c.image.clone(),
                snake(&c.state),
                c.restarts.to_string(),
                snake(&c.health),
                c.created.to_string(),
            ]
        })
        .collect();
    columns(
        &["NAME", "IMAGE", "STATE", "RESTARTS", "HEALTH", "CREATED"],
        &rows,
    )
}

/// `cairn ctr run`.
pub fn container_started(info: &ContainerInfo) -> String {
    let pid = info.pid.map(|p| format!(", pid {p}")).unwrap_or_default();
    format!("{} {}{pid}\n", info.name, snake(&info.state))
}

/// `cairn ctr stop|start|restart`.
pub fn container_state(info: &ContainerInfo) -> String {
    let exit = info
        .last_exit
        .as_ref()
        .filter(|_| info.pid.is_none())
        .map(|e| format!(" ({})", exit_text(e)))
        .unwrap_or_default();
    format!("{} {}{exit}\n", info.name, snake(&info.state))
}

/// `cairn ctr inspect`.
pub fn container_info(info: &ContainerInfo) -> String {
    let limits = &info.spec.limits;
    let mut limit_parts = Vec::new();
    if let Some(m) = limits.memory_bytes {
        limit_parts.push(format!("memory {}", size(m)));
    }
    if let Some(c) = limits.cpu_millis {
        limit_parts.push(format!("cpu {}.{:03}", c / 1000, c % 1000));
    }
    if let Some(p) = limits.pids {
        limit_parts.push(format!("pids {p}"));
    }
    let restart = match info.spec.restart.max_retries {
        Some(n) => format!("{}:{n}", snake(&info.spec.restart.policy)),
        None => snake(&info.spec.restart.policy),
    };
    let mut out = fields(&[
        ("NAME", info.name.clone()),
        (
            "IMAGE",
            format!("{} ({})", info.image, short_digest(&info.image_digest)),
        ),
        ("STATE", snake(&info.state)),
        ("PID", or_dash(info.pid.map(|p| p.to_string()))),
        ("COMMAND", list(&info.command)),
        ("RESTART", format!("{restart}, {} restarts", info.restarts)),
        ("CREATED", info.created.to_string()),
        ("STARTED", or_dash(info.started_at.map(|t| t.to_string()))),
        ("FINISHED", or_dash(info.finished_at.map(|t| t.to_string()))),
        ("LAST EXIT", or_dash(info.last_exit.as_ref().map(exit_text))),
        (
            "NEXT RESTART",
            or_dash(info.next_restart_at.map(|t| t.to_string())),
        ),
        ("LIMITS", list(&limit_parts)),
        ("NETWORK", snake(&info.spec.network)),
        (
            "VOLUMES",
            list(
                &info
                    .spec
                    .volumes
                    .iter()
                    .map(|v| {
                        let ro = if v.read_only { ":ro" } else { "" };
                        format!("{}:{}{ro}", v.volume, v.path)
                    })
                    .collect::<Vec<_>>(),
            ),
        ),
        (
            "HEALTH",
            format!(
                "{} ({} failing in a row)",
                snake(&info.health.status),
                info.health.failing_streak
            ),
        ),
        ("ERROR", or_dash(info.error.clone())),
    ]);
    for probe in &info.health.probes {
        let verdict = if probe.ok { "ok" } else { "failed" };
        let _ = writeln!(
            out,
            "  probe {} {verdict}: {}",
            probe.at,
            probe.output.trim_end()
        );
    }
    out
}

/// `cairn ctr rm`.
pub fn container_removed(removed: &ContainerRemoved) -> String {
    format!("removed {}\n", removed.name)
}

fn exit_text(exit: &ExitStatus) -> String {
    let how = match (exit.code, exit.signal) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(signal)) => format!("killed by signal {signal}"),
        (None, None) => "ended".to_owned(),
    };
    let oom = if exit.oom_killed {
        ", out of memory"
    } else {
        ""
    };
    format!("{how}{oom} at {}", exit.at)
}

/// A serde enum's snake_case name, as the JSON output spells it.
fn snake<T: Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(text)) => text,
        _ => "?".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use api::Timestamp;
    use api::types::{
        BootInfo, CertificateInfo, ClusterInfo, HostnameState, LinkState, RouteState,
    };

    fn info() -> NodeInfo {
        NodeInfo {
            name: "node-1".to_owned(),
            version: "0.1.0".to_owned(),
            addresses: vec!["10.0.0.5/24".to_owned()],
            uptime_s: 3725,
            kernel: "6.1.0-56-amd64".to_owned(),
            boot_id: "b1".to_owned(),
            boot: BootInfo {
                firmware: "uefi".to_owned(),
                entry: "cairn-0.1.0.conf".to_owned(),
                counter: "good".to_owned(),
                tries_left: None,
                loader: "systemd-boot 252".to_owned(),
            },
            cluster: Some(ClusterInfo {
                name: "lab".to_owned(),
                ca_fingerprint: "sha256:ab".to_owned(),
            }),
            certificates: vec![CertificateInfo {
                purpose: "node".to_owned(),
                subject: "node-1".to_owned(),
                fingerprint: "sha256:cd".to_owned(),
                not_before: Timestamp::from_unix(0).expect("ts"),
                not_after: Timestamp::from_unix(1_800_000_000).expect("ts"),
            }],
        }
    }

    #[test]
    fn json_output_is_the_api_type_in_snake_case() {
        let text = json(&info());
        let value: serde_json::Value = serde_json::from_str(&text).expect("one JSON object");
        for key in [
            "name",
            "version",
            "addresses",
            "uptime_s",
            "boot",
            "boot_id",
        ] {
            assert!(value.get(key).is_some(), "{key} missing in {text}");
        }
        assert!(text.ends_with("}\n"));
    }

    #[test]
    fn node_info_table_aligns_keys_and_lists_certificates() {
        let text = node_info(&info());
        assert!(text.contains("NAME        node-1\n"), "{text}");
        assert!(text.contains("UPTIME      1h 2m\n"), "{text}");
        assert!(
            text.contains("BOOT ENTRY  cairn-0.1.0.conf (good)\n"),
            "{text}"
        );
        assert!(text.contains("CLUSTER     lab (CA sha256:ab)\n"), "{text}");
        assert!(
            text.contains("node         node-1   2027-01-15T08:00:00Z  sha256:cd"),
            "{text}"
        );
    }

    #[test]
    fn columns_pad_all_but_the_last_cell() {
        let text = columns(
            &["A", "BB"],
            &[
                vec!["xyz".to_owned(), "1".to_owned()],
                vec!["q".to_owned(), "22".to_owned()],
            ],
        );
        assert_eq!(text, "A    BB\nxyz  1\nq    22\n");
    }

    #[test]
    fn log_lines_show_time_level_source_and_message() {
        let entry = LogEntry {
            ts: Timestamp::from_unix(1_700_000_000).expect("ts"),
            boot_id: "b".to_owned(),
            source: LogSource::Cairnd,
            level: LogLevel::Warn,
            message: "link eth0 down".to_owned(),
        };
        assert_eq!(
            log_entry(&entry),
            "2023-11-14T22:13:20Z  WARN   cairnd  link eth0 down\n"
        );
    }

    #[test]
    fn dmesg_lines_look_like_dmesg() {
        let log = KernelLog {
            entries: vec![api::types::KernelLogEntry {
                seq: 1,
                monotonic_us: 12_345_678,
                priority: 6,
                message: "virtio_net up".to_owned(),
            }],
        };
        assert_eq!(kernel_log(&log), "[   12.345678] virtio_net up\n");
    }

    #[test]
    fn network_table_shows_links_routes_and_dns() {
        let state = NetworkState {
            hostname: Some(HostnameState {
                name: "node-1".to_owned(),
                source: "dhcp".to_owned(),
            }),
            links: vec![LinkState {
                name: "eth0".to_owned(),
                mac: Some("52:54:00:12:34:56".to_owned()),
                addressing: "dhcp".to_owned(),
                addresses: vec!["10.0.2.15/24".to_owned()],
                dhcp: None,
                error: None,
            }],
            routes: vec![RouteState {
                destination: "0.0.0.0/0".to_owned(),
                gateway: Some("10.0.2.2".parse().expect("ip")),
                link: Some("eth0".to_owned()),
            }],
            dns: vec!["10.0.2.3".parse().expect("ip")],
            search: vec![],
            ntp: vec![],
        };
        let text = network(&state);
        assert!(text.contains("HOSTNAME  node-1 (dhcp)\n"), "{text}");
        assert!(text.contains("DNS       10.0.2.3\n"), "{text}");
        assert!(
            text.contains("eth0  52:54:00:12:34:56  dhcp        10.0.2.15/24  -            -"),
            "{text}"
        );
        assert!(text.contains("0.0.0.0/0  10.0.2.2  eth0"), "{text}");
    }

    #[test]
    fn config_get_output_stays_valid_toml() {
        let doc = MachineConfigDocument {
            source: "esp /efi/cairn/config.toml".to_owned(),
            toml: "[cluster]\nsetup-token = \"<redacted>\"".to_owned(),
            redacted: vec!["cluster.setup-token".to_owned()],
        };
        let text = config_document(&doc);
        assert!(text.starts_with(
            "# source: esp /efi/cairn/config.toml\n# redacted: cluster.setup-token\n"
        ));
        let parsed: toml::Table = toml::from_str(&text).expect("still TOML");
        assert!(parsed.contains_key("cluster"));
    }

    #[test]
    fn apply_result_distinguishes_dry_runs() {
        let mut r = ApplyConfigResponse {
            applied: false,
            dry_run: true,
            changed: vec!["node".to_owned()],
        };
        assert_eq!(
            apply_result(&r),
            "the config is valid; applying it would change: node\n"
        );
        r.dry_run = false;
        r.applied = true;
        r.changed.clear();
        assert_eq!(apply_result(&r), "config applied; changed: nothing\n");
    }

    #[test]
    fn kv_list_keeps_values_on_one_line_and_cuts_long_ones() {
        let record = |key: &str, value: &str| api::types::KvRecord {
            key: key.to_owned(),
            value: value.to_owned(),
            revision: 7,
            create_revision: 7,
            version: 1,
        };
        let list = KvList {
            revision: 9,
            records: vec![
                record("site/motd", "line one\nline two"),
                record("site/big", &"x".repeat(100)),
            ],
            more: true,
        };
        let text = kv_list(&list);
        assert!(
            text.starts_with(
                "KEY        REVISION  VALUE\nsite/motd  7         line one\\nline two\n"
            ),
            "{text}"
        );
        assert!(
            text.contains(&format!("site/big   7         {}...\n", "x".repeat(60))),
            "{text}"
        );
        assert!(text.ends_with("(more keys match: raise --limit or narrow the prefix)\n"));
    }

    #[test]
    fn watch_lines_name_the_revision_the_change_and_the_key() {
        let put = KvEvent {
            revision: 12,
            key: "a b".to_owned(),
            kind: KvEventKind::Put,
            value: Some("v".to_owned()),
        };
        assert_eq!(kv_event(&put), "12  put     a b  v\n");
        let del = KvEvent {
            revision: 13,
            key: "a b".to_owned(),
            kind: KvEventKind::Delete,
            value: None,
        };
        assert_eq!(kv_event(&del), "13  delete  a b\n");
    }

    #[test]
    fn cluster_status_heads_the_member_table_with_leader_and_term() {
        let member = |name: &str, role, lag, contact| api::types::MemberStatus {
            name: name.to_owned(),
            id: 1,
            address: format!("{name}:7443"),
            peer_address: format!("{name}:7444"),
            role,
            state: MemberState::Ready,
            since: None,
            domain: None,
            matched: None,
            lag,
            last_contact_ms: contact,
        };
        let status = ClusterStatus {
            name: "lab".to_owned(),
            answered_by: "n1".to_owned(),
            leader: Some("n1".to_owned()),
            term: 4,
            commit: 120,
            applied: 119,
            members: vec![
                member("n1", MemberRole::Voter, Some(0), None),
                member("n2", MemberRole::Learner, Some(3), Some(1500)),
            ],
        };
        let text = cluster_status(&status);
        assert!(
            text.starts_with(
                "cluster lab: leader n1, term 4, commit 120, applied 119 (answered by n1)\n\nNAME  "
            ),
            "{text}"
        );
        assert!(
            text.contains("n1 *  n1:7443  voter    ready  0    -"),
            "{text}"
        );
        assert!(
            text.contains("n2    n2:7443  learner  ready  3    1s"),
            "{text}"
        );
    }

    #[test]
    fn a_created_token_is_printed_with_its_join_command() {
        let token = CreatedToken {
            token: "abcdef.0123456789abcdef".to_owned(),
            id: "abcdef".to_owned(),
            ca_hash: "sha256:00".to_owned(),
            expires_at: Timestamp::from_unix(1_800_000_000).expect("ts"),
            uses: None,
            join_command: "cairn node join --token abcdef.0123456789abcdef".to_owned(),
        };
        let text = created_token(&token);
        assert!(
            text.starts_with("TOKEN    abcdef.0123456789abcdef\n"),
            "{text}"
        );
        assert!(text.contains("USES     unlimited\n"), "{text}");
        assert!(
            text.ends_with("\n  cairn node join --token abcdef.0123456789abcdef\n"),
            "{text}"
        );
    }

    #[test]
    fn contexts_mark_the_current_one() {
        let report = ContextsReport {
            current_context: Some("b".to_owned()),
            contexts: vec![
                ContextSummary {
                    name: "a".to_owned(),
                    endpoints: vec!["10.0.0.1:7443".to_owned()],
                    cluster: None,
                    user: None,
                    role: None,
                },
                ContextSummary {
                    name: "b".to_owned(),
                    endpoints: vec!["10.0.0.2:7443".to_owned()],
                    cluster: Some("lab".to_owned()),
                    user: Some("admin".to_owned()),
                    role: Some(api::Role::Admin),
                },
            ],
        };
        let text = contexts(&report);
        assert!(text.contains("\n         a     10.0.0.1:7443"), "{text}");
        assert!(
            text.contains("\n*        b     10.0.0.2:7443  lab      admin  admin"),
            "{text}"
        );
    }
}
