//! The element types a [`Tensor`](crate::Tensor) can hold: `f32` and `f64`, behind one sealed
//! trait of scalar maths. (The tensor layer picks its per-type kernels through the
//! [`Float::slice`] witness; nothing here depends on it.)
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
/// It offers the scalar maths that forward kernels and derivative rules need — the elementary
/// functions of `std` (trigonometric, hyperbolic, `exp_m1`, `ln_1p`, …) and `erf`/`erfc` (from
/// `libm`) — so a new elementwise op never needs a change here. It knows nothing of tensors.
///
/// ```
/// use tapegrad::Float;
/// fn twice<T: Float>(x: T) -> T { x + x }
/// assert_eq!(twice(1.5f32), 3.0);
/// assert_eq!(<f64 as Float>::from_f64(0.25).exp(), 0.25f64.exp());
/// assert!((Float::erf(0.5f64) - 0.520_499_877_813_046_5).abs() < 1e-16);
/// assert!((Float::erf(0.5f32) - 0.520_499_9).abs() < 1e-7);
/// assert!((Float::erfc(6.0f64) - 2.151_973_671_249_891_3e-17).abs() < 1e-30);
/// assert_eq!(Float::atan2(1.0f64, -1.0), 0.75 * std::f64::consts::PI);
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
    /// `e^self` by the crate's branch-free polynomial (the vectorised `exp` kernel's; within 1 ulp
    /// of [`exp`](Self::exp); the same special values): `#[inline(always)]`, so a loop that calls
    /// it per element auto-vectorises, where `exp` calls the C library once per element.
    fn exp_vec(self) -> Self;
    /// Natural logarithm.
    fn ln(self) -> Self;
    /// Square root.
    fn sqrt(self) -> Self;
    /// Hyperbolic tangent.
    fn tanh(self) -> Self;
    /// Hyperbolic tangent that vectorises: for `f32`, `1 − 2/(e^{2|x|} + 1)` in `f64` through the
    /// crate's branch-free `exp` (within 1 ulp; `x` itself below `2⁻¹²`); for `f64`,
    /// [`tanh`](Self::tanh) (the C library).
    fn tanh_vec(self) -> Self;
    /// Absolute value.
    fn abs(self) -> Self;
    /// Sine (radians).
    fn sin(self) -> Self;
    /// Cosine (radians).
    fn cos(self) -> Self;
    /// Tangent (radians).
    fn tan(self) -> Self;
    /// Arcsine, in `[−π/2, π/2]`.
    fn asin(self) -> Self;
    /// Arccosine, in `[0, π]`.
    fn acos(self) -> Self;
    /// Arctangent, in `(−π/2, π/2)`.
    fn atan(self) -> Self;
    /// Hyperbolic sine.
    fn sinh(self) -> Self;
    /// Hyperbolic cosine.
    fn cosh(self) -> Self;
    /// Inverse hyperbolic sine.
    fn asinh(self) -> Self;
    /// Inverse hyperbolic cosine.
    fn acosh(self) -> Self;
    /// Inverse hyperbolic tangent.
    fn atanh(self) -> Self;
    /// `2^self`.
    fn exp2(self) -> Self;
    /// `e^self − 1`, accurate near 0.
    fn exp_m1(self) -> Self;
    /// `ln(1 + self)`, accurate near 0.
    fn ln_1p(self) -> Self;
    /// Base-2 logarithm.
    fn log2(self) -> Self;
    /// Base-10 logarithm.
    fn log10(self) -> Self;
    /// Cube root.
    fn cbrt(self) -> Self;
    /// `1 / self`.
    fn recip(self) -> Self;
    /// Largest integer ≤ self.
    fn floor(self) -> Self;
    /// Smallest integer ≥ self.
    fn ceil(self) -> Self;
    /// Nearest integer, ties away from zero.
    fn round(self) -> Self;
    /// Integer part.
    fn trunc(self) -> Self;
    /// The error function `erf(self) = 2/√π ∫₀^self e^(−t²) dt` (from `libm`).
    fn erf(self) -> Self;
    /// The complementary error function `1 − erf(self)`, accurate for large arguments.
    fn erfc(self) -> Self;
    /// `self` raised to a floating-point power.
    fn powf(self, p: Self) -> Self;
    /// `self` raised to an integer power.
    fn powi(self, n: i32) -> Self;
    /// The four-quadrant arctangent of `self / other` (`self` is y), in `(−π, π]`.
    fn atan2(self, other: Self) -> Self;
    /// `√(self² + other²)` without overflow.
    fn hypot(self, other: Self) -> Self;
    /// The larger of two values (NaN-ignoring, as `f64::max`).
    fn max(self, other: Self) -> Self;
    /// The smaller of two values (NaN-ignoring, as `f64::min`).
    fn min(self, other: Self) -> Self;
    /// True when neither infinite nor NaN.
    fn is_finite(self) -> bool;
    /// True when NaN.
    fn is_nan(self) -> bool;
    /// True when the sign bit is set (also for `−0.0` and negative NaNs).
    fn is_sign_negative(self) -> bool;
    /// The slice as what it is, `f32` or `f64`: how the tensor layer picks a kernel written for
    /// one concrete type (the vectorised `exp`, the matrix product) without `Float` knowing of
    /// kernels.
    fn slice(x: &[Self]) -> Slice<'_>;
    /// The mutable slice as what it is, `f32` or `f64` (see [`slice`](Self::slice)).
    fn slice_mut(x: &mut [Self]) -> SliceMut<'_>;
}

/// A slice of `f32` or of `f64`: see [`Float::slice`].
#[derive(Debug)]
pub enum Slice<'a> {
    /// An `f32` slice.
    F32(&'a [f32]),
    /// An `f64` slice.
    F64(&'a [f64]),
}

/// A mutable slice of `f32` or of `f64`: see [`Float::slice_mut`].
#[derive(Debug)]
pub enum SliceMut<'a> {
    /// An `f32` slice.
    F32(&'a mut [f32]),
    /// An `f64` slice.
    F64(&'a mut [f64]),
}

macro_rules! impl_float {
    ($t:ident, $variant:ident, $erf:ident, $erfc:ident, $exp_vec:path, $tanh_vec:path) => {
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
            fn exp_vec(self) -> Self {
                $exp_vec(self)
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
            fn tanh_vec(self) -> Self {
                $tanh_vec(self)
            }
            #[inline(always)]
            fn abs(self) -> Self {
                $t::abs(self)
            }
            #[inline(always)]
            fn sin(self) -> Self {
                $t::sin(self)
            }
            #[inline(always)]
            fn cos(self) -> Self {
                $t::cos(self)
            }
            #[inline(always)]
            fn tan(self) -> Self {
                $t::tan(self)
            }
            #[inline(always)]
            fn asin(self) -> Self {
                $t::asin(self)
            }
            #[inline(always)]
            fn acos(self) -> Self {
                $t::acos(self)
            }
            #[inline(always)]
            fn atan(self) -> Self {
                $t::atan(self)
            }
            #[inline(always)]
            fn sinh(self) -> Self {
                $t::sinh(self)
            }
            #[inline(always)]
            fn cosh(self) -> Self {
                $t::cosh(self)
            }
            #[inline(always)]
            fn asinh(self) -> Self {
                $t::asinh(self)
            }
            #[inline(always)]
            fn acosh(self) -> Self {
                $t::acosh(self)
            }
            #[inline(always)]
            fn atanh(self) -> Self {
                $t::atanh(self)
            }
            #[inline(always)]
            fn exp2(self) -> Self {
                $t::exp2(self)
            }
            #[inline(always)]
            fn exp_m1(self) -> Self {
                $t::exp_m1(self)
            }
            #[inline(always)]
            fn ln_1p(self) -> Self {
                $t::ln_1p(self)
            }
            #[inline(always)]
            fn log2(self) -> Self {
                $t::log2(self)
            }
            #[inline(always)]
            fn log10(self) -> Self {
                $t::log10(self)
            }
            #[inline(always)]
            fn cbrt(self) -> Self {
                $t::cbrt(self)
            }
            #[inline(always)]
            fn recip(self) -> Self {
                $t::recip(self)
            }
            #[inline(always)]
            fn floor(self) -> Self {
                $t::floor(self)
            }
            #[inline(always)]
            fn ceil(self) -> Self {
                $t::ceil(self)
            }
            #[inline(always)]
            fn round(self) -> Self {
                $t::round(self)
            }
            #[inline(always)]
            fn trunc(self) -> Self {
                $t::trunc(self)
            }
            #[inline(always)]
            fn erf(self) -> Self {
                libm::$erf(self)
            }
            #[inline(always)]
            fn erfc(self) -> Self {
                libm::$erfc(self)
            }
            #[inline(always)]
            fn powf(self, p: Self) -> Self {
                $t::powf(self, p)
            }
            #[inline(always)]
            fn powi(self, n: i32) -> Self {
                $t::powi(self, n)
            }
            #[inline(always)]
            fn atan2(self, other: Self) -> Self {
                $t::atan2(self, other)
            }
            #[inline(always)]
            fn hypot(self, other: Self) -> Self {
                $t::hypot(self, other)
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
            #[inline(always)]
            fn is_sign_negative(self) -> bool {
                $t::is_sign_negative(self)
            }
            #[inline(always)]
            fn slice(x: &[Self]) -> Slice<'_> {
                Slice::$variant(x)
            }
            #[inline(always)]
            fn slice_mut(x: &mut [Self]) -> SliceMut<'_> {
                SliceMut::$variant(x)
            }
        }
    };
}

impl_float!(
    f32,
    F32,
    erff,
    erfcf,
    crate::tensor::vmath::exp_f32_scalar,
    crate::tensor::vmath::tanh_f32_scalar
);
impl_float!(f64, F64, erf, erfc, crate::tensor::vmath::exp_f64_scalar, f64::tanh);
