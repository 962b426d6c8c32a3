//! Selection and comparison: `select` (NumPy's `where`), the comparisons `gt lt ge le eq` that
//! build its masks, and the strong-zero chain-rule products `chain_mul chain_div` that keep a
//! masked-out branch from leaking NaN into a gradient.
//!
//! # Masks have no gradient
//!
//! A comparison returns a tensor of `1.0` (true) and `0.0` (false). It is piecewise constant, so it
//! is recorded as a **constant**: no gradient flows through it, whatever its inputs are — the
//! output of `x.gt(y)` has `requires_grad() == false` even when `x` is a variable.
//!
//! # "Not taken" means "contributes nothing"
//!
//! `cond.select(a, b)` takes `a` where `cond ≠ 0` and `b` elsewhere (a NaN in `cond` counts as
//! true). Its VJP *selects* the gradient — `select(cond, g, 0)` for `a`, `select(cond, 0, g)` for
//! `b` — it never multiplies `g` by a 0/1 mask, which would turn `0 · ∞` into NaN.
//!
//! That alone is not enough: in `where(x > 0, sqrt(x), 0)` at `x = 0`, the zero cotangent reaching
//! `sqrt` meets its infinite local derivative `1 / (2√x)`. So the chain-rule products of the rules
//! whose local derivative can be infinite or NaN (`exp log sqrt powf mul div rdiv_scalar`) use
//! the **strong-zero** convention: [`chain_mul`](Var::chain_mul) and [`chain_div`](Var::chain_div)
//! give exactly `0` where the cotangent is `0`, whatever the other factor. A branch that is not
//! taken therefore contributes nothing, even when its value or its gradient is `±∞` or NaN:
//!
//! ```
//! use tapegrad::{Tape, Tensor};
//! let tape = Tape::<f64>::new();
//! let x = tape.var(Tensor::from_vec(vec![4.0, 0.0, -1.0], [3]));
//! let zero = tape.scalar(0.0);
//! let y = x.gt(zero).select(x.sqrt(), zero).sum();
//! assert_eq!(y.backward()[x].to_vec(), vec![0.25, 0.0, 0.0]);   // not NaN
//! ```
//!
//! Limit: the convention covers elementwise ops. A `matmul` whose operand holds `±∞` or NaN still
//! mixes it into every output of its row/column (IEEE `0 · ∞ = NaN` inside the kernel).

use super::common::{arity, binary_ops, broadcast_zip};
use super::reference;
use super::registry::{Choice, Domain, OpInfo, Reference, Registry};
use crate::autodiff::rule::{Binary, Elem, Pointwise, Ternary, Value};
use crate::autodiff::rule::{Cotangents, Op, VjpCtx};
use crate::autodiff::tape::{OpRef, Var};
use crate::core::error::{Error, Result};
use crate::core::float::Float;
use crate::core::shape::fmt_shape;
use crate::tensor::Tensor;
use crate::{recipe, sample};
use std::panic::Location;

/// Declares the comparisons: each a type of its own (so it inlines into fused loops), producing
/// a 0/1 mask that is recorded as a constant (no gradient).
macro_rules! comparisons {
    ($($(#[$vdoc:meta])* $method:ident: $ty:ident $name:literal $op:tt;)*) => {
/// The selection vocabulary of rules, as methods of any [`Elem`]: masks, `select`, and the
        /// strong-zero chain-rule products. On a recorded value each records its op (a comparison as a
        /// constant).
        pub trait Logic<T: Float>: Elem<T> {
            /// The chain-rule product `self · d` with a strong zero: exactly `0` where `self` is `0`,
            /// even when `d` is infinite or NaN.
            #[inline(always)]
            fn chain_mul(self, d: Self) -> Self {
                self.map2(d, &ChainMul)
            }
            /// The chain-rule quotient `self / d` with a strong zero: exactly `0` where `self` is `0`,
            /// even when `d` is `0` or NaN.
            #[inline(always)]
            fn chain_div(self, d: Self) -> Self {
                self.map2(d, &ChainDiv)
            }
            /// `on_true` where this mask is non-zero (NaN counts as true), `on_false` elsewhere.
            #[inline(always)]
            fn select(self, on_true: Self, on_false: Self) -> Self {
                self.map3(on_true, on_false, &Select)
            }
            $(
                #[doc = concat!("The mask `self ", stringify!($op), " o` (1 or 0; false with NaN).")]
                #[inline(always)]
                fn $method(self, o: Self) -> Self {
                    self.map2(o, &$ty)
                }
            )*
        }
        impl<T: Float, E: Elem<T>> Logic<T> for E {}

        impl<'t, T: Float> Var<'t, T> {
            $(
                $(#[$vdoc])*
                #[track_caller]
                pub fn $method(self, other: Var<'t, T>) -> Var<'t, T> {
                    self.compare(&$ty, other)
                }
            )*
        }
        binary_ops! {$(
            #[doc = concat!("The mask `a ", stringify!($op), " b` (1 where true, 0 where false; false with NaN).")]
            /// Piecewise constant: its gradient is zero (and the `Var` methods record it as a
            /// constant, so no gradient reaches it).
            $ty $name mask, |a, b| if a $op b { T::ONE } else { T::ZERO },
                rule |cx, g, a, b, y| [a.constant(Tensor::zeros(a.shape())), b.constant(Tensor::zeros(b.shape()))];
        )*}

    };
}

comparisons! {
    /// The mask `self > other` (1 where true, 0 where false), broadcasting. A constant: no
    /// gradient flows through a comparison. Comparisons with NaN are false.
    ///
    /// ```
    /// use tapegrad::{Tape, Tensor};
    /// let tape = Tape::<f64>::new();
    /// let x = tape.var(Tensor::from_vec(vec![-1.0, 0.0, 2.0], [3]));
    /// let m = x.gt(tape.scalar(0.0));
    /// assert_eq!(m.value().to_vec(), vec![0.0, 0.0, 1.0]);
    /// assert!(!m.requires_grad());
    /// ```
    gt: Gt "gt" >;
    /// The mask `self < other`; see [`gt`](Self::gt).
    lt: Lt "lt" <;
    /// The mask `self ≥ other`; see [`gt`](Self::gt).
    ge: Ge "ge" >=;
    /// The mask `self ≤ other`; see [`gt`](Self::gt).
    le: Le "le" <=;
    /// The mask `self == other` (exact equality); see [`gt`](Self::gt).
    eq: Eq "eq" ==;
}

/// `select(cond, a, b)`: `a` where `cond ≠ 0`, `b` elsewhere; all three broadcast together.
#[derive(Clone, Copy, Debug)]
pub struct Select;

impl<T: Float> Ternary<T> for Select {
    #[inline(always)]
    fn f(&self, c: T, a: T, b: T) -> T {
        if c != T::ZERO { a } else { b }
    }
    fn as_static(&self) -> Option<&'static Self> {
        Some(&Select)
    }
}

/// The gradient of `select`'s branch `a`: `g` where the mask holds, exactly 0 elsewhere.
pub(crate) struct TakeIf;
impl<T: Float> Pointwise<T, 2> for TakeIf {
    #[inline(always)]
    fn eval<E: Elem<T>>(&self, [c, g]: [E; 2]) -> E {
        c.select(g, g.lit(T::ZERO))
    }
}
/// The gradient of `select`'s branch `b`: `g` where the mask does not hold, exactly 0 elsewhere.
struct TakeUnless;
impl<T: Float> Pointwise<T, 2> for TakeUnless {
    #[inline(always)]
    fn eval<E: Elem<T>>(&self, [c, g]: [E; 2]) -> E {
        c.select(g.lit(T::ZERO), g)
    }
}

impl<T: Float> Op<T> for Select {
    fn name(&self) -> &'static str {
        "select"
    }
    fn forward(&self, x: &[&Tensor<T>]) -> Result<Tensor<T>> {
        arity("select", x, 3)?;
        let (c, a, b) = (x[0], x[1], x[2]);
        let out = crate::core::shape::broadcast_extents(c.shape(), a.shape())
            .and_then(|s| crate::core::shape::broadcast_extents(&s, b.shape()))
            .ok_or_else(|| {
                Error::shape(
                    "select",
                    format!(
                        "condition {}, on-true {} and on-false {} do not broadcast together",
                        fmt_shape(c.shape()),
                        fmt_shape(a.shape()),
                        fmt_shape(b.shape())
                    ),
                )
            })?;
        crate::tensor::checked_numel::<T>("select", &out)?;
        Ok(Tensor::zip_n("select", [c, a, b], |[c, a, b]| {
            Ternary::f(self, c, a, b)
        }))
    }
    /// *Selects* the gradient — `a` gets `select(cond, g, 0)`, `b` gets `select(cond, 0, g)` — so
    /// a NaN or infinite `g` at a position a branch did not supply never reaches it. The condition
    /// is piecewise constant: its gradient is zero.
    fn vjp<V: Value<T>>(&self, cx: &VjpCtx<'_, V>, g: &V) -> Result<Cotangents<V>> {
        let (c, a, b) = (cx.input(0), cx.input(1), cx.input(2));
        Ok(cx.grads([
            cx.needs_grad(0).then(|| c.constant(Tensor::zeros(c.shape()))),
            cx.needs_grad(1).then(|| V::pointwise_sum_to_like(&TakeIf, [c, g], a)),
            cx.needs_grad(2)
                .then(|| V::pointwise_sum_to_like(&TakeUnless, [c, g], b)),
        ]))
    }
    fn elementwise(&self) -> Option<crate::autodiff::rule::Elementwise<'_, T>> {
        Some(crate::autodiff::rule::Elementwise::Ternary(self))
    }
}

binary_ops! {
    /// The chain-rule product with a strong zero: `g · d`, but exactly `0` where `g = 0`. Away from
    /// `g = 0` this is `g · d`: `∂/∂g = d`, `∂/∂d = g`, both again with a strong zero in the
    /// incoming cotangent.
    ChainMul "chain_mul", |g, d| if g == T::ZERO { T::ZERO } else { g * d },
        rule |cx, h, g, d, y| [
            V::pointwise_sum_to_like(&ByD, [h, d], g),
            V::pointwise_sum_to_like(&ByD, [h, g], d)
        ];
    /// The chain-rule quotient with a strong zero: `g / d`, but exactly `0` where `g = 0`. With
    /// `y = g / d`: `∂/∂g = 1/d`, `∂/∂d = −y/d`, both with a strong zero in the incoming `h`.
    ChainDiv "chain_div", |g, d| if g == T::ZERO { T::ZERO } else { g / d },
        rule |cx, h, g, d, y| [
            V::pointwise_sum_to_like(&OverD, [h, d], g),
            V::pointwise(&OverD, [&V::pointwise_sum_to_like(&MinusHy, [h, y], d), d])
        ];
}

/// `h · d` (strong zero in `h`): the gradient of `chain_mul` for `g`.
pub(crate) struct ByD;
impl<T: Float> Pointwise<T, 2> for ByD {
    #[inline(always)]
    fn eval<E: Elem<T>>(&self, [h, d]: [E; 2]) -> E {
        h.chain_mul(d)
    }
    fn identity_at_one(&self) -> bool {
        true
    }
}

/// `h / d` (strong zero in `h`): the gradient of `chain_div` for `g`.
pub(crate) struct OverD;
impl<T: Float> Pointwise<T, 2> for OverD {
    #[inline(always)]
    fn eval<E: Elem<T>>(&self, [h, d]: [E; 2]) -> E {
        h.chain_div(d)
    }
}

/// `−h · y` (strong zero in `h`): the numerator of the gradient of `y = g / d` for `d`, summed
/// over `d`'s broadcast axes before the division (`d` is constant along them, so this is exact and
/// divides once per element of `d`, not of `y`).
pub(crate) struct MinusHy;
impl<T: Float> Pointwise<T, 2> for MinusHy {
    #[inline(always)]
    fn eval<E: Elem<T>>(&self, [h, y]: [E; 2]) -> E {
        -h.chain_mul(y)
    }
}

/// `−h · y / d` (strong zero in `h`): the gradient of `y = g / d` for `d`.
pub(crate) struct MinusHyOverD;
impl<T: Float> Pointwise<T, 3> for MinusHyOverD {
    #[inline(always)]
    fn eval<E: Elem<T>>(&self, [h, y, d]: [E; 3]) -> E {
        -h.chain_mul(y).chain_div(d)
    }
}

impl<'t, T: Float> Var<'t, T> {
    #[track_caller]
    fn compare(self, op: &'static dyn crate::autodiff::tape::DynOp<T>, other: Var<'t, T>) -> Var<'t, T> {
        let loc = Location::caller();
        let _off = self.tape.no_grad_guard();
        self.tape
            .record(OpRef::Static(op), &[self, other], loc)
            .unwrap_or_else(|e| crate::core::error::fail(e))
    }

    /// NumPy's `where(self, on_true, on_false)`: `on_true` where this mask is non-zero (NaN counts
    /// as true), `on_false` elsewhere; the three broadcast together. The branch not taken gets a
    /// gradient of exactly zero, even where its value or derivative is infinite or NaN (see the
    /// [module docs](crate::ops::select)).
    ///
    /// ```
    /// use tapegrad::{Tape, Tensor};
    /// let tape = Tape::<f64>::new();
    /// let x = tape.var(Tensor::from_vec(vec![-2.0, 3.0], [2]));
    /// let y = x.lt(tape.scalar(0.0)).select(-x, x * x);   // |x| on the left, x² on the right
    /// assert_eq!(y.value().to_vec(), vec![2.0, 9.0]);
    /// assert_eq!(y.sum().backward()[x].to_vec(), vec![-1.0, 6.0]);
    /// ```
    #[track_caller]
    pub fn select(self, on_true: Var<'t, T>, on_false: Var<'t, T>) -> Var<'t, T> {
        self.tape.op(OpRef::Static(&Select), &[self, on_true, on_false])
    }

    /// The chain-rule product `self · d` with a strong zero: exactly `0` where `self` is `0`, even
    /// when `d` is infinite or NaN. For VJP rules whose local derivative `d` can be non-finite.
    ///
    /// ```
    /// use tapegrad::{Tape, Tensor};
    /// let tape = Tape::<f64>::new();
    /// let g = tape.constant(Tensor::from_vec(vec![0.0, 2.0], [2]));
    /// let d = tape.constant(Tensor::from_vec(vec![f64::INFINITY, 3.0], [2]));
    /// assert_eq!(g.chain_mul(d).value().to_vec(), vec![0.0, 6.0]);
    /// ```
    #[track_caller]
    pub fn chain_mul(self, d: Var<'t, T>) -> Var<'t, T> {
        self.tape.op(OpRef::Static(&ChainMul), &[self, d])
    }

    /// The chain-rule quotient `self / d` with a strong zero: exactly `0` where `self` is `0`,
    /// even when `d` is `0` or NaN.
    #[track_caller]
    pub fn chain_div(self, d: Var<'t, T>) -> Var<'t, T> {
        self.tape.op(OpRef::Static(&ChainDiv), &[self, d])
    }
}

/// Why the comparison ops are registered as absorbing NaN.
const COMPARISONS_ABSORB_NAN: &str = "a comparison with NaN is false (IEEE 754), so a mask built from a NaN is 0, not NaN, as in PyTorch and NumPy; the NaN still reaches any value that flows through the selected branch";

/// Random programs' and the fuzzer's call of `select` (and `select_scalar`). Tame: a mask from
/// detached operands (`a > b` or `a < b`) selects between them (continuous at a tie), or a constant
/// mask selects between a value and a number (a mask computed from a value would flip under a
/// finite difference, and the number makes a jump there); wild: any three values (NaN and ±∞ in the
/// mask, mismatched shapes), now and then a number (NaN, ±∞, …) for a branch.
fn select_recipe<'t, T: Float>(c: &mut Choice<'_>, v: &[Var<'t, T>]) -> Option<Var<'t, T>> {
    let mode = c.below(4);
    if c.wild() {
        let (m, a, b) = (c.pick(v), c.pick(v), c.pick(v));
        let s = T::from_f64(c.scalar());
        return Some(match mode {
            0 => m.select_scalar(a, s),
            1 => m.select_scalar(s, b),
            _ => m.select(a, b),
        });
    }
    if mode < 2 {
        let x = c.pick(v);
        let bits = Tensor::from_fn(x.shape(), |_| if c.flag() { T::ONE } else { T::ZERO });
        let m = x.tape().constant(bits);
        let s = T::from_f64(c.scalar());
        return Some(if mode == 0 {
            m.select_scalar(x, s)
        } else {
            m.select_scalar(s, x)
        });
    }
    let (a, b) = c.pick_broadcastable(v)?;
    let (da, db) = (a.detach(), b.detach());
    let m = if c.flag() { da.gt(db) } else { da.lt(db) };
    Some(m.select(a, b))
}

pub(crate) fn register(r: &mut Registry) {
    // Inputs whose pairs are never within 0.1 of each other, so finite differences do not straddle
    // a flip of the comparison.
    fn apart(shape: &[usize], seed: u64) -> Tensor<f64> {
        let n: usize = shape.iter().product();
        let mut rng = crate::core::rng::Rng::new(seed);
        Tensor::from_fn(shape, |i| {
            let s = if rng.uniform() < 0.5 { -1.0 } else { 1.0 };
            // Odd and even seeds differ by 0.1 in magnitude at every position: no ties between them.
            s * (0.3 + 0.25 * ((i * 7 + 3) % n.max(1)) as f64 + 0.1 * (seed & 1) as f64)
        })
    }
    // Tame: a mask from *detached* operands selects between them (`where(a > b, a, b)`, the
    // elementwise maximum: continuous at a tie, so a finite difference across one is harmless);
    // wild: the bare comparison of any two values (mismatched shapes, NaN, ±∞).
    macro_rules! cmp_entry {
        ($name:literal, $summary:literal, $m:ident, $op:tt) => {
            r.register(
                OpInfo::new($name, $summary, || {
                    vec![
                        sample!(
                            "select by mask, [2,3]",
                            [apart(&[2, 3], 80), apart(&[2, 3], 81)],
                            |v| v[0].$m(v[1]).select(v[0] * v[1], v[1])
                        )
                        .with_reference(|x| {
                            reference::zip(&x[0], &x[1], |a, b| if a $op b { a * b } else { b })
                        }),
                        sample!("against 0-d, [3]", [apart(&[3], 82)], |v| {
                            let z = v[0].tape().scalar(0.0);
                            v[0].$m(z).select(v[0], -v[0]) + v[0].$m(z) * v[0]
                        })
                        .with_reference(|x| {
                            reference::map(&x[0], |a| {
                                let m = if a $op 0.0 { 1.0 } else { 0.0 };
                                (if m != 0.0 { a } else { -a }) + m * a
                            })
                        }),
                    ]
                })
                .absorbs_nan(COMPARISONS_ABSORB_NAN)
                .recipe(recipe!(|c, v| {
                    let (a, b) = c.pick_broadcastable(v)?;
                    if c.wild() {
                        return Some(a.$m(b));
                    }
                    Some(a.detach().$m(b.detach()).select(a, b))
                })),
            )
        };
    }
    cmp_entry!("gt", "mask a > b (constant, no gradient)", gt, >);
    cmp_entry!("lt", "mask a < b (constant, no gradient)", lt, <);
    cmp_entry!("ge", "mask a ≥ b (constant, no gradient)", ge, >=);
    cmp_entry!("le", "mask a ≤ b (constant, no gradient)", le, <=);
    r.register(
        OpInfo::new("eq", "mask a == b (constant, no gradient)", || {
            // Equality is a measure-zero event: the mask compares fixed data (as when testing
            // labels or indices), the gradient flows through the selected branches.
            vec![
                sample!(
                    "mask from fixed data, [2,2]",
                    [
                        Tensor::rand_normal([2, 2], 0.0, 1.0, 83),
                        Tensor::rand_normal([2, 2], 0.0, 1.0, 79)
                    ],
                    |v| {
                        let tape = v[0].tape();
                        let labels = tape.constant(Tensor::from_vec(
                            LABELS.iter().map(|&l| crate::Float::from_f64(l)).collect(),
                            [2, 2],
                        ));
                        labels.eq(tape.scalar(2.0)).select(v[0] * v[1], v[0] + v[1])
                    }
                )
                .with_reference(|x| {
                    let labels = Tensor::from_vec(LABELS.to_vec(), [2, 2]);
                    reference::zip3(&labels, &x[0], &x[1], |l, a, b| if l == 2.0 { a * b } else { a + b })
                }),
            ]
        })
        .absorbs_nan(COMPARISONS_ABSORB_NAN)
        // Tame: `where(a == b, a, b)` from detached operands (its value is `b` whatever the
        // mask, the gradient goes to `a` where they tie); wild: the bare comparison.
        .recipe(recipe!(|c, v| {
            let (a, b) = c.pick_broadcastable(v)?;
            if c.wild() {
                return Some(a.eq(b));
            }
            Some(a.detach().eq(b.detach()).select(a, b))
        })),
    );
    r.register(
        OpInfo::new(
            "select",
            "where(cond, a, b), broadcasting; the branch not taken gets exactly zero gradient",
            || {
                // Constant masks (as built from data or labels): a NaN planted in a branch must
                // reach the output exactly where that branch is taken. (Masks computed from a NaN
                // are 0 — the comparisons absorb NaN, see their entries.)
                let n = |s: &[usize], seed| Tensor::<f64>::rand_normal(s, 0.0, 1.0, seed);
                fn mask<'t, T: crate::Float>(v: Var<'t, T>, bits: &[f64], shape: &[usize]) -> Var<'t, T> {
                    let m = Tensor::from_vec(bits.iter().map(|&b| T::from_f64(b)).collect(), shape);
                    v.tape().constant(m)
                }
                /// The number `x` in the element type of `v` (a branch of select_scalar).
                fn lit<T: crate::Float>(_: Var<'_, T>, x: f64) -> T {
                    T::from_f64(x)
                }
                vec![
                    sample!("same [2,3]", [n(&[2, 3], 85), n(&[2, 3], 86)], |v| mask(
                        v[0],
                        &MASK_A,
                        &[2, 3]
                    )
                    .select(v[0] * v[1], v[1]))
                    .with_reference(|x| {
                        let m = Tensor::from_vec(MASK_A.to_vec(), [2, 3]);
                        reference::zip3(&m, &x[0], &x[1], |m, a, b| if m != 0.0 { a * b } else { b })
                    }),
                    sample!("broadcast [2,1] cond, [3] a, 0-d b", [n(&[3], 88), n(&[], 89)], |v| {
                        mask(v[0], &MASK_B, &[2, 1]).select(v[0] * v[0], v[1])
                    })
                    .with_reference(|x| {
                        let m = Tensor::from_vec(MASK_B.to_vec(), [2, 1]);
                        reference::zip3(&m, &x[0], &x[1], |m, a, b| if m != 0.0 { a * a } else { b })
                    }),
                    sample!("3-D [2,3,2] against [3,1]", [n(&[2, 3, 2], 90), n(&[3, 1], 91)], |v| {
                        mask(v[0], &MASK_C, &[2, 3, 2]).select(v[0].exp(), v[1].tanh())
                    })
                    .with_reference(|x| {
                        let m = Tensor::from_vec(MASK_C.to_vec(), [2, 3, 2]);
                        reference::zip3(&m, &x[0], &x[1], |m, a, b| if m != 0.0 { a.exp() } else { b.tanh() })
                    }),
                    // select_scalar: a number on either side, recorded as a 0-d constant.
                    sample!(
                        "select_scalar [2,3], x·y or 0",
                        [n(&[2, 3], 104), n(&[2, 3], 105)],
                        |v| { mask(v[0], &MASK_A, &[2, 3]).select_scalar(v[0] * v[1], lit(v[0], 0.0)) }
                    )
                    .with_reference(|x| {
                        let m = Tensor::from_vec(MASK_A.to_vec(), [2, 3]);
                        reference::zip3(&m, &x[0], &x[1], |m, a, b| if m != 0.0 { a * b } else { 0.0 })
                    }),
                    sample!("select_scalar 3-D [2,3,2], -1.5 or tanh x", [n(&[2, 3, 2], 106)], |v| {
                        mask(v[0], &MASK_C, &[2, 3, 2]).select_scalar(lit(v[0], -1.5), v[0].tanh())
                    })
                    .with_reference(|x| {
                        let m = Tensor::from_vec(MASK_C.to_vec(), [2, 3, 2]);
                        reference::zip(&m, &x[0], |m, a| if m != 0.0 { -1.5 } else { a.tanh() })
                    }),
                    sample!("select_scalar 1-element [1] mask, 0-d x or 2", [n(&[], 107)], |v| {
                        mask(v[0], &[1.0], &[1]).select_scalar(v[0], lit(v[0], 2.0))
                    })
                    .with_reference(|x| Tensor::from_vec(vec![x[0].item()], [1])),
                ]
            },
        )
        .recipe(recipe!(|c, v| select_recipe(c, v))),
    );
    r.register(
        OpInfo::new(
            "chain_mul",
            "g · d with a strong zero (0 where g = 0), the chain-rule product of VJP rules",
            || {
                let n = |s: &[usize], seed| Tensor::<f64>::rand_uniform(s, 0.3, 2.0, seed);
                let reference: Reference = |x| reference::zip(&x[0], &x[1], |g, d| if g == 0.0 { 0.0 } else { g * d });
                vec![
                    sample!("same [2,3]", [n(&[2, 3], 92), n(&[2, 3], 93)], |v| v[0].chain_mul(v[1])),
                    sample!("broadcast [2,3] by [3]", [n(&[2, 3], 94), n(&[3], 95)], |v| v[0]
                        .chain_mul(v[1])),
                    sample!("[3] by [2,3]", [n(&[3], 96), n(&[2, 3], 97)], |v| v[0].chain_mul(v[1])),
                ]
                .into_iter()
                .map(|s| s.with_reference(reference))
                .collect()
            },
        )
        .recipe(recipe!(|c, v| {
            let (g, d) = c.pick_broadcastable(v)?;
            Some(g.chain_mul(d))
        })),
    );
    r.register(
        OpInfo::new(
            "chain_div",
            "g / d with a strong zero (0 where g = 0), the chain-rule quotient of VJP rules",
            || {
                let n = |s: &[usize], seed| Tensor::<f64>::rand_uniform(s, 0.3, 2.0, seed);
                let reference: Reference = |x| reference::zip(&x[0], &x[1], |g, d| if g == 0.0 { 0.0 } else { g / d });
                vec![
                    sample!("same [2,3]", [n(&[2, 3], 98), n(&[2, 3], 99)], |v| v[0].chain_div(v[1])),
                    sample!("broadcast [2,3] by [3]", [n(&[2, 3], 100), n(&[3], 101)], |v| v[0]
                        .chain_div(v[1])),
                    sample!("[3] by [2,3]", [n(&[3], 102), n(&[2, 3], 103)], |v| v[0]
                        .chain_div(v[1])),
                ]
                .into_iter()
                .map(|s| s.with_reference(reference))
                .collect()
            },
        )
        // The domain is the denominator's.
        .domain(Domain::Positive)
        .recipe(recipe!(|c, v| {
            let (g, d) = c.pick_broadcastable(v)?;
            Some(g.chain_div(c.into_domain(d, Domain::Positive)))
        })),
    );
}

/// The labels of `eq`'s sample (compared with 2).
const LABELS: [f64; 4] = [1.0, 0.0, 2.0, 2.0];
/// The constant masks of `select`'s samples.
const MASK_A: [f64; 6] = [1.0, 0.0, 0.0, 1.0, 1.0, 0.0];
const MASK_B: [f64; 2] = [1.0, 0.0];
const MASK_C: [f64; 12] = [0.0, 1.0, 1.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0, 0.0, 1.0, 1.0];
