//! Who this node is in Raft, kept on STATE next to the PKI
//! (`/var/lib/cairn/member.toml`).
//!
//! The file is written before the PKI when a node bootstraps or joins, so
//! a node that has a cluster CA always knows its Raft id. It also records
//! how the member came to be: a bootstrapped member recreates its
//! one-voter log if the log is missing; a joined member knows the peers
//! the join answer listed, which it needs to be reachable before the
//! leader's first snapshot tells it the directory.

use std::path::{Path, PathBuf};

use cluster::store::Member;
use serde::{Deserialize, Serialize};

/// How the member came to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Origin {
    /// It created the cluster.
    Bootstrap,
    /// It joined an existing cluster.
    Join,
}

/// The contents of `member.toml`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct MemberIdentity {
    /// Raft id, never 0.
    pub id: u64,
    /// How it came to be.
    pub origin: Origin,
    /// For a joined member: the members the join answer listed.
    #[serde(default)]
    pub peers: Vec<Member>,
}

/// Reading or writing `member.toml` failed.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// The file could not be read or written.
    #[error("cannot access {path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The failure.
        #[source]
        source: std::io::Error,
    },
    /// The file does not parse.
    #[error("{path} is not a valid member identity")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The failure.
        #[source]
        source: toml::de::Error,
    },
    /// The file names Raft id 0, which raft-rs reserves.
    #[error("{path} names Raft id 0, which is not a valid member id")]
    ZeroId {
        /// The file.
        path: PathBuf,
    },
    /// Serialising failed.
    #[error("cannot serialise the member identity")]
    Serialize(#[source] toml::ser::Error),
}

impl MemberIdentity {
    /// Reads the identity; `None` when the file does not exist.
    pub fn load(path: &Path) -> Result<Option<Self>, IdentityError> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(IdentityError::Io {
                    path: path.to_owned(),
                    source,
                });
            }
        };
        let identity: Self = toml::from_str(&text).map_err(|source| IdentityError::Parse {
            path: path.to_owned(),
            source,
        })?;
        if identity.id == 0 {
            return Err(IdentityError::ZeroId {
                path: path.to_owned(),
            });
        }
        Ok(Some(identity))
    }

    /// Writes the identity atomically.
    pub fn save(&self, path: &Path) -> Result<(), IdentityError> {
        let text = toml::to_string(self).map_err(IdentityError::Serialize)?;
        crate::files::write_atomic(path, text.as_bytes()).map_err(|source| IdentityError::Io {
            path: path.to_owned(),
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: u64) -> Member {
        Member {
            id,
            name: format!("n{id}"),
            peer_addr: format!("10.0.0.{id}:7444").parse().unwrap(),
            api_addr: format!("10.0.0.{id}:7443").parse().unwrap(),
            domain: (id == 2).then(|| "rack-b".to_owned()),
        }
    }

    #[test]
    fn an_identity_survives_a_save_and_load() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("member.toml");
        assert_eq!(MemberIdentity::load(&path).unwrap(), None);
        let identity = MemberIdentity {
            id: 0x1234_5678_9abc,
            origin: Origin::Join,
            peers: vec![member(1), member(2)],
        };
        identity.save(&path).unwrap();
        assert_eq!(MemberIdentity::load(&path).unwrap(), Some(identity));
    }

    #[test]
    fn a_zero_id_or_an_unknown_key_is_refused_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("member.toml");
        std::fs::write(&path, "id = 0\norigin = \"bootstrap\"\n").unwrap();
        let err = MemberIdentity::load(&path).unwrap_err().to_string();
        assert!(err.contains("member.toml") && err.contains("id 0"), "{err}");
        std::fs::write(&path, "id = 1\norigin = \"bootstrap\"\nvoters = 3\n").unwrap();
        let err = MemberIdentity::load(&path).unwrap_err();
        assert!(matches!(err, IdentityError::Parse { .. }), "{err}");
    }
}
