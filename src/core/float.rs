//! The element types a [`Tensor`](crate::Tensor) can hold: `f32` and `f64`, behind one sealed trait.
//!
//! ```
//! use tapegrad::{Float, Tape, Tensor};
//! // Code generic over the element type runs in both precisions.
//! fn softplus_grad<T: Float>(x: T) -> T {
//!     let tape = Tape::<T>::new();
//!     let v = tape.var(Tensor::scalar(x));
//!     (v.exp().add_scalar(T::ONE)).log().backward()[v].item()
//! }
//! assert!((softplus_grad(0.0f64) - 0.5).abs() < 1e-15);
//! assert!((softplus_grad(0.0f32) - 0.5).abs() < 1e-7);
//! assert_eq!(<f32 as Float>::NAME, "f32");
//! ```

use std::fmt::{Debug, Display};
use std::iter::Sum;
use std::ops::{Add, AddAssign, Div, DivAssign, Mul, MulAssign, Neg, Sub, SubAssign};

mod sealed {
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for f64 {}
}

/// A floating-point element type: implemented for `f32` and `f64` only (the trait is sealed).
///
/// ```
/// use tapegrad::Float;
/// fn twice<T: Float>(x: T) -> T { x + x }
/// assert_eq!(twice(1.5f32), 3.0);
/// assert_eq!(<f64 as Float>::from_f64(0.25).exp(), 0.25f64.exp());
/// ```
pub trait Float:
    sealed::Sealed
    + Copy
    + Debug
    + Display
    + Default
    + PartialEq
    + PartialOrd
    + Send
    + Sync
    + 'static
    + Add<Output = Self>
    + Sub<Output = Self>
    + Mul<Output = Self>
    + Div<Output = Self>
    + Neg<Output = Self>
    + AddAssign
    + SubAssign
    + MulAssign
    + DivAssign
    + Sum
{
    /// The type's name, `"f32"` or `"f64"`.
    const NAME: &'static str;
    /// Machine epsilon: the gap between 1 and the next larger value.
    const EPSILON: Self;
    /// Zero.
    const ZERO: Self;
    /// One.
    const ONE: Self;
    /// Positive infinity.
    const INFINITY: Self;
    /// Negative infinity.
    const NEG_INFINITY: Self;
    /// A quiet NaN.
    const NAN: Self;
    /// Converts from `f64` (rounding to nearest for `f32`).
    fn from_f64(x: f64) -> Self;
    /// Converts to `f64` (exact).
    fn to_f64(self) -> f64;
    /// Converts from `usize` (rounded).
    fn from_usize(n: usize) -> Self {
        Self::from_f64(n as f64)
    }
    /// `e^self`.
    fn exp(self) -> Self;
    /// Natural logarithm.
    fn ln(self) -> Self;
    /// Square root.
    fn sqrt(self) -> Self;
    /// Hyperbolic tangent.
    fn tanh(self) -> Self;
    /// `self` raised to a floating-point power.
    fn powf(self, p: Self) -> Self;
    /// Absolute value.
    fn abs(self) -> Self;
    /// The larger of two values (NaN-ignoring, as `f64::max`).
    fn max(self, other: Self) -> Self;
    /// The smaller of two values (NaN-ignoring, as `f64::min`).
    fn min(self, other: Self) -> Self;
    /// True when neither infinite nor NaN.
    fn is_finite(self) -> bool;
    /// True when NaN.
    fn is_nan(self) -> bool;
    /// `x ← eˣ` over a slice, vectorised (at most ~1 ulp from the exact result; see `vmath`).
    #[doc(hidden)]
    fn exp_inplace(x: &mut [Self]);
    /// `x ← ln x` over a slice, vectorised (at most ~1 ulp from the exact result).
    #[doc(hidden)]
    fn ln_inplace(x: &mut [Self]);
    /// `C ← alpha·op(A)·op(B) + beta·C` on strided matrices (a thin safe wrapper over `matrixmultiply`).
    #[doc(hidden)]
    #[allow(clippy::too_many_arguments)]
    fn gemm(
        m: usize,
        k: usize,
        n: usize,
        a: &[Self],
        rsa: isize,
        csa: isize,
        b: &[Self],
        rsb: isize,
        csb: isize,
        c: &mut [Self],
        beta: Self,
    );
}

macro_rules! impl_float {
    ($t:ident, $gemm:ident, $exp:ident, $ln:ident) => {
        impl Float for $t {
            const NAME: &'static str = stringify!($t);
            const EPSILON: Self = $t::EPSILON;
            const ZERO: Self = 0.0;
            const ONE: Self = 1.0;
            const INFINITY: Self = $t::INFINITY;
            const NEG_INFINITY: Self = $t::NEG_INFINITY;
            const NAN: Self = $t::NAN;
            #[inline(always)]
            fn from_f64(x: f64) -> Self {
                x as $t
            }
            #[inline(always)]
            fn to_f64(self) -> f64 {
                self as f64
            }
            #[inline(always)]
            fn exp(self) -> Self {
                $t::exp(self)
            }
            #[inline(always)]
            fn ln(self) -> Self {
                $t::ln(self)
            }
            #[inline(always)]
            fn sqrt(self) -> Self {
                $t::sqrt(self)
            }
            #[inline(always)]
            fn tanh(self) -> Self {
                $t::tanh(self)
            }
            #[inline(always)]
            fn powf(self, p: Self) -> Self {
                $t::powf(self, p)
            }
            #[inline(always)]
            fn abs(self) -> Self {
                $t::abs(self)
            }
            #[inline(always)]
            fn max(self, other: Self) -> Self {
                $t::max(self, other)
            }
            #[inline(always)]
            fn min(self, other: Self) -> Self {
                $t::min(self, other)
            }
            #[inline(always)]
            fn is_finite(self) -> bool {
                $t::is_finite(self)
            }
            #[inline(always)]
            fn is_nan(self) -> bool {
                $t::is_nan(self)
            }
            fn exp_inplace(x: &mut [Self]) {
                crate::tensor::vmath::$exp(x)
            }
            fn ln_inplace(x: &mut [Self]) {
                crate::tensor::vmath::$ln(x)
            }
            fn gemm(
                m: usize,
                k: usize,
                n: usize,
                a: &[Self],
                rsa: isize,
                csa: isize,
                b: &[Self],
                rsb: isize,
                csb: isize,
                c: &mut [Self],
                beta: Self,
            ) {
                crate::tensor::kernels::check_gemm_bounds(m, k, n, a.len(), rsa, csa, b.len(), rsb, csb, c.len());
                if m == 0 || n == 0 {
                    return;
                }
                // SAFETY: `check_gemm_bounds` asserted that every index the strided m×k, k×n and
                // m×n (row-major, contiguous) views touch lies inside the three slices, and `c` is
                // borrowed mutably so it cannot alias `a` or `b`.
                unsafe {
                    matrixmultiply::$gemm(
                        m,
                        k,
                        n,
                        1.0,
                        a.as_ptr(),
                        rsa,
                        csa,
                        b.as_ptr(),
                        rsb,
                        csb,
                        beta,
                        c.as_mut_ptr(),
                        n as isize,
                        1,
                    );
                }
            }
        }
    };
}

impl_float!(f32, sgemm, exp_f32_inplace, ln_f32_inplace);
impl_float!(f64, dgemm, exp_f64_inplace, ln_f64_inplace);
