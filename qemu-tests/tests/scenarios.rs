//! End-to-end scenarios: the Cairn image booted in QEMU on a private
//! network, checked the way an operator would check a machine.
//!
//! They need root (network namespaces, taps, a bridge) and the host
//! packages named by `qemu_tests::tools`; without them they fail with the
//! fix in the message. They are all in this one binary so a process-wide
//! lock (held by every `Network`) runs one scenario at a time: the host
//! has two cores and emulates under TCG.
//!
//! Run: `cargo test -p qemu-tests --test scenarios` as root. The image is
//! built on first use (or taken from `CAIRN_IMAGE_DIR`); logs of every
//! scenario stay in `target/qemu-tests/logs/<scenario>/`.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

use qemu_tests::console::{
    CONFIG_REFUSED, ORDERLY_POWEROFF, POWER_BUTTON_WATCHED, STATE_ON_SCSI_DISK, config_fetched_from,
};
use qemu_tests::pxe::PxeRoot;
use qemu_tests::{Image, Network, NetworkConfig, OrPanic, Vm, VmSpec, paths, timeout};

/// One guest booting alone: OVMF + systemd-boot + kernel + userland under
/// TCG takes 15-25 s on this host; the rest is headroom for slower CI.
const BOOT: Duration = Duration::from_secs(180);
/// Three guests sharing two emulating cores.
const BOOT_THREE: Duration = Duration::from_secs(420);
/// The bound for a power-button shutdown.
const POWEROFF: Duration = Duration::from_secs(30);

fn image() -> &'static Image {
    // Check root and host packages before a possibly long image build.
    qemu_tests::tools::check_host().or_panic("the host cannot run VM scenarios");
    Image::shared().or_panic("the Cairn image is required")
}

fn network(test: &str) -> Network {
    Network::start(&NetworkConfig::new(test)).or_panic("starting the private network")
}

/// Asserts the node is up: `/readyz` answered 200 (the wait proved it) and
/// `/healthz` answers 200 too.
fn assert_healthy(vm: &Vm<'_>, ip: Ipv4Addr) {
    let healthz = vm.health_get(ip, "/healthz").or_panic("GET /healthz");
    assert_eq!(
        healthz.status,
        200,
        "/healthz of {} answered {}: {}",
        vm.name(),
        healthz.status,
        healthz.text()
    );
}

#[test]
fn virtio_disk_image_boots_to_readyz() {
    let image = image();
    let net = network("virtio_disk_image_boots_to_readyz");
    let mut vm = Vm::start(&net, VmSpec::virtio_disk("virtio", image)).or_panic("starting the VM");
    let ip = vm
        .wait_for_ready(timeout(BOOT))
        .or_panic("cairn.raw on virtio-blk never became ready");
    assert_healthy(&vm, ip);
}

#[test]
fn pxe_boot_without_disk_reaches_readyz() {
    let image = image();
    let net = Network::start(
        &NetworkConfig::new("pxe_boot_without_disk_reaches_readyz").with_pxe(&image.pxe_dir()),
    )
    .or_panic("starting the private network with TFTP");
    let mut vm = Vm::start(&net, VmSpec::pxe("pxe", image)).or_panic("starting the VM");
    let ip = vm
        .wait_for_ready(timeout(BOOT))
        .or_panic("the diskless VM never became ready");
    assert_healthy(&vm, ip);
    // The VM has no disk, so it can only have booted what TFTP served;
    // the log proves both halves of the slot went over the wire.
    let log = net.dnsmasq_log();
    for file in ["boot.ipxe", "vmlinuz", "initramfs.img"] {
        assert!(
            log.lines().any(|l| l.contains("dnsmasq-tftp")
                && l.contains(&format!("sent {}", image.pxe_dir().join(file).display()))),
            "dnsmasq never sent {file} over TFTP; its log:\n{log}"
        );
    }
}

#[test]
fn raw_image_as_usb_stick_boots_to_readyz() {
    let image = image();
    let net = network("raw_image_as_usb_stick_boots_to_readyz");
    let mut vm = Vm::start(&net, VmSpec::usb_stick("usb", image)).or_panic("starting the VM");
    let ip = vm
        .wait_for_ready(timeout(BOOT))
        .or_panic("cairn.raw as a USB stick never became ready");
    assert_healthy(&vm, ip);
}

#[test]
fn vmdk_on_pvscsi_with_vmxnet3_boots_to_readyz() {
    let image = image();
    let net = network("vmdk_on_pvscsi_with_vmxnet3_boots_to_readyz");
    let spec = VmSpec::vmware("vmware", image).or_panic("preparing the VMware VM");
    let mut vm = Vm::start(&net, spec).or_panic("starting the VM");
    // The only NIC is a vmxnet3, so a lease and /readyz prove its driver
    // works; STATE on a SCSI disk proves the pvscsi driver found the VMDK.
    let ip = vm
        .wait_for_ready(timeout(BOOT))
        .or_panic("cairn.vmdk on pvscsi/vmxnet3 never became ready");
    assert_healthy(&vm, ip);
    vm.wait_for_console(STATE_ON_SCSI_DISK, Duration::ZERO)
        .or_panic("STATE was not mounted from the pvscsi disk");
}

#[test]
fn three_vms_get_distinct_leases_and_each_serves_readyz() {
    let image = image();
    let net = network("three_vms_get_distinct_leases_and_each_serves_readyz");
    let mut vms: Vec<Vm<'_>> = ["node-a", "node-b", "node-c"]
        .into_iter()
        .map(|name| Vm::start(&net, VmSpec::virtio_qcow2(name, image)).or_panic("starting a VM"))
        .collect();
    let mut ips = Vec::new();
    for vm in &mut vms {
        ips.push(
            vm.wait_for_ready(timeout(BOOT_THREE))
                .or_panic("a node never became ready"),
        );
    }
    let distinct: BTreeSet<Ipv4Addr> = ips.iter().copied().collect();
    assert_eq!(distinct.len(), 3, "leases are not distinct: {ips:?}");
    let leases = net.leases().or_panic("reading leases");
    for vm in &vms {
        let held: Vec<_> = leases.iter().filter(|l| l.mac == vm.mac()).collect();
        assert_eq!(
            held.len(),
            1,
            "{} ({}) should hold exactly one lease: {leases:?}",
            vm.name(),
            vm.mac()
        );
    }
    // All three answer on the shared bridge at the same time (checked after
    // every node is up, so no node went down while another was booting).
    for (vm, ip) in vms.iter().zip(&ips) {
        let resp = vm.health_get(*ip, "/readyz").or_panic("GET /readyz");
        assert_eq!(
            resp.status,
            200,
            "{} at {ip}: /readyz answered {}",
            vm.name(),
            resp.status
        );
    }
}

/// Cairn has no shell, so a guest cannot be told to `curl` another. But
/// the boot loader can: node B is PXE-booted with
/// `cairn.config=http://<node A>:7480/healthz`, and cairnd on B fetches
/// that URL once its network is up. Whatever A answers, B logs that it
/// fetched (or refused what it fetched) from that URL -- guest-to-guest
/// traffic over the bridge, seen from B's console.
#[test]
fn a_node_fetches_from_another_nodes_health_port_over_the_bridge() {
    let image = image();
    let tftp = PxeRoot::new(image).or_panic("preparing a TFTP root");
    let net = Network::start(
        &NetworkConfig::new("a_node_fetches_from_another_nodes_health_port_over_the_bridge")
            .with_pxe(tftp.path()),
    )
    .or_panic("starting the private network with TFTP");
    let mut a = Vm::start(&net, VmSpec::virtio_disk("node-a", image)).or_panic("starting node A");
    let a_ip = a
        .wait_for_ready(timeout(BOOT))
        .or_panic("node A never became ready");
    let url = format!("http://{a_ip}:7480/healthz");
    tftp.set_extra_kernel_args(&format!("cairn.config={url}"))
        .or_panic("writing boot.ipxe");
    let mut b = Vm::start(&net, VmSpec::pxe("node-b", image)).or_panic("starting node B");
    let line = b
        .wait_for_console(&config_fetched_from(&url), timeout(BOOT))
        .or_panic("node B never reported fetching from node A");
    assert!(
        !line.contains("fetch failed"),
        "node B could not reach node A: {line}"
    );
    let b_ip = b
        .wait_for_ready(timeout(BOOT))
        .or_panic("node B never became ready");
    assert_ne!(a_ip, b_ip, "both nodes hold the same address");
}

#[test]
fn qmp_system_powerdown_powers_off_cleanly_within_30s() {
    let image = image();
    let net = network("qmp_system_powerdown_powers_off_cleanly_within_30s");
    let mut vm =
        Vm::start(&net, VmSpec::virtio_disk("powerdown", image)).or_panic("starting the VM");
    // The power path must not depend on the network coming up, so the
    // precondition is init's button watcher, not /readyz.
    vm.wait_for_console(POWER_BUTTON_WATCHED, timeout(BOOT))
        .or_panic("cairn-init never started watching the power button");
    let before = vm.console_len();
    let qmp = vm.qmp().or_panic("connecting to QMP");
    let status = qmp.query_status().or_panic("query-status");
    assert!(
        status.running,
        "VM not running before the power button: {status:?}"
    );
    qmp.system_powerdown().or_panic("system_powerdown");
    let exit = vm
        .wait_for_exit(POWEROFF)
        .or_panic("QEMU did not exit by itself after the power button");
    assert!(
        exit.success(),
        "QEMU exited with {exit} after a clean poweroff"
    );
    vm.wait_for_console_sequence_from(before, &ORDERLY_POWEROFF, Duration::ZERO)
        .or_panic("the console does not show the orderly poweroff path");
}

#[test]
fn invalid_machine_config_falls_back_to_default_and_reports_it() {
    let dir = paths::workspace_root().join("configs/machine/invalid");
    let mut configs: Vec<PathBuf> = std::fs::read_dir(&dir)
        .or_panic("listing configs/machine/invalid")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    configs.sort();
    assert!(
        !configs.is_empty(),
        "no invalid machine configs in {}",
        dir.display()
    );
    let image = image();
    let net = network("invalid_machine_config_falls_back_to_default_and_reports_it");
    for (i, config) in configs.iter().enumerate() {
        let text = std::fs::read_to_string(config).or_panic("reading an invalid config");
        // Each file names the error it must produce in `# expect-error:` lines.
        let expected: Vec<String> = text
            .lines()
            .filter_map(|l| l.trim().strip_prefix("# expect-error:"))
            .map(|e| regex::escape(e.trim()))
            .collect();
        let spec = VmSpec::virtio_disk(&format!("invalid-{i}"), image).with_machine_config(config);
        let mut vm = Vm::start(&net, spec).or_panic("starting the VM");
        let refused = vm
            .wait_for_console(CONFIG_REFUSED, timeout(BOOT))
            .or_panic(&format!(
                "the console does not report {} as refused",
                config.display()
            ));
        for pattern in &expected {
            assert!(
                regex::Regex::new(pattern).is_ok_and(|re| re.is_match(&refused)),
                "the refusal of {} does not say `{pattern}`: {refused}",
                config.display()
            );
        }
        let ip = vm.wait_for_ready(timeout(BOOT)).or_panic(&format!(
            "with {} the node did not come up on the default",
            config.display()
        ));
        assert_healthy(&vm, ip);
    }
}

#[test]
fn network_teardown_removes_namespace_and_nothing_leaves_it() {
    let net = network("network_teardown_removes_namespace_and_nothing_leaves_it");
    let name = net.name().to_owned();
    // No uplink: the only routes are the bridge's own subnet.
    let routes = net
        .ip(&["-4", "route", "show", "table", "all"])
        .or_panic("listing routes");
    for route in routes.lines().filter(|l| !l.trim().is_empty()) {
        assert!(
            route.contains("dev br0") || route.contains("dev lo"),
            "unexpected route in the test namespace: {route}"
        );
    }
    assert!(
        !routes.contains("default"),
        "the test namespace has a default route:\n{routes}"
    );
    let links = net.ip(&["-o", "link", "show"]).or_panic("listing links");
    let names: Vec<&str> = links.lines().filter_map(|l| l.split(": ").nth(1)).collect();
    assert_eq!(
        names,
        ["lo", "br0"],
        "unexpected links in the test namespace"
    );
    drop(net);
    assert!(
        !std::path::Path::new("/run/netns").join(&name).exists(),
        "namespace {name} survived its Network"
    );
}

#[test]
fn a_panicking_scenario_still_kills_its_vm_and_deletes_its_namespace() {
    let image = image();
    let mut seen = None;
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let net = network("a_panicking_scenario_still_kills_its_vm_and_deletes_its_namespace");
        let vm = Vm::start(&net, VmSpec::virtio_disk("doomed", image)).or_panic("starting the VM");
        seen = Some((net.name().to_owned(), vm.pid()));
        panic!("deliberate failure with a VM running");
    }));
    assert!(outcome.is_err(), "the closure was meant to panic");
    let (namespace, pid) = seen.expect("the VM started before the panic");
    assert!(
        !std::path::Path::new("/run/netns").join(&namespace).exists(),
        "namespace {namespace} survived the panic"
    );
    assert!(
        !std::path::Path::new("/proc").join(pid.to_string()).exists(),
        "QEMU (pid {pid}) survived the panic"
    );
}
