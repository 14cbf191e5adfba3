//! Fetching pinned Debian packages and unpacking them.
//!
//! A package is named by the profile as `package = version`. The builder
//! asks apt for that exact version's SHA256 (`apt-cache show pkg=ver`),
//! downloads it with `apt-get download` into a cache directory, refuses it
//! when the hash differs, and unpacks it with `dpkg-deb -x` into a cache
//! directory keyed by that hash. A warm cache costs one `apt-cache` call.

use std::fs;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::profile::{DebVersion, PackageName};
use crate::tools::{self, HostTool, ToolError};

/// Marks a completely unpacked package tree.
pub const STAMP: &str = ".cairn-unpacked";

/// A package pinned by the profile, and the profile keys that pin it
/// (so errors can say which line to change).
#[derive(Debug, Clone)]
pub struct PinnedPackage {
    pub name: PackageName,
    pub version: DebVersion,
    pub version_key: &'static str,
}

/// Why a package could not be fetched or unpacked.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error(
        "{name}={version} is not available from apt (pinned by profile key `{key}`); \
         run `apt-get update`, or pin a version `apt-cache policy {name}` lists"
    )]
    NotAvailable {
        name: PackageName,
        version: DebVersion,
        key: &'static str,
        #[source]
        source: Option<ToolError>,
    },
    #[error("cannot ask apt about pinned packages")]
    Query {
        #[source]
        source: ToolError,
    },
    #[error("apt-cache shows no SHA256 for {name}={version}")]
    NoChecksum {
        name: PackageName,
        version: DebVersion,
    },
    #[error("downloading {name}={version}")]
    Download {
        name: PackageName,
        version: DebVersion,
        #[source]
        source: ToolError,
    },
    #[error("apt-get download left {count} .deb files for {name}, expected exactly one")]
    UnexpectedDownload { name: PackageName, count: usize },
    #[error("{path} has SHA256 {actual}, but apt says {name}={version} is {expected}; refusing it")]
    ChecksumMismatch {
        name: PackageName,
        version: DebVersion,
        path: PathBuf,
        expected: String,
        actual: String,
    },
    #[error("unpacking {path}")]
    Unpack {
        path: PathBuf,
        #[source]
        source: ToolError,
    },
    #[error("cache file {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> FetchError + '_ {
    move |source| FetchError::Io {
        path: path.to_owned(),
        source,
    }
}

/// The cache root: `$CAIRN_CACHE`, else `$XDG_CACHE_HOME/cairn-image`,
/// else `~/.cache/cairn-image`.
pub fn default_cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CAIRN_CACHE") {
        return PathBuf::from(dir);
    }
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(dir).join("cairn-image");
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("/root"), PathBuf::from);
    home.join(".cache/cairn-image")
}

/// Finds the `SHA256:` field of the first stanza of `apt-cache show` output.
pub fn sha256_from_apt_show(text: &str) -> Option<String> {
    text.split("\n\n").next().and_then(|stanza| {
        stanza.lines().find_map(|line| {
            let value = line.strip_prefix("SHA256:")?.trim();
            (value.len() == 64 && value.bytes().all(|b| b.is_ascii_hexdigit()))
                .then(|| value.to_ascii_lowercase())
        })
    })
}

/// A file-system-safe name for a package version (epochs contain ':').
fn cache_stem(pkg: &PinnedPackage) -> String {
    format!("{}_{}", pkg.name, pkg.version.as_str().replace(':', "%3a"))
}

pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut file = fs::File::open(path)?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher)?;
    Ok(hex::encode(hasher.finalize()))
}

/// A package downloaded and unpacked into the cache.
#[derive(Debug, Clone)]
pub struct UnpackedPackage {
    pub deb: PathBuf,
    pub sha256: String,
    /// The package's file system tree (`dpkg-deb -x` output).
    pub root: PathBuf,
}

/// Downloads (unless cached and verified) and unpacks `pkg`.
pub fn fetch_and_unpack(pkg: &PinnedPackage, cache: &Path) -> Result<UnpackedPackage, FetchError> {
    let expected = expected_sha256(pkg)?;
    let debs = cache.join("debs");
    fs::create_dir_all(&debs).map_err(io_err(&debs))?;
    let deb = debs.join(format!("{}.deb", cache_stem(pkg)));

    let cached_ok = deb.is_file() && sha256_file(&deb).map_err(io_err(&deb))? == expected;
    if !cached_ok {
        download(pkg, &debs, &deb)?;
        let actual = sha256_file(&deb).map_err(io_err(&deb))?;
        if actual != expected {
            // Never leave a bad file where the next run would look first.
            let _ = fs::remove_file(&deb);
            return Err(FetchError::ChecksumMismatch {
                name: pkg.name.clone(),
                version: pkg.version.clone(),
                path: deb,
                expected,
                actual,
            });
        }
    }

    let unpacked = cache.join("unpacked");
    let root = unpacked.join(&expected);
    if !root.join(STAMP).is_file() {
        // Unpack beside the final place and rename, so concurrent builds
        // sharing the cache never see (or remove) a half-unpacked tree.
        fs::create_dir_all(&unpacked).map_err(io_err(&unpacked))?;
        let staging = tempfile::Builder::new()
            .prefix(".unpack-")
            .tempdir_in(&unpacked)
            .map_err(io_err(&unpacked))?;
        tools::run(
            HostTool::DpkgDeb,
            ["-x".as_ref(), deb.as_os_str(), staging.path().as_os_str()],
            |_| {},
        )
        .map_err(|source| FetchError::Unpack {
            path: deb.clone(),
            source,
        })?;
        let stamp = staging.path().join(STAMP);
        fs::write(&stamp, format!("{}={}\n", pkg.name, pkg.version)).map_err(io_err(&stamp))?;
        if root.exists() && !root.join(STAMP).is_file() {
            // Left by an older, interrupted builder.
            fs::remove_dir_all(&root).map_err(io_err(&root))?;
        }
        let staged = staging.keep();
        if fs::rename(&staged, &root).is_err() {
            // Another build finished the same unpack first; theirs is as good.
            fs::remove_dir_all(&staged).map_err(io_err(&staged))?;
            if !root.join(STAMP).is_file() {
                return Err(FetchError::Io {
                    path: root,
                    source: std::io::Error::other("unpacked package vanished"),
                });
            }
        }
    }
    Ok(UnpackedPackage {
        deb,
        sha256: expected,
        root,
    })
}

fn expected_sha256(pkg: &PinnedPackage) -> Result<String, FetchError> {
    let spec = format!("{}={}", pkg.name, pkg.version);
    let not_available = |source| FetchError::NotAvailable {
        name: pkg.name.clone(),
        version: pkg.version.clone(),
        key: pkg.version_key,
        source,
    };
    let out = match tools::run(
        HostTool::AptCache,
        ["show", "--no-all-versions", spec.as_str()],
        |_| {},
    ) {
        Ok(out) => out,
        Err(source @ (ToolError::Missing { .. } | ToolError::Spawn { .. })) => {
            return Err(FetchError::Query { source });
        }
        Err(e @ ToolError::Failed { .. }) => return Err(not_available(Some(e))),
    };
    let text = String::from_utf8_lossy(&out.stdout);
    if text.trim().is_empty() {
        return Err(not_available(None));
    }
    sha256_from_apt_show(&text).ok_or_else(|| FetchError::NoChecksum {
        name: pkg.name.clone(),
        version: pkg.version.clone(),
    })
}

fn download(pkg: &PinnedPackage, debs: &Path, dest: &Path) -> Result<(), FetchError> {
    // A private directory: apt-get names the file itself (with the epoch
    // escaped), and a half-finished download must never look cached.
    let tmp_dir = tempfile::Builder::new()
        .prefix(".download-")
        .tempdir_in(debs)
        .map_err(io_err(debs))?;
    let tmp = tmp_dir.path().to_owned();
    let spec = format!("{}={}", pkg.name, pkg.version);
    let result = tools::run(HostTool::AptGet, ["download", "-q", spec.as_str()], |cmd| {
        cmd.current_dir(&tmp);
    });
    let outcome = result
        .map_err(|source| FetchError::Download {
            name: pkg.name.clone(),
            version: pkg.version.clone(),
            source,
        })
        .and_then(|_| {
            let found: Vec<PathBuf> = fs::read_dir(&tmp)
                .map_err(io_err(&tmp))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "deb"))
                .collect();
            match found.as_slice() {
                [one] => fs::rename(one, dest).map_err(io_err(dest)),
                other => Err(FetchError::UnexpectedDownload {
                    name: pkg.name.clone(),
                    count: other.len(),
                }),
            }
        });
    drop(tmp_dir);
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHOW: &str = "Package: linux-image-6.1.0-56-amd64\nVersion: 6.1.192-2\n\
SHA256: A86E2049672F52354C4536A089203B6C82639420424D31C91CF31A181FD4D8F1\nSize: 1\n\n\
Package: linux-image-6.1.0-56-amd64\nVersion: 6.1.190-1\nSHA256: 00\n";

    #[test]
    fn the_first_stanzas_sha256_is_used_and_lower_cased() {
        assert_eq!(
            sha256_from_apt_show(SHOW).as_deref(),
            Some("a86e2049672f52354c4536a089203b6c82639420424d31c91cf31a181fd4d8f1")
        );
    }

    #[test]
    fn a_stanza_without_a_valid_sha256_gives_none() {
        assert_eq!(sha256_from_apt_show("Package: x\nSHA256: abc\n"), None);
        assert_eq!(sha256_from_apt_show(""), None);
    }

    #[test]
    fn epochs_are_escaped_in_cache_names() {
        let pkg = PinnedPackage {
            name: PackageName::try_from("busybox-static".to_owned()).unwrap(),
            version: DebVersion::try_from("1:1.35.0-4".to_owned()).unwrap(),
            version_key: "baseline.busybox-version",
        };
        assert_eq!(cache_stem(&pkg), "busybox-static_1%3a1.35.0-4");
    }

    #[test]
    fn an_unavailable_version_names_the_profile_key() {
        let err = FetchError::NotAvailable {
            name: PackageName::try_from("linux-image-x".to_owned()).unwrap(),
            version: DebVersion::try_from("1.0".to_owned()).unwrap(),
            key: "kernel.version",
            source: None,
        };
        assert!(err.to_string().contains("`kernel.version`"), "{err}");
    }
}
