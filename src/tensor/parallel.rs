//! Threads for the kernels: one process-wide [rayon] pool, and a fixed way of cutting work into
//! chunks so that **results never depend on the number of threads**.
//!
//! # How many threads
//!
//! [`set_num_threads`] sets the count for the whole process; before it is called, the environment
//! variable `TAPEGRAD_NUM_THREADS` does (read once, at the first kernel that could split); without
//! either, every core the process may use ([`std::thread::available_parallelism`]). With 1 thread
//! there is no pool at all: every kernel runs on the calling thread, as it did before threads.
//!
//! # Deterministic at any thread count
//!
//! A kernel splits its output into chunks whose boundaries depend only on the shapes (a fixed
//! number of elements, or of rows), never on the thread count or on scheduling. Every output
//! element is computed by exactly one chunk, in the same order of operations whatever thread runs
//! it; a reduction over many chunks ([`sum`](crate::Tensor::sum_all) of a large tensor, say) first
//! reduces each chunk of [`REDUCE_CHUNK`] elements, then the chunks' partial results in chunk
//! order, and it does so with 1 thread too. So 1, 2 or 64 threads give bitwise the same values
//! and gradients (`tests/determinism.rs` checks every registry sample and the benchmark
//! workloads). The matrix product splits the rows of its output, so each element's dot product
//! runs the same code in the same order.
//!
//! # When a kernel splits
//!
//! Only when it has at least [`min_parallel_elements`] elements of output (or of input, for a
//! reduction) and more than one thread: a task handed to the pool costs a few microseconds, which
//! a small kernel does not win back. The default comes from measuring the elementwise and row
//! kernels on this project's benchmark machine (see BENCHMARKS.md); since the split never changes
//! a result, [`set_min_parallel_elements`] can move it freely (to 0 to split everything, as the
//! determinism test does).
//!
//! [rayon]: https://docs.rs/rayon

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

/// The environment variable read for the thread count when [`set_num_threads`] was not called:
/// a positive integer, or 0 for every core.
pub const THREADS_ENV: &str = "TAPEGRAD_NUM_THREADS";

/// Elements per chunk of a reduction that spans many chunks (a fixed number, so that the order of
/// additions never depends on the thread count).
pub const REDUCE_CHUNK: usize = 1 << 14;

/// Default for [`min_parallel_elements`]: below this much work (elements read and written) a
/// kernel stays on the calling thread.
///
/// Chosen by measurement (2 threads, the profiler's end-to-end step times, two runs each,
/// 2026-12-02): waking the pool's sleeping workers costs more than splitting saves on kernels
/// of a few hundred kilobytes. W7 (tensors of ≤ 131 072 elements): 2^15 → 1.42 / 1.20 ms, 2^18 →
/// 1.16 / 1.15 ms, 2^20 → 1.04 / 1.06 ms (one thread: 1.02 ms); W8 (2^18–2^20-element
/// tensors): 2^15 → 26.3 / 27.7 ms, 2^18 → 27.3 / 28.0 ms, 2^20 → 29.0 / 28.3 ms, 2^22 → 35.9 /
/// 32.5 ms (one thread: 37.0 ms). 2^18 keeps nearly all of W8's gain and most of W7's loss.
pub const DEFAULT_MIN_PARALLEL: usize = 1 << 18;

/// How many elements of work one element of a kernel that evaluates an exponential or a
/// logarithm counts for, against [`min_parallel_elements`] (which is sized for memory-bound
/// kernels: a copy or an add of a few hundred kilobytes does not pay for waking the workers, a
/// softmax row kernel over 256 × 1000 does: W1 there at 2 threads, 2^15 threshold: 431 µs; 2^18
/// without this weight: 529 µs, one thread 511 µs).
pub(crate) const EXP_WORK: usize = 8;

/// 0 = not decided yet (read the environment at first use).
static THREADS: AtomicUsize = AtomicUsize::new(0);
static SPLITS: AtomicU64 = AtomicU64::new(0);
static MIN_PARALLEL: AtomicUsize = AtomicUsize::new(DEFAULT_MIN_PARALLEL);
/// The pool and the thread count it was built for.
static POOL: Mutex<Option<(usize, Arc<rayon::ThreadPool>)>> = Mutex::new(None);

fn all_cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Sets the number of threads tapegrad's kernels use, for the whole process (0: every core).
/// 1 runs everything on the calling thread, with no pool. Results are bitwise the same at every
/// count; only the time changes.
///
/// ```
/// tapegrad::set_num_threads(1);
/// assert_eq!(tapegrad::num_threads(), 1);
/// tapegrad::set_num_threads(0); // back to every core
/// assert!(tapegrad::num_threads() >= 1);
/// ```
pub fn set_num_threads(n: usize) {
    THREADS.store(if n == 0 { all_cores() } else { n }, Ordering::Relaxed);
}

/// The number of threads the kernels use: set by [`set_num_threads`], else by the environment
/// variable [`THREADS_ENV`] (`TAPEGRAD_NUM_THREADS`), else every core. An environment value that
/// is not a number is reported once on standard error and ignored.
pub fn num_threads() -> usize {
    match THREADS.load(Ordering::Relaxed) {
        0 => {
            let n = from_env(std::env::var(THREADS_ENV).ok().as_deref());
            // Another thread may have called `set_num_threads` meanwhile: it wins.
            match THREADS.compare_exchange(0, n, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => n,
                Err(set) => set,
            }
        }
        n => n,
    }
}

/// The thread count an environment value asks for.
fn from_env(v: Option<&str>) -> usize {
    match v.map(str::trim) {
        None | Some("") => all_cores(),
        Some(s) => match s.parse::<usize>() {
            Ok(0) => all_cores(),
            Ok(n) => n,
            Err(_) => {
                eprintln!("tapegrad: {THREADS_ENV}={s:?} is not a thread count; using every core");
                all_cores()
            }
        },
    }
}

/// The fewest elements a kernel must have to split across threads.
pub fn min_parallel_elements() -> usize {
    MIN_PARALLEL.load(Ordering::Relaxed)
}

/// Sets [`min_parallel_elements`] (for the whole process). Results do not depend on it.
///
/// ```
/// let before = tapegrad::tensor::parallel::min_parallel_elements();
/// tapegrad::tensor::parallel::set_min_parallel_elements(0); // split every kernel that can
/// tapegrad::tensor::parallel::set_min_parallel_elements(before);
/// ```
pub fn set_min_parallel_elements(n: usize) {
    MIN_PARALLEL.store(n, Ordering::Relaxed);
}

/// How many times a kernel has handed work to the pool since the process started (a gauge, for
/// tests and for checking that a workload is large enough to use the threads).
pub fn split_count() -> u64 {
    SPLITS.load(Ordering::Relaxed)
}

/// The pool to split work of `elements` elements on, or `None` to stay on this thread. For `n`
/// threads the pool has `n − 1` workers: the calling thread is the `n`-th (see [`run_indexed`]).
fn pool_for(elements: usize) -> Option<Arc<rayon::ThreadPool>> {
    if elements < min_parallel_elements() {
        return None;
    }
    let n = num_threads();
    if n <= 1 {
        return None;
    }
    let mut slot = POOL.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some((k, p)) = slot.as_ref()
        && *k == n
    {
        return Some(Arc::clone(p));
    }
    // A pool that cannot be built (the system refused threads) means working on one thread.
    let p = Arc::new(
        rayon::ThreadPoolBuilder::new()
            .num_threads(n - 1)
            .thread_name(|i| format!("tapegrad-{i}"))
            .build()
            .ok()?,
    );
    *slot = Some((n, Arc::clone(&p)));
    Some(p)
}

/// Runs `f(i)` once for every `i` in `0..n`, on the calling thread and the pool's workers
/// together: each takes the next index from a shared counter until none is left.
///
/// The calling thread works rather than waits. Handing the whole job to the pool
/// (`ThreadPool::install`) would put the caller to sleep until the workers finish, and with a
/// worker per core the workers then spin (yielding) beside the caller's next, single-threaded
/// kernel: three threads on two cores. Measured on W7 (a CNN step whose 131 072-element
/// elementwise kernels split), two threads, this project's 2-core benchmark VM, medians of 7×100
/// steps in one process, three rounds: with `install` and 2 workers eager 2.23/2.60/2.00 ms,
/// compiled 2.39/2.70/2.13 ms, against 1.37–1.53 ms for both with no split at all. Which thread
/// computes an index never changes what it computes, so results stay the same at every count.
fn run_indexed(pool: &rayon::ThreadPool, n: usize, f: &(dyn Fn(usize) + Sync)) {
    SPLITS.fetch_add(1, Ordering::Relaxed);
    let next = AtomicUsize::new(0);
    let drain = || {
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            if i >= n {
                break;
            }
            f(i);
        }
    };
    let helpers = pool.current_num_threads().min(n.saturating_sub(1));
    // A panic in `f` (on any thread) reaches the caller once every spawned job has finished.
    pool.in_place_scope(|s| {
        for _ in 0..helpers {
            s.spawn(|_| drain());
        }
        drain();
    });
}

/// True when a kernel with `elements` elements would split across threads now.
pub(crate) fn would_split(elements: usize) -> bool {
    elements >= min_parallel_elements() && num_threads() > 1
}

/// Calls `f(i, chunk)` for the chunks `out.chunks_mut(chunk)` (chunk `i` starts at element
/// `i · chunk`), on the pool when `work` (elements touched) is large enough. The chunks are the
/// same whatever the thread count, so as long as `f` writes only its chunk from its inputs the
/// result is too.
pub(crate) fn chunks_mut<T: Send>(out: &mut [T], chunk: usize, work: usize, f: impl Fn(usize, &mut [T]) + Sync) {
    let chunk = chunk.max(1);
    match pool_for(work) {
        Some(p) if out.len() > chunk => {
            // Each chunk is locked once, by the one thread that took its index (never contended).
            let parts: Vec<Mutex<&mut [T]>> = out.chunks_mut(chunk).map(Mutex::new).collect();
            run_indexed(&p, parts.len(), &|i| {
                let mut c = parts[i].lock().unwrap_or_else(PoisonError::into_inner);
                f(i, &mut c)
            });
        }
        _ => out.chunks_mut(chunk).enumerate().for_each(|(i, c)| f(i, c)),
    }
}

/// `f(i)` for every `i` in `0..n`, collected in order, on the pool when `work` is large enough
/// (for per-chunk partial results that are then combined in order).
pub(crate) fn map_collect<R: Send>(n: usize, work: usize, f: impl Fn(usize) -> R + Sync) -> Vec<R> {
    match pool_for(work) {
        Some(p) if n > 1 => {
            let slots: Vec<Mutex<Option<R>>> = (0..n).map(|_| Mutex::new(None)).collect();
            run_indexed(&p, n, &|i| {
                let r = f(i);
                *slots[i].lock().unwrap_or_else(PoisonError::into_inner) = Some(r);
            });
            slots.into_iter().map(taken).collect()
        }
        _ => (0..n).map(f).collect(),
    }
}

/// `f(item)` for every item, collected in order, on the pool when `work` is large enough (for
/// jobs that own what they write, e.g. disjoint pieces of output buffers).
pub(crate) fn map_owned<I: Send, R: Send>(items: Vec<I>, work: usize, f: impl Fn(I) -> R + Sync) -> Vec<R> {
    match pool_for(work) {
        Some(p) if items.len() > 1 => {
            let n = items.len();
            let items: Vec<Mutex<Option<I>>> = items.into_iter().map(|i| Mutex::new(Some(i))).collect();
            let slots: Vec<Mutex<Option<R>>> = (0..n).map(|_| Mutex::new(None)).collect();
            run_indexed(&p, n, &|i| {
                let item = items[i].lock().unwrap_or_else(PoisonError::into_inner).take();
                let r = f(item.expect("parallel: each item is taken once"));
                *slots[i].lock().unwrap_or_else(PoisonError::into_inner) = Some(r);
            });
            slots.into_iter().map(taken).collect()
        }
        _ => items.into_iter().map(f).collect(),
    }
}

/// The value a finished [`run_indexed`] left in a slot (every index ran, or its panic was raised).
fn taken<R>(slot: Mutex<Option<R>>) -> R {
    slot.into_inner()
        .unwrap_or_else(PoisonError::into_inner)
        .expect("parallel: every index ran")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environment_values() {
        assert_eq!(from_env(Some("3")), 3);
        assert_eq!(from_env(Some(" 2 ")), 2);
        assert_eq!(from_env(Some("0")), all_cores());
        assert_eq!(from_env(None), all_cores());
        assert_eq!(from_env(Some("lots")), all_cores());
    }

    #[test]
    fn chunks_cover_everything_once() {
        let mut v = vec![0usize; 10_007];
        chunks_mut(&mut v, 1000, usize::MAX, |i, c| {
            for (j, x) in c.iter_mut().enumerate() {
                *x += i * 1000 + j;
            }
        });
        assert!(v.iter().enumerate().all(|(i, &x)| x == i));
        let parts = map_collect(11, usize::MAX, |i| i * 2);
        assert_eq!(parts, (0..11).map(|i| i * 2).collect::<Vec<_>>());
        let owned = map_owned((0..9).map(|i| vec![i; i]).collect(), usize::MAX, |v| v.len() * 10);
        assert_eq!(owned, (0..9).map(|i| i * 10).collect::<Vec<_>>());
    }

    /// The caller and the workers together run every index exactly once, with any number of
    /// workers and of indices.
    #[test]
    fn the_caller_and_the_workers_run_each_index_once() {
        for workers in [1, 2, 3] {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(workers).build().unwrap();
            for n in [0, 1, 2, 3, 7, 64, 1000] {
                let runs: Vec<AtomicUsize> = (0..n).map(|_| AtomicUsize::new(0)).collect();
                run_indexed(&pool, n, &|i| {
                    runs[i].fetch_add(1, Ordering::Relaxed);
                });
                assert!(
                    runs.iter().all(|r| r.load(Ordering::Relaxed) == 1),
                    "{workers} workers, {n} indices"
                );
            }
        }
    }

    /// A panic in one index reaches the caller (after the other jobs finish), whichever thread
    /// ran it, and the pool still works afterwards.
    #[test]
    fn a_panic_in_a_chunk_reaches_the_caller() {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
        for bad in [0, 5, 63] {
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                run_indexed(&pool, 64, &|i| assert!(i != bad, "chunk {i} failed"));
            }));
            let msg = r.expect_err("the panic is raised");
            let text = msg.downcast_ref::<String>().cloned().unwrap_or_default();
            assert!(text.contains(&format!("chunk {bad} failed")), "{text}");
        }
        let count = AtomicUsize::new(0);
        run_indexed(&pool, 10, &|_| {
            count.fetch_add(1, Ordering::Relaxed);
        });
        assert_eq!(count.load(Ordering::Relaxed), 10);
    }
}
