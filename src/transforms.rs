//! Function transforms on top of the tape: vector-Jacobian and Jacobian-vector products,
//! Jacobians, Hessians and Hessian-vector products (`gradgradcheck` lives in [`crate::check`]).
//!
//! Every transform takes a function of [`Var`]s, records it on a fresh [`Tape`] and differentiates
//! it — once with [`Tape::grad`], or twice through a recorded backward pass
//! ([`Tape::grad_graph`]). Costs are stated in units of one *gradient*: one forward pass plus one
//! plain backward pass, with `n` the number of input elements.
//!
//! | transform | what it returns | cost |
//! |---|---|---|
//! | [`grad`], [`value_and_grad`] | `∇f(x)` | 1 gradient |
//! | [`vjp`], [`vjp_n`] | `vᵀ J` | 1 gradient |
//! | [`jvp`], [`jvp_n`] | `J t` (double-VJP trick) | ≈ 2–3 gradients |
//! | [`hvp`], [`hvp_n`] | `H v` (reverse over reverse) | a small constant: ≤ ≈ 4 gradients in theory, 1.3–1.8 measured |
//! | [`with_hessian`] | `H v` for many `v` at one `x` | 1 recorded gradient, then ≈ 0.5–1 gradient per product (measured) |
//! | [`jacobian`] | `J` | `m` backward passes (`m` outputs) |
//! | [`hessian`] | `H` | 1 recorded gradient + `n` backward passes |
//! | [`try_value_grad_hvp`] | `f`, `∇f`, `H v`, errors as `Err` | 1 recorded gradient + 1 backward pass |
//!
//! Closures stored in a `let` before they are passed need [`func`] / [`func_n`] (see there).
//!
//! ```
//! use tapegrad::{functional::{hessian, hvp}, Tensor};
//! // f(x) = Σ x³:  H = diag(6x)
//! let x = Tensor::from_vec(vec![1.0, -2.0], [2]);
//! let h = hessian(|x| (x * x * x).sum(), &x);
//! assert_eq!(h.to_vec(), vec![6.0, 0.0, 0.0, -12.0]);
//! let hv = hvp(|x| (x * x * x).sum(), &x, &Tensor::from_vec(vec![1.0, 1.0], [2]));
//! assert_eq!(hv.to_vec(), vec![6.0, -12.0]);
//! ```
//!
//! # Higher order, and rules that are first order only
//!
//! Every op's one rule is written in the rule vocabulary ([`crate::Value`], [`crate::Elem`]), so a
//! recorded backward records it and it can be differentiated again. A user rule that computes its
//! gradient from *values* (tensors) instead would make a second derivative silently zero; such a
//! rule should return its gradients through [`crate::VjpCtx::first_order_only`], which records them as a node that fails loudly — naming the op and
//! the line that built it — when a second derivative reaches it. [`gradgradcheck_registry`](crate::check::gradgradcheck_registry) checks
//! both promises: ops declared `differentiable_twice` pass [`gradgradcheck`](crate::check::gradgradcheck); the others fail
//! loudly when differentiated twice.

use crate::autodiff::tape::{Tape, Var};
use crate::core::error::{Error, ErrorKind, fail};
use crate::core::float::Float;
use crate::core::shape::fmt_shape;
use crate::tensor::Tensor;
use std::panic::Location;

/// Fails (with the caller's line) unless `y` has exactly one element.
#[track_caller]
fn need_scalar<T: Float>(what: &str, y: Var<'_, T>) {
    if y.numel() != 1 {
        fail(
            Error::new(
                ErrorKind::NonScalar,
                what,
                format!(
                    "{what} needs a function with a one-element output, but it returned shape {}",
                    fmt_shape(&y.shape())
                ),
            )
            .at(Location::caller()),
        );
    }
}

/// Fails (with the caller's line) unless `t` has `shape`.
#[track_caller]
fn need_shape<T: Float>(what: &str, name: &str, t: &Tensor<T>, shape: &[usize]) {
    if t.shape() != shape {
        fail(
            Error::shape(
                what,
                format!(
                    "{name} has shape {} but must have shape {}",
                    fmt_shape(t.shape()),
                    fmt_shape(shape)
                ),
            )
            .at(Location::caller()),
        );
    }
}

/// `f(x)` and its gradient, for `f` with a one-element output. Cost: 1 gradient.
///
/// ```
/// let (y, g) = tapegrad::functional::value_and_grad(|x| (x * x).sum(), &tapegrad::Tensor::from_vec(vec![3.0f64], [1]));
/// assert_eq!((y, g.to_vec()), (9.0, vec![6.0]));
/// ```
#[track_caller]
pub fn value_and_grad<T: Float, F>(f: F, x: &Tensor<T>) -> (T, Tensor<T>)
where
    F: for<'t> Fn(Var<'t, T>) -> Var<'t, T>,
{
    let tape = Tape::new();
    let xv = tape.var(x.clone());
    let y = f(xv);
    need_scalar("value_and_grad", y);
    let g = tape.grad_lenient(&[y], &[Tensor::ones(y.shape())], &[xv]);
    (y.item(), g.into_iter().next().unwrap())
}

/// The gradient of `f` (one-element output) at `x`. Cost: 1 gradient.
#[track_caller]
pub fn grad<T: Float, F>(f: F, x: &Tensor<T>) -> Tensor<T>
where
    F: for<'t> Fn(Var<'t, T>) -> Var<'t, T>,
{
    value_and_grad(f, x).1
}

/// `(f(x), vᵀ J)`: the vector-Jacobian product, where `J = ∂f/∂x` and `v` has the shape of
/// `f(x)`. Cost: 1 gradient (a forward and one backward pass), whatever the sizes.
///
/// ```
/// use tapegrad::{functional::vjp, Tensor};
/// let (y, g) = vjp(|x| x * x, &Tensor::from_vec(vec![1.0f64, 2.0], [2]), &Tensor::from_vec(vec![1.0, 10.0], [2]));
/// assert_eq!((y.to_vec(), g.to_vec()), (vec![1.0, 4.0], vec![2.0, 40.0]));
/// ```
#[track_caller]
pub fn vjp<T: Float, F>(f: F, x: &Tensor<T>, v: &Tensor<T>) -> (Tensor<T>, Tensor<T>)
where
    F: for<'t> Fn(Var<'t, T>) -> Var<'t, T>,
{
    let (y, mut g) = vjp_n(|xs| f(xs[0]), std::slice::from_ref(x), v);
    (y, g.pop().unwrap())
}

/// Multi-input [`vjp`]: `(f(xs), [vᵀ ∂f/∂x_k for each k])`. Cost: 1 gradient.
#[track_caller]
pub fn vjp_n<T: Float, F>(f: F, xs: &[Tensor<T>], v: &Tensor<T>) -> (Tensor<T>, Vec<Tensor<T>>)
where
    F: for<'t> Fn(&[Var<'t, T>]) -> Var<'t, T>,
{
    let tape = Tape::new();
    let vars: Vec<Var<'_, T>> = xs.iter().map(|x| tape.var(x.clone())).collect();
    let y = f(&vars);
    need_shape("vjp", "the cotangent v", v, &y.shape());
    let g = tape.grad_lenient(&[y], std::slice::from_ref(v), &vars);
    (y.value(), g)
}

/// `(f(x), J t)`: the Jacobian-vector (forward-mode) product, with `t` shaped like `x`.
///
/// Computed by the double-VJP trick: `u ↦ Jᵀ u` is linear in a dummy cotangent `u`, so recording
/// that backward pass and differentiating it with respect to `u` in direction `t` gives `J t`.
/// Cost: a forward pass, a recorded backward pass and a backward pass through both — about 2–3
/// gradients, independent of the sizes (versus `n` backward passes for the full Jacobian).
///
/// ```
/// use tapegrad::{functional::jvp, Tensor};
/// // f(x) = [x0·x1, x0²],  J t = [x1 t0 + x0 t1, 2 x0 t0]
/// fn f(x: tapegrad::Var<'_, f64>) -> tapegrad::Var<'_, f64> {
///     (x.reshape([2, 1]) * x.reshape([1, 2])).reshape([4])     // outer product, flattened
/// }
/// let (_, jt) = jvp(f, &Tensor::from_vec(vec![2.0, 3.0], [2]), &Tensor::from_vec(vec![1.0, 0.0], [2]));
/// assert_eq!(jt.to_vec(), vec![4.0, 3.0, 3.0, 0.0]);
/// ```
#[track_caller]
pub fn jvp<T: Float, F>(f: F, x: &Tensor<T>, t: &Tensor<T>) -> (Tensor<T>, Tensor<T>)
where
    F: for<'t> Fn(Var<'t, T>) -> Var<'t, T>,
{
    jvp_n(|xs| f(xs[0]), std::slice::from_ref(x), std::slice::from_ref(t))
}

/// Multi-input [`jvp`]: `(f(xs), Σ_k ∂f/∂x_k · t_k)`. Cost: about 2–3 gradients.
#[track_caller]
pub fn jvp_n<T: Float, F>(f: F, xs: &[Tensor<T>], ts: &[Tensor<T>]) -> (Tensor<T>, Tensor<T>)
where
    F: for<'t> Fn(&[Var<'t, T>]) -> Var<'t, T>,
{
    if xs.len() != ts.len() {
        fail(
            Error::new(
                ErrorKind::Invalid,
                "jvp",
                format!("{} inputs but {} tangents", xs.len(), ts.len()),
            )
            .at(Location::caller()),
        );
    }
    for (x, t) in xs.iter().zip(ts) {
        need_shape("jvp", "a tangent", t, x.shape());
    }
    let tape = Tape::new();
    let vars: Vec<Var<'_, T>> = xs.iter().map(|x| tape.var(x.clone())).collect();
    let y = f(&vars);
    // The dummy cotangent: its value is irrelevant (Jᵀu is linear in u), zeros are cheapest.
    let u = tape.var(Tensor::zeros(y.shape()));
    let jtu = tape.grad_graph_lenient(&[y], &[u], &vars);
    let jt = tape.grad_lenient(&jtu, ts, &[u]);
    (y.value(), jt.into_iter().next().unwrap())
}

/// The full Jacobian of `f` at `x` (shape `f(x).shape ++ x.shape`), in reverse mode: one
/// backward pass per output element on one recording. Cost: 1 forward + `m` backward passes for
/// `m` output elements; for a wide Jacobian (few inputs, many outputs) `n` calls of [`jvp`] are
/// cheaper. The same function as [`check::jacobian`](crate::check::jacobian).
#[track_caller]
pub fn jacobian<T: Float, F>(f: F, x: &Tensor<T>) -> Tensor<T>
where
    F: for<'t> Fn(Var<'t, T>) -> Var<'t, T>,
{
    crate::check::jacobian(f, x)
}

/// `f` and its gradient recorded at one point, ready for many Hessian-vector products; see
/// [`with_hessian`].
pub struct HessianAt<'t, T: Float> {
    tape: &'t Tape<T>,
    xs: Vec<Var<'t, T>>,
    value: Var<'t, T>,
    grads: Vec<Var<'t, T>>,
}

impl<T: Float> std::fmt::Debug for HessianAt<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HessianAt")
            .field("inputs", &self.xs.len())
            .finish_non_exhaustive()
    }
}

impl<'t, T: Float> HessianAt<'t, T> {
    /// `f(x)`.
    pub fn value(&self) -> T {
        self.value.item()
    }

    /// `∇f(x)` (for several inputs, the gradient of the first; see [`grads`](Self::grads)).
    pub fn grad(&self) -> Tensor<T> {
        self.grads[0].value()
    }

    /// `∇f` with respect to each input.
    pub fn grads(&self) -> Vec<Tensor<T>> {
        self.grads.iter().map(|g| g.value()).collect()
    }

    /// `H v`. One backward pass through the recorded forward and backward passes (about 1–3
    /// gradients); the tape is left as it was, so this can be called any number of times.
    #[track_caller]
    pub fn hvp(&self, v: &Tensor<T>) -> Tensor<T> {
        self.hvp_n(std::slice::from_ref(v)).pop().unwrap()
    }

    /// Multi-input `H v`: `[Σ_j ∂²f/∂x_k∂x_j · v_j for each k]`.
    #[track_caller]
    pub fn hvp_n(&self, vs: &[Tensor<T>]) -> Vec<Tensor<T>> {
        if vs.len() != self.xs.len() {
            fail(
                Error::new(
                    ErrorKind::Invalid,
                    "hvp",
                    format!("{} inputs but {} directions", self.xs.len(), vs.len()),
                )
                .at(Location::caller()),
            );
        }
        for (v, x) in vs.iter().zip(&self.xs) {
            need_shape("hvp", "the direction v", v, &x.shape());
        }
        self.tape.grad_lenient(&self.grads, vs, &self.xs)
    }
}

/// Records `f` and its gradient at `x` once, then runs `body`, which can ask for any number of
/// Hessian-vector products at that point (`h.hvp(&v)`) — the shape of Newton–CG and Lanczos.
/// Cost: 1 recorded gradient up front, then one backward pass through it per product.
///
/// ```
/// use tapegrad::{functional::with_hessian, Tensor, Var};
/// // f(x) = ½ xᵀ A x with A symmetric:  ∇f = A x,  H = A
/// fn f(x: Var<'_, f64>) -> Var<'_, f64> {
///     let a = x.tape().constant(Tensor::from_vec(vec![2.0, 1.0, 1.0, 3.0], [2, 2]));
///     x.reshape([1, 2]).matmul(a).matmul(x.reshape([2, 1])).sum() * 0.5
/// }
/// let x = Tensor::from_vec(vec![1.0, 2.0], [2]);
/// let (g, he0, he1) = with_hessian(f, &x, |h| {
///     (h.grad(), h.hvp(&Tensor::from_vec(vec![1.0, 0.0], [2])), h.hvp(&Tensor::from_vec(vec![0.0, 1.0], [2])))
/// });
/// assert_eq!(g.to_vec(), vec![4.0, 7.0]);
/// assert_eq!((he0.to_vec(), he1.to_vec()), (vec![2.0, 1.0], vec![1.0, 3.0]));
/// ```
///
/// Pass a closure inline, an `fn` item, or a closure stored with [`func`] (a closure stored in a
/// plain `let` does not get the `for<'t>` signature the transforms need).
#[track_caller]
pub fn with_hessian<T: Float, F, R>(f: F, x: &Tensor<T>, body: impl for<'a> FnOnce(&HessianAt<'a, T>) -> R) -> R
where
    F: for<'t> Fn(Var<'t, T>) -> Var<'t, T>,
{
    with_hessian_n(|xs| f(xs[0]), std::slice::from_ref(x), body)
}

/// Multi-input [`with_hessian`].
#[track_caller]
pub fn with_hessian_n<T: Float, F, R>(f: F, xs: &[Tensor<T>], body: impl for<'a> FnOnce(&HessianAt<'a, T>) -> R) -> R
where
    F: for<'t> Fn(&[Var<'t, T>]) -> Var<'t, T>,
{
    let tape = Tape::new();
    let vars: Vec<Var<'_, T>> = xs.iter().map(|x| tape.var(x.clone())).collect();
    let y = f(&vars);
    need_scalar("hessian", y);
    let one = tape.constant(Tensor::ones(y.shape()));
    let grads = tape.grad_graph_lenient(&[y], &[one], &vars);
    body(&HessianAt {
        tape: &tape,
        xs: vars,
        value: y,
        grads,
    })
}

/// The Hessian-vector product `H v = ∇(⟨∇f(x), v⟩)` of `f` (one-element output) at `x`, by
/// reverse-over-reverse: a recorded gradient, then one backward pass through it. Cost: a small
/// constant times one gradient, independent of the size of `x` — 1.3–1.8× in `benches/hvp.rs`
/// (softmax regression and a two-layer MLP), because the forward pass is shared.
#[track_caller]
pub fn hvp<T: Float, F>(f: F, x: &Tensor<T>, v: &Tensor<T>) -> Tensor<T>
where
    F: for<'t> Fn(Var<'t, T>) -> Var<'t, T>,
{
    with_hessian(f, x, |h| h.hvp(v))
}

/// Multi-input [`hvp`]: the blocks of the Hessian over all inputs applied to `vs`.
#[track_caller]
pub fn hvp_n<T: Float, F>(f: F, xs: &[Tensor<T>], vs: &[Tensor<T>]) -> Vec<Tensor<T>>
where
    F: for<'t> Fn(&[Var<'t, T>]) -> Var<'t, T>,
{
    with_hessian_n(f, xs, |h| h.hvp_n(vs))
}

/// The Hessian of `f` (one-element output) at `x`, shape `x.shape ++ x.shape`: one recorded
/// gradient, then one Hessian-vector product per element of `x`. Cost: 1 recorded gradient + `n`
/// backward passes through it — use [`hvp`] when only products are needed.
#[track_caller]
pub fn hessian<T: Float, F>(f: F, x: &Tensor<T>) -> Tensor<T>
where
    F: for<'t> Fn(Var<'t, T>) -> Var<'t, T>,
{
    with_hessian(f, x, |h| {
        let n = x.numel();
        let mut data = Vec::with_capacity(n * n);
        for i in 0..n {
            let e = Tensor::from_fn(x.shape(), |j| if i == j { T::ONE } else { T::ZERO });
            // H is symmetric, so row i is H e_i.
            data.extend_from_slice(h.hvp(&e).data());
        }
        let mut shape = x.shape().to_vec();
        shape.extend_from_slice(x.shape());
        Tensor::from_vec(data, shape)
    })
}

/// Gives a closure the signature the transforms take (`for<'t> Fn(Var<'t, T>) -> Var<'t, T>`),
/// so it can be stored in a `let` and used many times. (Rust infers that higher-ranked signature
/// only for a closure written directly in the call: `let f = |x| (x * x).sum(); grad(f, &x)` fails
/// with "one type is more general than the other"; `let f = func(|x| (x * x).sum());` compiles.)
///
/// ```
/// use tapegrad::transforms::{func, grad, hvp};
/// use tapegrad::Tensor;
/// let f = func(|x| (x * x * x).sum());               // stored, then used twice
/// let x = Tensor::from_vec(vec![1.0f64, 2.0], [2]);
/// assert_eq!(grad(&f, &x).to_vec(), vec![3.0, 12.0]);
/// assert_eq!(hvp(&f, &x, &Tensor::from_vec(vec![1.0, 0.0], [2])).to_vec(), vec![6.0, 0.0]);
/// ```
pub fn func<T: Float, F>(f: F) -> F
where
    F: for<'t> Fn(Var<'t, T>) -> Var<'t, T>,
{
    f
}

/// [`func`] for functions of several inputs (`for<'t> Fn(&[Var<'t, T>]) -> Var<'t, T>`).
///
/// ```
/// use tapegrad::transforms::{func_n, hvp_n};
/// use tapegrad::Tensor;
/// let f = func_n(|v| (v[0] * v[1]).sum());
/// let (a, b) = (Tensor::from_vec(vec![1.0f64], [1]), Tensor::from_vec(vec![2.0], [1]));
/// let hv = hvp_n(&f, &[a, b], &[Tensor::from_vec(vec![1.0], [1]), Tensor::from_vec(vec![0.0], [1])]);
/// assert_eq!((hv[0].to_vec(), hv[1].to_vec()), (vec![0.0], vec![1.0]));  // H = [[0, 1], [1, 0]]
/// ```
pub fn func_n<T: Float, F>(f: F) -> F
where
    F: for<'t> Fn(&[Var<'t, T>]) -> Var<'t, T>,
{
    f
}

/// What [`try_value_grad_hvp`] returns: `f(x)`, its gradient and a Hessian-vector product, from
/// one recording.
#[derive(Clone, Debug)]
pub struct ValueGradHvp<T: Float> {
    /// `f(x)`.
    pub value: T,
    /// `∇f` with respect to each input.
    pub grads: Vec<Tensor<T>>,
    /// `H v` for each input.
    pub hvp: Vec<Tensor<T>>,
}

/// `f(x)`, `∇f(x)` and `H v` from one recording (what a Newton–CG step needs), for a function that
/// may fail: `f` returns a `Result` (use `?` on the `try_` calls inside, or [`crate::attempt`]),
/// and every error — from `f`, from a shape mismatch of `vs`, from the backward passes — comes
/// back as `Err` instead of a panic. Cost: 1 recorded gradient + 1 backward pass through it.
///
/// ```
/// use tapegrad::transforms::try_value_grad_hvp;
/// use tapegrad::{Tensor, Var};
/// // f(x) = Σ x³: ∇f = 3x², H = diag(6x)
/// let out = try_value_grad_hvp(
///     |v: &[Var<'_, f64>]| Ok((v[0] * v[0] * v[0]).sum()),
///     &[Tensor::from_vec(vec![1.0, 2.0], [2])],
///     &[Tensor::from_vec(vec![1.0, 1.0], [2])],
/// )
/// .unwrap();
/// assert_eq!(out.value, 9.0);
/// assert_eq!(out.grads[0].to_vec(), vec![3.0, 12.0]);
/// assert_eq!(out.hvp[0].to_vec(), vec![6.0, 12.0]);
/// // an error inside f is returned, not raised
/// let e = try_value_grad_hvp(
///     |v: &[Var<'_, f64>]| tapegrad::attempt(|| v[0].matmul(v[0]).sum()),
///     &[Tensor::from_vec(vec![1.0, 2.0], [2])],
///     &[Tensor::from_vec(vec![1.0, 1.0], [2])],
/// );
/// assert!(e.unwrap_err().to_string().contains("matmul"));
/// ```
#[track_caller]
pub fn try_value_grad_hvp<T: Float, F>(f: F, xs: &[Tensor<T>], vs: &[Tensor<T>]) -> crate::Result<ValueGradHvp<T>>
where
    F: for<'t> Fn(&[Var<'t, T>]) -> crate::Result<Var<'t, T>>,
{
    let loc = Location::caller();
    if vs.len() != xs.len() {
        return Err(Error::new(
            ErrorKind::Invalid,
            "hvp",
            format!("{} inputs but {} directions", xs.len(), vs.len()),
        )
        .at(loc));
    }
    for (v, x) in vs.iter().zip(xs) {
        if v.shape() != x.shape() {
            return Err(Error::shape(
                "hvp",
                format!(
                    "the direction v has shape {} but must have shape {}",
                    fmt_shape(v.shape()),
                    fmt_shape(x.shape())
                ),
            )
            .at(loc));
        }
    }
    let tape = Tape::new();
    let vars: Vec<Var<'_, T>> = xs.iter().map(|x| tape.var(x.clone())).collect();
    let y = f(&vars)?;
    if y.numel() != 1 {
        return Err(Error::new(
            ErrorKind::NonScalar,
            "hvp",
            format!(
                "hvp needs a function with a one-element output, but it returned shape {}",
                fmt_shape(&y.shape())
            ),
        )
        .at(loc));
    }
    let one = tape.constant(Tensor::ones(y.shape()));
    let grads = tape.grad_graph_impl(&[y], &[one], &vars, true, loc)?;
    let hvp = tape.grad_impl(&grads, vs, &vars, true, loc)?;
    Ok(ValueGradHvp {
        value: y.item(),
        grads: grads.iter().map(|g| g.value()).collect(),
        hvp,
    })
}
