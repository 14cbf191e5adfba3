//! `cairn-image`: builds Cairn's boot media. See the `image_build` crate docs.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use image_build::build::{self, BaselineOptions, BinarySource, BuildOptions};
use image_build::progress::Reporter;

#[derive(Debug, Parser)]
#[command(
    name = "cairn-image",
    version,
    about = "Build Cairn disk images, VM templates and the PXE set"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Build cairn.raw, cairn.qcow2, cairn.vmdk, cairn.ova, pxe/ and SHA256SUMS.
    Build {
        /// Output directory (created if missing).
        #[arg(long)]
        output: PathBuf,
        /// Image profile.
        #[arg(long, default_value_os_t = default_profile())]
        profile: PathBuf,
        /// Use prebuilt static `cairn-init`, `cairnd` and `cairn` from this
        /// directory instead of running cargo.
        #[arg(long)]
        binaries: Option<PathBuf>,
        /// Put this machine config on the ESP as cairn/config.toml.
        #[arg(long)]
        machine_config: Option<PathBuf>,
        /// Download cache (default: $CAIRN_CACHE or ~/.cache/cairn-image).
        #[arg(long)]
        cache: Option<PathBuf>,
    },
    /// Build baseline.raw: same boot path, busybox /init that powers off.
    Baseline {
        #[arg(long)]
        output: PathBuf,
        #[arg(long, default_value_os_t = default_profile())]
        profile: PathBuf,
        #[arg(long)]
        cache: Option<PathBuf>,
    },
}

fn workspace() -> PathBuf {
    image_build::binaries::workspace_root().unwrap_or_else(|| PathBuf::from("."))
}

fn default_profile() -> PathBuf {
    workspace().join("configs/profiles/default.toml")
}

fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let reporter = Reporter::detect();
    let epoch = std::env::var("SOURCE_DATE_EPOCH").ok();
    let started = std::time::Instant::now();
    let report = match cli.command {
        Command::Build {
            output,
            profile,
            binaries,
            machine_config,
            cache,
        } => {
            let binaries = match binaries {
                Some(dir) => BinarySource::Dir(dir),
                None => BinarySource::Cargo {
                    workspace: workspace(),
                },
            };
            build::build(
                &BuildOptions {
                    profile,
                    output: output.clone(),
                    cache: cache.unwrap_or_else(image_build::deb::default_cache_dir),
                    binaries,
                    source_date_epoch: epoch,
                    repo: workspace(),
                    machine_config,
                },
                &reporter,
            )
            .with_context(|| format!("building the Cairn image into {}", output.display()))?
        }
        Command::Baseline {
            output,
            profile,
            cache,
        } => build::baseline(
            &BaselineOptions {
                profile,
                output: output.clone(),
                cache: cache.unwrap_or_else(image_build::deb::default_cache_dir),
                source_date_epoch: epoch,
                repo: workspace(),
            },
            &reporter,
        )
        .with_context(|| format!("building the baseline image into {}", output.display()))?,
    };
    print!("{}", report.render());
    println!("done in {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            for cause in err.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            ExitCode::FAILURE
        }
    }
}
