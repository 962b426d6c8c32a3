//! The primitive operations and the registry that lists them.
//!
//! Each family file (`arith`, `unary`, `reduce`, `layout`, `linalg`) holds, side by side, every op's
//! forward kernel, its VJP rule, the `Var` method that records it and its registry entry with sample
//! inputs. The registry-driven tests walk [`Registry::builtin`] and check every sample by finite
//! differences, so an op that is registered is tested with no new test code.
//!
//! ```
//! let reg = tapegrad::Registry::builtin();
//! assert!(reg.get("exp").is_some());
//! assert!(reg.iter().all(|info| !(info.samples)().is_empty()));
//! ```

pub mod arith;
pub mod elementwise;
pub mod fused;
pub mod layout;
pub mod linalg;
pub mod reduce;
pub mod select;
mod var;

pub use elementwise::Math;
pub use select::Logic;

use crate::autodiff::tape::Var;
use crate::core::error::{Error, Result};
use crate::core::float::Float;
use crate::core::shape::{broadcast_extents, fmt_shape};
use crate::tensor::{Tensor, checked_numel, kernels};
use indexmap::IndexMap;
use std::sync::OnceLock;

/// One test case of an op: input values (in `f64`) and the expression that applies the op to them,
/// once for each element type.
pub struct Sample {
    /// A short description (`"broadcast [2,3] + [3]"`).
    pub label: String,
    /// The input values; the checks record them as variables.
    pub inputs: Vec<Tensor<f64>>,
    /// Applies the op to the recorded inputs, in `f64`.
    pub f64: for<'t> fn(&[Var<'t, f64>]) -> Var<'t, f64>,
    /// The same expression in `f32`.
    pub f32: for<'t> fn(&[Var<'t, f32>]) -> Var<'t, f32>,
}

/// Builds a [`Sample`]: a label, a list of input tensors (`[a, b]`, or any expression that yields
/// tensors), and one expression over the recorded inputs (written once, instantiated for `f64` and `f32`).
///
/// ```
/// use tapegrad::{sample, Tensor};
/// let s = sample!("square", [Tensor::from_vec(vec![1.0, 2.0], [2])], |v| v[0] * v[0]);
/// assert_eq!(s.inputs.len(), 1);
/// ```
#[macro_export]
macro_rules! sample {
    ($label:expr, [$($input:expr),* $(,)?], |$v:ident| $body:expr) => {
        $crate::Sample {
            label: ::std::string::String::from($label),
            inputs: ::std::vec![$($input),*],
            f64: |$v| $body,
            f32: |$v| $body,
        }
    };
    ($label:expr, $inputs:expr, |$v:ident| $body:expr) => {
        $crate::Sample {
            label: ::std::string::String::from($label),
            inputs: ::std::iter::IntoIterator::into_iter($inputs).collect(),
            f64: |$v| $body,
            f32: |$v| $body,
        }
    };
}

/// Where an op's inputs are defined and smooth: the registry draws samples from it, and random
/// programs map their values into it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Domain {
    /// Every real number.
    Real,
    /// `x > 0`.
    Positive,
    /// Away from a kink at 0 (`relu`, `abs`): `|x| ≥ 0.2`, both signs.
    AwayFromZero,
    /// The open interval `(lo, hi)`.
    Interval(f64, f64),
}

impl Domain {
    /// Seeded values of `shape` inside the domain, away from its edges (so central differences
    /// with a small step stay inside).
    pub fn sample(&self, shape: &[usize], seed: u64) -> Tensor<f64> {
        match *self {
            Domain::Real => Tensor::rand_normal(shape, 0.0, 1.0, seed),
            Domain::Positive => Tensor::rand_uniform(shape, 0.3, 3.0, seed),
            Domain::AwayFromZero => Tensor::rand_uniform(shape, 0.2, 2.0, seed).zip_map(
                &Tensor::rand_uniform(shape, -1.0, 1.0, seed + 100),
                |a, s| {
                    if s < 0.0 { -a } else { a }
                },
            ),
            Domain::Interval(lo, hi) => {
                let m = 0.1 * (hi - lo);
                Tensor::rand_uniform(shape, lo + m, hi - m, seed)
            }
        }
    }

    /// True when `x` lies in the domain.
    pub fn contains(&self, x: f64) -> bool {
        match *self {
            Domain::Real => true,
            Domain::Positive => x > 0.0,
            Domain::AwayFromZero => x.abs() >= 0.2,
            Domain::Interval(lo, hi) => lo < x && x < hi,
        }
    }
}

/// How an op treats a NaN in its inputs, for the registry's NaN-propagation check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NanRule {
    /// A NaN in an input reaches every output element that depends on that input (the default,
    /// as in PyTorch): a diverging computation is never hidden.
    Propagates,
    /// The op legitimately absorbs NaN; the string says why (a comparison with NaN is false, say).
    Absorbs(&'static str),
}

/// What an op declares about itself for the generic checks.
pub struct OpInfo {
    /// The op's name, as returned by [`Op::name`](crate::Op::name).
    pub name: &'static str,
    /// One line on what it computes.
    pub summary: &'static str,
    /// True when the op's VJP rule is itself differentiable (its backward can be recorded and
    /// differentiated again).
    pub differentiable_twice: bool,
    /// How the op treats NaN inputs (checked by [`check_nan_propagation`](crate::check::check_nan_propagation)).
    pub nan: NanRule,
    /// Sample inputs covering its shapes and edge cases; must not be empty.
    pub samples: fn() -> Vec<Sample>,
}

/// An ordered table of ops, keyed by name. [`Registry::builtin`] holds tapegrad's primitives; a
/// user can build their own for their ops and run the same checks on it.
#[derive(Default)]
pub struct Registry {
    ops: IndexMap<&'static str, OpInfo>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// The registry of every built-in op.
    pub fn builtin() -> &'static Registry {
        static REG: OnceLock<Registry> = OnceLock::new();
        REG.get_or_init(|| {
            let mut r = Registry::new();
            arith::register(&mut r);
            elementwise::register(&mut r);
            reduce::register(&mut r);
            layout::register(&mut r);
            linalg::register(&mut r);
            fused::register(&mut r);
            select::register(&mut r);
            r
        })
    }

    /// Adds an op. Panics when the name is taken (two ops must not share a name).
    #[track_caller]
    pub fn register(&mut self, info: OpInfo) {
        if self.ops.contains_key(info.name) {
            panic!("tapegrad: op {:?} is registered twice", info.name);
        }
        self.ops.insert(info.name, info);
    }

    /// The entry for `name`.
    pub fn get(&self, name: &str) -> Option<&OpInfo> {
        self.ops.get(name)
    }

    /// Every entry, in registration order.
    pub fn iter(&self) -> impl Iterator<Item = &OpInfo> {
        self.ops.values()
    }

    /// The number of ops.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// True when no op is registered.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}

/// Checks the input count of an op.
pub(crate) fn arity<T: Float>(op: &str, inputs: &[&Tensor<T>], n: usize) -> Result<()> {
    if inputs.len() == n {
        Ok(())
    } else {
        Err(Error::new(
            crate::ErrorKind::Invalid,
            op,
            format!("expects {n} input(s), got {}", inputs.len()),
        ))
    }
}

/// Broadcasts two tensors together and applies `f` elementwise; the error names the op and shapes.
pub(crate) fn broadcast_zip<T: Float>(
    op: &str,
    a: &Tensor<T>,
    b: &Tensor<T>,
    f: impl Fn(T, T) -> T,
) -> Result<Tensor<T>> {
    if a.shape() == b.shape() {
        return Ok(a.zip_same(b, f));
    }
    let out = broadcast_extents(a.shape(), b.shape()).ok_or_else(|| {
        Error::shape(
            op,
            format!(
                "shapes {} and {} do not broadcast (extents must match or be 1, aligned at the last axis)",
                fmt_shape(a.shape()),
                fmt_shape(b.shape())
            ),
        )
    })?;
    checked_numel::<T>(op, &out)?;
    if a.numel() == 1 && b.numel() == 1 {
        return Ok(Tensor::one_of_shape(out, f(a.data()[0], b.data()[0])));
    }
    let data = kernels::binary(a.data(), a.shape(), b.data(), b.shape(), &out, f);
    Ok(Tensor::from_parts(out, data))
}

/// Resolves an axis (negative counts from the end, as in NumPy) or reports it out of range.
pub(crate) fn resolve_axis(op: &str, axis: isize, ndim: usize) -> Result<usize> {
    let a = if axis < 0 { axis + ndim as isize } else { axis };
    if a < 0 || a as usize >= ndim {
        Err(Error::shape(
            op,
            format!("axis {axis} is out of range for a tensor with {ndim} axes"),
        ))
    } else {
        Ok(a as usize)
    }
}
