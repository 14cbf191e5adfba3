//! `cairn-image oci` against real tools: skopeo must read what we write,
//! we must read what skopeo writes, and an image built from Debian
//! packages must run from its unpacked root.
//!
//! skopeo is installed with apt when missing (as root); otherwise these
//! tests fail with the command to run. They never skip.

use std::path::{Path, PathBuf};
use std::process::Command;

use oci::{Layout, RefName};

const CAIRN_IMAGE: &str = env!("CARGO_BIN_EXE_cairn-image");

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

fn on_path(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Makes sure skopeo is there, installing it with apt as root.
fn ensure_skopeo() {
    if on_path("skopeo") {
        return;
    }
    assert!(
        is_root(),
        "skopeo is missing and these tests are not root: run `apt-get install skopeo`"
    );
    let status = Command::new("apt-get")
        .args(["install", "-y", "-q", "--no-install-recommends", "skopeo"])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .expect("apt-get runs");
    if !status.success() {
        let update = Command::new("apt-get").args(["update", "-q"]).status();
        assert!(update.is_ok_and(|s| s.success()), "apt-get update failed");
        let status = Command::new("apt-get")
            .args(["install", "-y", "-q", "--no-install-recommends", "skopeo"])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .expect("apt-get runs");
        assert!(status.success(), "apt-get install skopeo failed");
    }
    assert!(
        on_path("skopeo"),
        "skopeo still missing after apt-get install"
    );
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn cairn_image(args: &[&str]) -> String {
    run(Command::new(CAIRN_IMAGE)
        .args(args)
        .env("SOURCE_DATE_EPOCH", "1700000000"))
}

fn sample_dir(dir: &Path) {
    std::fs::create_dir_all(dir.join("usr/bin")).expect("the sample tree is written");
    std::fs::write(dir.join("usr/bin/hello"), "#!/bin/sh\necho hello\n")
        .expect("the sample tree is written");
    std::os::unix::fs::symlink("usr/bin", dir.join("bin")).expect("the sample tree is written");
    std::fs::create_dir_all(dir.join("etc")).expect("the sample tree is written");
    std::fs::write(dir.join("etc/motd"), "cairn\n").expect("the sample tree is written");
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

#[test]
fn skopeo_reads_our_layout_and_we_read_skopeos_archive() {
    ensure_skopeo();
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    sample_dir(&src);
    let layout_dir = tmp.path().join("layout");
    let out = layout_dir.to_str().unwrap();
    cairn_image(&[
        "oci",
        "from-dir",
        src.to_str().unwrap(),
        "--ref",
        "hello:1",
        "--out",
        out,
        "--entrypoint",
        "/usr/bin/hello",
        "--cmd",
        "--loud",
        "--env",
        "GREETING=hi",
        "--workdir",
        "/etc",
        "--user",
        "65534:65534",
        "--expose",
        "8080",
    ]);
    // A second image in the same layout.
    cairn_image(&[
        "oci",
        "from-dir",
        src.to_str().unwrap(),
        "--ref",
        "hello:2",
        "--out",
        out,
    ]);

    let ours = Layout::open(&layout_dir).unwrap();
    let image = ours.resolve(&RefName::parse("hello:1").unwrap()).unwrap();

    let inspect = json(&run(
        Command::new("skopeo").args(["inspect", &format!("oci:{out}:hello:1")])
    ));
    assert_eq!(
        inspect["Digest"],
        image.manifest_descriptor.digest().to_string()
    );
    assert_eq!(inspect["Architecture"], "amd64");
    assert_eq!(inspect["Os"], "linux");
    assert_eq!(inspect["Created"], "2023-11-14T22:13:20Z");
    let config = json(&run(Command::new("skopeo").args([
        "inspect",
        "--config",
        &format!("oci:{out}:hello:1"),
    ])));
    assert_eq!(
        config["config"]["Entrypoint"],
        serde_json::json!(["/usr/bin/hello"])
    );
    assert_eq!(config["config"]["Cmd"], serde_json::json!(["--loud"]));
    assert_eq!(config["config"]["WorkingDir"], "/etc");
    assert_eq!(config["config"]["User"], "65534:65534");
    assert!(
        config["config"]["ExposedPorts"]["8080/tcp"].is_object(),
        "{config}"
    );
    assert!(
        config["config"]["Env"]
            .as_array()
            .unwrap()
            .contains(&serde_json::json!("GREETING=hi"))
    );

    // skopeo's archive, read back by us.
    let skopeo_tar = tmp.path().join("skopeo.tar");
    run(Command::new("skopeo").args([
        "copy",
        &format!("oci:{out}:hello:1"),
        &format!("oci-archive:{}:hello:1", skopeo_tar.display()),
    ]));
    let imported = tmp.path().join("imported");
    let (theirs, names) =
        oci::archive::read_archive(std::fs::File::open(&skopeo_tar).unwrap(), &imported).unwrap();
    assert_eq!(names, vec![RefName::parse("hello:1").unwrap()]);
    let copied = theirs.resolve(&names[0]).unwrap();
    assert_eq!(copied.manifest.layers(), image.manifest.layers());
    let root = tmp.path().join("root");
    oci::unpack::unpack_image(
        &theirs,
        &copied,
        &root,
        oci::unpack::UnpackOptions::for_current_process(),
    )
    .unwrap();
    assert_eq!(
        std::fs::read_to_string(root.join("etc/motd")).unwrap(),
        "cairn\n"
    );
    assert_eq!(
        std::fs::read_link(root.join("bin")).unwrap(),
        Path::new("usr/bin")
    );

    // Our archive, read by skopeo: both images are there.
    let our_tar = tmp.path().join("ours.tar");
    cairn_image(&["oci", "archive", out, our_tar.to_str().unwrap()]);
    for tag in ["hello:1", "hello:2"] {
        let inspect = json(&run(Command::new("skopeo").args([
            "inspect",
            &format!("oci-archive:{}:{tag}", our_tar.display()),
        ])));
        assert_eq!(inspect["Architecture"], "amd64", "{tag}");
    }
}

#[test]
fn building_the_same_directory_twice_gives_the_same_archive() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    sample_dir(&src);
    let mut archives = Vec::new();
    for n in ["a", "b"] {
        let layout = tmp.path().join(n);
        let tar = tmp.path().join(format!("{n}.tar"));
        cairn_image(&[
            "oci",
            "from-dir",
            src.to_str().unwrap(),
            "--ref",
            "x:1",
            "--out",
            layout.to_str().unwrap(),
        ]);
        cairn_image(&[
            "oci",
            "archive",
            layout.to_str().unwrap(),
            tar.to_str().unwrap(),
        ]);
        archives.push(std::fs::read(&tar).unwrap());
        // The sources' own times must not matter.
        std::fs::write(src.join("etc/motd"), "cairn\n").unwrap();
    }
    assert_eq!(archives[0], archives[1]);
}

/// Builds `packages` into a fresh layout and unpacks `reference` as root.
fn deb_image_root(tmp: &Path, packages: &[&str], reference: &str, extra: &[&str]) -> PathBuf {
    assert!(
        is_root(),
        "running an image's binary with chroot needs root: run these tests as root"
    );
    let layout_dir = tmp.join("layout");
    let mut args = vec!["oci", "from-debs"];
    args.extend_from_slice(packages);
    args.extend_from_slice(&[
        "--ref",
        reference,
        "--out",
        layout_dir.to_str().expect("temp paths are UTF-8"),
    ]);
    args.extend_from_slice(extra);
    cairn_image(&args);
    let layout = Layout::open(&layout_dir).expect("the built layout opens");
    let name = RefName::parse(reference).expect("test references are valid");
    let image = layout.resolve(&name).expect("the built image resolves");
    let root = tmp.join("root");
    oci::unpack::unpack_image(
        &layout,
        &image,
        &root,
        oci::unpack::UnpackOptions::for_current_process(),
    )
    .expect("the built image unpacks");
    root
}

#[test]
fn busybox_static_from_debs_runs_in_a_chroot() {
    let tmp = tempfile::tempdir().unwrap();
    let root = deb_image_root(
        tmp.path(),
        &["busybox-static"],
        "busybox:latest",
        &["--entrypoint", "/bin/busybox"],
    );
    let status = Command::new("chroot")
        .arg(&root)
        .args(["/bin/busybox", "true"])
        .status()
        .unwrap();
    assert!(status.success(), "/bin/busybox true failed in the chroot");
    let echo = run(Command::new("chroot")
        .arg(&root)
        .args(["/bin/busybox", "echo", "from-image"]));
    assert_eq!(echo.trim(), "from-image");
}

#[test]
fn redis_server_from_debs_brings_its_shared_libraries() {
    let tmp = tempfile::tempdir().unwrap();
    let root = deb_image_root(
        tmp.path(),
        &["redis-server"],
        "redis:latest",
        &["--entrypoint", "/usr/bin/redis-server", "--expose", "6379"],
    );
    // Dynamically linked: it only starts if the closure brought libc,
    // libssl, jemalloc and the loader.
    let version = run(Command::new("chroot")
        .arg(&root)
        .args(["/usr/bin/redis-server", "--version"]));
    assert!(version.starts_with("Redis server v="), "{version}");
}
