//! Baked images: oci-archives that `cairn-image build --bake-image` put on
//! the ESP, imported into the store when cairnd opens it, so a node
//! installed from a disk image or VM template has them without a registry.
//!
//! The builder writes the archives to `cairn/<version>/images/` on the
//! ESP beside a `SHA256SUMS` (`sha256sum -c` form), and cairn-init mounts
//! the ESP read-only at `/efi`, so the running version's archives are in
//! [`default_dir`]. Only files the `SHA256SUMS` lists are read; anything
//! else in the directory is logged and left alone.
//!
//! **The rule about removed images.** The store keeps `baked.json`, the
//! SHA-256 of every baked archive it imported. An archive whose digest is
//! there is never imported again, so an operator's `cairn image rm` of a
//! baked image sticks across restarts and across upgrades that bake the
//! very same archive; an upgrade that bakes a different archive (another
//! digest) brings its images in. The check costs one small read per
//! start: no archive is hashed unless it is about to be imported. A wiped
//! store loses `baked.json` with the images, and imports everything again.
//!
//! An archive is recorded only once its import succeeded and the bytes
//! read matched the listed digest. A broken archive is logged with its
//! error chain and tried again at the next start; it never stops the
//! agent or the other archives. What a broken archive did import stays
//! (the store verifies every blob, so it is whole); the agent's store is
//! idempotent by digest, so trying again costs time, not space.
//!
//! [`plan`] is the decision (sans-IO): which listed archives to import and
//! which to skip. [`import_all`] is the blocking shell the API server runs
//! inside the `spawn_blocking` that opens the store.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{self, BufReader};
use std::path::{Path, PathBuf};

use oci::Digest;
use oci::digest::HashingReader;
use serde::{Deserialize, Serialize};

use super::{ImageStore, ImportError, Imported};
use crate::error_chain;
use crate::files::write_atomic;

/// The list of baked archives in the baked-images directory.
pub const SUMS_FILE: &str = "SHA256SUMS";
/// What the store imported, in the store's root.
pub const MARKER_FILE: &str = "baked.json";
/// The marker's format.
const MARKER_VERSION: u32 = 1;
/// Where the ESP is mounted on a node.
pub const ESP_MOUNT: &str = "/efi";

/// The running version's baked archives on a node:
/// `/efi/cairn/<version>/images`.
pub fn default_dir() -> PathBuf {
    Path::new(ESP_MOUNT)
        .join("cairn")
        .join(env!("CARGO_PKG_VERSION"))
        .join("images")
}

/// One archive the `SHA256SUMS` lists.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listed {
    /// The file name in the baked-images directory.
    pub name: String,
    /// The whole file's SHA-256.
    pub sha256: Digest,
}

/// Why a `SHA256SUMS` line is unusable.
#[derive(Debug, thiserror::Error)]
pub enum SumsError {
    /// Not `<64 hex>  <name>`.
    #[error("line {line} is not \"<sha256 hex>  <file name>\"")]
    Malformed {
        /// The line number, from 1.
        line: usize,
    },
    /// The digest is not SHA-256 hex.
    #[error("line {line} has an unusable digest")]
    Digest {
        /// The line number, from 1.
        line: usize,
        /// The parser's verdict.
        #[source]
        source: oci::DigestError,
    },
    /// The name is a path, not a file in the directory.
    #[error("line {line} names {name:?}, which is not a plain file name")]
    Name {
        /// The line number, from 1.
        line: usize,
        /// The name.
        name: String,
    },
    /// Two lines name one file.
    #[error("line {line} lists {name} a second time")]
    Duplicate {
        /// The line number, from 1.
        line: usize,
        /// The name.
        name: String,
    },
}

/// Parses `SHA256SUMS` as `sha256sum` writes it (text or binary mode).
pub fn parse_sums(text: &str) -> Result<Vec<Listed>, SumsError> {
    let mut out: Vec<Listed> = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        if raw.trim().is_empty() {
            continue;
        }
        let (hex, name) = raw
            .split_once("  ")
            .or_else(|| raw.split_once(" *"))
            .ok_or(SumsError::Malformed { line })?;
        let sha256 = Digest::parse(&format!("sha256:{hex}"))
            .map_err(|source| SumsError::Digest { line, source })?;
        if name.is_empty() || name == "." || name == ".." || name.contains('/') {
            return Err(SumsError::Name {
                line,
                name: name.to_owned(),
            });
        }
        if out.iter().any(|l| l.name == name) {
            return Err(SumsError::Duplicate {
                line,
                name: name.to_owned(),
            });
        }
        out.push(Listed {
            name: name.to_owned(),
            sha256,
        });
    }
    Ok(out)
}

/// The store's record of baked archives it imported.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Marker {
    /// The format, [`MARKER_VERSION`].
    pub version: u32,
    /// Archive digest -> what it was and what it brought.
    pub imported: BTreeMap<Digest, MarkedArchive>,
}

/// One imported archive, for whoever reads `baked.json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MarkedArchive {
    /// Where it was read from.
    pub file: String,
    /// The references it named.
    pub images: Vec<String>,
}

/// What to do with one listed archive.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BakedAction {
    /// Import it, then record its digest.
    Import(Listed),
    /// The store imported this very archive before; the operator may have
    /// removed its images since, and that stands.
    AlreadyImported(Listed),
}

/// Decides, from the listed archives and the store's marker, what to
/// import; in the order listed.
pub fn plan(listed: &[Listed], marker: &Marker) -> Vec<BakedAction> {
    listed
        .iter()
        .map(|l| {
            if marker.imported.contains_key(&l.sha256) {
                BakedAction::AlreadyImported(l.clone())
            } else {
                BakedAction::Import(l.clone())
            }
        })
        .collect()
}

/// Files in the directory that the list does not name (and are not the
/// list itself): reported, never read.
pub fn unlisted(present: &BTreeSet<String>, listed: &[Listed]) -> Vec<String> {
    present
        .iter()
        .filter(|name| name.as_str() != SUMS_FILE && !listed.iter().any(|l| &l.name == *name))
        .cloned()
        .collect()
}

/// Why one baked archive was not imported.
#[derive(Debug, thiserror::Error)]
pub enum BakedImportError {
    /// The file could not be opened or read to its end.
    #[error("cannot read {path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The failure.
        #[source]
        source: io::Error,
    },
    /// The store refused the archive.
    #[error("cannot import {path}")]
    Import {
        /// The file.
        path: PathBuf,
        /// The store's verdict (boxed: it carries layout and unpack errors).
        #[source]
        source: Box<ImportError>,
    },
    /// The file is not the one the build listed.
    #[error("{path} has digest {actual}, but SHA256SUMS lists {expected}")]
    Digest {
        /// The file.
        path: PathBuf,
        /// What `SHA256SUMS` says.
        expected: Digest,
        /// What was read.
        actual: Digest,
    },
}

/// Why the baked-images directory or the marker could not be used.
#[derive(Debug, thiserror::Error)]
pub enum BakedDirError {
    /// The directory or its list could not be read.
    #[error("cannot read {path}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The failure.
        #[source]
        source: io::Error,
    },
    /// The list is malformed.
    #[error("{path} is not a usable list of baked archives")]
    Sums {
        /// The path.
        path: PathBuf,
        /// The problem.
        #[source]
        source: SumsError,
    },
    /// The marker could not be written.
    #[error("cannot record the imported archives in {path}")]
    Marker {
        /// The path.
        path: PathBuf,
        /// The failure.
        #[source]
        source: io::Error,
    },
}

/// What one run did, for logs and tests.
#[derive(Debug, Default)]
pub struct BakedReport {
    /// Archives imported now, with the references each brought.
    pub imported: Vec<(String, Vec<Imported>)>,
    /// Archives imported at an earlier start.
    pub already: Vec<String>,
    /// Archives that failed, with the error chain.
    pub failed: Vec<(String, String)>,
    /// Files in the directory the list does not name.
    pub unlisted: Vec<String>,
}

/// Imports what [`plan`] says from `dir` into `store`, logging each image
/// and each failure. Never fails: a problem is logged and the store is
/// left usable. Blocking; run it off the async threads.
pub fn import_all(store: &ImageStore, dir: &Path) -> BakedReport {
    match try_import_all(store, dir) {
        Ok(report) => report,
        Err(e) => {
            tracing::error!("baked images not imported: {}", error_chain(&e));
            BakedReport::default()
        }
    }
}

fn dir_io(path: &Path) -> impl FnOnce(io::Error) -> BakedDirError + use<> {
    let path = path.to_owned();
    move |source| BakedDirError::Io { path, source }
}

fn try_import_all(store: &ImageStore, dir: &Path) -> Result<BakedReport, BakedDirError> {
    let mut report = BakedReport::default();
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            tracing::debug!("no baked images: {} does not exist", dir.display());
            return Ok(report);
        }
        Err(e) => return Err(dir_io(dir)(e)),
    };
    let mut present = BTreeSet::new();
    for entry in entries {
        let entry = entry.map_err(dir_io(dir))?;
        present.insert(entry.file_name().to_string_lossy().into_owned());
    }
    let sums_path = dir.join(SUMS_FILE);
    let listed = if present.contains(SUMS_FILE) {
        let text = fs::read_to_string(&sums_path).map_err(dir_io(&sums_path))?;
        parse_sums(&text).map_err(|source| BakedDirError::Sums {
            path: sums_path.clone(),
            source,
        })?
    } else {
        Vec::new()
    };
    report.unlisted = unlisted(&present, &listed);
    for name in &report.unlisted {
        tracing::warn!(
            "{} is not listed in {}; not imported",
            dir.join(name).display(),
            sums_path.display()
        );
    }

    let marker_path = store.root().join(MARKER_FILE);
    let mut marker = read_marker(&marker_path);
    for action in plan(&listed, &marker) {
        match action {
            BakedAction::AlreadyImported(l) => {
                tracing::debug!(
                    "baked archive {} ({}) was imported before; skipped",
                    dir.join(&l.name).display(),
                    l.sha256
                );
                report.already.push(l.name);
            }
            BakedAction::Import(l) => {
                let path = dir.join(&l.name);
                match import_one(store, &path, &l.sha256) {
                    Ok(imported) => {
                        for image in &imported {
                            tracing::info!(
                                "baked image {} ({}) imported from {}",
                                image.reference,
                                image.digest,
                                path.display()
                            );
                        }
                        marker.imported.insert(
                            l.sha256.clone(),
                            MarkedArchive {
                                file: path.display().to_string(),
                                images: imported.iter().map(|i| i.reference.to_string()).collect(),
                            },
                        );
                        // Written after each archive: a crash mid-way
                        // keeps what was done.
                        marker.version = MARKER_VERSION;
                        let bytes = serde_json::to_vec_pretty(&marker)
                            .map_err(io::Error::other)
                            .map_err(|source| BakedDirError::Marker {
                                path: marker_path.clone(),
                                source,
                            })?;
                        write_atomic(&marker_path, &bytes).map_err(|source| {
                            BakedDirError::Marker {
                                path: marker_path.clone(),
                                source,
                            }
                        })?;
                        report.imported.push((l.name, imported));
                    }
                    Err(e) => {
                        let chain = error_chain(&e);
                        tracing::error!("baked archive not imported: {chain}");
                        report.failed.push((l.name, chain));
                    }
                }
            }
        }
    }
    Ok(report)
}

/// The marker, or an empty one when there is none. An unreadable marker
/// is logged and treated as empty: importing again is idempotent, and
/// losing track of a removal is better than a node without its images.
fn read_marker(path: &Path) -> Marker {
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Marker::default(),
        Err(e) => {
            tracing::warn!("cannot read {}: {e}; treating it as empty", path.display());
            return Marker::default();
        }
    };
    match serde_json::from_slice::<Marker>(&bytes) {
        Ok(marker) if marker.version == MARKER_VERSION => marker,
        Ok(marker) => {
            tracing::warn!(
                "{} has version {}, not {MARKER_VERSION}; treating it as empty",
                path.display(),
                marker.version
            );
            Marker::default()
        }
        Err(e) => {
            tracing::warn!(
                "{} is not a baked-images marker ({e}); treating it as empty",
                path.display()
            );
            Marker::default()
        }
    }
}

/// Imports one archive, hashing the file as the store reads it.
fn import_one(
    store: &ImageStore,
    path: &Path,
    expected: &Digest,
) -> Result<Vec<Imported>, BakedImportError> {
    let io_err = |source| BakedImportError::Io {
        path: path.to_owned(),
        source,
    };
    let file = fs::File::open(path).map_err(io_err)?;
    let mut reader = HashingReader::new(BufReader::new(file));
    let imported = store
        .import(&mut reader)
        .map_err(|source| BakedImportError::Import {
            path: path.to_owned(),
            source: Box::new(source),
        })?;
    reader.drain().map_err(io_err)?;
    let (actual, _) = reader.finish();
    if actual != *expected {
        return Err(BakedImportError::Digest {
            path: path.to_owned(),
            expected: expected.clone(),
            actual,
        });
    }
    Ok(imported)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(c: char) -> String {
        c.to_string().repeat(64)
    }

    fn listed(name: &str, c: char) -> Listed {
        Listed {
            name: name.to_owned(),
            sha256: Digest::parse(&format!("sha256:{}", hex(c))).unwrap(),
        }
    }

    #[test]
    fn sums_in_text_and_binary_mode_parse() {
        let text = format!("{}  redis.tar\n\n{} *busybox\n", hex('a'), hex('b'));
        assert_eq!(
            parse_sums(&text).unwrap(),
            vec![listed("redis.tar", 'a'), listed("busybox", 'b')]
        );
    }

    #[test]
    fn sums_naming_paths_or_bad_digests_are_refused() {
        for (text, want) in [
            (format!("{}  ../etc/x\n", hex('a')), "Name"),
            (format!("{}  a/b.tar\n", hex('a')), "Name"),
            ("abc  x.tar\n".to_owned(), "Digest"),
            (format!("{} x.tar\n", hex('a')), "Malformed"),
            (
                format!("{}  x.tar\n{}  x.tar\n", hex('a'), hex('b')),
                "Duplicate",
            ),
        ] {
            let err = parse_sums(&text).unwrap_err();
            assert!(format!("{err:?}").starts_with(want), "{text:?}: {err:?}");
        }
    }

    #[test]
    fn archives_imported_before_are_skipped_even_under_another_name() {
        let mut marker = Marker::default();
        marker.imported.insert(
            listed("old.tar", 'a').sha256,
            MarkedArchive {
                file: "/efi/cairn/0.0.9/images/old.tar".to_owned(),
                images: vec!["redis:7".to_owned()],
            },
        );
        let list = [listed("redis.tar", 'a'), listed("etcd.tar", 'b')];
        assert_eq!(
            plan(&list, &marker),
            vec![
                BakedAction::AlreadyImported(listed("redis.tar", 'a')),
                BakedAction::Import(listed("etcd.tar", 'b')),
            ]
        );
    }

    #[test]
    fn an_empty_marker_imports_everything_listed_in_order() {
        let list = [listed("b.tar", 'b'), listed("a.tar", 'a')];
        assert_eq!(
            plan(&list, &Marker::default()),
            vec![
                BakedAction::Import(listed("b.tar", 'b')),
                BakedAction::Import(listed("a.tar", 'a')),
            ]
        );
    }

    #[test]
    fn files_the_list_does_not_name_are_reported() {
        let present: BTreeSet<String> = ["SHA256SUMS", "a.tar", "stray.tar"]
            .into_iter()
            .map(str::to_owned)
            .collect();
        assert_eq!(unlisted(&present, &[listed("a.tar", 'a')]), ["stray.tar"]);
    }

    #[test]
    fn the_default_directory_is_this_versions_on_the_esp() {
        assert_eq!(
            default_dir(),
            PathBuf::from(format!("/efi/cairn/{}/images", env!("CARGO_PKG_VERSION")))
        );
    }
}
