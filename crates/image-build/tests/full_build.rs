//! End-to-end builds with the real host tools and the pinned Debian
//! packages (fetched into the normal cache, so only the first run pays for
//! the download).
//!
//! Busybox from the pinned `busybox-static` package stands in for
//! `cairn-init`, `cairnd` and `cairn`: it is a static x86_64 ELF, which is all the
//! builder checks, and it keeps these tests independent of whether the
//! init and nodeagent crates build at the moment.

use std::path::{Path, PathBuf};

use image_build::build::{self, BinarySource, BuildError, BuildOptions};
use image_build::deb::{self, FetchError, PinnedPackage};
use image_build::profile::Profile;
use image_build::progress::Reporter;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn default_profile() -> PathBuf {
    workspace().join("configs/profiles/default.toml")
}

fn stand_in_binaries(dir: &Path) {
    let profile = Profile::load(&default_profile()).expect("the default profile loads");
    let pkg = PinnedPackage {
        name: profile.baseline.busybox_package.clone(),
        version: profile.baseline.busybox_version.clone(),
        version_key: "baseline.busybox-version",
    };
    let unpacked = deb::fetch_and_unpack(&pkg, &deb::default_cache_dir())
        .expect("the pinned busybox-static package can be fetched with apt");
    for name in ["cairn-init", "cairnd", "cairn-shim", "cairn"] {
        std::fs::copy(unpacked.root.join("bin/busybox"), dir.join(name)).expect("busybox copies");
    }
}

fn options(profile: PathBuf, output: PathBuf, bins: &Path) -> BuildOptions {
    BuildOptions {
        profile,
        output,
        cache: deb::default_cache_dir(),
        binaries: BinarySource::Dir(bins.to_owned()),
        source_date_epoch: Some("1700000000".to_owned()),
        repo: workspace(),
        machine_config: None,
        bake_images: Vec::new(),
    }
}

/// A small oci-archive holding one image, `baked:1`, as `cairn-image oci
/// from-dir` and `oci archive` make it.
#[expect(
    clippy::unwrap_used,
    reason = "a test helper: any failure is the test failing"
)]
fn baked_archive(dir: &Path) -> PathBuf {
    use image_build::oci_image::{self, ImageSettings, Tree};
    let root = dir.join("baked-root");
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::write(root.join("etc/motd"), b"baked into the ESP\n").unwrap();
    let mut tree = Tree::default();
    tree.add_root(&root, &[]).unwrap();
    let layout = dir.join("baked-layout");
    oci_image::build_image(
        &tree,
        &ImageSettings::default(),
        &oci::RefName::parse("baked:1").unwrap(),
        &layout,
        0,
        "full_build test",
    )
    .unwrap();
    let archive = dir.join("baked.tar");
    oci::archive::write_archive_file(&oci::Layout::open(&layout).unwrap(), &archive).unwrap();
    archive
}

/// Both builds bake the same oci-archive, so this also proves baked
/// images keep the image reproducible and land on the ESP intact.
#[test]
fn two_builds_from_the_same_inputs_are_byte_identical() {
    let tmp = tempfile::tempdir().unwrap();
    let bins = tmp.path().join("bins");
    std::fs::create_dir(&bins).unwrap();
    stand_in_binaries(&bins);
    let archive = baked_archive(tmp.path());
    let with_bake = |output: PathBuf| BuildOptions {
        bake_images: vec![archive.clone()],
        ..options(default_profile(), output, &bins)
    };

    let a = tmp.path().join("a");
    let b = tmp.path().join("b");
    let report = build::build(&with_bake(a.clone()), &Reporter::quiet()).unwrap();
    build::build(&with_bake(b.clone()), &Reporter::quiet()).unwrap();
    assert_eq!(report.baked.len(), 1);
    assert_eq!(report.baked[0].images, ["baked:1"]);
    // A small archive fits the profile's ESP; only large ones grow it.
    let profile = Profile::load(&default_profile()).unwrap();
    assert_eq!(report.esp_mib, profile.disk.esp_size_mib);

    let artifacts = [
        "pxe/initramfs.img",
        "pxe/vmlinuz",
        "pxe/boot.ipxe",
        "cairn.raw",
        "cairn.qcow2",
        "cairn.vmdk",
        "cairn.ova",
        "cairn",
        "SHA256SUMS",
    ];
    for name in artifacts {
        let x = std::fs::read(a.join(name)).unwrap();
        let y = std::fs::read(b.join(name)).unwrap();
        assert!(x == y, "{name} differs between two identical builds");
    }
    assert!(
        report.softdeps_unmet.is_empty(),
        "the default profile leaves soft dependencies unmet: {:?}",
        report.softdeps_unmet
    );
    assert!(
        report.initramfs_bytes <= 30 * 1024 * 1024,
        "initramfs is {} bytes, over the 30 MB budget",
        report.initramfs_bytes
    );
    check_initramfs_modules(
        &image_build::initramfs::decompress(&std::fs::read(a.join("pxe/initramfs.img")).unwrap())
            .unwrap(),
    );
    check_esp(&a.join("cairn.raw"), report.esp_mib, &archive);
    check_partitions_with_fsck(&a.join("cairn.raw"), report.esp_mib, tmp.path());
    let status = std::process::Command::new("sha256sum")
        .args(["--quiet", "-c", "SHA256SUMS"])
        .current_dir(&a)
        .status()
        .unwrap();
    assert!(status.success(), "SHA256SUMS does not verify");
    // Nothing but the artifacts is left behind (no work directory).
    let mut left: Vec<String> = std::fs::read_dir(&a)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(
        left,
        [
            "SHA256SUMS",
            "cairn",
            "cairn.ova",
            "cairn.qcow2",
            "cairn.raw",
            "cairn.vmdk",
            "pxe"
        ]
    );
}

#[test]
fn a_dynamically_linked_binary_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let bins = tmp.path().join("bins");
    std::fs::create_dir(&bins).unwrap();
    stand_in_binaries(&bins);
    // coreutils' `true` is dynamically linked on Debian.
    std::fs::copy("/usr/bin/true", bins.join("cairnd")).unwrap();
    let err = build::build(
        &options(default_profile(), tmp.path().join("out"), &bins),
        &Reporter::quiet(),
    )
    .unwrap_err();
    assert!(matches!(err, BuildError::Binaries(_)), "{err:?}");
    assert!(!tmp.path().join("out/cairn.raw").exists());
}

#[test]
fn an_unavailable_kernel_version_names_the_profile_key() {
    let tmp = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(default_profile())
        .unwrap()
        .replace("version = \"6.1.192-2\"", "version = \"0.0.1-cairn-test\"");
    let profile = tmp.path().join("p.toml");
    std::fs::write(&profile, text).unwrap();
    let err = build::build(
        &options(profile, tmp.path().join("out"), tmp.path()),
        &Reporter::quiet(),
    )
    .unwrap_err();
    let BuildError::Fetch(FetchError::NotAvailable { key, .. }) = &err else {
        panic!("expected NotAvailable, got {err:?}")
    };
    assert_eq!(*key, "kernel.version");
    let chain = anyhow_like_chain(&err);
    assert!(chain.contains("kernel.version"), "{chain}");
}

fn anyhow_like_chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut cur = err.source();
    while let Some(e) = cur {
        out.push_str(": ");
        out.push_str(&e.to_string());
        cur = e.source();
    }
    out
}

#[test]
fn a_module_that_does_not_exist_is_a_build_error_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    let bins = tmp.path().join("bins");
    std::fs::create_dir(&bins).unwrap();
    stand_in_binaries(&bins);
    let text = std::fs::read_to_string(default_profile()).unwrap().replace(
        "vmware = [\"vmxnet3\"",
        "vmware = [\"no_such_driver\", \"vmxnet3\"",
    );
    let profile = tmp.path().join("p.toml");
    std::fs::write(&profile, text).unwrap();
    let err = build::build(
        &options(profile, tmp.path().join("out"), &bins),
        &Reporter::quiet(),
    )
    .unwrap_err();
    let chain = anyhow_like_chain(&err);
    assert!(
        chain.contains("no_such_driver") && chain.contains("modules.sets.vmware"),
        "{chain}"
    );
}

/// Every path modules.dep mentions is in the archive, every module named
/// in modules-load and modules.alias is shipped, and the CA roots are.
#[expect(
    clippy::unwrap_used,
    reason = "a test helper: any failure is the test failing"
)]
fn check_initramfs_modules(initramfs: &[u8]) {
    let mut files = std::collections::BTreeMap::new();
    let mut rest = initramfs;
    loop {
        let mut reader = cpio::NewcReader::new(rest).unwrap();
        if reader.entry().is_trailer() {
            break;
        }
        let name = reader.entry().name().to_owned();
        let mut data = Vec::new();
        std::io::Read::read_to_end(&mut reader, &mut data).unwrap();
        rest = reader.finish().unwrap();
        files.insert(name, data);
    }
    let moddir = files
        .keys()
        .find(|k| k.starts_with("lib/modules/") && k.matches('/').count() == 2)
        .expect("a /lib/modules/<kver> directory")
        .clone();
    let text = |name: &str| String::from_utf8(files[&format!("{moddir}/{name}")].clone()).unwrap();
    let dep = image_build::modules::parse_modules_dep(&text("modules.dep")).unwrap();
    let mut shipped = std::collections::BTreeSet::new();
    for line in &dep {
        for path in std::iter::once(&line.module).chain(&line.deps) {
            assert!(
                files.contains_key(&format!("{moddir}/{path}")),
                "{path} missing"
            );
            assert!(!path.ends_with(".xz"));
        }
        shipped.insert(
            image_build::profile::ModuleName::from_ko_path(&line.module)
                .unwrap()
                .as_str()
                .to_owned(),
        );
    }
    for alias in image_build::modules::parse_modules_alias(&text("modules.alias")).unwrap() {
        assert!(shipped.contains(alias.module.as_str()), "{}", alias.module);
    }
    // The node's CA roots, for registries with no `ca` of their own.
    let roots = String::from_utf8(files[image_build::initramfs::CA_BUNDLE].clone()).unwrap();
    let count = roots.matches("-----BEGIN CERTIFICATE-----").count();
    assert!(count > 100, "only {count} CA roots in the initramfs");
    let load = String::from_utf8(files["etc/cairn/modules-load"].clone()).unwrap();
    assert!(load.lines().next() == Some("crc32c_generic"));
    for name in load.lines() {
        assert!(
            shipped.contains(name),
            "modules-load names unshipped {name}"
        );
    }
    for needed in [
        "virtio_blk",
        "virtio_net",
        "vmxnet3",
        "vmw_pvscsi",
        "nvme",
        "ahci",
        "ext4",
        "vfat",
        "usb_storage",
        "xhci_pci",
    ] {
        assert!(shipped.contains(needed), "{needed} is not shipped");
    }
    // ELF modules, not compressed ones.
    let ext4 = dep.iter().find(|l| l.module.ends_with("/ext4.ko")).unwrap();
    assert!(files[&format!("{moddir}/{}", ext4.module)].starts_with(b"\x7fELF"));
}

/// The ESP inside cairn.raw is FAT32 with systemd-boot, the BLS entry and
/// the baked archive `baked` beside its SHA256SUMS.
#[expect(
    clippy::unwrap_used,
    reason = "a test helper: any failure is the test failing"
)]
fn check_esp(raw: &Path, esp_mib: u32, baked: &Path) {
    use std::io::{Read, Seek, SeekFrom};
    let profile = Profile::load(&default_profile()).unwrap();
    let layout = image_build::disk::DiskLayout::plan(esp_mib, profile.disk.state_size_mib);
    let mut file = std::fs::File::open(raw).unwrap();
    file.seek(SeekFrom::Start(layout.esp.offset_bytes()))
        .unwrap();
    let mut esp = vec![0u8; usize::try_from(layout.esp.len_bytes()).unwrap()];
    file.read_exact(&mut esp).unwrap();
    let fs = fatfs::FileSystem::new(std::io::Cursor::new(esp), fatfs::FsOptions::new()).unwrap();
    assert_eq!(fs.fat_type(), fatfs::FatType::Fat32);
    assert_eq!(fs.volume_label(), "CAIRN-ESP");
    let root = fs.root_dir();
    let mut entry = String::new();
    let version = env!("CARGO_PKG_VERSION");
    root.open_file(&format!("loader/entries/cairn-{version}.conf"))
        .unwrap()
        .read_to_string(&mut entry)
        .unwrap();
    assert!(entry.contains(&format!("linux /cairn/{version}/vmlinuz")));
    assert!(entry.contains("options console=tty0 console=ttyS0,115200 panic=10"));
    let mut boot = Vec::new();
    root.open_file("EFI/BOOT/BOOTX64.EFI")
        .unwrap()
        .read_to_end(&mut boot)
        .unwrap();
    assert!(boot.starts_with(b"MZ"));
    let original = std::fs::read(baked).unwrap();
    let mut copy = Vec::new();
    root.open_file(&format!("cairn/{version}/images/baked.tar"))
        .unwrap()
        .read_to_end(&mut copy)
        .unwrap();
    assert!(copy == original, "the baked archive differs on the ESP");
    let mut sums = String::new();
    root.open_file(&format!("cairn/{version}/images/SHA256SUMS"))
        .unwrap()
        .read_to_string(&mut sums)
        .unwrap();
    assert_eq!(
        sums,
        format!("{}  baked.tar\n", oci::Digest::of(&original).hex())
    );
}

/// Runs the filesystem checkers operators would run (dosfstools' fsck.fat,
/// e2fsprogs' e2fsck) on copies of the ESP and STATE partitions, read-only.
#[expect(
    clippy::unwrap_used,
    reason = "a test helper: any failure is the test failing"
)]
fn check_partitions_with_fsck(raw: &Path, esp_mib: u32, scratch: &Path) {
    use std::io::{Read, Seek, SeekFrom, Write};
    let profile = Profile::load(&default_profile()).unwrap();
    let layout = image_build::disk::DiskLayout::plan(esp_mib, profile.disk.state_size_mib);
    let checks = [
        ("esp.img", layout.esp, "fsck.fat", vec!["-n"], "dosfstools"),
        (
            "state.img",
            layout.state,
            "e2fsck",
            vec!["-f", "-n"],
            "e2fsprogs",
        ),
    ];
    for (name, extent, tool, args, package) in checks {
        let mut file = std::fs::File::open(raw).unwrap();
        file.seek(SeekFrom::Start(extent.offset_bytes())).unwrap();
        let mut part = vec![0u8; usize::try_from(extent.len_bytes()).unwrap()];
        file.read_exact(&mut part).unwrap();
        let path = scratch.join(name);
        std::fs::File::create(&path)
            .unwrap()
            .write_all(&part)
            .unwrap();
        let out = std::process::Command::new(tool)
            .args(&args)
            .arg(&path)
            .output()
            .unwrap_or_else(|e| panic!("running {tool} (Debian package {package}): {e}"));
        assert!(
            out.status.success(),
            "{tool} finds errors in {name}:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
