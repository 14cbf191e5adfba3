//! The node API and the `cairn` client end to end, on the real image.
//!
//! One VM walks the whole operator story of a fresh node: its console
//! prints a setup token and a certificate fingerprint; a wrong token is
//! refused (and the console says so); `cairn cluster init` with the right
//! one makes it a one-node cluster and leaves an admin credential in a
//! private config file; `node info` and `node logs` answer over mTLS; a
//! changed hostname is applied (after a dry run); `node reboot --wait`
//! brings it back with the same CA, the same node key and the applied
//! hostname, with the previous boot's log still readable; `node shutdown`
//! powers it off cleanly.
//!
//! It is one test because each step needs the state the previous one left
//! (and a boot costs 15-25 s under TCG). Every check names the serial
//! console log and the client transcript in its failure message.
//!
//! Run: `cargo test -p qemu-tests --test api` as root (see docs/testing.md).

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use qemu_tests::console::{
    API_POWEROFF, API_REBOOT, MAINTENANCE_FINGERPRINT, SETUP_TOKEN, SETUP_TOKEN_REFUSED, capture,
};
use qemu_tests::scenario::Scenario;
use qemu_tests::{Cli, Image, Network, NetworkConfig, OrPanic, Vm, VmSpec, timeout};
use serde_json::Value;

/// One guest booting alone under TCG takes 15-25 s; the rest is headroom.
const BOOT: Duration = Duration::from_secs(180);
/// One client call that is not waiting on a reboot: the client's own
/// request limit is 60 s.
const CALL: Duration = Duration::from_secs(90);
/// `node reboot --wait`: an orderly stop plus a boot.
const REBOOT: Duration = Duration::from_secs(300);
/// From `node shutdown` to QEMU's exit: the client-side delay, the
/// orderly stop and the power-off.
const POWEROFF: Duration = Duration::from_secs(60);
/// For a change to show in `node info` after the node accepted it.
const SETTLE: Duration = Duration::from_secs(30);
/// For cairnd to reissue its node certificate for a new host name: it
/// checks once a minute.
const RENEWAL: Duration = Duration::from_secs(120);

const NEW_HOSTNAME: &str = "cairn-api-renamed";

/// The VM, the client bound to its network, and what every failure message
/// must point to.
struct Node<'n> {
    vm: Vm<'n>,
    cli: Cli<'n>,
    ip: std::net::Ipv4Addr,
}

impl Scenario for Node<'_> {
    fn cli(&self) -> &Cli<'_> {
        &self.cli
    }

    /// Fails the test with `what`, the console log path and tail, and the
    /// client transcript path.
    #[track_caller]
    fn fail(&self, what: &str) -> ! {
        panic!(
            "{what}\nserial console: {}\nclient transcript: {}{}",
            self.vm.console_path().display(),
            self.cli.transcript_path().display(),
            self.vm.failure_context()
        )
    }
}

impl Node<'_> {
    #[track_caller]
    fn node_info(&self) -> Value {
        self.cairn_json(&["node", "info", "-o", "json"], CALL)
    }

    /// `node logs -o json [--boot N]`: NDJSON log entries.
    #[track_caller]
    fn logs(&self, boot: &str) -> Vec<Value> {
        let out = self.cairn_ok(&["node", "logs", "--boot", boot, "-o", "json"], CALL);
        match out.ndjson() {
            Ok(entries) if !entries.is_empty() => entries,
            Ok(_) => self.fail(&format!(
                "the log of boot {boot} is empty\n{}",
                out.describe()
            )),
            Err(e) => self.fail(&format!("a log line is not JSON ({e})\n{}", out.describe())),
        }
    }

    /// The fingerprint of the certificate with `purpose` in `node info`.
    #[track_caller]
    fn certificate(&self, info: &Value, purpose: &str) -> String {
        self.text(self.certificate_entry(info, purpose), "/fingerprint")
    }

    #[track_caller]
    fn certificate_entry<'v>(&self, info: &'v Value, purpose: &str) -> &'v Value {
        let found = info
            .get("certificates")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .find(|c| c.get("purpose").and_then(Value::as_str) == Some(purpose));
        match found {
            Some(cert) => cert,
            None => self.fail(&format!(
                "node info lists no `{purpose}` certificate: {info}"
            )),
        }
    }

    /// Polls `node info` until the node certificate is issued to `subject`.
    #[track_caller]
    fn wait_for_node_certificate(&self, subject: &str) -> Value {
        let start = std::time::Instant::now();
        loop {
            let info = self.node_info();
            if self.text(self.certificate_entry(&info, "node"), "/subject") == subject {
                return info;
            }
            if start.elapsed() > timeout(RENEWAL) {
                self.fail(&format!(
                    "the node certificate was not reissued for {subject} within {:?}: {info}",
                    start.elapsed()
                ));
            }
            std::thread::sleep(Duration::from_secs(2));
        }
    }

    /// Polls `node info` until `name` is `expected`.
    #[track_caller]
    fn wait_for_name(&self, expected: &str) -> Value {
        let start = std::time::Instant::now();
        loop {
            let info = self.node_info();
            if info.get("name").and_then(Value::as_str) == Some(expected) {
                return info;
            }
            if start.elapsed() > timeout(SETTLE) {
                self.fail(&format!(
                    "node info still names the node {} {:?} after applying hostname {expected}",
                    info.get("name").unwrap_or(&Value::Null),
                    start.elapsed()
                ));
            }
            std::thread::sleep(Duration::from_secs(1));
        }
    }
}

/// The sources (`init`, `cairnd`) and boot ids seen in log entries.
fn sources_and_boots(entries: &[Value]) -> (Vec<String>, Vec<String>) {
    let mut sources = Vec::new();
    let mut boots = Vec::new();
    for entry in entries {
        for (key, into) in [("source", &mut sources), ("boot_id", &mut boots)] {
            if let Some(v) = entry.get(key).and_then(Value::as_str)
                && !into.iter().any(|s| s == v)
            {
                into.push(v.to_owned());
            }
        }
    }
    (sources, boots)
}

#[test]
fn a_fresh_node_is_bootstrapped_managed_rebooted_and_powered_off_with_the_cli() {
    qemu_tests::tools::check_host().or_panic("the host cannot run VM scenarios");
    let image = Image::shared().or_panic("the Cairn image is required");
    let net = Network::start(&NetworkConfig::new(
        "a_fresh_node_is_bootstrapped_managed_rebooted_and_powered_off_with_the_cli",
    ))
    .or_panic("starting the private network");
    let cli = Cli::new(&net, image).or_panic("the image's cairn client");
    // The qcow2 overlay keeps STATE across the guest's reboot, and the
    // reboot must restart the machine rather than end QEMU.
    let spec = VmSpec::virtio_qcow2("api", image).allowing_reboot();
    let mut vm = Vm::start(&net, spec).or_panic("starting the VM");

    // --- maintenance mode: the console tells the operator what to type ---
    let token_line = vm
        .wait_for_console(SETUP_TOKEN, timeout(BOOT))
        .or_panic("cairnd never printed a setup token");
    let fp_line = vm
        .wait_for_console(MAINTENANCE_FINGERPRINT, timeout(BOOT))
        .or_panic("cairnd never printed its certificate fingerprint");
    let ip = vm
        .wait_for_lease(timeout(BOOT))
        .or_panic("the VM never got a DHCP lease");
    let mut node = Node { vm, cli, ip };
    let token = capture(SETUP_TOKEN, &token_line)
        .unwrap_or_else(|| node.fail(&format!("no token in `{token_line}`")));
    let fingerprint = capture(MAINTENANCE_FINGERPRINT, &fp_line)
        .unwrap_or_else(|| node.fail(&format!("no fingerprint in `{fp_line}`")));
    let endpoint = format!("{}:7443", node.ip);

    // --- a wrong setup token is refused, in one sentence, and logged ---
    let before = node.vm.console_len();
    let wrong = format!("{token}-wrong");
    let refused = node.cairn(
        &[
            "cluster",
            "init",
            "--endpoint",
            &endpoint,
            "--setup-token",
            &wrong,
            "--fingerprint",
            &fingerprint,
        ],
        CALL,
    );
    node.check(refused.code() == Some(5), || {
        format!(
            "a wrong setup token should exit 5 (permission denied):\n{}",
            refused.describe()
        )
    });
    let sentence = refused.stderr.trim();
    node.check(
        sentence.lines().count() == 1
            && sentence.starts_with("cairn: ")
            && sentence.contains("setup token is wrong"),
        || {
            format!(
                "a wrong setup token should be one sentence naming it:\n{}",
                refused.describe()
            )
        },
    );
    node.check(!node.cli.config_path().exists(), || {
        "a refused bootstrap wrote a client config".to_owned()
    });
    node.vm
        .wait_for_console_sequence_from(before, &[SETUP_TOKEN_REFUSED], timeout(CALL))
        .or_panic("the console does not show the refused setup token");

    // --- bootstrap with the token and the pinned fingerprint ---
    let boot = node.cairn_json(
        &[
            "cluster",
            "init",
            "--endpoint",
            &endpoint,
            "--setup-token",
            &token,
            "--fingerprint",
            &fingerprint,
            "-o",
            "json",
        ],
        CALL,
    );
    let ca_fingerprint = node.text(&boot, "/admin/ca_fingerprint");
    let mode = std::fs::metadata(node.cli.config_path())
        .map(|m| m.permissions().mode() & 0o777)
        .unwrap_or_else(|e| node.fail(&format!("no client config after cluster init: {e}")));
    node.check(mode == 0o600, || {
        format!(
            "the client config {} has mode {mode:o}, not 600",
            node.cli.config_path().display()
        )
    });

    // --- node info over mTLS ---
    let info = node.node_info();
    let first_name = node.text(&info, "/name");
    node.check(!first_name.is_empty(), || format!("empty name: {info}"));
    node.check(
        node.text(&info, "/version") == env!("CARGO_PKG_VERSION"),
        || {
            format!(
                "node info version is not {}: {info}",
                env!("CARGO_PKG_VERSION")
            )
        },
    );
    let prefix = format!("{}/", node.ip);
    let has_ip = info
        .get("addresses")
        .and_then(Value::as_array)
        .is_some_and(|a| {
            a.iter()
                .any(|x| x.as_str().is_some_and(|s| s.starts_with(&prefix)))
        });
    node.check(has_ip, || {
        format!("node info addresses lack {}: {info}", node.ip)
    });
    node.check(info.get("uptime_s").is_some_and(Value::is_u64), || {
        format!("node info has no uptime_s: {info}")
    });
    // The boot loader fields are checked at the very end (see there).
    let first_info = info.clone();
    node.check(
        node.text(&info, "/cluster/ca_fingerprint") == ca_fingerprint,
        || {
            format!(
                "node info's CA is not the one cluster init returned ({ca_fingerprint}): {info}"
            )
        },
    );
    node.check(
        node.certificate(&info, "cluster-ca") == ca_fingerprint,
        || format!("the cluster-ca certificate is not {ca_fingerprint}: {info}"),
    );
    let first_boot = node.text(&info, "/boot_id");

    // --- the system log holds both init and cairnd ---
    let entries = node.logs("0");
    let (sources, boots) = sources_and_boots(&entries);
    node.check(
        sources.iter().any(|s| s == "init") && sources.iter().any(|s| s == "cairnd"),
        || format!("node logs sources are {sources:?}, want init and cairnd"),
    );
    node.check(boots == [first_boot.clone()], || {
        format!("node logs --boot 0 spans boots {boots:?}, want [{first_boot}]")
    });

    // --- a changed hostname: dry run first, then applied ---
    let config = node.cli.config_path().with_file_name("node.toml");
    std::fs::write(&config, format!("[node]\nhostname = \"{NEW_HOSTNAME}\"\n"))
        .or_panic("writing the machine config");
    let config_arg = config.to_string_lossy().into_owned();
    let dry = node.cairn_json(
        &[
            "node",
            "config",
            "apply",
            "--dry-run",
            &config_arg,
            "-o",
            "json",
        ],
        CALL,
    );
    node.check(
        dry.get("applied") == Some(&Value::Bool(false))
            && dry.get("dry_run") == Some(&Value::Bool(true))
            && dry
                .get("changed")
                .and_then(Value::as_array)
                .is_some_and(|c| c.iter().any(|s| s == "node")),
        || format!("the dry run should report `node` changed and nothing applied: {dry}"),
    );
    let still = node.node_info();
    node.check(node.text(&still, "/name") == first_name, || {
        format!("a dry run changed the name: {still}")
    });
    let applied = node.cairn_json(
        &["node", "config", "apply", &config_arg, "-o", "json"],
        CALL,
    );
    node.check(applied.get("applied") == Some(&Value::Bool(true)), || {
        format!("the config was not applied: {applied}")
    });
    node.wait_for_name(NEW_HOSTNAME);
    // The node certificate names the host, so cairnd reissues it (same CA)
    // for the new name; that one must then survive the reboot.
    let renamed = node.wait_for_node_certificate(NEW_HOSTNAME);
    node.check(
        node.text(&renamed, "/cluster/ca_fingerprint") == ca_fingerprint,
        || format!("the renamed node's CA changed (was {ca_fingerprint}): {renamed}"),
    );
    let node_cert = node.certificate(&renamed, "node");

    // --- reboot: same CA, same node key, same hostname, old log kept ---
    let before = node.vm.console_len();
    let rebooted = node.cairn_json(
        &["node", "reboot", "--wait", "--timeout", "10m", "-o", "json"],
        REBOOT,
    );
    node.check(
        node.text(&rebooted, "/previous_boot_id") == first_boot
            && node.text(&rebooted, "/boot_id") != first_boot,
        || format!("reboot --wait did not see a new boot after {first_boot}: {rebooted}"),
    );
    node.vm
        .wait_for_console_sequence_from(before, &API_REBOOT, Duration::ZERO)
        .or_panic("the console does not show the orderly reboot");
    let console = node.vm.console_from(before);
    node.check(!console.contains("cairnd: setup token:"), || {
        "after the reboot the node is back in maintenance mode".to_owned()
    });
    let info = node.wait_for_name(NEW_HOSTNAME);
    let second_boot = node.text(&info, "/boot_id");
    node.check(second_boot != first_boot, || {
        format!("boot_id did not change across the reboot: {info}")
    });
    node.check(
        node.text(&info, "/cluster/ca_fingerprint") == ca_fingerprint,
        || format!("the cluster CA changed across the reboot (was {ca_fingerprint}): {info}"),
    );
    node.check(node.certificate(&info, "node") == node_cert, || {
        format!("the node certificate changed across the reboot (was {node_cert}): {info}")
    });
    let previous = node.logs("-1");
    let (sources, boots) = sources_and_boots(&previous);
    node.check(boots == [first_boot.clone()], || {
        format!("node logs --boot -1 spans boots {boots:?}, want [{first_boot}]")
    });
    node.check(
        sources.iter().any(|s| s == "init") && sources.iter().any(|s| s == "cairnd"),
        || format!("the previous boot's log has sources {sources:?}, want init and cairnd"),
    );
    node.check(
        previous.iter().any(|e| {
            e.get("message")
                .and_then(Value::as_str)
                .is_some_and(|m| m.contains("reboot requested"))
        }),
        || "the previous boot's log does not end with the reboot request".to_owned(),
    );

    // --- shutdown: QEMU exits by itself after the orderly path ---
    let before = node.vm.console_len();
    let off = node.cairn_json(&["node", "shutdown", "-o", "json"], CALL);
    node.check(
        off.get("action").and_then(Value::as_str) == Some("poweroff"),
        || format!("shutdown answered {off}"),
    );
    let status = node
        .vm
        .wait_for_exit(timeout(POWEROFF))
        .or_panic("QEMU did not exit after `cairn node shutdown`");
    node.vm
        .wait_for_console_sequence_from(before, &API_POWEROFF, Duration::ZERO)
        .or_panic("the console does not show the orderly poweroff");
    node.check(status.success(), || {
        format!("QEMU exited with {status} after a clean poweroff")
    });

    // What systemd-boot reported (through cairn-init's efivarfs reading)
    // is checked last, so that a broken loader report fails the test
    // without hiding whether the rest of the walk works.
    let expected_entry = format!("cairn-{}.conf", env!("CARGO_PKG_VERSION"));
    node.check(
        node.text(&first_info, "/boot/entry") == expected_entry
            && node.text(&first_info, "/boot/counter") != "unknown"
            && !node.text(&first_info, "/boot/loader").is_empty(),
        || {
            format!(
                "node info does not report systemd-boot's entry {expected_entry}, its counter and the loader: {}",
                first_info.get("boot").unwrap_or(&Value::Null)
            )
        },
    );
}
