//! Converting the raw disk into hypervisor formats with `qemu-img`.
//!
//! qcow2 output is already deterministic. A streamOptimized VMDK is not:
//! qemu writes a random content id (`CID=`) into the embedded descriptor.
//! [`set_vmdk_cid`] rewrites it in place with an id derived from the build
//! seed; the replacement has the same length, so no offset moves.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

use crate::tools::{self, HostTool, ToolError};

#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    #[error("qemu-img convert to {format}")]
    QemuImg {
        format: &'static str,
        #[source]
        source: ToolError,
    },
    #[error("{path} is not a sparse VMDK extent: {reason}")]
    BadVmdk { path: String, reason: &'static str },
    #[error("VMDK I/O on {path}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// qemu-img arguments for each output format (pure, for tests).
pub fn qemu_img_args(format: TargetFormat, raw: &Path, out: &Path) -> Vec<String> {
    let mut args = vec![
        "convert".to_owned(),
        "-q".to_owned(),
        "-f".to_owned(),
        "raw".to_owned(),
        "-O".to_owned(),
    ];
    match format {
        TargetFormat::Qcow2 => {
            args.extend(["qcow2".to_owned(), "-o".to_owned(), "compat=1.1".to_owned()])
        }
        TargetFormat::StreamOptimizedVmdk => args.extend([
            "vmdk".to_owned(),
            "-o".to_owned(),
            // SCSI geometry in the descriptor: the OVA attaches the disk to
            // a pvscsi controller.
            "subformat=streamOptimized,adapter_type=lsilogic".to_owned(),
        ]),
    }
    args.push(raw.display().to_string());
    args.push(out.display().to_string());
    args
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetFormat {
    Qcow2,
    StreamOptimizedVmdk,
}

impl TargetFormat {
    pub const fn name(self) -> &'static str {
        match self {
            TargetFormat::Qcow2 => "qcow2",
            TargetFormat::StreamOptimizedVmdk => "vmdk (streamOptimized)",
        }
    }
}

pub fn convert(format: TargetFormat, raw: &Path, out: &Path) -> Result<(), ConvertError> {
    tools::run(HostTool::QemuImg, qemu_img_args(format, raw, out), |_| {})
        .map(|_| ())
        .map_err(|source| ConvertError::QemuImg {
            format: format.name(),
            source,
        })
}

/// Where the embedded descriptor sits, from a sparse extent header
/// (VMware "Virtual Disk Format 5.0", `SparseExtentHeader`).
pub fn descriptor_range(header: &[u8]) -> Result<(u64, u64), &'static str> {
    if header.len() < 44 || &header[..4] != b"KDMV" {
        return Err("no KDMV magic");
    }
    let u64_at = |o: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&header[o..o + 8]);
        u64::from_le_bytes(b)
    };
    let offset = u64_at(28)
        .checked_mul(512)
        .ok_or("descriptor offset overflows")?;
    let size = u64_at(36)
        .checked_mul(512)
        .ok_or("descriptor size overflows")?;
    if offset == 0 || size == 0 || size > 1 << 20 {
        return Err("no embedded descriptor");
    }
    Ok((offset, size))
}

/// Replaces the value of the descriptor's `CID=` line with `cid`.
pub fn replace_cid(descriptor: &mut [u8], cid: u32) -> Result<(), &'static str> {
    let needle = b"\nCID=";
    let at = descriptor
        .windows(needle.len())
        .position(|w| w == needle)
        .ok_or("descriptor has no CID line")?;
    let start = at + needle.len();
    let value = descriptor
        .get(start..start + 8)
        .ok_or("descriptor CID is truncated")?;
    if !value.iter().all(u8::is_ascii_hexdigit) {
        return Err("descriptor CID is not 8 hex digits");
    }
    descriptor[start..start + 8].copy_from_slice(format!("{cid:08x}").as_bytes());
    Ok(())
}

/// Sets the content id of the VMDK at `path`.
pub fn set_vmdk_cid(path: &Path, cid: u32) -> Result<(), ConvertError> {
    let io = |source| ConvertError::Io {
        path: path.display().to_string(),
        source,
    };
    let bad = |reason| ConvertError::BadVmdk {
        path: path.display().to_string(),
        reason,
    };
    let mut file = File::options()
        .read(true)
        .write(true)
        .open(path)
        .map_err(io)?;
    let mut header = [0u8; 512];
    file.read_exact(&mut header).map_err(io)?;
    let (offset, size) = descriptor_range(&header).map_err(bad)?;
    let mut descriptor = vec![0u8; usize::try_from(size).map_err(|_| bad("descriptor too large"))?];
    file.seek(SeekFrom::Start(offset)).map_err(io)?;
    file.read_exact(&mut descriptor).map_err(io)?;
    replace_cid(&mut descriptor, cid).map_err(bad)?;
    file.seek(SeekFrom::Start(offset)).map_err(io)?;
    file.write_all(&descriptor).map_err(io)?;
    file.sync_all().map_err(io)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const DESCRIPTOR: &str = "# Disk DescriptorFile\nversion=1\nCID=2e0468a2\nparentCID=ffffffff\ncreateType=\"streamOptimized\"\n";

    #[test]
    fn only_the_cid_line_changes_not_parent_cid() {
        let mut d = DESCRIPTOR.as_bytes().to_vec();
        replace_cid(&mut d, 0xdead_beef).unwrap();
        assert_eq!(
            String::from_utf8(d).unwrap(),
            DESCRIPTOR.replace("CID=2e0468a2", "CID=deadbeef")
        );
    }

    #[test]
    fn a_descriptor_without_cid_is_refused() {
        let mut d = b"# Disk DescriptorFile\nparentCID=ffffffff\n".to_vec();
        assert!(replace_cid(&mut d, 1).is_err());
    }

    #[test]
    fn the_descriptor_range_comes_from_the_header() {
        let mut h = vec![0u8; 512];
        h[..4].copy_from_slice(b"KDMV");
        h[28..36].copy_from_slice(&1u64.to_le_bytes());
        h[36..44].copy_from_slice(&20u64.to_le_bytes());
        assert_eq!(descriptor_range(&h), Ok((512, 20 * 512)));
        h[0] = b'X';
        assert!(descriptor_range(&h).is_err());
    }

    #[test]
    fn two_vmdks_of_the_same_raw_image_are_identical_after_fixing_the_cid() {
        HostTool::QemuImg
            .locate()
            .unwrap_or_else(|e| panic!("this test needs qemu-img: {e}"));
        let dir = tempfile::tempdir().unwrap();
        let raw = dir.path().join("d.raw");
        let mut data = vec![0u8; 4 << 20];
        data[1 << 20..(1 << 20) + 11].copy_from_slice(b"hello world");
        std::fs::write(&raw, &data).unwrap();
        let mut images = Vec::new();
        for sub in ["a", "b"] {
            std::fs::create_dir(dir.path().join(sub)).unwrap();
            let out = dir.path().join(sub).join("cairn.vmdk");
            convert(TargetFormat::StreamOptimizedVmdk, &raw, &out).unwrap();
            set_vmdk_cid(&out, 0x0102_0304).unwrap();
            images.push(std::fs::read(&out).unwrap());
        }
        assert!(images[0] == images[1]);
        assert!(images[0].windows(12).any(|w| w == b"CID=01020304"));
    }
}
