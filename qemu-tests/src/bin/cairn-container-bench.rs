//! `cairn-container-bench`: container start latency, cairn-shim against
//! Debian's `crun` on the same bundle, and cairn-shim's memory per
//! container, all in one VM boot.
//!
//! The VM is the image's kernel with a test initramfs (cgroup2 with every
//! controller; the build host has cgroup v1 only): busybox, the static
//! `cairn-shim` built with the image's profile, `crun` with its libraries,
//! a busybox image root, and the in-VM driver (see
//! `qemu_tests::containerbench`). The driver alternates crun and Cairn
//! starts round by round (which goes first alternates too), then keeps
//! several Cairn containers running and reads each shim's memory.
//!
//! Output: a table on stdout and JSON in
//! `target/qemu-tests/container-bench.json`. Needs crun, QEMU, cpio,
//! busybox-static and the image (`scripts/bench containers` installs crun;
//! `CAIRN_IMAGE_DIR` reuses a built image).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Parser;
use image_build::initramfs::Tree;
use image_build::reproducible::SourceDateEpoch;
use qemu_tests::benchrun::{self, Host};
use qemu_tests::containerbench::{
    self as cb, CRUN_BUNDLE, Console, IMAGE_ROOT, READY_VOLUME, Start,
};
use qemu_tests::initramfs::{boot_and_wait, extract, host_busybox, static_binary_with_profile};
use qemu_tests::{Image, accel, lock::VmLock};
use serde_json::json;

/// Container start latency against crun, and shim memory.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Measured starts per runtime (after one unmeasured warm-up each).
    #[arg(long, default_value_t = 20)]
    rounds: usize,
    /// Long-running Cairn containers whose shims are measured.
    #[arg(long, default_value_t = 10)]
    rss_containers: usize,
    /// Cargo profile of the cairn-shim under test (`image` is what ships).
    #[arg(long, default_value = image_build::binaries::PROFILE)]
    profile: String,
    /// crun on the host, copied into the VM with its libraries.
    #[arg(long, default_value = "/usr/bin/crun")]
    crun: PathBuf,
    /// Where to write the JSON report.
    #[arg(long)]
    json: Option<PathBuf>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cairn-container-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

const SCRIPT: &str = r#"#!/bin/sh
export PATH=/bin:/usr/bin
if [ ! -e /.stage2 ]; then
    # pivot_root cannot leave the initramfs rootfs: move to a tmpfs first,
    # as a node's init does.
    /bin/busybox mkdir -p /proc /newroot
    /bin/busybox mount -t tmpfs -o mode=755 root /newroot
    for d in bin usr lib lib64 images bench init; do /bin/busybox cp -a /$d /newroot/; done
    /bin/busybox touch /newroot/.stage2
    exec /bin/busybox switch_root /newroot /init
fi
for d in proc sys dev run tmp var/lib/cairn/containers @READY@; do mkdir -p /$d; done
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mount -t cgroup2 cgroup2 /sys/fs/cgroup
mount -t tmpfs run /run
mount -t tmpfs tmp /tmp
chmod 1777 /tmp
insmod /lib/modules/overlay.ko || echo "CB error insmod overlay failed"
echo "+cpu +memory +pids" > /sys/fs/cgroup/cgroup.subtree_control
echo "CB kernel $(uname -r) cpus $(grep -c ^processor /proc/cpuinfo)"
/bin/cbench-driver @ROUNDS@ @RSS@
echo "CB exit $?"
poweroff -f
"#;

fn script(args: &Args) -> String {
    SCRIPT
        .replace("@READY@", READY_VOLUME.trim_start_matches('/'))
        .replace("@ROUNDS@", &args.rounds.to_string())
        .replace("@RSS@", &args.rss_containers.to_string())
}

fn build_initramfs(
    dir: &Path,
    image: &Image,
    args: &Args,
    shim: Vec<u8>,
    driver: Vec<u8>,
) -> Result<PathBuf> {
    let (busybox, applets) = host_busybox()?;
    let overlay = extract(&image.initramfs(), "*/overlay.ko")?;
    let crun =
        cb::dynamic_closure(&args.crun).context("crun and its libraries (apt-get install crun)")?;
    let (config, seccomp_removed) = cb::crun_config()?;
    if seccomp_removed {
        bail!(
            "the shim's OCI config now has a seccomp profile: give crun the same and update this benchmark"
        );
    }

    let mut t = Tree::new();
    for d in [
        "dev",
        "proc",
        "sys",
        "run",
        "tmp",
        "lib/modules",
        "usr/bin",
        "bench/crun",
    ] {
        t.dir(d, 0o755)?;
    }
    t.char_device("dev/console", 0o600, 5, 1)?;
    t.file("bin/busybox", 0o755, busybox.clone())?;
    t.file("bin/cbench-driver", 0o755, driver)?;
    t.file("usr/bin/cairn-shim", 0o755, shim)?;
    for (i, (path, bytes)) in crun.into_iter().enumerate() {
        // The binary itself goes where the driver calls it; libraries
        // and the loader where ldd found them.
        let target = if i == 0 {
            "usr/bin/crun".to_owned()
        } else {
            path.to_string_lossy().trim_start_matches('/').to_owned()
        };
        t.file(&target, 0o755, bytes)?;
    }
    t.file("lib/modules/overlay.ko", 0o644, overlay)?;
    t.file("init", 0o755, script(args).into_bytes())?;
    t.file("bench/spec.json", 0o644, cb::spec_template()?)?;
    t.file(
        &format!("{}/config.json", CRUN_BUNDLE.trim_start_matches('/')),
        0o644,
        serde_json::to_vec_pretty(&config)?,
    )?;
    let root = IMAGE_ROOT.trim_start_matches('/');
    for d in ["proc", "sys", "dev", "tmp", "etc", "ready"] {
        t.dir(&format!("{root}/{d}"), 0o755)?;
    }
    t.file(&format!("{root}/bin/busybox"), 0o755, busybox)?;
    t.file(
        &format!("{root}/etc/passwd"),
        0o644,
        b"root:x:0:0:root:/:/bin/sh\n".to_vec(),
    )?;
    for applet in applets.iter().filter(|a| *a != "busybox") {
        t.symlink(&format!("bin/{applet}"), "busybox")?;
        t.symlink(&format!("{root}/bin/{applet}"), "busybox")?;
    }
    let cpio = t.to_cpio(SourceDateEpoch::new(1_700_000_000)?);
    let path = dir.join("container-bench.cpio");
    std::fs::write(&path, cpio)?;
    Ok(path)
}

fn ms(us: &[f64]) -> Vec<f64> {
    us.iter().map(|u| u / 1000.0).collect()
}

fn running(starts: &[Start]) -> Vec<f64> {
    starts.iter().map(|s| s.running_us as f64).collect()
}

fn cli(starts: &[Start]) -> Vec<f64> {
    starts.iter().map(|s| s.cli_us as f64).collect()
}

fn field(shims: &[BTreeMap<String, u64>], key: &str) -> Vec<f64> {
    shims
        .iter()
        .filter_map(|s| s.get(key))
        .map(|v| *v as f64)
        .collect()
}

fn run(args: &Args) -> Result<()> {
    if args.rounds == 0 || args.rss_containers == 0 {
        bail!("--rounds and --rss-containers must be at least 1");
    }
    if !args.crun.is_file() {
        bail!(
            "{} is missing: apt-get install crun (scripts/bench containers does)",
            args.crun.display()
        );
    }
    let host = Host::now();
    let crun_version = std::process::Command::new(&args.crun)
        .arg("--version")
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .unwrap_or("")
                .to_owned()
        })
        .unwrap_or_default();
    let log_dir = benchrun::fresh_log_dir("container-bench")?;
    let image = Image::shared().map_err(|e| anyhow::anyhow!(qemu_tests::report(e)))?;
    println!("building cairn-shim (profile {}, static)", args.profile);
    let shim = static_binary_with_profile("shim", "cairn-shim", &args.profile)?;
    let shim_bytes = shim.len();
    let driver = std::fs::read(cb::compile_driver(&log_dir)?)?;
    let initrd = build_initramfs(&log_dir, image, args, shim, driver)?;

    let console_path = log_dir.join("console.log");
    let _lock = VmLock::acquire()?;
    let accel = accel::host_accel(&image.vmlinuz());
    println!(
        "booting one VM ({accel:?}): {} rounds per runtime, then {} shims",
        args.rounds, args.rss_containers
    );
    // A TCG start costs around a second; stops and the boot as much again.
    let limit = qemu_tests::timeout(Duration::from_secs(
        300 + 10 * (args.rounds as u64) + 15 * (args.rss_containers as u64),
    ));
    let booted = boot_and_wait(
        &image.vmlinuz(),
        &initrd,
        "console=ttyS0,115200 panic=-1 quiet loglevel=1",
        1024,
        &console_path,
        accel,
        limit,
    );
    let text = std::fs::read_to_string(&console_path).unwrap_or_default();
    booted.with_context(|| format!("the VM (console: {})", console_path.display()))?;
    let c = Console::parse(&text);
    if let Some(err) = &c.error {
        bail!(
            "the in-VM driver failed: {err} (console: {})",
            console_path.display()
        );
    }
    if !c.done || c.crun.len() != args.rounds || c.cairn.len() != args.rounds {
        bail!(
            "the driver did not finish ({} crun, {} cairn starts; console: {})",
            c.crun.len(),
            c.cairn.len(),
            console_path.display()
        );
    }

    let (cr, ca) = (ms(&running(&c.crun)), ms(&running(&c.cairn)));
    let (crc, cac) = (ms(&cli(&c.crun)), ms(&cli(&c.cairn)));
    let stat = |v: &[f64]| (cb::median(v), cb::percentile(v, 90.0));
    let ((crm, crp), (cam, cap)) = (stat(&cr), stat(&ca));
    let ((crcm, crcp), (cacm, cacp)) = (stat(&crc), stat(&cac));
    // `Rss` (smaps_rollup) walks the page tables; `VmRSS` and the
    // `Rss*` of /proc/PID/status are the kernel's counters, which 6.1
    // batches per task and can show behind by many fault-around blocks.
    let keys = [
        "Rss",
        "VmRSS",
        "RssAnon",
        "RssFile",
        "RssShmem",
        "Pss",
        "Pss_Anon",
        "Pss_File",
        "Private_Dirty",
        "Private_Clean",
        "Shared_Clean",
        "VmHWM",
        "Threads",
    ];
    let rss: BTreeMap<&str, f64> = keys
        .iter()
        .map(|k| (*k, cb::median(&field(&c.shims, k))))
        .collect();
    let mut table = format!(
        "\ncontainer start, create -> process running, {} rounds each (ms)\n\
         {:<28}{:>9}{:>9}\n\
         {:<28}{crm:>9.1}{crp:>9.1}\n\
         {:<28}{cam:>9.1}{cap:>9.1}\n\
         {:<28}{:>9.2}{:>9.2}\n\
         command returned: crun {crcm:.1} (p90 {crcp:.1}), cairn-shim run {cacm:.1} (p90 {cacp:.1})\n\
         \ncairn-shim memory, median of {} shims with a running container (kB)\n",
        args.rounds,
        "",
        "median",
        "p90",
        "crun run -d",
        "cairn-shim run",
        "ratio cairn/crun",
        cam / crm,
        cap / crp,
        c.shims.len(),
    );
    for k in keys {
        table.push_str(&format!("  {k:<16}{:>8.0}\n", rss[k]));
    }
    table.push_str(&format!(
        "  shim binary {:.2} MB (profile {})\n  first shim, resident kB by mapping:\n",
        shim_bytes as f64 / 1e6,
        args.profile
    ));
    for (name, kb) in &c.maps {
        table.push_str(&format!("    {name:<40}{kb:>6}\n"));
    }

    let report = json!({
        "host": {"started": host.started, "cpus": host.cpus, "kernel": host.kernel},
        "accel": format!("{accel:?}"),
        "crun": crun_version,
        "shim_profile": args.profile,
        "shim_binary_bytes": shim_bytes,
        "rounds": args.rounds,
        "start_running_ms": {"crun": cr, "cairn": ca},
        "start_cli_ms": {"crun": crc, "cairn": cac},
        "median_ms": {"crun": crm, "cairn": cam, "crun_cli": crcm, "cairn_cli": cacm},
        "p90_ms": {"crun": crp, "cairn": cap, "crun_cli": crcp, "cairn_cli": cacp},
        "ratio_cairn_to_crun": {"median": cam / crm, "p90": cap / crp},
        "shim_memory_kb": {"median": rss, "per_shim": c.shims, "first_shim_by_mapping": c.maps},
    });
    benchrun::publish(
        &table,
        &report,
        args.json.as_deref(),
        "container-bench.json",
    )?;
    Ok(())
}
