//! The workload of the book's `primes.py`, shared by the `primes` example and the
//! `process_pool` bench (both include this file with `#[path]`).

/// The numbers of `primes.py`.
pub(crate) const NUMBERS: [u64; 20] = [
    2,
    142_702_110_479_723,
    299_593_572_317_531,
    3_333_333_333_333_301,
    3_333_333_333_333_333,
    3_333_335_652_092_209,
    4_444_444_444_444_423,
    4_444_444_444_444_444,
    4_444_444_488_888_889,
    5_555_553_133_149_889,
    5_555_555_555_555_503,
    5_555_555_555_555_555,
    6_666_666_666_666_666,
    6_666_666_666_666_719,
    6_666_667_141_414_921,
    7_777_777_536_340_681,
    7_777_777_777_777_753,
    7_777_777_777_777_777,
    9_999_999_999_999_917,
    9_999_999_999_999_999,
];

/// Trial division by odd numbers up to the square root, as `primes.py` does.
pub(crate) fn is_prime(n: u64) -> bool {
    if n < 2 {
        return false;
    }
    if n == 2 {
        return true;
    }
    if n.is_multiple_of(2) {
        return false;
    }
    let root = n.isqrt();
    (3..=root).step_by(2).all(|i| !n.is_multiple_of(i))
}
