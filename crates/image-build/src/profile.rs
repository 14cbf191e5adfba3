//! The image profile: which kernel, which modules, which command line, how
//! big the partitions are.
//!
//! A profile is a TOML file under `configs/profiles/`. Every string that
//! means something (a Debian package name, a version, a module name, the
//! kernel command line) is parsed once into a newtype here, so the rest of
//! the builder never re-checks it. Unknown keys are rejected: a typo in a
//! module set name is an error, not a silently smaller image.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::Path;

use serde::Deserialize;

/// Why a profile could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error("cannot read profile {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("profile {path} is not valid")]
    Parse {
        path: String,
        #[source]
        source: toml::de::Error,
    },
    #[error("profile is inconsistent: {0}")]
    Invalid(String),
}

/// Why a single value in a profile was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    #[error(
        "debian package name {0:?} must be lower-case letters, digits, '+', '-' or '.', starting with a letter or digit"
    )]
    PackageName(String),
    #[error("debian version {0:?} must be non-empty and use only letters, digits and '.+~-:'")]
    DebVersion(String),
    #[error("module name {0:?} must be 1-55 characters of letters, digits, '_' or '-'")]
    ModuleName(String),
    #[error(
        "kernel command line must be printable ASCII without newlines and at most {max} bytes, got {len} bytes"
    )]
    Cmdline { len: usize, max: usize },
    #[error("module set name {0:?} must be lower-case letters, digits or '-'")]
    SetName(String),
}

/// A Debian binary package name (Debian Policy 5.6.1).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(try_from = "String")]
pub struct PackageName(String);

impl TryFrom<String> for PackageName {
    type Error = ValueError;
    fn try_from(s: String) -> Result<Self, ValueError> {
        let mut chars = s.chars();
        let first_ok = chars
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
        let rest_ok = chars
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '+' | '-' | '.'));
        if first_ok && rest_ok && s.len() >= 2 {
            Ok(Self(s))
        } else {
            Err(ValueError::PackageName(s))
        }
    }
}

impl PackageName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PackageName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An exact Debian version (`[epoch:]upstream[-revision]`), as apt prints it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(try_from = "String")]
pub struct DebVersion(String);

impl TryFrom<String> for DebVersion {
    type Error = ValueError;
    fn try_from(s: String) -> Result<Self, ValueError> {
        let ok = !s.is_empty()
            && s.chars().next().is_some_and(|c| c.is_ascii_digit())
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '+' | '~' | '-' | ':'));
        if ok {
            Ok(Self(s))
        } else {
            Err(ValueError::DebVersion(s))
        }
    }
}

impl DebVersion {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for DebVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A kernel module name, normalised the way the kernel compares them:
/// `-` and `_` are the same character, so `xhci-pci` is stored as `xhci_pci`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(try_from = "String")]
pub struct ModuleName(String);

/// The kernel's `MODULE_NAME_LEN` is 64 bytes including padding; real
/// names stay far below it.
const MAX_MODULE_NAME: usize = 55;

impl TryFrom<String> for ModuleName {
    type Error = ValueError;
    fn try_from(s: String) -> Result<Self, ValueError> {
        Self::new(&s)
    }
}

impl ModuleName {
    pub fn new(s: &str) -> Result<Self, ValueError> {
        let ok = !s.is_empty()
            && s.len() <= MAX_MODULE_NAME
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if ok {
            Ok(Self(s.replace('-', "_")))
        } else {
            Err(ValueError::ModuleName(s.to_owned()))
        }
    }

    /// The module name a `.ko` file provides, from its file name.
    pub fn from_ko_path(path: &str) -> Result<Self, ValueError> {
        let file = path.rsplit('/').next().unwrap_or(path);
        let stem = file
            .strip_suffix(".ko.xz")
            .or_else(|| file.strip_suffix(".ko.zst"))
            .or_else(|| file.strip_suffix(".ko.gz"))
            .or_else(|| file.strip_suffix(".ko"))
            .unwrap_or(file);
        Self::new(stem)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ModuleName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The name of a module set in the profile (`kvm`, `vmware`, ...).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(try_from = "String")]
pub struct SetName(String);

impl TryFrom<String> for SetName {
    type Error = ValueError;
    fn try_from(s: String) -> Result<Self, ValueError> {
        let ok = !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if ok {
            Ok(Self(s))
        } else {
            Err(ValueError::SetName(s))
        }
    }
}

impl SetName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SetName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A kernel command line: printable ASCII on one line, within x86's
/// `COMMAND_LINE_SIZE`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct KernelCmdline(String);

/// x86's `COMMAND_LINE_SIZE` is 2048 including the terminating NUL.
const MAX_CMDLINE: usize = 2047;

impl TryFrom<String> for KernelCmdline {
    type Error = ValueError;
    fn try_from(s: String) -> Result<Self, ValueError> {
        let s = s.split_ascii_whitespace().collect::<Vec<_>>().join(" ");
        let printable = s.bytes().all(|b| (0x20..0x7f).contains(&b));
        if printable && s.len() <= MAX_CMDLINE {
            Ok(Self(s))
        } else {
            Err(ValueError::Cmdline {
                len: s.len(),
                max: MAX_CMDLINE,
            })
        }
    }
}

impl KernelCmdline {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Appends extra arguments, keeping the length limit.
    pub fn with_extra(&self, extra: &[String]) -> Result<Self, ValueError> {
        let mut all = self.0.clone();
        for arg in extra {
            all.push(' ');
            all.push_str(arg);
        }
        Self::try_from(all)
    }
}

impl fmt::Display for KernelCmdline {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A whole image profile.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Profile {
    /// Shown in logs and the build report.
    pub description: String,
    pub kernel: KernelConfig,
    pub modules: ModulesConfig,
    pub initramfs: InitramfsConfig,
    pub disk: DiskConfig,
    pub ova: OvaConfig,
    pub trust: TrustConfig,
    pub baseline: BaselineConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct KernelConfig {
    /// Debian package holding vmlinuz and the modules, e.g. `linux-image-6.1.0-56-amd64`.
    pub package: PackageName,
    /// The exact version to download; a different one is never taken.
    pub version: DebVersion,
    /// The base command line every boot medium uses.
    pub cmdline: KernelCmdline,
    /// Extra arguments appended to `cmdline` (kept separate so derived
    /// profiles can add to the base without repeating it).
    #[serde(default)]
    pub extra_cmdline: Vec<String>,
}

impl KernelConfig {
    /// `cmdline` followed by `extra-cmdline`.
    pub fn full_cmdline(&self) -> Result<KernelCmdline, ValueError> {
        self.cmdline.with_extra(&self.extra_cmdline)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ModulesConfig {
    /// Modules init loads on every boot, whatever the hardware
    /// (written to `/etc/cairn/modules-load` in this order).
    pub load: Vec<ModuleName>,
    /// Named groups of modules to ship; each is included with its full
    /// dependency closure. Hardware drivers among them are loaded by init
    /// only when a device's modalias matches.
    pub sets: BTreeMap<SetName, Vec<ModuleName>>,
}

impl ModulesConfig {
    /// Every requested module with the first place it was named (a set, or
    /// `load`), in a stable order.
    pub fn requested(&self) -> Vec<(ModuleName, String)> {
        let mut seen = BTreeSet::new();
        let mut out = Vec::new();
        for (set, names) in &self.sets {
            for name in names {
                if seen.insert(name.clone()) {
                    out.push((name.clone(), format!("modules.sets.{set}")));
                }
            }
        }
        for name in &self.load {
            if seen.insert(name.clone()) {
                out.push((name.clone(), "modules.load".to_owned()));
            }
        }
        out
    }
}

/// How the initramfs is stored on the ESP and in the PXE set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct InitramfsConfig {
    pub compression: Compression,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct DiskConfig {
    /// Size of the ESP partition; FAT32 needs at least 33 MiB with 512-byte
    /// sectors, and firmware is happiest with >= 260 MiB.
    pub esp_size_mib: u32,
    /// Size of STATE inside the image; init grows it on first boot.
    pub state_size_mib: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct OvaConfig {
    pub cpus: u32,
    pub memory_mib: u32,
}

/// The CA roots the node trusts for registries its machine config gives
/// no `ca` of their own (Mozilla's, as Debian packages them).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct TrustConfig {
    /// Debian's `ca-certificates`.
    pub ca_package: PackageName,
    pub ca_version: DebVersion,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct BaselineConfig {
    /// Package holding a static `/bin/busybox` (Debian's `busybox-static`).
    pub busybox_package: PackageName,
    pub busybox_version: DebVersion,
}

/// FAT32 needs 65525 clusters; with 512-byte sectors and 1 sector/cluster
/// that is about 33 MiB.
const MIN_ESP_MIB: u32 = 36;
/// mke2fs refuses tiny ext4 file systems with a journal.
const MIN_STATE_MIB: u32 = 16;

impl Profile {
    /// Parses a profile from TOML text and checks the rules that span fields.
    pub fn from_toml(text: &str, path: &str) -> Result<Self, ProfileError> {
        let profile: Profile = toml::from_str(text).map_err(|source| ProfileError::Parse {
            path: path.to_owned(),
            source,
        })?;
        profile.validate()?;
        Ok(profile)
    }

    pub fn load(path: &Path) -> Result<Self, ProfileError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ProfileError::Read {
            path: shown.clone(),
            source,
        })?;
        Self::from_toml(&text, &shown)
    }

    fn validate(&self) -> Result<(), ProfileError> {
        self.kernel
            .full_cmdline()
            .map_err(|e| ProfileError::Invalid(format!("kernel.extra-cmdline: {e}")))?;
        if self.disk.esp_size_mib < MIN_ESP_MIB {
            return Err(ProfileError::Invalid(format!(
                "disk.esp-size-mib must be at least {MIN_ESP_MIB} for FAT32"
            )));
        }
        if self.disk.state_size_mib < MIN_STATE_MIB {
            return Err(ProfileError::Invalid(format!(
                "disk.state-size-mib must be at least {MIN_STATE_MIB}"
            )));
        }
        if self.ova.cpus == 0 || self.ova.memory_mib < 256 {
            return Err(ProfileError::Invalid(
                "ova.cpus must be >= 1 and ova.memory-mib >= 256".to_owned(),
            ));
        }
        let mut seen = BTreeSet::new();
        for name in &self.modules.load {
            if !seen.insert(name) {
                return Err(ProfileError::Invalid(format!(
                    "modules.load names {name} twice"
                )));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MINIMAL: &str = r#"
description = "test"
[kernel]
package = "linux-image-6.1.0-56-amd64"
version = "6.1.192-2"
cmdline = "console=ttyS0"
[modules]
load = ["ext4"]
[modules.sets]
kvm = ["virtio-pci", "virtio_blk"]
[initramfs]
compression = "none"
[disk]
esp-size-mib = 512
state-size-mib = 256
[ova]
cpus = 2
memory-mib = 2048
[trust]
ca-package = "ca-certificates"
ca-version = "20250419~deb12u2"
[baseline]
busybox-package = "busybox-static"
busybox-version = "1:1.35.0-4+deb12u1+b1"
"#;

    #[test]
    fn every_profile_in_configs_parses() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs/profiles");
        let mut count = 0;
        for entry in std::fs::read_dir(&dir).expect("configs/profiles exists") {
            let path = entry.expect("readable dir entry").path();
            if path.extension().is_some_and(|e| e == "toml") {
                Profile::load(&path).unwrap_or_else(|e| panic!("{}: {e:?}", path.display()));
                count += 1;
            }
        }
        assert!(count >= 1, "no profiles found in {}", dir.display());
    }

    #[test]
    fn module_names_are_normalised_to_underscores() {
        let p = Profile::from_toml(MINIMAL, "t").unwrap();
        let names: Vec<_> = p
            .modules
            .sets
            .values()
            .flatten()
            .map(|m| m.as_str())
            .collect();
        assert_eq!(names, ["virtio_pci", "virtio_blk"]);
    }

    #[test]
    fn unknown_keys_are_rejected_with_their_name() {
        let text = MINIMAL.replace("[ova]", "[ova]\nvcpus = 4");
        let err = Profile::from_toml(&text, "t").unwrap_err();
        let ProfileError::Parse { source, .. } = err else {
            panic!("expected parse error, got {err:?}")
        };
        assert!(source.to_string().contains("vcpus"), "{source}");
    }

    #[test]
    fn a_bad_module_name_is_rejected() {
        let text = MINIMAL.replace("\"ext4\"", "\"ext4 ; rm\"");
        assert!(Profile::from_toml(&text, "t").is_err());
    }

    #[test]
    fn requested_lists_each_module_once_with_where_it_was_named() {
        let text = MINIMAL.replace("load = [\"ext4\"]", "load = [\"ext4\", \"virtio_blk\"]");
        let p = Profile::from_toml(&text, "t").unwrap();
        let req = p.modules.requested();
        assert_eq!(
            req.iter()
                .map(|(n, w)| (n.as_str(), w.as_str()))
                .collect::<Vec<_>>(),
            [
                ("virtio_pci", "modules.sets.kvm"),
                ("virtio_blk", "modules.sets.kvm"),
                ("ext4", "modules.load"),
            ]
        );
    }

    #[test]
    fn a_too_small_esp_is_refused() {
        let text = MINIMAL.replace("esp-size-mib = 512", "esp-size-mib = 8");
        assert!(matches!(
            Profile::from_toml(&text, "t"),
            Err(ProfileError::Invalid(_))
        ));
    }

    #[test]
    fn extra_cmdline_is_appended() {
        let text = MINIMAL.replace(
            "cmdline = \"console=ttyS0\"",
            "cmdline = \"console=ttyS0\"\nextra-cmdline = [\"quiet\"]",
        );
        let p = Profile::from_toml(&text, "t").unwrap();
        assert_eq!(
            p.kernel.full_cmdline().unwrap().as_str(),
            "console=ttyS0 quiet"
        );
    }

    proptest! {
        #[test]
        fn profile_parser_never_panics_on_arbitrary_text(text in "\\PC{0,400}") {
            let _ = Profile::from_toml(&text, "fuzz");
        }

        #[test]
        fn profile_parser_never_panics_on_mutated_profiles(
            cut in 0usize..MINIMAL.len(),
            insert in "[a-z=\"\\[\\]\n0-9 -]{0,20}",
        ) {
            let mut text = MINIMAL.to_owned();
            if text.is_char_boundary(cut) {
                text.insert_str(cut, &insert);
            }
            let _ = Profile::from_toml(&text, "fuzz");
        }

        #[test]
        fn accepted_module_names_never_contain_dashes(s in "[A-Za-z0-9_-]{1,60}") {
            if let Ok(name) = ModuleName::new(&s) {
                prop_assert!(!name.as_str().contains('-'));
                prop_assert_eq!(name.as_str().len(), s.len());
            }
        }

        #[test]
        fn accepted_cmdlines_are_single_spaced_printable_ascii(s in "\\PC{0,100}") {
            if let Ok(c) = KernelCmdline::try_from(s) {
                prop_assert!(!c.as_str().contains("  "));
                prop_assert!(c.as_str().bytes().all(|b| (0x20..0x7f).contains(&b)));
            }
        }
    }
}
