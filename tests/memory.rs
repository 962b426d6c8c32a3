//! Flat memory: a counting global allocator (this file is its own test binary) checks that a
//! training loop of 10 000 steps holds flat memory, that dropping a tape frees everything, and that
//! a cleared tape reuses its node storage.
//!
//! The counters are per thread, so the test harness running tests in parallel does not mix them.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
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
