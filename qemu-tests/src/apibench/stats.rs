//! Percentiles and medians over what one round measured.
//!
//! Percentiles use the nearest-rank definition (the smallest sample that at
//! least p % of the samples do not exceed), so every reported latency is one
//! a request really had; no interpolation invents a value between two.

use std::time::Duration;

/// The nearest-rank `p`-th percentile of `sorted` (ascending), `p` in
/// (0, 100]. `None` for an empty slice or a `p` outside that range.
#[must_use]
pub fn percentile(sorted: &[Duration], p: f64) -> Option<Duration> {
    if sorted.is_empty() || !(p > 0.0 && p <= 100.0) {
        return None;
    }
    let n = sorted.len() as f64;
    let rank = (p / 100.0 * n).ceil();
    #[expect(
        clippy::cast_possible_truncation,
        reason = "rank is in 1..=len: p is in (0, 100]"
    )]
    let index = (rank as usize).clamp(1, sorted.len()) - 1;
    sorted.get(index).copied()
}

/// The median of `values` (the mean of the middle two for an even count);
/// NaN when there are none.
#[must_use]
pub fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    match n {
        0 => f64::NAN,
        _ if n % 2 == 1 => sorted[n / 2],
        _ => f64::midpoint(sorted[n / 2 - 1], sorted[n / 2]),
    }
}

/// What one round of one target measured.
#[derive(Debug, Clone, PartialEq)]
pub struct RoundStats {
    /// Requests that completed with 200 and a JSON body.
    pub requests: u64,
    /// Requests that failed (connect, handshake, status, body).
    pub errors: u64,
    /// Completed requests per second of wall time.
    pub requests_per_s: f64,
    /// Median latency, connect to last body byte.
    pub p50: Duration,
    /// 99th percentile latency.
    pub p99: Duration,
    /// Slowest request.
    pub max: Duration,
    /// Server CPU time (user + system) per completed request.
    pub server_cpu_per_request: Duration,
}

impl RoundStats {
    /// Summarises a round from its latencies (any order), error count, wall
    /// time and the server's CPU time over the round. `None` when no request
    /// completed.
    #[must_use]
    pub fn from_round(
        mut latencies: Vec<Duration>,
        errors: u64,
        wall: Duration,
        server_cpu: Duration,
    ) -> Option<Self> {
        latencies.sort_unstable();
        let requests = u64::try_from(latencies.len()).ok()?;
        let requests_u32 = u32::try_from(requests).ok()?;
        let requests_per_s = requests as f64 / wall.as_secs_f64();
        Some(Self {
            requests,
            errors,
            requests_per_s,
            p50: percentile(&latencies, 50.0)?,
            p99: percentile(&latencies, 99.0)?,
            max: *latencies.last()?,
            server_cpu_per_request: server_cpu.checked_div(requests_u32)?,
        })
    }
}

/// One target's rounds folded into medians, the numbers the report shows.
#[derive(Debug, Clone, PartialEq)]
pub struct TargetSummary {
    /// Median over rounds of requests per second.
    pub requests_per_s: f64,
    /// Median over rounds of the round's p50, in milliseconds.
    pub p50_ms: f64,
    /// Median over rounds of the round's p99, in milliseconds.
    pub p99_ms: f64,
    /// Median over rounds of server CPU per request, in milliseconds.
    pub server_cpu_ms_per_request: f64,
    /// Errors over all rounds.
    pub errors: u64,
}

impl TargetSummary {
    /// Medians over `rounds`.
    #[must_use]
    pub fn of(rounds: &[RoundStats]) -> Self {
        let over = |f: fn(&RoundStats) -> f64| median(&rounds.iter().map(f).collect::<Vec<_>>());
        Self {
            requests_per_s: over(|r| r.requests_per_s),
            p50_ms: over(|r| ms(r.p50)),
            p99_ms: over(|r| ms(r.p99)),
            server_cpu_ms_per_request: over(|r| ms(r.server_cpu_per_request)),
            errors: rounds.iter().map(|r| r.errors).sum(),
        }
    }
}

/// A duration in milliseconds, for tables and JSON.
#[must_use]
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn micros(values: &[u64]) -> Vec<Duration> {
        values.iter().copied().map(Duration::from_micros).collect()
    }

    #[test]
    fn nearest_rank_percentiles_pick_real_samples() {
        let sorted = micros(&[10, 20, 30, 40, 50, 60, 70, 80, 90, 100]);
        assert_eq!(percentile(&sorted, 50.0), Some(Duration::from_micros(50)));
        assert_eq!(percentile(&sorted, 99.0), Some(Duration::from_micros(100)));
        assert_eq!(percentile(&sorted, 10.0), Some(Duration::from_micros(10)));
        assert_eq!(percentile(&sorted, 11.0), Some(Duration::from_micros(20)));
        assert_eq!(percentile(&sorted, 100.0), Some(Duration::from_micros(100)));
    }

    #[test]
    fn p99_of_a_hundred_samples_is_the_ninety_ninth() {
        let sorted: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&sorted, 99.0), Some(Duration::from_millis(99)));
        assert_eq!(percentile(&sorted, 50.0), Some(Duration::from_millis(50)));
    }

    #[test]
    fn percentiles_of_nothing_or_out_of_range_are_none() {
        assert_eq!(percentile(&[], 50.0), None);
        let one = micros(&[7]);
        assert_eq!(percentile(&one, 0.0), None);
        assert_eq!(percentile(&one, 100.5), None);
        assert_eq!(percentile(&one, f64::NAN), None);
        assert_eq!(percentile(&one, 0.1), Some(Duration::from_micros(7)));
    }

    #[test]
    fn median_averages_the_middle_pair_of_an_even_count() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
        assert!(median(&[]).is_nan());
    }

    #[test]
    fn a_round_is_summarised_from_unsorted_latencies() {
        let stats = RoundStats::from_round(
            micros(&[300, 100, 200, 400]),
            1,
            Duration::from_secs(2),
            Duration::from_millis(2),
        )
        .unwrap();
        assert_eq!(stats.requests, 4);
        assert_eq!(stats.errors, 1);
        assert!((stats.requests_per_s - 2.0).abs() < 1e-9);
        assert_eq!(stats.p50, Duration::from_micros(200));
        assert_eq!(stats.p99, Duration::from_micros(400));
        assert_eq!(stats.max, Duration::from_micros(400));
        assert_eq!(stats.server_cpu_per_request, Duration::from_micros(500));
        assert_eq!(
            RoundStats::from_round(Vec::new(), 3, Duration::from_secs(1), Duration::ZERO),
            None
        );
    }

    #[test]
    fn a_summary_takes_the_median_round_not_the_mean() {
        let round = |rps: f64, p50_us: u64| RoundStats {
            requests: 10,
            errors: 1,
            requests_per_s: rps,
            p50: Duration::from_micros(p50_us),
            p99: Duration::from_micros(p50_us * 2),
            max: Duration::from_micros(p50_us * 3),
            server_cpu_per_request: Duration::from_micros(100),
        };
        let summary =
            TargetSummary::of(&[round(100.0, 1000), round(900.0, 9000), round(110.0, 1100)]);
        assert!((summary.requests_per_s - 110.0).abs() < 1e-9);
        assert!((summary.p50_ms - 1.1).abs() < 1e-9);
        assert!((summary.p99_ms - 2.2).abs() < 1e-9);
        assert!((summary.server_cpu_ms_per_request - 0.1).abs() < 1e-9);
        assert_eq!(summary.errors, 3);
    }

    proptest! {
        #[test]
        fn a_percentile_is_a_sample_with_enough_samples_at_or_below_it(
            mut values in proptest::collection::vec(0u64..1_000_000, 1..200),
            p in 0.01f64..=100.0,
        ) {
            values.sort_unstable();
            let sorted = micros(&values);
            let got = percentile(&sorted, p).unwrap();
            prop_assert!(sorted.contains(&got));
            let at_or_below = sorted.iter().filter(|d| **d <= got).count();
            let share = at_or_below as f64 / sorted.len() as f64 * 100.0;
            prop_assert!(share + 1e-9 >= p);
            let below = sorted.iter().filter(|d| **d < got).count();
            let share_below = below as f64 / sorted.len() as f64 * 100.0;
            prop_assert!(share_below < p);
        }
    }
}
