//! Fault injection: the delay and the verdict of each request.

use std::hash::{BuildHasher, RandomState};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::config::ServerConfig;

/// What the server does with one request: wait `delay`, then answer `418 I'm a Teapot` if
/// `error`, or serve the content otherwise.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResponsePlan {
    /// How long the server waits before it answers.
    pub delay: Duration,
    /// Whether the answer is `418 I'm a Teapot` instead of the content.
    pub error: bool,
}

/// The delay and the verdict the server applies to a `GET` or `HEAD` of `path`.
///
/// `path` is the request target's path exactly as the client sent it, without the query string
/// (`"/flags/br/br.gif"`). With a [seed](ServerConfig::seed) the result depends only on the
/// seed, the path and the configured delays and rate, so it is the same on every request and in
/// every run; without one each call draws anew, as the server does for each request.
///
/// # The formula
///
/// With seed `s`, delays `min..=max` and error rate `r`:
///
/// 1. `h` = FNV-1a 64 of the path's bytes (offset basis `0xcbf29ce484222325`, prime
///    `0x100000001b3`);
/// 2. `x = s ^ h`; `a` and `b` are the first two outputs of SplitMix64 started from state `x`
///    (`a = mix(x + γ)`, `b = mix(x + 2γ)` with `γ = 0x9e3779b97f4a7c15`, wrapping, and
///    SplitMix64's finaliser `mix`);
/// 3. `delay = min + floor((max − min in nanoseconds) × (a >> 11) / 2⁵³)` nanoseconds;
/// 4. `error = (b >> 11) / 2⁵³ < r` (so `r = 0` never fails and `r = 1` always does).
///
/// Without a seed, `s` is drawn at random for every request.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use slow_server::{ServerConfig, plan_for};
///
/// let config = ServerConfig::new()
///     .delay(Duration::from_millis(500), Duration::from_secs(5))
///     .error_rate(0.25)
///     .seed(7);
/// let plan = plan_for(&config, "/flags/br/br.gif");
/// assert_eq!(plan, plan_for(&config, "/flags/br/br.gif"));
/// assert!(plan.delay >= Duration::from_millis(500) && plan.delay <= Duration::from_secs(5));
/// ```
pub fn plan_for(config: &ServerConfig, path: &str) -> ResponsePlan {
    let seed = config.seed.unwrap_or_else(random_seed);
    plan_with_seed(
        seed,
        path,
        config.min_delay,
        config.max_delay,
        config.error_rate,
    )
}

/// The formula of [`plan_for`] for one seed.
pub(crate) fn plan_with_seed(
    seed: u64,
    path: &str,
    min: Duration,
    max: Duration,
    rate: f64,
) -> ResponsePlan {
    let x = seed ^ fnv1a64(path.as_bytes());
    let a = mix(x.wrapping_add(GAMMA));
    let b = mix(x.wrapping_add(GAMMA.wrapping_mul(2)));
    let span = max.saturating_sub(min).as_nanos();
    // floor(span × a53 / 2^53), computed in two halves so that it cannot overflow for any
    // Duration (span < 2^94 and a53 < 2^53).
    let a53 = u128::from(a >> 11);
    let offset = (span >> 53) * a53 + (((span & ((1 << 53) - 1)) * a53) >> 53);
    // offset <= span, and min + span = max fits in a Duration.
    let delay = min.saturating_add(nanos(offset));
    let error = unit(b) < rate;
    ResponsePlan { delay, error }
}

const GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;

/// A `Duration` of `n` nanoseconds, saturating at `Duration::MAX`.
fn nanos(n: u128) -> Duration {
    const PER_SEC: u128 = 1_000_000_000;
    let secs = u64::try_from(n / PER_SEC).unwrap_or(u64::MAX);
    // The remainder is below 10^9, so it fits in a u32.
    let sub = u32::try_from(n % PER_SEC).unwrap_or(0);
    Duration::new(secs, sub)
}

/// SplitMix64's output function.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A number in `[0, 1)` from the high 53 bits of `z`.
fn unit(z: u64) -> f64 {
    (z >> 11) as f64 / (1u64 << 53) as f64
}

/// FNV-1a, 64 bits.
pub(crate) fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// A fresh random seed: SplitMix64 over a process-wide counter, keyed once from the
/// operating system's randomness (through `RandomState`).
fn random_seed() -> u64 {
    static KEY: OnceLock<u64> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let key = *KEY.get_or_init(|| RandomState::new().hash_one(0x5eed_u64));
    mix(key.wrapping_add(COUNTER.fetch_add(GAMMA, Ordering::Relaxed)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Duration = Duration::from_millis(500);
    const MAX: Duration = Duration::from_secs(5);

    #[test]
    fn fnv_matches_the_reference_values() {
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn splitmix_matches_the_reference_sequence() {
        // The first outputs of SplitMix64 seeded with 1234567 (from its reference code).
        let x = 1_234_567u64;
        assert_eq!(mix(x.wrapping_add(GAMMA)), 6_457_827_717_110_365_317);
        assert_eq!(
            mix(x.wrapping_add(GAMMA.wrapping_mul(2))),
            3_203_168_211_198_807_973
        );
    }

    #[test]
    fn seeded_plans_are_stable_and_within_bounds() {
        let a = plan_with_seed(1, "/flags/br/br.gif", MIN, MAX, 0.25);
        let b = plan_with_seed(1, "/flags/br/br.gif", MIN, MAX, 0.25);
        assert_eq!(a, b);
        for cc in crate::country_codes() {
            let path = format!("/flags/{0}/{0}.gif", cc.to_ascii_lowercase());
            let plan = plan_with_seed(99, &path, MIN, MAX, 0.25);
            assert!(plan.delay >= MIN && plan.delay <= MAX);
        }
    }

    #[test]
    fn seeds_and_paths_change_the_plan() {
        let base = plan_with_seed(1, "/flags/br/br.gif", MIN, MAX, 0.5);
        assert_ne!(base, plan_with_seed(2, "/flags/br/br.gif", MIN, MAX, 0.5));
        assert_ne!(base, plan_with_seed(1, "/flags/de/de.gif", MIN, MAX, 0.5));
    }

    #[test]
    fn fixed_delay_and_extreme_rates() {
        for seed in 0..100 {
            let never = plan_with_seed(seed, "/x", MIN, MIN, 0.0);
            assert_eq!(
                never,
                ResponsePlan {
                    delay: MIN,
                    error: false
                }
            );
            assert!(plan_with_seed(seed, "/x", MIN, MIN, 1.0).error);
        }
    }

    #[test]
    fn huge_delays_do_not_overflow() {
        let plan = plan_with_seed(3, "/x", Duration::ZERO, Duration::MAX, 0.5);
        assert!(plan.delay <= Duration::MAX);
    }

    #[test]
    fn the_error_share_follows_the_rate() {
        let errors = (0..10_000u64)
            .filter(|&seed| plan_with_seed(seed, "/flags/br/br.gif", MIN, MAX, 0.25).error)
            .count();
        assert!(
            (2_200..2_800).contains(&errors),
            "{errors} errors in 10,000"
        );
    }

    #[test]
    fn random_seeds_differ() {
        assert_ne!(random_seed(), random_seed());
    }
}
