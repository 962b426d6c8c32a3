//! Reverse mode: one backward sweep over the tape.
//!
//! ```
//! use tapegrad::{Tape, Tensor};
//! let tape = Tape::<f64>::new();
//! let x = tape.var(Tensor::scalar(3.0));
//! let y = x * x + x.exp();                 // x is used three times: its gradients add up
//! let g = y.backward();
//! assert!((g[x].item() - (2.0 * 3.0 + 3f64.exp())).abs() < 1e-12);
//! assert_eq!(tape.len(), 4);               // x, mul, exp, add: backward left nothing behind
//! ```
//!
//! Both kinds of backward run the one sweep of [`crate::autodiff::sweep`] (a reverse walk over the
//! tape, no recursion), with the ops' one rule interpreted two ways:
//!
//! **First order** ([`Var::backward`], [`Tape::grad`]): each rule runs on the tensors stored on
//! the tape and records nothing, so the tape is left as it was; gradients are freed as soon as
//! they are consumed and accumulated in place.
//! **Recorded** ([`Tape::grad_graph`]): each rule runs on `Var`s and is recorded like any other
//! computation, so the returned gradients can be differentiated again.
//!
//! An input that the output does not depend on gets a gradient of zeros.

use crate::autodiff::sweep::{OnValues, Recorded, sweep};
use crate::autodiff::tape::{Cut, Tape, TruncateGuard, Var};
use crate::core::error::{Error, ErrorKind, Result, fail};
use crate::core::float::Float;
use crate::core::shape::fmt_shape;
use crate::tensor::Tensor;
use indexmap::IndexMap;
use std::panic::Location;

/// Gradients returned by [`Var::backward`]: one per variable leaf of the tape ([`Tape::var`]), in
/// creation order. Index it with the `Var`.
///
/// ```
/// use tapegrad::{Tape, Tensor};
/// let tape = Tape::<f64>::new();
/// let a = tape.var(Tensor::scalar(3.0));
/// let b = tape.var(Tensor::scalar(4.0));
/// let unused = tape.var(Tensor::from_vec(vec![1.0, 2.0], [2]));
/// let g = (a * b).backward();
/// assert_eq!((g[a].item(), g[b].item()), (4.0, 3.0));
/// assert_eq!(g[unused].to_vec(), vec![0.0, 0.0]);   // not used: zeros
/// assert_eq!(g.len(), 3);
/// ```
#[derive(Clone, Debug)]
pub struct Grads<T: Float> {
    tape_id: u64,
    /// The index of the value `backward` was called on.
    top: usize,
    map: IndexMap<usize, Tensor<T>>,
}

impl<T: Float> Grads<T> {
    /// The gradient for `v`, if `v` is a variable leaf of the same tape.
    pub fn get(&self, v: Var<'_, T>) -> Option<&Tensor<T>> {
        if v.tape.id() != self.tape_id {
            return None;
        }
        self.map.get(&v.index)
    }

    /// `(tape index, gradient)` pairs in the order the variables were created.
    pub fn iter(&self) -> impl Iterator<Item = (usize, &Tensor<T>)> {
        self.map.iter().map(|(&i, t)| (i, t))
    }

    /// The number of gradients.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// True when the tape had no variable leaves.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

impl<'t, T: Float> std::ops::Index<Var<'t, T>> for Grads<T> {
    type Output = Tensor<T>;
    #[track_caller]
    fn index(&self, v: Var<'t, T>) -> &Tensor<T> {
        if v.tape.id() != self.tape_id {
            fail(Error::new(
                ErrorKind::ForeignVar,
                "grads[var]",
                format!(
                    "the Var is from tape #{}, these gradients from tape #{}",
                    v.tape.id(),
                    self.tape_id
                ),
            ));
        }
        self.map.get(&v.index).unwrap_or_else(|| {
            let msg = if v.index > self.top {
                format!(
                    "{} was recorded after the value backward() was called on (node #{}), so it has no gradient in these results",
                    v.tape.describe(v.index),
                    self.top
                )
            } else {
                format!(
                    "{} is not a variable leaf (made with tape.var), so backward() kept no gradient for it; use tape.grad(..) for intermediate values",
                    v.tape.describe(v.index)
                )
            };
            fail(Error::new(ErrorKind::Invalid, "grads[var]", msg).at(Location::caller()))
        })
    }
}

impl<T: Float> Tape<T> {
    /// Gradients of `Σ_k ⟨cotangents[k], outputs[k]⟩` with respect to each of `wrt`, as tensors.
    /// This is the general vector-Jacobian product; an input the outputs do not depend on gets
    /// zeros. Each of `wrt` must require a gradient (a [`Tape::var`] or a value computed from
    /// one): asking for the gradient of a constant is an error, not a silent zero. The tape is
    /// left as it was. Panics on error; see [`try_grad`](Self::try_grad).
    ///
    /// ```
    /// use tapegrad::{Tape, Tensor};
    /// let tape = Tape::<f64>::new();
    /// let x = tape.var(Tensor::from_vec(vec![1.0, 2.0], [2]));
    /// let y = x * x;                                   // non-scalar output
    /// let g = tape.grad(&[y], &[Tensor::from_vec(vec![1.0, 10.0], [2])], &[x]);
    /// assert_eq!(g[0].to_vec(), vec![2.0, 40.0]);      // v ⊙ 2x
    /// ```
    #[track_caller]
    pub fn grad<'t>(&'t self, outputs: &[Var<'t, T>], cotangents: &[Tensor<T>], wrt: &[Var<'t, T>]) -> Vec<Tensor<T>> {
        self.try_grad(outputs, cotangents, wrt).unwrap_or_else(|e| fail(e))
    }

    /// Like [`grad`](Self::grad), returning errors instead of panicking.
    #[track_caller]
    pub fn try_grad<'t>(
        &'t self,
        outputs: &[Var<'t, T>],
        cotangents: &[Tensor<T>],
        wrt: &[Var<'t, T>],
    ) -> Result<Vec<Tensor<T>>> {
        self.grad_impl(outputs, cotangents, wrt, false, Location::caller())
    }

    /// [`grad`](Self::grad) for the crate's transforms and checks: outputs that need no gradient
    /// give zeros instead of an error.
    #[track_caller]
    pub(crate) fn grad_lenient<'t>(
        &'t self,
        outputs: &[Var<'t, T>],
        cotangents: &[Tensor<T>],
        wrt: &[Var<'t, T>],
    ) -> Vec<Tensor<T>> {
        self.grad_impl(outputs, cotangents, wrt, true, Location::caller())
            .unwrap_or_else(|e| fail(e))
    }

    /// [`grad_graph`](Self::grad_graph) for the crate's transforms and checks: outputs that need
    /// no gradient give constant zeros instead of an error.
    #[track_caller]
    pub(crate) fn grad_graph_lenient<'t>(
        &'t self,
        outputs: &[Var<'t, T>],
        cotangents: &[Var<'t, T>],
        wrt: &[Var<'t, T>],
    ) -> Vec<Var<'t, T>> {
        self.grad_graph_impl(outputs, cotangents, wrt, true, Location::caller())
            .unwrap_or_else(|e| fail(e))
    }

    /// [`try_grad`](Self::try_grad), optionally accepting outputs that need no gradient (their
    /// gradients are zeros): for the crate's transforms and checks, where a constant derivative
    /// (the gradient of a linear function, say) is a legitimate zero.
    pub(crate) fn grad_impl<'t>(
        &'t self,
        outputs: &[Var<'t, T>],
        cotangents: &[Tensor<T>],
        wrt: &[Var<'t, T>],
        allow_constant: bool,
        loc: &'static Location<'static>,
    ) -> Result<Vec<Tensor<T>>> {
        // A first-order backward records nothing; the guard keeps it so should a rule do so anyway.
        let _cleanup = TruncateGuard::new(self);
        let seeds = self.seeds(
            outputs,
            allow_constant,
            cotangents.len(),
            |k| Ok(self.constant(cotangents[k].clone())),
            loc,
        )?;
        let wrt_idx = self.wrt_indices(wrt, loc)?;
        let seeds = seeds
            .iter()
            .zip(cotangents)
            .map(|((o, _), c)| (o.index, c.clone()))
            .collect();
        let gs = sweep(self, &OnValues(self), seeds, &wrt_idx).map_err(|e| e.at(loc))?;
        Ok(gs
            .into_iter()
            .zip(wrt)
            .map(|(g, w)| g.unwrap_or_else(|| Tensor::zeros(w.shape())))
            .collect())
    }

    /// Like [`grad`](Self::grad), but the backward pass is recorded: the gradients are `Var`s
    /// that depend on the inputs and can be differentiated again (as PyTorch's `create_graph`).
    /// The cotangents are `Var`s too, so a gradient can depend on them.
    ///
    /// ```
    /// use tapegrad::{Tape, Tensor};
    /// let tape = Tape::<f64>::new();
    /// let x = tape.var(Tensor::scalar(2.0));
    /// let y = x * x * x;                                           // x³
    /// let dy = tape.grad_graph(&[y], &[tape.scalar(1.0)], &[x])[0]; // 3x² = 12
    /// let d2y = tape.grad(&[dy], &[Tensor::scalar(1.0)], &[x])[0].item(); // 6x = 12
    /// assert_eq!((dy.item(), d2y), (12.0, 12.0));
    /// ```
    #[track_caller]
    pub fn grad_graph<'t>(
        &'t self,
        outputs: &[Var<'t, T>],
        cotangents: &[Var<'t, T>],
        wrt: &[Var<'t, T>],
    ) -> Vec<Var<'t, T>> {
        self.try_grad_graph(outputs, cotangents, wrt)
            .unwrap_or_else(|e| fail(e))
    }

    /// Like [`grad_graph`](Self::grad_graph), returning errors instead of panicking. On error the
    /// nodes recorded so far are removed.
    #[track_caller]
    pub fn try_grad_graph<'t>(
        &'t self,
        outputs: &[Var<'t, T>],
        cotangents: &[Var<'t, T>],
        wrt: &[Var<'t, T>],
    ) -> Result<Vec<Var<'t, T>>> {
        self.grad_graph_impl(outputs, cotangents, wrt, false, Location::caller())
    }

    /// [`try_grad_graph`](Self::try_grad_graph), optionally accepting outputs that need no
    /// gradient (see [`grad_impl`](Self::grad_impl)).
    pub(crate) fn grad_graph_impl<'t>(
        &'t self,
        outputs: &[Var<'t, T>],
        cotangents: &[Var<'t, T>],
        wrt: &[Var<'t, T>],
        allow_constant: bool,
        loc: &'static Location<'static>,
    ) -> Result<Vec<Var<'t, T>>> {
        // On error or unwind the nodes recorded so far are removed; on success they stay.
        let cleanup = TruncateGuard::new(self);
        let result = (|| {
            let seeds = self.seeds(
                outputs,
                allow_constant,
                cotangents.len(),
                |k| self.check_own(&cotangents[k], "grad_graph").map(|_| cotangents[k]),
                loc,
            )?;
            let wrt_idx = self.wrt_indices(wrt, loc)?;
            // A recorded backward records its rules whatever the ambient mode (as `create_graph`).
            let _record = self.enable_grad_guard();
            let seeds = seeds.iter().map(|&(o, c)| (o.index, c)).collect();
            let gs = sweep(self, &Recorded(self), seeds, &wrt_idx).map_err(|e| e.at(loc))?;
            Ok(gs
                .into_iter()
                .zip(wrt)
                .map(|(g, w)| g.unwrap_or_else(|| self.constant(Tensor::zeros(w.shape()))))
                .collect())
        })();
        if result.is_ok() {
            cleanup.disarm();
        }
        result
    }

    fn seeds<'t>(
        &'t self,
        outputs: &[Var<'t, T>],
        allow_constant: bool,
        n_cot: usize,
        mut cot: impl FnMut(usize) -> Result<Var<'t, T>>,
        loc: &'static Location<'static>,
    ) -> Result<Vec<(Var<'t, T>, Var<'t, T>)>> {
        if outputs.len() != n_cot {
            return Err(Error::new(
                ErrorKind::Invalid,
                "grad",
                format!("{} outputs but {} cotangents", outputs.len(), n_cot),
            )
            .at(loc));
        }
        let mut seeds = Vec::with_capacity(outputs.len());
        for (k, &o) in outputs.iter().enumerate() {
            self.check_own(&o, "grad").map_err(|e| e.at(loc))?;
            if !o.requires_grad() && !allow_constant {
                return Err(Error::new(ErrorKind::NoGradient, "backward", self.why_no_gradient(o.index)).at(loc));
            }
            let c = cot(k).map_err(|e| e.at(loc))?;
            let (os, cs) = (o.shape(), c.shape());
            if os != cs {
                return Err(Error::shape(
                    "grad",
                    format!(
                        "cotangent {k} has shape {} but output {k} ({}) has shape {}",
                        fmt_shape(&cs),
                        self.describe(o.index),
                        fmt_shape(&os)
                    ),
                )
                .at(loc));
            }
            seeds.push((o, c));
        }
        Ok(seeds)
    }

    fn wrt_indices(&self, wrt: &[Var<'_, T>], loc: &'static Location<'static>) -> Result<Vec<usize>> {
        wrt.iter()
            .map(|w| {
                self.check_own(w, "grad").map_err(|e| e.at(loc))?;
                // A value that does not require a gradient is pruned from every path, so its
                // gradient would come back as zeros even when the outputs depend on it.
                if !w.requires_grad() {
                    return Err(Error::new(
                        ErrorKind::Invalid,
                        "grad",
                        format!(
                            "{} does not require a gradient (a constant, a detached value, or recorded under no_grad), so its gradient would be a silent zero; record it with tape.var(..)",
                            self.describe(w.index)
                        ),
                    )
                    .at(loc));
                }
                Ok(w.index)
            })
            .collect()
    }
}

impl<T: Float> Tape<T> {
    /// Explains why node `out` carries no gradient: the `no_grad` scopes and `detach` calls that
    /// cut it off from the variables, nearest first, or that no variable reaches it at all.
    pub(crate) fn why_no_gradient(&self, out: usize) -> String {
        let nodes = self.nodes.borrow();
        let mut reach = vec![false; out + 1];
        reach[out] = true;
        let mut cuts = Vec::new();
        for i in (0..=out).rev() {
            if !reach[i] {
                continue;
            }
            let n = &nodes[i];
            if let Some(c) = n.cut {
                cuts.push((i, c));
                continue; // what lies behind a cut is explained by the cut
            }
            for &j in &n.inputs {
                reach[j] = true;
            }
        }
        drop(nodes);
        let head = format!(
            "{} does not require a gradient, so there is nothing to differentiate",
            self.describe(out)
        );
        if cuts.is_empty() {
            return format!("{head}: no variable (made with tape.var) reaches it");
        }
        let shown: Vec<String> = cuts
            .iter()
            .take(3)
            .map(|&(i, c)| {
                let loc = self.node(i).location;
                let what = match c {
                    Cut::NoGrad => "was built under no_grad",
                    Cut::Detached => "was detached",
                };
                let name = if i == out {
                    "it".to_string()
                } else {
                    format!("node #{i} ({})", self.node_name(i))
                };
                format!("{name} {what} at {}:{}", loc.file(), loc.line())
            })
            .collect();
        let more = if cuts.len() > 3 {
            format!(" (and {} more)", cuts.len() - 3)
        } else {
            String::new()
        };
        format!("{head}: {}{more}", shown.join("; "))
    }
}

impl<'t, T: Float> Var<'t, T> {
    /// Gradients of this one-element value with respect to every variable leaf of the tape.
    /// Panics when the value has more than one element (use [`backward_with`](Self::backward_with)
    /// or [`Tape::grad`]) or when a gradient reaches an op with no rule.
    #[track_caller]
    pub fn backward(self) -> Grads<T> {
        self.try_backward().unwrap_or_else(|e| fail(e))
    }

    /// Like [`backward`](Self::backward), returning errors instead of panicking.
    #[track_caller]
    pub fn try_backward(self) -> Result<Grads<T>> {
        let n = self.numel();
        if n != 1 {
            return Err(Error::new(
                ErrorKind::NonScalar,
                "backward",
                format!(
                    "backward() needs a one-element output, but {} has {n} elements; reduce it (e.g. .sum()) or pass a cotangent with backward_with(..)",
                    self.tape.describe(self.index)
                ),
            )
            .at(Location::caller()));
        }
        let seed = Tensor::ones(self.shape());
        self.try_backward_with(seed)
    }

    /// Gradients of `⟨cotangent, self⟩` with respect to every variable leaf of the tape.
    #[track_caller]
    pub fn backward_with(self, cotangent: Tensor<T>) -> Grads<T> {
        self.try_backward_with(cotangent).unwrap_or_else(|e| fail(e))
    }

    /// Like [`backward_with`](Self::backward_with), returning errors instead of panicking.
    #[track_caller]
    pub fn try_backward_with(self, cotangent: Tensor<T>) -> Result<Grads<T>> {
        let tape = self.tape;
        let leaves: Vec<Var<'t, T>> = {
            let nodes = tape.nodes.borrow();
            (0..=self.index)
                .filter(|&i| nodes[i].is_var)
                .map(|index| Var { tape, index })
                .collect()
        };
        let gs = tape.try_grad(&[self], &[cotangent], &leaves)?;
        Ok(Grads {
            tape_id: tape.id(),
            top: self.index,
            map: leaves.iter().map(|v| v.index).zip(gs).collect(),
        })
    }
}
