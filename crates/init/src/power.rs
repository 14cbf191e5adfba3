//! The power button: input devices that can send KEY_POWER.
//!
//! The ACPI button driver turns the firmware's power-button event (a real
//! button, IPMI, or QEMU's `system_powerdown`) into an evdev key press. We
//! find every input device whose key capability bitmap has KEY_POWER, read
//! their events in the main loop, and treat a press as a poweroff request.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

pub const EV_KEY: u16 = 1;
pub const KEY_POWER: u16 = 116;
/// `struct input_event` on 64-bit: timeval (16) + type + code + value.
const EVENT_SIZE: usize = 24;

/// Whether a `capabilities/key` bitmap (hex words, most significant first)
/// has `code` set.
pub fn has_key(bitmap: &str, code: u16) -> bool {
    let words: Vec<&str> = bitmap.split_whitespace().collect();
    let index = usize::from(code / 64);
    let Some(word) = words
        .len()
        .checked_sub(index + 1)
        .and_then(|i| words.get(i))
    else {
        return false;
    };
    u64::from_str_radix(word, 16).is_ok_and(|w| w & (1 << (code % 64)) != 0)
}

/// (type, code, value) of each whole event in `buf`.
pub fn parse_events(buf: &[u8]) -> Vec<(u16, u16, i32)> {
    buf.chunks_exact(EVENT_SIZE)
        .map(|e| {
            let ty = u16::from_ne_bytes([e[16], e[17]]);
            let code = u16::from_ne_bytes([e[18], e[19]]);
            let value = i32::from_ne_bytes([e[20], e[21], e[22], e[23]]);
            (ty, code, value)
        })
        .collect()
}

/// Event devices (`eventN` names) under `sys_root` that can send KEY_POWER.
pub fn power_button_devices(sys_root: &Path) -> Vec<String> {
    let class = sys_root.join("class/input");
    let Ok(entries) = std::fs::read_dir(&class) else {
        return Vec::new();
    };
    let mut out: Vec<String> = entries
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with("event"))
        .filter(|name| {
            std::fs::read_to_string(class.join(name).join("device/capabilities/key"))
                .is_ok_and(|bitmap| has_key(&bitmap, KEY_POWER))
        })
        .collect();
    out.sort();
    out
}

/// The open power-button devices, by event name.
#[derive(Debug, Default)]
pub struct PowerButtons {
    open: BTreeMap<String, File>,
}

impl PowerButtons {
    /// Opens devices not yet open. Returns the newly opened ones.
    pub fn refresh(&mut self, sys_root: &Path, dev_root: &Path) -> Vec<(String, io::Result<()>)> {
        let mut opened = Vec::new();
        for name in power_button_devices(sys_root) {
            if self.open.contains_key(&name) {
                continue;
            }
            let path: PathBuf = dev_root.join("input").join(&name);
            let result = std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
                .open(&path);
            match result {
                Ok(f) => {
                    self.open.insert(name.clone(), f);
                    opened.push((name, Ok(())));
                }
                Err(e) => opened.push((name, Err(e))),
            }
        }
        opened
    }

    pub fn files(&self) -> impl Iterator<Item = &File> {
        self.open.values()
    }

    /// Drains every device; true if any reported a KEY_POWER press.
    pub fn pressed(&mut self) -> bool {
        let mut pressed = false;
        let mut gone = Vec::new();
        for (name, mut file) in self.open.iter() {
            let mut buf = [0u8; EVENT_SIZE * 16];
            loop {
                match file.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        pressed |= parse_events(&buf[..n]).iter().any(|&(ty, code, value)| {
                            ty == EV_KEY && code == KEY_POWER && value == 1
                        });
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => {
                        gone.push(name.clone());
                        break;
                    }
                }
            }
        }
        for name in gone {
            self.open.remove(&name);
        }
        pressed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn acpi_power_button_bitmap_has_key_power() {
        // What the kernel shows for the ACPI "Power Button" device.
        assert!(has_key("10000000000000 0", KEY_POWER));
        assert!(!has_key("0", KEY_POWER));
        // Keys 0..63 only (a plain keyboard's first word).
        assert!(!has_key("0 ffffffffffffffff", KEY_POWER));
        assert!(has_key("ffffffffffffffff ffffffffffffffff", KEY_POWER));
    }

    #[test]
    fn a_key_press_event_is_decoded() {
        let mut buf = vec![0u8; EVENT_SIZE * 2];
        buf[16..18].copy_from_slice(&EV_KEY.to_ne_bytes());
        buf[18..20].copy_from_slice(&KEY_POWER.to_ne_bytes());
        buf[20..24].copy_from_slice(&1i32.to_ne_bytes());
        assert_eq!(parse_events(&buf), [(EV_KEY, KEY_POWER, 1), (0, 0, 0)]);
    }

    proptest! {
        #[test]
        fn bitmap_parser_never_panics(s in "[0-9a-fA-Fx ]{0,80}", code in any::<u16>()) {
            let _ = has_key(&s, code);
        }

        #[test]
        fn partial_events_are_ignored(bytes in proptest::collection::vec(any::<u8>(), 0..100)) {
            prop_assert_eq!(parse_events(&bytes).len(), bytes.len() / EVENT_SIZE);
        }
    }
}
