//! Decodes arbitrary bytes into a tape program — leaves with shapes (zero-size axes included) and
//! values (NaN, ±∞, huge, subnormal, ±0), then op calls drawn from the op registry, each made by
//! the entry's recipe in **wild** mode from the bytes that follow (any operands and parameters:
//! bad axes, wrong reshape sizes, non-permutations, mismatched shapes, NaN and ±∞ constants) — and
//! runs it, then a backward pass through the `try_` API (first order, non-scalar, wrong cotangent,
//! recorded second order). An op registered with a recipe is fuzzed with no change here.
//!
//! The contract checked: every panic is a documented tapegrad error (its message starts with
//! `"tapegrad: "`), a failed op records nothing, and every `try_` call returns `Ok` or a
//! documented `Error`. Shared by the libFuzzer target (`fuzz/fuzz_targets/tape_program.rs`) and
//! the stable replay test (`tests/fuzz_replay.rs`), which includes this file with `#[path]`.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::OnceLock;
use tapegrad::ops::{Choice, Recipe, RecipeFn};
use tapegrad::{ErrorKind, Float, OpInfo, Registry, Tape, Tensor, Var};

/// Reads bytes; past the end it yields zeros, so every input decodes to some program.
pub struct Bytes<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Bytes<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Bytes { data, pos: 0 }
    }
    pub fn u8(&mut self) -> u8 {
        let b = self.data.get(self.pos).copied().unwrap_or(0);
        self.pos += 1;
        b
    }
    pub fn done(&self) -> bool {
        self.pos >= self.data.len()
    }
    /// The bytes not read yet.
    fn rest(&self) -> &'a [u8] {
        &self.data[self.pos.min(self.data.len())..]
    }
    /// Moves on by `n` bytes (read by someone else).
    fn skip(&mut self, n: usize) {
        self.pos += n;
    }
    fn u64(&mut self) -> u64 {
        (0..8).fold(0u64, |acc, _| acc << 8 | self.u8() as u64)
    }
    /// A value that is often special.
    fn value(&mut self) -> f64 {
        const SPECIAL: [f64; 16] = [
            0.0,
            -0.0,
            1.0,
            -1.0,
            0.5,
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            1e308,
            -1e308,
            5e-324,
            f64::MIN_POSITIVE,
            1e30,
            -1e30,
            1e-30,
            2.0,
        ];
        let tag = self.u8();
        match tag % 4 {
            0 | 1 => SPECIAL[(tag / 4) as usize % SPECIAL.len()],
            2 => (self.u8() as i8) as f64 / 16.0,
            _ => f64::from_bits(self.u64()),
        }
    }
    /// A shape with up to 3 axes of extent 0..=3.
    fn shape(&mut self) -> Vec<usize> {
        let n = self.u8() as usize % 4;
        (0..n).map(|_| self.u8() as usize % 4).collect()
    }
}

/// True when a panic payload is a documented tapegrad error.
pub fn is_documented(payload: &(dyn std::any::Any + Send)) -> bool {
    let msg = payload
        .downcast_ref::<String>()
        .map(|s| s.as_str())
        .or_else(|| payload.downcast_ref::<&str>().copied());
    msg.is_some_and(|m| m.starts_with("tapegrad: "))
}

/// Runs `f`; a documented panic becomes `None`, any other panic is re-raised.
fn guarded<R>(f: impl FnOnce() -> R) -> Option<R> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => Some(r),
        Err(p) if is_documented(&*p) => None,
        Err(p) => std::panic::resume_unwind(p),
    }
}

fn documented(kind: ErrorKind) -> bool {
    matches!(
        kind,
        ErrorKind::Shape
            | ErrorKind::ForeignVar
            | ErrorKind::NonScalar
            | ErrorKind::NoVjp
            | ErrorKind::NonFinite
            | ErrorKind::NoGradient
            | ErrorKind::Invalid
    )
}

/// The registry entries the fuzzer calls: every one with a recipe, in registration order.
fn entries() -> &'static [&'static OpInfo] {
    static E: OnceLock<Vec<&'static OpInfo>> = OnceLock::new();
    E.get_or_init(|| Registry::builtin().iter().filter(|i| i.recipe.is_some()).collect())
}

/// Decodes and runs one program, in `f32` or `f64` as the first byte says. Panics (with a message
/// not starting with "tapegrad: ") only when the contract is broken.
pub fn run_bytes(data: &[u8]) {
    let mut b = Bytes::new(data);
    let flags = b.u8();
    if flags & 1 == 0 {
        run::<f64>(&mut b, flags, |r| r.f64)
    } else {
        run::<f32>(&mut b, flags, |r| r.f32)
    }
}

fn run<T: Float>(b: &mut Bytes<'_>, flags: u8, recipe: fn(&Recipe) -> RecipeFn<T>) {
    let tape = Tape::<T>::new();
    tape.set_anomaly(flags & 2 != 0);
    let mut vals: Vec<Var<'_, T>> = Vec::new();
    let n_leaves = 1 + b.u8() as usize % 3;
    for _ in 0..n_leaves {
        let shape = b.shape();
        let n: usize = shape.iter().product();
        let data: Vec<T> = (0..n).map(|_| T::from_f64(b.value())).collect();
        let t = Tensor::from_vec(data, &shape);
        vals.push(if b.u8().is_multiple_of(4) {
            tape.constant(t)
        } else {
            tape.var(t)
        });
    }
    let ops = entries();
    let mut steps = 0;
    while !b.done() && steps < 24 {
        steps += 1;
        // One code per registry entry with a recipe, and one more for `detach` (a leaf sharing
        // a value, not an op, so not in the registry).
        let code = b.u8() as usize % (ops.len() + 1);
        let before = tape.len();
        let out = if code == ops.len() {
            let x = vals[b.u8() as usize % vals.len()];
            guarded(|| x.detach())
        } else {
            let call = recipe(ops[code].recipe.as_ref().expect("entries have recipes"));
            let mut c = Choice::new(b.rest(), true);
            let out = guarded(|| call(&mut c, &vals)).flatten();
            let used = c.used();
            b.skip(used);
            out
        };
        match out {
            Some(v) => vals.push(v),
            // A failed op records nothing.
            None => assert_eq!(tape.len(), before, "a failed op left nodes on the tape"),
        }
    }
    let Some(&out) = vals.last() else { return };
    let check = |r: Result<(), tapegrad::Error>| {
        if let Err(e) = r {
            assert!(documented(e.kind()), "undocumented error kind: {e}");
            assert!(e.to_string().starts_with("tapegrad: "), "{e}");
        }
    };
    let len = tape.len();
    // Backward as written (fails with NonScalar on a non-scalar output), and of the sum.
    check(out.try_backward().map(|g| assert!(g.len() <= len)));
    assert_eq!(tape.len(), len, "try_backward changed the tape");
    if let Some(s) = guarded(|| out.sum()) {
        check(s.try_backward().map(|_| ()));
    }
    let len = tape.len();
    // A cotangent of a random shape: Ok when it matches, a Shape error otherwise.
    let shape = if b.u8().is_multiple_of(2) {
        out.shape().to_vec()
    } else {
        b.shape()
    };
    let cot = Tensor::full(&shape, T::from_f64(b.value()));
    let wrt: Vec<Var<'_, T>> = vals.iter().copied().filter(|v| v.op_name() == "var").collect();
    check(
        tape.try_grad(&[out], &[cot], &wrt)
            .map(|g| assert_eq!(g.len(), wrt.len())),
    );
    assert_eq!(tape.len(), len, "try_grad changed the tape");
    // Recorded backward, then a second backward through it.
    if let Some(s) = guarded(|| out.sum()) {
        let one = tape.scalar(T::ONE);
        match tape.try_grad_graph(&[s], &[one], &wrt) {
            Ok(gs) => {
                if let Some(h) = gs.first().and_then(|&g0| guarded(|| g0.sum())) {
                    check(tape.try_grad(&[h], &[Tensor::scalar(T::ONE)], &wrt).map(|_| ()));
                }
            }
            Err(e) => check(Err(e)),
        }
    }
}
