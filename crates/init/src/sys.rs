//! The narrow syscall surface the boot and shutdown sequences use.
//!
//! Everything `cairn-init` does to the machine while booting or powering off
//! goes through [`Sys`], so the sequences can run against [`fake::FakeSys`]
//! in unit tests without root, and the tests can assert exactly which mounts,
//! module loads and disk writes were asked for (youki's `Syscall` trait is the
//! model). The event loop's own plumbing (epoll, signalfd, process spawning)
//! is not behind the trait: it is the thin shell around these sequences.

use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags};
use nix::sys::reboot::RebootMode;

/// The calls the boot and shutdown sequences make.
pub trait Sys {
    fn mkdir_all(&mut self, path: &Path, mode: u32) -> io::Result<()>;
    fn mount(
        &mut self,
        source: &str,
        target: &Path,
        fstype: &str,
        flags: MsFlags,
        data: Option<&str>,
    ) -> io::Result<()>;
    fn umount(&mut self, target: &Path, flags: MntFlags) -> io::Result<()>;
    fn read(&mut self, path: &Path) -> io::Result<Vec<u8>>;
    fn write(&mut self, path: &Path, data: &[u8]) -> io::Result<()>;
    /// Names (not paths) of the entries of a directory, sorted.
    fn list_dir(&mut self, path: &Path) -> io::Result<Vec<String>>;
    fn exists(&mut self, path: &Path) -> bool;
    fn load_module(&mut self, path: &Path) -> io::Result<()>;
    fn sync(&mut self);
    /// Size in bytes of a block device.
    fn device_size(&mut self, dev: &Path) -> io::Result<u64>;
    fn read_at(&mut self, dev: &Path, offset: u64, len: usize) -> io::Result<Vec<u8>>;
    /// Writes and makes the bytes durable (fsync) before returning.
    fn write_at(&mut self, dev: &Path, offset: u64, data: &[u8]) -> io::Result<()>;
    /// Tells the kernel a partition of `disk` now spans `start..start+len` bytes.
    fn resize_partition(
        &mut self,
        disk: &Path,
        partno: u32,
        start: u64,
        len: u64,
    ) -> io::Result<()>;
    /// Grows the ext4 filesystem mounted at `mountpoint` to `blocks` blocks, online.
    fn resize_ext4(&mut self, mountpoint: &Path, blocks: u64) -> io::Result<()>;
    /// Block size of the filesystem mounted at `mountpoint`.
    fn fs_block_size(&mut self, mountpoint: &Path) -> io::Result<u64>;
    fn reboot(&mut self, mode: RebootMode) -> io::Result<()>;
}

/// The real machine.
#[derive(Debug, Default)]
pub struct RealSys;

nix::ioctl_read!(blk_get_size64, 0x12, 114, u64);
nix::ioctl_write_ptr!(ext4_resize_fs, b'f', 16, u64);
nix::ioctl_write_ptr_bad!(blkpg, 0x1269, BlkpgIoctlArg);

/// `struct blkpg_ioctl_arg` from `<linux/blkpg.h>`.
#[derive(Debug)]
#[repr(C)]
pub struct BlkpgIoctlArg {
    op: libc::c_int,
    flags: libc::c_int,
    datalen: libc::c_int,
    data: *mut libc::c_void,
}

/// `struct blkpg_partition` from `<linux/blkpg.h>`.
#[repr(C)]
struct BlkpgPartition {
    start: libc::c_longlong,
    length: libc::c_longlong,
    pno: libc::c_int,
    devname: [libc::c_char; 64],
    volname: [libc::c_char; 64],
}

const BLKPG_RESIZE_PARTITION: libc::c_int = 3;

fn to_io(e: nix::Error) -> io::Error {
    io::Error::from_raw_os_error(e as i32)
}

fn open_device(dev: &Path, write: bool) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(write)
        .custom_flags(libc::O_CLOEXEC)
        .open(dev)
}

impl Sys for RealSys {
    fn mkdir_all(&mut self, path: &Path, mode: u32) -> io::Result<()> {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(mode)
            .create(path)
    }

    fn mount(
        &mut self,
        source: &str,
        target: &Path,
        fstype: &str,
        flags: MsFlags,
        data: Option<&str>,
    ) -> io::Result<()> {
        nix::mount::mount(Some(source), target, Some(fstype), flags, data).map_err(to_io)
    }

    fn umount(&mut self, target: &Path, flags: MntFlags) -> io::Result<()> {
        nix::mount::umount2(target, flags).map_err(to_io)
    }

    fn read(&mut self, path: &Path) -> io::Result<Vec<u8>> {
        std::fs::read(path)
    }

    fn write(&mut self, path: &Path, data: &[u8]) -> io::Result<()> {
        std::fs::write(path, data)
    }

    fn list_dir(&mut self, path: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(path)? {
            names.push(entry?.file_name().to_string_lossy().into_owned());
        }
        names.sort();
        Ok(names)
    }

    fn exists(&mut self, path: &Path) -> bool {
        path.exists()
    }

    fn load_module(&mut self, path: &Path) -> io::Result<()> {
        let file = File::open(path)?;
        let params = CString::default();
        nix::kmod::finit_module(&file, &params, nix::kmod::ModuleInitFlags::empty()).map_err(to_io)
    }

    fn sync(&mut self) {
        nix::unistd::sync();
    }

    fn device_size(&mut self, dev: &Path) -> io::Result<u64> {
        use std::os::fd::AsRawFd;
        let file = open_device(dev, false)?;
        let mut size = 0u64;
        // SAFETY: BLKGETSIZE64 writes one u64 through the pointer, which
        // points at a live local; the fd stays open for the call.
        unsafe { blk_get_size64(file.as_raw_fd(), &mut size) }.map_err(to_io)?;
        Ok(size)
    }

    fn read_at(&mut self, dev: &Path, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        let file = open_device(dev, false)?;
        let mut buf = vec![0u8; len];
        file.read_exact_at(&mut buf, offset)?;
        Ok(buf)
    }

    fn write_at(&mut self, dev: &Path, offset: u64, data: &[u8]) -> io::Result<()> {
        let file = open_device(dev, true)?;
        file.write_all_at(data, offset)?;
        file.sync_all()
    }

    fn resize_partition(
        &mut self,
        disk: &Path,
        partno: u32,
        start: u64,
        len: u64,
    ) -> io::Result<()> {
        use std::os::fd::AsRawFd;
        let file = open_device(disk, false)?;
        let mut part = BlkpgPartition {
            start: i64::try_from(start).map_err(io::Error::other)?,
            length: i64::try_from(len).map_err(io::Error::other)?,
            pno: i32::try_from(partno).map_err(io::Error::other)?,
            devname: [0; 64],
            volname: [0; 64],
        };
        let arg = BlkpgIoctlArg {
            op: BLKPG_RESIZE_PARTITION,
            flags: 0,
            datalen: i32::try_from(std::mem::size_of::<BlkpgPartition>())
                .map_err(io::Error::other)?,
            data: (&raw mut part).cast(),
        };
        // SAFETY: BLKPG reads the argument struct and the partition struct it
        // points at; both are live locals laid out as <linux/blkpg.h> says.
        unsafe { blkpg(file.as_raw_fd(), &arg) }.map_err(to_io)?;
        Ok(())
    }

    fn resize_ext4(&mut self, mountpoint: &Path, blocks: u64) -> io::Result<()> {
        use std::os::fd::AsRawFd;
        let dir = File::open(mountpoint)?;
        // SAFETY: EXT4_IOC_RESIZE_FS reads one u64 through the pointer, which
        // points at a live local; the fd is a directory on the filesystem.
        unsafe { ext4_resize_fs(dir.as_raw_fd(), &blocks) }.map_err(to_io)?;
        Ok(())
    }

    fn fs_block_size(&mut self, mountpoint: &Path) -> io::Result<u64> {
        let st = nix::sys::statvfs::statvfs(mountpoint).map_err(to_io)?;
        Ok(st.fragment_size())
    }

    fn reboot(&mut self, mode: RebootMode) -> io::Result<()> {
        match nix::sys::reboot::reboot(mode) {
            Ok(never) => match never {},
            Err(e) => Err(to_io(e)),
        }
    }
}

/// Joins a path under a root, for code that takes `/sys` or `/dev` as a
/// parameter so tests can point it elsewhere.
pub fn under(root: &Path, rel: &str) -> PathBuf {
    root.join(rel.trim_start_matches('/'))
}

#[cfg(test)]
pub mod fake {
    //! An in-memory machine that records what was asked of it.

    use super::*;
    use std::collections::{BTreeMap, BTreeSet};

    /// One recorded call.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub enum Call {
        Mkdir(PathBuf),
        Mount {
            source: String,
            target: PathBuf,
            fstype: String,
            data: Option<String>,
        },
        Umount(PathBuf),
        Write(PathBuf),
        LoadModule(PathBuf),
        Sync,
        WriteAt {
            dev: PathBuf,
            offset: u64,
            len: usize,
        },
        ResizePartition {
            disk: PathBuf,
            partno: u32,
            start: u64,
            len: u64,
        },
        ResizeExt4 {
            mountpoint: PathBuf,
            blocks: u64,
        },
        Reboot(RebootMode),
    }

    /// Files, devices and failures are set up by the test; calls are recorded.
    #[derive(Debug, Default)]
    pub struct FakeSys {
        pub files: BTreeMap<PathBuf, Vec<u8>>,
        pub dirs: BTreeSet<PathBuf>,
        pub devices: BTreeMap<PathBuf, Vec<u8>>,
        pub calls: Vec<Call>,
        /// Mount targets whose mount fails with EINVAL.
        pub failing_mounts: BTreeSet<PathBuf>,
        pub block_size: u64,
    }

    impl FakeSys {
        pub fn new() -> Self {
            Self {
                block_size: 4096,
                ..Self::default()
            }
        }

        pub fn file(&mut self, path: &str, content: impl AsRef<[u8]>) -> &mut Self {
            let path = PathBuf::from(path);
            let mut parent = path.parent();
            while let Some(p) = parent {
                self.dirs.insert(p.to_path_buf());
                parent = p.parent();
            }
            self.files.insert(path, content.as_ref().to_vec());
            self
        }

        pub fn mounts(&self) -> Vec<(String, PathBuf)> {
            self.calls
                .iter()
                .filter_map(|c| match c {
                    Call::Mount { fstype, target, .. } => Some((fstype.clone(), target.clone())),
                    _ => None,
                })
                .collect()
        }

        pub fn loaded_modules(&self) -> Vec<String> {
            self.calls
                .iter()
                .filter_map(|c| match c {
                    Call::LoadModule(p) => p.file_stem().map(|s| s.to_string_lossy().into_owned()),
                    _ => None,
                })
                .collect()
        }
    }

    fn not_found(path: &Path) -> io::Error {
        io::Error::new(io::ErrorKind::NotFound, path.display().to_string())
    }

    impl Sys for FakeSys {
        fn mkdir_all(&mut self, path: &Path, _mode: u32) -> io::Result<()> {
            self.dirs.insert(path.to_path_buf());
            self.calls.push(Call::Mkdir(path.to_path_buf()));
            Ok(())
        }

        fn mount(
            &mut self,
            source: &str,
            target: &Path,
            fstype: &str,
            _flags: MsFlags,
            data: Option<&str>,
        ) -> io::Result<()> {
            if self.failing_mounts.contains(target) {
                return Err(io::Error::from_raw_os_error(libc::EINVAL));
            }
            self.calls.push(Call::Mount {
                source: source.to_owned(),
                target: target.to_path_buf(),
                fstype: fstype.to_owned(),
                data: data.map(str::to_owned),
            });
            Ok(())
        }

        fn umount(&mut self, target: &Path, _flags: MntFlags) -> io::Result<()> {
            self.calls.push(Call::Umount(target.to_path_buf()));
            Ok(())
        }

        fn read(&mut self, path: &Path) -> io::Result<Vec<u8>> {
            self.files.get(path).cloned().ok_or_else(|| not_found(path))
        }

        fn write(&mut self, path: &Path, data: &[u8]) -> io::Result<()> {
            self.files.insert(path.to_path_buf(), data.to_vec());
            self.calls.push(Call::Write(path.to_path_buf()));
            Ok(())
        }

        fn list_dir(&mut self, path: &Path) -> io::Result<Vec<String>> {
            if !self.dirs.contains(path) {
                return Err(not_found(path));
            }
            let mut names = BTreeSet::new();
            let children = self
                .files
                .keys()
                .chain(self.dirs.iter())
                .chain(self.devices.keys());
            for p in children {
                if p.parent() == Some(path)
                    && let Some(name) = p.file_name()
                {
                    names.insert(name.to_string_lossy().into_owned());
                }
            }
            Ok(names.into_iter().collect())
        }

        fn exists(&mut self, path: &Path) -> bool {
            self.files.contains_key(path)
                || self.dirs.contains(path)
                || self.devices.contains_key(path)
        }

        fn load_module(&mut self, path: &Path) -> io::Result<()> {
            if !self.files.contains_key(path) {
                return Err(not_found(path));
            }
            self.calls.push(Call::LoadModule(path.to_path_buf()));
            Ok(())
        }

        fn sync(&mut self) {
            self.calls.push(Call::Sync);
        }

        fn device_size(&mut self, dev: &Path) -> io::Result<u64> {
            self.devices
                .get(dev)
                .map(|d| d.len() as u64)
                .ok_or_else(|| not_found(dev))
        }

        fn read_at(&mut self, dev: &Path, offset: u64, len: usize) -> io::Result<Vec<u8>> {
            let d = self.devices.get(dev).ok_or_else(|| not_found(dev))?;
            let start = usize::try_from(offset).map_err(io::Error::other)?;
            d.get(start..start + len)
                .map(<[u8]>::to_vec)
                .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))
        }

        fn write_at(&mut self, dev: &Path, offset: u64, data: &[u8]) -> io::Result<()> {
            let d = self.devices.get_mut(dev).ok_or_else(|| not_found(dev))?;
            let start = usize::try_from(offset).map_err(io::Error::other)?;
            d.get_mut(start..start + data.len())
                .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))?
                .copy_from_slice(data);
            self.calls.push(Call::WriteAt {
                dev: dev.to_path_buf(),
                offset,
                len: data.len(),
            });
            Ok(())
        }

        fn resize_partition(
            &mut self,
            disk: &Path,
            partno: u32,
            start: u64,
            len: u64,
        ) -> io::Result<()> {
            self.calls.push(Call::ResizePartition {
                disk: disk.to_path_buf(),
                partno,
                start,
                len,
            });
            Ok(())
        }

        fn resize_ext4(&mut self, mountpoint: &Path, blocks: u64) -> io::Result<()> {
            self.calls.push(Call::ResizeExt4 {
                mountpoint: mountpoint.to_path_buf(),
                blocks,
            });
            Ok(())
        }

        fn fs_block_size(&mut self, _mountpoint: &Path) -> io::Result<u64> {
            Ok(self.block_size)
        }

        fn reboot(&mut self, mode: RebootMode) -> io::Result<()> {
            self.calls.push(Call::Reboot(mode));
            Ok(())
        }
    }
}
