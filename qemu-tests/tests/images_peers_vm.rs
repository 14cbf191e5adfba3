//! Image sharing on real (emulated) machines: two VMs from the same image
//! form a cluster, a site registry (Debian's `docker-registry` with TLS
//! from a CA the test makes and htpasswd auth) sits on the test network,
//! and the second node pulls an image from the first instead of from the
//! registry.
//!
//! 1. An image holding the host's static busybox is built by `cairn-image
//!    oci from-dir` and pushed to the registry with skopeo.
//! 2. Both VMs boot with a machine config naming the registry (its CA
//!    inline, basic auth); node A is bootstrapped and node B joins it.
//! 3. `cairn image pull` on A fetches every blob from the registry.
//! 4. `cairn image pull` on B resolves the tag at the registry but fetches
//!    every blob from node A (`sources` in `-o json`), and the registry's
//!    access log shows no blob served to anyone after A's pull.
//! 5. B runs a container from the image it got from A.
//!
//! Run: `cargo test -p qemu-tests --test images_peers_vm` as root (see
//! docs/testing.md).

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use qemu_tests::registry::SiteRegistry;
use qemu_tests::scenario::{Maintenance, Scenario, consoles};
use qemu_tests::{Cli, Image, Network, NetworkConfig, OrPanic, Vm, VmSpec};
use serde_json::Value;

/// Two guests booting at once on two emulating cores.
const BOOT_TWO: Duration = Duration::from_secs(400);
/// One client call: the client's own request limit is 60 s.
const CALL: Duration = Duration::from_secs(90);
/// `node join`: the client waits up to 3 minutes for admission.
const JOIN: Duration = Duration::from_secs(240);
/// A pull: a few MB through an emulated NIC, unpacked on an emulated disk.
const PULL: Duration = Duration::from_secs(300);
/// The cluster settling, a container starting, under TCG.
const SETTLE: Duration = Duration::from_secs(180);

const USER: &str = "site";
const PASSWORD: &str = "site-registry-password";
const REPOSITORY: &str = "site/tools:1";

struct Pair<'n> {
    vms: Vec<Vm<'n>>,
    ips: Vec<Ipv4Addr>,
    cli: Cli<'n>,
    registry: &'n SiteRegistry<'n>,
    started: Instant,
}

impl Scenario for Pair<'_> {
    fn cli(&self) -> &Cli<'_> {
        &self.cli
    }

    #[track_caller]
    fn fail(&self, what: &str) -> ! {
        panic!(
            "{what}\nclient transcript: {}\nregistry access log:\n{}{}",
            self.cli.transcript_path().display(),
            self.registry.access_log(),
            consoles(&self.vms)
        )
    }
}

impl Pair<'_> {
    fn progress(&self, what: &str) {
        eprintln!(
            "images_peers_vm: [{:>6.1?}] {what}",
            self.started.elapsed().as_secs_f64()
        );
    }

    fn endpoint(&self, i: usize) -> String {
        format!("{}:7443", self.ips[i])
    }

    /// `image pull REF -o json` through node `i`: the `sources` map.
    #[track_caller]
    fn pull(&self, i: usize, reference: &str) -> serde_json::Map<String, Value> {
        let pulled = self.cairn_json(
            &[
                "-e",
                &self.endpoint(i),
                "image",
                "pull",
                reference,
                "-o",
                "json",
            ],
            PULL,
        );
        match pulled.get("sources") {
            Some(Value::Object(sources)) if !sources.is_empty() => sources.clone(),
            _ => self.fail(&format!("the pull fetched nothing: {pulled}")),
        }
    }
}

#[test]
fn a_second_node_pulls_an_image_from_the_first_instead_of_the_site_registry() {
    qemu_tests::tools::check_host().or_panic("the host cannot run VM scenarios");
    let image = Image::shared().or_panic("the Cairn image is required");
    let work = tempfile::tempdir().or_panic("a scratch directory");
    let layout = work.path().join("layout");
    let archive = work.path().join("site.tar");
    let layout_arg = layout.to_str().expect("temp paths are UTF-8");
    // An image of its own (the host's static busybox and a marker file):
    // the test image's baked busybox would share its layer, and a node
    // never fetches what its store already holds.
    let root = work.path().join("root");
    std::fs::create_dir_all(root.join("bin")).or_panic("the image root");
    let (busybox, _) = qemu_tests::initramfs::host_busybox().or_panic("the host's busybox");
    std::fs::write(root.join("bin/busybox"), busybox).or_panic("copying busybox");
    std::fs::set_permissions(
        root.join("bin/busybox"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .or_panic("making busybox executable");
    std::fs::write(
        root.join("site-image"),
        "pushed to the site registry by images_peers_vm\n",
    )
    .or_panic("writing the marker");
    qemu_tests::image::run_oci(&[
        "from-dir",
        root.to_str().expect("temp paths are UTF-8"),
        "--ref",
        "site:1",
        "--out",
        layout_arg,
        "--entrypoint",
        "/bin/busybox",
    ])
    .or_panic("building the site image");
    qemu_tests::image::run_oci(&[
        "archive",
        layout_arg,
        archive.to_str().expect("temp paths are UTF-8"),
    ])
    .or_panic("packing the site image");

    let net = Network::start(&NetworkConfig::new(
        "a_second_node_pulls_an_image_from_the_first_instead_of_the_site_registry",
    ))
    .or_panic("starting the private network");
    let registry = SiteRegistry::start(
        &net.log_dir().join("registry"),
        SocketAddr::from((net.gateway(), 5000)),
        Some(&net),
        Some((USER, PASSWORD)),
    )
    .or_panic("starting the site registry");
    registry
        .push(&archive, "site:1", REPOSITORY)
        .or_panic("pushing the image to the site registry");
    let reference = format!("{}/{REPOSITORY}", registry.host());

    let config = net.log_dir().join("machine.toml");
    std::fs::write(
        &config,
        format!(
            "# Written by qemu-tests/tests/images_peers_vm.rs\n\
             [[registries]]\nhost = \"{host}\"\nca = \"\"\"\n{ca}\"\"\"\n\
             auth = {{ username = \"{USER}\", password = \"{PASSWORD}\" }}\n",
            host = registry.host(),
            ca = registry.ca_pem(),
        ),
    )
    .or_panic("writing the machine config");

    let cli = Cli::new(&net, image).or_panic("the image's cairn client");
    let started = Instant::now();
    let mut vms: Vec<Vm<'_>> = ["node-a", "node-b"]
        .into_iter()
        .map(|name| {
            let spec = VmSpec::virtio_qcow2(name, image).with_machine_config(&config);
            Vm::start(&net, spec).or_panic("starting a VM")
        })
        .collect();
    let setup: Vec<Maintenance> = vms
        .iter_mut()
        .map(|vm| Maintenance::wait(vm, BOOT_TWO).or_panic("a VM never reached maintenance mode"))
        .collect();
    let pair = Pair {
        ips: setup.iter().map(|m| m.ip).collect(),
        vms,
        cli,
        registry: &registry,
        started,
    };
    pair.progress("two VMs in maintenance mode");
    let (a, b) = (0, 1);

    // ---- 2. one cluster ----
    let boot = pair.cairn_json(
        &[
            "cluster",
            "init",
            "--endpoint",
            &setup[a].endpoint(),
            "--setup-token",
            &setup[a].token,
            "--fingerprint",
            &setup[a].fingerprint,
            "-o",
            "json",
        ],
        CALL,
    );
    let ca = pair.text(&boot, "/admin/ca_fingerprint");
    let created = pair.cairn_json(
        &["cluster", "token", "create", "--ttl", "1h", "-o", "json"],
        CALL,
    );
    let token = pair.text(&created, "/token");
    let joined = pair.cairn_json(
        &[
            "node",
            "join",
            "--endpoint",
            &setup[b].endpoint(),
            "--setup-token",
            &setup[b].token,
            "--fingerprint",
            &setup[b].fingerprint,
            "--cluster",
            &setup[a].endpoint(),
            "--token",
            &token,
            "--ca-hash",
            &ca,
            "-o",
            "json",
        ],
        JOIN,
    );
    let b_name = pair.text(&joined, "/node_name");
    let a_name = pair.wait_for("two ready members", SETTLE, || {
        let out = pair.cairn(&["cluster", "status", "-o", "json"], CALL);
        let status = out.json().map_err(|_| out.describe())?;
        let members = status["members"].as_array().cloned().unwrap_or_default();
        let ready = members.iter().all(|m| m["state"] == "ready");
        let other = members
            .iter()
            .filter_map(|m| m["name"].as_str())
            .find(|name| *name != b_name);
        match other {
            Some(name) if members.len() == 2 && ready => Ok(name.to_owned()),
            _ => Err(status.to_string()),
        }
    });
    pair.progress(&format!("{a_name} and {b_name} form a cluster"));

    // ---- 3. A pulls from the registry ----
    let sources = pair.pull(a, &reference);
    pair.check(sources.values().all(|s| s["role"] == "upstream"), || {
        format!("node A's blobs should come from the registry: {sources:?}")
    });
    let served = registry.blob_gets();
    pair.check(served >= sources.len(), || {
        format!(
            "the registry's log shows {served} blob downloads for {} blobs",
            sources.len()
        )
    });
    pair.progress(&format!(
        "{a_name} pulled {} blobs from the registry",
        sources.len()
    ));

    // ---- 4. B pulls from A ----
    let sources = pair.pull(b, &reference);
    pair.check(
        sources
            .values()
            .all(|s| s["role"] == "peer" && s["node"] == a_name.as_str()),
        || format!("node B's blobs should all come from {a_name}: {sources:?}"),
    );
    pair.check(registry.blob_gets() == served, || {
        format!(
            "the registry served blobs after node A's pull ({served} before, {} now)",
            registry.blob_gets()
        )
    });
    pair.progress(&format!(
        "{b_name} pulled {} blobs from {a_name}",
        sources.len()
    ));

    // ---- 5. B runs it ----
    let b_endpoint = pair.endpoint(b);
    pair.cairn_ok(
        &[
            "-e",
            &b_endpoint,
            "ctr",
            "run",
            "hello",
            &reference,
            "--",
            "echo",
            "hello from a peer's image",
        ],
        SETTLE,
    );
    pair.wait_for("the container's output", SETTLE, || {
        let out = pair.cairn(&["-e", &b_endpoint, "ctr", "logs", "hello"], CALL);
        if out.stdout.contains("hello from a peer's image") {
            Ok(())
        } else {
            Err(out.describe())
        }
    });
    pair.progress("the image from the peer runs on node B");
}
