//! The `cairn` client, run the way an operator runs it, from inside a test
//! network.
//!
//! The binary is the one the image build wrote next to the image
//! ([`Image::cli`]), so the client always matches the node's API. Every
//! run goes through `ip netns exec` into the [`Network`]'s namespace (the
//! only place the guests are reachable), with `--config` pointing at a file
//! in the test's log directory, and `HOME` and `XDG_CONFIG_HOME` pointing
//! there too: nothing a scenario does can read or touch the real
//! `~/.config/cairn`.
//!
//! Each run is appended to `<log dir>/cairn-cli.log` (arguments, exit
//! status, time taken, stdout, stderr), so a failed scenario shows what the
//! client said. A run that outlives its timeout is killed and reported as
//! an error with what it had printed so far.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::image::Image;
use crate::network::Network;

/// The client, bound to one network and one config file.
#[derive(Debug)]
pub struct Cli<'n> {
    net: &'n Network,
    binary: PathBuf,
    config: PathBuf,
    home: PathBuf,
    transcript: PathBuf,
}

/// What one run printed and how it ended.
#[derive(Debug, Clone)]
pub struct CliOutput {
    /// The arguments after `--config FILE`.
    pub args: Vec<String>,
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

/// Running the client failed (as opposed to the client reporting failure,
/// which is a [`CliOutput`] with a non-zero status).
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("the image directory has no client at {path} (an image built before `cairn` shipped?)")]
    Missing { path: PathBuf },
    #[error("preparing the client's home {path}")]
    Home {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("starting `cairn {args}`")]
    Spawn {
        args: String,
        #[source]
        source: std::io::Error,
    },
    #[error("waiting for `cairn {args}`")]
    Wait {
        args: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "`cairn {args}` was still running after {waited:?} and was killed\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}"
    )]
    TimedOut {
        args: String,
        waited: Duration,
        stdout: String,
        stderr: String,
    },
}

impl CliOutput {
    /// The exit code (`None` if a signal ended it).
    #[must_use]
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }

    /// Everything about the run, for assertion messages.
    #[must_use]
    pub fn describe(&self) -> String {
        format!(
            "`cairn {}` exited with {} after {:.1?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.args.join(" "),
            self.status,
            self.elapsed,
            self.stdout.trim_end(),
            self.stderr.trim_end()
        )
    }

    /// stdout as exactly one JSON value (what `-o json` promises).
    ///
    /// # Errors
    /// The parse error if stdout is not one JSON document.
    pub fn json(&self) -> Result<serde_json::Value, serde_json::Error> {
        serde_json::from_str(self.stdout.trim())
    }

    /// stdout as NDJSON: one JSON value per non-empty line.
    ///
    /// # Errors
    /// The first line that is not JSON.
    pub fn ndjson(&self) -> Result<Vec<serde_json::Value>, serde_json::Error> {
        self.stdout
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(serde_json::from_str)
            .collect()
    }
}

impl<'n> Cli<'n> {
    /// The image's client, with its config at `<log dir>/cairn/config.toml`.
    ///
    /// # Errors
    /// [`CliError::Missing`] if the image has no `cairn`, [`CliError::Home`]
    /// if its home directory cannot be made.
    pub fn new(net: &'n Network, image: &Image) -> Result<Self, CliError> {
        let binary = image.cli();
        if !binary.is_file() {
            return Err(CliError::Missing { path: binary });
        }
        let home = net.log_dir().join("cli-home");
        std::fs::create_dir_all(&home).map_err(|source| CliError::Home {
            path: home.clone(),
            source,
        })?;
        Ok(Self {
            net,
            binary,
            config: net.log_dir().join("cairn").join("config.toml"),
            home,
            transcript: net.log_dir().join("cairn-cli.log"),
        })
    }

    /// The config file every run uses (`--config`).
    #[must_use]
    pub fn config_path(&self) -> &Path {
        &self.config
    }

    /// Where every run is recorded.
    #[must_use]
    pub fn transcript_path(&self) -> &Path {
        &self.transcript
    }

    /// Runs `cairn --config FILE args...` in the namespace, waiting at most
    /// `timeout`. A non-zero exit is a normal result, not an error.
    ///
    /// # Errors
    /// [`CliError`] if the client cannot be started or waited for, or
    /// outlives `timeout` (it is then killed).
    pub fn run(&self, args: &[&str], timeout: Duration) -> Result<CliOutput, CliError> {
        let printable = args.join(" ");
        let started = Instant::now();
        let mut child = self
            .net
            .command(&self.binary)
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .env("HOME", &self.home)
            .env("XDG_CONFIG_HOME", self.home.join(".config"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| CliError::Spawn {
                args: printable.clone(),
                source,
            })?;
        // Drained on their own threads so a chatty client never blocks on
        // a full pipe while we wait for it.
        let stdout = drain(child.stdout.take());
        let stderr = drain(child.stderr.take());
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break Some(status),
                Ok(None) if started.elapsed() >= timeout => {
                    let _ = child.kill();
                    let _ = child.wait();
                    break None;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(50)),
                Err(source) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(CliError::Wait {
                        args: printable,
                        source,
                    });
                }
            }
        };
        let stdout = stdout.join().unwrap_or_default();
        let stderr = stderr.join().unwrap_or_default();
        let elapsed = started.elapsed();
        self.record(&printable, status, elapsed, &stdout, &stderr);
        match status {
            Some(status) => Ok(CliOutput {
                args: args.iter().map(|a| (*a).to_owned()).collect(),
                status,
                stdout,
                stderr,
                elapsed,
            }),
            None => Err(CliError::TimedOut {
                args: printable,
                waited: elapsed,
                stdout,
                stderr,
            }),
        }
    }

    /// Appends one run to the transcript; a transcript that cannot be
    /// written costs the test nothing but that log.
    fn record(
        &self,
        args: &str,
        status: Option<ExitStatus>,
        elapsed: Duration,
        stdout: &str,
        stderr: &str,
    ) {
        let status = status.map_or_else(|| "killed after timeout".to_owned(), |s| s.to_string());
        let entry = format!(
            "$ cairn --config {} {args}\n# {status} after {elapsed:.1?}\n--- stdout ---\n{}\n--- stderr ---\n{}\n\n",
            self.config.display(),
            stdout.trim_end(),
            stderr.trim_end()
        );
        if let Ok(mut file) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.transcript)
        {
            let _ = file.write_all(entry.as_bytes());
        }
    }
}

fn drain<R: Read + Send + 'static>(pipe: Option<R>) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut bytes);
        }
        String::from_utf8_lossy(&bytes).into_owned()
    })
}
