//! Converting the raw disk into hypervisor formats with `qemu-img`.
//!
//! qcow2 output is already deterministic. A streamOptimized VMDK is not:
//! qemu writes a random content id (`CID=`) into the embedded descriptor.
//! [`set_vmdk_cid`] rewrites it inside the fixed-size embedded descriptor
//! area with an id derived from the build seed, so no other offset moves.

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

/// Replaces the value of the descriptor's `CID=` line with `cid` written
/// as 8 hex digits. qemu prints its random CID without zero padding, so the
/// old value may be shorter; the descriptor text is rewritten and the rest
/// of the fixed-size descriptor area NUL-filled, so nothing else moves.
pub fn replace_cid(descriptor: &mut [u8], cid: u32) -> Result<(), &'static str> {
    let text_len = descriptor
        .iter()
        .position(|b| *b == 0)
        .unwrap_or(descriptor.len());
    let text =
        std::str::from_utf8(&descriptor[..text_len]).map_err(|_| "descriptor is not UTF-8")?;
    let mut found = false;
    let mut out = String::with_capacity(text.len() + 8);
    for line in text.split_inclusive('\n') {
        if let Some(value) = line.strip_prefix("CID=") {
            let digits = value.trim_end();
            if digits.is_empty()
                || digits.len() > 8
                || !digits.bytes().all(|b| b.is_ascii_hexdigit())
            {
                return Err("descriptor CID is not a 32-bit hex number");
            }
            out.push_str(&format!("CID={cid:08x}"));
            out.push_str(&value[digits.len()..]);
            found = true;
        } else {
            out.push_str(line);
        }
    }
    if !found {
        return Err("descriptor has no CID line");
    }
    if out.len() > descriptor.len() {
        return Err("descriptor area is too small for the new CID");
    }
    descriptor[..out.len()].copy_from_slice(out.as_bytes());
    descriptor[out.len()..].fill(0);
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
        d.resize(1024, 0);
        replace_cid(&mut d, 0xdead_beef).unwrap();
        let expected = DESCRIPTOR.replace("CID=2e0468a2", "CID=deadbeef");
        assert_eq!(&d[..expected.len()], expected.as_bytes());
    }

    #[test]
    fn a_cid_qemu_printed_without_zero_padding_is_replaced_in_place() {
        let text = "# Disk DescriptorFile\nversion=1\nCID=468a2f\nparentCID=ffffffff\n";
        let mut d = text.as_bytes().to_vec();
        d.resize(512, 0);
        replace_cid(&mut d, 0x0000_00ab).unwrap();
        let expected = text.replace("CID=468a2f", "CID=000000ab");
        assert_eq!(&d[..expected.len()], expected.as_bytes());
        assert!(d[expected.len()..].iter().all(|b| *b == 0));
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
