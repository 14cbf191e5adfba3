//! A site registry for the scenarios and the pull benchmark: Debian's
//! `docker-registry` with TLS from a CA made here (its certificate names
//! the address it listens on), optional htpasswd basic auth, and an
//! access log to count what it served. Images go in with `skopeo copy`.
//!
//! It runs on the host's loopback or, for guests to reach it, inside a
//! test [`Network`]'s namespace on the bridge address. Dropping it kills
//! the registry.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::network::Network;
use crate::tools::{Tool, ToolError};

pub const DOCKER_REGISTRY: Tool = Tool {
    program: "docker-registry",
    package: "docker-registry",
};
pub const SKOPEO: Tool = Tool {
    program: "skopeo",
    package: "skopeo",
};
pub const HTPASSWD: Tool = Tool {
    program: "htpasswd",
    package: "apache2-utils",
};

/// How long the registry may take to listen.
const START_LIMIT: Duration = Duration::from_secs(20);

/// A running registry.
#[derive(Debug)]
pub struct SiteRegistry<'n> {
    child: Child,
    addr: SocketAddr,
    ca_pem: String,
    cert_dir: PathBuf,
    access_log: PathBuf,
    error_log: PathBuf,
    credentials: Option<(String, String)>,
    network: Option<&'n Network>,
}

/// Why the registry could not be set up or used.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error(transparent)]
    Tool(#[from] ToolError),
    #[error("cannot write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot make the registry's certificates")]
    Certificate(#[source] rcgen::Error),
    #[error("cannot run {program}")]
    Spawn {
        program: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("{program} failed ({status}): {stderr}")]
    Failed {
        program: &'static str,
        status: std::process::ExitStatus,
        stderr: String,
    },
    #[error("docker-registry did not listen on {addr} within {START_LIMIT:?}; its log:\n{log}")]
    NotListening { addr: SocketAddr, log: String },
    #[error("cannot enter the test network")]
    Netns(#[source] crate::network::NetnsError),
}

fn write(path: &Path, contents: impl AsRef<[u8]>) -> Result<(), RegistryError> {
    std::fs::write(path, contents).map_err(|source| RegistryError::Write {
        path: path.to_owned(),
        source,
    })
}

/// `program`, inside `network`'s namespace when given.
fn command(program: &Path, network: Option<&Network>) -> Command {
    match network {
        Some(network) => network.command(program),
        None => Command::new(program),
    }
}

impl<'n> SiteRegistry<'n> {
    /// Starts a registry in `dir` listening on `addr`, inside `network`'s
    /// namespace when given, asking for `credentials` when given.
    ///
    /// # Errors
    /// [`RegistryError`] when a tool is missing or the registry does not
    /// come up.
    pub fn start(
        dir: &Path,
        addr: SocketAddr,
        network: Option<&'n Network>,
        credentials: Option<(&str, &str)>,
    ) -> Result<Self, RegistryError> {
        let program = DOCKER_REGISTRY.locate()?;
        std::fs::create_dir_all(dir.join("storage")).map_err(|source| RegistryError::Write {
            path: dir.to_owned(),
            source,
        })?;
        let (ca_pem, cert_pem, key_pem) = certificates(addr).map_err(RegistryError::Certificate)?;
        let cert_dir = dir.join("certs.d");
        std::fs::create_dir_all(&cert_dir).map_err(|source| RegistryError::Write {
            path: cert_dir.clone(),
            source,
        })?;
        write(&cert_dir.join("ca.crt"), &ca_pem)?;
        write(&dir.join("server.pem"), cert_pem)?;
        write(&dir.join("server.key"), key_pem)?;
        let auth = match credentials {
            Some((user, password)) => {
                let out = Command::new(HTPASSWD.locate()?)
                    .args(["-Bbn", user, password])
                    .output()
                    .map_err(|source| RegistryError::Spawn {
                        program: "htpasswd",
                        source,
                    })?;
                if !out.status.success() {
                    return Err(RegistryError::Failed {
                        program: "htpasswd",
                        status: out.status,
                        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
                    });
                }
                write(&dir.join("htpasswd"), &out.stdout)?;
                format!(
                    "auth:\n  htpasswd:\n    realm: cairn-site\n    path: {}\n",
                    dir.join("htpasswd").display()
                )
            }
            None => String::new(),
        };
        let config = dir.join("registry.yml");
        write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: warn\n\
                 storage:\n  filesystem:\n    rootdirectory: {storage}\n  maintenance:\n    uploadpurging:\n      enabled: false\n\
                 http:\n  addr: {addr}\n  tls:\n    certificate: {cert}\n    key: {key}\n{auth}",
                storage = dir.join("storage").display(),
                cert = dir.join("server.pem").display(),
                key = dir.join("server.key").display(),
            ),
        )?;
        let access_log = dir.join("access.log");
        let error_log = dir.join("registry.log");
        let open = |path: &Path| {
            std::fs::File::create(path).map_err(|source| RegistryError::Write {
                path: path.to_owned(),
                source,
            })
        };
        let child = command(&program, network)
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(open(&access_log)?)
            .stderr(open(&error_log)?)
            .spawn()
            .map_err(|source| RegistryError::Spawn {
                program: "docker-registry",
                source,
            })?;
        let registry = SiteRegistry {
            child,
            addr,
            ca_pem,
            cert_dir,
            access_log,
            error_log,
            credentials: credentials.map(|(u, p)| (u.to_owned(), p.to_owned())),
            network,
        };
        registry.wait_listening()?;
        Ok(registry)
    }

    fn wait_listening(&self) -> Result<(), RegistryError> {
        let addr = self.addr;
        let probe = move || {
            let deadline = Instant::now() + START_LIMIT;
            while std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err() {
                if Instant::now() > deadline {
                    return false;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            true
        };
        let listening = match self.network {
            Some(network) => network.run_in(probe).map_err(RegistryError::Netns)?,
            None => probe(),
        };
        if listening {
            Ok(())
        } else {
            Err(RegistryError::NotListening {
                addr,
                log: std::fs::read_to_string(&self.error_log).unwrap_or_default(),
            })
        }
    }

    /// `ip:port`, as references and machine configs name it.
    #[must_use]
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// The CA that signed the registry's certificate (PEM).
    #[must_use]
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// A directory holding the CA as `ca.crt`, for skopeo's
    /// `--src-cert-dir` / `--dest-cert-dir`.
    #[must_use]
    pub fn cert_dir(&self) -> &Path {
        &self.cert_dir
    }

    /// The CA as a PEM file.
    #[must_use]
    pub fn ca_file(&self) -> PathBuf {
        self.cert_dir.join("ca.crt")
    }

    /// Copies image `name` of the oci-archive `archive` to `repository`
    /// (`repo:tag`) on this registry with skopeo, digests preserved.
    ///
    /// # Errors
    /// [`RegistryError`] when skopeo fails.
    pub fn push(&self, archive: &Path, name: &str, repository: &str) -> Result<(), RegistryError> {
        let mut args = vec![
            "copy".to_owned(),
            "--quiet".to_owned(),
            "--preserve-digests".to_owned(),
            "--dest-cert-dir".to_owned(),
            self.cert_dir.display().to_string(),
        ];
        if let Some((user, password)) = &self.credentials {
            args.push("--dest-creds".to_owned());
            args.push(format!("{user}:{password}"));
        }
        args.push(format!("oci-archive:{}:{name}", archive.display()));
        args.push(format!("docker://{}/{repository}", self.host()));
        let out = command(&SKOPEO.locate()?, self.network)
            .args(&args)
            .output()
            .map_err(|source| RegistryError::Spawn {
                program: "skopeo",
                source,
            })?;
        if out.status.success() {
            Ok(())
        } else {
            Err(RegistryError::Failed {
                program: "skopeo",
                status: out.status,
                stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            })
        }
    }

    /// Blob downloads served so far, from the access log.
    #[must_use]
    pub fn blob_gets(&self) -> usize {
        std::fs::read_to_string(&self.access_log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("\"GET /v2/") && l.contains("/blobs/sha256:"))
            .count()
    }

    /// The access log so far, for failure messages.
    #[must_use]
    pub fn access_log(&self) -> String {
        std::fs::read_to_string(&self.access_log).unwrap_or_default()
    }
}

impl Drop for SiteRegistry<'_> {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A CA, and a server certificate for `addr`'s IP signed by it (PEMs).
fn certificates(addr: SocketAddr) -> Result<(String, String, String), rcgen::Error> {
    let ca_key = rcgen::KeyPair::generate()?;
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "cairn test site CA");
    let ca = ca_params.self_signed(&ca_key)?;
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let key = rcgen::KeyPair::generate()?;
    let cert =
        rcgen::CertificateParams::new(vec![addr.ip().to_string()])?.signed_by(&key, &issuer)?;
    Ok((ca.pem(), cert.pem(), key.serialize_pem()))
}
