//! `cairn ctr ...`: containers on one node.
//!
//! Every command is one call to the node the context points at; the
//! request is built from the flags here, so what `ctr run` sends can be
//! tested without a node ([`create_request`]).

use std::io::Write;
use std::time::Duration;

use api::types::{
    ContainerCreateRequest, ContainerInfo, ContainerList, ContainerLogLine, ContainerLogQuery,
    ContainerRemoveQuery, ContainerRemoved, ContainerStopRequest, ExecFrame, ExecRequest,
    HealthCheck, HealthProbe, Limits, LogStream, NetworkMode,
};
use base64::Engine as _;

use super::{Globals, connect, each_line, print, request_error, write_line, write_stdout};
use crate::args::{CtrCommand, Format, NetworkArg, RunArgs};
use crate::client::Call;
use crate::failure::CommandError;
use crate::output;

/// How long `ctr stop`, `restart` and `rm --force` may take: the stop
/// timeout the container may ask for (up to 10 minutes) and some.
const STOP_CALL_TIMEOUT: Duration = Duration::from_secs(11 * 60);

/// Runs a `ctr` command; the exit code is 0 except for `exec`, which
/// passes on the command's.
pub(super) async fn ctr(globals: &Globals, command: CtrCommand) -> Result<u8, CommandError> {
    let (mut client, trust) = connect(globals)?;
    let fail = request_error(&trust);
    let format = globals.format;
    match command {
        CtrCommand::Run(args) => {
            let request = create_request(*args)?;
            let info: ContainerInfo = client
                .call("container_create", Some(&request))
                .await
                .map_err(&fail)?;
            print(format, &info, output::container_started)?;
        }
        CtrCommand::List => {
            let list: ContainerList = client
                .call("container_list", None::<&()>)
                .await
                .map_err(&fail)?;
            match format {
                // The bare array scripts iterate over.
                Format::Json => write_stdout(output::json(&list.containers).as_bytes())?,
                Format::Table => write_stdout(output::container_list(&list).as_bytes())?,
            }
        }
        CtrCommand::Inspect { name } => {
            let call = Call::new("container_inspect").path("name", name);
            let info: ContainerInfo = client.call(call, None::<&()>).await.map_err(&fail)?;
            print(format, &info, output::container_info)?;
        }
        CtrCommand::Logs { name, follow, tail } => {
            let call = Call::new("container_logs")
                .path("name", name)
                .query(&ContainerLogQuery { tail, follow })
                .map_err(&fail)?;
            let timeout = (!follow).then_some(crate::client::REQUEST_TIMEOUT);
            let response = client.stream(call, timeout).await.map_err(&fail)?;
            each_line(&client, response, &fail, |line| {
                let entry: ContainerLogLine =
                    serde_json::from_slice(line).map_err(|source| CommandError::BadLine {
                        what: "container log line",
                        source,
                    })?;
                match format {
                    Format::Json => write_line(line),
                    Format::Table => write_log_line(&entry),
                }
            })
            .await?;
        }
        CtrCommand::Stop { name, timeout } => {
            client.set_request_timeout(STOP_CALL_TIMEOUT);
            let call = Call::new("container_stop").path("name", name);
            let body = ContainerStopRequest { timeout_s: timeout };
            let info: ContainerInfo = client.call(call, Some(&body)).await.map_err(&fail)?;
            print(format, &info, output::container_state)?;
        }
        CtrCommand::Start { name } => {
            let call = Call::new("container_start").path("name", name);
            let info: ContainerInfo = client.call(call, None::<&()>).await.map_err(&fail)?;
            print(format, &info, output::container_state)?;
        }
        CtrCommand::Restart { name, timeout } => {
            client.set_request_timeout(STOP_CALL_TIMEOUT);
            let call = Call::new("container_restart").path("name", name);
            let body = ContainerStopRequest { timeout_s: timeout };
            let info: ContainerInfo = client.call(call, Some(&body)).await.map_err(&fail)?;
            print(format, &info, output::container_state)?;
        }
        CtrCommand::Rm { name, force } => {
            client.set_request_timeout(STOP_CALL_TIMEOUT);
            let call = Call::new("container_remove")
                .path("name", name)
                .query(&ContainerRemoveQuery { force })
                .map_err(&fail)?;
            let removed: ContainerRemoved = client.call(call, None::<&()>).await.map_err(&fail)?;
            print(format, &removed, output::container_removed)?;
        }
        CtrCommand::Exec {
            name,
            env,
            workdir,
            command,
        } => {
            let call = Call::new("container_exec").path("name", name.clone());
            let body = ExecRequest {
                command,
                env,
                workdir,
            };
            let response = client
                .stream_with(call, Some(&body), None)
                .await
                .map_err(&fail)?;
            let mut exit = None;
            each_line(&client, response, &fail, |line| {
                let frame: ExecFrame =
                    serde_json::from_slice(line).map_err(|source| CommandError::BadLine {
                        what: "exec frame",
                        source,
                    })?;
                if format == Format::Json {
                    write_line(line)?;
                }
                match frame {
                    ExecFrame::Stdout(data) if format == Format::Table => {
                        write_stdout(&decode(&data)?)
                    }
                    ExecFrame::Stderr(data) if format == Format::Table => {
                        write_stderr(&decode(&data)?)
                    }
                    ExecFrame::Stdout(_) | ExecFrame::Stderr(_) => Ok(()),
                    ExecFrame::Exit { code, signal } => {
                        exit = Some(exit_code(code, signal));
                        Ok(())
                    }
                    ExecFrame::Error { message } => Err(CommandError::Exec {
                        container: name.clone(),
                        message,
                    }),
                }
            })
            .await?;
            return exit.ok_or(CommandError::Incomplete("the exec"));
        }
    }
    Ok(0)
}

/// The request `ctr run` sends for these flags.
fn create_request(args: RunArgs) -> Result<ContainerCreateRequest, CommandError> {
    let probe = if let Some(cmd) = args.health_cmd {
        Some(HealthProbe::Exec {
            command: words(&cmd),
        })
    } else if let Some(target) = args.health_http {
        let (port, path) = match target.split_once('/') {
            Some((port, path)) => (port, format!("/{path}")),
            None => (target.as_str(), "/".to_owned()),
        };
        let port = port.parse().map_err(|_| {
            CommandError::Usage(format!(
                "invalid --health-http {target:?}: expected PORT or PORT/PATH"
            ))
        })?;
        Some(HealthProbe::Http { port, path })
    } else {
        args.health_tcp.map(|port| HealthProbe::Tcp { port })
    };
    let millis = |span: Option<crate::duration::Span>| span.map(|s| s.as_secs() * 1_000);
    Ok(ContainerCreateRequest {
        name: args.name,
        image: args.image,
        command: args.command,
        entrypoint: args.entrypoint.as_deref().map(words),
        env: args.env,
        workdir: args.workdir,
        user: args.user,
        volumes: args.volumes,
        read_only: args.read_only,
        network: match args.network {
            NetworkArg::Host => NetworkMode::Host,
            NetworkArg::Private => NetworkMode::Private,
        },
        limits: Limits {
            cpu_millis: args.cpus.map(|c| c.0),
            memory_bytes: args.memory.map(|m| m.0),
            pids: args.pids,
        },
        cap_add: args.cap_add,
        cap_drop: args.cap_drop,
        restart: args.restart,
        health: probe.map(|probe| HealthCheck {
            probe,
            interval_ms: millis(args.health_interval),
            timeout_ms: millis(args.health_timeout),
            retries: args.health_retries,
            start_period_ms: millis(args.health_start_period),
        }),
        hostname: args.hostname,
        stop_timeout_s: args.stop_timeout,
        log_max_bytes: args.log_max_size.map(|b| b.0),
        log_max_files: args.log_max_files,
    })
}

/// Splits a command typed as one flag value on whitespace: images often
/// have no shell to do it.
fn words(text: &str) -> Vec<String> {
    text.split_whitespace().map(str::to_owned).collect()
}

/// The shell's convention: the code, or 128 + the signal.
fn exit_code(code: Option<i32>, signal: Option<i32>) -> u8 {
    match (code, signal) {
        (Some(code), _) => u8::try_from(code & 0xff).unwrap_or(1),
        (None, Some(signal)) => u8::try_from((128 + signal) & 0xff).unwrap_or(1),
        (None, None) => 1,
    }
}

fn decode(data: &str) -> Result<Vec<u8>, CommandError> {
    base64::engine::general_purpose::STANDARD
        .decode(data)
        .map_err(|e| {
            CommandError::Usage(format!("the node sent exec output that is not base64: {e}"))
        })
}

fn write_stderr(bytes: &[u8]) -> Result<(), CommandError> {
    let mut err = std::io::stderr().lock();
    err.write_all(bytes)
        .and_then(|()| err.flush())
        .map_err(CommandError::Stdout)
}

/// A log line as the container wrote it, on the stream it wrote it to.
fn write_log_line(entry: &ContainerLogLine) -> Result<(), CommandError> {
    let mut line = entry.line.clone().into_bytes();
    line.push(b'\n');
    match entry.stream {
        LogStream::Stdout => write_stdout(&line),
        LogStream::Stderr => write_stderr(&line),
    }
}

#[cfg(test)]
mod tests {
    use api::types::{RestartMode, RestartPolicy, VolumeMount};
    use clap::Parser;

    use super::*;
    use crate::args::{Cli, Command};

    fn run_request(argv: &[&str]) -> ContainerCreateRequest {
        let mut full = vec!["cairn", "ctr", "run"];
        full.extend_from_slice(argv);
        let cli = Cli::try_parse_from(full).expect("parses");
        let Command::Ctr(CtrCommand::Run(args)) = cli.command else {
            panic!("not ctr run");
        };
        create_request(*args).expect("valid")
    }

    #[test]
    fn run_flags_become_the_create_request() {
        let request = run_request(&[
            "redis",
            "redis:7",
            "--restart",
            "on-failure:5",
            "--env",
            "A=1",
            "-v",
            "data:/data",
            "-v",
            "conf:/etc/redis:ro",
            "--memory",
            "64M",
            "--cpus",
            "0.5",
            "--pids",
            "100",
            "--read-only",
            "--network",
            "private",
            "--health-tcp",
            "6379",
            "--health-interval",
            "2s",
            "--health-retries",
            "2",
            "--",
            "redis-server",
            "--port",
            "6379",
        ]);
        assert_eq!(request.name, "redis");
        assert_eq!(request.image, "redis:7");
        assert_eq!(request.command, ["redis-server", "--port", "6379"]);
        assert_eq!(
            request.restart,
            RestartPolicy {
                policy: RestartMode::OnFailure,
                max_retries: Some(5)
            }
        );
        assert_eq!(request.env, ["A=1"]);
        assert_eq!(
            request.volumes,
            [
                VolumeMount {
                    volume: "data".into(),
                    path: "/data".into(),
                    read_only: false
                },
                VolumeMount {
                    volume: "conf".into(),
                    path: "/etc/redis".into(),
                    read_only: true
                }
            ]
        );
        assert_eq!(request.limits.memory_bytes, Some(64 << 20));
        assert_eq!(request.limits.cpu_millis, Some(500));
        assert_eq!(request.limits.pids, Some(100));
        assert!(request.read_only);
        assert_eq!(request.network, NetworkMode::Private);
        let health = request.health.expect("health");
        assert_eq!(health.probe, HealthProbe::Tcp { port: 6379 });
        assert_eq!(health.interval_ms, Some(2_000));
        assert_eq!(health.retries, Some(2));
        assert_eq!(health.timeout_ms, None);
    }

    #[test]
    fn health_probes_parse_from_their_flags() {
        let http = run_request(&["web", "img", "--health-http", "8080/healthz"]);
        assert_eq!(
            http.health.expect("health").probe,
            HealthProbe::Http {
                port: 8080,
                path: "/healthz".into()
            }
        );
        let exec = run_request(&["db", "img", "--health-cmd", "redis-cli ping"]);
        assert_eq!(
            exec.health.expect("health").probe,
            HealthProbe::Exec {
                command: vec!["redis-cli".into(), "ping".into()]
            }
        );
        let none = run_request(&["plain", "img"]);
        assert_eq!(none.health, None);
        assert_eq!(none.restart.policy, RestartMode::Never);
        assert_eq!(none.entrypoint, None);
        let cleared = run_request(&["plain", "img", "--entrypoint", ""]);
        assert_eq!(cleared.entrypoint, Some(vec![]));
    }

    #[test]
    fn contradictory_or_malformed_run_flags_are_usage_errors() {
        for argv in [
            &["x", "img", "--restart", "sometimes"][..],
            &["x", "img", "--restart", "always:3"],
            &["x", "img", "--restart", "on-failure:many"],
            &["x", "img", "-v", "data"],
            &["x", "img", "-v", "data:/d:rx"],
            &["x", "img", "--memory", "lots"],
            &["x", "img", "--cpus", "0"],
            &["x", "img", "--health-tcp", "1", "--health-cmd", "true"],
            &["x", "img", "--health-interval", "5s"],
            &["x", "img", "--network", "bridge"],
        ] {
            let mut full = vec!["cairn", "ctr", "run"];
            full.extend_from_slice(argv);
            let err = Cli::try_parse_from(&full).expect_err("refused");
            assert_eq!(err.exit_code(), 2, "{argv:?}");
        }
        let cli =
            Cli::try_parse_from(["cairn", "ctr", "run", "x", "img", "--health-http", "web/x"])
                .expect("clap accepts the text");
        let Command::Ctr(CtrCommand::Run(args)) = cli.command else {
            panic!("not ctr run");
        };
        assert!(create_request(*args).is_err());
    }

    #[test]
    fn exec_exit_codes_follow_the_shell_convention() {
        assert_eq!(exit_code(Some(0), None), 0);
        assert_eq!(exit_code(Some(3), None), 3);
        assert_eq!(exit_code(None, Some(9)), 137);
        assert_eq!(exit_code(None, None), 1);
    }
}
