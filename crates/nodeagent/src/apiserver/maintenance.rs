//! Maintenance mode: the setup token and the limit on guessing it.
//!
//! The token is either the machine config's `cluster.setup-token` or one
//! generated at boot from the kernel's CSPRNG and printed on the console,
//! the way appliances print a first-boot password. Wrong guesses are
//! counted per client address in a token bucket ([`GuessLimiter`]); an
//! empty bucket answers 429 with the time to wait.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::config::SetupToken;

/// Letters of the generated token: Crockford's base32, lower case (no
/// i, l, o or u to misread on a console).
const ALPHABET: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";

/// Groups of five characters, five groups: 125 bits.
const GROUPS: usize = 5;
const GROUP_LEN: usize = 5;

/// Why no token could be generated.
#[derive(Debug, thiserror::Error)]
#[error("cannot draw random bytes for the setup token")]
pub struct TokenError(#[source] rustls::Error);

/// A fresh token such as `7k2mq-x0c4d-...`, from the kernel's CSPRNG (the
/// call blocks until the kernel has enough entropy).
pub fn generate_setup_token() -> Result<SetupToken, TokenError> {
    let mut bytes = [0u8; GROUPS * GROUP_LEN];
    rustls::crypto::ring::default_provider()
        .secure_random
        .fill(&mut bytes)
        .map_err(|e| TokenError(rustls::Error::from(e)))?;
    let mut text = String::with_capacity(GROUPS * (GROUP_LEN + 1));
    for (i, b) in bytes.iter().enumerate() {
        if i > 0 && i % GROUP_LEN == 0 {
            text.push('-');
        }
        text.push(char::from(ALPHABET[usize::from(b & 31)]));
    }
    // The alphabet and length are within SetupToken's rules.
    SetupToken::try_from(text).map_err(|e| TokenError(rustls::Error::General(e.to_string())))
}

/// Per-address token buckets for wrong setup tokens.
#[derive(Debug)]
pub struct GuessLimiter {
    burst: u32,
    refill_every: Duration,
    buckets: HashMap<IpAddr, Bucket>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    failures: u32,
    since: Instant,
}

/// Addresses tracked at most; beyond it the fullest buckets are dropped.
const MAX_TRACKED: usize = 4096;

impl Default for GuessLimiter {
    /// Five wrong guesses in a row, then one every twelve seconds.
    fn default() -> Self {
        Self::new(5, Duration::from_secs(12))
    }
}

impl GuessLimiter {
    /// `burst` wrong guesses at once, then one per `refill_every`.
    pub fn new(burst: u32, refill_every: Duration) -> Self {
        Self {
            burst,
            refill_every,
            buckets: HashMap::new(),
        }
    }

    /// Forgives the failures earned back since the bucket's clock.
    fn settle(&mut self, client: IpAddr, now: Instant) -> Option<&mut Bucket> {
        let refill = self.refill_every;
        let bucket = self.buckets.get_mut(&client)?;
        let elapsed = now.saturating_duration_since(bucket.since);
        let earned =
            u32::try_from(elapsed.as_nanos() / refill.as_nanos().max(1)).unwrap_or(u32::MAX);
        if earned > 0 {
            bucket.failures = bucket.failures.saturating_sub(earned);
            bucket.since = if bucket.failures == 0 {
                now
            } else {
                bucket.since + refill * earned
            };
        }
        Some(bucket)
    }

    /// Before checking a guess: `Err(wait)` when `client` must wait.
    pub fn check(&mut self, client: IpAddr, now: Instant) -> Result<(), Duration> {
        let (burst, refill) = (self.burst, self.refill_every);
        match self.settle(client, now) {
            Some(bucket) if bucket.failures >= burst => {
                let next = bucket.since + refill;
                Err(next
                    .saturating_duration_since(now)
                    .max(Duration::from_secs(1)))
            }
            _ => Ok(()),
        }
    }

    /// After a wrong guess.
    pub fn record_failure(&mut self, client: IpAddr, now: Instant) {
        if self.settle(client, now).is_none() {
            if self.buckets.len() >= MAX_TRACKED {
                self.buckets.retain(|_, b| b.failures > 1);
                if self.buckets.len() >= MAX_TRACKED {
                    self.buckets.clear();
                }
            }
            self.buckets.insert(
                client,
                Bucket {
                    failures: 0,
                    since: now,
                },
            );
        }
        if let Some(bucket) = self.buckets.get_mut(&client) {
            if bucket.failures == 0 {
                bucket.since = now;
            }
            bucket.failures = bucket.failures.saturating_add(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    const A: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
    const B: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2));

    #[test]
    fn generated_tokens_are_valid_grouped_and_different() {
        let a = generate_setup_token().unwrap();
        let b = generate_setup_token().unwrap();
        assert_ne!(a, b);
        let groups: Vec<_> = a.expose().split('-').collect();
        assert_eq!(groups.len(), GROUPS);
        assert!(groups.iter().all(|g| g.len() == GROUP_LEN));
    }

    #[test]
    fn a_client_is_held_back_after_its_burst_and_others_are_not() {
        let t0 = Instant::now();
        let mut limiter = GuessLimiter::new(3, Duration::from_secs(10));
        for _ in 0..3 {
            assert!(limiter.check(A, t0).is_ok());
            limiter.record_failure(A, t0);
        }
        let wait = limiter.check(A, t0).unwrap_err();
        assert_eq!(wait, Duration::from_secs(10));
        assert!(
            limiter.check(B, t0).is_ok(),
            "another address is not punished"
        );
        let later = t0 + Duration::from_secs(10);
        assert!(limiter.check(A, later).is_ok(), "one guess earned back");
        limiter.record_failure(A, later);
        assert!(limiter.check(A, later).is_err());
        assert!(limiter.check(A, t0 + Duration::from_secs(60)).is_ok());
    }

    #[test]
    fn correct_guesses_cost_nothing() {
        let t0 = Instant::now();
        let mut limiter = GuessLimiter::new(1, Duration::from_secs(10));
        for _ in 0..100 {
            assert!(limiter.check(A, t0).is_ok());
        }
    }
}
