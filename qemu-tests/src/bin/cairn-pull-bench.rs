//! `cairn-pull-bench`: pulling a multi-layer image from a local registry,
//! Cairn's puller against `skopeo copy docker://… oci:DIR`.
//!
//! Starts Debian's `docker-registry` on loopback with TLS from a CA made
//! for the run, builds a multi-layer image with the `oci` crate (gzip
//! layers of pseudo-random, partly compressible data), pushes it with
//! skopeo (`--preserve-digests`), then alternates rounds: Cairn's
//! `nodeagent::images::pull::Puller` (the code behind `POST
//! /v1/images/pull`, without the API hop) into a fresh image store, and
//! skopeo into a fresh OCI directory. The orders alternate between rounds
//! so neither always sees a warm page cache first.
//!
//! What each side does differs in one way that matters: skopeo downloads
//! and verifies the blobs; Cairn downloads, verifies *and unpacks* every
//! layer into its chain, because an image in the store is ready to run.
//! Both numbers are reported, with Cairn's download alone (up to the last
//! blob stored) next to its total.
//!
//! Output: a table on stdout and JSON in `target/qemu-tests/pull-bench.json`.
//! Needs docker-registry and skopeo (`scripts/bench images` installs them).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Parser;
use nodeagent::config::{RegistryCa, RegistryConfig, RegistryHost};
use nodeagent::images::ImageStore;
use nodeagent::images::pull::{PullEvent, PullRef, Puller};
use oci::media::{OCI_CONFIG, OCI_LAYER_GZIP, OCI_MANIFEST};
use oci::{Digest, Layout, RefName};
use oci_spec::image::{Descriptor, MediaType};
use qemu_tests::benchrun::{self, Host};
use qemu_tests::registry::SiteRegistry;
use serde_json::json;

/// Pull time of a multi-layer image: Cairn against skopeo.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Rounds per client (clients alternate).
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Layers in the image.
    #[arg(long, default_value_t = 4)]
    layers: usize,
    /// Uncompressed MiB per layer.
    #[arg(long, default_value_t = 32)]
    layer_mib: usize,
    /// Where to write the JSON report.
    #[arg(long)]
    json: Option<PathBuf>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cairn-pull-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// A gzipped one-file layer: pseudo-random bytes, half of them from a
/// small alphabet, so gzip has some work but does not shrink it to
/// nothing (real layers compress to a third or so).
fn layer(index: usize, mib: usize) -> Result<(Vec<u8>, Digest)> {
    let size = mib << 20;
    let mut data = Vec::with_capacity(size);
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15 ^ (index as u64 + 1);
    while data.len() < size {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let bytes = x.to_le_bytes();
        data.extend_from_slice(&bytes[..4]);
        data.extend(bytes[4..].iter().map(|b| b'a' + b % 8));
    }
    data.truncate(size);
    let mut builder = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_ustar();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_mode(0o644);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(0);
    header.set_size(data.len() as u64);
    builder.append_data(&mut header, format!("layer{index}.bin"), &data[..])?;
    let tar = builder.into_inner()?;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar)?;
    Ok((gz.finish()?, Digest::of(&tar)))
}

fn build_image(layout: &Layout, args: &Args) -> Result<(Digest, u64)> {
    let mut descs = Vec::new();
    let mut diff_ids = Vec::new();
    let mut bytes = 0u64;
    for i in 0..args.layers {
        let (blob, diff_id) = layer(i, args.layer_mib)?;
        let (digest, size) = layout.write_blob(&blob)?;
        bytes += size;
        descs
            .push(json!({"mediaType": OCI_LAYER_GZIP, "digest": digest.to_string(), "size": size}));
        diff_ids.push(diff_id.to_string());
    }
    let config = json!({
        "architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    });
    let (config_digest, config_size) = layout.write_blob(&serde_json::to_vec(&config)?)?;
    let manifest = json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": config_digest.to_string(), "size": config_size},
        "layers": descs,
    });
    let (digest, size) = layout.write_blob(&serde_json::to_vec(&manifest)?)?;
    let desc = Descriptor::new(MediaType::ImageManifest, size, digest.to_spec());
    layout.tag(&RefName::parse("bench:1")?, &desc)?;
    Ok((digest, bytes))
}

fn skopeo(args: &[&str]) -> Result<()> {
    let out = Command::new("skopeo")
        .args(args)
        .output()
        .context("running skopeo (apt-get install skopeo)")?;
    if !out.status.success() {
        bail!(
            "skopeo {args:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Seconds for Cairn: until the last blob is stored, and in total.
fn cairn_round(
    runtime: &tokio::runtime::Runtime,
    dir: &Path,
    registries: &[RegistryConfig],
    reference: &PullRef,
) -> Result<(f64, f64)> {
    let store = Arc::new(ImageStore::open(dir)?);
    let puller = Puller::new(store, registries.to_vec());
    let started = Instant::now();
    let (downloaded, total) = runtime.block_on(async {
        let (tx, mut rx) = tokio::sync::mpsc::channel(256);
        let watch = tokio::spawn(async move {
            let mut last_blob = None;
            while let Some(event) = rx.recv().await {
                if let PullEvent::Blob { done, total, .. } = event
                    && done >= total
                {
                    last_blob = Some(started.elapsed());
                }
            }
            last_blob
        });
        let pulled = puller.pull(reference, &tx).await;
        drop(tx);
        let total = started.elapsed();
        let last_blob = watch.await.ok().flatten().unwrap_or(total);
        pulled.map(|_| (last_blob, total))
    })?;
    Ok((downloaded.as_secs_f64(), total.as_secs_f64()))
}

fn skopeo_round(dir: &Path, cert_dir: &Path, source: &str) -> Result<f64> {
    let started = Instant::now();
    skopeo(&[
        "copy",
        "--quiet",
        "--src-cert-dir",
        &cert_dir.display().to_string(),
        &format!("docker://{source}"),
        &format!("oci:{}:bench", dir.display()),
    ])?;
    Ok(started.elapsed().as_secs_f64())
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

fn run(args: &Args) -> Result<()> {
    if args.rounds == 0 || args.layers == 0 || args.layer_mib == 0 {
        bail!("--rounds, --layers and --layer-mib must be at least 1");
    }
    let host = Host::now();
    let work = tempfile::tempdir()?;
    let port = free_port()?;
    let site = SiteRegistry::start(
        &work.path().join("registry"),
        std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        None,
        None,
    )?;
    let registry = site.host();

    println!(
        "building a {}-layer image of {} MiB per layer",
        args.layers, args.layer_mib
    );
    let layout = Layout::create(&work.path().join("src"))?;
    let (digest, compressed) = build_image(&layout, args)?;
    let archive = work.path().join("bench.tar");
    oci::archive::write_archive_file(&layout, &archive)?;
    let source = format!("{registry}/bench/image:1");
    site.push(&archive, "bench:1", "bench/image:1")?;

    let registries = vec![RegistryConfig {
        host: RegistryHost::try_from(registry.clone())?,
        mirrors: Vec::new(),
        auth: None,
        ca: Some(RegistryCa::File(site.ca_file())),
        plain_http: false,
    }];
    let reference: PullRef = source.parse()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;

    let mut cairn_download = Vec::new();
    let mut cairn_total = Vec::new();
    let mut skopeo_times = Vec::new();
    for round in 0..args.rounds {
        let order = if round % 2 == 0 {
            ["cairn", "skopeo"]
        } else {
            ["skopeo", "cairn"]
        };
        for who in order {
            let dir = work.path().join(format!("{who}-{round}"));
            if who == "cairn" {
                let (download, total) = cairn_round(&runtime, &dir, &registries, &reference)?;
                println!("round {round}: cairn {download:.2} s download, {total:.2} s with unpack");
                cairn_download.push(download);
                cairn_total.push(total);
            } else {
                let t = skopeo_round(&dir, site.cert_dir(), &source)?;
                println!("round {round}: skopeo {t:.2} s");
                skopeo_times.push(t);
            }
            std::fs::remove_dir_all(&dir)?;
        }
    }
    let (cd, ct, sk) = (
        median(&cairn_download),
        median(&cairn_total),
        median(&skopeo_times),
    );
    let table = format!(
        "\npull of {} layers, {:.1} MiB compressed, {} rounds (medians)\n\
         cairn download+verify   {cd:>7.2} s   ratio to skopeo {:.2}\n\
         cairn incl. unpack      {ct:>7.2} s   ratio to skopeo {:.2}\n\
         skopeo copy to oci:DIR  {sk:>7.2} s\n",
        args.layers,
        compressed as f64 / f64::from(1u32 << 20),
        args.rounds,
        cd / sk,
        ct / sk,
    );
    let report = json!({
        "host": {"started": host.started, "cpus": host.cpus, "kernel": host.kernel},
        "image": {"digest": digest.to_string(), "layers": args.layers,
                  "layer_mib_uncompressed": args.layer_mib, "compressed_bytes": compressed},
        "rounds": args.rounds,
        "cairn_download_s": cairn_download,
        "cairn_total_s": cairn_total,
        "skopeo_s": skopeo_times,
        "median": {"cairn_download_s": cd, "cairn_total_s": ct, "skopeo_s": sk},
        "ratio": {"download_to_skopeo": cd / sk, "total_to_skopeo": ct / sk},
    });
    benchrun::publish(&table, &report, args.json.as_deref(), "pull-bench.json")?;
    Ok(())
}
