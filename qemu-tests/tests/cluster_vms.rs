//! The Raft cluster on real (emulated) machines: four VMs from the same
//! image become one cluster with the `cairn` client, and keep their store
//! through power loss, resets, a partition and a dead voter.
//!
//! One test walks the operator story in order, because every step needs
//! the cluster the previous one left and a boot costs 15-25 s under TCG
//! (four guests booting at once on two cores take a few minutes):
//!
//! 1. **Join.** Node A is bootstrapped with `cairn cluster init`; a join
//!    token from `cairn cluster token create -o json`; B joins through A,
//!    C through B (any member admits), each with `cairn node join` pinning
//!    the new node's maintenance fingerprint and the cluster's `ca_hash`.
//!    B waits as a learner (the leader keeps the voter count odd); once C
//!    is in, `cluster status -o json` shows three ready voters and a
//!    leader. D
//!    joins through C and stays a learner (a stand-by) although it has
//!    caught up, because three voters is what the cluster wants. A value
//!    written through each member is read through every member.
//! 2. **Leader power loss.** The leader's QEMU is ended with QMP `quit`
//!    (no orderly stop, no leadership hand-over); the others elect a new
//!    leader and take writes; the machine is started again on the same
//!    disk and reads, through itself, what was written while it was off.
//! 3. **Hard reset during writes.** While a client writes through one
//!    member and records every acknowledged key, the leader gets QMP
//!    `system_reset`; once it is back, every acknowledged write is there,
//!    read through every member.
//! 4. **Minority partition.** QMP `set_link net0 off` cuts one voter off:
//!    writes and reads through it fail while the other members keep
//!    serving, and it never becomes leader on its own; after `set_link
//!    on` it reads what the majority wrote meanwhile and every member
//!    lists the same records.
//!    The client sits on the same bridge, so with the link down it cannot
//!    reach the cut-off node either; a second cut therefore moves one
//!    voter's tap to a bridge of its own (`Network::isolate`): the client
//!    still reaches it, and the node itself refuses writes and reads
//!    (exit 1, "the node failed to carry out ..."), never becomes leader,
//!    and converges after `Network::reconnect`.
//! 5. **Dead voter replaced.** The machine configs set `[cluster] grace =
//!    "20s"`. A voter (not the leader) is powered off for good: no sooner
//!    than the grace period, `cluster status` shows the stand-by as a
//!    voter and the dead one as a learner in state `lost`, and the store
//!    takes writes through the promoted node.
//!
//! The grace period is short, so a machine that is off or cut off for
//! longer (steps 2 to 4 take about that long) may be replaced by the
//! stand-by there too; those steps check only what must hold either way,
//! and each ends by waiting for a steady cluster (three ready voters, one
//! ready learner). Step 5 then picks its voter and stand-by from the
//! status it sees.
//!
//! Every failure names each VM's serial console log and the client
//! transcript (`cairn-cli.log`), with the console tails. Progress lines
//! with timings go to stderr (`--nocapture` shows them).
//!
//! Run: `cargo test -p qemu-tests --test cluster_vms` as root (see
//! docs/testing.md).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use qemu_tests::console::{INIT_STARTING, MAINTENANCE_FINGERPRINT, SETUP_TOKEN, capture};
use qemu_tests::scenario::{Scenario, consoles};
use qemu_tests::vm::NETDEV;
use qemu_tests::{Cli, CliOutput, Image, Network, NetworkConfig, OrPanic, Vm, VmSpec, timeout};
use serde_json::Value;

/// Four guests booting at once on two emulating cores.
const BOOT_FOUR: Duration = Duration::from_secs(600);
/// One guest booting again while three others keep the cluster going.
const BOOT_AGAIN: Duration = Duration::from_secs(360);
/// One client call: the client's own request limit is 60 s.
const CALL: Duration = Duration::from_secs(90);
/// `node join`: the client waits up to 3 minutes for admission.
const JOIN: Duration = Duration::from_secs(240);
/// Elections, promotions and catching up after a change, under TCG.
const SETTLE: Duration = Duration::from_secs(240);
/// The grace period the machine configs set.
const GRACE: Duration = Duration::from_secs(20);
/// From powering a voter off to seeing it replaced: the grace period plus
/// the leader's once-a-second look and a joint-consensus change.
const REPLACE: Duration = Duration::from_secs(240);
/// The leader promotes a learner this close to its log (the controller's
/// CATCH_UP_LAG), so a stand-by within it is held back by policy alone.
const CATCH_UP_LAG: u64 = 100;
/// How long the stand-by is watched staying a learner.
const STAND_BY_WATCH: Duration = Duration::from_secs(10);
/// Acknowledged writes wanted before the reset and again after it.
const WRITES_AROUND_RESET: usize = 5;

const MACHINE_CONFIG: &str =
    "# Written by qemu-tests/tests/cluster_vms.rs\n[cluster]\ngrace = \"20s\"\n";

/// One VM and what the test learned about it.
struct Machine<'n> {
    vm: Vm<'n>,
    ip: Ipv4Addr,
    /// The member name, once it is one.
    member: Option<String>,
}

impl Machine<'_> {
    fn endpoint(&self) -> String {
        format!("{}:7443", self.ip)
    }
}

/// The machines and the client; every failure message points to all
/// consoles and the transcript.
struct Cluster<'n> {
    machines: Vec<Machine<'n>>,
    cli: Cli<'n>,
    started: Instant,
}

impl Scenario for Cluster<'_> {
    fn cli(&self) -> &Cli<'_> {
        &self.cli
    }

    #[track_caller]
    fn fail(&self, what: &str) -> ! {
        let addresses: Vec<String> = self
            .machines
            .iter()
            .map(|m| format!("{} is {}", m.vm.name(), m.ip))
            .collect();
        panic!(
            "{what}\n{}\nclient transcript: {}\n{}",
            addresses.join(", "),
            self.cli.transcript_path().display(),
            consoles(self.machines.iter().map(|m| &m.vm))
        )
    }
}

impl Cluster<'_> {
    fn progress(&self, what: &str) {
        eprintln!(
            "cluster_vms: [{:>6.1?}] {what}",
            self.started.elapsed().as_secs_f64()
        );
    }

    fn put(&self, via: usize, key: &str, value: &str) -> CliOutput {
        let endpoint = self.machines[via].endpoint();
        self.cairn(&["-e", &endpoint, "kv", "put", key, value], CALL)
    }

    #[track_caller]
    fn put_ok(&self, via: usize, key: &str, value: &str) {
        let out = self.put(via, key, value);
        self.check(out.status.success(), || {
            format!(
                "a write through {} was refused:\n{}",
                self.machines[via].vm.name(),
                out.describe()
            )
        });
    }

    fn get(&self, via: usize, key: &str) -> CliOutput {
        let endpoint = self.machines[via].endpoint();
        self.cairn(&["-e", &endpoint, "kv", "get", key], CALL)
    }

    /// `kv get` through `via` must print exactly `value`.
    #[track_caller]
    fn get_is(&self, via: usize, key: &str, value: &str) {
        let out = self.get(via, key);
        self.check(
            out.status.success() && out.stdout.trim_end_matches('\n') == value,
            || {
                format!(
                    "{key} read through {} should be {value:?}:\n{}",
                    self.machines[via].vm.name(),
                    out.describe()
                )
            },
        );
    }

    /// Polls `kv get` through `via` until it prints `value`.
    #[track_caller]
    fn wait_for_value(&self, via: usize, key: &str, value: &str, limit: Duration) {
        let start = Instant::now();
        loop {
            let out = self.get(via, key);
            if out.status.success() && out.stdout.trim_end_matches('\n') == value {
                return;
            }
            if start.elapsed() > timeout(limit) {
                self.fail(&format!(
                    "{} never read {key} = {value:?} within {:?}; last attempt:\n{}",
                    self.machines[via].vm.name(),
                    start.elapsed(),
                    out.describe()
                ));
            }
            std::thread::sleep(Duration::from_secs(2));
        }
    }

    /// Every record under `prefix`, read through `via` (`kv list -o json`).
    #[track_caller]
    fn list(&self, via: usize, prefix: &str) -> BTreeMap<String, String> {
        let endpoint = self.machines[via].endpoint();
        let list = self.cairn_json(
            &[
                "-e", &endpoint, "kv", "list", prefix, "--limit", "1000", "-o", "json",
            ],
            CALL,
        );
        self.check(list.get("more") == Some(&Value::Bool(false)), || {
            format!("more than 1000 records under {prefix}: {list}")
        });
        let records = list
            .get("records")
            .and_then(Value::as_array)
            .unwrap_or_else(|| self.fail(&format!("kv list has no records array: {list}")));
        records
            .iter()
            .map(|r| (self.text(r, "/key"), self.text(r, "/value")))
            .collect()
    }

    /// Every record in `expected` is present with its value through `via`.
    #[track_caller]
    fn holds_all(&self, via: usize, prefix: &str, expected: &BTreeMap<String, String>) {
        let got = self.list(via, prefix);
        let missing: Vec<String> = expected
            .iter()
            .filter(|(k, v)| got.get(*k) != Some(*v))
            .map(|(k, v)| format!("{k} = {v:?} (read {:?})", got.get(k)))
            .collect();
        self.check(missing.is_empty(), || {
            format!(
                "{} of {} acknowledged writes under {prefix} are missing or wrong through {}: {}",
                missing.len(),
                expected.len(),
                self.machines[via].vm.name(),
                missing.join(", ")
            )
        });
    }

    /// `cluster status -o json` through `via`, or why it failed.
    fn status(&self, via: usize) -> Result<Value, String> {
        let endpoint = self.machines[via].endpoint();
        let out = self.cairn(&["-e", &endpoint, "cluster", "status", "-o", "json"], CALL);
        if !out.status.success() {
            return Err(out.describe());
        }
        match out.json() {
            Ok(value) if value.is_object() => Ok(value),
            _ => Err(format!("not one JSON object:\n{}", out.describe())),
        }
    }

    /// Polls `cluster status` through the machines in `via` (in turn) until
    /// `ready` accepts it; fails with the last answer and the reason.
    #[track_caller]
    fn wait_status(
        &self,
        via: &[usize],
        what: &str,
        limit: Duration,
        ready: impl Fn(&Value) -> Result<(), String>,
    ) -> Value {
        let start = Instant::now();
        let mut last = String::from("no answer yet");
        for turn in 0.. {
            let node = via[turn % via.len()];
            match self.status(node) {
                Ok(status) => match ready(&status) {
                    Ok(()) => return status,
                    Err(why) => {
                        last =
                            format!("through {}: {why}\n{status}", self.machines[node].vm.name());
                    }
                },
                Err(why) => last = format!("through {}: {why}", self.machines[node].vm.name()),
            }
            if start.elapsed() > timeout(limit) {
                break;
            }
            std::thread::sleep(Duration::from_secs(2));
        }
        self.fail(&format!(
            "cluster status never showed {what} within {:?}; last: {last}",
            start.elapsed()
        ))
    }

    /// The machine whose address the member named `name` has.
    #[track_caller]
    fn machine_of(&self, status: &Value, name: &str) -> usize {
        let address = members(status)
            .into_iter()
            .find(|m| field(m, "name") == name)
            .map(|m| field(m, "address").to_owned())
            .unwrap_or_else(|| self.fail(&format!("no member named {name} in {status}")));
        self.machines
            .iter()
            .position(|m| address == m.endpoint())
            .unwrap_or_else(|| {
                self.fail(&format!(
                    "member {name} has address {address}, which is no VM's"
                ))
            })
    }

    /// The leader's machine in `status`.
    #[track_caller]
    fn leader(&self, status: &Value) -> usize {
        let name = leader_name(status)
            .unwrap_or_else(|| self.fail(&format!("no leader in {status}")))
            .to_owned();
        self.machine_of(status, &name)
    }

    fn name(&self, i: usize) -> &str {
        self.machines[i].vm.name()
    }

    /// Every machine except `skip`, by index.
    fn others(&self, skip: &[usize]) -> Vec<usize> {
        (0..self.machines.len())
            .filter(|i| !skip.contains(i))
            .collect()
    }
}

/// Runs the client; an error is a sentence for the failure message.
fn run_cli(cli: &Cli<'_>, args: &[&str], limit: Duration) -> Result<CliOutput, String> {
    cli.run(args, timeout(limit))
        .map_err(|e| qemu_tests::report(&e))
}

fn members(status: &Value) -> Vec<&Value> {
    status
        .get("members")
        .and_then(Value::as_array)
        .map(|m| m.iter().collect())
        .unwrap_or_default()
}

fn field<'v>(member: &'v Value, key: &str) -> &'v str {
    member.get(key).and_then(Value::as_str).unwrap_or_default()
}

fn leader_name(status: &Value) -> Option<&str> {
    status
        .get("leader")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

fn member_named<'v>(status: &'v Value, name: &str) -> Result<&'v Value, String> {
    members(status)
        .into_iter()
        .find(|m| field(m, "name") == name)
        .ok_or_else(|| format!("no member {name}"))
}

/// Names of members with `role`.
fn with_role<'v>(status: &'v Value, role: &str) -> Vec<&'v str> {
    members(status)
        .into_iter()
        .filter(|m| field(m, "role") == role)
        .map(|m| field(m, "name"))
        .collect()
}

/// A leader, `count` members, three voters, every member ready.
fn steady(status: &Value, count: usize) -> Result<(), String> {
    if leader_name(status).is_none() {
        return Err("no leader".into());
    }
    let all = members(status);
    if all.len() != count {
        return Err(format!("{} members, want {count}", all.len()));
    }
    let voters = with_role(status, "voter").len();
    if voters != 3 {
        return Err(format!("{voters} voters, want 3"));
    }
    if let Some(m) = all.iter().find(|m| field(m, "state") != "ready") {
        return Err(format!("{} is {}", field(m, "name"), field(m, "state")));
    }
    Ok(())
}

/// Sets a stop flag when dropped, so a failing main thread still ends the
/// writer it started (a scoped thread is joined before the panic goes on).
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

#[test]
fn four_vms_form_a_cluster_and_survive_power_loss_resets_partitions_and_a_dead_voter() {
    qemu_tests::tools::check_host().or_panic("the host cannot run VM scenarios");
    let image = Image::shared().or_panic("the Cairn image is required");
    let net = Network::start(&NetworkConfig::new(
        "four_vms_form_a_cluster_and_survive_power_loss_resets_partitions_and_a_dead_voter",
    ))
    .or_panic("starting the private network");
    let cli = Cli::new(&net, image).or_panic("the image's cairn client");
    let config = net.log_dir().join("cluster.toml");
    std::fs::write(&config, MACHINE_CONFIG).or_panic("writing the machine config");

    // ================= 1. bootstrap, three voters, a stand-by =================
    let started = Instant::now();
    // The qcow2 overlay keeps STATE across a reset or a restart, and a
    // reset must restart the machine rather than end QEMU.
    let mut vms: Vec<Vm<'_>> = ["node-a", "node-b", "node-c", "node-d"]
        .into_iter()
        .map(|name| {
            let spec = VmSpec::virtio_qcow2(name, image)
                .allowing_reboot()
                .with_machine_config(&config);
            Vm::start(&net, spec).or_panic("starting a VM")
        })
        .collect();
    let mut secrets = Vec::new();
    for vm in &mut vms {
        let token = vm
            .wait_for_console(SETUP_TOKEN, timeout(BOOT_FOUR))
            .or_panic("cairnd never printed a setup token");
        let fingerprint = vm
            .wait_for_console(MAINTENANCE_FINGERPRINT, timeout(BOOT_FOUR))
            .or_panic("cairnd never printed its certificate fingerprint");
        let ip = vm
            .wait_for_lease(timeout(BOOT_FOUR))
            .or_panic("the VM never got a DHCP lease");
        secrets.push((token, fingerprint, ip));
    }
    let mut machines = Vec::new();
    let mut setup = Vec::new();
    for (vm, (token_line, fp_line, ip)) in vms.into_iter().zip(secrets) {
        let token = capture(SETUP_TOKEN, &token_line)
            .unwrap_or_else(|| panic!("no setup token in `{token_line}`"));
        let fingerprint = capture(MAINTENANCE_FINGERPRINT, &fp_line)
            .unwrap_or_else(|| panic!("no fingerprint in `{fp_line}`"));
        setup.push((token, fingerprint));
        machines.push(Machine {
            vm,
            ip,
            member: None,
        });
    }
    let mut cluster = Cluster {
        machines,
        cli,
        started,
    };
    cluster.progress("four VMs in maintenance mode");
    let (a, b, c, d) = (0, 1, 2, 3);

    let boot = cluster.cairn_json(
        &[
            "cluster",
            "init",
            "--endpoint",
            &cluster.machines[a].endpoint(),
            "--setup-token",
            &setup[a].0,
            "--fingerprint",
            &setup[a].1,
            "-o",
            "json",
        ],
        CALL,
    );
    let ca = cluster.text(&boot, "/admin/ca_fingerprint");
    cluster.progress("node-a bootstrapped");

    let created = cluster.cairn_json(
        &["cluster", "token", "create", "--ttl", "1h", "-o", "json"],
        CALL,
    );
    let join_token = cluster.text(&created, "/token");
    cluster.check(cluster.text(&created, "/ca_hash") == ca, || {
        format!("the token's ca_hash is not the CA cluster init returned ({ca}): {created}")
    });
    cluster.check(
        join_token
            .split_once('.')
            .is_some_and(|(id, secret)| !id.is_empty() && !secret.is_empty())
            && !cluster.text(&created, "/expires_at").is_empty(),
        || format!("the join token is not <id>.<secret> with an expiry: {created}"),
    );

    // Each new node joins through the member that joined before it; the
    // next one joins once the cluster has taken the previous one in.
    // The leader keeps the voter count odd: with two members the newcomer
    // waits as a learner, with three both newcomers vote.
    for (new, through, voters) in [(b, a, 1), (c, b, 3), (d, c, 3)] {
        let joined = cluster.cairn_json(
            &[
                "node",
                "join",
                "--endpoint",
                &cluster.machines[new].endpoint(),
                "--setup-token",
                &setup[new].0,
                "--fingerprint",
                &setup[new].1,
                "--cluster",
                &cluster.machines[through].endpoint(),
                "--token",
                &join_token,
                "--ca-hash",
                &ca,
                "-o",
                "json",
            ],
            JOIN,
        );
        let name = cluster.text(&joined, "/node_name");
        cluster.machines[new].member = Some(name.clone());
        cluster.progress(&format!(
            "{} joined through {} as {name}",
            cluster.name(new),
            cluster.name(through)
        ));
        let members_now = new + 1;
        cluster.wait_status(
            &[a],
            &format!("{members_now} ready members, {voters} of them voters"),
            SETTLE,
            |s| {
                member_named(s, &name)?;
                if leader_name(s).is_none() {
                    return Err("no leader".into());
                }
                let all = members(s);
                if all.len() != members_now {
                    return Err(format!("{} members", all.len()));
                }
                if let Some(m) = all.iter().find(|m| field(m, "state") != "ready") {
                    return Err(format!("{} is {}", field(m, "name"), field(m, "state")));
                }
                let v = with_role(s, "voter").len();
                if v == voters {
                    Ok(())
                } else {
                    Err(format!("{v} voters"))
                }
            },
        );
        cluster.progress(&format!(
            "{voters} voters, {members_now} members, all ready"
        ));
    }
    // Node A's name: the bootstrap member, the one not named by a join.
    let status = cluster.status(a).unwrap_or_else(|e| cluster.fail(&e));
    for i in 0..cluster.machines.len() {
        let endpoint = cluster.machines[i].endpoint();
        let found = members(&status)
            .into_iter()
            .find(|m| field(m, "address") == endpoint)
            .map(|m| field(m, "name").to_owned());
        cluster.check(found.is_some(), || {
            format!(
                "no member has {}'s address {endpoint}: {status}",
                cluster.name(i)
            )
        });
        if let Some(expected) = &cluster.machines[i].member {
            cluster.check(found.as_ref() == Some(expected), || {
                format!("{endpoint} is listed as {found:?}, but joined as {expected}: {status}")
            });
        }
        cluster.machines[i].member = found;
    }
    let stand_by = cluster.machines[d].member.clone().unwrap_or_default();

    // The stand-by has caught up (the leader reports its lag), so only the
    // wanted voter count keeps it a learner; it must stay one.
    cluster.wait_status(&[a, b, c, d], "node-d caught up", SETTLE, |s| {
        let m = member_named(s, &stand_by)?;
        match m.get("lag").and_then(Value::as_u64) {
            Some(lag) if lag <= CATCH_UP_LAG => Ok(()),
            other => Err(format!("node-d lag {other:?}")),
        }
    });
    let watch = Instant::now();
    let mut looks = 0;
    while watch.elapsed() < STAND_BY_WATCH {
        let s = cluster
            .status(looks % 4)
            .unwrap_or_else(|e| cluster.fail(&e));
        let role = member_named(&s, &stand_by)
            .map(|m| field(m, "role").to_owned())
            .unwrap_or_else(|e| cluster.fail(&e));
        cluster.check(role == "learner" && steady(&s, 4).is_ok(), || {
            format!("node-d should stay a learner beside three ready voters: {s}")
        });
        looks += 1;
        std::thread::sleep(Duration::from_secs(1));
    }
    cluster.progress(&format!(
        "node-d stayed a learner through {looks} looks in {:?}",
        watch.elapsed()
    ));

    // A write through each member is read through every member.
    for via in 0..4 {
        cluster.put_ok(
            via,
            &format!("s1/from-{via}"),
            &format!("written through {via}"),
        );
    }
    for via in 0..4 {
        for from in 0..4 {
            cluster.get_is(
                via,
                &format!("s1/from-{from}"),
                &format!("written through {from}"),
            );
        }
    }
    cluster.progress("writes through every member read through every member");

    // ================= 2. the leader loses power =================
    let status = cluster.status(a).unwrap_or_else(|e| cluster.fail(&e));
    let old = cluster.leader(&status);
    let old_name = cluster.machines[old].member.clone().unwrap_or_default();
    let survivors = cluster.others(&[old]);
    let off = Instant::now();
    cluster.machines[old]
        .vm
        .qmp()
        .and_then(qemu_tests::qmp::QmpClient::quit)
        .or_panic("QMP quit on the leader");
    cluster.machines[old]
        .vm
        .wait_for_exit(timeout(CALL))
        .or_panic("the leader's QEMU did not exit after QMP quit");
    cluster.progress(&format!(
        "leader {} ({old_name}) powered off",
        cluster.name(old)
    ));
    // The client's view of the failover: the first write acknowledged
    // after the power loss (cairnd retries while there is no leader).
    let mut attempts = 0;
    loop {
        attempts += 1;
        let out = cluster.put(survivors[0], "s2/first-after-power-loss", "acknowledged");
        if out.status.success() {
            break;
        }
        if off.elapsed() > timeout(SETTLE) {
            cluster.fail(&format!(
                "no write through {} was acknowledged within {:?} of the leader's power loss:\n{}",
                cluster.name(survivors[0]),
                off.elapsed(),
                out.describe()
            ));
        }
    }
    cluster.progress(&format!(
        "first write after the power loss acknowledged through {} after {:.1?} ({attempts} attempts)",
        cluster.name(survivors[0]),
        off.elapsed()
    ));
    let status = cluster.wait_status(&survivors, "a new leader", SETTLE, |s| {
        match leader_name(s) {
            Some(l) if l != old_name => Ok(()),
            other => Err(format!("leader {other:?}")),
        }
    });
    let new_leader = cluster.leader(&status);
    cluster.progress(&format!("{} leads", cluster.name(new_leader)));
    let mut while_off = BTreeMap::new();
    while_off.insert(
        "s2/first-after-power-loss".to_owned(),
        "acknowledged".to_owned(),
    );
    for (n, &via) in survivors.iter().enumerate() {
        let key = format!("s2/while-off-{n}");
        let value = format!(
            "written through {} while the leader was off",
            cluster.name(via)
        );
        cluster.put_ok(via, &key, &value);
        while_off.insert(key, value);
    }
    for &via in &survivors {
        cluster.holds_all(via, "s2/", &while_off);
    }
    cluster.progress("writes continue without the old leader");

    // Back on the same disk: it must catch up and answer for itself.
    let before = cluster.machines[old].vm.console_len();
    cluster.machines[old]
        .vm
        .restart()
        .or_panic("starting the old leader again");
    cluster.machines[old]
        .vm
        .wait_for_console_sequence_from(before, &[INIT_STARTING], timeout(BOOT_AGAIN))
        .or_panic("the old leader did not boot again");
    let (last_key, last_value) = while_off
        .iter()
        .next_back()
        .map(|(k, v)| (k.clone(), v.clone()))
        .unwrap_or_default();
    cluster.wait_for_value(old, &last_key, &last_value, BOOT_AGAIN);
    cluster.holds_all(old, "s2/", &while_off);
    for from in 0..4 {
        cluster.get_is(
            old,
            &format!("s1/from-{from}"),
            &format!("written through {from}"),
        );
    }
    let again = cluster.machines[old].vm.console_from(before);
    cluster.check(!again.contains("cairnd: setup token:"), || {
        format!("{} came back in maintenance mode", cluster.name(old))
    });
    cluster.progress(&format!(
        "{} is back and read the writes made while it was off",
        cluster.name(old)
    ));
    cluster.wait_status(&[0, 1, 2, 3], "a steady cluster again", SETTLE, |s| {
        steady(s, 4)
    });
    cluster.progress("steady: three ready voters and a ready stand-by");

    // ================= 3. a hard reset during writes =================
    let status = cluster.status(a).unwrap_or_else(|e| cluster.fail(&e));
    let reset = cluster.leader(&status);
    let writer_via = cluster.others(&[reset])[0];
    let writer_endpoint = cluster.machines[writer_via].endpoint();
    let acked: Mutex<Vec<(String, String)>> = Mutex::new(Vec::new());
    let refused: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let stop = AtomicBool::new(false);
    let acked_count = || acked.lock().map_or(0, |a| a.len());
    // The writer's own handle on the same client config and transcript,
    // so the cluster stays free for the reset.
    let writer_cli = Cli::new(&net, image).or_panic("the image's cairn client");
    let cli = &writer_cli;
    std::thread::scope(|scope| {
        let _stop_writer = StopOnDrop(&stop);
        let writer = scope.spawn(|| {
            let mut n = 0u32;
            while !stop.load(Ordering::SeqCst) {
                let key = format!("s3/write-{n:05}");
                let value = format!("value {n} through {writer_endpoint}");
                let args = ["-e", &writer_endpoint, "kv", "put", &key, &value];
                match run_cli(cli, &args, CALL) {
                    Ok(out) if out.status.success() => {
                        if let Ok(mut a) = acked.lock() {
                            a.push((key, value));
                        }
                    }
                    Ok(out) => {
                        if let Ok(mut r) = refused.lock() {
                            r.push(format!(
                                "{key}: exit {:?}: {}",
                                out.code(),
                                out.stderr.trim()
                            ));
                        }
                    }
                    Err(e) => {
                        if let Ok(mut r) = refused.lock() {
                            r.push(format!("{key}: {e}"));
                        }
                    }
                }
                n += 1;
            }
        });
        let wait_acked = |cluster: &Cluster<'_>, at_least: usize, what: &str| {
            let start = Instant::now();
            while acked_count() < at_least {
                if start.elapsed() > timeout(SETTLE) || writer.is_finished() {
                    let refused = refused.lock().map(|r| r.join("\n")).unwrap_or_default();
                    cluster.fail(&format!(
                        "{what}: only {} acknowledged writes through {writer_endpoint} after {:?}; refused:\n{refused}",
                        acked_count(),
                        start.elapsed()
                    ));
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        };
        wait_acked(&cluster, WRITES_AROUND_RESET, "before the reset");
        let before = cluster.machines[reset].vm.console_len();
        let acked_before = acked_count();
        cluster.machines[reset]
            .vm
            .qmp()
            .and_then(qemu_tests::qmp::QmpClient::system_reset)
            .or_panic("QMP system_reset on the leader");
        cluster.progress(&format!(
            "leader {} reset after {acked_before} acknowledged writes",
            cluster.name(reset)
        ));
        cluster.machines[reset]
            .vm
            .wait_for_console_sequence_from(before, &[INIT_STARTING], timeout(BOOT_AGAIN))
            .or_panic("the reset leader did not boot again");
        cluster.progress(&format!(
            "{} is booting again ({} writes acknowledged so far)",
            cluster.name(reset),
            acked_count()
        ));
        // Back when it answers a linearizable read for itself.
        cluster.wait_for_value(reset, "s1/from-0", "written through 0", BOOT_AGAIN);
        let rejoined = acked_count();
        wait_acked(&cluster, rejoined + WRITES_AROUND_RESET, "after the reset");
        stop.store(true, Ordering::SeqCst);
        if writer.join().is_err() {
            cluster.fail("the writer thread panicked");
        }
    });
    let acked: BTreeMap<String, String> =
        acked.into_inner().unwrap_or_default().into_iter().collect();
    let refused = refused.into_inner().unwrap_or_default();
    cluster.progress(&format!(
        "{} writes acknowledged, {} refused or in doubt during the reset",
        acked.len(),
        refused.len()
    ));
    for via in 0..4 {
        cluster.holds_all(via, "s3/", &acked);
    }
    cluster.progress("every acknowledged write is on every member");
    cluster.wait_status(&[0, 1, 2, 3], "a steady cluster again", SETTLE, |s| {
        steady(s, 4)
    });

    // ================= 4. a minority partition =================
    let status = cluster.status(a).unwrap_or_else(|e| cluster.fail(&e));
    let leader = cluster.leader(&status);
    let cut = (0..4)
        .find(|&i| {
            i != leader
                && cluster.machines[i].member.as_deref().is_some_and(|n| {
                    member_named(&status, n).is_ok_and(|m| field(m, "role") == "voter")
                })
        })
        .unwrap_or_else(|| cluster.fail(&format!("no voter besides the leader: {status}")));
    let majority = cluster.others(&[cut]);
    let cut_console = cluster.machines[cut].vm.console_len();
    cluster.machines[cut]
        .vm
        .qmp()
        .and_then(|q| q.set_link(NETDEV, false))
        .or_panic("QMP set_link off");
    cluster.progress(&format!("{} cut off (link down)", cluster.name(cut)));
    // The link is down for the client too (it sits on the same bridge as
    // the peers), so "refused" here is the client's unreachable (3) or,
    // had a request slipped in, the node's no_leader / not confirmed (1).
    let refused_write = cluster.put(cut, "s4/through-the-minority", "must not be acknowledged");
    cluster.check(matches!(refused_write.code(), Some(1 | 3)), || {
        format!(
            "a write through the cut-off voter should fail with exit 1 or 3:\n{}",
            refused_write.describe()
        )
    });
    let refused_read = cluster.get(cut, "s1/from-0");
    cluster.check(matches!(refused_read.code(), Some(1 | 3)), || {
        format!(
            "a read through the cut-off voter should fail with exit 1 or 3:\n{}",
            refused_read.describe()
        )
    });
    let mut during = BTreeMap::new();
    for (n, &via) in majority.iter().enumerate() {
        let key = format!("s4/majority-{n}");
        let value = format!("written through {} during the partition", cluster.name(via));
        cluster.put_ok(via, &key, &value);
        during.insert(key, value);
    }
    for &via in &majority {
        cluster.holds_all(via, "s4/", &during);
    }
    cluster.progress(&format!(
        "the minority refused (write: {}; read: {}) while the majority served",
        refused_write.stderr.trim(),
        refused_read.stderr.trim()
    ));
    // Pre-vote keeps the lone voter from taking over: it never leads.
    let cut_log = cluster.machines[cut].vm.console_from(cut_console);
    cluster.check(!cut_log.contains("raft: became leader"), || {
        format!(
            "the cut-off voter {} became leader on its own:\n{cut_log}",
            cluster.name(cut)
        )
    });
    cluster.machines[cut]
        .vm
        .qmp()
        .and_then(|q| q.set_link(NETDEV, true))
        .or_panic("QMP set_link on");
    let (last_key, last_value) = during
        .iter()
        .next_back()
        .map(|(k, v)| (k.clone(), v.clone()))
        .unwrap_or_default();
    cluster.wait_for_value(cut, &last_key, &last_value, SETTLE);
    let reference = cluster.list(leader, "s4/");
    for via in 0..4 {
        let got = cluster.list(via, "s4/");
        cluster.check(got == reference, || {
            format!(
                "after healing, {} lists {got:?} under s4/ but {} lists {reference:?}",
                cluster.name(via),
                cluster.name(leader)
            )
        });
    }
    cluster.holds_all(cut, "s4/", &during);
    cluster.progress("healed: every member lists the same records");
    cluster.wait_status(&[0, 1, 2, 3], "a steady cluster again", SETTLE, |s| {
        steady(s, 4)
    });

    // ====== 4b. a partition that leaves the client on the minority's side ======
    // With the link down the client cannot ask the cut-off node anything;
    // here the node is cut off from its peers only (its tap moved to a
    // bridge of its own, the host still routes to it), so the refusal
    // comes from the node itself.
    let status = cluster.status(a).unwrap_or_else(|e| cluster.fail(&e));
    let leader = cluster.leader(&status);
    let island = (0..4)
        .find(|&i| {
            i != leader
                && cluster.machines[i].member.as_deref().is_some_and(|n| {
                    member_named(&status, n).is_ok_and(|m| field(m, "role") == "voter")
                })
        })
        .unwrap_or_else(|| cluster.fail(&format!("no voter besides the leader: {status}")));
    let mainland = cluster.others(&[island]);
    let island_console = cluster.machines[island].vm.console_len();
    net.isolate(
        cluster.machines[island].vm.tap(),
        cluster.machines[island].ip,
    )
    .or_panic("cutting a voter off from its peers");
    cluster.progress(&format!(
        "{} cut off from its peers, still reachable by the client",
        cluster.name(island)
    ));
    for out in [
        cluster.put(
            island,
            "s4b/through-the-minority",
            "must not be acknowledged",
        ),
        cluster.get(island, "s1/from-0"),
    ] {
        cluster.check(
            out.code() == Some(1) && out.stderr.contains("the node failed to carry out"),
            || {
                format!(
                    "the voter cut off from its peers should itself refuse (exit 1, no leader or not confirmed):\n{}",
                    out.describe()
                )
            },
        );
        cluster.progress(&format!("minority refused: {}", out.stderr.trim()));
    }
    let mut during = BTreeMap::new();
    for (n, &via) in mainland.iter().enumerate() {
        let key = format!("s4b/majority-{n}");
        let value = format!(
            "written through {} while another voter was cut off",
            cluster.name(via)
        );
        cluster.put_ok(via, &key, &value);
        during.insert(key, value);
    }
    for &via in &mainland {
        cluster.holds_all(via, "s4b/", &during);
    }
    let island_log = cluster.machines[island].vm.console_from(island_console);
    cluster.check(!island_log.contains("raft: became leader"), || {
        format!("the voter cut off from its peers became leader on its own:\n{island_log}")
    });
    net.reconnect(
        cluster.machines[island].vm.tap(),
        cluster.machines[island].ip,
    )
    .or_panic("reconnecting the cut-off voter");
    let (last_key, last_value) = during
        .iter()
        .next_back()
        .map(|(k, v)| (k.clone(), v.clone()))
        .unwrap_or_default();
    cluster.wait_for_value(island, &last_key, &last_value, SETTLE);
    let reference = cluster.list(leader, "s4b/");
    for via in 0..4 {
        let got = cluster.list(via, "s4b/");
        cluster.check(got == reference, || {
            format!(
                "after reconnecting, {} lists {got:?} under s4b/ but {} lists {reference:?}",
                cluster.name(via),
                cluster.name(leader)
            )
        });
    }
    cluster.progress(&format!(
        "reconnected: every member lists the same records; the write in doubt was {}",
        if reference.contains_key("s4b/through-the-minority") {
            "applied after all"
        } else {
            "not applied"
        }
    ));
    cluster.wait_status(&[0, 1, 2, 3], "a steady cluster again", SETTLE, |s| {
        steady(s, 4)
    });

    // ================= 5. a dead voter is replaced by the stand-by =================
    let status = cluster.status(a).unwrap_or_else(|e| cluster.fail(&e));
    let leader = cluster.leader(&status);
    let learners = with_role(&status, "learner");
    cluster.check(learners.len() == 1, || {
        format!("want exactly one stand-by: {status}")
    });
    let spare_name = learners[0].to_owned();
    let spare = cluster.machine_of(&status, &spare_name);
    let dead = (0..4)
        .find(|&i| {
            i != leader
                && cluster.machines[i].member.as_deref().is_some_and(|n| {
                    member_named(&status, n).is_ok_and(|m| field(m, "role") == "voter")
                })
        })
        .unwrap_or_else(|| cluster.fail(&format!("no voter besides the leader: {status}")));
    let dead_name = cluster.machines[dead].member.clone().unwrap_or_default();
    let living = cluster.others(&[dead]);
    let off = Instant::now();
    cluster.machines[dead]
        .vm
        .qmp()
        .and_then(qemu_tests::qmp::QmpClient::quit)
        .or_panic("QMP quit on a voter");
    cluster.machines[dead]
        .vm
        .wait_for_exit(timeout(CALL))
        .or_panic("the voter's QEMU did not exit after QMP quit");
    cluster.progress(&format!(
        "voter {} ({dead_name}) powered off for good; stand-by is {} ({spare_name})",
        cluster.name(dead),
        cluster.name(spare)
    ));
    let replaced = cluster.wait_status(
        &living,
        "the stand-by replacing the dead voter",
        REPLACE,
        |s| {
            let gone = member_named(s, &dead_name)?;
            let promoted = member_named(s, &spare_name)?;
            let voters = with_role(s, "voter").len();
            if field(promoted, "role") == "voter"
                && field(promoted, "state") == "ready"
                && field(gone, "role") == "learner"
                && field(gone, "state") == "lost"
                && voters == 3
            {
                Ok(())
            } else {
                Err(format!(
                    "stand-by {} {}, dead voter {} {}, {voters} voters",
                    field(promoted, "role"),
                    field(promoted, "state"),
                    field(gone, "role"),
                    field(gone, "state")
                ))
            }
        },
    );
    let took = off.elapsed();
    cluster.check(took + Duration::from_secs(2) >= GRACE, || {
        format!("the voter was replaced after {took:?}, before the grace period of {GRACE:?}: {replaced}")
    });
    cluster.progress(&format!("replaced {took:.1?} after the power-off"));
    cluster.put_ok(spare, "s5/after-replacement", "the promoted stand-by votes");
    for &via in &living {
        cluster.get_is(via, "s5/after-replacement", "the promoted stand-by votes");
    }
    cluster.progress("writes through the promoted stand-by read through every living member");
}
