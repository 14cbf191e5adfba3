//! `cbench-driver`: the in-VM half of `cairn-container-bench`.
//!
//! Compiled on its own with `rustc` (std only, static) by the host side and
//! run by the test initramfs's `/init` once cgroup2 and overlay are ready.
//! It times container starts for crun and for cairn-shim the same way,
//! then starts long-running containers under cairn-shim and reads each
//! shim's memory. Everything it learns goes to stdout (the serial console)
//! as `CB ...` lines the host parses.
//!
//! Start latency of one container: from just before the runtime's command
//! (`crun run -d` on the bundle, or `cairn-shim run --dir` on a container
//! directory whose `spec.json` is already written) is spawned, to the
//! moment the container's own first process has written a line into a
//! fifo on a bind-mounted volume. A reader thread blocked on that fifo
//! takes the time, so the number includes the runtime's whole start path
//! (namespaces, cgroup, mounts, exec of the container's shell) and
//! nothing of the driver's polling. Both clocks are `Instant`
//! (`CLOCK_MONOTONIC`).

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const CRUN: &str = "/usr/bin/crun";
const CRUN_BUNDLE: &str = "/bench/crun";
const CRUN_ID: &str = "cbcrun";
const SHIM: &str = "/usr/bin/cairn-shim";
const SPEC_TEMPLATE: &str = "/bench/spec.json";
const NAME_HOLE: &str = "@NAME@";
const CONTAINERS: &str = "/var/lib/cairn/containers";
const FIFO: &str = "/var/lib/cairn/volumes/ready/fifo";
const START_LIMIT: Duration = Duration::from_secs(60);

type Res<T> = Result<T, String>;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let rounds = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(20);
    let rss_containers = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(10);
    match run(rounds, rss_containers) {
        Ok(()) => println!("CB done"),
        Err(e) => println!("CB error {e}"),
    }
}

fn run(rounds: usize, rss_containers: usize) -> Res<()> {
    let template =
        std::fs::read_to_string(SPEC_TEMPLATE).map_err(|e| format!("{SPEC_TEMPLATE}: {e}"))?;
    sh(&["mkfifo", FIFO])?;
    // Read and write: the open never blocks, and the fifo never reports
    // EOF between containers.
    let mut fifo = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(FIFO)
        .map_err(|e| format!("opening {FIFO}: {e}"))?;
    let (tx, rx) = mpsc::channel::<Instant>();
    std::thread::spawn(move || {
        let mut byte = [0u8; 1];
        while let Ok(1) = fifo.read(&mut byte) {
            if byte[0] == b'\n' && tx.send(Instant::now()).is_err() {
                return;
            }
        }
    });
    let ready = Ready(rx);

    // One unmeasured start of each, so both find their binaries and
    // libraries in the page cache.
    crun_round(&ready)?;
    cairn_round(&ready, &template, "warm")?;
    println!("CB warm");

    for round in 0..rounds {
        let crun_first = round % 2 == 0;
        for first in [true, false] {
            if first == crun_first {
                let (running, cli) = crun_round(&ready)?;
                println!("CB lat {round} crun {} {}", micros(running), micros(cli));
            } else {
                let (running, cli) = cairn_round(&ready, &template, &format!("lat{round}"))?;
                println!("CB lat {round} cairn {} {}", micros(running), micros(cli));
            }
        }
    }

    rss(&ready, &template, rss_containers)
}

struct Ready(mpsc::Receiver<Instant>);

impl Ready {
    fn drain(&self) {
        while self.0.try_recv().is_ok() {}
    }
    fn wait(&self, what: &str) -> Res<Instant> {
        self.0.recv_timeout(START_LIMIT).map_err(|_| {
            format!("{what}: the container did not report ready within {START_LIMIT:?}")
        })
    }
}

fn micros(d: Duration) -> u128 {
    d.as_micros()
}

/// Spawns `argv` with stdin and stdout on /dev/null and stderr to a file,
/// and waits for it; returns when it exited.
fn spawn_wait(argv: &[&str], err_path: &str) -> Res<Instant> {
    let err = std::fs::File::create(err_path).map_err(|e| format!("{err_path}: {e}"))?;
    let status = Command::new(argv[0])
        .args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(err)
        .status()
        .map_err(|e| format!("spawning {argv:?}: {e}"))?;
    let done = Instant::now();
    if !status.success() {
        let text = std::fs::read_to_string(err_path).unwrap_or_default();
        return Err(format!(
            "{argv:?} failed ({status}): {}",
            text.trim().replace('\n', " | ")
        ));
    }
    Ok(done)
}

fn sh(argv: &[&str]) -> Res<()> {
    spawn_wait(argv, "/tmp/cb-cmd.err").map(|_| ())
}

/// One crun start: `(until running, until the command returned)`.
fn crun_round(ready: &Ready) -> Res<(Duration, Duration)> {
    ready.drain();
    let t0 = Instant::now();
    let cli = spawn_wait(
        &[CRUN, "run", "-d", "--bundle", CRUN_BUNDLE, CRUN_ID],
        "/tmp/crun.err",
    )?;
    let running = ready.wait("crun")?;
    // Not measured: crun's delete kills the container (SIGKILL), waits
    // for it and removes its cgroup and state.
    sh(&[CRUN, "delete", "-f", CRUN_ID])?;
    Ok((running - t0, cli - t0))
}

fn container_dir(name: &str) -> PathBuf {
    Path::new(CONTAINERS).join(name)
}

/// Writes the container's directory and spec, as cairnd does before it
/// starts a shim.
fn prepare_cairn(template: &str, name: &str) -> Res<PathBuf> {
    let dir = container_dir(name);
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    std::fs::write(dir.join("spec.json"), template.replace(NAME_HOLE, name))
        .map_err(|e| format!("writing {name}'s spec: {e}"))?;
    Ok(dir)
}

fn start_cairn(ready: &Ready, dir: &Path, name: &str) -> Res<(Duration, Duration)> {
    ready.drain();
    let dir_s = dir.display().to_string();
    let t0 = Instant::now();
    let cli = spawn_wait(&[SHIM, "run", "--dir", &dir_s], &format!("/tmp/{name}.err"))?;
    let running = ready.wait(name)?;
    Ok((running - t0, cli - t0))
}

/// One cairn-shim start: `(until running, until the command returned)`.
fn cairn_round(ready: &Ready, template: &str, name: &str) -> Res<(Duration, Duration)> {
    let dir = prepare_cairn(template, name)?;
    let times = start_cairn(ready, &dir, name)?;
    stop_cairn(&dir)?;
    Ok(times)
}

fn shim_pid(dir: &Path) -> Res<u32> {
    let state =
        std::fs::read_to_string(dir.join("state.json")).map_err(|e| format!("state.json: {e}"))?;
    let at = state
        .find("\"shim_pid\"")
        .ok_or("state.json has no shim_pid")?;
    state[at + 10..]
        .trim_start_matches([':', ' '])
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| "shim_pid is not a number".to_owned())
}

/// Not measured: SIGKILL through the shim (restart policy never), then
/// wait until the shim has cleaned up and gone.
fn stop_cairn(dir: &Path) -> Res<()> {
    let pid = shim_pid(dir)?;
    let dir_s = dir.display().to_string();
    sh(&[SHIM, "ctl", "--dir", &dir_s, "kill", "SIGKILL"])?;
    let proc_dir = format!("/proc/{pid}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while Path::new(&proc_dir).exists() {
        if Instant::now() > deadline {
            return Err(format!("shim {pid} did not exit"));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(())
}

/// `Key: value kB` lines of a /proc file, the keys asked for.
fn kb_fields(path: &str, keys: &[&str]) -> Res<BTreeMap<String, u64>> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let Some((key, rest)) = line.split_once(':') else {
            continue;
        };
        if keys.contains(&key)
            && let Some(v) = rest.split_whitespace().next().and_then(|v| v.parse().ok())
        {
            out.insert(key.to_owned(), v);
        }
    }
    Ok(out)
}

fn rss(ready: &Ready, template: &str, count: usize) -> Res<()> {
    let mut dirs = Vec::new();
    for i in 0..count {
        let name = format!("rss{i}");
        let dir = prepare_cairn(template, &name)?;
        start_cairn(ready, &dir, &name)?;
        dirs.push(dir);
    }
    // Let every shim reach its steady state (first poll timeouts, log
    // flushes) before reading it.
    std::thread::sleep(Duration::from_secs(3));
    for (i, dir) in dirs.iter().enumerate() {
        let pid = shim_pid(dir)?;
        let status = kb_fields(
            &format!("/proc/{pid}/status"),
            &[
                "VmRSS", "RssAnon", "RssFile", "RssShmem", "VmHWM", "Threads", "VmSize", "VmStk",
            ],
        )?;
        let rollup = kb_fields(
            &format!("/proc/{pid}/smaps_rollup"),
            &[
                "Rss",
                "Pss",
                "Pss_Anon",
                "Pss_File",
                "Private_Clean",
                "Private_Dirty",
                "Shared_Clean",
            ],
        )?;
        let fields: Vec<String> = status
            .iter()
            .chain(rollup.iter())
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        println!("CB rss {i} {}", fields.join(" "));
        if i == 0 {
            // Where the first shim's resident pages are, mapping by
            // mapping, for the docs' breakdown.
            let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap_or_default();
            let mut name = String::new();
            for line in smaps.lines() {
                let first = line.split_whitespace().next().unwrap_or("");
                if first.contains('-') && !first.ends_with(':') {
                    line.split_whitespace()
                        .nth(5)
                        .unwrap_or("[anon]")
                        .clone_into(&mut name);
                } else if let Some(v) = line.strip_prefix("Rss:") {
                    let kb = v.split_whitespace().next().unwrap_or("0");
                    if kb != "0" {
                        println!("CB map {name} {kb}");
                    }
                }
            }
        }
    }
    for dir in &dirs {
        stop_cairn(dir)?;
    }
    Ok(())
}
