//! [`Task`]: a plain function known by a stable name, and its signature's fingerprint.

use std::fmt;
use std::marker::PhantomData;

/// A task that workers run: a plain function `fn(A) -> R` with a serde argument and
/// result, under a name that stays the same across builds and hosts.
///
/// Declare one constant per task, next to the function, and use it on both sides: the
/// worker registers it ([`WorkerBuilder::register`](crate::WorkerBuilder::register)) and
/// the client submits it ([`ClusterExecutor::submit`](crate::ClusterExecutor::submit)).
/// Only the name and a [`fingerprint`](Self::fingerprint) of the argument and result
/// types travel; a worker looks the name up in its own registry, so nothing a peer
/// writes into the broker can make it run anything but a registered function.
///
/// # Examples
///
/// ```
/// use concurrent_futures_redis::Task;
///
/// fn square(x: u64) -> u64 {
///     x * x
/// }
///
/// pub const SQUARE: Task<u64, u64> = Task::new("square", square);
/// assert_eq!(SQUARE.name(), "square");
/// assert_eq!((SQUARE.function())(7), 49);
/// ```
pub struct Task<A, R> {
    name: &'static str,
    f: fn(A) -> R,
    _types: PhantomData<fn(A) -> R>,
}

impl<A, R> Task<A, R> {
    /// The task `f` under `name`. Names are compared byte for byte; keep them stable,
    /// since clients and workers of different builds meet through them.
    pub const fn new(name: &'static str, f: fn(A) -> R) -> Self {
        Self {
            name,
            f,
            _types: PhantomData,
        }
    }

    /// The task's name.
    pub const fn name(&self) -> &'static str {
        self.name
    }

    /// The function.
    pub const fn function(&self) -> fn(A) -> R {
        self.f
    }

    /// A hash of the name and of the argument and result type names
    /// ([`std::any::type_name`]): a worker checks it before it decodes an argument, so
    /// a task registered with another signature (another build, another type) is
    /// refused instead of misread. Stable for one build; builds with other type
    /// definitions or another compiler may differ, which is what the check is for.
    pub fn fingerprint(&self) -> u64 {
        fingerprint(
            self.name,
            std::any::type_name::<A>(),
            std::any::type_name::<R>(),
        )
    }
}

impl<A, R> Clone for Task<A, R> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<A, R> Copy for Task<A, R> {}

impl<A, R> fmt::Debug for Task<A, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Task")
            .field("name", &self.name)
            .field("argument", &std::any::type_name::<A>())
            .field("result", &std::any::type_name::<R>())
            .finish()
    }
}

/// FNV-1a over the parts, each followed by a zero byte: fixed by its definition, unlike
/// std's `DefaultHasher`, whose algorithm may change between releases.
pub(crate) fn fingerprint(name: &str, argument: &str, result: &str) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for part in [name, argument, result] {
        for &byte in part.as_bytes().iter().chain(&[0]) {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(x: u64) -> u64 {
        x
    }

    fn widen(x: u32) -> u64 {
        u64::from(x)
    }

    #[test]
    fn fingerprint_tells_signatures_and_names_apart() {
        let a = Task::new("id", id).fingerprint();
        assert_eq!(a, Task::new("id", id).fingerprint());
        assert_ne!(a, Task::new("id2", id).fingerprint());
        assert_ne!(a, Task::new("id", widen).fingerprint());
        // The separator keeps ("ab", "c") apart from ("a", "bc").
        assert_ne!(fingerprint("ab", "c", ""), fingerprint("a", "bc", ""));
    }
}
