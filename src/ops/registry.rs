//! The op registry: everything an op declares about itself — its samples (with references), its
//! input domain, how it treats NaN, whether its rule is differentiable again, and how random
//! programs and the fuzzer call it — so that the checks, the random programs and the fuzzer need
//! no per-op code.

use crate::autodiff::tape::Var;
use crate::core::float::Float;
use crate::core::shape::broadcast_extents;
use crate::tensor::Tensor;
use indexmap::IndexMap;

/// An independent `f64` implementation of a sample's expression, on its input values.
pub type Reference = fn(&[Tensor<f64>]) -> Tensor<f64>;

/// A call of an op in a random program, in one element type: choices, a pool of values, the
/// result (`None` when no value of the pool fits).
pub type RecipeFn<T> = for<'t> fn(&mut Choice<'_>, &[Var<'t, T>]) -> Option<Var<'t, T>>;

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
    /// An independent `f64` implementation of the same expression on the input values (plain
    /// loops, `std` maths), which the forward must match; `None` where the expression is itself
    /// a derivative (the backward ops' samples) and is checked by finite differences instead.
    pub reference: Option<Reference>,
}

impl Sample {
    /// The same sample with a reference implementation (see [`Sample::reference`]).
    pub fn with_reference(mut self, reference: Reference) -> Self {
        self.reference = Some(reference);
        self
    }
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
            reference: ::std::option::Option::None,
        }
    };
    ($label:expr, $inputs:expr, |$v:ident| $body:expr) => {
        $crate::Sample {
            label: ::std::string::String::from($label),
            inputs: ::std::iter::IntoIterator::into_iter($inputs).collect(),
            f64: |$v| $body,
            f32: |$v| $body,
            reference: ::std::option::Option::None,
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
    /// `x > lo` (`acosh`: `x > 1`; `log1p`: `x > −1`).
    Above(f64),
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
            Domain::Above(lo) => Tensor::rand_uniform(shape, lo + 0.3, lo + 3.0, seed),
        }
    }

    /// True when `x` lies in the domain.
    pub fn contains(&self, x: f64) -> bool {
        match *self {
            Domain::Real => true,
            Domain::Positive => x > 0.0,
            Domain::AwayFromZero => x.abs() >= 0.2,
            Domain::Interval(lo, hi) => lo < x && x < hi,
            Domain::Above(lo) => x > lo,
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
    /// Where its inputs are defined and smooth (samples are drawn from it; random programs map
    /// their values into it).
    pub domain: Domain,
    /// How random programs and the fuzzer call it (`None`: only its samples exercise it — the
    /// backward ops, reached through their fused op's recorded rule).
    pub recipe: Option<Recipe>,
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

impl OpInfo {
    /// An entry with the defaults: differentiable twice, NaN propagates, real inputs, no recipe.
    pub fn new(name: &'static str, summary: &'static str, samples: fn() -> Vec<Sample>) -> Self {
        OpInfo {
            name,
            summary,
            differentiable_twice: true,
            nan: NanRule::Propagates,
            samples,
            domain: Domain::Real,
            recipe: None,
        }
    }

    /// Declares the op's rule first order only (a second derivative through it fails loudly).
    pub fn first_order_only(mut self) -> Self {
        self.differentiable_twice = false;
        self
    }

    /// Declares that the op absorbs NaN, and why.
    pub fn absorbs_nan(mut self, reason: &'static str) -> Self {
        self.nan = NanRule::Absorbs(reason);
        self
    }

    /// Sets the input domain.
    pub fn domain(mut self, domain: Domain) -> Self {
        self.domain = domain;
        self
    }

    /// Sets how random programs and the fuzzer call the op.
    pub fn recipe(mut self, recipe: Recipe) -> Self {
        self.recipe = Some(recipe);
        self
    }
}

impl std::fmt::Debug for OpInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpInfo")
            .field("name", &self.name)
            .field("summary", &self.summary)
            .field("differentiable_twice", &self.differentiable_twice)
            .field("nan", &self.nan)
            .field("domain", &self.domain)
            .field("recipe", &self.recipe.is_some())
            .finish()
    }
}

impl std::fmt::Debug for Sample {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shapes: Vec<&[usize]> = self.inputs.iter().map(|x| x.shape()).collect();
        f.debug_struct("Sample")
            .field("label", &self.label)
            .field("inputs", &shapes)
            .field("reference", &self.reference.is_some())
            .finish()
    }
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.ops.keys()).finish()
    }
}

/// How random programs and the fuzzer call an op: one function per element type that applies the
/// op to values chosen from `pool` (with the choices `c` makes), or returns `None` when no value
/// of the pool fits. Written once with [`recipe!`](crate::recipe).
#[derive(Clone, Copy)]
pub struct Recipe {
    /// The call in `f64`.
    pub f64: RecipeFn<f64>,
    /// The same call in `f32`.
    pub f32: RecipeFn<f32>,
}

impl std::fmt::Debug for Recipe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Recipe")
    }
}

/// Builds a [`Recipe`] from one expression over a [`Choice`] `c` and a pool of values `v`,
/// instantiated for `f64` and `f32` (like [`sample!`](crate::sample)).
///
/// ```
/// use tapegrad::{recipe, Domain};
/// let r = recipe!(|c, v| {
///     let x = c.pick(v);
///     Some(c.into_domain(x, Domain::Positive).log())
/// });
/// # let _ = r;
/// ```
#[macro_export]
macro_rules! recipe {
    (|$c:ident, $v:ident| $body:expr) => {
        $crate::ops::registry::Recipe {
            f64: |$c, $v| $body,
            f32: |$c, $v| $body,
        }
    };
}

/// The choices behind one call of a [`Recipe`]: bytes to draw from and a mode. **Tame** (random
/// programs): every choice is valid — axes in range, shapes that fit, values mapped into the op's
/// domain — so the call succeeds and is differentiable. **Wild** (the fuzzer): choices are taken
/// as they come (an axis of 7, a reshape to the wrong size, an operand outside the domain) and
/// the op must answer with its documented error or a value, never a crash.
#[derive(Debug)]
pub struct Choice<'a> {
    bytes: &'a [u8],
    pos: usize,
    wild: bool,
}

impl<'a> Choice<'a> {
    /// Choices drawn from `bytes` (zeros past their end).
    pub fn new(bytes: &'a [u8], wild: bool) -> Self {
        Choice { bytes, pos: 0, wild }
    }

    /// True in the fuzzer's mode (choices are not made valid).
    pub fn wild(&self) -> bool {
        self.wild
    }

    /// The next byte.
    pub fn byte(&mut self) -> u8 {
        let b = self.bytes.get(self.pos).copied().unwrap_or(0);
        self.pos += 1;
        b
    }

    /// A number in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 { 0 } else { self.byte() as usize % n }
    }

    /// A yes/no choice.
    pub fn flag(&mut self) -> bool {
        self.byte() & 1 == 1
    }

    /// One of `options`.
    pub fn one_of<T: Copy>(&mut self, options: &[T]) -> T {
        options[self.below(options.len())]
    }

    /// How many bytes the choices so far have read (past the end of the bytes included): a caller
    /// that draws several calls from one byte stream moves on by this much.
    pub fn used(&self) -> usize {
        self.pos
    }

    /// A constant for an op's parameter (`x + c`, `c / x`): an ordinary number (tame), or
    /// often a special one (wild): NaN, ±∞, ±0, ±1e308, a subnormal, or raw bits.
    pub fn scalar(&mut self) -> f64 {
        const TAME: [f64; 8] = [-1.5, -0.5, 0.25, 0.5, 0.75, 1.5, 2.0, 3.0];
        const SPECIAL: [f64; 12] = [
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            0.0,
            -0.0,
            1e308,
            -1e308,
            5e-324,
            f64::MIN_POSITIVE,
            1e30,
            -1e30,
            1e-30,
        ];
        if !self.wild {
            return self.one_of(&TAME);
        }
        match self.byte() % 4 {
            0 => self.one_of(&TAME),
            1 | 2 => self.one_of(&SPECIAL),
            _ => f64::from_bits((0..8).fold(0u64, |acc, _| acc << 8 | self.byte() as u64)),
        }
    }

    /// An arbitrary small shape: up to 3 axes of extent 0 to 3 (for wild calls: a reshape to the
    /// wrong size, a broadcast to a shape that does not fit).
    pub fn any_shape(&mut self) -> Vec<usize> {
        let n = self.below(4);
        (0..n).map(|_| self.below(4)).collect()
    }

    /// A permutation of `0..n` (shuffled by the choices).
    pub fn permutation(&mut self, n: usize) -> Vec<usize> {
        let mut p: Vec<usize> = (0..n).collect();
        for i in (1..n).rev() {
            let j = self.below(i + 1);
            p.swap(i, j);
        }
        p
    }

    /// A value of the pool.
    pub fn pick<'t, T: Float>(&mut self, pool: &[Var<'t, T>]) -> Var<'t, T> {
        pool[self.below(pool.len())]
    }

    /// Two values of the pool whose shapes broadcast together (tame; `None` if there are none),
    /// or any two (wild).
    pub fn pick_broadcastable<'t, T: Float>(&mut self, pool: &[Var<'t, T>]) -> Option<(Var<'t, T>, Var<'t, T>)> {
        let a = self.pick(pool);
        let start = self.below(pool.len());
        if self.wild {
            return Some((a, pool[start]));
        }
        let sa = a.shape();
        (0..pool.len())
            .map(|k| pool[(start + k) % pool.len()])
            .find(|b| broadcast_extents(&sa, &b.shape()).is_some())
            .map(|b| (a, b))
    }

    /// An axis of a value with `ndim` axes: in range, negative or not (tame; `None` for a 0-d
    /// value), or any small integer (wild).
    pub fn axis(&mut self, ndim: usize) -> Option<isize> {
        let b = self.byte();
        if self.wild {
            return Some((b as i8 % 5) as isize);
        }
        if ndim == 0 {
            return None;
        }
        let a = (b as usize % ndim) as isize;
        Some(if b & 0x80 != 0 { a - ndim as isize } else { a })
    }

    /// `x` mapped smoothly into `domain` (tame), or as it is (wild): `x² + ½` for positive inputs
    /// (`x² + lo + ½` above `lo`), `±(x² + ¼)` away from 0 (the sign a constant drawn here), a
    /// sigmoid into an interval.
    pub fn into_domain<'t, T: Float>(&mut self, x: Var<'t, T>, domain: Domain) -> Var<'t, T> {
        if self.wild {
            return x;
        }
        let c = |v: f64| T::from_f64(v);
        match domain {
            Domain::Real => x,
            Domain::Positive => x * x + c(0.5),
            Domain::AwayFromZero => {
                let signs = Tensor::from_fn(x.shape(), |_| if self.flag() { c(1.0) } else { c(-1.0) });
                (x * x + c(0.25)) * x.tape().constant(signs)
            }
            Domain::Interval(lo, hi) => {
                let m = 0.1 * (hi - lo);
                x.sigmoid() * c(hi - lo - 2.0 * m) + c(lo + m)
            }
            Domain::Above(lo) => x * x + c(lo + 0.5),
        }
    }
}
