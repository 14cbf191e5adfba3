//! The container benchmark (binary `cairn-container-bench`): container
//! start latency of cairn-shim against Debian's `crun` on the same bundle,
//! and cairn-shim's memory per container, measured in one VM.
//!
//! The host side (here) builds one test initramfs: busybox, the static
//! `cairn-shim` as the image ships it, `crun` with its shared libraries and
//! the dynamic loader, a busybox image root, one `ContainerSpec` (the
//! template every Cairn container of the run is made from) and the OCI
//! config crun runs, rendered from that same spec by
//! [`runtime::bundle::oci_spec`], the function the shim renders its own
//! bundle with. So both runtimes get the same namespaces, capabilities,
//! mounts, rlimits and cgroup limits, and neither gets a seccomp filter
//! (Cairn has none yet; see docs/containers.md).
//!
//! The in-VM half is `driver.rs`, a std-only program compiled on its own
//! with `rustc` (see [`DRIVER_SOURCE`]); it prints `CB ...` lines on the
//! serial console, which [`Console::parse`] reads back.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use runtime::ContainerSpec;
use serde_json::{Value, json};

/// The in-VM driver's source, compiled by [`compile_driver`].
pub const DRIVER_SOURCE: &str = include_str!("driver.rs");
/// Where the busybox image root sits in the VM; both runtimes use it.
pub const IMAGE_ROOT: &str = "/images/busybox";
/// crun's bundle directory in the VM (holds `config.json`).
pub const CRUN_BUNDLE: &str = "/bench/crun";
/// crun's container id; also its cgroup's name under `/cairn`.
pub const CRUN_ID: &str = "cbcrun";
/// The spec template's name placeholder, replaced by the driver.
pub const NAME_HOLE: &str = "@NAME@";
/// The volume holding the readiness fifo, and where containers see it.
pub const READY_VOLUME: &str = "/var/lib/cairn/volumes/ready";
/// The container's command: say "running" through the fifo, then stay.
pub const COMMAND: &[&str] = &["/bin/sh", "-c", "echo up > /ready/fifo; exec sleep 1000000"];

/// Why the benchmark's inputs could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ContainerBenchError {
    #[error("the container spec does not parse")]
    Spec(#[source] serde_json::Error),
    #[error("the container spec is invalid")]
    Invalid(#[source] runtime::SpecError),
    #[error("rendering the OCI config")]
    Bundle(#[source] runtime::bundle::BundleError),
    #[error("encoding the OCI config")]
    Encode(#[source] serde_json::Error),
    #[error("running {command}")]
    Spawn {
        command: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{command} failed: {stderr}")]
    Failed { command: String, stderr: String },
    #[error("reading {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("writing {}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The spec of every Cairn container in the run, named `name`: the
/// fifo-writing command, host network (Cairn's default), Cairn's default
/// capabilities, cpu/memory/pids limits, restart never.
#[must_use]
pub fn spec_json(name: &str) -> Value {
    json!({
        "name": name,
        "image": {"reference": "bench/busybox:1", "manifest_digest": format!("sha256:{}", "0".repeat(64))},
        "rootfs": IMAGE_ROOT,
        "process": {
            "args": COMMAND,
            "env": ["PATH=/bin", "HOME=/"],
            "cwd": "/",
            "user": {"uid": 0, "gid": 0, "additional_gids": []},
            "no_new_privileges": true
        },
        "mounts": [{"source": READY_VOLUME, "destination": "/ready", "read_only": false}],
        "read_only_rootfs": false,
        "network": "host",
        "hostname": null,
        "resources": {"cpu_millis": 1000, "memory_bytes": 67_108_864, "pids": 64},
        "capabilities": runtime::spec::DEFAULT_CAPABILITIES,
        "restart": {"policy": "never", "max_retries": null, "backoff_initial_ms": 100, "backoff_max_ms": 1000},
        "stop": {"signal": "SIGTERM", "timeout_s": 10},
        "logs": {"max_bytes": 1_048_576, "max_files": 2}
    })
}

/// Parses and validates [`spec_json`] as cairnd and the shim would.
///
/// # Errors
/// When the spec does not parse or breaks a rule.
pub fn spec(name: &str) -> Result<ContainerSpec, ContainerBenchError> {
    let spec: ContainerSpec =
        serde_json::from_value(spec_json(name)).map_err(ContainerBenchError::Spec)?;
    spec.validate().map_err(ContainerBenchError::Invalid)?;
    Ok(spec)
}

/// The spec template the driver fills in per container (`@NAME@`), after
/// checking that a real name makes a valid spec of it.
///
/// # Errors
/// As [`spec`].
pub fn spec_template() -> Result<Vec<u8>, ContainerBenchError> {
    spec("lat0")?;
    let mut value = spec_json("lat0");
    value["name"] = json!(NAME_HOLE);
    serde_json::to_vec_pretty(&value).map_err(ContainerBenchError::Encode)
}

/// crun's `config.json`: what the shim renders for the same spec, with
/// the image root itself as the root (the shim's is its overlay of it).
/// Returns the config and whether a seccomp section had to be removed
/// (none is expected: Cairn sets no seccomp profile yet).
///
/// # Errors
/// As [`spec`], or when the config cannot be rendered.
pub fn crun_config() -> Result<(Value, bool), ContainerBenchError> {
    let spec = spec(CRUN_ID)?;
    let config = runtime::bundle::oci_spec(&spec, Path::new(IMAGE_ROOT))
        .map_err(ContainerBenchError::Bundle)?;
    let mut value = serde_json::to_value(&config).map_err(ContainerBenchError::Encode)?;
    let removed = value
        .get_mut("linux")
        .and_then(Value::as_object_mut)
        .and_then(|linux| linux.remove("seccomp"))
        .is_some();
    Ok((value, removed))
}

fn run(command: &mut Command) -> Result<Vec<u8>, ContainerBenchError> {
    let name = format!("{command:?}");
    let out = command
        .output()
        .map_err(|source| ContainerBenchError::Spawn {
            command: name.clone(),
            source,
        })?;
    if !out.status.success() {
        return Err(ContainerBenchError::Failed {
            command: name,
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        });
    }
    Ok(out.stdout)
}

/// The absolute paths `ldd` names for `binary`: its shared libraries and
/// the dynamic loader (not the vDSO, which has no file).
#[must_use]
pub fn ldd_paths(ldd_output: &str) -> Vec<PathBuf> {
    ldd_output
        .lines()
        .filter_map(|line| {
            let line = line.trim();
            let path = match line.split_once("=>") {
                Some((_, rest)) => rest.trim(),
                None => line,
            };
            let path = path.split_whitespace().next()?;
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect()
}

/// `binary` and every file it loads, as `(path, bytes)`: what a dynamic
/// program needs in a root that has no libraries of its own. Symlinks are
/// followed; each file lands at the path the loader asks for.
///
/// # Errors
/// When `ldd` fails or a file cannot be read.
pub fn dynamic_closure(binary: &Path) -> Result<Vec<(PathBuf, Vec<u8>)>, ContainerBenchError> {
    let out = run(Command::new("ldd").arg(binary))?;
    let mut files = Vec::new();
    for path in
        std::iter::once(binary.to_path_buf()).chain(ldd_paths(&String::from_utf8_lossy(&out)))
    {
        let bytes = std::fs::read(&path).map_err(|source| ContainerBenchError::Read {
            path: path.clone(),
            source,
        })?;
        files.push((path, bytes));
    }
    Ok(files)
}

/// Compiles [`DRIVER_SOURCE`] into `dir/cbench-driver`: std only,
/// optimised, static (glibc), stripped.
///
/// # Errors
/// When rustc fails.
pub fn compile_driver(dir: &Path) -> Result<PathBuf, ContainerBenchError> {
    let source = dir.join("cbench-driver.rs");
    std::fs::write(&source, DRIVER_SOURCE).map_err(|source_err| ContainerBenchError::Write {
        path: source.clone(),
        source: source_err,
    })?;
    let out = dir.join("cbench-driver");
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    run(Command::new(rustc)
        .args([
            "--edition",
            "2024",
            "-C",
            "opt-level=2",
            "-C",
            "strip=symbols",
        ])
        .args(["-C", "target-feature=+crt-static", "--target"])
        .arg(image_build::binaries::TARGET)
        .arg("-o")
        .arg(&out)
        .arg(&source))?;
    Ok(out)
}

/// One start: microseconds until the container's process ran, and until
/// the runtime's command returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Start {
    pub running_us: u64,
    pub cli_us: u64,
}

/// What the driver printed.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Console {
    pub crun: Vec<Start>,
    pub cairn: Vec<Start>,
    /// Per shim: `/proc/PID/status` and `smaps_rollup` fields, in kB
    /// (Threads is a count).
    pub shims: Vec<BTreeMap<String, u64>>,
    /// The first shim's resident kB per mapping (summed by name).
    pub maps: BTreeMap<String, u64>,
    pub done: bool,
    pub error: Option<String>,
}

impl Console {
    /// Reads the `CB ...` lines of a serial console (anything before `CB`
    /// on a line, such as kernel noise, is skipped).
    #[must_use]
    pub fn parse(text: &str) -> Self {
        let mut c = Self::default();
        for line in text.lines() {
            let Some(at) = line.find("CB ") else { continue };
            let fields: Vec<&str> = line[at + 3..].split_whitespace().collect();
            let num = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
            match fields.first().copied() {
                Some("lat") => {
                    if let (Some(running_us), Some(cli_us)) = (num(3), num(4)) {
                        let start = Start { running_us, cli_us };
                        match fields.get(2).copied() {
                            Some("crun") => c.crun.push(start),
                            Some("cairn") => c.cairn.push(start),
                            _ => {}
                        }
                    }
                }
                Some("rss") => {
                    let map = fields
                        .iter()
                        .skip(2)
                        .filter_map(|f| f.split_once('='))
                        .filter_map(|(k, v)| Some((k.to_owned(), v.parse().ok()?)))
                        .collect();
                    c.shims.push(map);
                }
                Some("map") => {
                    if let (Some(name), Some(kb)) = (fields.get(1), num(2)) {
                        *c.maps.entry((*name).to_owned()).or_default() += kb;
                    }
                }
                Some("done") => c.done = true,
                Some("error") => c.error = Some(fields[1..].join(" ")),
                _ => {}
            }
        }
        c
    }
}

/// The median (the mean of the middle pair for an even count); NaN for
/// no values.
#[must_use]
pub fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

/// The nearest-rank percentile `p` (0 < p <= 100); NaN for no values.
#[must_use]
pub fn percentile(values: &[f64], p: f64) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    if sorted.is_empty() {
        return f64::NAN;
    }
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss,
        reason = "a rank within a short list of samples"
    )]
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_template_becomes_a_valid_spec_once_named() {
        let template = String::from_utf8(spec_template().unwrap()).unwrap();
        assert!(template.contains(NAME_HOLE));
        let named = template.replace(NAME_HOLE, "rss3");
        let parsed: ContainerSpec = serde_json::from_str(&named).unwrap();
        assert_eq!(parsed.name.as_str(), "rss3");
        assert_eq!(parsed.validate(), Ok(()));
    }

    #[test]
    fn crun_gets_the_shims_config_for_the_same_spec_without_seccomp() {
        let (config, removed) = crun_config().unwrap();
        assert!(
            !removed,
            "Cairn sets no seccomp profile, so none was removed"
        );
        assert!(config["linux"].get("seccomp").is_none());
        assert_eq!(config["root"]["path"], IMAGE_ROOT);
        assert_eq!(config["linux"]["cgroupsPath"], format!("/cairn/{CRUN_ID}"));
        assert_eq!(config["process"]["args"], json!(COMMAND));
        assert_eq!(config["linux"]["resources"]["memory"]["limit"], 67_108_864);
        assert_eq!(config["linux"]["resources"]["pids"]["limit"], 64);
        let namespaces: Vec<&str> = config["linux"]["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["type"].as_str().unwrap())
            .collect();
        assert!(
            !namespaces.contains(&"network"),
            "host network: {namespaces:?}"
        );
        assert!(namespaces.contains(&"pid") && namespaces.contains(&"mount"));
        let ready = config["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["destination"] == "/ready")
            .expect("the fifo volume is mounted");
        assert_eq!(ready["source"], READY_VOLUME);
    }

    #[test]
    fn ldd_output_yields_libraries_and_the_loader_but_not_the_vdso() {
        let out = "\tlinux-vdso.so.1 (0x00007ffd)\n\
                   \tlibyajl.so.2 => /lib/x86_64-linux-gnu/libyajl.so.2 (0x00007f01)\n\
                   \t/lib64/ld-linux-x86-64.so.2 (0x00007f02)\n";
        assert_eq!(
            ldd_paths(out),
            vec![
                PathBuf::from("/lib/x86_64-linux-gnu/libyajl.so.2"),
                PathBuf::from("/lib64/ld-linux-x86-64.so.2"),
            ]
        );
    }

    #[test]
    fn console_lines_are_read_through_kernel_noise() {
        let text = "[   1.0] random: crng init done\r\n\
                    CB warm\n\
                    CB lat 0 crun 51000 40000\n\
                    [  2.0] x CB lat 0 cairn 62000 61000\n\
                    CB rss 0 VmRSS=2900 RssAnon=700 Threads=1\n\
                    CB map /usr/bin/cairn-shim 1800\n\
                    CB map /usr/bin/cairn-shim 200\n\
                    CB done\n";
        let c = Console::parse(text);
        assert_eq!(
            c.crun,
            vec![Start {
                running_us: 51000,
                cli_us: 40000
            }]
        );
        assert_eq!(
            c.cairn,
            vec![Start {
                running_us: 62000,
                cli_us: 61000
            }]
        );
        assert_eq!(c.shims[0]["VmRSS"], 2900);
        assert_eq!(c.shims[0]["Threads"], 1);
        assert_eq!(c.maps["/usr/bin/cairn-shim"], 2000);
        assert!(c.done);
        assert_eq!(c.error, None);
        let failed = Console::parse("CB error crun: it broke\n");
        assert_eq!(failed.error.as_deref(), Some("crun: it broke"));
        assert!(!failed.done);
    }

    #[test]
    fn median_and_p90_use_the_middle_and_the_nearest_rank() {
        let v: Vec<f64> = (1..=10).map(f64::from).collect();
        assert!((median(&v) - 5.5).abs() < 1e-9);
        assert!((percentile(&v, 90.0) - 9.0).abs() < 1e-9);
        assert!((percentile(&v, 100.0) - 10.0).abs() < 1e-9);
        assert!(median(&[]).is_nan());
    }

    #[test]
    fn the_driver_compiles_to_a_static_binary() {
        let dir = tempfile::tempdir().unwrap();
        let out = compile_driver(dir.path()).unwrap();
        image_build::binaries::read_static_binary(&out).unwrap();
    }
}
