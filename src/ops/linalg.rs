//! Matrix product: `matmul`, 2-D or batched over leading axes with broadcasting.
//!
//! The op carries two flags, `op(A) @ op(B)` where `op` transposes the last two axes, so the
//! backward pass (`dA = G Bᵀ`, `dB = Aᵀ G`) multiplies by transposes without copying them: the
//! kernel (`matrixmultiply`) reads the operands through strides.

use super::{NanRule, OpInfo, Registry, arity};
use crate::autodiff::op::{Cotangents, EagerCtx, Op, TensorGrads, VjpCtx};
use crate::autodiff::tape::{OpRef, Var};
use crate::core::error::{Error, Result};
use crate::core::float::Float;
use crate::core::shape::{Shape, broadcast_extents, fmt_shape};
use crate::sample;
use crate::tensor::{Tensor, checked_numel, kernels};

/// `op(A) @ op(B)`; `ta`/`tb` transpose the last two axes of `A`/`B`.
struct MatMulOp {
    ta: bool,
    tb: bool,
}

const NAMES: [[&str; 2]; 2] = [["matmul", "matmul_nt"], ["matmul_tn", "matmul_tt"]];

impl MatMulOp {
    fn name(&self) -> &'static str {
        NAMES[self.ta as usize][self.tb as usize]
    }
}

impl<T: Float> Op<T> for MatMulOp {
    fn name(&self) -> &'static str {
        MatMulOp::name(self)
    }
    fn forward(&self, x: &[&Tensor<T>]) -> Result<Tensor<T>> {
        let name = MatMulOp::name(self);
        arity(name, x, 2)?;
        let (a, b) = (x[0], x[1]);
        let (sa, sb) = (a.shape(), b.shape());
        if sa.len() < 2 || sb.len() < 2 {
            return Err(Error::shape(
                name,
                format!(
                    "needs at least 2-D operands, got {} and {} (reshape a vector to [1, n] or [n, 1])",
                    fmt_shape(sa),
                    fmt_shape(sb)
                ),
            ));
        }
        let (ra, ca) = (sa[sa.len() - 2], sa[sa.len() - 1]);
        let (rb, cb) = (sb[sb.len() - 2], sb[sb.len() - 1]);
        let (m, ka) = if self.ta { (ca, ra) } else { (ra, ca) };
        let (kb, n) = if self.tb { (cb, rb) } else { (rb, cb) };
        if ka != kb {
            return Err(Error::shape(
                name,
                format!(
                    "inner sizes differ: {} @ {} multiplies [.., {m}, {ka}] by [.., {kb}, {n}]",
                    fmt_shape(sa),
                    fmt_shape(sb)
                ),
            ));
        }
        let batch = broadcast_extents(&sa[..sa.len() - 2], &sb[..sb.len() - 2]).ok_or_else(|| {
            Error::shape(
                name,
                format!("batch axes of {} and {} do not broadcast", fmt_shape(sa), fmt_shape(sb)),
            )
        })?;
        let mut shape: Shape = batch;
        shape.push(m);
        shape.push(n);
        // Checked before the kernel runs: an inner size of 0 makes both operands empty however
        // large the product is.
        checked_numel::<T>(name, &shape)?;
        let batch = &shape[..shape.len() - 2];
        let data = kernels::matmul(a.data(), sa, self.ta, b.data(), sb, self.tb, batch);
        Ok(Tensor::from_parts(shape, data))
    }
    fn vjp_tensors(&self, cx: &EagerCtx<'_, T>, g: &Tensor<T>) -> Option<TensorGrads<T>> {
        let (a, b) = (cx.input(0), cx.input(1));
        let mm = |x: &Tensor<T>, y: &Tensor<T>, ta: bool, tb: bool| {
            MatMulOp { ta, tb }
                .forward(&[x, y])
                .expect("shapes were checked by the forward")
        };
        let (da, db): (&dyn Fn() -> Tensor<T>, &dyn Fn() -> Tensor<T>) = match (self.ta, self.tb) {
            (false, false) => (&|| mm(g, b, false, true), &|| mm(a, g, true, false)),
            (false, true) => (&|| mm(g, b, false, false), &|| mm(g, a, true, false)),
            (true, false) => (&|| mm(b, g, false, true), &|| mm(a, g, false, false)),
            (true, true) => (&|| mm(b, g, true, true), &|| mm(g, a, true, true)),
        };
        Some(cx.grads([&|| da().sum_to(a.shape()), &|| db().sum_to(b.shape())]))
    }
    /// With `C = op(A) op(B)`: for `C = A B`, `dA = G Bᵀ`, `dB = Aᵀ G`; the transposed variants
    /// follow by transposing those identities. Batch broadcasting is undone by `sum_to`.
    fn vjp<'t>(&self, cx: &VjpCtx<'_, 't, T>, g: Var<'t, T>) -> Result<Cotangents<'t, T>> {
        let (a, b) = (cx.input(0), cx.input(1));
        let mm = |x: Var<'t, T>, y: Var<'t, T>, ta, tb| x.matmul_t(y, ta, tb);
        let (da, db) = match (self.ta, self.tb) {
            (false, false) => (
                cx.needs_grad(0).then(|| mm(g, b, false, true)),
                cx.needs_grad(1).then(|| mm(a, g, true, false)),
            ),
            (false, true) => (
                cx.needs_grad(0).then(|| mm(g, b, false, false)),
                cx.needs_grad(1).then(|| mm(g, a, true, false)),
            ),
            (true, false) => (
                cx.needs_grad(0).then(|| mm(b, g, false, true)),
                cx.needs_grad(1).then(|| mm(a, g, false, false)),
            ),
            (true, true) => (
                cx.needs_grad(0).then(|| mm(b, g, true, true)),
                cx.needs_grad(1).then(|| mm(g, a, true, true)),
            ),
        };
        Ok(cx.grads([da.map(|d| d.sum_to(a.shape())), db.map(|d| d.sum_to(b.shape()))]))
    }
}

impl<'t, T: Float> Var<'t, T> {
    /// Matrix product over the last two axes; leading axes are batch axes and broadcast.
    /// Both operands need at least two axes.
    ///
    /// ```
    /// use tapegrad::{Tape, Tensor};
    /// let tape = Tape::<f64>::new();
    /// let a = tape.var(Tensor::from_vec(vec![1.0, 2.0, 3.0, 4.0], [2, 2]));
    /// let b = tape.constant(Tensor::from_vec(vec![1.0, 0.0, 0.0, 2.0], [2, 2]));
    /// assert_eq!(a.matmul(b).value().to_vec(), vec![1.0, 4.0, 3.0, 8.0]);
    /// ```
    #[track_caller]
    pub fn matmul(self, other: Var<'t, T>) -> Var<'t, T> {
        self.matmul_t(other, false, false)
    }

    /// `op(self) @ op(other)`, where `op` transposes the last two axes when its flag is set; no
    /// transposed copy is made.
    #[track_caller]
    pub fn matmul_t(self, other: Var<'t, T>, ta: bool, tb: bool) -> Var<'t, T> {
        static OPS: [[MatMulOp; 2]; 2] = [
            [MatMulOp { ta: false, tb: false }, MatMulOp { ta: false, tb: true }],
            [MatMulOp { ta: true, tb: false }, MatMulOp { ta: true, tb: true }],
        ];
        self.tape
            .op(OpRef::Static(&OPS[ta as usize][tb as usize]), &[self, other])
    }
}

pub(crate) fn register(r: &mut Registry) {
    macro_rules! entry {
        ($name:literal, $ta:literal, $tb:literal) => {
            r.register(OpInfo {
                name: $name,
                summary: "matrix product op(A) @ op(B), batched with broadcasting",
                differentiable_twice: true,
                nan: NanRule::Propagates,
                samples: || {
                    let n = |s: &[usize], seed| Tensor::<f64>::rand_normal(s, 0.0, 1.0, seed);
                    // Shapes of op(A) = [m, k] and op(B) = [k, n], stored transposed where flagged.
                    let st = |t: bool, s: &[usize]| -> Vec<usize> {
                        let mut s = s.to_vec();
                        let l = s.len();
                        if t {
                            s.swap(l - 2, l - 1);
                        }
                        s
                    };
                    vec![
                        sample!(
                            "[3,4]@[4,2]",
                            [n(&st($ta, &[3, 4]), 60), n(&st($tb, &[4, 2]), 61)],
                            |v| v[0].matmul_t(v[1], $ta, $tb)
                        ),
                        sample!(
                            "[1,3]@[3,1]",
                            [n(&st($ta, &[1, 3]), 62), n(&st($tb, &[3, 1]), 63)],
                            |v| v[0].matmul_t(v[1], $ta, $tb)
                        ),
                        sample!(
                            "batched [2,3,4]@[2,4,2]",
                            [n(&st($ta, &[2, 3, 4]), 64), n(&st($tb, &[2, 4, 2]), 65)],
                            |v| v[0].matmul_t(v[1], $ta, $tb)
                        ),
                        sample!(
                            "broadcast batch [2,1,2,3]@[3,3,2]",
                            [n(&st($ta, &[2, 1, 2, 3]), 66), n(&st($tb, &[3, 3, 2]), 67)],
                            |v| v[0].matmul_t(v[1], $ta, $tb)
                        ),
                        sample!(
                            "batch [2,2,3]@[3,2]",
                            [n(&st($ta, &[2, 2, 3]), 68), n(&st($tb, &[3, 2]), 69)],
                            |v| v[0].matmul_t(v[1], $ta, $tb)
                        ),
                    ]
                },
            })
        };
    }
    entry!("matmul", false, false);
    entry!("matmul_nt", false, true);
    entry!("matmul_tn", true, false);
    entry!("matmul_tt", true, true);
}
