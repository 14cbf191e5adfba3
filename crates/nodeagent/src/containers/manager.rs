//! [`Containers`]: the node's containers, each run by its own shim.
//!
//! The manager owns the table of containers and, per container, the
//! record of what the operator asked for (`container.json`, written only
//! here) and the health tracker. What the container *is* doing comes from
//! its shim: over `shim.sock` while the shim lives, from the shim's last
//! `state.json` once it has gone. Changes to one container (start, stop,
//! remove) hold that container's operation lock, so they never interleave;
//! reads take no lock the changes hold for long.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use api::Timestamp;
use api::types::{
    ContainerCreateRequest, ContainerInfo, ContainerLogLine, ContainerState, ContainerSummary,
    ExecFrame, ExecRequest, ExitStatus as ApiExit, HealthProbe, HealthReport, HealthStatus,
    LogStream as ApiStream, NetworkMode as ApiNetwork,
};
use base64::Engine as _;
use oci_spec::image::ImageConfiguration;
use runtime::logs::{LogFollower, LogRecord, LogStream};
use runtime::paths::ContainerDir;
use runtime::protocol::{ClientError, ErrorCode as ShimCode, ExecEvent, ShimClient};
use runtime::{
    ContainerName, ContainerSpec, ExitRecord, ExitStatus, ImageInfo, Mount, NetworkMode,
    ProcessOverrides, Resources, ShimState, Signal, Status, StopConfig,
};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::health::{HealthTracker, ProbeNet, probe_http, probe_tcp};
use super::plan::{Plan, PlanError};
use crate::images::{Holds, ImageStore};

/// The record cairnd keeps per container, beside the shim's files.
const RECORD_FILE: &str = "container.json";
/// How long `cairn-shim run` may take to report the container running.
const SHIM_START_TIMEOUT: Duration = Duration::from_secs(120);
/// How often a followed log is polled for new lines.
const LOG_POLL: Duration = Duration::from_millis(250);
/// How often a health task looks at the shim between probes.
const HEALTH_LOOK: Duration = Duration::from_secs(1);
/// Lines buffered between the log reader and the response.
const LOG_CHANNEL: usize = 256;

/// Where containers live and what runs them.
#[derive(Clone, Debug)]
pub struct ContainerOptions {
    /// One directory per container, `/var/lib/cairn/containers`.
    pub root: PathBuf,
    /// Named volumes, `/var/lib/cairn/volumes`.
    pub volumes: PathBuf,
    /// The shim executable.
    pub shim: PathBuf,
    /// The cgroup2 mount, for cleaning up after a shim that died.
    pub cgroup_root: PathBuf,
    /// libcontainer's state root, likewise.
    pub runtime_root: PathBuf,
}

impl ContainerOptions {
    /// The node's paths under a state directory.
    pub fn under(state_dir: &Path) -> Self {
        Self {
            root: state_dir.join(super::CONTAINERS_DIR),
            volumes: state_dir.join(super::VOLUMES_DIR),
            shim: PathBuf::from(runtime::paths::SHIM_BINARY),
            cgroup_root: PathBuf::from("/sys/fs/cgroup"),
            runtime_root: PathBuf::from(runtime::paths::RUNTIME_STATE_ROOT),
        }
    }
}

/// Whether the operator wants the container running.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Desired {
    Running,
    Stopped,
}

/// `container.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Record {
    request: ContainerCreateRequest,
    created: Timestamp,
    image_digest: String,
    command: Vec<String>,
    desired: Desired,
    /// Why the last start failed before the shim could record it.
    #[serde(default)]
    start_error: Option<String>,
}

/// A container in the table.
#[derive(Debug)]
struct Entry {
    dir: ContainerDir,
    network: NetworkMode,
    /// Held across every change to the container.
    op: tokio::sync::Mutex<()>,
    record: Mutex<Record>,
    health: Option<Arc<Mutex<HealthTracker>>>,
    health_task: Mutex<Option<tokio::task::AbortHandle>>,
}

impl Entry {
    fn record(&self) -> Record {
        self.record
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn client(&self) -> ShimClient {
        ShimClient::new(&self.dir.socket())
    }
}

impl Drop for Entry {
    fn drop(&mut self) {
        if let Some(task) = self
            .health_task
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            task.abort();
        }
    }
}

/// Why a container operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    /// The request is wrong.
    #[error(transparent)]
    Invalid(#[from] PlanError),
    /// The image cannot give a process (no command, unknown user).
    #[error("cannot run image {image}")]
    Process {
        /// The image.
        image: String,
        /// Why.
        #[source]
        source: runtime::ResolveError,
    },
    /// The resolved spec breaks a rule.
    #[error("the container spec is invalid")]
    Spec(#[source] runtime::SpecError),
    /// No such image.
    #[error("no image {0} in the node's store")]
    ImageNotFound(String),
    /// No such container.
    #[error("no container {0}")]
    NotFound(String),
    /// The name is taken.
    #[error("a container named {0} exists already")]
    Exists(String),
    /// It runs, and the operation needs it stopped.
    #[error("container {0} is running")]
    Running(String),
    /// It does not run, and the operation needs it running.
    #[error("container {0} is not running")]
    NotRunning(String),
    /// The shim could not start it.
    #[error("container {name} did not start: {message}")]
    StartFailed {
        /// The container.
        name: String,
        /// What the shim said.
        message: String,
    },
    /// The shim did not answer as it should.
    #[error("the shim of container {name} failed")]
    Shim {
        /// The container.
        name: String,
        /// Why.
        #[source]
        source: ClientError,
    },
    /// A file of the container or its image could not be used.
    #[error("{what} {}", path.display())]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The image's config blob is unreadable.
    #[error("the config of image {image} is unreadable")]
    ImageConfig {
        /// The image.
        image: String,
        /// Why.
        #[source]
        source: oci_spec::OciSpecError,
    },
    /// A blocking task failed.
    #[error("a container task failed")]
    Task(#[source] tokio::task::JoinError),
    /// A thread for a long call could not be started, or died.
    #[error("a container worker thread failed")]
    Thread(#[source] std::io::Error),
}

fn io<'a>(
    what: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> ContainerError + 'a {
    move |source| ContainerError::Io {
        what,
        path: path.to_owned(),
        source,
    }
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ContainerError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(ContainerError::Task)
}

/// Runs `work` on a thread of its own. A stop or an exec blocks for as
/// long as the container takes, which must not tie up the agent's few
/// blocking-pool threads (see cairnd's main). The thread starts at once;
/// the future only waits for its result, so dropping it detaches the work.
fn on_thread<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> impl Future<Output = Result<T, ContainerError>> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let spawned = std::thread::Builder::new()
        .name("container-call".to_owned())
        .spawn(move || {
            let _ = tx.send(work());
        });
    async move {
        spawned.map_err(ContainerError::Thread)?;
        rx.await
            .map_err(|_| ContainerError::Thread(std::io::Error::other("the thread panicked")))
    }
}

/// The node's containers.
#[derive(Debug)]
pub struct Containers {
    options: ContainerOptions,
    images: Arc<ImageStore>,
    table: Mutex<BTreeMap<ContainerName, Arc<Entry>>>,
}

impl Containers {
    /// Loads every container's record from `options.root`, re-attaches to
    /// the shims that still run, and starts again the containers that
    /// should run but whose shim is gone (after a reboot) when their
    /// restart policy says so.
    ///
    /// # Errors
    /// When the containers directory cannot be created or read; a
    /// container whose record is unreadable is skipped and logged.
    pub async fn open(
        options: ContainerOptions,
        images: Arc<ImageStore>,
    ) -> Result<Arc<Self>, ContainerError> {
        let root = options.root.clone();
        let records = blocking(move || load_records(&root)).await??;
        let containers = Arc::new(Self {
            options,
            images,
            table: Mutex::new(BTreeMap::new()),
        });
        for (name, record) in records {
            let entry = containers.insert(name.clone(), record);
            let alive = shim_state(&entry).await.is_some();
            if alive {
                tracing::info!(container = %name, "re-attached to the running shim");
            } else if entry.record().desired == Desired::Running
                && entry.record().request.restart.policy != api::types::RestartMode::Never
            {
                tracing::info!(container = %name, "starting again: it should run and its shim is gone");
                let _guard = entry.op.lock().await;
                if let Err(e) = containers.spawn_shim(&entry, &name).await {
                    tracing::warn!(container = %name, "{}", crate::error_chain(&e));
                }
            }
            containers.watch_health(&entry);
        }
        Ok(containers)
    }

    fn table(&self) -> std::sync::MutexGuard<'_, BTreeMap<ContainerName, Arc<Entry>>> {
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn insert(&self, name: ContainerName, record: Record) -> Arc<Entry> {
        let entry = Arc::new(Self::entry(&self.options.root, &name, record));
        self.table().insert(name, Arc::clone(&entry));
        entry
    }

    fn entry(root: &Path, name: &ContainerName, record: Record) -> Entry {
        let health = Plan::parse(&record.request)
            .ok()
            .and_then(|plan| plan.health)
            .map(|policy| Arc::new(Mutex::new(HealthTracker::new(policy))));
        Entry {
            dir: ContainerDir::new(root, name),
            network: match record.request.network {
                ApiNetwork::Host => NetworkMode::Host,
                ApiNetwork::Private => NetworkMode::Private,
            },
            op: tokio::sync::Mutex::new(()),
            record: Mutex::new(record),
            health,
            health_task: Mutex::new(None),
        }
    }

    fn get(&self, name: &str) -> Result<(ContainerName, Arc<Entry>), ContainerError> {
        let parsed = ContainerName::try_from(name.to_owned())
            .map_err(|_| ContainerError::NotFound(name.to_owned()))?;
        let entry = self
            .table()
            .get(&parsed)
            .cloned()
            .ok_or_else(|| ContainerError::NotFound(name.to_owned()))?;
        Ok((parsed, entry))
    }

    /// What no prune may remove: the images containers run from.
    pub fn holds(&self) -> Holds {
        let entries: Vec<Arc<Entry>> = self.table().values().cloned().collect();
        Holds {
            images: entries
                .iter()
                .filter_map(|e| e.record().image_digest.parse().ok())
                .collect(),
        }
    }

    /// Creates a container and starts it.
    ///
    /// # Errors
    /// A bad request, an unknown image, a name in use, or a start that
    /// failed (the container then exists, exited, with the reason).
    pub async fn create(
        &self,
        request: ContainerCreateRequest,
    ) -> Result<ContainerInfo, ContainerError> {
        let plan = Plan::parse(&request)?;
        // Refused before the spec is built, which creates the volumes: a
        // refused duplicate leaves nothing behind. The name is claimed for
        // good (against a concurrent create) further down.
        if self.table().contains_key(&plan.name) {
            return Err(ContainerError::Exists(plan.name.to_string()));
        }
        let (digest, image) = self
            .images
            .resolve(&plan.image)
            .ok_or_else(|| ContainerError::ImageNotFound(request.image.clone()))?;
        let rootfs = image
            .chains
            .last()
            .map(|chain| self.images.chain_path(chain))
            .ok_or_else(|| ContainerError::ImageNotFound(request.image.clone()))?;
        let config_path = self.images.blob_path(&image.config);
        let spec = {
            let request = request.clone();
            let plan = plan.clone();
            let options = self.options.clone();
            let digest = digest.to_string();
            blocking(move || build_spec(&options, &plan, &request, &digest, &rootfs, &config_path))
                .await??
        };
        let record = Record {
            created: Timestamp::from_system(SystemTime::now()),
            image_digest: digest.to_string(),
            command: spec.process.args.clone(),
            desired: Desired::Running,
            start_error: None,
            request,
        };
        // Claim the name before anything touches the disk.
        let entry = {
            let mut table = self.table();
            if table.contains_key(&plan.name) {
                return Err(ContainerError::Exists(plan.name.to_string()));
            }
            let entry = Arc::new(Self::entry(&self.options.root, &plan.name, record.clone()));
            table.insert(plan.name.clone(), Arc::clone(&entry));
            entry
        };
        let _guard = entry.op.lock().await;
        let written = {
            let dir = entry.dir.clone();
            blocking(move || write_container_dir(&dir, &record, &spec))
                .await
                .and_then(|r| r)
        };
        if let Err(e) = written {
            self.table().remove(&plan.name);
            let dir = entry.dir.path().to_owned();
            let _ = blocking(move || std::fs::remove_dir_all(dir)).await;
            return Err(e);
        }
        self.watch_health(&entry);
        self.spawn_shim(&entry, &plan.name).await?;
        Ok(self.info(&plan.name, &entry).await)
    }

    /// Starts a stopped or exited container; a running one is left be.
    ///
    /// # Errors
    /// Unknown container, or a start that failed.
    pub async fn start(&self, name: &str) -> Result<ContainerInfo, ContainerError> {
        let (name, entry) = self.get(name)?;
        {
            let _guard = entry.op.lock().await;
            self.set_desired(&entry, Desired::Running).await?;
            if shim_state(&entry).await.is_none() {
                self.spawn_shim(&entry, &name).await?;
            }
        }
        Ok(self.info(&name, &entry).await)
    }

    /// Stops a container (stop signal, SIGKILL after the timeout); it is
    /// not restarted until started again.
    ///
    /// # Errors
    /// Unknown container, or a shim that failed.
    pub async fn stop(
        &self,
        name: &str,
        timeout_s: Option<u32>,
    ) -> Result<ContainerInfo, ContainerError> {
        let (name, entry) = self.get(name)?;
        {
            let _guard = entry.op.lock().await;
            self.set_desired(&entry, Desired::Stopped).await?;
            stop_shim(&entry, &name, timeout_s).await?;
        }
        Ok(self.info(&name, &entry).await)
    }

    /// Stops, then starts.
    ///
    /// # Errors
    /// As [`Containers::stop`] and [`Containers::start`].
    pub async fn restart(
        &self,
        name: &str,
        timeout_s: Option<u32>,
    ) -> Result<ContainerInfo, ContainerError> {
        let (name, entry) = self.get(name)?;
        {
            let _guard = entry.op.lock().await;
            stop_shim(&entry, &name, timeout_s).await?;
            self.set_desired(&entry, Desired::Running).await?;
            self.spawn_shim(&entry, &name).await?;
        }
        Ok(self.info(&name, &entry).await)
    }

    /// Removes a container: stops it when `force`, then removes its
    /// mount, cgroup, runtime state and directory. Volumes stay.
    ///
    /// # Errors
    /// Unknown container, running without `force`, or a cleanup failure
    /// (the container then stays listed so it can be retried).
    pub async fn remove(&self, name: &str, force: bool) -> Result<(), ContainerError> {
        let (name, entry) = self.get(name)?;
        let _guard = entry.op.lock().await;
        if let Some(state) = shim_state(&entry).await {
            if !state.status.is_final() && !force {
                return Err(ContainerError::Running(name.to_string()));
            }
            stop_shim(&entry, &name, None).await?;
        }
        let options = self.options.clone();
        let dir = entry.dir.clone();
        let swept_name = name.clone();
        blocking(move || sweep(&options, &swept_name, &dir)).await??;
        self.table().remove(&name);
        tracing::info!(container = %name, "removed");
        Ok(())
    }

    /// Every container, in name order.
    pub async fn list(&self) -> Vec<ContainerSummary> {
        let entries: Vec<(ContainerName, Arc<Entry>)> = self
            .table()
            .iter()
            .map(|(n, e)| (n.clone(), Arc::clone(e)))
            .collect();
        let mut out = Vec::with_capacity(entries.len());
        for (name, entry) in entries {
            let info = self.info(&name, &entry).await;
            out.push(ContainerSummary {
                name: info.name,
                image: info.image,
                state: info.state,
                restarts: info.restarts,
                health: info.health.status,
                created: info.created,
            });
        }
        out
    }

    /// One container in detail.
    ///
    /// # Errors
    /// Unknown container.
    pub async fn inspect(&self, name: &str) -> Result<ContainerInfo, ContainerError> {
        let (name, entry) = self.get(name)?;
        Ok(self.info(&name, &entry).await)
    }

    /// The container's output lines: the last `tail` (all without), then,
    /// when `follow`, new ones as they are written, until the receiver is
    /// dropped or the container removed.
    ///
    /// # Errors
    /// Unknown container, or unreadable logs.
    pub async fn logs(
        &self,
        name: &str,
        tail: Option<usize>,
        follow: bool,
    ) -> Result<mpsc::Receiver<ContainerLogLine>, ContainerError> {
        let (_, entry) = self.get(name)?;
        let dir = entry.dir.logs();
        let opened = {
            let dir = dir.clone();
            blocking(move || LogFollower::open(&dir, tail)).await?
        };
        let (records, mut follower) = opened.map_err(|e| ContainerError::Io {
            what: "cannot read the logs in",
            path: dir.clone(),
            source: std::io::Error::other(crate::error_chain(&e)),
        })?;
        let (tx, rx) = mpsc::channel(LOG_CHANNEL);
        tokio::spawn(async move {
            let mut joiner = LineJoiner::default();
            for record in records {
                if let Some(line) = joiner.push(record)
                    && tx.send(line).await.is_err()
                {
                    return;
                }
            }
            while follow && !tx.is_closed() {
                tokio::time::sleep(LOG_POLL).await;
                let polled = tokio::task::spawn_blocking(move || {
                    let records = follower.poll();
                    (follower, records)
                })
                .await;
                let Ok((back, records)) = polled else { return };
                follower = back;
                let Ok(records) = records else {
                    // The directory went with the container.
                    return;
                };
                for record in records {
                    if let Some(line) = joiner.push(record)
                        && tx.send(line).await.is_err()
                    {
                        return;
                    }
                }
            }
        });
        Ok(rx)
    }

    /// Runs a command in the running container; its output and then its
    /// exit arrive on the receiver.
    ///
    /// # Errors
    /// Unknown container, or one that is not running.
    pub async fn exec(
        &self,
        name: &str,
        request: ExecRequest,
    ) -> Result<mpsc::Receiver<ExecFrame>, ContainerError> {
        let (name, entry) = self.get(name)?;
        match shim_state(&entry).await {
            Some(state) if state.status == Status::Running => {}
            _ => return Err(ContainerError::NotRunning(name.to_string())),
        }
        let (tx, rx) = mpsc::channel(64);
        let client = entry.client();
        let shim_request = runtime::protocol::ExecRequest {
            args: request.command,
            env: request.env,
            cwd: request.workdir,
            tty: false,
        };
        // Detached: it ends with the command, and a client that went away
        // only makes its sends fail.
        drop(on_thread(move || {
            let encode = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
            let result = client.exec(shim_request, |event| {
                let frame = match event {
                    ExecEvent::Stdout(bytes) => ExecFrame::Stdout(encode(bytes)),
                    ExecEvent::Stderr(bytes) => ExecFrame::Stderr(encode(bytes)),
                    ExecEvent::Exit(_) | ExecEvent::Error(_) => return,
                };
                let _ = tx.blocking_send(frame);
            });
            let last = match result {
                Ok(ExitStatus::Code(code)) => ExecFrame::Exit {
                    code: Some(code),
                    signal: None,
                },
                Ok(ExitStatus::Signal(signal)) => ExecFrame::Exit {
                    code: None,
                    signal: Some(signal),
                },
                Err(e) => ExecFrame::Error {
                    message: crate::error_chain(&e),
                },
            };
            let _ = tx.blocking_send(last);
        }));
        Ok(rx)
    }

    async fn set_desired(&self, entry: &Entry, desired: Desired) -> Result<(), ContainerError> {
        let record = {
            let mut record = entry.record.lock().unwrap_or_else(PoisonError::into_inner);
            record.desired = desired;
            record.clone()
        };
        let path = entry.dir.path().join(RECORD_FILE);
        blocking(move || write_record(&path, &record)).await?
    }

    /// Runs `cairn-shim run` and waits until it reports the container
    /// running (or why not). Holds the entry's operation lock.
    async fn spawn_shim(&self, entry: &Entry, name: &ContainerName) -> Result<(), ContainerError> {
        let mut command = tokio::process::Command::new(&self.options.shim);
        command
            .arg("run")
            .arg("--dir")
            .arg(entry.dir.path())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        let outcome = match tokio::time::timeout(SHIM_START_TIMEOUT, command.output()).await {
            Err(_) => Err(format!(
                "the shim did not report within {} s",
                SHIM_START_TIMEOUT.as_secs()
            )),
            Ok(Err(e)) => Err(format!("cannot run {}: {e}", self.options.shim.display())),
            Ok(Ok(output)) if output.status.success() => Ok(()),
            Ok(Ok(output)) => {
                let said = String::from_utf8_lossy(&output.stderr).trim().to_owned();
                Err(if said.is_empty() {
                    format!("the shim exited with {}", output.status)
                } else {
                    said
                })
            }
        };
        let start_error = outcome.as_ref().err().cloned();
        let record = {
            let mut record = entry.record.lock().unwrap_or_else(PoisonError::into_inner);
            record.start_error.clone_from(&start_error);
            record.clone()
        };
        let path = entry.dir.path().join(RECORD_FILE);
        blocking(move || write_record(&path, &record)).await??;
        match start_error {
            None => {
                tracing::info!(container = %name, "started");
                Ok(())
            }
            Some(message) => {
                tracing::warn!(container = %name, "did not start: {message}");
                Err(ContainerError::StartFailed {
                    name: name.to_string(),
                    message,
                })
            }
        }
    }

    /// The container as the API shows it.
    async fn info(&self, name: &ContainerName, entry: &Entry) -> ContainerInfo {
        let record = entry.record();
        let live = shim_state(entry).await;
        let shim_alive = live.is_some();
        let last = match live {
            Some(state) => Some(state),
            None => {
                let path = entry.dir.state();
                blocking(move || ShimState::load(&path).ok())
                    .await
                    .ok()
                    .flatten()
            }
        };
        let (state, error) = match (&last, shim_alive) {
            (Some(s), true) => (api_state(s.status), s.error.clone()),
            (Some(s), false) if s.status.is_final() => (api_state(s.status), s.error.clone()),
            (Some(s), false) => (
                ContainerState::Unknown,
                Some(format!(
                    "the container's shim is gone (the node restarted, or it was killed); it last reported {}",
                    status_name(s.status)
                )),
            ),
            (None, _) => match &record.start_error {
                Some(e) => (ContainerState::Exited, Some(e.clone())),
                None if record.desired == Desired::Stopped => (ContainerState::Stopped, None),
                None => (
                    ContainerState::Unknown,
                    Some("the container's shim left no state".to_owned()),
                ),
            },
        };
        let error = error.or(record.start_error.clone());
        let running = state == ContainerState::Running;
        let health = match &entry.health {
            None => HealthReport {
                status: HealthStatus::None,
                failing_streak: 0,
                probes: Vec::new(),
            },
            Some(tracker) => {
                let mut report = tracker
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .report();
                if !running && report.status == HealthStatus::Starting {
                    report.status = HealthStatus::None;
                }
                report
            }
        };
        let ts = |t: Option<time::OffsetDateTime>| t.map(|t| Timestamp::from_system(t.into()));
        ContainerInfo {
            name: name.to_string(),
            image: record.request.image.clone(),
            image_digest: record.image_digest.clone(),
            state,
            restarts: last.as_ref().map_or(0, |s| s.restarts),
            pid: last.as_ref().and_then(|s| s.pid).filter(|_| running),
            created: record.created,
            started_at: ts(last.as_ref().and_then(|s| s.started_at)),
            finished_at: ts(last.as_ref().and_then(|s| s.finished_at)),
            last_exit: last
                .as_ref()
                .and_then(|s| s.last_exit.as_ref())
                .map(api_exit),
            next_restart_at: ts(last.as_ref().and_then(|s| s.next_restart_at)),
            error,
            health,
            command: record.command.clone(),
            spec: record.request,
        }
    }

    /// Starts the container's health task, if it has a check.
    fn watch_health(&self, entry: &Arc<Entry>) {
        let Some(tracker) = entry.health.clone() else {
            return;
        };
        let weak = Arc::downgrade(entry);
        let task = tokio::spawn(async move {
            let mut run: Option<time::OffsetDateTime> = None;
            loop {
                let Some(entry) = weak.upgrade() else { return };
                let state = shim_state(&entry).await;
                let now = Instant::now();
                let running = state
                    .as_ref()
                    .filter(|s| s.status == Status::Running)
                    .and_then(|s| s.pid.map(|pid| (pid, s.started_at)));
                let lock = || tracker.lock().unwrap_or_else(PoisonError::into_inner);
                match running {
                    Some((_, started)) if started != run => {
                        run = started;
                        lock().started(now);
                    }
                    Some(_) => {}
                    None => {
                        run = None;
                        lock().stopped();
                    }
                }
                let due = lock().next_probe();
                if let (Some(due), Some((pid, _))) = (due, running)
                    && now >= due
                {
                    let policy = lock().policy().clone();
                    let at = SystemTime::now();
                    let (ok, output) = probe(&entry, pid, &policy.probe, policy.timeout).await;
                    lock().record(now, Instant::now(), at, ok, &output);
                    continue;
                }
                drop(entry);
                let wait = due
                    .map(|d| d.saturating_duration_since(Instant::now()))
                    .unwrap_or(HEALTH_LOOK)
                    .min(HEALTH_LOOK);
                tokio::time::sleep(wait).await;
            }
        });
        *entry
            .health_task
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(task.abort_handle());
    }
}

/// Runs one probe against the container whose init is `pid`.
async fn probe(entry: &Entry, pid: u32, probe: &HealthProbe, timeout: Duration) -> (bool, String) {
    let net = match entry.network {
        NetworkMode::Host => ProbeNet::Host,
        NetworkMode::Private => ProbeNet::Namespace(PathBuf::from(format!("/proc/{pid}/ns/net"))),
    };
    let work: Box<dyn FnOnce() -> (bool, String) + Send> = match probe.clone() {
        HealthProbe::Tcp { port } => Box::new(move || probe_tcp(&net, port, timeout)),
        HealthProbe::Http { port, path } => {
            Box::new(move || probe_http(&net, port, &path, timeout))
        }
        HealthProbe::Exec { command } => {
            let client = entry.client();
            Box::new(move || exec_probe(&client, command))
        }
    };
    match tokio::time::timeout(timeout, on_thread(work)).await {
        Ok(Ok(outcome)) => outcome,
        Ok(Err(e)) => (false, crate::error_chain(&e)),
        Err(_) => (
            false,
            format!("no answer within {} ms", timeout.as_millis()),
        ),
    }
}

/// An exec probe: exit code 0 passes; the output's end is kept.
fn exec_probe(client: &ShimClient, command: Vec<String>) -> (bool, String) {
    let mut output = Vec::new();
    let request = runtime::protocol::ExecRequest {
        args: command,
        env: Vec::new(),
        cwd: None,
        tty: false,
    };
    let result = client.exec(request, |event| {
        if let ExecEvent::Stdout(bytes) | ExecEvent::Stderr(bytes) = event {
            output.extend_from_slice(bytes);
            let excess = output.len().saturating_sub(super::health::KEPT_OUTPUT);
            output.drain(..excess);
        }
    });
    let text = String::from_utf8_lossy(&output).trim().to_owned();
    match result {
        Ok(ExitStatus::Code(0)) => (true, text),
        Ok(ExitStatus::Code(code)) => (false, format!("exit code {code}: {text}")),
        Ok(ExitStatus::Signal(signal)) => (false, format!("killed by signal {signal}: {text}")),
        Err(e) => (false, crate::error_chain(&e)),
    }
}

/// The live state from the shim, or `None` when no shim answers.
async fn shim_state(entry: &Entry) -> Option<ShimState> {
    let client = entry.client();
    tokio::task::spawn_blocking(move || client.state().ok())
        .await
        .ok()
        .flatten()
}

/// Asks the shim (if one runs) to stop the container and waits for it.
async fn stop_shim(
    entry: &Entry,
    name: &ContainerName,
    timeout_s: Option<u32>,
) -> Result<(), ContainerError> {
    let client = entry.client();
    match on_thread(move || client.stop(timeout_s.map(u64::from))).await? {
        Ok(_) => Ok(()),
        // No shim: nothing runs.
        Err(ClientError::Connect { .. }) => Ok(()),
        // The shim finished (or is finishing) on its own meanwhile.
        Err(ClientError::Shim(body)) if body.code == ShimCode::NotRunning => Ok(()),
        Err(source) => Err(ContainerError::Shim {
            name: name.to_string(),
            source,
        }),
    }
}

fn api_state(status: Status) -> ContainerState {
    match status {
        Status::Created => ContainerState::Created,
        Status::Running => ContainerState::Running,
        Status::Restarting => ContainerState::Restarting,
        Status::Exited => ContainerState::Exited,
        Status::Stopped => ContainerState::Stopped,
    }
}

fn status_name(status: Status) -> &'static str {
    match status {
        Status::Created => "created",
        Status::Running => "running",
        Status::Restarting => "restarting",
        Status::Exited => "exited",
        Status::Stopped => "stopped",
    }
}

fn api_exit(exit: &ExitRecord) -> ApiExit {
    let (code, signal) = match exit.status {
        ExitStatus::Code(c) => (Some(c), None),
        ExitStatus::Signal(s) => (None, Some(s)),
    };
    ApiExit {
        code,
        signal,
        oom_killed: exit.oom_killed,
        at: Timestamp::from_system(exit.at.into()),
    }
}

/// Joins CRI partial records back into whole lines, per stream.
#[derive(Default)]
struct LineJoiner {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
}

impl LineJoiner {
    fn push(&mut self, record: LogRecord) -> Option<ContainerLogLine> {
        let (pending, stream) = match record.stream {
            LogStream::Stdout => (&mut self.stdout, ApiStream::Stdout),
            LogStream::Stderr => (&mut self.stderr, ApiStream::Stderr),
        };
        pending.extend_from_slice(&record.content);
        if record.partial {
            return None;
        }
        let line = String::from_utf8_lossy(pending).into_owned();
        pending.clear();
        Some(ContainerLogLine {
            time: Timestamp::from_system(record.time.into()),
            stream,
            line,
        })
    }
}

/// The spec the shim will run, from the plan, the request and the image.
fn build_spec(
    options: &ContainerOptions,
    plan: &Plan,
    request: &ContainerCreateRequest,
    digest: &str,
    rootfs: &Path,
    config_path: &Path,
) -> Result<ContainerSpec, ContainerError> {
    let config = ImageConfiguration::from_file(config_path).map_err(|source| {
        ContainerError::ImageConfig {
            image: request.image.clone(),
            source,
        }
    })?;
    let overrides = ProcessOverrides {
        entrypoint: request.entrypoint.clone(),
        command: (!request.command.is_empty()).then(|| request.command.clone()),
        env: request.env.clone(),
        cwd: request.workdir.clone(),
        user: request.user.clone(),
        allow_new_privileges: false,
    };
    let process = runtime::resolve_process(&config, &overrides, rootfs).map_err(|source| {
        ContainerError::Process {
            image: request.image.clone(),
            source,
        }
    })?;
    let mut mounts = Vec::with_capacity(plan.volumes.len());
    for volume in &plan.volumes {
        let source = options.volumes.join(volume.volume.as_str());
        std::fs::create_dir_all(&source).map_err(io("cannot create the volume", &source))?;
        mounts.push(Mount {
            source,
            destination: volume.destination.clone(),
            read_only: volume.read_only,
        });
    }
    let spec = ContainerSpec {
        name: plan.name.clone(),
        image: ImageInfo {
            reference: request.image.clone(),
            manifest_digest: digest.to_owned(),
        },
        rootfs: rootfs.to_owned(),
        process,
        mounts,
        read_only_rootfs: request.read_only,
        network: match request.network {
            ApiNetwork::Host => NetworkMode::Host,
            ApiNetwork::Private => NetworkMode::Private,
        },
        hostname: request.hostname.clone(),
        resources: Resources {
            cpu_millis: request.limits.cpu_millis,
            memory_bytes: request.limits.memory_bytes,
            pids: request.limits.pids,
        },
        capabilities: plan.capabilities.clone(),
        restart: plan.restart.clone(),
        stop: StopConfig {
            signal: Signal::TERM,
            timeout_s: u64::from(plan.stop_timeout_s),
        },
        logs: plan.logs.clone(),
    };
    spec.validate().map_err(ContainerError::Spec)?;
    Ok(spec)
}

fn write_record(path: &Path, record: &Record) -> Result<(), ContainerError> {
    let mut bytes = serde_json::to_vec_pretty(record).map_err(|e| ContainerError::Io {
        what: "cannot encode",
        path: path.to_owned(),
        source: std::io::Error::other(e),
    })?;
    bytes.push(b'\n');
    crate::files::write_atomic(path, &bytes).map_err(io("cannot write", path))
}

fn write_container_dir(
    dir: &ContainerDir,
    record: &Record,
    spec: &ContainerSpec,
) -> Result<(), ContainerError> {
    std::fs::create_dir_all(dir.path()).map_err(io("cannot create", dir.path()))?;
    let spec_path = dir.spec();
    let mut bytes = serde_json::to_vec_pretty(spec).map_err(|e| ContainerError::Io {
        what: "cannot encode",
        path: spec_path.clone(),
        source: std::io::Error::other(e),
    })?;
    bytes.push(b'\n');
    crate::files::write_atomic(&spec_path, &bytes).map_err(io("cannot write", &spec_path))?;
    write_record(&dir.path().join(RECORD_FILE), record)
}

/// Every `<root>/<name>/container.json`; unreadable ones are logged and
/// skipped (their directories stay for an operator to look at).
fn load_records(root: &Path) -> Result<Vec<(ContainerName, Record)>, ContainerError> {
    std::fs::create_dir_all(root).map_err(io("cannot create", root))?;
    let mut out = Vec::new();
    for dirent in std::fs::read_dir(root).map_err(io("cannot read", root))? {
        let dirent = dirent.map_err(io("cannot read", root))?;
        let Some(name) = dirent
            .file_name()
            .to_str()
            .and_then(|n| ContainerName::try_from(n.to_owned()).ok())
        else {
            continue;
        };
        let path = dirent.path().join(RECORD_FILE);
        let record = std::fs::read(&path)
            .map_err(|e| e.to_string())
            .and_then(|bytes| serde_json::from_slice::<Record>(&bytes).map_err(|e| e.to_string()));
        match record {
            Ok(record) => out.push((name, record)),
            Err(e) => tracing::warn!(path = %path.display(), "skipping a container: {e}"),
        }
    }
    Ok(out)
}

/// Removes what a container leaves on the node: the rootfs mount (if a
/// dead shim left it), the cgroup (killing what is still in it), the
/// runtime's state, and the container directory.
fn sweep(
    options: &ContainerOptions,
    name: &ContainerName,
    dir: &ContainerDir,
) -> Result<(), ContainerError> {
    let rootfs = dir.rootfs();
    if let (Ok(inner), Ok(outer)) = (std::fs::metadata(&rootfs), std::fs::metadata(dir.path()))
        && inner.dev() != outer.dev()
    {
        nix::mount::umount2(&rootfs, nix::mount::MntFlags::MNT_DETACH).map_err(|e| {
            ContainerError::Io {
                what: "cannot unmount",
                path: rootfs.clone(),
                source: e.into(),
            }
        })?;
    }
    let relative = runtime::paths::cgroup_path(name);
    let cgroup = options
        .cgroup_root
        .join(relative.strip_prefix("/").unwrap_or(&relative));
    if cgroup.is_dir() {
        // cgroup.kill (5.14+) kills every process in it at once.
        if let Ok(mut kill) = std::fs::OpenOptions::new()
            .write(true)
            .open(cgroup.join("cgroup.kill"))
        {
            let _ = std::io::Write::write_all(&mut kill, b"1");
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match std::fs::remove_dir(&cgroup) {
                Ok(()) => break,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                Err(e) if Instant::now() >= deadline => {
                    return Err(io("cannot remove the cgroup", &cgroup)(e));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }
    let state = options.runtime_root.join(name.as_str());
    match std::fs::remove_dir_all(&state) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io("cannot remove", &state)(e)),
    }
    match std::fs::remove_dir_all(dir.path()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io("cannot remove", dir.path())(e)),
    }
}

#[cfg(test)]
mod tests {
    use time::OffsetDateTime;

    use super::*;

    fn record(stream: LogStream, partial: bool, text: &str) -> LogRecord {
        LogRecord {
            time: OffsetDateTime::UNIX_EPOCH,
            stream,
            partial,
            content: text.as_bytes().to_vec(),
        }
    }

    #[test]
    fn partial_records_are_joined_per_stream() {
        let mut joiner = LineJoiner::default();
        assert_eq!(joiner.push(record(LogStream::Stdout, true, "hel")), None);
        let err = joiner
            .push(record(LogStream::Stderr, false, "oops"))
            .expect("whole line");
        assert_eq!((err.stream, err.line.as_str()), (ApiStream::Stderr, "oops"));
        let out = joiner
            .push(record(LogStream::Stdout, false, "lo"))
            .expect("whole line");
        assert_eq!(
            (out.stream, out.line.as_str()),
            (ApiStream::Stdout, "hello")
        );
    }

    #[test]
    fn records_round_trip_and_unknown_fields_are_refused() {
        let record = Record {
            request: ContainerCreateRequest {
                name: "web".into(),
                image: "web:1".into(),
                ..ContainerCreateRequest::default()
            },
            created: Timestamp::from_unix(1_800_000_000).expect("ts"),
            image_digest: format!("sha256:{}", "a".repeat(64)),
            command: vec!["/bin/web".into()],
            desired: Desired::Running,
            start_error: None,
        };
        let text = serde_json::to_string(&record).expect("encode");
        let back: Record = serde_json::from_str(&text).expect("decode");
        assert_eq!(back.request, record.request);
        let tampered = text.replacen('{', r#"{"extra":1,"#, 1);
        assert!(serde_json::from_str::<Record>(&tampered).is_err());
    }

    #[test]
    fn sweep_removes_the_directory_and_runtime_state_and_tolerates_their_absence() {
        let tmp = tempfile::tempdir().expect("tmp");
        let options = ContainerOptions {
            root: tmp.path().join("containers"),
            volumes: tmp.path().join("volumes"),
            shim: PathBuf::from("/nonexistent"),
            cgroup_root: tmp.path().join("cgroup"),
            runtime_root: tmp.path().join("run"),
        };
        let name = ContainerName::try_from("web".to_owned()).expect("name");
        let dir = ContainerDir::new(&options.root, &name);
        std::fs::create_dir_all(dir.upper().join("etc")).expect("mkdir");
        std::fs::create_dir_all(options.runtime_root.join("web")).expect("mkdir");
        std::fs::create_dir_all(options.cgroup_root.join("cairn/web")).expect("mkdir");
        sweep(&options, &name, &dir).expect("swept");
        assert!(!dir.path().exists());
        assert!(!options.runtime_root.join("web").exists());
        assert!(!options.cgroup_root.join("cairn/web").exists());
        sweep(&options, &name, &dir).expect("nothing left is fine");
    }
}
