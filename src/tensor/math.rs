//! Arithmetic on plain tensors, with no tape: the operators `+ − × ÷` — tensor with tensor
//! (NumPy broadcasting), tensor with scalar, scalar with tensor, each by value and by reference —
//! unary `−`, and [`matmul`](Tensor::matmul).
//!
//! They compute what the recorded ops compute, with the same element formulas and the same
//! kernels: `a + b` on tensors runs the forward of the `add` a `Var` records (the broadcasting
//! binary ops' forwards are [`Tensor::try_zip_broadcast`]), `t * 2.0` that of `mul_scalar`,
//! `a.matmul(&b)` that of `matmul`. One difference: `t / c` divides (`x / c`, correctly rounded),
//! where `Var / c` records `x · (1/c)`, which can differ in the last bit.
//!
//! A scalar literal on the left needs its type (`2.0_f64 * &t`) when the result is used further —
//! a method call, another operator: Rust settles an unsuffixed literal's type only at the end.
//!
//! A mistake panics with the library's [`Error`] — the op, the shapes and your line — as a `Var`
//! op does; inside [`attempt`](crate::attempt) it is returned instead. The elementwise functions
//! (`exp`, `sin`, `gelu`, `clamp`, `maximum`, `pow`, …) are methods of `Tensor` too, made by the
//! op tables beside their ops ([`crate::ops::elementwise`], [`crate::ops::arith`]).
//!
//! ```
//! use tapegrad::Tensor;
//! let a = Tensor::from_vec(vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0], [2, 3]);
//! let b = Tensor::from_vec(vec![10.0, 20.0, 30.0], [3]);
//! let c = &a + &b;                                    // [2, 3] + [3], broadcasting
//! assert_eq!(c.to_vec(), vec![11.0, 22.0, 33.0, 14.0, 25.0, 36.0]);
//! assert_eq!((&b * 2.0 - 1.0).to_vec(), vec![19.0, 39.0, 59.0]);
//! assert_eq!((60.0_f64 - &b).to_vec(), vec![50.0, 40.0, 30.0]);  // a scalar on the left
//! assert_eq!((-(&b / 10.0)).to_vec(), vec![-1.0, -2.0, -3.0]);
//! let w = Tensor::from_vec(vec![1.0, 0.0, 0.0, 1.0, 1.0, 1.0], [3, 2]);
//! assert_eq!(a.matmul(&w).to_vec(), vec![4.0, 5.0, 10.0, 11.0]);
//! let e = tapegrad::attempt(|| &a + &Tensor::zeros([2])).unwrap_err();
//! assert!(e.to_string().contains("add: shapes [2, 3] and [2] do not broadcast"));
//! ```

use super::{Tensor, checked_numel};
use crate::core::error::{Error, Result, fail};
use crate::core::float::Float;
use crate::core::shape::{broadcast_extents, fmt_shape};
use std::ops::{Add, Div, Mul, Neg, Sub};
use std::panic::Location;

impl<T: Float> Tensor<T> {
    /// `f` elementwise over `self` and `other` broadcast together (NumPy's rules), or a shape
    /// error naming `op` and both shapes when they do not broadcast (or their broadcast is too
    /// large): the forward of every broadcasting binary op and of the operators on tensors.
    /// `f` should capture only `Copy` data (kernels may run it on several threads).
    pub(crate) fn try_zip_broadcast(&self, other: &Self, op: &str, f: impl Fn(T, T) -> T + Sync) -> Result<Self> {
        if self.shape() == other.shape() {
            return Ok(self.zip_same(other, f));
        }
        let out = broadcast_extents(self.shape(), other.shape()).ok_or_else(|| {
            Error::shape(
                op,
                format!(
                    "shapes {} and {} do not broadcast (extents must match or be 1, aligned at the last axis)",
                    fmt_shape(self.shape()),
                    fmt_shape(other.shape())
                ),
            )
        })?;
        checked_numel::<T>(op, &out)?;
        if self.numel() == 1 && other.numel() == 1 {
            return Ok(Tensor::one_of_shape(out, f(self.data()[0], other.data()[0])));
        }
        Ok(self.zip_map(other, f))
    }

    /// The matrix product over the last two axes, with no tape: what [`Var::matmul`](crate::Var::matmul)
    /// computes (the same kernel). Leading axes are batch axes and broadcast; both operands need
    /// at least two axes. Panics with a shape error naming `matmul`, both shapes and your line
    /// when they do not fit ([`attempt`](crate::attempt) returns it).
    ///
    /// ```
    /// use tapegrad::Tensor;
    /// let a = Tensor::from_vec(vec![1.0, 2.0, 3.0, 4.0], [2, 2]);
    /// let b = Tensor::from_vec(vec![1.0, 0.0, 0.0, 2.0], [2, 2]);
    /// assert_eq!(a.matmul(&b).to_vec(), vec![1.0, 4.0, 3.0, 8.0]);
    /// let e = tapegrad::attempt(|| a.matmul(&Tensor::zeros([3, 1]))).unwrap_err();
    /// assert!(e.to_string().contains("matmul: inner sizes differ"));
    /// ```
    #[track_caller]
    pub fn matmul(&self, other: &Tensor<T>) -> Tensor<T> {
        let here = Location::caller();
        self.try_matmul_t(other, false, false, "matmul")
            .unwrap_or_else(|e| fail(e.at(here)))
    }
}

/// Declares one operator on tensors: tensor ∘ tensor (broadcasting, the four combinations of
/// values and references) and tensor ∘ scalar (both), from the element formula.
macro_rules! tensor_ops {
    ($($Tr:ident $m:ident $name:literal $sym:literal, |$a:ident, $b:ident| $e:expr;)*) => {$(
        #[doc = concat!("`a ", $sym, " b` elementwise, broadcasting (the `", $name, "` op's forward); panics with a shape")]
        /// error naming the op, both shapes and your line when they do not broadcast.
        impl<T: Float> $Tr<&Tensor<T>> for &Tensor<T> {
            type Output = Tensor<T>;
            #[track_caller]
            fn $m(self, rhs: &Tensor<T>) -> Tensor<T> {
                let here = Location::caller();
                self.try_zip_broadcast(rhs, $name, |$a, $b| $e)
                    .unwrap_or_else(|e| fail(e.at(here)))
            }
        }
        impl<T: Float> $Tr<Tensor<T>> for Tensor<T> {
            type Output = Tensor<T>;
            #[track_caller]
            fn $m(self, rhs: Tensor<T>) -> Tensor<T> {
                $Tr::$m(&self, &rhs)
            }
        }
        impl<T: Float> $Tr<&Tensor<T>> for Tensor<T> {
            type Output = Tensor<T>;
            #[track_caller]
            fn $m(self, rhs: &Tensor<T>) -> Tensor<T> {
                $Tr::$m(&self, rhs)
            }
        }
        impl<T: Float> $Tr<Tensor<T>> for &Tensor<T> {
            type Output = Tensor<T>;
            #[track_caller]
            fn $m(self, rhs: Tensor<T>) -> Tensor<T> {
                $Tr::$m(self, &rhs)
            }
        }
        #[doc = concat!("`t ", $sym, " c` for a scalar `c`, elementwise.")]
        impl<T: Float> $Tr<T> for &Tensor<T> {
            type Output = Tensor<T>;
            fn $m(self, c: T) -> Tensor<T> {
                self.map(move |$a| {
                    let $b = c;
                    $e
                })
            }
        }
        impl<T: Float> $Tr<T> for Tensor<T> {
            type Output = Tensor<T>;
            fn $m(self, c: T) -> Tensor<T> {
                $Tr::$m(&self, c)
            }
        }
    )*};
}

tensor_ops! {
    Add add "add" "+", |a, b| a + b;
    Sub sub "sub" "−", |a, b| a - b;
    Mul mul "mul" "·", |a, b| a * b;
    Div div "div" "/", |a, b| a / b;
}

/// Declares the operators with a scalar on the left (`2.0 * t`, `1.0 / &t`) for `f32` and `f64`.
macro_rules! scalar_lhs {
    ($($t:ty),*) => {$(
        scalar_lhs!(@one $t: Add add |c, x| c + x; Sub sub |c, x| c - x; Mul mul |c, x| c * x; Div div |c, x| c / x;);
    )*};
    (@one $t:ty: $($Tr:ident $m:ident |$c:ident, $x:ident| $e:expr;)*) => {$(
        #[doc = concat!("`c ∘ t` for a scalar `c` on the left (`", stringify!($e), "` at each element).")]
        impl $Tr<&Tensor<$t>> for $t {
            type Output = Tensor<$t>;
            fn $m(self, rhs: &Tensor<$t>) -> Tensor<$t> {
                let $c = self;
                rhs.map(move |$x| $e)
            }
        }
        impl $Tr<Tensor<$t>> for $t {
            type Output = Tensor<$t>;
            fn $m(self, rhs: Tensor<$t>) -> Tensor<$t> {
                $Tr::$m(self, &rhs)
            }
        }
    )*};
}
scalar_lhs!(f32, f64);

/// `−t` elementwise (the `neg` op's forward).
impl<T: Float> Neg for &Tensor<T> {
    type Output = Tensor<T>;
    fn neg(self) -> Tensor<T> {
        self.map(|x| -x)
    }
}

impl<T: Float> Neg for Tensor<T> {
    type Output = Tensor<T>;
    fn neg(self) -> Tensor<T> {
        Neg::neg(&self)
    }
}
