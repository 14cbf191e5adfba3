//! The inputs that make two builds byte-identical: one timestamp and the
//! identifiers derived from it.
//!
//! Every timestamp written into an artifact (cpio mtimes, FAT dates, ext4
//! times, tar headers) is `SOURCE_DATE_EPOCH`
//! (<https://reproducible-builds.org/specs/source-date-epoch/>). Every
//! identifier a tool would otherwise pick at random (disk and partition
//! GUIDs, the FAT volume id, the ext4 UUID and hash seed, the VMDK CID) is
//! derived from a hash of the epoch, the Cairn version and a label, so it
//! is stable across rebuilds and still differs between releases.

use std::path::Path;
use std::process::Command;

use sha2::{Digest, Sha256};

/// Used when neither `SOURCE_DATE_EPOCH` nor a git commit time is available:
/// 2026-01-01T00:00:00Z.
pub const FALLBACK_EPOCH: u64 = 1_767_225_600;

/// Seconds since 1970-01-01 UTC, the build's only notion of "now".
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct SourceDateEpoch(u64);

/// Where the epoch came from, for the build log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EpochSource {
    Environment,
    GitCommit,
    Fallback,
}

#[derive(Debug, thiserror::Error)]
pub enum EpochError {
    #[error("SOURCE_DATE_EPOCH={0:?} is not a whole number of seconds between 1980 and 2106")]
    Invalid(String),
}

/// FAT cannot store dates before 1980, and cpio's mtime is 32 bits.
const MIN_EPOCH: u64 = 315_532_800;
const MAX_EPOCH: u64 = u32::MAX as u64;

impl SourceDateEpoch {
    pub fn new(secs: u64) -> Result<Self, EpochError> {
        if (MIN_EPOCH..=MAX_EPOCH).contains(&secs) {
            Ok(Self(secs))
        } else {
            Err(EpochError::Invalid(secs.to_string()))
        }
    }

    pub fn parse(text: &str) -> Result<Self, EpochError> {
        text.trim()
            .parse::<u64>()
            .map_err(|_| EpochError::Invalid(text.to_owned()))
            .and_then(Self::new)
    }

    /// `SOURCE_DATE_EPOCH` if set, else the last commit time of the git
    /// work tree at `repo`, else [`FALLBACK_EPOCH`].
    pub fn discover(
        env_value: Option<&str>,
        repo: &Path,
    ) -> Result<(Self, EpochSource), EpochError> {
        if let Some(v) = env_value {
            return Ok((Self::parse(v)?, EpochSource::Environment));
        }
        let git = Command::new("git")
            .args(["log", "-1", "--format=%ct"])
            .current_dir(repo)
            .output();
        if let Ok(out) = git
            && out.status.success()
            && let Ok(epoch) = Self::parse(&String::from_utf8_lossy(&out.stdout))
        {
            return Ok((epoch, EpochSource::GitCommit));
        }
        Ok((Self(FALLBACK_EPOCH), EpochSource::Fallback))
    }

    pub fn secs(self) -> u64 {
        self.0
    }

    /// The epoch as a 32-bit value (cpio, ext4, tar); guaranteed to fit.
    pub fn secs_u32(self) -> u32 {
        u32::try_from(self.0).unwrap_or(u32::MAX)
    }

    /// Calendar date and time (UTC) of the epoch.
    pub fn civil(self) -> CivilTime {
        CivilTime::from_unix(self.0)
    }
}

/// A broken-down UTC time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CivilTime {
    pub year: u16,
    pub month: u8,
    pub day: u8,
    pub hour: u8,
    pub minute: u8,
    pub second: u8,
}

impl CivilTime {
    /// Howard Hinnant's `civil_from_days`, valid for every date we accept.
    pub fn from_unix(secs: u64) -> Self {
        let days = secs / 86_400;
        let rem = secs % 86_400;
        let z = days + 719_468;
        let era = z / 146_097;
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = doy - (153 * mp + 2) / 5 + 1;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        let year = yoe + era * 400 + u64::from(month <= 2);
        let narrow = |v: u64| u8::try_from(v).unwrap_or(u8::MAX);
        Self {
            year: u16::try_from(year).unwrap_or(u16::MAX),
            month: narrow(month),
            day: narrow(day),
            hour: narrow(rem / 3600),
            minute: narrow(rem % 3600 / 60),
            second: narrow(rem % 60),
        }
    }
}

/// The seed every derived identifier comes from.
#[derive(Debug, Clone)]
pub struct IdSeed {
    version: String,
    epoch: SourceDateEpoch,
}

impl IdSeed {
    pub fn new(version: &str, epoch: SourceDateEpoch) -> Self {
        Self {
            version: version.to_owned(),
            epoch,
        }
    }

    fn digest(&self, label: &str) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(b"cairn-image\0");
        h.update(self.version.as_bytes());
        h.update(b"\0");
        h.update(self.epoch.secs().to_le_bytes());
        h.update(b"\0");
        h.update(label.as_bytes());
        h.finalize().into()
    }

    /// A random-looking (version 4, RFC 4122 variant) UUID for `label`.
    pub fn uuid(&self, label: &str) -> uuid::Uuid {
        let d = self.digest(label);
        let mut bytes = [0u8; 16];
        bytes.copy_from_slice(&d[..16]);
        uuid::Builder::from_random_bytes(bytes).into_uuid()
    }

    /// A 32-bit identifier for `label` (FAT volume id, VMDK CID).
    pub fn u32(&self, label: &str) -> u32 {
        let d = self.digest(label);
        u32::from_le_bytes([d[0], d[1], d[2], d[3]])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_time_matches_known_dates() {
        assert_eq!(
            CivilTime::from_unix(FALLBACK_EPOCH),
            CivilTime {
                year: 2026,
                month: 1,
                day: 1,
                hour: 0,
                minute: 0,
                second: 0
            }
        );
        // 2024-02-29T23:59:59Z, a leap day.
        assert_eq!(
            CivilTime::from_unix(1_709_251_199),
            CivilTime {
                year: 2024,
                month: 2,
                day: 29,
                hour: 23,
                minute: 59,
                second: 59
            }
        );
        assert_eq!(CivilTime::from_unix(MIN_EPOCH).year, 1980);
    }

    #[test]
    fn epochs_outside_fat_and_cpio_range_are_refused() {
        assert!(SourceDateEpoch::parse("0").is_err());
        assert!(SourceDateEpoch::parse("4294967296").is_err());
        assert!(SourceDateEpoch::parse("soon").is_err());
        assert_eq!(
            SourceDateEpoch::parse(" 1700000000\n").unwrap().secs(),
            1_700_000_000
        );
    }

    #[test]
    fn the_environment_wins_over_git() {
        let (e, src) = SourceDateEpoch::discover(Some("1700000000"), Path::new("/")).unwrap();
        assert_eq!((e.secs(), src), (1_700_000_000, EpochSource::Environment));
    }

    #[test]
    fn derived_ids_are_stable_and_differ_by_label_version_and_epoch() {
        let e1 = SourceDateEpoch::new(1_700_000_000).unwrap();
        let e2 = SourceDateEpoch::new(1_700_000_001).unwrap();
        let a = IdSeed::new("0.1.0", e1);
        assert_eq!(a.uuid("disk"), IdSeed::new("0.1.0", e1).uuid("disk"));
        assert_ne!(a.uuid("disk"), a.uuid("esp"));
        assert_ne!(a.uuid("disk"), IdSeed::new("0.1.1", e1).uuid("disk"));
        assert_ne!(a.uuid("disk"), IdSeed::new("0.1.0", e2).uuid("disk"));
        assert_eq!(a.uuid("disk").get_version_num(), 4);
    }
}
