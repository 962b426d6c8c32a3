//! Decodes arbitrary bytes into a tape program — leaves with shapes (zero-size axes included) and
//! values (NaN, ±∞, huge, subnormal, ±0), then ops with arbitrary operands and parameters (bad
//! axes, wrong reshape sizes, non-permutations, mismatched shapes) — and runs it, then a backward
//! pass through the `try_` API (first order, non-scalar, wrong cotangent, recorded second order).
//!
//! The contract checked: every panic is a documented tapegrad error (its message starts with
//! `"tapegrad: "`), and every `try_` call returns `Ok` or a documented `Error`. Shared by the
//! libFuzzer target (`fuzz/fuzz_targets/tape_program.rs`) and the stable replay test
//! (`tests/fuzz_replay.rs`), which includes this file with `#[path]`.

use std::panic::{AssertUnwindSafe, catch_unwind};
use tapegrad::{ErrorKind, Float, Tape, Tensor, Var};

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

/// Decodes and runs one program, in `f32` or `f64` as the first byte says. Panics (with a message
/// not starting with "tapegrad: ") only when the contract is broken.
pub fn run_bytes(data: &[u8]) {
    let mut b = Bytes::new(data);
    let flags = b.u8();
    if flags & 1 == 0 {
        run::<f64>(&mut b, flags)
    } else {
        run::<f32>(&mut b, flags)
    }
}

fn run<T: Float>(b: &mut Bytes<'_>, flags: u8) {
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
    let mut steps = 0;
    while !b.done() && steps < 24 {
        steps += 1;
        let code = b.u8();
        let (x, y) = {
            let i = b.u8() as usize % vals.len();
            let j = b.u8() as usize % vals.len();
            (vals[i], vals[j])
        };
        let p = b.u8();
        let before = tape.len();
        let out = guarded(|| match code % 34 {
            0 => x + y,
            1 => x - y,
            2 => x * y,
            3 => x / y,
            4 => -x,
            5 => x.exp(),
            6 => x.log(),
            7 => x.sqrt(),
            8 => x.tanh(),
            9 => x.sigmoid(),
            10 => x.relu(),
            11 => x.abs(),
            12 => x.powf(T::from_f64((p as i8) as f64 / 8.0)),
            13 => x.add_scalar(T::from_f64(b.value())),
            14 => x.mul_scalar(T::from_f64(b.value())),
            15 => x.rdiv_scalar(T::from_f64(b.value())),
            16 => x.sum(),
            17 => x.mean(),
            18 => x.sum_axis((p as i8 % 5) as isize, p & 0x80 != 0),
            19 => x.mean_axis((p as i8 % 5) as isize, p & 0x80 != 0),
            20 => x.max_axis((p as i8 % 5) as isize, p & 0x80 != 0),
            21 => x.reshape(b.shape()),
            22 => {
                let n = (p % 4) as usize;
                let perm: Vec<usize> = (0..n).map(|_| b.u8() as usize % 4).collect();
                x.permute(perm)
            }
            23 => x.transpose((p as usize % 4) as isize, ((p / 4) as usize % 4) as isize),
            24 => x.broadcast_to(b.shape()),
            25 => x.sum_to(b.shape()),
            26 => x.matmul_t(y, p & 1 != 0, p & 2 != 0),
            27 => x.gt(y),
            28 => x.le(y),
            29 => x.eq(y),
            30 => {
                let z = vals[b.u8() as usize % vals.len()];
                x.select(y, z)
            }
            31 => x.detach(),
            32 => x.chain_mul(y),
            _ => x.chain_div(y),
        });
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
