//! PKI material on disk.
//!
//! One directory (on a node `/var/lib/cairn/pki`, on STATE so it survives
//! reboots and upgrades) holds:
//!
//! | file          | mode | content                          |
//! |---------------|------|----------------------------------|
//! | `ca.pem`      | 0644 | cluster CA certificate           |
//! | `ca-key.pem`  | 0600 | cluster CA private key (PKCS#8)  |
//! | `node.pem`    | 0644 | this node's certificate          |
//! | `node-key.pem`| 0600 | this node's private key (PKCS#8) |
//!
//! The directory itself is 0700. Each file is written to a temporary name,
//! fsynced, renamed over the final name and the directory fsynced, so a
//! power cut leaves either the old file or the new one, never a torn key.

use std::fs::{self, DirBuilder, File, OpenOptions, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::{CertificateAuthority, IssuedCert, MaterialError, check_pair};

/// Where a node keeps its PKI material.
pub const DEFAULT_DIR: &str = "/var/lib/cairn/pki";

/// CA certificate file name.
pub const CA_CERT_FILE: &str = "ca.pem";
/// CA key file name.
pub const CA_KEY_FILE: &str = "ca-key.pem";
/// Node certificate file name.
pub const NODE_CERT_FILE: &str = "node.pem";
/// Node key file name.
pub const NODE_KEY_FILE: &str = "node-key.pem";

const DIR_MODE: u32 = 0o700;
const CERT_MODE: u32 = 0o644;
const KEY_MODE: u32 = 0o600;

/// Writing PKI material failed.
#[derive(Debug, thiserror::Error)]
pub enum SaveError {
    /// The directory could not be created or restricted to 0700.
    #[error("cannot create PKI directory {path}")]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A step of the atomic write failed.
    #[error("cannot write {path}")]
    Write {
        /// The final file name.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

/// Loading PKI material failed.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file does not exist.
    #[error("{path} is missing")]
    Missing {
        /// The file.
        path: PathBuf,
    },
    /// The file exists but cannot be read.
    #[error("cannot read {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The file's content is not valid material, or the key does not belong
    /// to the certificate (then `path` names the key).
    #[error("{path} holds invalid PKI material")]
    Invalid {
        /// The file at fault.
        path: PathBuf,
        /// The cause.
        #[source]
        source: MaterialError,
    },
}

impl LoadError {
    /// Whether the material is simply not there yet (a node that has not
    /// bootstrapped or joined), as opposed to being damaged.
    pub fn is_missing(&self) -> bool {
        match self {
            LoadError::Missing { .. } => true,
            LoadError::Read { .. } | LoadError::Invalid { .. } => false,
        }
    }
}

/// A directory of PKI material.
#[derive(Clone, Debug)]
pub struct PkiStore {
    dir: PathBuf,
}

impl PkiStore {
    /// A store rooted at `dir`; nothing is touched until a save or load.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        PkiStore { dir: dir.into() }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes the CA certificate and key.
    pub fn save_ca(&self, ca: &CertificateAuthority) -> Result<(), SaveError> {
        self.ensure_dir()?;
        // Key first: a crash between the two leaves no certificate that
        // claims a CA whose key is missing.
        self.write_atomic(CA_KEY_FILE, ca.key_pem().as_bytes(), KEY_MODE)?;
        self.write_atomic(CA_CERT_FILE, ca.cert_pem().as_bytes(), CERT_MODE)
    }

    /// Loads the CA certificate and key.
    pub fn load_ca(&self) -> Result<CertificateAuthority, LoadError> {
        let cert = self.read(CA_CERT_FILE)?;
        let key = self.read(CA_KEY_FILE)?;
        CertificateAuthority::from_pem(&cert, &key)
            .map_err(|source| self.invalid(CA_CERT_FILE, CA_KEY_FILE, source))
    }

    /// Writes this node's certificate and key.
    pub fn save_node(&self, node: &IssuedCert) -> Result<(), SaveError> {
        self.ensure_dir()?;
        self.write_atomic(NODE_KEY_FILE, node.key_pem.as_bytes(), KEY_MODE)?;
        self.write_atomic(NODE_CERT_FILE, node.cert_pem.as_bytes(), CERT_MODE)
    }

    /// Loads this node's certificate and key, checking that they parse and
    /// belong together.
    pub fn load_node(&self) -> Result<IssuedCert, LoadError> {
        let cert_pem = self.read(NODE_CERT_FILE)?;
        let key_pem = self.read(NODE_KEY_FILE)?;
        check_pair(&cert_pem, &key_pem)
            .map_err(|source| self.invalid(NODE_CERT_FILE, NODE_KEY_FILE, source))?;
        Ok(IssuedCert { cert_pem, key_pem })
    }

    /// Names the file a [`MaterialError`] is about.
    fn invalid(&self, cert_file: &str, key_file: &str, source: MaterialError) -> LoadError {
        let file = match source {
            MaterialError::CertPem(_) | MaterialError::Cert(_) | MaterialError::Issuer(_) => {
                cert_file
            }
            MaterialError::Key(_) | MaterialError::KeyMismatch => key_file,
        };
        LoadError::Invalid {
            path: self.dir.join(file),
            source,
        }
    }

    fn read(&self, name: &str) -> Result<String, LoadError> {
        let path = self.dir.join(name);
        match fs::read_to_string(&path) {
            Ok(text) => Ok(text),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(LoadError::Missing { path }),
            Err(source) => Err(LoadError::Read { path, source }),
        }
    }

    fn ensure_dir(&self) -> Result<(), SaveError> {
        let fail = |source| SaveError::CreateDir {
            path: self.dir.clone(),
            source,
        };
        // Parents get the default mode (other parts of Cairn share
        // /var/lib/cairn); only the PKI directory itself is private.
        if let Some(parent) = self.dir.parent() {
            fs::create_dir_all(parent).map_err(fail)?;
        }
        match DirBuilder::new().mode(DIR_MODE).create(&self.dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(fail(e)),
        }
        // An existing directory keeps its old mode through create(); tighten it.
        fs::set_permissions(&self.dir, Permissions::from_mode(DIR_MODE)).map_err(fail)
    }

    fn write_atomic(&self, name: &str, contents: &[u8], mode: u32) -> Result<(), SaveError> {
        let path = self.dir.join(name);
        let tmp = self.dir.join(format!(".{name}.tmp"));
        let result = write_synced(&tmp, contents, mode)
            .and_then(|()| fs::rename(&tmp, &path))
            .and_then(|()| File::open(&self.dir)?.sync_all());
        if result.is_err() {
            // Best effort: a stale temporary file is harmless (it is
            // truncated on the next attempt), so its removal error is moot.
            let _ = fs::remove_file(&tmp);
        }
        result.map_err(|source| SaveError::Write { path, source })
    }
}

fn write_synced(path: &Path, contents: &[u8], mode: u32) -> io::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)?;
    // The mode given to open() only applies to a newly created file and is
    // filtered by the umask; set it explicitly.
    file.set_permissions(Permissions::from_mode(mode))?;
    file.write_all(contents)?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::{NodeCertRequest, SubjectName};
    use std::time::SystemTime;

    fn mode_of(path: &Path) -> u32 {
        fs::metadata(path).expect("metadata").permissions().mode() & 0o777
    }

    fn ca() -> CertificateAuthority {
        let name = SubjectName::try_from("store").expect("name");
        CertificateAuthority::create(&name, SystemTime::now()).expect("ca")
    }

    fn node(ca: &CertificateAuthority) -> IssuedCert {
        ca.issue_node(
            &NodeCertRequest {
                name: SubjectName::try_from("node-1").expect("name"),
                dns_names: vec!["node-1".to_owned()],
                ip_addresses: vec![],
            },
            SystemTime::now(),
        )
        .expect("node cert")
    }

    #[test]
    fn store_round_trips_ca_and_node_material_with_private_modes() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let store = PkiStore::new(tmp.path().join("lib/cairn/pki"));
        let ca = ca();
        let node = node(&ca);
        store.save_ca(&ca).expect("save ca");
        store.save_node(&node).expect("save node");

        let loaded = store.load_ca().expect("load ca");
        assert_eq!(loaded.fingerprint(), ca.fingerprint());
        assert_eq!(loaded.key_pem(), ca.key_pem());
        assert_eq!(store.load_node().expect("load node"), node);

        assert_eq!(mode_of(store.dir()), 0o700);
        assert_ne!(
            mode_of(&tmp.path().join("lib/cairn")),
            0o700,
            "parents keep the default mode"
        );
        assert_eq!(mode_of(&store.dir().join(CA_KEY_FILE)), 0o600);
        assert_eq!(mode_of(&store.dir().join(NODE_KEY_FILE)), 0o600);
        assert_eq!(mode_of(&store.dir().join(CA_CERT_FILE)), 0o644);
        assert_eq!(mode_of(&store.dir().join(NODE_CERT_FILE)), 0o644);
        let leftovers: Vec<_> = fs::read_dir(store.dir())
            .expect("read dir")
            .map(|e| e.expect("entry").file_name())
            .filter(|n| n.to_string_lossy().ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
    }

    #[test]
    fn saving_tightens_an_existing_directory_and_overwrites_files() {
        let tmp = tempfile::tempdir().expect("tempdir");
        fs::set_permissions(tmp.path(), Permissions::from_mode(0o755)).expect("chmod");
        let store = PkiStore::new(tmp.path());
        let first = ca();
        store.save_ca(&first).expect("save");
        let second = ca();
        store.save_ca(&second).expect("save again");
        assert_eq!(mode_of(tmp.path()), 0o700);
        assert_eq!(
            store.load_ca().expect("load").fingerprint(),
            second.fingerprint()
        );
    }

    #[test]
    fn missing_file_error_names_the_file() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let store = PkiStore::new(tmp.path());
        let err = store.load_ca().expect_err("nothing stored");
        assert!(err.is_missing());
        assert!(
            err.to_string()
                .contains(&tmp.path().join(CA_CERT_FILE).display().to_string()),
            "{err}"
        );

        store.save_node(&node(&ca())).expect("save node");
        fs::remove_file(tmp.path().join(NODE_KEY_FILE)).expect("rm key");
        let err = store.load_node().expect_err("key gone");
        assert!(err.to_string().contains(NODE_KEY_FILE), "{err}");
    }

    #[test]
    fn unparsable_or_mismatched_file_error_names_the_file() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let store = PkiStore::new(tmp.path());
        store.save_ca(&ca()).expect("save");
        fs::write(tmp.path().join(CA_CERT_FILE), "not a certificate").expect("corrupt");
        let err = store.load_ca().expect_err("corrupt cert");
        assert!(!err.is_missing());
        assert!(err.to_string().contains(CA_CERT_FILE), "{err}");

        let ca = ca();
        store.save_ca(&ca).expect("save");
        fs::write(tmp.path().join(CA_KEY_FILE), "garbage").expect("corrupt");
        let err = store.load_ca().expect_err("corrupt key");
        assert!(err.to_string().contains(CA_KEY_FILE), "{err}");

        // A valid key that belongs to another certificate.
        store.save_node(&node(&ca)).expect("save node");
        let other = node(&ca);
        fs::write(tmp.path().join(NODE_KEY_FILE), &other.key_pem).expect("swap key");
        let err = store.load_node().expect_err("mismatch");
        assert!(
            matches!(
                &err,
                LoadError::Invalid {
                    source: MaterialError::KeyMismatch,
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(err.to_string().contains(NODE_KEY_FILE), "{err}");
    }
}
