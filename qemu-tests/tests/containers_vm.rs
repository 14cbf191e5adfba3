//! Containers on the real image: images built on the host from Debian
//! packages with `cairn-image oci from-debs` are imported into a node over
//! the API and run as supervised containers, driven only by the `cairn`
//! client.
//!
//! One test walks the operator story in order (a boot costs 15-25 s under
//! TCG, and each step needs what the previous one left):
//!
//! 1. **Baked and offline images.** The busybox image baked into the
//!    test image (`cairn-image build --bake-image`) is in the store from
//!    the first start; `cairn image import` of an oci-archive adds a Redis
//!    image (no registry, no internet).
//! 2. **Run.** `cairn ctr run redis ... --restart always --health-tcp
//!    6379` runs `redis-server`; `ctr list -o json` shows it running and,
//!    once its probe passes, healthy; a Redis `PING` from the network is
//!    answered; `ctr logs` shows Redis's own start-up lines; `ctr exec` runs
//!    `redis-cli ping` inside it (exit 0) and passes a failing command's
//!    exit code on.
//! 3. **Limits and restarts.** A busybox `dd bs=64M` under a 16 MiB memory
//!    limit is killed by the kernel's OOM killer; the on-failure:2 policy
//!    runs it twice more and `ctr inspect` records `oom_killed`.
//! 4. **Log rotation.** A container printing 3,000 lines under a 4 KiB
//!    log size keeps only the newest lines (the first are rotated away),
//!    and `ctr logs` still ends with the last one.
//! 5. **Agent restart.** `cairn node restart-agent`: cairnd exits and
//!    cairn-init starts a new one; Redis keeps running with the same PID
//!    and no restart, the new agent re-attaches (list, inspect, exec work)
//!    and health is reported again.
//! 6. **Stop, start, remove.** `ctr stop` ends Redis (PING refused);
//!    `ctr start` brings it back; `ctr rm` of a running container is
//!    refused (exit 7) and `ctr rm --force` removes it; a new container
//!    with the same name then starts, so nothing of the old one was left
//!    in its way (mount, cgroup, runtime state).
//! 7. **Reboot.** After `node reboot --wait`, the `--restart always`
//!    container runs again by itself.
//!
//! Run: `cargo test -p qemu-tests --test containers_vm` as root (see
//! docs/testing.md).

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

use qemu_tests::scenario::{Maintenance, Scenario};
use qemu_tests::{Cli, CliOutput, Image, Network, NetworkConfig, OrPanic, Vm, VmSpec, timeout};
use serde_json::Value;

/// One guest booting alone under TCG takes 15-25 s; the rest is headroom.
const BOOT: Duration = Duration::from_secs(180);
/// One client call: the client's own request limit is 60 s.
const CALL: Duration = Duration::from_secs(90);
/// Importing the bundle (tens of MB, unpacked on an emulated disk).
const IMPORT: Duration = Duration::from_secs(600);
/// A container's state to change as asked (start-up under TCG included).
const SETTLE: Duration = Duration::from_secs(120);
/// `node reboot --wait`: an orderly stop plus a boot.
const REBOOT: Duration = Duration::from_secs(300);

const REDIS_REF: &str = "redis:test";
/// Baked into the shared test image, in the store from the first start.
const BUSYBOX_REF: &str = qemu_tests::image::BAKED_BUSYBOX;

struct Node<'n> {
    vm: Vm<'n>,
    net: &'n Network,
    cli: Cli<'n>,
    ip: Ipv4Addr,
}

impl Scenario for Node<'_> {
    fn cli(&self) -> &Cli<'_> {
        &self.cli
    }

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
    /// `ctr list -o json`: the bare array of containers.
    #[track_caller]
    fn containers(&self) -> Vec<Value> {
        let out = self.cairn_ok(&["ctr", "list", "-o", "json"], CALL);
        match out.json() {
            Ok(Value::Array(items)) => items,
            other => self.fail(&format!(
                "ctr list -o json is not an array: {other:?}\n{}",
                out.describe()
            )),
        }
    }

    #[track_caller]
    fn inspect(&self, name: &str) -> Value {
        self.cairn_json(&["ctr", "inspect", name, "-o", "json"], CALL)
    }

    /// Waits until `ctr inspect NAME` satisfies `ok`, and returns it.
    #[track_caller]
    fn wait_for_container(&self, name: &str, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
        self.wait_for(what, SETTLE, || {
            let out = self.cairn(&["ctr", "inspect", name, "-o", "json"], CALL);
            match out.json() {
                Ok(value) if ok(&value) => Ok(value),
                Ok(value) => Err(value.to_string()),
                Err(_) => Err(out.describe()),
            }
        })
    }

    /// Sends Redis's inline `PING` from the test network; `+PONG` or the
    /// error.
    fn redis_ping(&self) -> Result<String, String> {
        let addr = SocketAddr::from((self.ip, 6379));
        self.net
            .run_in(move || {
                let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
                    .map_err(|e| format!("connect {addr}: {e}"))?;
                stream
                    .set_read_timeout(Some(Duration::from_secs(5)))
                    .map_err(|e| e.to_string())?;
                stream
                    .write_all(b"PING\r\n")
                    .map_err(|e| format!("write: {e}"))?;
                let mut buf = [0u8; 64];
                let n = stream.read(&mut buf).map_err(|e| format!("read: {e}"))?;
                Ok(String::from_utf8_lossy(&buf[..n]).trim().to_owned())
            })
            .map_err(|e| qemu_tests::report(&e))?
    }
}

fn field<'v>(value: &'v Value, pointer: &str) -> &'v Value {
    value.pointer(pointer).unwrap_or(&Value::Null)
}

/// Builds the offline bundle: an oci-archive with Redis, made from Debian
/// packages by our own image builder.
fn build_bundle(dir: &Path) -> std::path::PathBuf {
    let layout = dir.join("layout");
    let bundle = dir.join("bundle.tar");
    let layout_arg = layout.to_str().expect("temp paths are UTF-8");
    cairn_image(&[
        "from-debs",
        "redis-server",
        "--ref",
        REDIS_REF,
        "--out",
        layout_arg,
        "--entrypoint",
        "/usr/bin/redis-server",
    ]);
    cairn_image(&[
        "archive",
        layout_arg,
        bundle.to_str().expect("temp paths are UTF-8"),
    ]);
    bundle
}

fn cairn_image(args: &[&str]) {
    qemu_tests::image::run_oci(args).or_panic("building the test images");
}

fn ok_line(out: &CliOutput) -> String {
    out.stdout.trim().to_owned()
}

#[test]
fn containers_run_supervised_and_survive_an_agent_restart_on_a_real_node() {
    qemu_tests::tools::check_host().or_panic("the host cannot run VM scenarios");
    let image = Image::shared().or_panic("the Cairn image is required");
    let work = tempfile::tempdir().or_panic("a scratch directory");
    let bundle = build_bundle(work.path());
    let net = Network::start(&NetworkConfig::new(
        "containers_run_supervised_and_survive_an_agent_restart_on_a_real_node",
    ))
    .or_panic("starting the private network");
    let cli = Cli::new(&net, image).or_panic("the image's cairn client");
    let spec = VmSpec::virtio_qcow2("containers", image).allowing_reboot();
    let mut vm = Vm::start(&net, spec).or_panic("starting the VM");
    let maintenance =
        Maintenance::wait(&mut vm, BOOT).or_panic("the VM never reached maintenance mode");
    let mut node = Node {
        vm,
        net: &net,
        cli,
        ip: maintenance.ip,
    };
    node.cairn_ok(
        &[
            "cluster",
            "init",
            "--endpoint",
            &maintenance.endpoint(),
            "--setup-token",
            &maintenance.token,
            "--fingerprint",
            &maintenance.fingerprint,
        ],
        CALL,
    );

    // --- 1. the baked image, then the offline bundle ---
    node.wait_for("the baked busybox image in the store", SETTLE, || {
        let out = node.cairn(&["image", "list", "-o", "json"], CALL);
        let refs: Vec<String> = out
            .json()
            .ok()
            .and_then(|v| v["images"].as_array().cloned())
            .unwrap_or_default()
            .iter()
            .filter_map(|i| i["reference"].as_str().map(str::to_owned))
            .collect();
        if refs.iter().any(|r| r == BUSYBOX_REF) {
            Ok(())
        } else {
            Err(out.describe())
        }
    });
    let imported = node.cairn_json(
        &[
            "image",
            "import",
            bundle.to_str().expect("temp paths are UTF-8"),
            "-o",
            "json",
        ],
        IMPORT,
    );
    let refs: Vec<&str> = field(&imported, "/images")
        .as_array()
        .map(|a| a.iter().filter_map(|i| i["reference"].as_str()).collect())
        .unwrap_or_default();
    node.check(refs == [REDIS_REF], || {
        format!("the import should name the Redis image: {imported}")
    });

    // --- 2. Redis, supervised and probed ---
    node.cairn_ok(
        &[
            "ctr",
            "run",
            "redis",
            REDIS_REF,
            "--restart",
            "always",
            "--memory",
            "256M",
            "--health-tcp",
            "6379",
            "--health-interval",
            "1s",
            "--",
            "--bind",
            "0.0.0.0",
            "--port",
            "6379",
            "--protected-mode",
            "no",
            "--save",
            "",
        ],
        SETTLE,
    );
    node.wait_for("Redis to be listed running and healthy", SETTLE, || {
        let list = node.containers();
        match list.iter().find(|c| c["name"] == "redis") {
            Some(r)
                if r["state"] == "running"
                    && r["health"] == "healthy"
                    && r["image"] == REDIS_REF =>
            {
                Ok(())
            }
            _ => Err(Value::Array(list).to_string()),
        }
    });
    let pong = node.redis_ping();
    node.check(pong.as_deref() == Ok("+PONG"), || {
        format!("Redis should answer PING from the network: {pong:?}")
    });
    let logs = node.cairn_ok(&["ctr", "logs", "redis"], CALL);
    node.check(logs.stdout.contains("Ready to accept connections"), || {
        format!(
            "ctr logs should show Redis's start-up:\n{}",
            logs.describe()
        )
    });
    let exec = node.cairn_ok(
        &["ctr", "exec", "redis", "--", "/usr/bin/redis-cli", "ping"],
        CALL,
    );
    node.check(ok_line(&exec) == "PONG", || {
        format!(
            "exec redis-cli ping should print PONG:\n{}",
            exec.describe()
        )
    });
    let failing = node.cairn(
        &[
            "ctr",
            "exec",
            "redis",
            "--",
            "/usr/bin/redis-cli",
            "-p",
            "1",
            "ping",
        ],
        CALL,
    );
    node.check(failing.code() == Some(1), || {
        format!(
            "exec should pass a failing command's exit code on:\n{}",
            failing.describe()
        )
    });
    let redis = node.inspect("redis");
    let redis_pid = field(&redis, "/pid")
        .as_u64()
        .unwrap_or_else(|| node.fail(&format!("a running container should show its pid: {redis}")));

    // --- 3. the memory limit kills, the restart policy brings it back ---
    node.cairn_ok(
        &[
            "ctr",
            "run",
            "hog",
            BUSYBOX_REF,
            "--memory",
            "16M",
            "--restart",
            "on-failure:2",
            "--",
            "dd",
            "if=/dev/zero",
            "of=/dev/null",
            "bs=64M",
            "count=1",
        ],
        SETTLE,
    );
    let hog = node.wait_for_container("hog", "the hog to be OOM-killed and retried twice", |c| {
        c["state"] == "exited" && c["restarts"] == 2
    });
    node.check(field(&hog, "/last_exit/oom_killed") == true, || {
        format!("the hog's last exit should record the OOM kill: {hog}")
    });

    // --- 4. logs rotate by size ---
    node.cairn_ok(
        &[
            "ctr",
            "run",
            "chatty",
            BUSYBOX_REF,
            "--log-max-size",
            "4K",
            "--log-max-files",
            "2",
            "--",
            "sh",
            "-c",
            "i=0; while [ $i -lt 3000 ]; do echo line-$i; i=$((i+1)); done; sleep 3600",
        ],
        SETTLE,
    );
    let chatty = node.wait_for("chatty's last line in its log", SETTLE, || {
        let out = node.cairn(&["ctr", "logs", "chatty"], CALL);
        if out.stdout.contains("line-2999\n") {
            Ok(out)
        } else {
            Err(out.describe())
        }
    });
    let lines: Vec<&str> = chatty.stdout.lines().collect();
    node.check(
        lines.last() == Some(&"line-2999") && !lines.contains(&"line-0") && lines.len() < 3000,
        || {
            format!(
                "rotation should keep only the newest lines ({} kept, first {:?})",
                lines.len(),
                lines.first()
            )
        },
    );
    let tail = node.cairn_ok(&["ctr", "logs", "chatty", "--tail", "2"], CALL);
    node.check(tail.stdout == "line-2998\nline-2999\n", || {
        format!(
            "--tail 2 should give the last two lines:\n{}",
            tail.describe()
        )
    });

    // --- 5. the agent restarts; the containers do not ---
    let before = node.vm.console_len();
    node.cairn_ok(&["node", "restart-agent"], CALL);
    node.vm
        .wait_for_console_sequence_from(before, &["cairnd starting"], timeout(SETTLE))
        .or_panic("cairn-init should start a new cairnd");
    let redis = node.wait_for_container("redis", "the new agent to re-attach to Redis", |c| {
        c["state"] == "running"
    });
    node.check(
        field(&redis, "/pid").as_u64() == Some(redis_pid) && field(&redis, "/restarts") == 0,
        || format!("Redis should have kept running through the agent restart (pid {redis_pid}): {redis}"),
    );
    node.wait_for_container("redis", "health to be reported again", |c| {
        field(c, "/health/status") == "healthy"
    });
    let pong = node.redis_ping();
    node.check(pong.as_deref() == Ok("+PONG"), || {
        format!("Redis should still answer after the agent restart: {pong:?}")
    });
    let exec = node.cairn_ok(
        &["ctr", "exec", "redis", "--", "/usr/bin/redis-cli", "ping"],
        CALL,
    );
    node.check(ok_line(&exec) == "PONG", || {
        format!(
            "exec should work through the new agent:\n{}",
            exec.describe()
        )
    });

    // --- 6. stop, start, remove, and the name is free again ---
    let stopped = node.cairn_json(&["ctr", "stop", "redis", "-o", "json"], SETTLE);
    node.check(stopped["state"] == "stopped", || {
        format!("ctr stop should leave Redis stopped: {stopped}")
    });
    let refused = node.redis_ping();
    node.check(refused.is_err(), || {
        format!("a stopped Redis should not answer: {refused:?}")
    });
    node.cairn_ok(&["ctr", "start", "redis"], SETTLE);
    node.wait_for("Redis to answer after ctr start", SETTLE, || {
        node.redis_ping()
            .and_then(|p| if p == "+PONG" { Ok(()) } else { Err(p) })
    });
    let running_rm = node.cairn(&["ctr", "rm", "redis"], CALL);
    node.check(running_rm.code() == Some(7), || {
        format!(
            "rm of a running container should be refused (exit 7):\n{}",
            running_rm.describe()
        )
    });
    for name in ["redis", "hog", "chatty"] {
        node.cairn_ok(&["ctr", "rm", "--force", name], SETTLE);
    }
    node.check(node.containers().is_empty(), || {
        "every container should be gone after rm".to_owned()
    });
    node.cairn_ok(
        &[
            "ctr",
            "run",
            "redis",
            REDIS_REF,
            "--restart",
            "always",
            "--",
            "--bind",
            "0.0.0.0",
            "--protected-mode",
            "no",
            "--save",
            "",
        ],
        SETTLE,
    );
    node.wait_for("the re-created Redis to answer", SETTLE, || {
        node.redis_ping()
            .and_then(|p| if p == "+PONG" { Ok(()) } else { Err(p) })
    });

    // --- 7. a reboot: the always-restarted container comes back ---
    node.cairn_ok(&["node", "reboot", "--wait"], REBOOT);
    node.wait_for("Redis to run again after the reboot", SETTLE, || {
        node.redis_ping()
            .and_then(|p| if p == "+PONG" { Ok(()) } else { Err(p) })
    });
    let after = node.inspect("redis");
    node.check(after["state"] == "running", || {
        format!("Redis should be running after the reboot: {after}")
    });
}
