//! Where the machine config comes from.
//!
//! The agent takes the first of these that has a config:
//! 1. the kernel command line `cairn.config=<url>` (`http://...`,
//!    `file:///path` or `/path`);
//! 2. the ESP file `/efi/cairn/config.toml` (cairn-init mounts the ESP);
//! 3. QEMU fw_cfg `opt/cairn/config`;
//! 4. the embedded default.
//!
//! The source that has a config wins even if that config turns out to be
//! bad: the node then runs on the embedded default and reports the error,
//! rather than silently falling through to a config the operator did not
//! mean. All paths live in [`ConfigPaths`] so tests point them at a temp
//! dir; [`discover`] does the blocking reads, [`fetch`] the HTTP ones.

use std::fmt;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{ConfigParseError, MAX_CONFIG_BYTES};

/// The kernel command line parameter that points at a config.
pub const CMDLINE_PARAM: &str = "cairn.config";

/// Where a config applied through the API is kept (on STATE).
pub const APPLIED_CONFIG_PATH: &str = "/var/lib/cairn/config.toml";

/// A place a config was (or was to be) read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigOrigin {
    /// The config last applied through the API, kept on STATE.
    Applied(PathBuf),
    /// The kernel command line itself (when `cairn.config=` is unusable).
    Cmdline,
    /// `cairn.config=http://...` on the kernel command line.
    CmdlineUrl(HttpUrl),
    /// `cairn.config=/path` (or `file:///path`) on the kernel command line.
    CmdlineFile(PathBuf),
    /// The ESP file.
    Esp(PathBuf),
    /// The QEMU fw_cfg blob.
    FwCfg(PathBuf),
    /// The config compiled into cairnd.
    Default,
}

impl ConfigOrigin {
    /// A short, stable name for metrics labels and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Applied(_) => "api",
            Self::Cmdline | Self::CmdlineUrl(_) | Self::CmdlineFile(_) => "cmdline",
            Self::Esp(_) => "esp",
            Self::FwCfg(_) => "fw_cfg",
            Self::Default => "default",
        }
    }
}

impl fmt::Display for ConfigOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Applied(path) => write!(f, "{} (applied through the API)", path.display()),
            Self::Cmdline => write!(f, "kernel command line"),
            Self::CmdlineUrl(url) => write!(f, "{url} (cmdline {CMDLINE_PARAM})"),
            Self::CmdlineFile(path) => write!(f, "{} (cmdline {CMDLINE_PARAM})", path.display()),
            Self::Esp(path) => write!(f, "{} (esp)", path.display()),
            // The sysfs path is an implementation detail; operators know the
            // fw_cfg name they passed to `-fw_cfg name=...`.
            Self::FwCfg(_) => write!(f, "opt/cairn/config (fw_cfg)"),
            Self::Default => write!(f, "embedded default"),
        }
    }
}

/// An `http://` URL, checked once when read from the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpUrl(Box<reqwest::Url>);

impl HttpUrl {
    /// Parses `text`; only plain `http` with a host is accepted, because
    /// the agent carries no CA roots for the config fetch yet.
    pub fn parse(text: &str) -> Option<Self> {
        let url = reqwest::Url::parse(text).ok()?;
        (url.scheme() == "http" && url.host_str().is_some_and(|h| !h.is_empty()))
            .then_some(Self(Box::new(url)))
    }

    /// The URL.
    pub fn as_url(&self) -> &reqwest::Url {
        &self.0
    }
}

impl fmt::Display for HttpUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.as_str())
    }
}

/// Every path the config sources are read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigPaths {
    /// The config applied through the API, `/var/lib/cairn/config.toml`.
    pub applied: PathBuf,
    /// The kernel command line, `/proc/cmdline`.
    pub cmdline: PathBuf,
    /// The ESP config, `/efi/cairn/config.toml`.
    pub esp: PathBuf,
    /// The fw_cfg blob, `/sys/firmware/qemu_fw_cfg/by_name/opt/cairn/config/raw`.
    pub fw_cfg: PathBuf,
}

impl Default for ConfigPaths {
    fn default() -> Self {
        Self {
            applied: PathBuf::from(APPLIED_CONFIG_PATH),
            cmdline: PathBuf::from("/proc/cmdline"),
            esp: PathBuf::from("/efi/cairn/config.toml"),
            fw_cfg: PathBuf::from("/sys/firmware/qemu_fw_cfg/by_name/opt/cairn/config/raw"),
        }
    }
}

/// What [`discover`] found.
#[derive(Debug)]
pub enum Discovered {
    /// A document was read and now needs parsing.
    Document {
        /// Where it was read.
        origin: ConfigOrigin,
        /// Its bytes (at most [`MAX_CONFIG_BYTES`] + 1, so oversize shows).
        bytes: Vec<u8>,
    },
    /// The command line names an HTTP URL; fetch it once the network is up.
    Fetch(HttpUrl),
    /// No source has a config: run on the embedded default.
    Nothing,
    /// The winning source could not be read.
    Failed(ConfigLoadError),
}

/// Why the config could not be loaded (before or including parsing).
#[derive(Debug, thiserror::Error)]
pub enum ConfigLoadError {
    /// The kernel command line could not be read.
    #[error("cannot read the kernel command line {}", path.display())]
    Cmdline {
        /// Where it was read.
        path: PathBuf,
        /// The I/O failure.
        #[source]
        source: io::Error,
    },
    /// `cairn.config=` holds something that is neither a path nor http.
    #[error(
        "{CMDLINE_PARAM}={value:?} (cmdline): unsupported; use http://host/path, file:///path or /path"
    )]
    UnsupportedLocation {
        /// The parameter value.
        value: String,
    },
    /// The winning source exists but reading it failed.
    #[error("{origin}: cannot read the config")]
    Read {
        /// The source.
        origin: ConfigOrigin,
        /// The I/O failure.
        #[source]
        source: io::Error,
    },
    /// Every fetch attempt failed.
    #[error("{origin}: fetch failed after {attempts} attempts")]
    Fetch {
        /// The URL's origin.
        origin: ConfigOrigin,
        /// How many attempts were made.
        attempts: u32,
        /// The last attempt's failure.
        #[source]
        source: FetchError,
    },
    /// The document was read but is not a valid config.
    #[error(transparent)]
    Parse(#[from] ConfigParseError),
}

impl ConfigLoadError {
    /// The source this error is about.
    pub fn origin(&self) -> ConfigOrigin {
        match self {
            Self::Cmdline { .. } | Self::UnsupportedLocation { .. } => ConfigOrigin::Cmdline,
            Self::Read { origin, .. } | Self::Fetch { origin, .. } => origin.clone(),
            Self::Parse(e) => e.origin().clone(),
        }
    }
}

/// One failed HTTP fetch.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// Connect, send or receive failed (or timed out).
    #[error("request failed")]
    Request(#[source] reqwest::Error),
    /// The server answered with a non-success status.
    #[error("server answered {0}")]
    Status(reqwest::StatusCode),
    /// The body is larger than [`MAX_CONFIG_BYTES`].
    #[error("body is larger than {MAX_CONFIG_BYTES} bytes")]
    TooLarge,
    /// The HTTP client's TLS setup failed.
    #[error("cannot set up the HTTP client's TLS")]
    Tls(#[source] rustls::Error),
}

/// Finds the value of `cairn.config` on a kernel command line.
pub fn cmdline_config_value(cmdline: &str) -> Option<String> {
    cmdline_param(cmdline, CMDLINE_PARAM)
}

/// Finds the value of parameter `name` (`name=value`) on a kernel command
/// line.
///
/// Follows the kernel's own tokenizer: whitespace separates parameters and
/// double quotes may wrap a value that contains spaces. When the parameter
/// repeats, the last one wins, as for most kernel parameters.
pub fn cmdline_param(cmdline: &str, name: &str) -> Option<String> {
    let mut found = None;
    let mut chars = cmdline.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.peek().is_none() {
            return found;
        }
        let mut token = String::new();
        let mut quoted = false;
        while let Some(c) = chars.next_if(|c| quoted || !c.is_whitespace()) {
            if c == '"' {
                quoted = !quoted;
            } else {
                token.push(c);
            }
        }
        // `--` ends the kernel's parameters; the rest belongs to init.
        if token == "--" {
            return found;
        }
        if let Some(value) = token.strip_prefix(name).and_then(|v| v.strip_prefix('=')) {
            found = Some(value.to_owned());
        }
    }
}

/// Where a `cairn.config=` value points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CmdlineLocation {
    /// Fetch over HTTP after DHCP.
    Http(HttpUrl),
    /// Read a local file.
    File(PathBuf),
}

/// Classifies a `cairn.config=` value.
pub fn classify_location(value: &str) -> Result<CmdlineLocation, ConfigLoadError> {
    let unsupported = || ConfigLoadError::UnsupportedLocation {
        value: value.to_owned(),
    };
    if value.starts_with("http://") {
        return HttpUrl::parse(value)
            .map(CmdlineLocation::Http)
            .ok_or_else(unsupported);
    }
    let path = value.strip_prefix("file://").unwrap_or(value);
    if path.starts_with('/') {
        return Ok(CmdlineLocation::File(PathBuf::from(path)));
    }
    Err(unsupported())
}

/// Reads at most `MAX_CONFIG_BYTES + 1` bytes; `Ok(None)` if absent.
fn read_capped(path: &Path) -> io::Result<Option<Vec<u8>>> {
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut bytes = Vec::new();
    let cap = u64::try_from(MAX_CONFIG_BYTES + 1).unwrap_or(u64::MAX);
    file.take(cap).read_to_end(&mut bytes)?;
    Ok(Some(bytes))
}

/// Looks through the sources in order and reads the first that has a
/// config. Blocking: run it on a blocking thread.
pub fn discover(paths: &ConfigPaths) -> Discovered {
    // What an operator applied through the API is the newest intent and
    // outranks every install-time source.
    let applied = ConfigOrigin::Applied(paths.applied.clone());
    match read_capped(&paths.applied) {
        Ok(Some(bytes)) => {
            return Discovered::Document {
                origin: applied,
                bytes,
            };
        }
        Ok(None) => {}
        Err(source) => {
            return Discovered::Failed(ConfigLoadError::Read {
                origin: applied,
                source,
            });
        }
    }
    let cmdline = match std::fs::read_to_string(&paths.cmdline) {
        Ok(text) => text,
        // Without /proc/cmdline (tests, odd containers) there is simply no
        // command-line config; any other failure is worth reporting.
        Err(e) if e.kind() == io::ErrorKind::NotFound => String::new(),
        Err(source) => {
            return Discovered::Failed(ConfigLoadError::Cmdline {
                path: paths.cmdline.clone(),
                source,
            });
        }
    };
    if let Some(value) = cmdline_config_value(&cmdline) {
        return match classify_location(&value) {
            Ok(CmdlineLocation::Http(url)) => Discovered::Fetch(url),
            Ok(CmdlineLocation::File(path)) => {
                let origin = ConfigOrigin::CmdlineFile(path.clone());
                match read_capped(&path) {
                    Ok(Some(bytes)) => Discovered::Document { origin, bytes },
                    Ok(None) => Discovered::Failed(ConfigLoadError::Read {
                        origin,
                        source: io::Error::from(io::ErrorKind::NotFound),
                    }),
                    Err(source) => Discovered::Failed(ConfigLoadError::Read { origin, source }),
                }
            }
            Err(e) => Discovered::Failed(e),
        };
    }
    for origin in [
        ConfigOrigin::Esp(paths.esp.clone()),
        ConfigOrigin::FwCfg(paths.fw_cfg.clone()),
    ] {
        let path = match &origin {
            ConfigOrigin::Esp(p) | ConfigOrigin::FwCfg(p) => p,
            ConfigOrigin::Applied(_)
            | ConfigOrigin::Cmdline
            | ConfigOrigin::CmdlineUrl(_)
            | ConfigOrigin::CmdlineFile(_)
            | ConfigOrigin::Default => {
                continue;
            }
        };
        match read_capped(path) {
            Ok(Some(bytes)) => return Discovered::Document { origin, bytes },
            Ok(None) => {}
            Err(source) => return Discovered::Failed(ConfigLoadError::Read { origin, source }),
        }
    }
    Discovered::Nothing
}

/// How often and how patiently [`fetch`] tries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FetchPolicy {
    /// Attempts before giving up.
    pub attempts: u32,
    /// Per-attempt timeout (connect + whole response).
    pub timeout: Duration,
    /// Delay before the second attempt; doubles after each failure.
    pub first_backoff: Duration,
    /// Upper bound for the delay.
    pub max_backoff: Duration,
}

impl Default for FetchPolicy {
    fn default() -> Self {
        Self {
            attempts: 8,
            timeout: Duration::from_secs(10),
            first_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(15),
        }
    }
}

impl FetchPolicy {
    /// The wait before attempt `n` (0-based; attempt 0 starts at once).
    pub fn backoff(&self, attempt: u32) -> Duration {
        if attempt == 0 {
            return Duration::ZERO;
        }
        let factor = 1u32.checked_shl(attempt - 1).unwrap_or(u32::MAX);
        self.first_backoff
            .saturating_mul(factor)
            .min(self.max_backoff)
    }
}

/// The TLS configuration handed to reqwest. Config URLs are plain `http`
/// for now, so it trusts no roots; it is still given explicitly, with the
/// ring provider, because reqwest's rustls backend otherwise asks for a
/// process-wide provider and panics without one (and feature unification
/// can switch that backend on in any build that also holds the CLI).
fn fetch_tls() -> Result<rustls::ClientConfig, rustls::Error> {
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth())
}

async fn fetch_once(client: &reqwest::Client, url: &HttpUrl) -> Result<Vec<u8>, FetchError> {
    let mut response = client
        .get(url.as_url().clone())
        .send()
        .await
        .map_err(FetchError::Request)?;
    if !response.status().is_success() {
        return Err(FetchError::Status(response.status()));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(FetchError::Request)? {
        if body.len() + chunk.len() > MAX_CONFIG_BYTES {
            return Err(FetchError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Fetches a config over HTTP, retrying with backoff.
pub async fn fetch(url: &HttpUrl, policy: FetchPolicy) -> Result<Vec<u8>, ConfigLoadError> {
    let origin = ConfigOrigin::CmdlineUrl(url.clone());
    let tls = fetch_tls().map_err(|e| ConfigLoadError::Fetch {
        origin: origin.clone(),
        attempts: 0,
        source: FetchError::Tls(e),
    })?;
    let client = reqwest::Client::builder()
        .timeout(policy.timeout)
        .tls_backend_preconfigured(tls)
        .build()
        .map_err(|e| ConfigLoadError::Fetch {
            origin: origin.clone(),
            attempts: 0,
            source: FetchError::Request(e),
        })?;
    let mut attempt = 0;
    loop {
        tokio::time::sleep(policy.backoff(attempt)).await;
        attempt += 1;
        match fetch_once(&client, url).await {
            Ok(body) => return Ok(body),
            Err(source) if attempt >= policy.attempts => {
                return Err(ConfigLoadError::Fetch {
                    origin,
                    attempts: attempt,
                    source,
                });
            }
            Err(e) => {
                tracing::warn!(%url, attempt, error = %crate::error_chain(&e), "config fetch failed; retrying");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;

    struct Fixture {
        dir: tempfile::TempDir,
        paths: ConfigPaths,
    }

    impl Fixture {
        fn new() -> Self {
            let dir = tempfile::tempdir().unwrap();
            let paths = ConfigPaths {
                applied: dir.path().join("var/lib/cairn/config.toml"),
                cmdline: dir.path().join("cmdline"),
                esp: dir.path().join("efi/cairn/config.toml"),
                fw_cfg: dir.path().join("fw_cfg/raw"),
            };
            fs::write(&paths.cmdline, "console=ttyS0,115200 panic=10\n").unwrap();
            Self { dir, paths }
        }

        fn write(&self, path: &Path, text: &str) {
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, text).unwrap();
        }

        fn set_cmdline(&self, text: &str) {
            fs::write(&self.paths.cmdline, text).unwrap();
        }
    }

    fn doc(d: Discovered) -> (ConfigOrigin, String) {
        match d {
            Discovered::Document { origin, bytes } => (origin, String::from_utf8(bytes).unwrap()),
            other => panic!("expected a document, got {other:?}"),
        }
    }

    #[test]
    fn a_config_applied_through_the_api_outranks_every_install_time_source() {
        let f = Fixture::new();
        f.write(&f.paths.esp, "# esp");
        f.write(&f.paths.fw_cfg, "# fw_cfg");
        f.write(&f.paths.applied, "# applied");
        f.set_cmdline("cairn.config=http://10.0.0.1/c.toml");
        let (origin, text) = doc(discover(&f.paths));
        assert_eq!(origin, ConfigOrigin::Applied(f.paths.applied.clone()));
        assert_eq!(text, "# applied");
        assert_eq!(origin.kind(), "api");
    }

    #[test]
    fn no_source_means_embedded_default() {
        let f = Fixture::new();
        assert!(matches!(discover(&f.paths), Discovered::Nothing));
    }

    #[test]
    fn fw_cfg_is_used_when_it_is_the_only_source() {
        let f = Fixture::new();
        f.write(&f.paths.fw_cfg, "# fw");
        let (origin, text) = doc(discover(&f.paths));
        assert_eq!(origin.kind(), "fw_cfg");
        assert_eq!(text, "# fw");
    }

    #[test]
    fn esp_wins_over_fw_cfg() {
        let f = Fixture::new();
        f.write(&f.paths.fw_cfg, "# fw");
        f.write(&f.paths.esp, "# esp");
        let (origin, text) = doc(discover(&f.paths));
        assert_eq!(origin, ConfigOrigin::Esp(f.paths.esp.clone()));
        assert_eq!(text, "# esp");
    }

    #[test]
    fn cmdline_file_wins_over_esp_and_fw_cfg() {
        let f = Fixture::new();
        f.write(&f.paths.fw_cfg, "# fw");
        f.write(&f.paths.esp, "# esp");
        let own = f.dir.path().join("own.toml");
        f.write(&own, "# own");
        f.set_cmdline(&format!(
            "quiet cairn.config=file://{} panic=10",
            own.display()
        ));
        let (origin, text) = doc(discover(&f.paths));
        assert_eq!(origin, ConfigOrigin::CmdlineFile(own));
        assert_eq!(text, "# own");
    }

    #[test]
    fn cmdline_url_asks_for_a_fetch_before_local_sources() {
        let f = Fixture::new();
        f.write(&f.paths.esp, "# esp");
        f.set_cmdline("cairn.config=http://10.0.0.1:8080/node.toml");
        match discover(&f.paths) {
            Discovered::Fetch(url) => assert_eq!(url.to_string(), "http://10.0.0.1:8080/node.toml"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn missing_cmdline_file_is_an_error_not_a_fall_through() {
        let f = Fixture::new();
        f.write(&f.paths.esp, "# esp");
        f.set_cmdline("cairn.config=/nonexistent/cairn.toml");
        match discover(&f.paths) {
            Discovered::Failed(e) => assert!(
                e.to_string()
                    .starts_with("/nonexistent/cairn.toml (cmdline cairn.config): cannot read"),
                "{e}"
            ),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn unsupported_scheme_is_reported() {
        let f = Fixture::new();
        f.set_cmdline("cairn.config=https://example.invalid/x.toml");
        match discover(&f.paths) {
            Discovered::Failed(e @ ConfigLoadError::UnsupportedLocation { .. }) => {
                assert!(
                    e.to_string().contains("https://example.invalid/x.toml"),
                    "{e}"
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn unreadable_esp_is_reported_not_skipped() {
        let f = Fixture::new();
        // A directory where the file should be makes read() fail with EISDIR
        // even for root, which chmod-based tests cannot do.
        fs::create_dir_all(&f.paths.esp).unwrap();
        f.write(&f.paths.fw_cfg, "# fw");
        match discover(&f.paths) {
            Discovered::Failed(ConfigLoadError::Read { origin, .. }) => {
                assert_eq!(origin.kind(), "esp")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn cmdline_tokenizer_handles_quotes_repeats_and_double_dash() {
        assert_eq!(
            cmdline_config_value("a=1 cairn.config=/x b"),
            Some("/x".into())
        );
        assert_eq!(
            cmdline_config_value("cairn.config=/a cairn.config=/b"),
            Some("/b".into())
        );
        assert_eq!(
            cmdline_config_value("cairn.config=\"/with space/c.toml\" x"),
            Some("/with space/c.toml".into())
        );
        assert_eq!(cmdline_config_value("cairn.configx=/x"), None);
        assert_eq!(cmdline_config_value("x.cairn.config=/x"), None);
        assert_eq!(cmdline_config_value("panic=10 -- cairn.config=/x"), None);
        assert_eq!(cmdline_config_value(""), None);
        assert_eq!(cmdline_config_value("  \n"), None);
    }

    #[test]
    fn locations_are_classified() {
        assert!(matches!(
            classify_location("http://h/c.toml"),
            Ok(CmdlineLocation::Http(_))
        ));
        assert_eq!(
            classify_location("file:///c.toml").unwrap(),
            CmdlineLocation::File("/c.toml".into())
        );
        assert_eq!(
            classify_location("/c.toml").unwrap(),
            CmdlineLocation::File("/c.toml".into())
        );
        for bad in ["c.toml", "http://", "https://h/c", "tftp://h/c", ""] {
            assert!(classify_location(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn oversized_files_are_read_one_byte_past_the_cap() {
        let f = Fixture::new();
        f.write(&f.paths.fw_cfg, &" ".repeat(MAX_CONFIG_BYTES + 100));
        let (_, text) = doc(discover(&f.paths));
        assert_eq!(text.len(), MAX_CONFIG_BYTES + 1);
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let p = FetchPolicy::default();
        let secs: Vec<u64> = (0..7).map(|n| p.backoff(n).as_secs()).collect();
        assert_eq!(secs, [0, 1, 2, 4, 8, 15, 15]);
        assert_eq!(p.backoff(100), p.max_backoff);
    }

    #[test]
    fn fetch_reads_a_config_and_retries_server_errors() {
        use std::io::Write;
        use std::net::TcpListener;

        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            for status in ["503 Service Unavailable", "200 OK"] {
                let (mut conn, _) = listener.accept().unwrap();
                let mut buf = [0u8; 1024];
                let _ = conn.read(&mut buf).unwrap();
                let body = "[node]\nhostname = \"fetched\"\n";
                write!(
                    conn,
                    "HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                )
                .unwrap();
            }
        });
        let url = HttpUrl::parse(&format!("http://{addr}/node.toml")).unwrap();
        let policy = FetchPolicy {
            attempts: 3,
            timeout: Duration::from_secs(5),
            first_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(10),
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let body = rt.block_on(fetch(&url, policy)).unwrap();
        server.join().unwrap();
        assert_eq!(body, b"[node]\nhostname = \"fetched\"\n");
    }

    #[test]
    fn fetch_gives_up_after_the_last_attempt_and_names_the_url() {
        // Bind then drop: the port is closed, so connects are refused fast.
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let url = HttpUrl::parse(&format!("http://{addr}/c.toml")).unwrap();
        let policy = FetchPolicy {
            attempts: 2,
            timeout: Duration::from_secs(2),
            first_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(1),
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let e = rt.block_on(fetch(&url, policy)).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains(&format!(
                "http://{addr}/c.toml (cmdline cairn.config): fetch failed after 2 attempts"
            )),
            "{msg}"
        );
    }
}
