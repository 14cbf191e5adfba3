//! The unpacker's I/O shell: carries out [`Action`]s in a private staging
//! directory with fd-relative calls that never follow a symlink, then
//! moves the finished tree into place.

use std::ffi::OsStr;
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Read};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, RenameFlags, Timestamps};
use rustix::io::Errno;

use super::plan::{Action, DeviceKind, EntryError, EntryHeader, EntryKind, Planner, RootPath};
use crate::digest::{self, Digest, Expected, HashingReader, VerifyError};
use crate::layout::{Image, Layout, LayoutError, descriptor_digest};
use crate::media::{self, Compression, UnknownMediaType};

/// What an unpack may do beyond plain files, directories and links.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnpackOptions {
    /// Create character and block device nodes (refused otherwise).
    pub allow_devices: bool,
    /// Apply the entries' numeric uid/gid (needs root).
    pub preserve_owners: bool,
    /// Apply `SCHILY.xattr.*` extended attributes to files and directories.
    pub xattrs: bool,
}

impl UnpackOptions {
    /// No devices, no xattrs; owners kept when running as root.
    pub fn for_current_process() -> Self {
        Self {
            allow_devices: false,
            preserve_owners: rustix::process::geteuid().is_root(),
            xattrs: false,
        }
    }
}

/// Why unpacking failed. Nothing is left at the target when it does.
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error("refusing tar entry {path:?}")]
    Refused {
        path: String,
        #[source]
        source: EntryError,
    },
    #[error("refusing tar entry {path}: {at} is a symlink, and writes never follow symlinks")]
    SymlinkInPath { path: RootPath, at: RootPath },
    #[error("refusing tar entry {path}: {at} is not a directory")]
    NotADirectory { path: RootPath, at: RootPath },
    #[error("refusing hard link {path}: its target {target} {reason}")]
    HardLinkTarget {
        path: RootPath,
        target: RootPath,
        reason: &'static str,
    },
    #[error("refusing tar entry {path}: owner {uid}:{gid} does not fit in 32 bits")]
    OwnerOutOfRange { path: RootPath, uid: u64, gid: u64 },
    #[error("{op} {path}")]
    Io {
        op: &'static str,
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("reading the layer's tar stream")]
    Tar {
        #[source]
        source: io::Error,
    },
    #[error("layer blob does not match its descriptor")]
    BlobMismatch {
        #[source]
        source: VerifyError,
    },
    #[error("uncompressed layer does not match its rootfs diff_id")]
    DiffIdMismatch {
        #[source]
        source: VerifyError,
    },
    #[error("cannot stage an unpack next to {target}")]
    Stage {
        target: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot move the unpacked root into place at {target}")]
    Commit {
        target: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("reading layer {digest} from the layout")]
    Layout {
        digest: String,
        #[source]
        source: LayoutError,
    },
    #[error(transparent)]
    MediaType(#[from] UnknownMediaType),
}

fn io_at<'p>(op: &'static str, path: &'p RootPath) -> impl FnOnce(Errno) -> UnpackError + 'p {
    move |e| UnpackError::Io {
        op,
        path: path.to_string(),
        source: e.into(),
    }
}

/// One layer to apply.
#[derive(Debug)]
pub struct LayerInput<R> {
    /// The blob as stored (compressed or not).
    pub blob: R,
    pub compression: Compression,
    /// Digest and size of the blob, from its descriptor.
    pub blob_expected: Option<Expected>,
    /// The uncompressed stream's digest, from the config's rootfs.diff_ids.
    pub diff_id: Option<Digest>,
}

/// What applying one layer did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerReport {
    pub entries: u64,
    pub blob_digest: Digest,
    pub blob_size: u64,
    pub diff_id: Digest,
    pub uncompressed_size: u64,
}

#[derive(Debug, Clone)]
struct Meta {
    mode: u32,
    uid: u64,
    gid: u64,
    mtime: i64,
    xattrs: Vec<(String, Vec<u8>)>,
}

/// A root being assembled in a temporary directory beside its target.
/// Dropping it without [`StagedRoot::commit`] removes everything.
#[derive(Debug)]
pub struct StagedRoot {
    target: PathBuf,
    dir: tempfile::TempDir,
    root: OwnedFd,
    opts: UnpackOptions,
}

const DIR_FLAGS: OFlags = OFlags::PATH
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);
const READ_DIR_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);

impl StagedRoot {
    /// Starts a staging directory next to `target`. If `target` exists,
    /// its tree is the lower content: it is cloned into the stage with
    /// hard links (never modified in place, because every entry replaces
    /// files by unlinking, never by writing into them).
    pub fn begin(target: &Path, opts: UnpackOptions) -> Result<Self, UnpackError> {
        Self::stage(target, target, opts)
    }

    /// Starts a staging directory next to `target` whose lower content is
    /// `lower`'s tree (cloned with hard links, as [`StagedRoot::begin`]
    /// clones the target). A content store uses this to build one layer's
    /// root on top of the root below it without touching either.
    pub fn begin_from(
        target: &Path,
        lower: &Path,
        opts: UnpackOptions,
    ) -> Result<Self, UnpackError> {
        Self::stage(target, lower, opts)
    }

    fn stage(target: &Path, lower: &Path, opts: UnpackOptions) -> Result<Self, UnpackError> {
        let stage_err = |source| UnpackError::Stage {
            target: target.to_owned(),
            source,
        };
        let parent = match target.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
            _ => PathBuf::from("."),
        };
        let name = target
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        fs::create_dir_all(&parent).map_err(stage_err)?;
        let dir = tempfile::Builder::new()
            .prefix(&format!(".{name}.unpack-"))
            .tempdir_in(&parent)
            .map_err(stage_err)?;
        match fs::symlink_metadata(lower) {
            Ok(meta) if meta.is_dir() => {
                clone_tree(lower, dir.path(), opts.preserve_owners).map_err(stage_err)?;
                copy_meta(&meta, dir.path(), opts.preserve_owners).map_err(stage_err)?;
            }
            Ok(_) => {
                return Err(stage_err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    "the target exists and is not a directory",
                )));
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755))
                    .map_err(stage_err)?;
            }
            Err(e) => return Err(stage_err(e)),
        }
        let root = rustix::fs::open(dir.path(), DIR_FLAGS, Mode::empty())
            .map_err(|e| stage_err(e.into()))?;
        Ok(Self {
            target: target.to_owned(),
            dir,
            root,
            opts,
        })
    }

    /// Where the root is being assembled.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Applies one layer over what is staged so far, verifying the blob's
    /// digest and size and the uncompressed diff_id once the stream ends.
    pub fn apply<R: Read>(&mut self, layer: LayerInput<R>) -> Result<LayerReport, UnpackError> {
        let mut blob = match layer.blob_expected.as_ref().and_then(|e| e.size) {
            Some(limit) => HashingReader::with_limit(layer.blob, limit),
            None => HashingReader::new(layer.blob),
        };
        let mut applier = Applier {
            root: &self.root,
            opts: self.opts,
            planner: Planner::new(self.opts.allow_devices),
            dirs: Vec::new(),
        };
        let (diff_id, uncompressed_size, entries) = {
            let decoded: Box<dyn Read + '_> = match layer.compression {
                Compression::None => Box::new(&mut blob),
                Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(&mut blob)),
                Compression::Zstd => Box::new(ZstdFrames::new(&mut blob)),
            };
            let mut tar_stream = HashingReader::new(decoded);
            let entries = applier.apply_tar(super::guard::HeaderGuard::new(&mut tar_stream))?;
            tar_stream
                .drain()
                .map_err(|source| UnpackError::Tar { source })?;
            let (diff_id, size) = tar_stream.finish();
            (diff_id, size, entries)
        };
        blob.drain().map_err(|source| UnpackError::Tar { source })?;
        let (blob_digest, blob_size) = blob.finish();
        if let Some(expected) = &layer.blob_expected {
            digest::check(expected, &blob_digest, blob_size)
                .map_err(|source| UnpackError::BlobMismatch { source })?;
        }
        if let Some(want) = &layer.diff_id {
            let expected = Expected {
                digest: want.clone(),
                size: None,
            };
            digest::check(&expected, &diff_id, uncompressed_size)
                .map_err(|source| UnpackError::DiffIdMismatch { source })?;
        }
        applier.finish_dirs()?;
        Ok(LayerReport {
            entries,
            blob_digest,
            blob_size,
            diff_id,
            uncompressed_size,
        })
    }

    /// Moves the staged root to the target: atomically swapped with an
    /// existing target where the file system allows, else renamed in.
    pub fn commit(self) -> Result<PathBuf, UnpackError> {
        let commit_err = |source| UnpackError::Commit {
            target: self.target.clone(),
            source,
        };
        drop(self.root);
        let staged = self.dir.keep();
        let result = if fs::symlink_metadata(&self.target).is_ok() {
            match rustix::fs::renameat_with(
                rustix::fs::CWD,
                &staged,
                rustix::fs::CWD,
                &self.target,
                RenameFlags::EXCHANGE,
            ) {
                Ok(()) => Ok(()),
                Err(_) => {
                    // No RENAME_EXCHANGE on this file system: a short window
                    // with no target beats a half-written one.
                    let old = staged.with_extension("old");
                    fs::rename(&self.target, &old)
                        .and_then(|()| fs::rename(&staged, &self.target))
                        .and_then(|()| fs::rename(&old, &staged))
                }
            }
        } else {
            fs::rename(&staged, &self.target)
        };
        // `staged` now holds the old tree (or, on failure, the new one).
        let cleanup = fs::remove_dir_all(&staged);
        result.map_err(commit_err)?;
        if let Err(e) = cleanup
            && e.kind() != io::ErrorKind::NotFound
        {
            return Err(commit_err(e));
        }
        Ok(self.target)
    }
}

/// Unpacks every layer of `image` (verified against its manifest and
/// config) into `target`, replacing it as a whole on success.
pub fn unpack_image(
    layout: &Layout,
    image: &Image,
    target: &Path,
    opts: UnpackOptions,
) -> Result<Vec<LayerReport>, UnpackError> {
    let layout_err = |digest: &str| {
        let digest = digest.to_owned();
        move |source| UnpackError::Layout { digest, source }
    };
    let diff_ids = image
        .diff_ids()
        .map_err(layout_err(image.manifest.config().digest().as_ref()))?;
    let mut staged = StagedRoot::begin(target, opts)?;
    let mut reports = Vec::new();
    for (layer, diff_id) in image.manifest.layers().iter().zip(diff_ids) {
        let name = layer.digest().to_string();
        let compression = media::layer_compression(layer.media_type())?;
        let digest = descriptor_digest(layer).map_err(layout_err(&name))?;
        let path = layout.blob_path(&digest);
        let blob = File::open(&path).map_err(|source| UnpackError::Layout {
            digest: name.clone(),
            source: LayoutError::Io { path, source },
        })?;
        reports.push(staged.apply(LayerInput {
            blob: BufReader::new(blob),
            compression,
            blob_expected: Some(Expected {
                digest,
                size: Some(layer.size()),
            }),
            diff_id: Some(diff_id),
        })?);
    }
    staged.commit()?;
    Ok(reports)
}

struct Applier<'a> {
    root: &'a OwnedFd,
    opts: UnpackOptions,
    planner: Planner,
    dirs: Vec<(RootPath, Meta)>,
}

fn kind_of(t: tar::EntryType) -> Option<EntryKind> {
    use tar::EntryType as T;
    Some(match t {
        T::Regular | T::Continuous | T::GNUSparse => EntryKind::Regular,
        T::Directory => EntryKind::Directory,
        T::Symlink => EntryKind::Symlink,
        T::Link => EntryKind::HardLink,
        T::Char => EntryKind::CharDevice,
        T::Block => EntryKind::BlockDevice,
        T::Fifo => EntryKind::Fifo,
        // Global PAX headers carry defaults, not files.
        T::XGlobalHeader => return None,
        other => EntryKind::Other(char::from(other.as_byte())),
    })
}

fn tar_err(source: io::Error) -> UnpackError {
    UnpackError::Tar { source }
}

impl Applier<'_> {
    fn apply_tar<R: Read>(&mut self, stream: R) -> Result<u64, UnpackError> {
        let mut archive = tar::Archive::new(stream);
        let mut count = 0u64;
        for entry in archive.entries().map_err(tar_err)? {
            let mut entry = entry.map_err(tar_err)?;
            let Some(kind) = kind_of(entry.header().entry_type()) else {
                continue;
            };
            count += 1;
            let path_bytes = entry.path_bytes().into_owned();
            let link = entry.link_name_bytes().map(|l| l.into_owned());
            let header = entry.header();
            let device = match (header.device_major(), header.device_minor()) {
                (Ok(Some(ma)), Ok(Some(mi))) => Some((ma, mi)),
                _ => None,
            };
            let mut meta = Meta {
                mode: header.mode().map_err(tar_err)? & 0o7777,
                uid: header.uid().map_err(tar_err)?,
                gid: header.gid().map_err(tar_err)?,
                mtime: i64::try_from(header.mtime().map_err(tar_err)?).unwrap_or(i64::MAX),
                xattrs: Vec::new(),
            };
            if let Some(pax) = entry.pax_extensions().map_err(tar_err)? {
                for ext in pax {
                    let ext = ext.map_err(tar_err)?;
                    let Ok(key) = ext.key() else { continue };
                    let value = ext.value().ok().map(str::trim);
                    match key {
                        "uid" => meta.uid = value.and_then(|v| v.parse().ok()).unwrap_or(meta.uid),
                        "gid" => meta.gid = value.and_then(|v| v.parse().ok()).unwrap_or(meta.gid),
                        "mtime" => {
                            meta.mtime = value
                                .and_then(|v| v.split('.').next())
                                .and_then(|v| v.parse().ok())
                                .unwrap_or(meta.mtime);
                        }
                        k => {
                            if let Some(name) = k.strip_prefix("SCHILY.xattr.") {
                                meta.xattrs
                                    .push((name.to_owned(), ext.value_bytes().to_vec()));
                            }
                        }
                    }
                }
            }
            let action = self
                .planner
                .plan(&EntryHeader {
                    path: &path_bytes,
                    link: link.as_deref(),
                    kind,
                    device,
                })
                .map_err(|source| UnpackError::Refused {
                    path: String::from_utf8_lossy(&path_bytes).into_owned(),
                    source,
                })?;
            self.execute(action, meta, &mut entry)?;
        }
        Ok(count)
    }

    /// Opens directory `dir` component by component, refusing symlinks;
    /// creates missing ones when `create`. `None` if missing and not created.
    fn open_dir(
        &self,
        dir: &RootPath,
        create: bool,
        entry: &RootPath,
    ) -> Result<Option<OwnedFd>, UnpackError> {
        let mut cur =
            rustix::io::dup(self.root).map_err(io_at("duplicating the root fd", entry))?;
        let mut walked = RootPath::default();
        for comp in dir.components() {
            walked = walked.join(comp);
            let next = match rustix::fs::openat(&cur, comp.as_os_str(), DIR_FLAGS, Mode::empty()) {
                Ok(fd) => fd,
                Err(Errno::NOENT) if create => {
                    match rustix::fs::mkdirat(&cur, comp.as_os_str(), Mode::from_raw_mode(0o755)) {
                        Ok(()) | Err(Errno::EXIST) => {}
                        Err(e) => return Err(io_at("creating directory", &walked)(e)),
                    }
                    rustix::fs::openat(&cur, comp.as_os_str(), DIR_FLAGS, Mode::empty())
                        .map_err(io_at("opening directory", &walked))?
                }
                Err(Errno::NOENT) => return Ok(None),
                Err(Errno::LOOP | Errno::NOTDIR) => {
                    let st = rustix::fs::statat(&cur, comp.as_os_str(), AtFlags::SYMLINK_NOFOLLOW)
                        .map_err(io_at("inspecting", &walked))?;
                    return Err(
                        if FileType::from_raw_mode(st.st_mode) == FileType::Symlink {
                            UnpackError::SymlinkInPath {
                                path: entry.clone(),
                                at: walked,
                            }
                        } else {
                            UnpackError::NotADirectory {
                                path: entry.clone(),
                                at: walked,
                            }
                        },
                    );
                }
                Err(e) => return Err(io_at("opening directory", &walked)(e)),
            };
            cur = next;
        }
        Ok(Some(cur))
    }

    fn parent_of<'p>(&self, path: &'p RootPath) -> Result<(OwnedFd, &'p OsStr), UnpackError> {
        let Some((parent, name)) = path.split_last() else {
            return Err(UnpackError::Refused {
                path: path.to_string(),
                source: EntryError::ReplacesRoot {
                    kind: "non-directory",
                },
            });
        };
        let fd = self
            .open_dir(&parent, true, path)?
            .ok_or_else(|| UnpackError::NotADirectory {
                path: path.clone(),
                at: parent.clone(),
            })?;
        Ok((fd, name))
    }

    fn file_type_at(dir: &OwnedFd, name: &OsStr) -> Result<Option<FileType>, Errno> {
        match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => Ok(Some(FileType::from_raw_mode(st.st_mode))),
            Err(Errno::NOENT) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Removes whatever is at `name`, keeping a directory when `keep_dir`.
    fn clear(
        &self,
        dir: &OwnedFd,
        name: &OsStr,
        keep_dir: bool,
        path: &RootPath,
    ) -> Result<(), UnpackError> {
        match Self::file_type_at(dir, name).map_err(io_at("inspecting", path))? {
            None => Ok(()),
            Some(FileType::Directory) if keep_dir => Ok(()),
            Some(FileType::Directory) => remove_tree(dir, name).map_err(io_at("removing", path)),
            Some(_) => {
                rustix::fs::unlinkat(dir, name, AtFlags::empty()).map_err(io_at("removing", path))
            }
        }
    }

    fn execute<R: Read>(
        &mut self,
        action: Action,
        meta: Meta,
        data: &mut R,
    ) -> Result<(), UnpackError> {
        match action {
            Action::Skip => Ok(()),
            Action::Dir { path } => {
                if let Some((parent_fd, name)) = self.split_existing(&path)? {
                    self.clear(&parent_fd, name, true, &path)?;
                    match rustix::fs::mkdirat(&parent_fd, name, Mode::from_raw_mode(0o755)) {
                        Ok(()) | Err(Errno::EXIST) => {}
                        Err(e) => return Err(io_at("creating directory", &path)(e)),
                    }
                }
                self.dirs.push((path, meta));
                Ok(())
            }
            Action::File { path } => {
                let (dir, name) = self.parent_of(&path)?;
                self.clear(&dir, name, false, &path)?;
                let fd = rustix::fs::openat(
                    &dir,
                    name,
                    OFlags::WRONLY
                        | OFlags::CREATE
                        | OFlags::EXCL
                        | OFlags::NOFOLLOW
                        | OFlags::CLOEXEC,
                    Mode::from_raw_mode(0o600),
                )
                .map_err(io_at("creating file", &path))?;
                let mut file = File::from(fd);
                io::copy(data, &mut file).map_err(tar_err)?;
                self.apply_fd_meta(&file, &meta, &path)
            }
            Action::Symlink { path, target } => {
                let (dir, name) = self.parent_of(&path)?;
                self.clear(&dir, name, false, &path)?;
                rustix::fs::symlinkat(OsStr::from_bytes(&target), &dir, name)
                    .map_err(io_at("creating symlink", &path))?;
                self.apply_at_meta(&dir, name, &meta, &path, false)
            }
            Action::HardLink { path, target } => {
                let missing = |reason| UnpackError::HardLinkTarget {
                    path: path.clone(),
                    target: target.clone(),
                    reason,
                };
                let Some((tparent, tname)) = target.split_last() else {
                    return Err(missing("is the root"));
                };
                let tdir = self
                    .open_dir(&tparent, false, &path)?
                    .ok_or_else(|| missing("does not exist"))?;
                match Self::file_type_at(&tdir, tname).map_err(io_at("inspecting", &target))? {
                    None => return Err(missing("does not exist")),
                    Some(FileType::Directory) => return Err(missing("is a directory")),
                    Some(_) => {}
                }
                let (dir, name) = self.parent_of(&path)?;
                self.clear(&dir, name, false, &path)?;
                rustix::fs::linkat(&tdir, tname, &dir, name, AtFlags::empty())
                    .map_err(io_at("creating hard link", &path))
            }
            Action::Device {
                path,
                kind,
                major,
                minor,
            } => {
                let file_type = match kind {
                    DeviceKind::Char => FileType::CharacterDevice,
                    DeviceKind::Block => FileType::BlockDevice,
                };
                self.make_node(&path, file_type, rustix::fs::makedev(major, minor), &meta)
            }
            Action::Fifo { path } => self.make_node(&path, FileType::Fifo, 0, &meta),
            Action::Whiteout { path } => {
                let Some((parent, name)) = path.split_last() else {
                    return Ok(());
                };
                let Some(dir) = self.open_dir(&parent, false, &path)? else {
                    return Ok(());
                };
                if self.planner.wrote(&path) {
                    // This layer's own content stays; only what is beneath
                    // it from lower layers goes.
                    if Self::file_type_at(&dir, name).map_err(io_at("inspecting", &path))?
                        == Some(FileType::Directory)
                    {
                        self.prune_lower(&path)?;
                    }
                    Ok(())
                } else {
                    self.clear(&dir, name, false, &path)
                }
            }
            Action::Opaque { dir } => self.prune_lower(&dir),
        }
    }

    /// For a directory entry: the parent fd and name, or `None` for the root.
    fn split_existing<'p>(
        &self,
        path: &'p RootPath,
    ) -> Result<Option<(OwnedFd, &'p OsStr)>, UnpackError> {
        if path.is_root() {
            return Ok(None);
        }
        self.parent_of(path).map(Some)
    }

    fn make_node(
        &self,
        path: &RootPath,
        ft: FileType,
        dev: u64,
        meta: &Meta,
    ) -> Result<(), UnpackError> {
        let (dir, name) = self.parent_of(path)?;
        self.clear(&dir, name, false, path)?;
        rustix::fs::mknodat(&dir, name, ft, Mode::from_raw_mode(0o600), dev)
            .map_err(io_at("creating node", path))?;
        self.apply_at_meta(&dir, name, meta, path, true)
    }

    fn owner(
        &self,
        meta: &Meta,
        path: &RootPath,
    ) -> Result<Option<(rustix::fs::Uid, rustix::fs::Gid)>, UnpackError> {
        if !self.opts.preserve_owners {
            return Ok(None);
        }
        match (u32::try_from(meta.uid), u32::try_from(meta.gid)) {
            (Ok(u), Ok(g)) => Ok(Some((
                rustix::fs::Uid::from_raw(u),
                rustix::fs::Gid::from_raw(g),
            ))),
            _ => Err(UnpackError::OwnerOutOfRange {
                path: path.clone(),
                uid: meta.uid,
                gid: meta.gid,
            }),
        }
    }

    fn times(meta: &Meta) -> Timestamps {
        let t = rustix::fs::Timespec {
            tv_sec: meta.mtime,
            tv_nsec: 0,
        };
        Timestamps {
            last_access: t,
            last_modification: t,
        }
    }

    /// Owner, then mode (chown clears set-id bits), xattrs, then times.
    fn apply_fd_meta(
        &self,
        fd: &impl AsFd,
        meta: &Meta,
        path: &RootPath,
    ) -> Result<(), UnpackError> {
        if let Some((u, g)) = self.owner(meta, path)? {
            rustix::fs::fchown(fd, Some(u), Some(g)).map_err(io_at("setting owner of", path))?;
        }
        rustix::fs::fchmod(fd, Mode::from_raw_mode(meta.mode))
            .map_err(io_at("setting mode of", path))?;
        if self.opts.xattrs {
            for (name, value) in &meta.xattrs {
                rustix::fs::fsetxattr(fd, name.as_str(), value, rustix::fs::XattrFlags::empty())
                    .map_err(io_at("setting xattr on", path))?;
            }
        }
        rustix::fs::futimens(fd, &Self::times(meta)).map_err(io_at("setting times of", path))
    }

    fn apply_at_meta(
        &self,
        dir: &OwnedFd,
        name: &OsStr,
        meta: &Meta,
        path: &RootPath,
        chmod: bool,
    ) -> Result<(), UnpackError> {
        if let Some((u, g)) = self.owner(meta, path)? {
            rustix::fs::chownat(dir, name, Some(u), Some(g), AtFlags::SYMLINK_NOFOLLOW)
                .map_err(io_at("setting owner of", path))?;
        }
        if chmod {
            // Only for nodes just created by mknodat, never symlinks.
            rustix::fs::chmodat(dir, name, Mode::from_raw_mode(meta.mode), AtFlags::empty())
                .map_err(io_at("setting mode of", path))?;
        }
        rustix::fs::utimensat(dir, name, &Self::times(meta), AtFlags::SYMLINK_NOFOLLOW)
            .map_err(io_at("setting times of", path))
    }

    /// Removes everything beneath `dir` that this layer did not write.
    fn prune_lower(&self, dir: &RootPath) -> Result<(), UnpackError> {
        let Some(path_fd) = self.open_dir(dir, false, dir)? else {
            return Ok(());
        };
        let fd = rustix::fs::openat(&path_fd, ".", READ_DIR_FLAGS, Mode::empty())
            .map_err(io_at("reading directory", dir))?;
        let mut names = Vec::new();
        for entry in rustix::fs::Dir::read_from(&fd).map_err(io_at("reading directory", dir))? {
            let entry = entry.map_err(io_at("reading directory", dir))?;
            let name = OsStr::from_bytes(entry.file_name().to_bytes()).to_owned();
            if name != "." && name != ".." {
                names.push(name);
            }
        }
        for name in names {
            let child = dir.join(&name);
            if self.planner.wrote(&child) {
                if Self::file_type_at(&path_fd, &name).map_err(io_at("inspecting", &child))?
                    == Some(FileType::Directory)
                {
                    self.prune_lower(&child)?;
                }
            } else {
                self.clear(&path_fd, &name, false, &child)?;
            }
        }
        Ok(())
    }

    /// Applies directory metadata deepest first, after all their contents
    /// are written (writing a child would change a directory's mtime, and
    /// a read-only mode would stop the writes).
    fn finish_dirs(&mut self) -> Result<(), UnpackError> {
        let mut dirs = std::mem::take(&mut self.dirs);
        dirs.sort_by_key(|d| std::cmp::Reverse(d.0.depth()));
        for (path, meta) in dirs {
            let Some(path_fd) = self.open_dir(&path, false, &path)? else {
                continue; // removed by a later whiteout
            };
            let fd = rustix::fs::openat(&path_fd, ".", READ_DIR_FLAGS, Mode::empty())
                .map_err(io_at("opening directory", &path))?;
            self.apply_fd_meta(&fd, &meta, &path)?;
        }
        Ok(())
    }
}

/// Removes a directory tree under `parent` without following symlinks.
fn remove_tree(parent: &OwnedFd, name: &OsStr) -> Result<(), Errno> {
    let fd = rustix::fs::openat(parent, name, READ_DIR_FLAGS, Mode::empty())?;
    // Our own staged copy: make sure we may delete inside it.
    let _ = rustix::fs::fchmod(&fd, Mode::from_raw_mode(0o700));
    let mut children = Vec::new();
    for entry in rustix::fs::Dir::read_from(&fd)? {
        let entry = entry?;
        let child = OsStr::from_bytes(entry.file_name().to_bytes()).to_owned();
        if child != "." && child != ".." {
            children.push(child);
        }
    }
    for child in children {
        let st = rustix::fs::statat(&fd, &child, AtFlags::SYMLINK_NOFOLLOW)?;
        if FileType::from_raw_mode(st.st_mode) == FileType::Directory {
            remove_tree(&fd, &child)?;
        } else {
            rustix::fs::unlinkat(&fd, &child, AtFlags::empty())?;
        }
    }
    rustix::fs::unlinkat(parent, name, AtFlags::REMOVEDIR)
}

/// Clones `src` into `dst` with hard links for everything but directories.
fn clone_tree(src: &Path, dst: &Path, owners: bool) -> io::Result<()> {
    for entry in fs::read_dir(src)? {
        let entry = entry?;
        let from = entry.path();
        let to = dst.join(entry.file_name());
        let meta = fs::symlink_metadata(&from)?;
        if meta.is_dir() {
            fs::create_dir(&to)?;
            clone_tree(&from, &to, owners)?;
            copy_meta(&meta, &to, owners)?;
        } else {
            // Links the entry itself; std's hard_link never follows symlinks on Linux.
            fs::hard_link(&from, &to)?;
        }
    }
    Ok(())
}

fn copy_meta(meta: &fs::Metadata, to: &Path, owners: bool) -> io::Result<()> {
    if owners {
        std::os::unix::fs::lchown(to, Some(meta.uid()), Some(meta.gid()))?;
    }
    fs::set_permissions(to, fs::Permissions::from_mode(meta.mode() & 0o7777))?;
    let t = rustix::fs::Timespec {
        tv_sec: meta.mtime(),
        tv_nsec: meta.mtime_nsec(),
    };
    rustix::fs::utimensat(
        rustix::fs::CWD,
        to,
        &Timestamps {
            last_access: t,
            last_modification: t,
        },
        AtFlags::SYMLINK_NOFOLLOW,
    )?;
    Ok(())
}

/// Decodes concatenated zstd frames, skipping skippable ones (zstd:chunked
/// layers carry their table of contents in those). The uncompressed
/// stream's digest is checked against the diff_id, so the frames' own
/// checksums add nothing.
struct ZstdFrames<R: Read> {
    input: BufReader<R>,
    decoder: ruzstd::decoding::FrameDecoder,
    in_frame: bool,
}

impl<R: Read> ZstdFrames<R> {
    fn new(reader: R) -> Self {
        Self {
            input: BufReader::new(reader),
            decoder: ruzstd::decoding::FrameDecoder::new(),
            in_frame: false,
        }
    }
}

fn zstd_err(e: impl std::error::Error + Send + Sync + 'static) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

impl<R: Read> Read for ZstdFrames<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        use ruzstd::decoding::BlockDecodingStrategy;
        use ruzstd::decoding::errors::{FrameDecoderError, ReadFrameHeaderError};
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            if self.in_frame {
                while self.decoder.can_collect() < buf.len() && !self.decoder.is_finished() {
                    let wanted = buf.len().saturating_sub(self.decoder.can_collect());
                    self.decoder
                        .decode_blocks(&mut self.input, BlockDecodingStrategy::UptoBytes(wanted))
                        .map_err(zstd_err)?;
                }
                let n = self.decoder.read(buf)?;
                if n > 0 {
                    return Ok(n);
                }
                if self.decoder.is_finished() && self.decoder.can_collect() == 0 {
                    self.in_frame = false;
                }
                continue;
            }
            if self.input.fill_buf()?.is_empty() {
                return Ok(0);
            }
            match self.decoder.init(&mut self.input) {
                Ok(()) => self.in_frame = true,
                Err(FrameDecoderError::ReadFrameHeaderError(ReadFrameHeaderError::SkipFrame {
                    length,
                    ..
                })) => {
                    let want = u64::from(length);
                    let skipped = io::copy(&mut (&mut self.input).take(want), &mut io::sink())?;
                    if skipped != want {
                        return Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "truncated zstd skippable frame",
                        ));
                    }
                }
                Err(e) => return Err(zstd_err(e)),
            }
        }
    }
}
