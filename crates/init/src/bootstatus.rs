//! What the boot loader told us: the entry booted, its boot-counter state,
//! and the firmware. systemd-boot publishes these as EFI variables under its
//! vendor GUID; they are read through efivarfs.

use std::collections::HashMap;
use std::path::Path;

/// systemd-boot's vendor GUID for the Loader* variables.
pub const LOADER_GUID: &str = "4a67b082-0a4c-41cf-b6c7-440b29bb8c4f";

/// Decodes an efivarfs file: 4 bytes of attributes, then UTF-16LE text,
/// maybe NUL-terminated.
pub fn decode_efi_string(raw: &[u8]) -> Option<String> {
    let body = raw.get(4..)?;
    let units: Vec<u16> = body
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .take_while(|&u| u != 0)
        .collect();
    String::from_utf16(&units).ok()
}

/// The state of a Boot Loader Specification entry's boot counter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Counter {
    /// No counter: the entry was blessed (or never counted).
    Good,
    /// Tries remain; the boot is on probation until blessed.
    Indeterminate { left: u32, done: u32 },
    /// No tries left: systemd-boot only picks it when nothing else boots.
    Bad { done: u32 },
}

/// Parses the counter out of an entry file name such as
/// `cairn-0.2.0+2-1.conf`.
pub fn parse_counter(entry: &str) -> Counter {
    let stem = entry.strip_suffix(".conf").unwrap_or(entry);
    let Some((_, counter)) = stem.rsplit_once('+') else {
        return Counter::Good;
    };
    let (left, done) = match counter.split_once('-') {
        Some((l, d)) => (l.parse(), d.parse()),
        None => (counter.parse(), Ok(0)),
    };
    match (left, done) {
        (Ok(0), Ok(done)) => Counter::Bad { done },
        (Ok(left), Ok(done)) => Counter::Indeterminate { left, done },
        _ => Counter::Good,
    }
}

impl Counter {
    fn describe(&self) -> (String, String, String) {
        match self {
            Counter::Good => ("good".into(), String::new(), String::new()),
            Counter::Indeterminate { left, done } => {
                ("indeterminate".into(), left.to_string(), done.to_string())
            }
            Counter::Bad { done } => ("bad".into(), "0".into(), done.to_string()),
        }
    }
}

/// Reads the boot status from efivarfs at `efivars`. Keys: `firmware`
/// (`uefi` or `bios`), `firmware-info`, `loader`, `entry`, `counter`
/// (`good|indeterminate|bad|unknown`), `tries-left`, `tries-done`.
pub fn read(efivars: &Path) -> HashMap<String, String> {
    let var = |name: &str| {
        std::fs::read(efivars.join(format!("{name}-{LOADER_GUID}")))
            .ok()
            .and_then(|raw| decode_efi_string(&raw))
    };
    let mut out = HashMap::new();
    let uefi = efivars.parent().is_some_and(Path::exists);
    out.insert("firmware".into(), if uefi { "uefi" } else { "bios" }.into());
    out.insert(
        "firmware-info".into(),
        var("LoaderFirmwareInfo").unwrap_or_default(),
    );
    out.insert("loader".into(), var("LoaderInfo").unwrap_or_default());
    // LoaderBootCountPath names the file as it was before systemd-boot
    // renamed it, so it carries the counter this boot started with.
    let counted = var("LoaderBootCountPath");
    let entry = var("LoaderEntrySelected").unwrap_or_default();
    out.insert("entry".into(), entry.clone());
    let (counter, left, done) = match counted {
        Some(path) => {
            let file = path.rsplit(['\\', '/']).next().unwrap_or(&path).to_owned();
            parse_counter(&file).describe()
        }
        None if entry.is_empty() => ("unknown".into(), String::new(), String::new()),
        None => Counter::Good.describe(),
    };
    out.insert("counter".into(), counter);
    out.insert("tries-left".into(), left);
    out.insert("tries-done".into(), done);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn efi_string(s: &str) -> Vec<u8> {
        let mut raw = vec![7, 0, 0, 0];
        for u in s.encode_utf16().chain([0]) {
            raw.extend(u.to_le_bytes());
        }
        raw
    }

    #[test]
    fn efivar_strings_decode_from_utf16() {
        assert_eq!(
            decode_efi_string(&efi_string("cairn-0.1.0.conf")).as_deref(),
            Some("cairn-0.1.0.conf")
        );
        assert_eq!(decode_efi_string(&[1, 2]), None);
    }

    #[test]
    fn boot_counters_follow_the_boot_loader_specification() {
        assert_eq!(parse_counter("cairn-0.1.0.conf"), Counter::Good);
        assert_eq!(
            parse_counter("cairn-0.2.0+3.conf"),
            Counter::Indeterminate { left: 3, done: 0 }
        );
        assert_eq!(
            parse_counter("cairn-0.2.0+2-1.conf"),
            Counter::Indeterminate { left: 2, done: 1 }
        );
        assert_eq!(
            parse_counter("cairn-0.2.0+0-3.conf"),
            Counter::Bad { done: 3 }
        );
    }

    #[test]
    fn status_reads_the_loader_variables() {
        let dir = tempfile::tempdir().unwrap();
        let efivars = dir.path().join("efivars");
        std::fs::create_dir(&efivars).unwrap();
        let put = |name: &str, val: &str| {
            std::fs::write(
                efivars.join(format!("{name}-{LOADER_GUID}")),
                efi_string(val),
            )
            .unwrap();
        };
        put("LoaderEntrySelected", "cairn-0.2.0");
        put(
            "LoaderBootCountPath",
            "\\loader\\entries\\cairn-0.2.0+3.conf",
        );
        put("LoaderFirmwareInfo", "EDK II 1.00");
        let status = read(&efivars);
        assert_eq!(status["entry"], "cairn-0.2.0");
        assert_eq!(status["counter"], "indeterminate");
        assert_eq!(status["tries-left"], "3");
        assert_eq!(status["firmware"], "uefi");
        assert_eq!(status["firmware-info"], "EDK II 1.00");
    }

    proptest! {
        #[test]
        fn entry_names_never_panic(s in ".{0,40}") {
            let _ = parse_counter(&s);
        }
    }
}
