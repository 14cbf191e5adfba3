//! The CLI's own config file: contexts (a node endpoint plus the
//! credential to talk to it) and which one is current.
//!
//! The model, its parser and context resolution are pure; [`load`] and
//! [`save`] are the only functions that touch the file system. The file
//! holds private keys, so [`save`] writes it atomically (a temporary file
//! in the same directory, fsynced, renamed over the old one) with mode 0600
//! inside a directory created with mode 0700.
//!
//! ```toml
//! current-context = "lab"
//!
//! [contexts.lab]
//! endpoints = ["10.0.0.5:7443"]
//! cluster = "lab"
//! user = "admin"
//! role = "admin"
//! ca-pem = "-----BEGIN CERTIFICATE-----\n..."
//! cert-pem = "-----BEGIN CERTIFICATE-----\n..."
//! key-pem = "-----BEGIN PRIVATE KEY-----\n..."
//! ```

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::endpoint::Endpoint;

/// The name of a context: 1 to 63 characters of `[A-Za-z0-9._-]`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ContextName(String);

/// Text that cannot name a context.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid context name {0:?}: use 1 to 63 ASCII letters, digits, '.', '_' or '-'")]
pub struct ContextNameError(String);

impl ContextName {
    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for ContextName {
    type Err = ContextNameError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let ok = (1..=63).contains(&s.len())
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if ok {
            Ok(ContextName(s.to_owned()))
        } else {
            Err(ContextNameError(s.to_owned()))
        }
    }
}

impl TryFrom<String> for ContextName {
    type Error = ContextNameError;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        value.parse()
    }
}

impl From<ContextName> for String {
    fn from(value: ContextName) -> Self {
        value.0
    }
}

impl fmt::Display for ContextName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One context: how to reach a cluster and who to be there.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Context {
    /// Node API endpoints; the first is used unless `--endpoint` says
    /// otherwise.
    pub endpoints: Vec<Endpoint>,
    /// Cluster name, for display.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    /// The credential's common name, for display.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// The credential's role, for display (the node reads the real one from
    /// the certificate).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<api::Role>,
    /// The cluster CA certificate, PEM: the only anchor nodes are verified
    /// against.
    pub ca_pem: String,
    /// The client certificate, PEM.
    pub cert_pem: String,
    /// The client's private key, PEM. Secret.
    pub key_pem: String,
}

impl fmt::Debug for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Context")
            .field("endpoints", &self.endpoints)
            .field("cluster", &self.cluster)
            .field("user", &self.user)
            .field("role", &self.role)
            .field("key_pem", &"<redacted>")
            .finish_non_exhaustive()
    }
}

/// The whole config file.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct CliConfig {
    /// The context used when `--context` is not given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_context: Option<ContextName>,
    /// Every context by name.
    #[serde(default)]
    pub contexts: BTreeMap<ContextName, Context>,
}

/// A config file that does not parse or is inconsistent.
#[derive(Debug, thiserror::Error)]
pub enum ParseConfigError {
    /// The bytes are not UTF-8.
    #[error("the file is not UTF-8 text")]
    Utf8(#[source] std::str::Utf8Error),
    /// TOML syntax, an unknown key, or a bad value. toml's own `Display`
    /// draws a multi-line excerpt; this one stays on one line.
    #[error("line {line}, column {column}: {}", error.message())]
    Toml {
        /// 1-based line of the problem.
        line: usize,
        /// 1-based column.
        column: usize,
        /// The parser's error (boxed: it is large and errors travel far).
        error: Box<toml::de::Error>,
    },
    /// `current-context` names no context.
    #[error("current-context {0:?} names no context in the file")]
    UnknownCurrent(String),
    /// A context lists no endpoint.
    #[error("context {0:?} has no endpoints")]
    NoEndpoints(String),
}

impl CliConfig {
    /// Parses the file's bytes.
    pub fn parse_bytes(bytes: &[u8]) -> Result<Self, ParseConfigError> {
        Self::parse(std::str::from_utf8(bytes).map_err(ParseConfigError::Utf8)?)
    }

    /// Parses the file's text and checks the rules that span fields.
    pub fn parse(text: &str) -> Result<Self, ParseConfigError> {
        let config: CliConfig = toml::from_str(text).map_err(|error| {
            let offset = error.span().map_or(0, |span| span.start);
            let before = text.get(..offset).unwrap_or(text);
            let line = before.matches('\n').count() + 1;
            let column = before.chars().rev().take_while(|&c| c != '\n').count() + 1;
            ParseConfigError::Toml {
                line,
                column,
                error: Box::new(error),
            }
        })?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ParseConfigError> {
        if let Some(current) = &self.current_context
            && !self.contexts.contains_key(current)
        {
            return Err(ParseConfigError::UnknownCurrent(current.to_string()));
        }
        if let Some((name, _)) = self.contexts.iter().find(|(_, c)| c.endpoints.is_empty()) {
            return Err(ParseConfigError::NoEndpoints(name.to_string()));
        }
        Ok(())
    }

    /// The file's text.
    pub fn render(&self) -> String {
        // Serialising these types cannot fail: every key is a string and
        // every value a string, array or table.
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
    }

    /// Adds a context; refuses to replace one of the same name.
    pub fn add_context(
        &mut self,
        name: ContextName,
        context: Context,
        make_current: bool,
    ) -> Result<(), ContextError> {
        if self.contexts.contains_key(&name) {
            return Err(ContextError::Exists(name));
        }
        if make_current || self.current_context.is_none() {
            self.current_context = Some(name.clone());
        }
        self.contexts.insert(name, context);
        Ok(())
    }

    /// Makes `name` the current context.
    pub fn use_context(&mut self, name: &ContextName) -> Result<(), ContextError> {
        if !self.contexts.contains_key(name) {
            return Err(self.unknown(name));
        }
        self.current_context = Some(name.clone());
        Ok(())
    }

    /// Removes a context; the current context is unset if it was this one.
    pub fn remove_context(&mut self, name: &ContextName) -> Result<Context, ContextError> {
        let removed = self
            .contexts
            .remove(name)
            .ok_or_else(|| self.unknown(name))?;
        if self.current_context.as_ref() == Some(name) {
            self.current_context = None;
        }
        Ok(removed)
    }

    fn unknown(&self, name: &ContextName) -> ContextError {
        ContextError::Unknown {
            name: name.clone(),
            known: self.known(),
        }
    }

    fn known(&self) -> String {
        if self.contexts.is_empty() {
            "none".to_owned()
        } else {
            self.contexts
                .keys()
                .map(ContextName::as_str)
                .collect::<Vec<_>>()
                .join(", ")
        }
    }

    /// Picks the context and endpoint a command talks to: `--context` or
    /// the current context, and `--endpoint` or the context's first
    /// endpoint.
    pub fn resolve(
        &self,
        context: Option<&ContextName>,
        endpoint: Option<&Endpoint>,
    ) -> Result<Target<'_>, ContextError> {
        let name = match context {
            Some(name) => name,
            None if self.contexts.is_empty() => return Err(ContextError::NoContexts),
            None => self
                .current_context
                .as_ref()
                .ok_or_else(|| ContextError::NoCurrent(self.known()))?,
        };
        let (name, context) = self
            .contexts
            .get_key_value(name)
            .ok_or_else(|| self.unknown(name))?;
        let endpoint = match endpoint {
            Some(endpoint) => endpoint.clone(),
            None => context
                .endpoints
                .first()
                .cloned()
                .ok_or_else(|| ContextError::NoEndpoints(name.clone()))?,
        };
        Ok(Target {
            name,
            context,
            endpoint,
        })
    }
}

/// What a command talks to.
#[derive(Debug)]
pub struct Target<'a> {
    /// The context's name.
    pub name: &'a ContextName,
    /// Its credential and CA.
    pub context: &'a Context,
    /// The endpoint to connect to.
    pub endpoint: Endpoint,
}

/// A context that cannot be picked, added or removed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ContextError {
    /// The file has no contexts at all.
    #[error("no context is configured: run `cairn cluster init` first, or pass --config")]
    NoContexts,
    /// There are contexts but none is current.
    #[error(
        "no current context: pass --context or run `cairn config use-context NAME` (contexts: {0})"
    )]
    NoCurrent(String),
    /// The named context does not exist.
    #[error("there is no context {name} (contexts: {known})")]
    Unknown {
        /// The name asked for.
        name: ContextName,
        /// The names that exist.
        known: String,
    },
    /// A context of that name exists already.
    #[error(
        "a context named {0} exists already: pick another name or remove it with `cairn config remove-context {0}`"
    )]
    Exists(ContextName),
    /// The context lists no endpoint (only possible for a config built in
    /// memory; the parser refuses such files).
    #[error("context {0} has no endpoints")]
    NoEndpoints(ContextName),
}

/// Where the config file lives by default: `$XDG_CONFIG_HOME/cairn/config.toml`
/// when that variable is an absolute path, else
/// `$HOME/.config/cairn/config.toml`.
pub fn default_path(xdg_config_home: Option<OsString>, home: Option<OsString>) -> Option<PathBuf> {
    let base = match xdg_config_home.map(PathBuf::from) {
        Some(xdg) if xdg.is_absolute() => xdg,
        Some(_) | None => {
            let home = PathBuf::from(home?);
            if !home.is_absolute() {
                return None;
            }
            home.join(".config")
        }
    };
    Some(base.join("cairn").join("config.toml"))
}

/// Reading the config file failed.
#[derive(Debug, thiserror::Error)]
pub enum LoadConfigError {
    /// The file exists but cannot be read.
    #[error("cannot read {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The file does not parse.
    #[error("{} is not a valid cairn config file", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: ParseConfigError,
    },
}

/// Whether a file mode keeps the file to its owner. The config file holds
/// private keys, so anything else deserves a warning, as ssh gives for its
/// keys.
pub fn is_private_mode(mode: u32) -> bool {
    mode & 0o077 == 0
}

/// The permission bits of the config file when others may read or write
/// it; `None` when it is private or cannot be inspected.
pub fn exposed_mode(path: &Path) -> Option<u32> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path).ok()?.permissions().mode() & 0o777;
    (!is_private_mode(mode)).then_some(mode)
}

/// Reads the config file; a file that does not exist reads as empty.
pub fn load(path: &Path) -> Result<CliConfig, LoadConfigError> {
    match std::fs::read(path) {
        Ok(bytes) => CliConfig::parse_bytes(&bytes).map_err(|source| LoadConfigError::Parse {
            path: path.to_owned(),
            source,
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(CliConfig::default()),
        Err(source) => Err(LoadConfigError::Read {
            path: path.to_owned(),
            source,
        }),
    }
}

/// Writing the config file failed.
#[derive(Debug, thiserror::Error)]
pub enum SaveConfigError {
    /// The path has no parent directory.
    #[error("{} names no file in a directory", .0.display())]
    NoParent(PathBuf),
    /// The directory cannot be created.
    #[error("cannot create the directory {}", path.display())]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The temporary file cannot be created, written or synced.
    #[error("cannot write a new config file in {}", path.display())]
    Write {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The temporary file cannot be renamed over the config file.
    #[error("cannot replace {}", path.display())]
    Rename {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
}

/// Checks beforehand that [`save`] can create the directory and write in
/// it, so a command that is about to receive a credential it cannot fetch
/// twice (cluster init) fails before it asks.
///
/// It creates nothing that outlives it: the probe file goes into the
/// nearest directory that exists already, and is removed at once.
pub fn check_writable(path: &Path) -> Result<(), SaveConfigError> {
    let dir = parent_dir(path)?;
    let existing = dir
        .ancestors()
        .find(|d| d.as_os_str().is_empty() || d.is_dir())
        .map_or(Path::new("."), |d| {
            if d.as_os_str().is_empty() {
                Path::new(".")
            } else {
                d
            }
        });
    tempfile::Builder::new()
        .prefix(".cairn-config-probe")
        .tempfile_in(existing)
        .map(drop)
        .map_err(|source| SaveConfigError::Write {
            path: existing.to_owned(),
            source,
        })
}

fn parent_dir(path: &Path) -> Result<&Path, SaveConfigError> {
    match path.parent() {
        Some(dir) if dir.as_os_str().is_empty() => Ok(Path::new(".")),
        Some(dir) => Ok(dir),
        None => Err(SaveConfigError::NoParent(path.to_owned())),
    }
}

fn create_private_dir(dir: &Path) -> Result<(), SaveConfigError> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| SaveConfigError::CreateDir {
            path: dir.to_owned(),
            source,
        })
}

/// Writes the config file atomically with mode 0600.
pub fn save(path: &Path, config: &CliConfig) -> Result<(), SaveConfigError> {
    use std::os::unix::fs::PermissionsExt;
    let dir = parent_dir(path)?;
    create_private_dir(dir)?;
    let write_err = |source| SaveConfigError::Write {
        path: dir.to_owned(),
        source,
    };
    let mut file = tempfile::Builder::new()
        .prefix(".config.toml.")
        .permissions(std::fs::Permissions::from_mode(0o600))
        .tempfile_in(dir)
        .map_err(write_err)?;
    file.write_all(config.render().as_bytes())
        .map_err(write_err)?;
    file.as_file().sync_all().map_err(write_err)?;
    file.persist(path).map_err(|e| SaveConfigError::Rename {
        path: path.to_owned(),
        source: e.error,
    })?;
    // The rename is durable only once the directory entry is on disk.
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(write_err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn name(s: &str) -> ContextName {
        s.parse().expect("valid context name")
    }

    fn context(endpoint: &str) -> Context {
        Context {
            endpoints: vec![endpoint.parse().expect("endpoint")],
            cluster: Some("lab".to_owned()),
            user: Some("admin".to_owned()),
            role: Some(api::Role::Admin),
            ca_pem: "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n".to_owned(),
            cert_pem: "-----BEGIN CERTIFICATE-----\nBBBB\n-----END CERTIFICATE-----\n".to_owned(),
            key_pem: "-----BEGIN PRIVATE KEY-----\nCCCC\n-----END PRIVATE KEY-----\n".to_owned(),
        }
    }

    #[test]
    fn a_documented_config_file_parses() {
        let text = r#"
current-context = "lab"

[contexts.lab]
endpoints = ["10.0.0.5:7443", "node-2"]
cluster = "lab"
role = "operator"
ca-pem = "ca"
cert-pem = "cert"
key-pem = "key"
"#;
        let config = CliConfig::parse(text).expect("parses");
        let lab = &config.contexts[&name("lab")];
        assert_eq!(lab.endpoints[1].to_string(), "node-2:7443");
        assert_eq!(lab.role, Some(api::Role::Operator));
        assert_eq!(config.current_context, Some(name("lab")));
    }

    #[test]
    fn unknown_keys_and_dangling_current_context_are_refused() {
        let typo =
            "[contexts.lab]\nendpoint = [\"a\"]\nca-pem = \"\"\ncert-pem = \"\"\nkey-pem = \"\"\n";
        let err = CliConfig::parse(typo).expect_err("typo");
        assert!(
            err.to_string().contains("unknown field `endpoint`"),
            "{err}"
        );

        let dangling = "current-context = \"prod\"\n";
        assert!(matches!(
            CliConfig::parse(dangling),
            Err(ParseConfigError::UnknownCurrent(n)) if n == "prod"
        ));

        let empty =
            "[contexts.lab]\nendpoints = []\nca-pem = \"\"\ncert-pem = \"\"\nkey-pem = \"\"\n";
        assert!(matches!(
            CliConfig::parse(empty),
            Err(ParseConfigError::NoEndpoints(_))
        ));
    }

    #[test]
    fn resolution_prefers_flags_over_the_current_context() {
        let mut config = CliConfig::default();
        config
            .add_context(name("a"), context("10.0.0.1"), false)
            .expect("add a");
        config
            .add_context(name("b"), context("10.0.0.2"), false)
            .expect("add b");
        // The first context added becomes current when none is.
        let target = config.resolve(None, None).expect("current");
        assert_eq!(
            (target.name.as_str(), target.endpoint.to_string().as_str()),
            ("a", "10.0.0.1:7443")
        );

        let target = config.resolve(Some(&name("b")), None).expect("flag");
        assert_eq!(target.endpoint.to_string(), "10.0.0.2:7443");

        let other: Endpoint = "127.0.0.1:9".parse().expect("endpoint");
        let target = config.resolve(None, Some(&other)).expect("endpoint flag");
        assert_eq!((target.name.as_str(), &target.endpoint), ("a", &other));

        assert_eq!(
            config
                .resolve(Some(&name("c")), None)
                .expect_err("unknown")
                .to_string(),
            "there is no context c (contexts: a, b)"
        );
    }

    #[test]
    fn resolution_explains_what_to_do_when_nothing_is_configured() {
        let mut config = CliConfig::default();
        assert_eq!(
            config.resolve(None, None).expect_err("empty"),
            ContextError::NoContexts
        );
        config
            .add_context(name("a"), context("10.0.0.1"), true)
            .expect("add");
        config.remove_context(&name("b")).expect_err("no b");
        config
            .add_context(name("b"), context("10.0.0.2"), false)
            .expect("add");
        config.remove_context(&name("a")).expect("remove current");
        assert_eq!(
            config.resolve(None, None).expect_err("no current"),
            ContextError::NoCurrent("b".to_owned())
        );
        config.use_context(&name("b")).expect("use b");
        assert_eq!(config.resolve(None, None).expect("b").name.as_str(), "b");
    }

    #[test]
    fn adding_a_context_never_replaces_one() {
        let mut config = CliConfig::default();
        config
            .add_context(name("a"), context("10.0.0.1"), true)
            .expect("add");
        assert_eq!(
            config.add_context(name("a"), context("10.0.0.9"), true),
            Err(ContextError::Exists(name("a")))
        );
        assert_eq!(
            config.contexts[&name("a")].endpoints[0].to_string(),
            "10.0.0.1:7443"
        );
    }

    #[test]
    fn only_owner_only_modes_count_as_private() {
        assert!(is_private_mode(0o600));
        assert!(is_private_mode(0o400));
        assert!(!is_private_mode(0o640));
        assert!(!is_private_mode(0o604));
        let tmp = tempfile::tempdir().expect("tempdir");
        let path = tmp.path().join("config.toml");
        save(&path, &CliConfig::default()).expect("save");
        assert_eq!(exposed_mode(&path), None);
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        assert_eq!(exposed_mode(&path), Some(0o644));
    }

    #[test]
    fn default_path_follows_xdg_then_home() {
        let p = |xdg: Option<&str>, home: Option<&str>| {
            default_path(xdg.map(OsString::from), home.map(OsString::from))
        };
        assert_eq!(
            p(Some("/x"), Some("/home/u")),
            Some(PathBuf::from("/x/cairn/config.toml"))
        );
        // A relative XDG_CONFIG_HOME is invalid per the spec and ignored.
        assert_eq!(
            p(Some("rel"), Some("/home/u")),
            Some(PathBuf::from("/home/u/.config/cairn/config.toml"))
        );
        assert_eq!(p(None, None), None);
    }

    #[test]
    fn save_writes_a_private_file_in_a_private_directory_and_load_reads_it_back() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().expect("tempdir");
        let path = tmp.path().join("nested").join("cairn").join("config.toml");
        assert_eq!(
            load(&path).expect("missing reads as empty"),
            CliConfig::default()
        );

        let mut config = CliConfig::default();
        config
            .add_context(name("a"), context("10.0.0.1"), true)
            .expect("add");
        check_writable(&path).expect("writable");
        assert!(
            !tmp.path().join("nested").exists(),
            "the check creates nothing"
        );
        save(&path, &config).expect("save");
        let mode = |p: &Path| std::fs::metadata(p).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(path.parent().expect("dir")), 0o700);
        assert_eq!(load(&path).expect("load"), config);
        // Neither the probe nor the temporary file is left behind.
        let entries = std::fs::read_dir(path.parent().expect("dir"))
            .expect("ls")
            .count();
        assert_eq!(entries, 1);
    }

    #[test]
    fn a_broken_file_is_named_and_the_problem_located_on_one_line() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let path = tmp.path().join("config.toml");
        std::fs::write(&path, "\ncurrent-context = 3").expect("write");
        let err = load(&path).expect_err("broken");
        assert!(err.to_string().contains("config.toml"), "{err}");
        let LoadConfigError::Parse { source, .. } = &err else {
            panic!("not a parse error: {err}");
        };
        let text = source.to_string();
        assert!(text.starts_with("line 2, column 19: "), "{text}");
        assert!(!text.contains('\n'), "{text}");
    }

    fn arb_context() -> impl Strategy<Value = Context> {
        (
            proptest::collection::vec(
                prop_oneof![
                    "[a-z]([a-z0-9-]{0,8}[a-z0-9])?(:[1-9][0-9]{0,3})?",
                    any::<std::net::IpAddr>().prop_map(|ip| match ip {
                        std::net::IpAddr::V4(v4) => v4.to_string(),
                        std::net::IpAddr::V6(v6) => format!("[{v6}]:7443"),
                    }),
                ],
                1..4,
            ),
            proptest::option::of(".{0,20}"),
            proptest::option::of(".{0,20}"),
            proptest::option::of(proptest::sample::select(api::Role::ALL.to_vec())),
            ".{0,200}",
            ".{0,200}",
            ".{0,200}",
        )
            .prop_map(
                |(endpoints, cluster, user, role, ca_pem, cert_pem, key_pem)| Context {
                    endpoints: endpoints
                        .iter()
                        .map(|e| e.parse().expect("generated endpoint"))
                        .collect(),
                    cluster,
                    user,
                    role,
                    ca_pem,
                    cert_pem,
                    key_pem,
                },
            )
    }

    fn arb_config() -> impl Strategy<Value = CliConfig> {
        (
            proptest::collection::btree_map("[A-Za-z0-9._-]{1,20}", arb_context(), 0..4),
            any::<proptest::sample::Index>(),
            any::<bool>(),
        )
            .prop_map(|(contexts, pick, set_current)| {
                let contexts: BTreeMap<ContextName, Context> =
                    contexts.into_iter().map(|(n, c)| (name(&n), c)).collect();
                let current_context = if set_current && !contexts.is_empty() {
                    contexts.keys().nth(pick.index(contexts.len())).cloned()
                } else {
                    None
                };
                CliConfig {
                    current_context,
                    contexts,
                }
            })
    }

    proptest! {
        #[test]
        fn parsing_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = CliConfig::parse_bytes(&bytes);
        }

        #[test]
        fn parsing_arbitrary_text_never_panics(text in "(current-context|contexts|endpoints|ca-pem|\\[|\\]|=|\"|\\.|\n|[a-z0-9:])*") {
            let _ = CliConfig::parse(&text);
        }

        #[test]
        fn rendered_configs_parse_back_unchanged(config in arb_config()) {
            let text = config.render();
            prop_assert_eq!(CliConfig::parse(&text).expect("round trip"), config);
        }

        #[test]
        fn context_names_parse_exactly_the_documented_alphabet(text in ".{0,70}") {
            let ok = (1..=63).contains(&text.len())
                && text.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
            prop_assert_eq!(text.parse::<ContextName>().is_ok(), ok);
        }
    }
}
