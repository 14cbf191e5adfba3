//! Console lines the scenarios wait for. They are the contract between the
//! tests and what `cairn-init` / `cairnd` print; keep them here, in one
//! place, so adjusting a log message means adjusting one constant.
//!
//! All patterns are regexes matched against the serial console log
//! (case-insensitive where marked `(?i)`).

/// The orderly poweroff path after an ACPI power-button press, matched in
/// this order on the console written after the press: cairn-init notices
/// the button, starts the orderly poweroff, and has unmounted STATE before
/// calling reboot(2). (cairn-init prints "watching power button ..." at
/// boot, hence "pressed".)
pub const ORDERLY_POWEROFF: [&str; 3] = [
    r"(?i)power button pressed",
    r"(?i)orderly poweroff",
    r"(?i)unmounted /var",
];

/// cairn-init has opened the power button's input device: a press from
/// now on is seen (before this, ACPI would deliver it to nobody).
pub const POWER_BUTTON_WATCHED: &str = r"(?i)watching power button";

/// cairnd refusing a machine config and carrying on with the embedded
/// default; the message between names the source and the offending key.
pub const CONFIG_REFUSED: &str = r"(?i)machine config refused: .+; running on the embedded default";

/// cairn-init mounting STATE from a SCSI disk (`/dev/sdXN`): on the VMware
/// scenario that disk can only have come through the pvscsi driver.
pub const STATE_ON_SCSI_DISK: &str = r"mounted /dev/sd[a-z]+[0-9]+ \(STATE\) on /var";

/// cairnd having fetched a machine config from `url` (given on the kernel
/// command line as `cairn.config=<url>`): either it was applied, or the
/// bytes it got were refused. A fetch that never reached the server also
/// ends in "refused", but with "fetch failed" in the line, which callers
/// must rule out.
#[must_use]
pub fn config_fetched_from(url: &str) -> String {
    format!(r"machine config (fetched|refused: {})", regex::escape(url))
}
