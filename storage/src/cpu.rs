//! One process-wide pool of threads for the store's CPU work (signing
//! imports, verifying received records).
//!
//! Spawning scoped threads per batch, as before, made every batch start on
//! fresh threads: the allocator then gave each a fresh heap and reclaimed
//! the previous threads' heaps late (peak RSS +150 MiB early in a 1M import
//! with mimalloc). Persistent threads keep their heaps warm.

use std::sync::OnceLock;

/// At most this many threads sign or verify (ed25519 scales with cores; the
/// writer and the parser need theirs too).
const MAX_THREADS: usize = 4;

/// The pool, built on first use; None if the system refused the threads (the
/// callers then do the work on the calling thread).
pub(crate) fn pool() -> Option<&'static rayon::ThreadPool> {
    static POOL: OnceLock<Option<rayon::ThreadPool>> = OnceLock::new();
    POOL.get_or_init(|| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads())
            .thread_name(|i| format!("metamesh-cpu-{i}"))
            .build()
            .ok()
    })
    .as_ref()
}

/// Threads of the pool: the cores, capped at [`MAX_THREADS`]. Read once:
/// `available_parallelism` reads the cgroup's files on every call, which
/// showed in the profile of small group commits.
pub(crate) fn threads() -> usize {
    static THREADS: OnceLock<usize> = OnceLock::new();
    *THREADS.get_or_init(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
            .min(MAX_THREADS)
    })
}
