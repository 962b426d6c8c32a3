//! Matrix product: `matmul`, 2-D or batched over leading axes with broadcasting.
//!
//! The op carries two flags, `op(A) @ op(B)` where `op` transposes the last two axes, so the
//! backward pass (`dA = G Bᵀ`, `dB = Aᵀ G`) multiplies by transposes without copying them: the
//! kernel (`matrixmultiply`) reads the operands through strides.

use super::common::arity;
use super::reference;
use super::registry::{Choice, OpInfo, Registry};
use crate::autodiff::rule::Value;
use crate::autodiff::rule::{Cotangents, Op, VjpCtx};
use crate::autodiff::tape::{OpRef, Var};
use crate::core::error::Result;
use crate::core::float::Float;
use crate::core::shape::broadcast_extents;
use crate::tensor::Tensor;
use crate::{recipe, sample};

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
        x[0].try_matmul_t(x[1], self.ta, self.tb, name)
    }
    /// With `C = op(A) op(B)`: for `C = A B`, `dA = G Bᵀ`, `dB = Aᵀ G`; the transposed variants
    /// follow by transposing those identities (no transposed copy is made: the kernel reads
    /// through strides). Batch broadcasting is undone by `sum_to`.
    fn vjp<V: Value<T>>(&self, cx: &VjpCtx<'_, V>, g: &V) -> Result<Cotangents<V>> {
        let (a, b) = (cx.input(0), cx.input(1));
        let mm = |x: &V, y: &V, ta, tb| x.matmul_t(y, ta, tb);
        let (sa, sb) = (a.shape(), b.shape());
        if !self.ta && sb.len() == 2 && sa.len() > 2 && cx.needs_grad(1) {
            // A batch of rows times one matrix (a layer applied to [batch, seq, width]): B's
            // gradient is one product over all the rows, `A₂ᵀ G₂` with A and G flattened to
            // matrices — not a product per batch element summed afterwards.
            let k = sa[sa.len() - 1];
            let rows: usize = sa[..sa.len() - 1].iter().product();
            let n = g.shape()[sa.len() - 1];
            let (a2, g2) = (a.reshape(&[rows, k]), g.reshape(&[rows, n]));
            let db = if self.tb {
                mm(&g2, &a2, true, false)
            } else {
                mm(&a2, &g2, true, false)
            };
            let da = cx.needs_grad(0).then(|| mm(g, b, false, !self.tb).sum_to_like(a));
            return Ok(cx.grads([da, Some(db)]));
        }
        let (da, db): (&dyn Fn() -> V, &dyn Fn() -> V) = match (self.ta, self.tb) {
            (false, false) => (&|| mm(g, b, false, true), &|| mm(a, g, true, false)),
            (false, true) => (&|| mm(g, b, false, false), &|| mm(g, a, true, false)),
            (true, false) => (&|| mm(b, g, false, true), &|| mm(a, g, false, false)),
            (true, true) => (&|| mm(b, g, true, true), &|| mm(g, a, true, true)),
        };
        Ok(cx.grads([
            cx.needs_grad(0).then(|| da().sum_to_like(a)),
            cx.needs_grad(1).then(|| db().sum_to_like(b)),
        ]))
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

    /// `self @ otherᵀ` (the last two axes of `other` transposed, read through strides — no copy).
    /// The same as `matmul_t(other, false, true)`, named.
    #[track_caller]
    pub fn matmul_nt(self, other: Var<'t, T>) -> Var<'t, T> {
        self.matmul_t(other, false, true)
    }

    /// `selfᵀ @ other` (no copy); `matmul_t(other, true, false)`, named.
    #[track_caller]
    pub fn matmul_tn(self, other: Var<'t, T>) -> Var<'t, T> {
        self.matmul_t(other, true, false)
    }

    /// `selfᵀ @ otherᵀ` (no copy); `matmul_t(other, true, true)`, named.
    #[track_caller]
    pub fn matmul_tt(self, other: Var<'t, T>) -> Var<'t, T> {
        self.matmul_t(other, true, true)
    }

    /// `op(self) @ op(other)`, where `op` transposes the last two axes when its flag is set; no
    /// transposed copy is made. [`matmul_nt`](Self::matmul_nt), [`matmul_tn`](Self::matmul_tn)
    /// and [`matmul_tt`](Self::matmul_tt) name the three transposed forms.
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

/// Random programs' and the fuzzer's call of `op(A) @ op(B)`. Tame: a pair from the pool whose
/// shapes fit (both at least 2-D, inner sizes equal, batch axes broadcasting; `None` if there is
/// none — `A` with itself fits the `nt` and `tn` forms always); wild: any two values.
fn matmul_recipe<'t, T: Float>(c: &mut Choice<'_>, v: &[Var<'t, T>], ta: bool, tb: bool) -> Option<Var<'t, T>> {
    if c.wild() {
        let (a, b) = (c.pick(v), c.pick(v));
        return Some(a.matmul_t(b, ta, tb));
    }
    let fits = |sa: &[usize], sb: &[usize]| {
        let (m, n) = (sa.len(), sb.len());
        m >= 2
            && n >= 2
            && (if ta { sa[m - 2] } else { sa[m - 1] }) == (if tb { sb[n - 1] } else { sb[n - 2] })
            && broadcast_extents(&sa[..m - 2], &sb[..n - 2]).is_some()
    };
    let (i0, j0) = (c.below(v.len()), c.below(v.len()));
    let at = |start: usize, k: usize| v[(start + k) % v.len()];
    (0..v.len())
        .flat_map(|i| (0..v.len()).map(move |j| (i, j)))
        .map(|(i, j)| (at(i0, i), at(j0, j)))
        .find(|(a, b)| fits(&a.shape(), &b.shape()))
        .map(|(a, b)| a.matmul_t(b, ta, tb))
}

pub(crate) fn register(r: &mut Registry) {
    macro_rules! entry {
        ($name:literal, $ta:literal, $tb:literal) => {
            r.register(
                OpInfo::new(
                    $name,
                    "matrix product op(A) @ op(B), batched with broadcasting",
                    || {
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
                        .into_iter()
                        .map(|s| s.with_reference(|x| reference::matmul(&x[0], &x[1], $ta, $tb)))
                        .collect()
                    },
                )
                .recipe(recipe!(|c, v| matmul_recipe(c, v, $ta, $tb))),
            )
        };
    }
    entry!("matmul", false, false);
    entry!("matmul_nt", false, true);
    entry!("matmul_tn", true, false);
    entry!("matmul_tt", true, true);
}
