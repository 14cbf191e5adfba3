//! The STATE partition: an empty ext4 file system made by `mkfs.ext4` on a
//! plain file.
//!
//! Everything mke2fs would pick at random or from the clock is pinned: the
//! UUID and directory hash seed come from the build seed, and
//! `E2FSPROGS_FAKE_TIME` / `SOURCE_DATE_EPOCH` fix the creation times.
//! STATE is left empty (only `lost+found`): cairn-init and cairnd create
//! `/var/lib/cairn/...` on first boot. Populating it with `mkfs.ext4 -d`
//! would make the image depend on the build host, because e2fsprogs 1.47.0
//! copies each source file's ctime, which no unprivileged process can set.
//!
//! The file system uses 4 KiB blocks even though it starts small (mke2fs
//! would choose 1 KiB blocks for a "small" file system, which caps later
//! growth), so cairn-init can grow it online to fill the disk.

use std::path::Path;

use crate::disk::STATE_LABEL;
use crate::reproducible::{IdSeed, SourceDateEpoch};
use crate::tools::{self, HostTool, ToolError};

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("creating {path}")]
    Create {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("making the ext4 file system")]
    Mkfs(#[source] ToolError),
}

/// The `mkfs.ext4` arguments for a STATE file system (pure, for tests).
pub fn mkfs_args(image: &Path, seed: &IdSeed) -> Vec<String> {
    vec![
        "-q".to_owned(),
        "-F".to_owned(),
        "-t".to_owned(),
        "ext4".to_owned(),
        "-b".to_owned(),
        "4096".to_owned(),
        "-T".to_owned(),
        "default".to_owned(),
        // Everything on STATE belongs to root anyway; keep 1 % for fsck.
        "-m".to_owned(),
        "1".to_owned(),
        "-L".to_owned(),
        STATE_LABEL.to_owned(),
        "-U".to_owned(),
        seed.uuid("ext4-state-uuid").to_string(),
        "-E".to_owned(),
        format!(
            "hash_seed={},root_owner=0:0,lazy_itable_init=0,lazy_journal_init=0",
            seed.uuid("ext4-state-hash-seed")
        ),
        image.display().to_string(),
    ]
}

/// Creates `image` as a `size_bytes` ext4 file system labelled CAIRN-STATE.
pub fn make_state(
    image: &Path,
    size_bytes: u64,
    seed: &IdSeed,
    epoch: SourceDateEpoch,
) -> Result<(), StateError> {
    let create = |source| StateError::Create {
        path: image.display().to_string(),
        source,
    };
    let file = std::fs::File::create(image).map_err(create)?;
    file.set_len(size_bytes).map_err(create)?;
    drop(file);
    tools::run(HostTool::MkfsExt4, mkfs_args(image, seed), |cmd| {
        cmd.env("E2FSPROGS_FAKE_TIME", epoch.secs().to_string())
            .env("SOURCE_DATE_EPOCH", epoch.secs().to_string())
            // A user's ~/.mke2fs.conf or MKE2FS_CONFIG must not change the image.
            .env_remove("MKE2FS_CONFIG")
            .env_remove("MKE2FS_SYNC")
            .env_remove("MKE2FS_DEVICE_SECTSIZE")
            .env_remove("MKE2FS_DEVICE_PHYS_SECTSIZE");
    })
    .map_err(StateError::Mkfs)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mkfs_pins_label_uuid_and_hash_seed() {
        let seed = IdSeed::new("0.1.0", SourceDateEpoch::new(1_700_000_000).unwrap());
        let args = mkfs_args(Path::new("/x/state.img"), &seed);
        let joined = args.join(" ");
        assert!(joined.contains("-L CAIRN-STATE"));
        assert!(joined.contains(&format!("-U {}", seed.uuid("ext4-state-uuid"))));
        assert!(joined.contains("hash_seed="));
        assert!(joined.contains("root_owner=0:0"));
        assert_eq!(args.last().map(String::as_str), Some("/x/state.img"));
    }

    #[test]
    fn two_state_file_systems_from_the_same_seed_are_byte_identical() {
        if HostTool::MkfsExt4.locate().is_err() {
            panic!("mkfs.ext4 is required for this test: install e2fsprogs");
        }
        let dir = tempfile::tempdir().unwrap();
        let epoch = SourceDateEpoch::new(1_700_000_000).unwrap();
        let seed = IdSeed::new("0.1.0", epoch);
        let a = dir.path().join("a.img");
        let b = dir.path().join("b.img");
        make_state(&a, 32 * 1024 * 1024, &seed, epoch).unwrap();
        make_state(&b, 32 * 1024 * 1024, &seed, epoch).unwrap();
        let bytes = std::fs::read(&a).unwrap();
        assert!(bytes == std::fs::read(&b).unwrap());
        // s_mkfs_time lives at offset 0x108 of the superblock (at 1024).
        let mkfs_time = u32::from_le_bytes(bytes[1024 + 0x108..1024 + 0x10c].try_into().unwrap());
        assert_eq!(mkfs_time, 1_700_000_000);
    }
}
