//! OCI layouts packed as a plain tar (skopeo's `oci-archive:FILE:REF`).
//!
//! skopeo writes the layout directory as an uncompressed tar with the
//! layout's files at the top (`oci-layout`, `index.json`, `blobs/sha256/…`).
//! Writing here is reproducible (sorted, root-owned, mtime 0). Reading
//! accepts nothing but those files and directories, extracts them into a
//! staging directory beside the destination, verifies every image in
//! the layout, and only then renames it into place.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::digest::Digest;
use crate::layout::{BLOBS_DIR, INDEX_FILE, Layout, LayoutError, OCI_LAYOUT_FILE};
use crate::reference::RefName;
use crate::unpack::plan::{EntryError, normalize};

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("{path}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("reading the archive's tar stream")]
    Tar {
        #[source]
        source: io::Error,
    },
    #[error("archive entry {path:?} is not part of an OCI layout")]
    UnexpectedEntry { path: String },
    #[error("archive entry {path:?} has an unusable path")]
    BadPath {
        path: String,
        #[source]
        source: EntryError,
    },
    #[error("archive holds {path} twice")]
    Duplicate { path: String },
    #[error("the archive's layout is invalid")]
    Layout(#[from] LayoutError),
    #[error("{0} already exists; refusing to overwrite it")]
    Exists(PathBuf),
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> ArchiveError + '_ {
    move |source| ArchiveError::Io {
        path: path.to_owned(),
        source,
    }
}

fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_size(size);
    h
}

/// Writes `layout` as an oci-archive tar to `out`.
pub fn write_archive<W: Write>(layout: &Layout, out: W) -> Result<W, ArchiveError> {
    let root = layout.root();
    let mut tar = tar::Builder::new(out);
    let tar_err = |source| ArchiveError::Tar { source };
    for dir in ["blobs/", "blobs/sha256/"] {
        let mut h = header(tar::EntryType::Directory, 0o755, 0);
        tar.append_data(&mut h, dir, io::empty()).map_err(tar_err)?;
    }
    let blobs = root.join(BLOBS_DIR);
    let mut names: Vec<String> = fs::read_dir(&blobs)
        .map_err(io_err(&blobs))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| Digest::parse(&format!("sha256:{n}")).is_ok())
        .collect();
    names.sort();
    let mut files: Vec<(String, PathBuf)> = names
        .into_iter()
        .map(|n| (format!("{BLOBS_DIR}/{n}"), blobs.join(n)))
        .collect();
    files.push((INDEX_FILE.to_owned(), root.join(INDEX_FILE)));
    files.push((OCI_LAYOUT_FILE.to_owned(), root.join(OCI_LAYOUT_FILE)));
    for (name, path) in files {
        let file = File::open(&path).map_err(io_err(&path))?;
        let len = file.metadata().map_err(io_err(&path))?.len();
        let mut h = header(tar::EntryType::Regular, 0o644, len);
        tar.append_data(&mut h, &name, file).map_err(tar_err)?;
    }
    tar.into_inner().map_err(tar_err)
}

/// Writes `layout` as an oci-archive at `path` (replaced atomically).
pub fn write_archive_file(layout: &Layout, path: &Path) -> Result<(), ArchiveError> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let tmp = tempfile::Builder::new()
        .prefix(".oci-archive-")
        .tempfile_in(dir)
        .map_err(io_err(dir))?;
    let mut out = write_archive(layout, io::BufWriter::new(tmp))?;
    out.flush().map_err(io_err(path))?;
    let tmp = out.into_inner().map_err(|e| ArchiveError::Io {
        path: path.to_owned(),
        source: e.into_error(),
    })?;
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(0o644))
        .map_err(io_err(path))?;
    tmp.as_file().sync_all().map_err(io_err(path))?;
    tmp.persist(path).map_err(|e| ArchiveError::Io {
        path: path.to_owned(),
        source: e.error,
    })?;
    Ok(())
}

/// Extracts an oci-archive into a new layout at `dest` (which must not
/// exist), verifies every named image, and returns the layout and names.
pub fn read_archive<R: Read>(
    input: R,
    dest: &Path,
) -> Result<(Layout, Vec<RefName>), ArchiveError> {
    if fs::symlink_metadata(dest).is_ok() {
        return Err(ArchiveError::Exists(dest.to_owned()));
    }
    let parent = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let stage = tempfile::Builder::new()
        .prefix(".oci-import-")
        .tempdir_in(parent)
        .map_err(io_err(parent))?;
    let blobs = stage.path().join(BLOBS_DIR);
    fs::create_dir_all(&blobs).map_err(io_err(&blobs))?;
    let mut archive = tar::Archive::new(input);
    let tar_err = |source| ArchiveError::Tar { source };
    for entry in archive.entries().map_err(tar_err)? {
        let mut entry = entry.map_err(tar_err)?;
        let raw = entry.path_bytes().into_owned();
        let shown = String::from_utf8_lossy(&raw).into_owned();
        let path = normalize(&raw).map_err(|source| ArchiveError::BadPath {
            path: shown.clone(),
            source,
        })?;
        let comps: Vec<&str> = path
            .components()
            .iter()
            .map(|c| c.to_str().unwrap_or("\u{fffd}"))
            .collect();
        let kind = entry.header().entry_type();
        let dest_file = match (kind, comps.as_slice()) {
            (tar::EntryType::Directory, [] | ["blobs"] | ["blobs", "sha256"]) => continue,
            (tar::EntryType::Regular, [name @ ("oci-layout" | "index.json")]) => {
                stage.path().join(name)
            }
            (tar::EntryType::Regular, ["blobs", "sha256", hex])
                if Digest::parse(&format!("sha256:{hex}")).is_ok() =>
            {
                blobs.join(hex)
            }
            _ => return Err(ArchiveError::UnexpectedEntry { path: shown }),
        };
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&dest_file)
            .map_err(|e| {
                if e.kind() == io::ErrorKind::AlreadyExists {
                    ArchiveError::Duplicate {
                        path: shown.clone(),
                    }
                } else {
                    io_err(&dest_file)(e)
                }
            })?;
        io::copy(&mut entry, &mut file).map_err(tar_err)?;
        file.sync_all().map_err(io_err(&dest_file))?;
    }
    let staged = Layout::open(stage.path())?;
    let names = staged.verify()?;
    let kept = stage.keep();
    fs::rename(&kept, dest).map_err(|e| {
        let _ = fs::remove_dir_all(&kept);
        io_err(dest)(e)
    })?;
    Ok((Layout::open(dest)?, names))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::tests::sample_image;

    fn tar_with(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        for (name, data) in entries {
            let mut h = tar::Header::new_gnu();
            h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
            h.set_entry_type(tar::EntryType::Regular);
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            out.extend_from_slice(h.as_bytes());
            out.extend_from_slice(data);
            out.resize(out.len().div_ceil(512) * 512, 0);
        }
        out.extend_from_slice(&[0; 1024]);
        out
    }

    #[test]
    fn an_archive_round_trips_every_image() {
        let tmp = tempfile::tempdir().unwrap();
        let layout = Layout::create(&tmp.path().join("l")).unwrap();
        sample_image(&layout, "a:1", b"aaa");
        sample_image(&layout, "b:2", b"bbb");
        let bytes = write_archive(&layout, Vec::new()).unwrap();
        let (read, names) = read_archive(&bytes[..], &tmp.path().join("imported")).unwrap();
        let names: Vec<&str> = names.iter().map(RefName::as_str).collect();
        assert_eq!(names, vec!["a:1", "b:2"]);
        assert_eq!(read.index().unwrap(), layout.index().unwrap());
        // Reproducible: the same layout gives the same bytes.
        assert_eq!(bytes, write_archive(&layout, Vec::new()).unwrap());
    }

    #[test]
    fn an_archive_with_a_foreign_file_is_refused_and_leaves_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let bytes = tar_with(&[
            ("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#),
            ("../../etc/cron.d/x", b"* * * * * root sh"),
        ]);
        let dest = tmp.path().join("imported");
        assert!(matches!(
            read_archive(&bytes[..], &dest),
            Err(ArchiveError::BadPath { .. })
        ));
        let bytes = tar_with(&[("blobs/sha256/notahash", b"x")]);
        assert!(matches!(
            read_archive(&bytes[..], &dest),
            Err(ArchiveError::UnexpectedEntry { .. })
        ));
        assert_eq!(fs::read_dir(tmp.path()).unwrap().count(), 0);
    }

    #[test]
    fn an_archive_with_a_corrupted_blob_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let layout = Layout::create(&tmp.path().join("l")).unwrap();
        sample_image(&layout, "a:1", b"aaa");
        fs::write(layout.blob_path(&Digest::of(b"aaa")), b"aab").unwrap();
        let bytes = write_archive(&layout, Vec::new()).unwrap();
        let dest = tmp.path().join("imported");
        assert!(matches!(
            read_archive(&bytes[..], &dest),
            Err(ArchiveError::Layout(LayoutError::Verify { .. }))
        ));
        assert!(!dest.exists());
    }
}
