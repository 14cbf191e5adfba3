//! The unpacker's decisions, without I/O: what one tar entry asks for, and
//! whether it may have it.
//!
//! [`Planner::plan`] turns an entry header into an [`Action`] on a
//! normalised [`RootPath`] or refuses it with an [`EntryError`]. The shell
//! in `fs.rs` carries actions out with no-follow, fd-relative calls. Two
//! rules live here because they need the layer's history, not the disk:
//! hard links may only point at files this layer already extracted, and
//! an opaque directory or whiteout keeps what this layer itself wrote.

use std::collections::HashSet;
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::os::unix::ffi::OsStrExt;

/// Longest file name component Linux accepts (NAME_MAX).
pub const MAX_NAME: usize = 255;
/// Longest path Linux accepts (PATH_MAX), for entry paths and link targets.
pub const MAX_PATH: usize = 4096;

pub const WHITEOUT_PREFIX: &str = ".wh.";
pub const OPAQUE_MARKER: &str = ".wh..wh..opq";

/// A path inside the root: no empty, `.` or `..` components, no leading
/// slash. The empty path is the root itself.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct RootPath(Vec<OsString>);

impl RootPath {
    pub fn components(&self) -> &[OsString] {
        &self.0
    }

    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }

    /// The parent and the last component; `None` for the root.
    pub fn split_last(&self) -> Option<(RootPath, &OsStr)> {
        let (last, parent) = self.0.split_last()?;
        Some((RootPath(parent.to_vec()), last.as_os_str()))
    }

    pub fn join(&self, name: &OsStr) -> RootPath {
        let mut v = self.0.clone();
        v.push(name.to_owned());
        RootPath(v)
    }

    /// Every proper ancestor, root first.
    pub fn ancestors(&self) -> impl Iterator<Item = RootPath> + '_ {
        (0..self.0.len()).map(|n| RootPath(self.0.get(..n).unwrap_or_default().to_vec()))
    }

    pub fn depth(&self) -> usize {
        self.0.len()
    }
}

impl fmt::Display for RootPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("/")?;
        for (i, c) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("/")?;
            }
            f.write_str(&c.to_string_lossy())?;
        }
        Ok(())
    }
}

impl fmt::Debug for RootPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Why one tar entry is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EntryError {
    #[error("entry has an empty path")]
    EmptyPath,
    #[error("path contains a NUL byte")]
    NulByte,
    #[error("path is {len} bytes long, more than {MAX_PATH}")]
    PathTooLong { len: usize },
    #[error("a path component is {len} bytes long, more than {MAX_NAME}")]
    NameTooLong { len: usize },
    #[error("path has a `..` component, which could leave the root")]
    DotDot,
    #[error("a {kind} entry would replace the root directory itself")]
    ReplacesRoot { kind: &'static str },
    #[error("device node ({kind}) refused: device nodes are not allowed in this unpack")]
    DeviceNotAllowed { kind: &'static str },
    #[error("whiteout names no file (`{name}`)")]
    InvalidWhiteout { name: String },
    #[error("link has no target")]
    EmptyLinkTarget,
    #[error("link target is {len} bytes long, more than {MAX_PATH}")]
    LinkTargetTooLong { len: usize },
    #[error("link target contains a NUL byte")]
    LinkTargetNul,
    #[error("hard link target is invalid")]
    HardLinkTarget(#[source] Box<EntryError>),
    #[error("hard link points at itself")]
    HardLinkToSelf,
    #[error(
        "hard link points at {target}, which this layer has not extracted (yet) as a non-directory"
    )]
    HardLinkNotExtracted { target: RootPath },
    #[error("device entry has no device numbers")]
    MissingDeviceNumbers,
    #[error("unsupported tar entry type {0:?}")]
    UnsupportedType(char),
}

/// What kind of file an entry is (the tar type flag, interpreted).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    Regular,
    Directory,
    Symlink,
    HardLink,
    CharDevice,
    BlockDevice,
    Fifo,
    /// Any other type flag (sockets cannot be archived; vendor types).
    Other(char),
}

/// The header fields the planner decides on.
#[derive(Debug, Clone, Copy)]
pub struct EntryHeader<'a> {
    pub path: &'a [u8],
    pub link: Option<&'a [u8]>,
    pub kind: EntryKind,
    pub device: Option<(u32, u32)>,
}

/// Device node flavours.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceKind {
    Char,
    Block,
}

/// What the shell should do for one entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Create (or keep) a directory; its metadata is applied at the end.
    Dir {
        path: RootPath,
    },
    /// Replace whatever is at `path` with a regular file holding the data.
    File {
        path: RootPath,
    },
    /// Replace whatever is at `path` with a symlink; the target is stored
    /// verbatim and never followed.
    Symlink {
        path: RootPath,
        target: Vec<u8>,
    },
    /// Replace whatever is at `path` with a hard link to `target`.
    HardLink {
        path: RootPath,
        target: RootPath,
    },
    Device {
        path: RootPath,
        kind: DeviceKind,
        major: u32,
        minor: u32,
    },
    Fifo {
        path: RootPath,
    },
    /// Remove the lower layers' `path` (but nothing this layer wrote).
    Whiteout {
        path: RootPath,
    },
    /// Remove the lower layers' children of `dir` (keep this layer's).
    Opaque {
        dir: RootPath,
    },
    /// AUFS bookkeeping (`.wh..wh.plnk` and the like): not content.
    Skip,
}

/// Normalises a tar path: leading slashes and `.` components are dropped
/// (absolute paths are taken relative to the root, as every runtime does),
/// `..` and over-long names are refused.
pub fn normalize(raw: &[u8]) -> Result<RootPath, EntryError> {
    if raw.is_empty() {
        return Err(EntryError::EmptyPath);
    }
    if raw.contains(&0) {
        return Err(EntryError::NulByte);
    }
    if raw.len() > MAX_PATH {
        return Err(EntryError::PathTooLong { len: raw.len() });
    }
    let mut out = Vec::new();
    for comp in raw.split(|b| *b == b'/') {
        match comp {
            b"" | b"." => {}
            b".." => return Err(EntryError::DotDot),
            name if name.len() > MAX_NAME => {
                return Err(EntryError::NameTooLong { len: name.len() });
            }
            name => out.push(OsStr::from_bytes(name).to_owned()),
        }
    }
    Ok(RootPath(out))
}

fn check_link_target(target: &[u8]) -> Result<(), EntryError> {
    if target.is_empty() {
        return Err(EntryError::EmptyLinkTarget);
    }
    if target.contains(&0) {
        return Err(EntryError::LinkTargetNul);
    }
    if target.len() >= MAX_PATH {
        return Err(EntryError::LinkTargetTooLong { len: target.len() });
    }
    Ok(())
}

/// Classifies `.wh.` names: `Ok(None)` for ordinary names.
fn whiteout(path: &RootPath) -> Result<Option<Action>, EntryError> {
    let Some((parent, last)) = path.split_last() else {
        return Ok(None);
    };
    let Some(rest) = last.as_bytes().strip_prefix(WHITEOUT_PREFIX.as_bytes()) else {
        return Ok(None);
    };
    if last.as_bytes() == OPAQUE_MARKER.as_bytes() {
        return Ok(Some(Action::Opaque { dir: parent }));
    }
    if rest.starts_with(WHITEOUT_PREFIX.as_bytes()) {
        return Ok(Some(Action::Skip));
    }
    match rest {
        b"" | b"." | b".." => Err(EntryError::InvalidWhiteout {
            name: last.to_string_lossy().into_owned(),
        }),
        name => Ok(Some(Action::Whiteout {
            path: parent.join(OsStr::from_bytes(name)),
        })),
    }
}

/// The layer's history, as far as decisions need it.
#[derive(Debug, Default)]
pub struct Planner {
    allow_devices: bool,
    /// Every path this layer wrote, with all its ancestors.
    written: HashSet<RootPath>,
    /// Non-directories this layer extracted (valid hard link targets).
    files: HashSet<RootPath>,
}

impl Planner {
    pub fn new(allow_devices: bool) -> Self {
        Self {
            allow_devices,
            ..Self::default()
        }
    }

    /// Did this layer write `path` (or something beneath it)?
    pub fn wrote(&self, path: &RootPath) -> bool {
        self.written.contains(path)
    }

    fn record(&mut self, path: &RootPath, is_dir: bool) {
        for a in path.ancestors() {
            self.written.insert(a);
        }
        self.written.insert(path.clone());
        if is_dir {
            self.files.remove(path);
        } else {
            self.files.insert(path.clone());
        }
        // Anything previously extracted beneath a replaced path is gone.
        if !is_dir {
            let prefix = path.components();
            self.files
                .retain(|f| !(f.depth() > prefix.len() && f.components().starts_with(prefix)));
        }
    }

    /// Decides what `entry` does, or why it is refused.
    pub fn plan(&mut self, entry: &EntryHeader<'_>) -> Result<Action, EntryError> {
        let path = normalize(entry.path)?;
        if let Some(action) = whiteout(&path)? {
            return Ok(action);
        }
        let action = match entry.kind {
            EntryKind::Directory => {
                self.record(&path, true);
                return Ok(Action::Dir { path });
            }
            EntryKind::Other(c) => return Err(EntryError::UnsupportedType(c)),
            kind if path.is_root() => {
                return Err(EntryError::ReplacesRoot {
                    kind: kind_name(kind),
                });
            }
            EntryKind::Regular => Action::File { path: path.clone() },
            EntryKind::Symlink => {
                let target = entry.link.unwrap_or_default();
                check_link_target(target)?;
                Action::Symlink {
                    path: path.clone(),
                    target: target.to_vec(),
                }
            }
            EntryKind::HardLink => {
                let raw = entry.link.unwrap_or_default();
                check_link_target(raw)?;
                let target = normalize(raw).map_err(|e| EntryError::HardLinkTarget(Box::new(e)))?;
                if target == path {
                    return Err(EntryError::HardLinkToSelf);
                }
                if !self.files.contains(&target) {
                    return Err(EntryError::HardLinkNotExtracted { target });
                }
                Action::HardLink {
                    path: path.clone(),
                    target,
                }
            }
            kind @ (EntryKind::CharDevice | EntryKind::BlockDevice) => {
                if !self.allow_devices {
                    return Err(EntryError::DeviceNotAllowed {
                        kind: kind_name(kind),
                    });
                }
                let (major, minor) = entry.device.ok_or(EntryError::MissingDeviceNumbers)?;
                let kind = if kind == EntryKind::CharDevice {
                    DeviceKind::Char
                } else {
                    DeviceKind::Block
                };
                Action::Device {
                    path: path.clone(),
                    kind,
                    major,
                    minor,
                }
            }
            EntryKind::Fifo => Action::Fifo { path: path.clone() },
        };
        self.record(&path, false);
        Ok(action)
    }
}

/// How errors name an entry kind.
fn kind_name(kind: EntryKind) -> &'static str {
    match kind {
        EntryKind::Regular => "file",
        EntryKind::Directory => "directory",
        EntryKind::Symlink => "symlink",
        EntryKind::HardLink => "hard link",
        EntryKind::CharDevice => "character device",
        EntryKind::BlockDevice => "block device",
        EntryKind::Fifo => "fifo",
        EntryKind::Other(_) => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn p(s: &str) -> RootPath {
        normalize(s.as_bytes()).unwrap()
    }

    fn entry(path: &str, kind: EntryKind) -> EntryHeader<'_> {
        EntryHeader {
            path: path.as_bytes(),
            link: None,
            kind,
            device: None,
        }
    }

    fn link<'a>(path: &'a str, target: &'a str, kind: EntryKind) -> EntryHeader<'a> {
        EntryHeader {
            path: path.as_bytes(),
            link: Some(target.as_bytes()),
            kind,
            device: None,
        }
    }

    #[test]
    fn absolute_and_dotted_paths_are_normalised_into_the_root() {
        assert_eq!(p("/etc/passwd"), p("etc/passwd"));
        assert_eq!(p("./etc//./passwd"), p("etc/passwd"));
        assert_eq!(p("./").to_string(), "/");
        assert!(p("/").is_root());
    }

    #[test]
    fn dot_dot_anywhere_is_refused() {
        for bad in ["..", "../x", "a/../b", "a/..", "/../../etc/passwd"] {
            assert_eq!(normalize(bad.as_bytes()), Err(EntryError::DotDot), "{bad}");
        }
    }

    #[test]
    fn absurdly_long_names_are_refused() {
        let long = "a".repeat(MAX_NAME + 1);
        assert_eq!(
            normalize(long.as_bytes()),
            Err(EntryError::NameTooLong { len: MAX_NAME + 1 })
        );
        let deep = "ab/".repeat(MAX_PATH / 3 + 1);
        assert!(matches!(
            normalize(deep.as_bytes()),
            Err(EntryError::PathTooLong { .. })
        ));
    }

    #[test]
    fn whiteouts_name_the_sibling_they_delete() {
        let mut pl = Planner::new(false);
        assert_eq!(
            pl.plan(&entry("etc/.wh.passwd", EntryKind::Regular)),
            Ok(Action::Whiteout {
                path: p("etc/passwd")
            })
        );
        assert_eq!(
            pl.plan(&entry("var/cache/.wh..wh..opq", EntryKind::Regular)),
            Ok(Action::Opaque {
                dir: p("var/cache")
            })
        );
        assert_eq!(
            pl.plan(&entry(".wh..wh.plnk", EntryKind::Directory)),
            Ok(Action::Skip)
        );
        assert!(matches!(
            pl.plan(&entry("etc/.wh.", EntryKind::Regular)),
            Err(EntryError::InvalidWhiteout { .. })
        ));
        assert!(matches!(
            pl.plan(&entry("etc/.wh...", EntryKind::Regular)),
            Err(EntryError::InvalidWhiteout { .. })
        ));
    }

    #[test]
    fn hard_link_to_a_file_not_yet_extracted_is_refused() {
        let mut pl = Planner::new(false);
        assert!(matches!(
            pl.plan(&link("b", "a", EntryKind::HardLink)),
            Err(EntryError::HardLinkNotExtracted { .. })
        ));
        pl.plan(&entry("a", EntryKind::Regular)).unwrap();
        assert_eq!(
            pl.plan(&link("b", "/a", EntryKind::HardLink)),
            Ok(Action::HardLink {
                path: p("b"),
                target: p("a")
            })
        );
    }

    #[test]
    fn hard_link_out_of_the_root_is_refused() {
        let mut pl = Planner::new(false);
        assert!(matches!(
            pl.plan(&link("b", "../../etc/shadow", EntryKind::HardLink)),
            Err(EntryError::HardLinkTarget(_))
        ));
    }

    #[test]
    fn hard_link_to_a_directory_is_refused() {
        let mut pl = Planner::new(false);
        pl.plan(&entry("d", EntryKind::Directory)).unwrap();
        assert!(matches!(
            pl.plan(&link("l", "d", EntryKind::HardLink)),
            Err(EntryError::HardLinkNotExtracted { .. })
        ));
    }

    #[test]
    fn hard_link_to_a_file_replaced_by_a_directory_is_refused() {
        let mut pl = Planner::new(false);
        pl.plan(&entry("a", EntryKind::Regular)).unwrap();
        pl.plan(&entry("a", EntryKind::Directory)).unwrap();
        assert!(pl.plan(&link("b", "a", EntryKind::HardLink)).is_err());
    }

    #[test]
    fn device_nodes_are_refused_unless_allowed() {
        let dev = EntryHeader {
            path: b"dev/sda",
            link: None,
            kind: EntryKind::BlockDevice,
            device: Some((8, 0)),
        };
        assert!(matches!(
            Planner::new(false).plan(&dev),
            Err(EntryError::DeviceNotAllowed { .. })
        ));
        assert!(matches!(
            Planner::new(true).plan(&dev),
            Ok(Action::Device {
                kind: DeviceKind::Block,
                major: 8,
                minor: 0,
                ..
            })
        ));
    }

    #[test]
    fn only_a_directory_may_stand_for_the_root() {
        let mut pl = Planner::new(false);
        assert_eq!(
            pl.plan(&entry("./", EntryKind::Directory)),
            Ok(Action::Dir { path: p("/") })
        );
        assert!(matches!(
            pl.plan(&link("/", "x", EntryKind::Symlink)),
            Err(EntryError::ReplacesRoot { .. })
        ));
    }

    #[test]
    fn symlink_targets_are_kept_verbatim_even_when_absolute() {
        let mut pl = Planner::new(false);
        assert_eq!(
            pl.plan(&link("bin/sh", "/../../bin/busybox", EntryKind::Symlink)),
            Ok(Action::Symlink {
                path: p("bin/sh"),
                target: b"/../../bin/busybox".to_vec()
            })
        );
        assert_eq!(
            pl.plan(&link("x", "", EntryKind::Symlink)),
            Err(EntryError::EmptyLinkTarget)
        );
    }

    #[test]
    fn everything_written_and_its_ancestors_is_remembered() {
        let mut pl = Planner::new(false);
        pl.plan(&entry("a/b/c", EntryKind::Regular)).unwrap();
        for kept in ["/", "a", "a/b", "a/b/c"] {
            assert!(pl.wrote(&p(kept)), "{kept}");
        }
        assert!(!pl.wrote(&p("a/x")));
    }

    fn component() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("..".to_owned()),
            Just(".".to_owned()),
            Just("".to_owned()),
            Just(".wh..wh..opq".to_owned()),
            "\\.wh\\.[a-c.]{0,3}",
            "[a-c]{1,3}",
            Just("x".repeat(300)),
        ]
    }

    proptest! {
        /// Whatever the bytes, a planned path never has `..`, empty or `.`
        /// components and never exceeds the limits.
        #[test]
        fn planned_paths_stay_inside_the_root(
            comps in proptest::collection::vec(component(), 0..6),
            lead in any::<bool>(),
            kind in prop_oneof![
                Just(EntryKind::Regular), Just(EntryKind::Directory), Just(EntryKind::Symlink),
                Just(EntryKind::HardLink), Just(EntryKind::CharDevice), Just(EntryKind::Fifo),
                Just(EntryKind::Other('Z')),
            ],
            target in proptest::collection::vec(component(), 0..4),
        ) {
            let mut raw = comps.join("/");
            if lead { raw.insert(0, '/'); }
            let target = target.join("/");
            let mut pl = Planner::new(false);
            // Give hard links something to point at, sometimes.
            let _ = pl.plan(&entry(&target, EntryKind::Regular));
            let header = EntryHeader { path: raw.as_bytes(), link: Some(target.as_bytes()), kind, device: Some((1, 3)) };
            if let Ok(action) = pl.plan(&header) {
                let paths: Vec<&RootPath> = match &action {
                    Action::Dir { path } | Action::File { path } | Action::Symlink { path, .. }
                    | Action::Device { path, .. } | Action::Fifo { path } | Action::Whiteout { path } => vec![path],
                    Action::HardLink { path, target } => vec![path, target],
                    Action::Opaque { dir } => vec![dir],
                    Action::Skip => vec![],
                };
                for path in paths {
                    for c in path.components() {
                        prop_assert!(c != ".." && c != "." && !c.is_empty());
                        prop_assert!(c.len() <= MAX_NAME);
                    }
                }
                let is_device = matches!(action, Action::Device { .. });
                prop_assert!(!is_device);
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic_the_normaliser(raw in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = normalize(&raw);
        }
    }
}
