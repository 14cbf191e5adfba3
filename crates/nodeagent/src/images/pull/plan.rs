//! The decisions of a pull, without I/O: which sources to try in which
//! order, whether a failure is worth a retry and after how long, when to
//! move to the next source, what to tell the operator when every source
//! failed, and when a progress event is due.
//!
//! The async shell in [`super`] asks a [`SourceWalk`] what to do after
//! every attempt and does exactly that, so every path through mirrors,
//! retries and fallbacks is tested here in memory.

use std::time::Duration;

use crate::config::{RegistryConfig, RegistryHost};

/// Whether a source is a configured mirror or the registry the reference
/// names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SourceRole {
    /// A `mirrors` entry.
    Mirror,
    /// The reference's own registry.
    Upstream,
}

impl SourceRole {
    /// The lower-case name used in progress events.
    pub const fn as_str(self) -> &'static str {
        match self {
            SourceRole::Mirror => "mirror",
            SourceRole::Upstream => "upstream",
        }
    }
}

/// A registry a pull may fetch from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Source {
    /// Where.
    pub host: RegistryHost,
    /// Why it is tried.
    pub role: SourceRole,
}

/// The sources for an image on `upstream`: its mirrors in configured
/// order, then `upstream` itself.
pub fn sources_for(upstream: &RegistryHost, registries: &[RegistryConfig]) -> Vec<Source> {
    let mirrors = registries
        .iter()
        .find(|r| &r.host == upstream)
        .map(|r| r.mirrors.as_slice())
        .unwrap_or_default();
    mirrors
        .iter()
        .map(|host| Source {
            host: host.clone(),
            role: SourceRole::Mirror,
        })
        .chain(std::iter::once(Source {
            host: upstream.clone(),
            role: SourceRole::Upstream,
        }))
        .collect()
}

/// How an attempt failed, as far as the decisions care.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FailureKind {
    /// Connection refused or reset, timeout, 5xx, 429: may pass.
    Transient,
    /// 401/403: the credentials are wrong; asking again will not help.
    Unauthorized,
    /// 404 or the registry's *_UNKNOWN codes.
    NotFound,
    /// The content does not match its digest, or is not a usable image.
    Invalid,
    /// The source answered something else it will answer again (a 400, a
    /// protocol violation).
    Refused,
}

/// One failed attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// Its class.
    pub kind: FailureKind,
    /// The error chain, for the operator.
    pub detail: String,
}

/// Retry policy per source: attempts and exponential backoff.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts per source for transient failures (at least 1).
    pub attempts: u32,
    /// Delay before the second attempt; doubled for each next one.
    pub base: Duration,
    /// No delay is longer than this.
    pub cap: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            attempts: 3,
            base: Duration::from_millis(250),
            cap: Duration::from_secs(4),
        }
    }
}

impl RetryPolicy {
    /// The delay before attempt `n + 1` after `n` failed attempts
    /// (`n >= 1`).
    pub fn delay(&self, failed: u32) -> Duration {
        let factor = 1u32 << failed.saturating_sub(1).min(16);
        self.base.saturating_mul(factor).min(self.cap)
    }
}

/// What the shell does next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Try this source (again, after the delay).
    Try {
        /// The source.
        source: Source,
        /// How long to wait first.
        after: Duration,
    },
    /// Every source failed.
    GiveUp(Verdict),
}

/// Why the thing could not be fetched from any source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Some source served content that does not match its digest.
    Invalid {
        /// The source's error.
        detail: String,
    },
    /// Credentials were refused by these registries.
    AuthFailed {
        /// Each registry and its error.
        registries: Vec<(RegistryHost, String)>,
    },
    /// The upstream registry does not have it.
    NotFound {
        /// The upstream's error.
        detail: String,
    },
    /// No source could be reached or gave a usable answer.
    Unreachable {
        /// Each source tried, with its last error.
        tried: Vec<(RegistryHost, String)>,
    },
}

/// Walks the sources of one fetch (a manifest or a blob); see the module
/// docs.
#[derive(Clone, Debug)]
pub struct SourceWalk {
    sources: Vec<Source>,
    policy: RetryPolicy,
    at: usize,
    failed_here: u32,
    outcomes: Vec<(Source, Failure)>,
}

impl SourceWalk {
    /// A walk over `sources` (tried in order).
    pub fn new(sources: Vec<Source>, policy: RetryPolicy) -> Self {
        Self {
            sources,
            policy,
            at: 0,
            failed_here: 0,
            outcomes: Vec::new(),
        }
    }

    /// The first step.
    pub fn start(&self) -> Step {
        match self.sources.first() {
            Some(source) => Step::Try {
                source: source.clone(),
                after: Duration::ZERO,
            },
            None => Step::GiveUp(Verdict::Unreachable { tried: Vec::new() }),
        }
    }

    /// The attempt on the current source failed; what now.
    pub fn failed(&mut self, failure: Failure) -> Step {
        let Some(current) = self.sources.get(self.at).cloned() else {
            return Step::GiveUp(self.verdict());
        };
        self.failed_here = self.failed_here.saturating_add(1);
        if failure.kind == FailureKind::Transient && self.failed_here < self.policy.attempts {
            return Step::Try {
                source: current,
                after: self.policy.delay(self.failed_here),
            };
        }
        self.outcomes.push((current, failure));
        self.at += 1;
        self.failed_here = 0;
        match self.sources.get(self.at) {
            Some(next) => Step::Try {
                source: next.clone(),
                after: Duration::ZERO,
            },
            None => Step::GiveUp(self.verdict()),
        }
    }

    /// Why the walk ended without success, from every source's last
    /// failure: bad content first (it is never the network's fault), then
    /// refused credentials, then the upstream saying it has no such thing;
    /// anything else is unreachable.
    fn verdict(&self) -> Verdict {
        if let Some((_, f)) = self
            .outcomes
            .iter()
            .find(|(_, f)| f.kind == FailureKind::Invalid)
        {
            return Verdict::Invalid {
                detail: f.detail.clone(),
            };
        }
        let refused: Vec<(RegistryHost, String)> = self
            .outcomes
            .iter()
            .filter(|(_, f)| f.kind == FailureKind::Unauthorized)
            .map(|(s, f)| (s.host.clone(), f.detail.clone()))
            .collect();
        if !refused.is_empty() {
            return Verdict::AuthFailed {
                registries: refused,
            };
        }
        if let Some((_, f)) = self
            .outcomes
            .iter()
            .find(|(s, f)| s.role == SourceRole::Upstream && f.kind == FailureKind::NotFound)
        {
            return Verdict::NotFound {
                detail: f.detail.clone(),
            };
        }
        Verdict::Unreachable {
            tried: self
                .outcomes
                .iter()
                .map(|(s, f)| (s.host.clone(), f.detail.clone()))
                .collect(),
        }
    }
}

/// Decides when a blob's progress is worth an event: at the start, at the
/// end, and otherwise at most every `interval` and only after at least
/// `min_bytes` more, so a fast local pull does not drown the client.
#[derive(Clone, Debug)]
pub struct ProgressGate<T> {
    interval: Duration,
    min_bytes: u64,
    last: Option<(T, u64)>,
}

impl<T: Copy + std::ops::Sub<T, Output = Duration>> ProgressGate<T> {
    /// A gate for one blob.
    pub fn new(interval: Duration, min_bytes: u64) -> Self {
        Self {
            interval,
            min_bytes,
            last: None,
        }
    }

    /// Whether to report `done` of `total` bytes at `now`.
    pub fn should_report(&mut self, now: T, done: u64, total: u64) -> bool {
        let due = match self.last {
            None => true,
            Some(_) if done >= total => true,
            Some((at, bytes)) => {
                now - at >= self.interval && done.saturating_sub(bytes) >= self.min_bytes
            }
        };
        if due {
            self.last = Some((now, done));
        }
        due
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn host(s: &str) -> RegistryHost {
        RegistryHost::try_from(s.to_owned()).unwrap()
    }

    fn source(s: &str, role: SourceRole) -> Source {
        Source {
            host: host(s),
            role,
        }
    }

    fn fail(kind: FailureKind) -> Failure {
        Failure {
            detail: format!("{kind:?}"),
            kind,
        }
    }

    fn registry(h: &str, mirrors: &[&str]) -> RegistryConfig {
        RegistryConfig {
            host: host(h),
            mirrors: mirrors.iter().map(|m| host(m)).collect(),
            auth: None,
            ca: None,
            plain_http: false,
        }
    }

    #[test]
    fn mirrors_come_first_in_configured_order_then_the_upstream() {
        let config = [
            registry("other.site.internal", &["x.site.internal"]),
            registry(
                "registry.site.internal",
                &["m1.site.internal", "m2.site.internal"],
            ),
        ];
        let got = sources_for(&host("registry.site.internal"), &config);
        assert_eq!(
            got,
            vec![
                source("m1.site.internal", SourceRole::Mirror),
                source("m2.site.internal", SourceRole::Mirror),
                source("registry.site.internal", SourceRole::Upstream),
            ]
        );
        let unconfigured = sources_for(&host("lab.site.internal"), &config);
        assert_eq!(
            unconfigured,
            vec![source("lab.site.internal", SourceRole::Upstream)]
        );
    }

    #[test]
    fn transient_failures_are_retried_with_doubling_capped_delays() {
        let policy = RetryPolicy {
            attempts: 4,
            base: Duration::from_millis(100),
            cap: Duration::from_millis(300),
        };
        let up = source("registry.site.internal", SourceRole::Upstream);
        let mut walk = SourceWalk::new(vec![up.clone()], policy);
        let delays: Vec<Step> = (0..3)
            .map(|_| walk.failed(fail(FailureKind::Transient)))
            .collect();
        let expect = |ms| Step::Try {
            source: up.clone(),
            after: Duration::from_millis(ms),
        };
        assert_eq!(delays, vec![expect(100), expect(200), expect(300)]);
        assert!(matches!(
            walk.failed(fail(FailureKind::Transient)),
            Step::GiveUp(Verdict::Unreachable { ref tried }) if tried.len() == 1
        ));
    }

    #[test]
    fn a_mirror_that_is_down_falls_back_to_the_upstream() {
        let mirror = source("mirror.site.internal", SourceRole::Mirror);
        let up = source("registry.site.internal", SourceRole::Upstream);
        let mut walk = SourceWalk::new(vec![mirror.clone(), up.clone()], RetryPolicy::default());
        assert_eq!(
            walk.start(),
            Step::Try {
                source: mirror,
                after: Duration::ZERO
            }
        );
        walk.failed(fail(FailureKind::Transient));
        walk.failed(fail(FailureKind::Transient));
        assert_eq!(
            walk.failed(fail(FailureKind::Transient)),
            Step::Try {
                source: up,
                after: Duration::ZERO
            }
        );
    }

    #[test]
    fn auth_not_found_and_bad_content_are_never_retried_on_the_same_source() {
        for kind in [
            FailureKind::Unauthorized,
            FailureKind::NotFound,
            FailureKind::Invalid,
            FailureKind::Refused,
        ] {
            let up = source("registry.site.internal", SourceRole::Upstream);
            let mut walk = SourceWalk::new(vec![up], RetryPolicy::default());
            assert!(
                matches!(walk.failed(fail(kind.clone())), Step::GiveUp(_)),
                "{kind:?} retried"
            );
        }
    }

    #[test]
    fn the_verdict_names_what_went_wrong_where() {
        let mirror = source("mirror.site.internal", SourceRole::Mirror);
        let up = source("registry.site.internal", SourceRole::Upstream);
        let run = |first: FailureKind, second: FailureKind| {
            let mut walk =
                SourceWalk::new(vec![mirror.clone(), up.clone()], RetryPolicy::default());
            walk.failed(fail(first));
            match walk.failed(fail(second)) {
                Step::GiveUp(v) => v,
                other => panic!("expected a verdict, got {other:?}"),
            }
        };
        assert!(matches!(
            run(FailureKind::NotFound, FailureKind::Invalid),
            Verdict::Invalid { .. }
        ));
        assert!(matches!(
            run(FailureKind::NotFound, FailureKind::Unauthorized),
            Verdict::AuthFailed { ref registries } if registries[0].0 == up.host
        ));
        assert!(matches!(
            run(FailureKind::Refused, FailureKind::NotFound),
            Verdict::NotFound { .. }
        ));
        // The mirror lacking it while the upstream is down is not "not found".
        assert!(matches!(
            run(FailureKind::NotFound, FailureKind::Refused),
            Verdict::Unreachable { ref tried } if tried.len() == 2
        ));
    }

    #[test]
    fn progress_is_reported_at_start_end_and_at_most_every_interval() {
        let mut gate = ProgressGate::<Duration>::new(Duration::from_millis(100), 10);
        let t = Duration::from_millis;
        assert!(gate.should_report(t(0), 0, 100));
        assert!(!gate.should_report(t(50), 40, 100));
        assert!(gate.should_report(t(150), 45, 100));
        assert!(gate.should_report(t(400), 90, 100));
        assert!(!gate.should_report(t(410), 95, 100));
        assert!(gate.should_report(t(420), 100, 100));
    }

    proptest! {
        #[test]
        fn every_walk_ends_within_sources_times_attempts(
            kinds in proptest::collection::vec(0u8..5, 0..40),
            mirrors in 0usize..4,
            attempts in 1u32..5,
        ) {
            let mut sources: Vec<Source> = (0..mirrors)
                .map(|i| source(&format!("m{i}.site.internal"), SourceRole::Mirror))
                .collect();
            sources.push(source("registry.site.internal", SourceRole::Upstream));
            let policy = RetryPolicy { attempts, ..RetryPolicy::default() };
            let mut walk = SourceWalk::new(sources.clone(), policy);
            let budget = sources.len() * attempts as usize;
            let mut steps = 0usize;
            for k in kinds.iter().cycle().take(budget + 1) {
                let kind = match k {
                    0 => FailureKind::Transient,
                    1 => FailureKind::Unauthorized,
                    2 => FailureKind::NotFound,
                    3 => FailureKind::Invalid,
                    _ => FailureKind::Refused,
                };
                steps += 1;
                if let Step::GiveUp(_) = walk.failed(fail(kind)) {
                    break;
                }
                prop_assert!(steps < budget, "walk exceeded its budget");
            }
            prop_assert!(steps <= budget || kinds.is_empty());
        }
    }
}
