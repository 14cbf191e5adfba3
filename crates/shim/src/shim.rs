//! The shim's event loop: one container, its restarts, its logs, its
//! control socket.

use crate::sys::{self, SysError};
use libcontainer::container::Container;
use libcontainer::container::builder::ContainerBuilder;
use libcontainer::syscall::syscall::SyscallType;
use nix::poll::{PollFd, PollFlags, PollTimeout};
use runtime::logs::{LineSplitter, LogFileError, LogStream, LogWriter};
use runtime::paths::ContainerDir;
use runtime::protocol::{
    self, EXEC_CHUNK, ErrorBody, ErrorCode, ExecEvent, ExecRequest, Request, Response,
};
use runtime::restart::{RestartDecision, RestartTracker};
use runtime::state::StateFileError;
use runtime::{ContainerSpec, ExitRecord, ExitStatus, ShimState, Status};
use std::io::{BufReader, Read};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use time::OffsetDateTime;

/// The longest the loop sleeps, so a SIGTERM that lands just before
/// `poll` is still seen promptly.
const MAX_SLEEP: Duration = Duration::from_millis(500);
/// How long a client has to send its request line.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// Where the shim keeps what is not in the container directory.
#[derive(Debug, Clone)]
pub struct HostPaths {
    /// libcontainer's state root.
    pub runtime_root: PathBuf,
    /// The cgroup2 mount.
    pub cgroup_root: PathBuf,
}

/// Why the container could not be started or looked after.
#[derive(Debug, thiserror::Error)]
pub enum ShimError {
    #[error("could not write the state file")]
    State(#[source] StateFileError),
    #[error("could not open the container log")]
    Log(#[source] LogFileError),
    #[error("could not bind the control socket {path}")]
    Bind {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("could not build the OCI config")]
    Bundle(#[source] runtime::bundle::BundleError),
    #[error("could not write {path}")]
    WriteBundle {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Sys(#[from] SysError),
    #[error("libcontainer could not create the container")]
    Create(#[source] libcontainer::error::LibcontainerError),
    #[error("libcontainer could not start the container")]
    Start(#[source] libcontainer::error::LibcontainerError),
    #[error("libcontainer did not report the container's pid")]
    NoPid,
    #[error(
        "the node's root filesystem is the initramfs rootfs, which pivot_root cannot leave; \
         init must switch_root to a tmpfs before containers can run"
    )]
    InitramfsRoot,
    #[error("a shim already serves {0}")]
    AlreadyRunning(PathBuf),
    #[error("poll failed")]
    Poll(#[source] nix::Error),
}

/// An error and its causes joined with ": " (for `state.json` and the
/// start report).
pub fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        source = cause.source();
    }
    out
}

/// One of the container's output pipes.
struct OutPipe {
    fd: OwnedFd,
    stream: LogStream,
    splitter: LineSplitter,
}

/// The process currently running (one per start or restart).
struct Run {
    pid: i32,
    pidfd: OwnedFd,
    pipes: Vec<OutPipe>,
    oom_kills_before: u64,
}

/// An `exec` in progress: its output goes to the client as events.
struct ExecSession {
    conn: Option<UnixStream>,
    pid: i32,
    pidfd: OwnedFd,
    pipes: Vec<(OwnedFd, LogStream)>,
    status: Option<ExitStatus>,
}

struct Stopping {
    deadline: Instant,
    killed: bool,
    waiters: Vec<UnixStream>,
}

/// The shim for one container.
pub struct Shim {
    dir: ContainerDir,
    spec: ContainerSpec,
    host: HostPaths,
    state: ShimState,
    tracker: RestartTracker,
    epoch: Instant,
    listener: UnixListener,
    log: LogWriter,
    run: Option<Run>,
    restart_at: Option<Instant>,
    stopping: Option<Stopping>,
    execs: Vec<ExecSession>,
}

impl std::fmt::Debug for Shim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shim")
            .field("dir", &self.dir)
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

impl Shim {
    /// Prepares everything and starts the container's process. On error
    /// the shim has cleaned up after itself and written an `exited` state
    /// naming the error.
    pub fn start(
        dir: ContainerDir,
        spec: ContainerSpec,
        host: HostPaths,
    ) -> Result<Self, ShimError> {
        // A live shim answers on the socket; a second one must not touch
        // anything of it (not even state.json), or it would tear down the
        // first one's container.
        if UnixStream::connect(dir.socket()).is_ok() {
            return Err(ShimError::AlreadyRunning(dir.socket()));
        }
        let mut state = ShimState::new(std::process::id());
        state.store(&dir.state()).map_err(ShimError::State)?;
        match Self::prepare(&dir, &spec, &host, state.clone()) {
            Ok(mut shim) => match shim.start_run() {
                Ok(()) => Ok(shim),
                Err(err) => {
                    shim.state.error = Some(chain(&err));
                    shim.state.status = Status::Exited;
                    shim.finish();
                    Err(err)
                }
            },
            Err(err) => {
                cleanup_mounts(&dir);
                state.status = Status::Exited;
                state.error = Some(chain(&err));
                state.finished_at = Some(now());
                let _ = std::fs::remove_file(dir.socket());
                if let Err(store) = state.store(&dir.state()) {
                    eprintln!("cairn-shim: {}", chain(&store));
                }
                Err(err)
            }
        }
    }

    fn prepare(
        dir: &ContainerDir,
        spec: &ContainerSpec,
        host: &HostPaths,
        state: ShimState,
    ) -> Result<Self, ShimError> {
        if sys::root_is_initramfs() {
            return Err(ShimError::InitramfsRoot);
        }
        // A shim that died without cleaning up (kill -9, power cut on a
        // tmpfs-less node) may have left these; they would make the next
        // steps fail.
        delete_runtime_container(host, spec);
        cleanup_mounts(dir);

        std::fs::create_dir_all(&host.runtime_root).map_err(|source| {
            ShimError::Sys(SysError::CreateDir {
                path: host.runtime_root.clone(),
                source,
            })
        })?;
        let log = LogWriter::open(&dir.logs(), spec.logs.clone()).map_err(ShimError::Log)?;
        let _ = std::fs::remove_file(dir.socket());
        let listener = UnixListener::bind(dir.socket()).map_err(|source| ShimError::Bind {
            path: dir.socket(),
            source,
        })?;
        listener
            .set_nonblocking(true)
            .map_err(|source| ShimError::Bind {
                path: dir.socket(),
                source,
            })?;

        sys::mount_overlay(&spec.rootfs, &dir.upper(), &dir.work(), &dir.rootfs())?;
        let config = runtime::bundle::oci_spec(spec, &dir.rootfs()).map_err(ShimError::Bundle)?;
        let bundle = dir.bundle();
        std::fs::create_dir_all(&bundle).map_err(|source| ShimError::WriteBundle {
            path: bundle.clone(),
            source,
        })?;
        let config_path = bundle.join("config.json");
        let json = serde_json::to_vec_pretty(&config).map_err(|source| ShimError::WriteBundle {
            path: config_path.clone(),
            source: source.into(),
        })?;
        std::fs::write(&config_path, json).map_err(|source| ShimError::WriteBundle {
            path: config_path,
            source,
        })?;

        Ok(Self {
            dir: dir.clone(),
            spec: spec.clone(),
            host: host.clone(),
            state,
            tracker: RestartTracker::new(spec.restart.clone()),
            epoch: Instant::now(),
            listener,
            log,
            run: None,
            restart_at: None,
            stopping: None,
            execs: Vec::new(),
        })
    }

    fn cgroup_dir(&self) -> PathBuf {
        self.host.cgroup_root.join(
            runtime::paths::cgroup_path(&self.spec.name)
                .strip_prefix("/")
                .unwrap_or_else(|_| std::path::Path::new("")),
        )
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn save(&self) {
        if let Err(err) = self.state.store(&self.dir.state()) {
            eprintln!("cairn-shim: {}", chain(&err));
        }
    }

    /// Creates and starts the container's process with fresh output pipes.
    fn start_run(&mut self) -> Result<(), ShimError> {
        let (out_r, out_w) = sys::pipe()?;
        let (err_r, err_w) = sys::pipe()?;
        let mut container = ContainerBuilder::new(self.spec.name.to_string(), SyscallType::Linux)
            .with_root_path(&self.host.runtime_root)
            .map_err(ShimError::Create)?
            .with_stdout(out_w)
            .with_stderr(err_w)
            .as_init(self.dir.bundle())
            .with_systemd(false)
            .with_detach(true)
            .build()
            .map_err(ShimError::Create)?;
        let pid = container.pid().map(|p| p.as_raw());
        // Between create and start the init waits, in its namespaces, for
        // the go: the moment to bring up lo in a private network.
        // libcgroups treats a swap limit of 0 as "not set" and never writes
        // it, so the shim turns swap off itself: the memory limit is meant
        // to be a limit, not a trigger for swapping.
        let swap_off = match self.spec.resources.memory_bytes {
            Some(_) => sys::write_cgroup_file(&self.cgroup_dir(), "memory.swap.max", "0")
                .map_err(ShimError::from),
            None => Ok(()),
        };
        let net_ready = swap_off.and_then(|()| match (self.spec.network, pid) {
            (runtime::NetworkMode::Private, Some(pid)) => {
                sys::loopback_up(pid).map_err(ShimError::from)
            }
            (runtime::NetworkMode::Private, None) => Err(ShimError::NoPid),
            (runtime::NetworkMode::Host, _) => Ok(()),
        });
        let started = net_ready.and_then(|()| container.start().map_err(ShimError::Start));
        if let Err(err) = started {
            delete_runtime_container(&self.host, &self.spec);
            return Err(err);
        }
        let pid = pid.ok_or(ShimError::NoPid)?;
        let pidfd = sys::pidfd(pid)?;
        self.run = Some(Run {
            pid,
            pidfd,
            pipes: vec![
                OutPipe {
                    fd: out_r,
                    stream: LogStream::Stdout,
                    splitter: LineSplitter::new(),
                },
                OutPipe {
                    fd: err_r,
                    stream: LogStream::Stderr,
                    splitter: LineSplitter::new(),
                },
            ],
            oom_kills_before: sys::oom_kills(&self.cgroup_dir()),
        });
        self.tracker.started(self.now_ms());
        // Creating a container parses the spec and builds much that is
        // freed again; hand those pages back so the shim stays small for
        // the container's lifetime.
        sys::trim_heap();
        sys::drop_text_pages();
        self.restart_at = None;
        self.state.status = Status::Running;
        self.state.pid = u32::try_from(pid).ok();
        self.state.started_at = Some(now());
        self.state.next_restart_at = None;
        self.state.error = None;
        self.save();
        Ok(())
    }

    /// Runs until the container is finished for good, then cleans up.
    pub fn serve(mut self) {
        loop {
            if sys::terminate_requested() {
                self.begin_stop(None, None);
            }
            if self.state.status.is_final() {
                self.finish();
                return;
            }
            let timeout = self.next_timeout();
            if let Err(err) = self.wait(timeout) {
                eprintln!("cairn-shim: {}", chain(&err));
                std::thread::sleep(Duration::from_millis(100));
            }
            self.pump_run_output();
            self.pump_execs();
            self.accept();
            self.check_run_exit();
            self.check_timers();
        }
    }

    fn next_timeout(&self) -> Duration {
        let now = Instant::now();
        let mut timeout = MAX_SLEEP;
        for at in [
            self.restart_at,
            self.stopping
                .as_ref()
                .filter(|s| !s.killed)
                .map(|s| s.deadline),
        ]
        .into_iter()
        .flatten()
        {
            timeout = timeout.min(at.saturating_duration_since(now));
        }
        timeout
    }

    /// Sleeps until something may have happened: a pipe or the socket
    /// readable, a process exited, a timer due, or a signal.
    fn wait(&self, timeout: Duration) -> Result<(), ShimError> {
        let mut fds: Vec<PollFd<'_>> = vec![PollFd::new(self.listener.as_fd(), PollFlags::POLLIN)];
        if let Some(run) = &self.run {
            fds.push(PollFd::new(run.pidfd.as_fd(), PollFlags::POLLIN));
            for p in &run.pipes {
                fds.push(PollFd::new(p.fd.as_fd(), PollFlags::POLLIN));
            }
        }
        for e in &self.execs {
            if e.status.is_none() {
                fds.push(PollFd::new(e.pidfd.as_fd(), PollFlags::POLLIN));
            }
            for (fd, _) in &e.pipes {
                fds.push(PollFd::new(fd.as_fd(), PollFlags::POLLIN));
            }
        }
        let ms = u16::try_from(timeout.as_millis()).unwrap_or(u16::MAX);
        match nix::poll::poll(&mut fds, PollTimeout::from(ms)) {
            Ok(_) | Err(nix::Error::EINTR) => Ok(()),
            Err(err) => Err(ShimError::Poll(err)),
        }
    }

    fn pump_run_output(&mut self) {
        let Some(run) = &mut self.run else {
            return;
        };
        // On the stack: a heap buffer freed every turn would still count
        // towards the shim's RSS.
        let mut buf = [0u8; 16 * 1024];
        let time = now();
        run.pipes.retain_mut(|pipe| {
            loop {
                match nix::unistd::read(&pipe.fd, &mut buf) {
                    Ok(0) => {
                        let rest: Vec<_> = pipe.splitter.finish().into_iter().collect();
                        log_chunks(&mut self.log, time, pipe.stream, rest);
                        return false;
                    }
                    Ok(n) => {
                        let chunks = pipe.splitter.push(&buf[..n]);
                        log_chunks(&mut self.log, time, pipe.stream, chunks);
                    }
                    Err(nix::Error::EAGAIN) => return true,
                    Err(nix::Error::EINTR) => {}
                    Err(err) => {
                        eprintln!("cairn-shim: reading container output: {err}");
                        return false;
                    }
                }
            }
        });
    }

    fn check_run_exit(&mut self) {
        let Some(pid) = self.run.as_ref().map(|r| r.pid) else {
            return;
        };
        let status = match sys::try_reap(pid) {
            Ok(Some(status)) => status,
            Ok(None) => return,
            Err(err) => {
                eprintln!("cairn-shim: {}", chain(&err));
                return;
            }
        };
        // Everything the process wrote is in the pipes now; take it before
        // the pipes go.
        self.pump_run_output();
        if let Some(mut run) = self.run.take() {
            let time = now();
            for pipe in &mut run.pipes {
                let rest: Vec<_> = pipe.splitter.finish().into_iter().collect();
                log_chunks(&mut self.log, time, pipe.stream, rest);
            }
            let oom_killed = sys::oom_kills(&self.cgroup_dir()) > run.oom_kills_before;
            delete_runtime_container(&self.host, &self.spec);
            self.on_exit(status, oom_killed);
        }
    }

    fn on_exit(&mut self, status: ExitStatus, oom_killed: bool) {
        let at = now();
        self.state.pid = None;
        self.state.finished_at = Some(at);
        self.state.last_exit = Some(ExitRecord {
            status,
            oom_killed,
            at,
        });
        if self.stopping.is_some() {
            self.state.status = Status::Stopped;
            return;
        }
        match self.tracker.exited(status, self.now_ms()) {
            RestartDecision::RestartAfter { delay_ms } => {
                self.state.status = Status::Restarting;
                self.state.next_restart_at = Some(at + Duration::from_millis(delay_ms));
                self.restart_at = Some(Instant::now() + Duration::from_millis(delay_ms));
                self.save();
            }
            RestartDecision::GiveUp => {
                self.state.status = Status::Exited;
            }
        }
    }

    fn check_timers(&mut self) {
        let now = Instant::now();
        if let Some(at) = self.restart_at
            && at <= now
            && self.stopping.is_none()
        {
            self.restart_at = None;
            match self.start_run() {
                Ok(()) => self.state.restarts += 1,
                Err(err) => {
                    self.state.error = Some(chain(&err));
                    self.state.status = Status::Exited;
                }
            }
            self.save();
        }
        if let (Some(stopping), Some(run)) = (&mut self.stopping, &self.run)
            && !stopping.killed
            && stopping.deadline <= now
        {
            stopping.killed = true;
            if let Err(err) = sys::kill(run.pid, runtime::Signal::KILL.number()) {
                eprintln!("cairn-shim: {}", chain(&err));
            }
        }
    }

    /// Starts stopping: the stop signal now, SIGKILL at the deadline. With
    /// no process running (between restarts) the container is stopped at
    /// once.
    fn begin_stop(&mut self, timeout_s: Option<u64>, waiter: Option<UnixStream>) {
        if let Some(stopping) = &mut self.stopping {
            stopping.waiters.extend(waiter);
            return;
        }
        let timeout = Duration::from_secs(timeout_s.unwrap_or(self.spec.stop.timeout_s));
        self.stopping = Some(Stopping {
            deadline: Instant::now() + timeout,
            killed: false,
            waiters: waiter.into_iter().collect(),
        });
        self.restart_at = None;
        match &self.run {
            Some(run) => {
                if let Err(err) = sys::kill(run.pid, self.spec.stop.signal.number()) {
                    eprintln!("cairn-shim: {}", chain(&err));
                }
            }
            None => {
                self.state.status = Status::Stopped;
                self.state.next_restart_at = None;
            }
        }
    }

    fn accept(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((conn, _)) => self.handle(conn),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    eprintln!("cairn-shim: accept: {e}");
                    return;
                }
            }
        }
    }

    fn handle(&mut self, conn: UnixStream) {
        let request = read_request(&conn);
        let mut conn = conn;
        let request = match request {
            Ok(request) => request,
            Err(message) => {
                reply(
                    &mut conn,
                    &Response::Error(ErrorBody {
                        code: ErrorCode::BadRequest,
                        message,
                    }),
                );
                return;
            }
        };
        match request {
            Request::State => reply(&mut conn, &Response::State(self.state.clone())),
            Request::Stop { timeout_s } => self.begin_stop(timeout_s, Some(conn)),
            Request::Kill { signal } => {
                let response = match &self.run {
                    Some(run) => match sys::kill(run.pid, signal.number()) {
                        Ok(()) => Response::Done,
                        Err(err) => Response::Error(ErrorBody {
                            code: ErrorCode::Internal,
                            message: chain(&err),
                        }),
                    },
                    None => Response::Error(ErrorBody {
                        code: ErrorCode::NotRunning,
                        message: format!("the container is {:?}", self.state.status),
                    }),
                };
                reply(&mut conn, &response);
            }
            Request::Exec(exec) => self.start_exec(conn, exec),
        }
    }

    fn start_exec(&mut self, mut conn: UnixStream, exec: ExecRequest) {
        let refuse = |conn: &mut UnixStream, code, message: String| {
            reply(conn, &ExecEvent::Error(ErrorBody { code, message }));
        };
        if self.stopping.is_some() {
            return refuse(
                &mut conn,
                ErrorCode::Stopping,
                "the container is stopping".into(),
            );
        }
        if self.run.is_none() {
            return refuse(
                &mut conn,
                ErrorCode::NotRunning,
                format!("the container is {:?}", self.state.status),
            );
        }
        if exec.tty || exec.args.is_empty() {
            return refuse(
                &mut conn,
                ErrorCode::BadRequest,
                "exec needs args and does not support a tty".into(),
            );
        }
        match self.spawn_exec(&exec) {
            Ok((pid, pidfd, pipes)) => {
                let _ = conn.set_write_timeout(Some(Duration::from_secs(10)));
                self.execs.push(ExecSession {
                    conn: Some(conn),
                    pid,
                    pidfd,
                    pipes,
                    status: None,
                });
            }
            Err(err) => refuse(&mut conn, ErrorCode::ExecFailed, chain(&err)),
        }
    }

    #[expect(clippy::type_complexity, reason = "a private tuple used once")]
    fn spawn_exec(
        &self,
        exec: &ExecRequest,
    ) -> Result<(i32, OwnedFd, Vec<(OwnedFd, LogStream)>), ShimError> {
        let (out_r, out_w) = sys::pipe()?;
        let (err_r, err_w) = sys::pipe()?;
        let env = exec
            .env
            .iter()
            .filter_map(|e| e.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        let pid = ContainerBuilder::new(self.spec.name.to_string(), SyscallType::Linux)
            .with_root_path(&self.host.runtime_root)
            .map_err(ShimError::Create)?
            .with_stdout(out_w)
            .with_stderr(err_w)
            .as_tenant()
            .with_container_args(exec.args.clone())
            .with_env(env)
            .with_cwd(exec.cwd.as_ref().map(PathBuf::from))
            .with_detach(true)
            .build()
            .map_err(ShimError::Start)?;
        let pid = pid.as_raw();
        let pidfd = sys::pidfd(pid)?;
        Ok((
            pid,
            pidfd,
            vec![(out_r, LogStream::Stdout), (err_r, LogStream::Stderr)],
        ))
    }

    fn pump_execs(&mut self) {
        let mut buf = [0u8; EXEC_CHUNK];
        for session in &mut self.execs {
            if session.status.is_none() {
                match sys::try_reap(session.pid) {
                    Ok(status) => session.status = status,
                    Err(err) => {
                        eprintln!("cairn-shim: {}", chain(&err));
                        session.status = Some(ExitStatus::Signal(runtime::Signal::KILL.number()));
                    }
                }
            }
            let exited = session.status.is_some();
            let conn = &mut session.conn;
            session.pipes.retain(|(fd, stream)| {
                loop {
                    match nix::unistd::read(fd, &mut buf) {
                        Ok(0) => return false,
                        Ok(n) => {
                            let event = match stream {
                                LogStream::Stdout => ExecEvent::Stdout(buf[..n].to_vec()),
                                LogStream::Stderr => ExecEvent::Stderr(buf[..n].to_vec()),
                            };
                            if let Some(c) = conn
                                && protocol::write_line(c, &event).is_err()
                            {
                                *conn = None;
                            }
                        }
                        // After the exit, a pipe that is empty but still open
                        // belongs to a background child the command left; its
                        // output is not waited for.
                        Err(nix::Error::EAGAIN) => return !exited,
                        Err(nix::Error::EINTR) => {}
                        Err(_) => return false,
                    }
                }
            });
            if let (Some(status), true) = (session.status, session.pipes.is_empty())
                && let Some(c) = &mut session.conn
            {
                let _ = protocol::write_line(c, &ExecEvent::Exit(status));
                session.conn = None;
            }
        }
        self.execs
            .retain(|s| !(s.status.is_some() && s.pipes.is_empty()));
    }

    /// The container is finished for good: clean up, write the final
    /// state, answer anyone waiting on `stop`, go.
    fn finish(mut self) {
        if let Some(run) = self.run.take() {
            // Only reached with a live process when stopping could not
            // wait (the loop ends only on a final status), so make sure.
            let _ = sys::kill(run.pid, runtime::Signal::KILL.number());
            let _ = sys::try_reap(run.pid);
        }
        delete_runtime_container(&self.host, &self.spec);
        cleanup_mounts(&self.dir);
        let _ = std::fs::remove_dir(self.cgroup_dir());
        sys::reap_orphans();
        self.state.pid = None;
        self.state.next_restart_at = None;
        if self.state.finished_at.is_none() {
            self.state.finished_at = Some(now());
        }
        self.save();
        let _ = std::fs::remove_file(self.dir.socket());
        if let Some(stopping) = self.stopping.take() {
            for mut waiter in stopping.waiters {
                reply(&mut waiter, &Response::State(self.state.clone()));
            }
        }
    }
}

fn log_chunks(
    log: &mut LogWriter,
    time: OffsetDateTime,
    stream: LogStream,
    chunks: Vec<runtime::logs::Chunk>,
) {
    if chunks.is_empty() {
        return;
    }
    if let Err(err) = log.write_chunks(time, stream, chunks) {
        eprintln!("cairn-shim: {}", chain(&err));
    }
}

fn read_request(conn: &UnixStream) -> Result<Request, String> {
    conn.set_nonblocking(false).map_err(|e| e.to_string())?;
    conn.set_read_timeout(Some(REQUEST_TIMEOUT))
        .map_err(|e| e.to_string())?;
    let mut reader = BufReader::new(conn.take(protocol::MAX_LINE as u64 + 1));
    let line = protocol::read_line(&mut reader)
        .map_err(|e| format!("reading the request: {e}"))?
        .ok_or_else(|| "no request".to_owned())?;
    serde_json::from_slice(&line).map_err(|e| format!("invalid request: {e}"))
}

fn reply(conn: &mut UnixStream, value: &impl serde::Serialize) {
    let _ = conn.set_write_timeout(Some(Duration::from_secs(5)));
    if let Err(err) = protocol::write_line(conn, value) {
        eprintln!("cairn-shim: answering a client: {err}");
    }
}

/// Deletes libcontainer's record of the container (and with it the
/// cgroup), if there is one.
fn delete_runtime_container(host: &HostPaths, spec: &ContainerSpec) {
    let root = host.runtime_root.join(spec.name.as_str());
    if !root.exists() {
        return;
    }
    match Container::load(root.clone()) {
        Ok(mut container) => {
            if let Err(err) = container.delete(true) {
                eprintln!("cairn-shim: {}", chain(&err));
            }
        }
        Err(err) => eprintln!("cairn-shim: {}", chain(&err)),
    }
    // A record libcontainer could not load is still in the way of the next
    // start.
    let _ = std::fs::remove_dir_all(&root);
}

fn cleanup_mounts(dir: &ContainerDir) {
    if let Err(err) = sys::unmount(&dir.rootfs()) {
        eprintln!("cairn-shim: {}", chain(&err));
    }
}
