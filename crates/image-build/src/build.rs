//! The build pipeline: the I/O shell that runs the pure pieces in order
//! and writes the artifacts.
//!
//! Everything is made in a private work directory inside the output
//! directory and renamed into place when complete, so an interrupted build
//! never leaves a half-written `cairn.raw` that looks finished.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use crate::bake::{self, BakeError, BakedArchive};
use crate::binaries::{self, BinariesError, CairnBinaries};
use crate::checksums;
use crate::convert::{self, ConvertError, TargetFormat};
use crate::deb::{self, FetchError, PinnedPackage, UnpackedPackage};
use crate::disk::{self, DiskError, DiskLayout};
use crate::esp::{self, EspContents, EspError, EspInputs};
use crate::initramfs::{self, CaBundleError, CairnContents, CompressError, TreeError};
use crate::modules::{
    self, Closure, DecompressError, ModInfo, ModinfoError, ModuleTree, ModuleTreeError,
    ResolveError,
};
use crate::ova::{self, OvaError, OvaMember, OvfParams};
use crate::profile::{Compression, KernelCmdline, Profile, ProfileError};
use crate::progress::{Reporter, human_bytes};
use crate::pxe;
use crate::reproducible::{EpochError, EpochSource, IdSeed, SourceDateEpoch};
use crate::state::{self, StateError};
use crate::tools::{HostTool, ToolError};

/// The Cairn version every artifact carries (the workspace version).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Where the Cairn binaries come from.
#[derive(Debug, Clone)]
pub enum BinarySource {
    /// Run cargo in this workspace.
    Cargo { workspace: PathBuf },
    /// Use `cairn-init`, `cairnd` and `cairn` from this directory.
    Dir(PathBuf),
}

#[derive(Debug, Clone)]
pub struct BuildOptions {
    pub profile: PathBuf,
    pub output: PathBuf,
    pub cache: PathBuf,
    pub binaries: BinarySource,
    /// The value of `SOURCE_DATE_EPOCH`, if set.
    pub source_date_epoch: Option<String>,
    /// Directory used to find the git commit time when no epoch is given.
    pub repo: PathBuf,
    /// Optional machine config copied to the ESP as `cairn/config.toml`.
    pub machine_config: Option<PathBuf>,
    /// oci-archives baked into the ESP for cairnd to import on first start.
    pub bake_images: Vec<PathBuf>,
}

/// Why a build failed; each variant names the step.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("loading the profile")]
    Profile(#[from] ProfileError),
    #[error("choosing the build timestamp")]
    Epoch(#[from] EpochError),
    #[error("a required host tool is missing")]
    Tool(#[from] ToolError),
    #[error("fetching a pinned package")]
    Fetch(#[from] FetchError),
    #[error("the kernel package {root} has {count} boot/vmlinuz-* files, expected one")]
    Vmlinuz { root: PathBuf, count: usize },
    #[error("preparing the Cairn binaries")]
    Binaries(#[from] BinariesError),
    #[error("indexing the kernel modules")]
    ModuleTree(#[from] ModuleTreeError),
    #[error("choosing kernel modules")]
    Modules(#[from] ResolveError<ModuleReadError>),
    #[error("assembling the initramfs tree")]
    Tree(#[from] TreeError),
    #[error("compressing the initramfs")]
    Compress(#[from] CompressError),
    #[error("making the CA bundle")]
    CaBundle(#[from] CaBundleError),
    #[error("writing the ESP")]
    Esp(#[from] EspError),
    #[error("checking the images to bake")]
    Bake(#[from] BakeError),
    #[error("making STATE")]
    State(#[from] StateError),
    #[error("writing the disk image")]
    Disk(#[from] DiskError),
    #[error("converting the disk image")]
    Convert(#[from] ConvertError),
    #[error("writing the OVA")]
    Ova(#[from] OvaError),
    #[error("the kernel command line")]
    Cmdline(#[source] crate::profile::ValueError),
    #[error("{what} {path}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> BuildError {
    let path = path.to_owned();
    move |source| BuildError::Io { what, path, source }
}

/// Why one module file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ModuleReadError {
    #[error("reading {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("decompressing a module")]
    Decompress(#[from] DecompressError),
    #[error("reading .modinfo of {path}")]
    Modinfo {
        path: String,
        #[source]
        source: ModinfoError,
    },
}

/// Sizes and facts for the build log and the benchmark.
#[derive(Debug, Clone, Default)]
pub struct BuildReport {
    pub epoch: u64,
    pub epoch_source: String,
    pub kernel_release: String,
    pub vmlinuz_bytes: u64,
    pub initramfs_bytes: u64,
    pub initramfs_uncompressed_bytes: u64,
    pub modules_shipped: usize,
    pub modules_builtin: Vec<String>,
    pub softdeps_unmet: Vec<String>,
    /// The ESP's size; larger than the profile's when baked images need it.
    pub esp_mib: u32,
    /// Baked archives: ESP file name, size, images named.
    pub baked: Vec<BakedArchive>,
    /// Artifact path (relative to the output dir) -> size in bytes.
    pub artifacts: BTreeMap<String, u64>,
}

impl BuildReport {
    pub fn render(&self) -> String {
        let mut out = String::new();
        out.push_str(&format!(
            "SOURCE_DATE_EPOCH={} ({})\nkernel {}: vmlinuz {}\ninitramfs {} ({} uncompressed), {} modules shipped\n",
            self.epoch,
            self.epoch_source,
            self.kernel_release,
            human_bytes(self.vmlinuz_bytes),
            human_bytes(self.initramfs_bytes),
            human_bytes(self.initramfs_uncompressed_bytes),
            self.modules_shipped,
        ));
        if !self.modules_builtin.is_empty() {
            out.push_str(&format!(
                "built into the kernel (not shipped): {}\n",
                self.modules_builtin.join(", ")
            ));
        }
        for s in &self.softdeps_unmet {
            out.push_str(&format!(
                "warning: soft dependency {s} is not shipped; add a provider to the profile
"
            ));
        }
        for archive in &self.baked {
            out.push_str(&format!(
                "baked {} ({}): {}\n",
                archive.name,
                human_bytes(archive.len),
                archive.images.join(", ")
            ));
        }
        out.push_str(&format!("ESP {} MiB\n", self.esp_mib));
        for (name, size) in &self.artifacts {
            out.push_str(&format!("{name}: {} ({size} bytes)\n", human_bytes(*size)));
        }
        out
    }
}

/// Everything derived from the profile and the epoch.
#[derive(Debug)]
struct Context {
    profile: Profile,
    epoch: SourceDateEpoch,
    epoch_source: EpochSource,
    seed: IdSeed,
    cmdline: KernelCmdline,
}

impl Context {
    fn new(profile: &Path, epoch: Option<&str>, repo: &Path) -> Result<Self, BuildError> {
        let profile = Profile::load(profile)?;
        let (epoch, epoch_source) = SourceDateEpoch::discover(epoch, repo)?;
        let cmdline = profile.kernel.full_cmdline().map_err(BuildError::Cmdline)?;
        Ok(Self {
            seed: IdSeed::new(VERSION, epoch),
            profile,
            epoch,
            epoch_source,
            cmdline,
        })
    }
}

/// The unpacked kernel package.
#[derive(Debug)]
struct Kernel {
    release: String,
    vmlinuz: Vec<u8>,
    module_dir: PathBuf,
}

/// Mozilla's CA roots from the pinned `ca-certificates` package, as one
/// PEM bundle.
fn fetch_ca_bundle(
    ctx: &Context,
    cache: &Path,
    reporter: &Reporter,
) -> Result<Vec<u8>, BuildError> {
    let pkg = PinnedPackage {
        name: ctx.profile.trust.ca_package.clone(),
        version: ctx.profile.trust.ca_version.clone(),
        version_key: "trust.ca-version",
    };
    let step = reporter.step(&format!("fetching {}={}", pkg.name, pkg.version));
    let unpacked = deb::fetch_and_unpack(&pkg, cache)?;
    let dir = unpacked.root.join("usr/share/ca-certificates/mozilla");
    let (bundle, count) = initramfs::ca_bundle(&dir)?;
    step.finish(&format!(
        "{count} roots, {}",
        human_bytes(bundle.len() as u64)
    ));
    Ok(bundle)
}

fn fetch_kernel(ctx: &Context, cache: &Path, reporter: &Reporter) -> Result<Kernel, BuildError> {
    let pkg = PinnedPackage {
        name: ctx.profile.kernel.package.clone(),
        version: ctx.profile.kernel.version.clone(),
        version_key: "kernel.version",
    };
    let step = reporter.step(&format!("fetching {}={}", pkg.name, pkg.version));
    let unpacked = deb::fetch_and_unpack(&pkg, cache)?;
    step.finish(&format!("sha256 {}", &unpacked.sha256[..16]));
    let boot = unpacked.root.join("boot");
    let mut found = Vec::new();
    for entry in fs::read_dir(&boot).map_err(io("listing", &boot))? {
        let entry = entry.map_err(io("listing", &boot))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(release) = name.strip_prefix("vmlinuz-") {
            found.push((release.to_owned(), entry.path()));
        }
    }
    let [(release, path)] =
        <[(String, PathBuf); 1]>::try_from(found).map_err(|v| BuildError::Vmlinuz {
            root: unpacked.root.clone(),
            count: v.len(),
        })?;
    let vmlinuz = fs::read(&path).map_err(io("reading", &path))?;
    Ok(Kernel {
        module_dir: unpacked.root.join("lib/modules").join(&release),
        release,
        vmlinuz,
    })
}

/// Relative paths of every module file under `dir`, sorted.
fn module_files(dir: &Path) -> Result<Vec<String>, BuildError> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in fs::read_dir(&d).map_err(io("listing", &d))? {
            let entry = entry.map_err(io("listing", &d))?;
            let path = entry.path();
            let ty = entry.file_type().map_err(io("listing", &path))?;
            if ty.is_dir() {
                stack.push(path);
            } else if let Some(rel) = path.strip_prefix(dir).ok().and_then(Path::to_str)
                && (rel.ends_with(".ko") || rel.contains(".ko."))
            {
                out.push(rel.to_owned());
            }
        }
    }
    out.sort();
    Ok(out)
}

fn read_index(dir: &Path, name: &str) -> Result<String, BuildError> {
    let path = dir.join(name);
    fs::read_to_string(&path).map_err(io("reading", &path))
}

/// Result of choosing and reading the modules.
#[derive(Debug)]
struct ShippedModules {
    closure: Closure,
    /// Uncompressed path -> plain ELF bytes.
    files: BTreeMap<String, Vec<u8>>,
    indexes: Vec<(&'static str, Vec<u8>)>,
    load: Vec<String>,
}

fn ship_modules(
    ctx: &Context,
    kernel: &Kernel,
    reporter: &Reporter,
) -> Result<ShippedModules, BuildError> {
    let dir = &kernel.module_dir;
    let paths = module_files(dir)?;
    let builtin = read_index(dir, "modules.builtin")?;
    let order = read_index(dir, "modules.order")?;
    let tree = ModuleTree::new(paths.iter().map(String::as_str), &builtin, &order)?;
    let requested = ctx.profile.modules.requested();

    let step = reporter.step("resolving and decompressing kernel modules");
    let mut files = BTreeMap::new();
    let closure = modules::resolve(&tree, &requested, |req| {
        let path = dir.join(&req.path);
        let data = fs::read(&path).map_err(|source| ModuleReadError::Io {
            path: path.clone(),
            source,
        })?;
        let plain = modules::decompress_module(&req.path, data)?;
        let info = ModInfo::from_elf(&plain).map_err(|source| ModuleReadError::Modinfo {
            path: req.path.clone(),
            source,
        })?;
        files.insert(modules::uncompressed_path(&req.path).to_owned(), plain);
        Ok::<_, ModuleReadError>(info)
    })?;
    let bytes: u64 = files.values().map(|f| f.len() as u64).sum();
    step.finish(&format!(
        "{} modules, {}",
        closure.modules.len(),
        human_bytes(bytes)
    ));

    let builtin_modinfo_path = dir.join("modules.builtin.modinfo");
    let builtin_modinfo =
        fs::read(&builtin_modinfo_path).map_err(io("reading", &builtin_modinfo_path))?;
    let indexes = vec![
        ("modules.dep", closure.modules_dep().into_bytes()),
        ("modules.alias", closure.modules_alias().into_bytes()),
        ("modules.softdep", closure.modules_softdep().into_bytes()),
        ("modules.order", closure.modules_order().into_bytes()),
        ("modules.builtin", builtin.into_bytes()),
        ("modules.builtin.modinfo", builtin_modinfo),
    ];
    let load = ctx
        .profile
        .modules
        .load
        .iter()
        .filter(|m| closure.modules.contains_key(*m))
        .map(|m| m.as_str().to_owned())
        .collect();
    Ok(ShippedModules {
        closure,
        files,
        indexes,
        load,
    })
}

fn get_binaries(source: &BinarySource, reporter: &Reporter) -> Result<CairnBinaries, BuildError> {
    Ok(match source {
        BinarySource::Dir(dir) => {
            let step = reporter.step(&format!("checking prebuilt binaries in {}", dir.display()));
            let b = binaries::from_dir(dir)?;
            step.finish("static");
            b
        }
        BinarySource::Cargo { workspace } => {
            let step = reporter.plain_step(&format!(
                "building cairn-init, cairnd, cairn-shim and cairn (static, release): cargo build --release --target {t} -p init -p nodeagent -p shim, then -p cli",
                t = binaries::TARGET
            ));
            let b = binaries::build_with_cargo(workspace)?;
            step.finish("static");
            b
        }
    })
}

/// A private work directory inside the output directory.
fn work_dir(output: &Path) -> Result<tempfile::TempDir, BuildError> {
    fs::create_dir_all(output).map_err(io("creating", output))?;
    tempfile::Builder::new()
        .prefix(".cairn-image-work-")
        .tempdir_in(output)
        .map_err(io("creating a work directory in", output))
}

/// The ESP's size: the profile's, grown when the files need more.
fn esp_mib(ctx: &Context, contents: &EspContents) -> u32 {
    bake::esp_size_mib(
        ctx.profile.disk.esp_size_mib,
        contents.total_bytes(),
        contents.files.len() as u64,
    )
}

/// Checks the archives to bake, extracting each into a scratch directory
/// in the output directory that is removed afterwards.
fn check_baked(opts: &BuildOptions, reporter: &Reporter) -> Result<Vec<BakedArchive>, BuildError> {
    if opts.bake_images.is_empty() {
        return Ok(Vec::new());
    }
    let step = reporter.step(&format!(
        "checking {} oci-archive(s) to bake",
        opts.bake_images.len()
    ));
    fs::create_dir_all(&opts.output).map_err(io("creating", &opts.output))?;
    let scratch = tempfile::Builder::new()
        .prefix(".cairn-image-bake-")
        .tempdir_in(&opts.output)
        .map_err(io("creating a scratch directory in", &opts.output))?;
    let baked = bake::check_archives(&opts.bake_images, scratch.path())?;
    scratch
        .close()
        .map_err(io("removing the scratch directory in", &opts.output))?;
    let images: usize = baked.iter().map(|a| a.images.len()).sum();
    let bytes: u64 = baked.iter().map(|a| a.len).sum();
    step.finish(&format!("{images} image(s), {}", human_bytes(bytes)));
    Ok(baked)
}

/// Makes ESP + STATE and assembles the GPT disk at `out`.
fn write_disk(
    ctx: &Context,
    contents: &EspContents,
    work: &Path,
    out: &Path,
    reporter: &Reporter,
) -> Result<DiskLayout, BuildError> {
    let layout = DiskLayout::plan(esp_mib(ctx, contents), ctx.profile.disk.state_size_mib);

    let step = reporter.step("writing the ESP (FAT32)");
    let esp_path = work.join("esp.img");
    let esp_file = fs::File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&esp_path)
        .map_err(io("creating", &esp_path))?;
    esp_file
        .set_len(layout.esp.len_bytes())
        .map_err(io("sizing", &esp_path))?;
    esp::write_fat32(esp_file, contents, ctx.seed.u32("fat-volume-id"), ctx.epoch)?;
    step.finish(&human_bytes(contents.total_bytes()));

    let step = reporter.step("making STATE (ext4)");
    let state_path = work.join("state.img");
    state::make_state(&state_path, layout.state.len_bytes(), &ctx.seed, ctx.epoch)?;
    step.finish("");

    let step = reporter.step(&format!(
        "assembling {}",
        out.file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned())
    ));
    let mut raw = fs::File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(out)
        .map_err(io("creating", out))?;
    raw.set_len(layout.total_bytes).map_err(io("sizing", out))?;
    disk::write_gpt(&mut raw, layout, &ctx.seed)?;
    disk::copy_into(&mut raw, layout.esp, &esp_path, "the ESP image")?;
    disk::copy_into(&mut raw, layout.state, &state_path, "the STATE image")?;
    raw.sync_all().map_err(io("syncing", out))?;
    step.finish(&human_bytes(layout.total_bytes));
    fs::remove_file(&esp_path).map_err(io("removing", &esp_path))?;
    fs::remove_file(&state_path).map_err(io("removing", &state_path))?;
    Ok(layout)
}

fn file_size(path: &Path) -> Result<u64, BuildError> {
    Ok(fs::metadata(path)
        .map_err(io("reading size of", path))?
        .len())
}

/// Writes `data` as a file anyone may run (`rwxr-xr-x`, whatever the umask).
fn write_executable(path: &Path, data: &[u8]) -> Result<(), BuildError> {
    use std::os::unix::fs::PermissionsExt;
    fs::write(path, data).map_err(io("writing", path))?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o755))
        .map_err(io("making executable", path))
}

fn rename(from: &Path, to: &Path) -> Result<(), BuildError> {
    fs::rename(from, to).map_err(io("moving into place", to))
}

/// What `build` writes, relative to the output directory; each is listed
/// in [`SUMS_FILE`]. Test harnesses check for these names too. `cairn` is
/// the client built with the image's binaries (not part of the image).
pub const ARTIFACTS: [&str; 8] = [
    "cairn.raw",
    "cairn.qcow2",
    "cairn.vmdk",
    "cairn.ova",
    "pxe/vmlinuz",
    "pxe/initramfs.img",
    "pxe/boot.ipxe",
    binaries::CLI_BIN,
];

/// The checksum file (`sha256sum -c` format) `build` writes last.
pub const SUMS_FILE: &str = "SHA256SUMS";

/// Builds the Cairn image set into `opts.output`.
pub fn build(opts: &BuildOptions, reporter: &Reporter) -> Result<BuildReport, BuildError> {
    let ctx = Context::new(&opts.profile, opts.source_date_epoch.as_deref(), &opts.repo)?;
    for tool in [
        HostTool::AptGet,
        HostTool::AptCache,
        HostTool::DpkgDeb,
        HostTool::MkfsExt4,
        HostTool::QemuImg,
        HostTool::SystemdBootEfi,
    ] {
        tool.locate()?;
    }
    reporter.note(&format!(
        "Cairn {VERSION}, profile {}, SOURCE_DATE_EPOCH={} ({:?})",
        opts.profile.display(),
        ctx.epoch.secs(),
        ctx.epoch_source
    ));
    let machine_config = opts
        .machine_config
        .as_ref()
        .map(|p| fs::read(p).map_err(io("reading", p)))
        .transpose()?;
    let baked = check_baked(opts, reporter)?;
    let systemd_boot = read_systemd_boot()?;

    let kernel = fetch_kernel(&ctx, &opts.cache, reporter)?;
    let ca_bundle = fetch_ca_bundle(&ctx, &opts.cache, reporter)?;
    let bins = get_binaries(&opts.binaries, reporter)?;
    let shipped = ship_modules(&ctx, &kernel, reporter)?;

    let step = reporter.step("writing the initramfs (newc cpio)");
    let mut tree = initramfs::cairn_tree(&CairnContents {
        version: VERSION,
        kernel_release: &kernel.release,
        init: &bins.init,
        agent: &bins.agent,
        modules: shipped.files.into_iter().collect(),
        module_indexes: shipped.indexes,
        modules_load: shipped.load,
    })?;
    // The container shim sits next to cairnd, which starts it by this path
    // (runtime::paths::SHIM_BINARY).
    tree.file("usr/bin/cairn-shim", 0o755, bins.shim.clone())?;
    tree.dir("etc/ssl", 0o755)?;
    tree.dir("etc/ssl/certs", 0o755)?;
    tree.file(initramfs::CA_BUNDLE, 0o644, ca_bundle)?;
    let cpio = tree.to_cpio(ctx.epoch);
    let uncompressed = cpio.len() as u64;
    let initramfs = initramfs::compress(cpio, ctx.profile.initramfs.compression)?;
    step.finish(&format!(
        "{} entries, {}{}",
        tree.len(),
        human_bytes(initramfs.len() as u64),
        match ctx.profile.initramfs.compression {
            Compression::None => String::new(),
            Compression::Gzip => format!(" gzip ({} raw)", human_bytes(uncompressed)),
            Compression::Zstd => format!(" zstd ({} raw)", human_bytes(uncompressed)),
        }
    ));
    drop(tree);

    let work = work_dir(&opts.output)?;
    let contents = EspContents::cairn(&EspInputs {
        version: VERSION,
        cmdline: &ctx.cmdline,
        systemd_boot: &systemd_boot,
        vmlinuz: &kernel.vmlinuz,
        initramfs: &initramfs,
        machine_config: machine_config.as_deref(),
        baked: &baked,
    });
    let esp_mib = esp_mib(&ctx, &contents);
    let raw_tmp = work.path().join("cairn.raw");
    let layout = write_disk(&ctx, &contents, work.path(), &raw_tmp, reporter)?;
    drop(contents);

    let step = reporter.step("converting to qcow2");
    let qcow2_tmp = work.path().join("cairn.qcow2");
    convert::convert(TargetFormat::Qcow2, &raw_tmp, &qcow2_tmp)?;
    step.finish(&human_bytes(file_size(&qcow2_tmp)?));

    let step = reporter.step("converting to vmdk (streamOptimized)");
    let vmdk_tmp = work.path().join("cairn.vmdk");
    convert::convert(TargetFormat::StreamOptimizedVmdk, &raw_tmp, &vmdk_tmp)?;
    convert::set_vmdk_cid(&vmdk_tmp, ctx.seed.u32("vmdk-cid"))?;
    let vmdk_bytes = file_size(&vmdk_tmp)?;
    step.finish(&human_bytes(vmdk_bytes));

    let step = reporter.step("writing the OVA");
    let ovf = ova::ovf_descriptor(&OvfParams {
        vm_name: &format!("cairn-{VERSION}"),
        version: VERSION,
        vmdk_name: "cairn.vmdk",
        vmdk_file_bytes: vmdk_bytes,
        capacity_bytes: layout.total_bytes,
        cpus: ctx.profile.ova.cpus,
        memory_mib: ctx.profile.ova.memory_mib,
    });
    let ovf_sha = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(ovf.as_bytes()))
    };
    let vmdk_sha = checksums::sha256_path(&vmdk_tmp).map_err(io("hashing", &vmdk_tmp))?;
    let mf = ova::manifest(&[("cairn.ovf", &ovf_sha), ("cairn.vmdk", &vmdk_sha)]);
    let ova_tmp = work.path().join("cairn.ova");
    ova::write_ova(
        &ova_tmp,
        &[
            OvaMember::Bytes {
                name: "cairn.ovf",
                data: ovf.as_bytes(),
            },
            OvaMember::Bytes {
                name: "cairn.mf",
                data: mf.as_bytes(),
            },
            OvaMember::File {
                name: "cairn.vmdk",
                path: &vmdk_tmp,
            },
        ],
        ctx.epoch,
    )?;
    step.finish(&human_bytes(file_size(&ova_tmp)?));

    let step = reporter.step("writing the PXE set");
    let pxe_tmp = work.path().join("pxe");
    fs::create_dir_all(&pxe_tmp).map_err(io("creating", &pxe_tmp))?;
    let write = |name: &str, data: &[u8]| {
        let p = pxe_tmp.join(name);
        fs::write(&p, data).map_err(io("writing", &p))
    };
    write(pxe::KERNEL_NAME, &kernel.vmlinuz)?;
    write(pxe::INITRAMFS_NAME, &initramfs)?;
    write(pxe::SCRIPT_NAME, pxe::ipxe_script(&ctx.cmdline).as_bytes())?;
    step.finish("");

    let cli_tmp = work.path().join(binaries::CLI_BIN);
    write_executable(&cli_tmp, &bins.cli)?;

    // Move everything into place, then checksum the final files.
    let out = &opts.output;
    for name in [
        "cairn.raw",
        "cairn.qcow2",
        "cairn.vmdk",
        "cairn.ova",
        binaries::CLI_BIN,
    ] {
        rename(&work.path().join(name), &out.join(name))?;
    }
    let pxe_out = out.join("pxe");
    fs::create_dir_all(&pxe_out).map_err(io("creating", &pxe_out))?;
    for name in [pxe::KERNEL_NAME, pxe::INITRAMFS_NAME, pxe::SCRIPT_NAME] {
        rename(&pxe_tmp.join(name), &pxe_out.join(name))?;
    }

    let step = reporter.step("writing SHA256SUMS");
    let mut sums = Vec::new();
    let mut artifacts = BTreeMap::new();
    for name in ARTIFACTS {
        let p = out.join(name);
        sums.push((
            name.to_owned(),
            checksums::sha256_path(&p).map_err(io("hashing", &p))?,
        ));
        artifacts.insert(name.to_owned(), file_size(&p)?);
    }
    let sums_path = out.join(SUMS_FILE);
    fs::write(&sums_path, checksums::sha256sums(&sums)).map_err(io("writing", &sums_path))?;
    step.finish("");
    work.close()
        .map_err(io("removing the work directory in", out))?;

    Ok(BuildReport {
        epoch: ctx.epoch.secs(),
        epoch_source: format!("{:?}", ctx.epoch_source),
        kernel_release: kernel.release,
        vmlinuz_bytes: kernel.vmlinuz.len() as u64,
        initramfs_bytes: initramfs.len() as u64,
        initramfs_uncompressed_bytes: uncompressed,
        modules_shipped: shipped.closure.modules.len(),
        modules_builtin: shipped
            .closure
            .builtin_requested
            .iter()
            .map(|(n, origin)| format!("{n} ({origin})"))
            .collect(),
        softdeps_unmet: shipped
            .closure
            .softdeps_unmet
            .iter()
            .map(|(m, t)| format!("{m} -> {t}"))
            .collect(),
        esp_mib,
        baked,
        artifacts,
    })
}

fn read_systemd_boot() -> Result<Vec<u8>, BuildError> {
    let path = HostTool::SystemdBootEfi.locate()?;
    fs::read(&path).map_err(io("reading", &path))
}

#[derive(Debug, Clone)]
pub struct BaselineOptions {
    pub profile: PathBuf,
    pub output: PathBuf,
    pub cache: PathBuf,
    pub source_date_epoch: Option<String>,
    pub repo: PathBuf,
}

/// Builds `baseline.raw`: the same firmware path, boot loader and kernel,
/// with a busybox `/init` that powers off at once.
pub fn baseline(opts: &BaselineOptions, reporter: &Reporter) -> Result<BuildReport, BuildError> {
    let ctx = Context::new(&opts.profile, opts.source_date_epoch.as_deref(), &opts.repo)?;
    for tool in [
        HostTool::AptGet,
        HostTool::AptCache,
        HostTool::DpkgDeb,
        HostTool::MkfsExt4,
        HostTool::SystemdBootEfi,
    ] {
        tool.locate()?;
    }
    let systemd_boot = read_systemd_boot()?;
    let kernel = fetch_kernel(&ctx, &opts.cache, reporter)?;
    let bb_pkg = PinnedPackage {
        name: ctx.profile.baseline.busybox_package.clone(),
        version: ctx.profile.baseline.busybox_version.clone(),
        version_key: "baseline.busybox-version",
    };
    let step = reporter.step(&format!("fetching {}={}", bb_pkg.name, bb_pkg.version));
    let UnpackedPackage { root, .. } = deb::fetch_and_unpack(&bb_pkg, &opts.cache)?;
    step.finish("");
    let busybox = binaries::read_static_binary(&root.join("bin/busybox"))?;

    let tree = initramfs::baseline_tree(&busybox)?;
    let cpio = tree.to_cpio(ctx.epoch);
    let uncompressed = cpio.len() as u64;
    let initramfs = initramfs::compress(cpio, ctx.profile.initramfs.compression)?;

    let work = work_dir(&opts.output)?;
    let version = format!("{VERSION}-baseline");
    let contents = EspContents::cairn(&EspInputs {
        version: &version,
        cmdline: &ctx.cmdline,
        systemd_boot: &systemd_boot,
        vmlinuz: &kernel.vmlinuz,
        initramfs: &initramfs,
        machine_config: None,
        baked: &[],
    });
    let esp_mib = esp_mib(&ctx, &contents);
    let raw_tmp = work.path().join("baseline.raw");
    write_disk(&ctx, &contents, work.path(), &raw_tmp, reporter)?;
    let raw_out = opts.output.join("baseline.raw");
    rename(&raw_tmp, &raw_out)?;
    work.close()
        .map_err(io("removing the work directory in", &opts.output))?;

    let mut artifacts = BTreeMap::new();
    artifacts.insert("baseline.raw".to_owned(), file_size(&raw_out)?);
    Ok(BuildReport {
        epoch: ctx.epoch.secs(),
        epoch_source: format!("{:?}", ctx.epoch_source),
        kernel_release: kernel.release,
        vmlinuz_bytes: kernel.vmlinuz.len() as u64,
        initramfs_bytes: initramfs.len() as u64,
        initramfs_uncompressed_bytes: uncompressed,
        modules_shipped: 0,
        modules_builtin: Vec::new(),
        softdeps_unmet: Vec::new(),
        esp_mib,
        baked: Vec::new(),
        artifacts,
    })
}
