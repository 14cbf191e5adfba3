//! `cairn-image`: builds Cairn's boot media. See the `image_build` crate docs.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use image_build::build::{self, BaselineOptions, BinarySource, BuildOptions};
use image_build::oci_image;
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
        /// Use prebuilt static `cairn-init`, `cairnd`, `cairn-shim` and `cairn`
        /// from this directory instead of running cargo.
        #[arg(long)]
        binaries: Option<PathBuf>,
        /// Put this machine config on the ESP as cairn/config.toml.
        #[arg(long)]
        machine_config: Option<PathBuf>,
        /// Bake this oci-archive (as `cairn-image oci archive` or `skopeo
        /// copy ... oci-archive:FILE` write it) into the ESP; cairnd imports
        /// it into the image store on first start. Repeatable.
        #[arg(long = "bake-image", value_name = "FILE")]
        bake_images: Vec<PathBuf>,
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
    /// Build OCI images (for tests and the catalog) without Docker.
    #[command(subcommand)]
    Oci(OciCommand),
}

#[derive(Debug, Subcommand)]
enum OciCommand {
    /// Pack a directory as a one-layer image into an OCI layout.
    FromDir {
        /// The directory that becomes the image's root file system.
        dir: PathBuf,
        #[command(flatten)]
        image: ImageArgs,
    },
    /// Pack Debian packages and their dependency closure (as apt resolves
    /// it for an empty system, without recommends) as a one-layer image.
    FromDebs {
        /// Package names, e.g. busybox-static or redis-server.
        #[arg(required = true)]
        packages: Vec<String>,
        #[command(flatten)]
        image: ImageArgs,
        /// Download cache (default: $CAIRN_CACHE or ~/.cache/cairn-image).
        #[arg(long)]
        cache: Option<PathBuf>,
    },
    /// Write a layout as an oci-archive tar (what `skopeo copy ...
    /// oci-archive:FILE:REF` writes and `cairn image import` reads).
    Archive { layout: PathBuf, file: PathBuf },
}

#[derive(Debug, clap::Args)]
struct ImageArgs {
    /// The name in the layout's index.json, e.g. busybox:latest.
    #[arg(long = "ref", value_parser = parse_ref)]
    reference: oci::RefName,
    /// The OCI layout directory (created if missing; other images kept).
    #[arg(long)]
    out: PathBuf,
    /// One argv element of the entrypoint; repeat for more.
    #[arg(long, allow_hyphen_values = true)]
    entrypoint: Vec<String>,
    /// One argv element of the default command; repeat for more.
    #[arg(long, allow_hyphen_values = true)]
    cmd: Vec<String>,
    /// KEY=VALUE; repeatable. PATH defaults to docker's.
    #[arg(long)]
    env: Vec<String>,
    #[arg(long)]
    workdir: Option<String>,
    #[arg(long)]
    user: Option<String>,
    /// PORT or PORT/PROTO; repeatable.
    #[arg(long)]
    expose: Vec<String>,
}

fn parse_ref(s: &str) -> Result<oci::RefName, oci::RefNameError> {
    oci::RefName::parse(s)
}

impl ImageArgs {
    fn settings(&self) -> oci_image::ImageSettings {
        oci_image::ImageSettings {
            entrypoint: self.entrypoint.clone(),
            cmd: self.cmd.clone(),
            env: self.env.clone(),
            workdir: self.workdir.clone(),
            user: self.user.clone(),
            expose: self.expose.clone(),
        }
    }
}

/// SOURCE_DATE_EPOCH if set, else 0: image timestamps never come from
/// the clock or the source files.
fn oci_epoch() -> anyhow::Result<u64> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) => v
            .trim()
            .parse()
            .with_context(|| format!("SOURCE_DATE_EPOCH={v:?} is not a number of seconds")),
        Err(_) => Ok(0),
    }
}

fn run_oci(cmd: OciCommand) -> anyhow::Result<()> {
    let report = |built: &oci_image::BuiltImage, out: &std::path::Path| {
        println!(
            "{} -> {} (linux/amd64): manifest {}, layer {} ({} bytes, {} entries), diff_id {}",
            built.reference,
            out.display(),
            built.manifest.digest(),
            built.layer_digest,
            built.layer_size,
            built.entries,
            built.diff_id
        );
    };
    match cmd {
        OciCommand::FromDir { dir, image } => {
            let mut tree = oci_image::Tree::default();
            tree.add_root(&dir, &[])
                .with_context(|| format!("reading {}", dir.display()))?;
            let built = oci_image::build_image(
                &tree,
                &image.settings(),
                &image.reference,
                &image.out,
                oci_epoch()?,
                &format!("cairn-image oci from-dir {}", dir.display()),
            )
            .with_context(|| format!("building {} from {}", image.reference, dir.display()))?;
            report(&built, &image.out);
        }
        OciCommand::FromDebs {
            packages,
            image,
            cache,
        } => {
            let cache = cache.unwrap_or_else(image_build::deb::default_cache_dir);
            let (tree, closure) = oci_image::tree_from_debs(&packages, &cache)
                .with_context(|| format!("gathering {}", packages.join(" ")))?;
            let names: Vec<String> = closure
                .iter()
                .map(|p| format!("{}={}", p.name, p.version))
                .collect();
            let built = oci_image::build_image(
                &tree,
                &image.settings(),
                &image.reference,
                &image.out,
                oci_epoch()?,
                &format!("cairn-image oci from-debs {}", names.join(" ")),
            )
            .with_context(|| format!("building {}", image.reference))?;
            println!("packages: {}", names.join(" "));
            report(&built, &image.out);
        }
        OciCommand::Archive { layout, file } => {
            let opened = oci::Layout::open(&layout)
                .with_context(|| format!("opening the layout {}", layout.display()))?;
            let names = opened
                .verify()
                .with_context(|| format!("verifying {}", layout.display()))?;
            oci::archive::write_archive_file(&opened, &file)
                .with_context(|| format!("writing {}", file.display()))?;
            let names: Vec<&str> = names.iter().map(|n| n.as_str()).collect();
            println!("{}: {}", file.display(), names.join(", "));
        }
    }
    Ok(())
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
        Command::Oci(cmd) => return run_oci(cmd),
        Command::Build {
            output,
            profile,
            binaries,
            machine_config,
            bake_images,
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
                    bake_images,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn build_args(extra: &[&str]) -> Result<Cli, clap::Error> {
        let mut args = vec!["cairn-image", "build", "--output", "out"];
        args.extend_from_slice(extra);
        Cli::try_parse_from(args)
    }

    #[test]
    fn bake_image_is_repeatable_and_keeps_the_order_given() {
        let cli = build_args(&["--bake-image", "b.tar", "--bake-image", "/x/a.tar"]).unwrap();
        let Command::Build { bake_images, .. } = cli.command else {
            panic!("not a build command");
        };
        assert_eq!(
            bake_images,
            [PathBuf::from("b.tar"), PathBuf::from("/x/a.tar")]
        );
    }

    #[test]
    fn a_build_bakes_nothing_unless_asked() {
        let Command::Build { bake_images, .. } = build_args(&[]).unwrap().command else {
            panic!("not a build command");
        };
        assert!(bake_images.is_empty());
    }

    #[test]
    fn bake_image_needs_a_file() {
        assert!(build_args(&["--bake-image"]).is_err());
    }
}
