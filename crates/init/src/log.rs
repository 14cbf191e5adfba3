//! Logging for PID 1: the console for the operator, `/dev/kmsg` for the
//! record.
//!
//! Every line goes to the kernel log with its syslog level, so `dmesg` holds
//! the whole boot story in order with the kernel's own messages. The kernel
//! already echoes kmsg lines below `console_loglevel` to the console; only
//! the lines it would hide are written to the console by us, so nothing is
//! printed twice. Debug lines are the exception: they stay in the kernel log.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::Write;

/// Syslog severities, as `/dev/kmsg` takes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Error = 3,
    Warn = 4,
    Info = 6,
    Debug = 7,
}

impl Level {
    fn tag(self) -> &'static str {
        match self {
            Level::Error => "ERROR",
            Level::Warn => "WARN",
            Level::Info => "INFO",
            Level::Debug => "DEBUG",
        }
    }
}

/// Where log lines go. Shared by reference; each line is one `write(2)`.
#[derive(Debug)]
pub struct Log {
    kmsg: Option<File>,
    console: Option<File>,
    /// Lines with a level below this are echoed to the console by the kernel.
    console_loglevel: u8,
}

impl Log {
    /// Opens `/dev/kmsg` and `/dev/console`. Either may be missing (very early
    /// boot, tests); the logger then writes to what it has, or to stderr.
    pub fn open() -> Self {
        let kmsg = OpenOptions::new().write(true).open("/dev/kmsg").ok();
        let console = OpenOptions::new().write(true).open("/dev/console").ok();
        let console_loglevel = std::fs::read_to_string("/proc/sys/kernel/printk")
            .ok()
            .and_then(|s| parse_console_loglevel(&s))
            .unwrap_or(7);
        Log {
            kmsg,
            console,
            console_loglevel,
        }
    }

    /// A logger that writes to stderr only (tests, and runs outside PID 1).
    pub fn stderr() -> Self {
        Log {
            kmsg: None,
            console: None,
            console_loglevel: 0,
        }
    }

    pub fn log(&self, level: Level, args: fmt::Arguments<'_>) {
        let msg = args.to_string();
        let mut echoed = false;
        if let Some(mut kmsg) = self.kmsg.as_ref() {
            let line = format!("<{}>cairn-init: {msg}\n", level as u8);
            if kmsg.write_all(line.as_bytes()).is_ok() {
                echoed = (level as u8) < self.console_loglevel;
            }
        }
        // Debug lines stay in the kernel log unless the kernel shows them
        // itself (`loglevel=8`): module loads would flood a serial console.
        if echoed || (level == Level::Debug && self.kmsg.is_some()) {
            return;
        }
        let line = format!("cairn-init: {}: {msg}\n", level.tag());
        match self.console.as_ref() {
            Some(mut console) => {
                let _ = console.write_all(line.as_bytes());
            }
            None => {
                let _ = std::io::stderr().write_all(line.as_bytes());
            }
        }
    }

    pub fn error(&self, args: fmt::Arguments<'_>) {
        self.log(Level::Error, args);
    }
    pub fn warn(&self, args: fmt::Arguments<'_>) {
        self.log(Level::Warn, args);
    }
    pub fn info(&self, args: fmt::Arguments<'_>) {
        self.log(Level::Info, args);
    }
    pub fn debug(&self, args: fmt::Arguments<'_>) {
        self.log(Level::Debug, args);
    }
}

/// The first field of `/proc/sys/kernel/printk`.
fn parse_console_loglevel(printk: &str) -> Option<u8> {
    printk.split_whitespace().next()?.parse().ok()
}

/// Formats an error with its whole `source()` chain, `a: b: c`.
pub fn chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut cur = err.source();
    while let Some(e) = cur {
        out.push_str(": ");
        out.push_str(&e.to_string());
        cur = e.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn console_loglevel_is_the_first_printk_field() {
        assert_eq!(parse_console_loglevel("4\t4\t1\t7\n"), Some(4));
        assert_eq!(parse_console_loglevel(""), None);
    }

    #[test]
    fn error_chain_lists_every_source() {
        #[derive(Debug, thiserror::Error)]
        #[error("mounting /var")]
        struct Outer(#[source] std::io::Error);
        let e = Outer(std::io::Error::other("device busy"));
        assert_eq!(chain(&e), "mounting /var: device busy");
    }
}
