//! Progress display: indicatif spinners on a terminal, plain
//! timestamped lines otherwise (CI logs, pipes), so long steps always say
//! what they are doing.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

/// Where progress goes.
#[derive(Debug, Clone, Copy)]
pub struct Reporter {
    interactive: bool,
    quiet: bool,
}

impl Reporter {
    /// Interactive when stderr is a terminal.
    pub fn detect() -> Self {
        Self {
            interactive: std::io::stderr().is_terminal(),
            quiet: false,
        }
    }

    /// Prints nothing (tests).
    pub fn quiet() -> Self {
        Self {
            interactive: false,
            quiet: true,
        }
    }

    /// Starts a step that shows elapsed time until finished.
    pub fn step(&self, message: &str) -> Step {
        let bar = if self.interactive {
            let pb = ProgressBar::new_spinner();
            pb.set_style(
                ProgressStyle::with_template("{spinner} {msg} [{elapsed}]")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            pb.set_message(message.to_owned());
            pb.enable_steady_tick(Duration::from_millis(120));
            Some(pb)
        } else {
            if !self.quiet {
                eprintln!("==> {message}");
            }
            None
        };
        Step {
            bar,
            message: message.to_owned(),
            started: Instant::now(),
            quiet: self.quiet,
        }
    }

    /// Starts a step that prints plain lines even on a terminal, for steps
    /// that run a child which draws its own progress (cargo).
    pub fn plain_step(&self, message: &str) -> Step {
        if !self.quiet {
            eprintln!("==> {message}");
        }
        Step {
            bar: None,
            message: message.to_owned(),
            started: Instant::now(),
            quiet: self.quiet,
        }
    }

    /// A line of information between steps.
    pub fn note(&self, message: &str) {
        if !self.quiet {
            eprintln!("    {message}");
        }
    }
}

/// A running step; finish it to print its duration.
#[derive(Debug)]
pub struct Step {
    bar: Option<ProgressBar>,
    message: String,
    started: Instant,
    quiet: bool,
}

impl Step {
    /// Marks the step done, with an optional detail (e.g. a size).
    pub fn finish(self, detail: &str) {
        let secs = self.started.elapsed().as_secs_f64();
        let line = if detail.is_empty() {
            format!("{} ({secs:.1} s)", self.message)
        } else {
            format!("{}: {detail} ({secs:.1} s)", self.message)
        };
        match &self.bar {
            Some(b) => b.finish_with_message(format!("✓ {line}")),
            None if !self.quiet => eprintln!("    done: {line}"),
            None => {}
        }
    }
}

/// Human-readable byte count.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_counts_read_naturally() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(30 * 1024 * 1024), "30.0 MiB");
    }
}
