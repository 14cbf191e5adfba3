//! `cairn-bench`: boot-time, size and memory figures for the Cairn image.
//!
//! In one run on one machine it alternates N boots of the Cairn disk image
//! (QEMU start to `/readyz` answering 200) with N boots of the baseline
//! image (same firmware, boot loader and kernel, busybox init that powers
//! off at once; QEMU start to QEMU exit), and reports the medians and
//! their ratio. It also reports the size of every artifact and the RSS of
//! cairn-init and cairnd after boot, read from the node's `/metrics`.
//! Output: a table on stdout and JSON in `target/qemu-tests/bench.json`.
//!
//! Needs root, like the scenarios: VMs run on a private network namespace.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;
use qemu_tests::metrics::find_sample;
use qemu_tests::vm::{DiskBus, DiskFormat, DiskSpec, NicModel};
use qemu_tests::{BaselineImage, Image, Network, NetworkConfig, Vm, VmSpec, paths};
use serde_json::json;

/// Boot-time ratio, artifact sizes and RSS of the Cairn image, measured in QEMU.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Boots of each image (alternating).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Seconds one boot may take before the run is abandoned.
    #[arg(long, default_value_t = 300)]
    timeout_secs: u64,
    /// Seconds the node idles after /readyz before its RSS is read.
    #[arg(long, default_value_t = 5)]
    settle_secs: u64,
    /// Where to write the JSON report.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// Targets from the issue, in decimal megabytes (the stricter reading).
const INITRAMFS_TARGET_BYTES: u64 = 30_000_000;
const INIT_RSS_TARGET_BYTES: f64 = 4e6;
const AGENT_RSS_TARGET_BYTES: f64 = 30e6;
const RSS_METRIC: &str = "cairn_process_resident_bytes";

fn main() -> ExitCode {
    match run(&Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cairn-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[derive(Debug)]
struct CairnBoot {
    seconds: f64,
    init_rss: f64,
    agent_rss: f64,
    accel: &'static str,
}

fn run(args: &Args) -> Result<()> {
    if args.runs == 0 {
        bail!("--runs must be at least 1");
    }
    let image = Image::shared().context("the Cairn image")?;
    let baseline = BaselineImage::shared().context("the baseline image")?;
    let net = Network::start(&NetworkConfig::new("cairn-bench"))
        .context("starting the private network")?;
    let limit = Duration::from_secs(args.timeout_secs);

    let mut cairn = Vec::new();
    let mut base = Vec::new();
    for i in 0..args.runs {
        eprintln!("cairn-bench: run {}/{}: Cairn disk image", i + 1, args.runs);
        let boot = boot_cairn(&net, image, i, limit, Duration::from_secs(args.settle_secs))?;
        eprintln!("cairn-bench:   ready after {:.1} s", boot.seconds);
        cairn.push(boot);
        eprintln!("cairn-bench: run {}/{}: baseline image", i + 1, args.runs);
        let seconds = boot_baseline(&net, image, baseline, i, limit)?;
        eprintln!("cairn-bench:   exited after {seconds:.1} s");
        base.push(seconds);
    }
    drop(net);
    let accel = cairn.first().map_or("unknown", |b| b.accel);

    let cairn_median = median(cairn.iter().map(|b| b.seconds).collect());
    let base_median = median(base.clone());
    let ratio = cairn_median / base_median;
    let init_rss = median(cairn.iter().map(|b| b.init_rss).collect());
    let agent_rss = median(cairn.iter().map(|b| b.agent_rss).collect());

    let mut artifacts = Vec::new();
    for name in [
        "pxe/vmlinuz",
        "pxe/initramfs.img",
        "cairn.raw",
        "cairn.qcow2",
        "cairn.vmdk",
        "cairn.ova",
    ] {
        artifacts.push((name.to_owned(), file_size(&image.dir().join(name))?));
    }
    artifacts.push(("baseline.raw".to_owned(), file_size(baseline.raw())?));
    let initramfs_bytes = artifacts
        .iter()
        .find(|(n, _)| n == "pxe/initramfs.img")
        .map_or(0, |(_, s)| s.apparent);

    println!(
        "Cairn benchmark ({} runs each, accelerator {accel}, QEMU start to ready/exit)",
        args.runs
    );
    println!();
    println!("{:<36} {:>10}   runs s", "boot", "median s");
    println!(
        "{:<36} {:>10.2}   {}",
        "Cairn disk image -> /readyz 200",
        cairn_median,
        list(cairn.iter().map(|b| b.seconds))
    );
    println!(
        "{:<36} {:>10.2}   {}",
        "baseline (busybox poweroff) -> exit",
        base_median,
        list(base.iter().copied())
    );
    println!("{:<36} {:>10.2}", "ratio Cairn / baseline", ratio);
    println!();
    println!("{:<34} {:>14} {:>14}", "artifact", "bytes", "allocated");
    for (name, size) in &artifacts {
        println!("{name:<34} {:>14} {:>14}", size.apparent, size.allocated);
    }
    println!();
    println!(
        "{:<34} {:>14} {:>14} {:>6}",
        "after boot (median)", "value", "target", "ok"
    );
    let row = |what: &str, value: f64, target: f64| {
        println!(
            "{what:<34} {:>14} {:>14} {:>6}",
            mb(value),
            mb(target),
            if value <= target { "yes" } else { "NO" }
        );
    };
    #[expect(clippy::cast_precision_loss, reason = "sizes are far below 2^52 bytes")]
    let initramfs_f = initramfs_bytes as f64;
    #[expect(clippy::cast_precision_loss, reason = "a constant far below 2^52")]
    let initramfs_target = INITRAMFS_TARGET_BYTES as f64;
    row("initramfs.img size", initramfs_f, initramfs_target);
    row("cairn-init RSS", init_rss, INIT_RSS_TARGET_BYTES);
    row("cairnd RSS (idle)", agent_rss, AGENT_RSS_TARGET_BYTES);

    let report = json!({
        "runs": args.runs,
        "accelerator": accel,
        "cairn_ready_seconds": cairn.iter().map(|b| b.seconds).collect::<Vec<_>>(),
        "baseline_exit_seconds": base,
        "cairn_ready_median_seconds": cairn_median,
        "baseline_exit_median_seconds": base_median,
        "ratio": ratio,
        "rss_bytes": {
            "cairn-init": cairn.iter().map(|b| b.init_rss).collect::<Vec<_>>(),
            "cairnd": cairn.iter().map(|b| b.agent_rss).collect::<Vec<_>>(),
            "cairn-init_median": init_rss,
            "cairnd_median": agent_rss,
        },
        "artifact_bytes": artifacts.iter().map(|(n, s)| (n.clone(), json!({"apparent": s.apparent, "allocated": s.allocated}))).collect::<serde_json::Map<_, _>>(),
        "targets": {
            "initramfs_max_bytes": INITRAMFS_TARGET_BYTES,
            "cairn-init_rss_max_bytes": INIT_RSS_TARGET_BYTES,
            "cairnd_rss_max_bytes": AGENT_RSS_TARGET_BYTES,
            "initramfs_ok": initramfs_bytes <= INITRAMFS_TARGET_BYTES,
            "cairn-init_rss_ok": init_rss <= INIT_RSS_TARGET_BYTES,
            "cairnd_rss_ok": agent_rss <= AGENT_RSS_TARGET_BYTES,
        },
        "image_dir": image.dir(),
    });
    let json_path = args
        .json
        .clone()
        .unwrap_or_else(|| paths::harness_dir().join("bench.json"));
    if let Some(dir) = json_path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let text = serde_json::to_string_pretty(&report).context("encoding the report")?;
    std::fs::write(&json_path, text + "\n")
        .with_context(|| format!("writing {}", json_path.display()))?;
    println!();
    println!("JSON: {}", json_path.display());
    Ok(())
}

fn boot_cairn(
    net: &Network,
    image: &Image,
    i: usize,
    limit: Duration,
    settle: Duration,
) -> Result<CairnBoot> {
    let mut vm = Vm::start(net, VmSpec::virtio_disk(&format!("cairn-{i}"), image))
        .context("starting the Cairn VM")?;
    let ip = vm.wait_for_ready(limit).context("waiting for /readyz")?;
    let seconds = vm.started().elapsed().as_secs_f64();
    std::thread::sleep(settle);
    let metrics = vm.health_get(ip, "/metrics").context("GET /metrics")?;
    if metrics.status != 200 {
        bail!("/metrics answered {}: {}", metrics.status, metrics.text());
    }
    let text = metrics.text();
    let rss = |process: &str| {
        find_sample(&text, RSS_METRIC, &[("process", process)]).with_context(|| {
            format!("/metrics has no {RSS_METRIC}{{process=\"{process}\"}}:\n{text}")
        })
    };
    Ok(CairnBoot {
        seconds,
        init_rss: rss("cairn-init")?,
        agent_rss: rss("cairnd")?,
        accel: vm.accel().name(),
    })
}

fn boot_baseline(
    net: &Network,
    image: &Image,
    baseline: &BaselineImage,
    i: usize,
    limit: Duration,
) -> Result<f64> {
    let disk = DiskSpec {
        base: baseline.raw().to_path_buf(),
        format: DiskFormat::Raw,
        bus: DiskBus::VirtioBlk,
    };
    let spec = VmSpec::custom(
        &format!("baseline-{i}"),
        image,
        Some(disk),
        NicModel::VirtioNet,
    );
    let mut vm = Vm::start(net, spec).context("starting the baseline VM")?;
    let started: Instant = vm.started();
    let status = vm
        .wait_for_exit(limit)
        .context("waiting for the baseline to power off")?;
    let seconds = started.elapsed().as_secs_f64();
    if !status.success() {
        bail!("baseline QEMU exited with {status}{}", vm.failure_context());
    }
    Ok(seconds)
}

#[derive(Debug, Clone, Copy)]
struct Size {
    apparent: u64,
    allocated: u64,
}

fn file_size(path: &Path) -> Result<Size> {
    let meta = std::fs::metadata(path).with_context(|| format!("stat {}", path.display()))?;
    Ok(Size {
        apparent: meta.len(),
        allocated: meta.blocks() * 512,
    })
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    match n {
        0 => f64::NAN,
        _ if n % 2 == 1 => values[n / 2],
        _ => f64::midpoint(values[n / 2 - 1], values[n / 2]),
    }
}

fn list(values: impl Iterator<Item = f64>) -> String {
    values
        .map(|v| format!("{v:.1}"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn mb(bytes: f64) -> String {
    format!("{:.2} MB", bytes / 1e6)
}
