//! Flat memory: a counting global allocator (this file is its own test binary) checks that a
//! training loop of 10 000 steps holds flat memory, that dropping a tape frees everything, and that
//! a cleared tape reuses its node storage; and the buffer pool keeps exactly what its documentation
//! says, whichever thread frees a buffer.
//!
//! The counters are per thread, so the test harness running tests in parallel does not mix them.
//! The pool is shared by the whole process, so the tests that look at it take [`pool_lock`].

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::{Mutex, MutexGuard, PoisonError, mpsc};
use std::thread;
use tapegrad::tensor::pool::{
    MAX_BUFFERS, MAX_BYTES, MIN_POOLED, pooled_buffers, pooled_bytes, pooled_bytes_total, release_pooled_memory,
};
use tapegrad::{Tape, Tensor};

struct Counting;

thread_local! {
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
    static ALLOCS: Cell<usize> = const { Cell::new(0) };
}

fn add(bytes: isize) {
    // `try_with`: the thread-locals may be gone while a thread shuts down.
    let _ = LIVE.try_with(|l| {
        let v = l.get() + bytes;
        l.set(v);
        let _ = PEAK.try_with(|p| p.set(p.get().max(v)));
    });
    if bytes > 0 {
        let _ = ALLOCS.try_with(|a| a.set(a.get() + 1));
    }
}

// SAFETY: every method forwards to the system allocator unchanged; the counters are plain
// thread-local cells with const initialisers (no allocation, no destructor).
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        add(layout.size() as isize);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        add(-(layout.size() as isize));
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        add(layout.size() as isize);
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        add(new_size as isize - layout.size() as isize);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn live() -> isize {
    LIVE.with(|l| l.get())
}

fn reset_peak() {
    PEAK.with(|p| p.set(live()));
}

fn peak() -> isize {
    PEAK.with(|p| p.get())
}

fn allocs() -> usize {
    ALLOCS.with(|a| a.get())
}

/// Parameters of a small MLP with a composed softmax cross-entropy.
struct Model {
    w1: Tensor<f64>,
    w2: Tensor<f64>,
}

fn step(tape: &Tape<f64>, m: &mut Model, x: &Tensor<f64>, t: &Tensor<f64>) -> f64 {
    let (xv, tv) = (tape.constant(x.clone()), tape.constant(t.clone()));
    let (w1, w2) = (tape.var(m.w1.clone()), tape.var(m.w2.clone()));
    let z = xv.matmul(w1).tanh().matmul(w2);
    let e = (z - z.max_axis(1, true).detach()).exp();
    let p = e / e.sum_axis(1, true);
    let loss = -(p.log() * tv).sum_axis(1, false).mean();
    let g = loss.backward();
    let lr = 0.1;
    m.w1 = m.w1.zip_map(&g[w1], |w, d| w - lr * d);
    m.w2 = m.w2.zip_map(&g[w2], |w, d| w - lr * d);
    loss.item()
}

fn data() -> (Model, Tensor<f64>, Tensor<f64>) {
    let x = Tensor::rand_normal([8, 6], 0.0, 1.0, 1);
    let t = Tensor::from_fn([8, 3], |i| if i % 3 == (i / 3) % 3 { 1.0 } else { 0.0 });
    let m = Model {
        w1: Tensor::rand_normal([6, 8], 0.0, 0.3, 2),
        w2: Tensor::rand_normal([8, 3], 0.0, 0.3, 3),
    };
    (m, x, t)
}

#[test]
fn ten_thousand_training_steps_hold_flat_memory() {
    let (mut m, x, t) = data();
    let mut first_loss = None;
    let mut baseline = None;
    let mut baseline_peak = 0;
    let mut last_loss = 0.0;
    for i in 0..10_000 {
        reset_peak();
        let tape = Tape::<f64>::new();
        last_loss = step(&tape, &mut m, &x, &t);
        drop(tape);
        first_loss.get_or_insert(last_loss);
        if i == 10 {
            baseline = Some(live());
            baseline_peak = peak();
        } else if let Some(b) = baseline {
            // Exactly flat: nothing survives a step but the (same-sized) parameters.
            assert_eq!(live(), b, "live bytes grew at step {i}");
            assert!(
                peak() <= baseline_peak,
                "peak grew at step {i}: {} > {baseline_peak}",
                peak()
            );
        }
    }
    assert!(
        last_loss < first_loss.unwrap(),
        "the loop trained: {first_loss:?} -> {last_loss}"
    );
}

#[test]
fn dropping_a_tape_frees_everything() {
    let (mut m, x, t) = data();
    let before = live();
    {
        let tape = Tape::<f64>::new();
        step(&tape, &mut m, &x, &t);
        // Including recorded-graph gradients (grad_graph records the backward on the tape).
        let v = tape.var(Tensor::rand_normal([4, 4], 0.0, 1.0, 9));
        let y = (v.tanh() * v).sum();
        let g = tape.grad_graph(&[y], &[tape.scalar(1.0)], &[v])[0];
        let _h = tape.grad(&[g.sum()], &[Tensor::scalar(1.0)], &[v]);
        assert!(live() > before);
    }
    // The model's parameters were replaced by same-sized ones: nothing else is left.
    assert_eq!(live(), before, "bytes still allocated after dropping the tape");
}

#[test]
fn a_cleared_tape_reuses_its_node_storage() {
    let (mut m, x, t) = data();
    let mut tape = Tape::<f64>::new();
    step(&tape, &mut m, &x, &t);
    let nodes = tape.len();
    let cap = tape.capacity();
    assert!(cap >= nodes && nodes > 10);
    let mut per_step = Vec::new();
    for _ in 0..50 {
        tape.clear();
        assert_eq!(tape.len(), 0);
        assert_eq!(tape.capacity(), cap, "clear() must keep the allocation");
        let a0 = allocs();
        reset_peak();
        step(&tape, &mut m, &x, &t);
        per_step.push(allocs() - a0);
        assert_eq!(
            tape.capacity(),
            cap,
            "recording the same step again must not grow the storage"
        );
        assert_eq!(tape.len(), nodes);
    }
    // The same number of allocations every step (tensor buffers), none for the node storage.
    assert!(per_step.windows(2).all(|w| w[0] == w[1]), "{per_step:?}");
    // And a fresh tape does allocate node storage: the counters see the difference.
    let fresh = {
        let a0 = allocs();
        let t2 = Tape::<f64>::new();
        step(&t2, &mut m, &x, &t);
        allocs() - a0
    };
    assert!(fresh > per_step[0], "fresh tape {fresh} vs reused {}", per_step[0]);
}

/// Serialises the tests that assert on the (process-wide) pool. Other tests here only make
/// buffers smaller than `MIN_POOLED`, which never reach the pool.
fn pool_lock() -> MutexGuard<'static, ()> {
    static POOL_TESTS: Mutex<()> = Mutex::new(());
    POOL_TESTS.lock().unwrap_or_else(PoisonError::into_inner)
}

const MIB: usize = 1 << 20;

/// Pooled bytes of both element types (also checks that the total agrees).
fn pooled_total() -> usize {
    let sum = pooled_bytes::<f32>() + pooled_bytes::<f64>();
    assert_eq!(pooled_bytes_total(), sum);
    sum
}

#[test]
fn a_buffer_dropped_on_another_thread_is_not_held_by_that_thread() {
    let _pool = pool_lock();
    release_pooled_memory();
    let t = Tensor::<f32>::zeros([4 * MIB]); // 16 MiB, made on this thread…
    let (to_main, from_worker) = mpsc::channel();
    let (to_worker, from_main) = mpsc::channel::<()>();
    let worker = thread::spawn(move || {
        drop(t); // …and dropped on another, which then stays alive
        to_main.send(()).unwrap();
        from_main.recv().unwrap();
        pooled_total()
    });
    from_worker.recv().unwrap();
    assert_eq!(
        pooled_bytes::<f32>(),
        16 * MIB,
        "the buffer dropped on the worker is in the shared pool"
    );
    release_pooled_memory();
    to_worker.send(()).unwrap();
    assert_eq!(worker.join().unwrap(), 0, "the worker holds nothing of its own");
    assert_eq!(pooled_total(), 0);
}

#[test]
fn a_thread_freeing_300_mib_leaves_at_most_256_mib_pooled_which_main_can_release() {
    let _pool = pool_lock();
    release_pooled_memory();
    let (to_main, from_worker) = mpsc::channel();
    let (to_worker, from_main) = mpsc::channel::<()>();
    let worker = thread::spawn(move || {
        {
            // 300 MiB alive at once, of both element types: 3 × 60 MiB of f32, 2 × 60 MiB of f64.
            let _f: Vec<Tensor<f32>> = (0..3).map(|_| Tensor::zeros([15 * MIB])).collect();
            let _d: Vec<Tensor<f64>> = (0..2).map(|_| Tensor::zeros([15 * MIB / 2])).collect();
        }
        to_main.send(pooled_total()).unwrap();
        from_main.recv().unwrap();
        pooled_total()
    });
    let seen_by_worker = from_worker.recv().unwrap();
    let seen_by_main = pooled_total();
    assert_eq!(seen_by_main, seen_by_worker, "one pool, whichever thread asks");
    assert!(
        seen_by_main > 0 && seen_by_main <= 256 * MIB,
        "{} MiB pooled",
        seen_by_main / MIB
    );
    release_pooled_memory();
    to_worker.send(()).unwrap();
    assert_eq!(worker.join().unwrap(), 0, "released from main, gone for the worker too");
    assert_eq!(pooled_total(), 0);
}

#[test]
fn large_buffers_are_reused_through_the_pool_and_small_ones_never_reach_it() {
    let _pool = pool_lock();
    release_pooled_memory();
    let a = Tensor::<f64>::zeros([MIN_POOLED * 2]);
    let ptr = a.data().as_ptr();
    drop(a);
    assert_eq!(pooled_bytes::<f64>(), MIN_POOLED * 2 * 8);
    let b = Tensor::<f64>::ones([MIN_POOLED * 2]);
    assert_eq!(b.data().as_ptr(), ptr, "the freed buffer was reused");
    assert!(
        b.data().iter().all(|&v| v == 1.0),
        "a reused buffer is fully overwritten"
    );
    assert_eq!(pooled_total(), 0, "a reused buffer leaves the pool");
    drop(Tensor::<f64>::zeros([MIN_POOLED - 1]));
    drop(Tensor::<f32>::zeros([MIN_POOLED - 1]));
    assert_eq!(pooled_total(), 0, "buffers below MIN_POOLED elements are never kept");
    drop(b);
    release_pooled_memory();
}

#[test]
fn the_pool_keeps_at_most_max_buffers_and_max_bytes_evicting_the_oldest() {
    let _pool = pool_lock();
    release_pooled_memory();
    // 100 buffers alive at once, then dropped, all f32 first: only the newest MAX_BUFFERS stay.
    let f: Vec<Tensor<f32>> = (0..50).map(|_| Tensor::zeros([MIN_POOLED])).collect();
    let d: Vec<Tensor<f64>> = (0..50).map(|_| Tensor::zeros([MIN_POOLED])).collect();
    drop(f);
    drop(d);
    assert_eq!(pooled_buffers(), MAX_BUFFERS);
    assert_eq!(pooled_bytes::<f64>(), 50 * MIN_POOLED * 8);
    assert_eq!(pooled_bytes::<f32>(), (MAX_BUFFERS - 50) * MIN_POOLED * 4);
    assert!(pooled_total() <= MAX_BYTES);
    // A buffer of more than MAX_BYTES (counted by capacity, not length) is never kept.
    let mut v = Vec::<f32>::with_capacity(MAX_BYTES / 4 + 1);
    v.resize(2, 0.0);
    drop(Tensor::from_vec(v, [2]));
    assert_eq!(pooled_buffers(), MAX_BUFFERS);
    release_pooled_memory();
    assert_eq!((pooled_buffers(), pooled_total()), (0, 0));
}

#[test]
fn dropping_a_tape_then_releasing_the_pool_frees_every_byte() {
    let _pool = pool_lock();
    let step = || {
        // Large enough that values and gradients are pooled buffers ([128, 256] is 32 Ki elements).
        let tape = Tape::<f64>::new();
        let x = tape.constant(Tensor::rand_normal([128, 256], 0.0, 1.0, 1));
        let w = tape.var(Tensor::rand_normal([256, 256], 0.0, 0.1, 2));
        let g = x.matmul(w).tanh().sum().backward();
        assert_eq!(g[w].shape(), &[256, 256]);
    };
    // Once before measuring: the thread pool (when there are several threads) is built at the
    // first kernel that splits and lives as long as the process — a one-time cost, not a leak.
    step();
    release_pooled_memory();
    let before = live();
    step();
    let pooled = pooled_total();
    assert!(pooled > 0, "the large buffers went to the pool");
    assert!(
        live() >= before + pooled as isize,
        "what is left is what the pool keeps (and its list)"
    );
    release_pooled_memory();
    // The pool's worker threads keep a little bookkeeping of their own (job queues) that can
    // grow or shrink by a few dozen bytes between runs; the step's tensors are ~1.5 MiB.
    let left = live() - before;
    assert!(
        left.abs() <= 1024,
        "{left} bytes still allocated after releasing the pool"
    );
}
