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

/// cairnd in maintenance mode printing the setup token a bootstrap needs;
/// capture group 1 is the token.
pub const SETUP_TOKEN: &str = r"cairnd: setup token: (\S+)";

/// cairnd in maintenance mode printing the SHA-256 fingerprint of its
/// self-signed API certificate; capture group 1 is `sha256:<hex>`.
pub const MAINTENANCE_FINGERPRINT: &str =
    r"cairnd: certificate fingerprint: (sha256:[0-9a-f]{64})\b";

/// cairnd refusing a bootstrap (or join) whose setup token is wrong.
pub const SETUP_TOKEN_REFUSED: &str = r"setup token refused";

/// A poweroff asked for through the API: cairnd calls cairn-init over
/// D-Bus, which takes the same orderly path as the power button.
pub const API_POWEROFF: [&str; 3] = [
    r"(?i)poweroff requested over D-Bus",
    r"(?i)orderly poweroff",
    r"(?i)unmounted /var",
];

/// A reboot asked for through the API, up to STATE being unmounted.
pub const API_REBOOT: [&str; 3] = [
    r"(?i)reboot requested over D-Bus",
    r"(?i)orderly reboot",
    r"(?i)unmounted /var",
];

/// cairn-init's first line of a boot: after a reset or a restart, its
/// appearance in the console written since proves the machine booted again.
pub const INIT_STARTING: &str = r"cairn-init: Cairn \S+ starting";

/// Capture group 1 of `pattern` in `line` (for lines returned by the
/// console waits, such as [`SETUP_TOKEN`]).
#[must_use]
pub fn capture(pattern: &str, line: &str) -> Option<String> {
    let regex = regex::Regex::new(pattern).ok()?;
    Some(regex.captures(line)?.get(1)?.as_str().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_maintenance_announcement_yields_token_and_fingerprint() {
        let hex = "ab".repeat(32);
        let console = format!(
            "cairnd: maintenance mode: this node belongs to no cluster.\n\
             cairnd: setup token: k3y-Tok_en.1\n\
             cairnd: certificate fingerprint: sha256:{hex}\n"
        );
        let token_line = console.lines().nth(1).unwrap_or_default();
        let fp_line = console.lines().nth(2).unwrap_or_default();
        assert_eq!(
            capture(SETUP_TOKEN, token_line).as_deref(),
            Some("k3y-Tok_en.1")
        );
        assert_eq!(
            capture(MAINTENANCE_FINGERPRINT, fp_line),
            Some(format!("sha256:{hex}"))
        );
        assert_eq!(
            capture(
                MAINTENANCE_FINGERPRINT,
                "cairnd: certificate fingerprint: sha256:abc"
            ),
            None
        );
        assert_eq!(capture(SETUP_TOKEN, fp_line), None);
    }
}
