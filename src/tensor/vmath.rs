//! Fast, auto-vectorisable `exp` and `ln` over slices of `f32` / `f64`.
//!
//! **Hand-written because a measurement says it is better:** libm's scalar `exp`/`ln` (what
//! `f32::exp` calls) were the bottleneck of every softmax workload; these kernels run 4–8× faster
//! on this machine (measured when they were written, criterion, 1 thread) at ≤ ~1 ulp, and no
//! well-kept crate offered vectorised, runtime-dispatched slice versions of both.
//!
//! Every kernel is plain, branch-free Rust: special inputs are handled with
//! selects (`if` expressions that LLVM lowers to blends), so a loop calling
//! them vectorises.
//!
//! * `exp`: `x = k*ln2 + r` with a Cody-Waite split of `ln2`, `|r| <= ln2/2`,
//!   a minimax polynomial `e^r ~ 1 + r + r^2*q(r)`, then `2^k` is applied by
//!   adding `k` to the exponent bits. Overflow gives `+inf`; subnormal
//!   results are produced with gradual underflow (*not* flushed to zero) by
//!   integer rounding, so no float op ever touches a subnormal and masked
//!   inputs (`-inf`, `-1e9`) cost no microcode assists.
//! * `ln`: `x = 2^k * m` with `m` in `[sqrt(1/2), sqrt(2))`, `f = m - 1`,
//!   `s = f/(2+f)` and `ln(1+f) = 2*atanh(s) = f - f^2/2 + s*(f^2/2 + R(s^2))`
//!   with a minimax `R`; subnormal inputs are rescaled by a select first.
//!
//! The slice functions pick, once per process, the best code path for the
//! running CPU (AVX-512F, AVX2+FMA, or portable code for the compile
//! target; see `Backend`). The `*_scalar` functions use the same
//! polynomials and can be called per element inside another loop without
//! blocking vectorisation. The `*_with` functions (crate-internal) force a
//! code path, e.g. the portable fallback in tests.
//!
//! Polynomial coefficients were fitted for this module with a Remez exchange
//! (mpmath, 60 digits) and rounded to the working precision.
//!
//! Errors below are in ulps: f32 against the exact value (f64 reference; the
//! correctly rounded result itself is up to 0.5 ulp from it), f64 as the
//! distance to std's `exp`/`ln`. The tests assert <= 2 ulp; the exhaustive
//! f32 and large f64 sweeps are `#[ignore]`d (run them with
//! `cargo test --release -- --ignored --nocapture`).

use std::sync::atomic::{AtomicU8, Ordering};

// ---------------------------------------------------------------------------
// Constants
// ---------------------------------------------------------------------------

/// `1.5 * 2^23`: adding it rounds an f32 of magnitude < 2^22 to an integer
/// held in the low mantissa bits (its own low 9 bits are zero).
const MAGIC_F32: f32 = 12_582_912.0;
/// `1.5 * 2^52`, the f64 analogue (low 12 bits of its encoding are zero).
const MAGIC_F64: f64 = 6_755_399_441_055_744.0;

/// `ln2` rounded to 16 significant bits, so `k * LN2_HI` is exact for |k| < 2^8.
const LN2_HI_F32: f32 = f32::from_bits(0x3f31_7200);
/// `ln2 - LN2_HI_F32` rounded to f32.
const LN2_LO_F32: f32 = f32::from_bits(0x35bf_be8e);
/// `ln2` rounded to 42 significant bits, so `k * LN2_HI` is exact for |k| < 2^11.
const LN2_HI_F64: f64 = f64::from_bits(0x3fe6_2e42_fefa_3800);
/// `ln2 - LN2_HI_F64` rounded to f64.
const LN2_LO_F64: f64 = f64::from_bits(0x3d2e_f357_93c7_6730);

/// exp input clamp: below `EXP_LO` the result rounds to 0, above `EXP_HI` it
/// overflows; the clamp keeps `|r| <= ln2/2` and `k` in `[-150, 128]` (f32) /
/// `[-1077, 1025]` (f64).
const EXP_LO_F32: f32 = -104.0;
const EXP_HI_F32: f32 = 89.0;
const EXP_LO_F64: f64 = -746.0;
const EXP_HI_F64: f64 = 710.0;
/// From here up `e^x` is a normal `f32` (`e^-87 ≈ 1.6e-38 > 2^-126 ≈ 1.18e-38`), so on
/// `[EXP_NORMAL_F32, EXP_MAX_FINITE_F32]` `exp32` needs neither its clamps, nor its subnormal
/// rounding, nor its overflow select ([`exp32_in_range`]).
const EXP_NORMAL_F32: f32 = -87.0;
/// Largest inputs whose exp is finite.
const EXP_MAX_FINITE_F32: f32 = 88.72283;
const EXP_MAX_FINITE_F64: f64 = 709.782712893384;

/// Coefficients c2..c6 of `e^r ~ 1 + r + c2 r^2 + ... + c6 r^6`, |r| <= ln2/2
/// (relative minimax error 3.8e-9 after rounding to f32).
const EXP_C_F32: [f32; 5] = [0.49999994, 0.16666521, 0.04166839, 0.008368717, 0.0013814599];
/// Coefficients c2..c11 for f64 (relative error 7.7e-18 after rounding).
const EXP_C_F64: [f64; 10] = [
    0.5000000000000003,
    0.1666666666666649,
    0.041666666666589205,
    0.008333333333469197,
    0.0013888888929043778,
    0.00019841269521990288,
    2.4801507333989904e-05,
    2.755759920790163e-06,
    2.7625447404647414e-07,
    2.4989420699614107e-08,
];

/// Encoding of `sqrt(1/2)`; mantissas are reduced into `[sqrt(1/2), sqrt(2))`.
const SQRT_HALF_BITS_F32: u32 = 0x3f35_04f3;
const SQRT_HALF_BITS_F64: u64 = 0x3fe6_a09e_667f_3bcd;
/// `R(z) = z*(L1 + L2 z + L3 z^2) ~ (2 atanh(s) - 2s)/s`, `z = s^2 <= 0.0295`
/// (absolute minimax error 1.8e-9 after rounding to f32).
const LN_C_F32: [f32; 3] = [0.66666776, 0.39977536, 0.29871863];
/// Same for f64 with seven terms (error 3.8e-18 after rounding).
const LN_C_F64: [f64; 7] = [
    0.6666666666666734,
    0.3999999999941432,
    0.28571428742474875,
    0.2222219856348619,
    0.18183564866615654,
    0.15314035837081644,
    0.1479610542028106,
];

/// Whether fused multiply-add is available at compile time (then the
/// portable path and the `*_scalar` functions use it too).
const STATIC_FMA: bool = cfg!(any(target_feature = "fma", target_arch = "aarch64"));

// ---------------------------------------------------------------------------
// Element kernels. `FMA = true` must only be instantiated where FMA is
// enabled (statically or via `#[target_feature]`), otherwise `mul_add`
// becomes a slow libm call.
// ---------------------------------------------------------------------------

#[inline(always)]
fn madd32<const FMA: bool>(a: f32, b: f32, c: f32) -> f32 {
    if FMA { a.mul_add(b, c) } else { a * b + c }
}

#[inline(always)]
fn madd64<const FMA: bool>(a: f64, b: f64, c: f64) -> f64 {
    if FMA { a.mul_add(b, c) } else { a * b + c }
}

#[inline(always)]
fn exp32<const FMA: bool>(x: f32) -> f32 {
    exp32_in::<FMA, false>(x)
}

/// [`exp32`] for `EXP_NORMAL_F32 <= x <= EXP_MAX_FINITE_F32` (not NaN), where the result is a
/// normal number: the same bits, without the clamps, the subnormal rounding's dozen
/// instructions and the overflow select (27 → 21 vector instructions a lane-full on AVX2).
#[inline(always)]
fn exp32_in_range<const FMA: bool>(x: f32) -> f32 {
    exp32_in::<FMA, true>(x)
}

/// [`exp32`]'s arithmetic; `IN_RANGE` leaves out what inputs in
/// `[EXP_NORMAL_F32, EXP_MAX_FINITE_F32]` do not need (see [`exp32_in_range`]).
#[inline(always)]
fn exp32_in<const FMA: bool, const IN_RANGE: bool>(x: f32) -> f32 {
    // Clamp; written so that NaN passes through (comparisons with NaN are false).
    let x = if !IN_RANGE && x < EXP_LO_F32 { EXP_LO_F32 } else { x };
    let x = if !IN_RANGE && x > EXP_HI_F32 { EXP_HI_F32 } else { x };
    // k = round(x / ln2): bits(t) = bits(MAGIC) + k.
    let t = madd32::<FMA>(x, std::f32::consts::LOG2_E, MAGIC_F32);
    let k = t - MAGIC_F32;
    let r = madd32::<FMA>(k, -LN2_HI_F32, x); // exact
    let r = madd32::<FMA>(k, -LN2_LO_F32, r);
    let c = &EXP_C_F32;
    let q = madd32::<FMA>(r, c[4], c[3]);
    let q = madd32::<FMA>(r, q, c[2]);
    let q = madd32::<FMA>(r, q, c[1]);
    let q = madd32::<FMA>(r, q, c[0]);
    let p = 1.0 + madd32::<FMA>(r * r, q, r);
    scale_exp32::<IN_RANGE>(x, t, k, p)
}

/// `p * 2^k` for `exp32`, `t` being `k + MAGIC`. Normal results add `k` to
/// the exponent field of `p`; subnormal results are rounded with integer
/// arithmetic. No floating-point operation sees or makes a subnormal, so
/// there are no microcode assists (10-20x slower on Intel), even for
/// masked softmax inputs such as `-inf` or `-1e9`. With `IN_RANGE` (inputs in
/// `[EXP_NORMAL_F32, EXP_MAX_FINITE_F32]`, where `p · 2^k` is normal) only the exponent add is
/// left.
#[inline(always)]
fn scale_exp32<const IN_RANGE: bool>(x: f32, t: f32, k: f32, p: f32) -> f32 {
    // MAGIC's low 9 bits are zero, so `bits(t) << 23 == k << 23`.
    let normal = p.to_bits().wrapping_add(t.to_bits() << 23);
    if IN_RANGE {
        return f32::from_bits(normal);
    }
    // Overflow and NaN (x is clamped to <= 89 here, NaN passed through).
    let finite = |y: f32| if x <= EXP_MAX_FINITE_F32 { y } else { x + f32::INFINITY };
    // Subnormal: m = p * 2^(k + 149) counts units of the smallest subnormal;
    // adding 2^23 rounds it to an integer held in the low mantissa bits
    // (a carry into 2^23 correctly yields MIN_POSITIVE). `kc` keeps m normal
    // in the lanes that take the other branch.
    let kc = if k < -126.0 { k } else { -126.0 };
    let kc_bits = (kc + MAGIC_F32).to_bits() << 23;
    let m = f32::from_bits(p.to_bits().wrapping_add(kc_bits).wrapping_add(149 << 23));
    let sub = (m + 8_388_608.0).to_bits().wrapping_sub(0x4b00_0000);
    // Exponent field <= 0 (or wrapped below zero) means subnormal or zero.
    finite(f32::from_bits(if (normal as i32) < 0x0080_0000 { sub } else { normal }))
}

#[inline(always)]
fn exp64<const FMA: bool>(x: f64) -> f64 {
    let x = if x < EXP_LO_F64 { EXP_LO_F64 } else { x };
    let x = if x > EXP_HI_F64 { EXP_HI_F64 } else { x };
    let t = madd64::<FMA>(x, std::f64::consts::LOG2_E, MAGIC_F64);
    let k = t - MAGIC_F64;
    let r = madd64::<FMA>(k, -LN2_HI_F64, x); // exact
    let r = madd64::<FMA>(k, -LN2_LO_F64, r);
    let c = &EXP_C_F64;
    let q = madd64::<FMA>(r, c[9], c[8]);
    let q = madd64::<FMA>(r, q, c[7]);
    let q = madd64::<FMA>(r, q, c[6]);
    let q = madd64::<FMA>(r, q, c[5]);
    let q = madd64::<FMA>(r, q, c[4]);
    let q = madd64::<FMA>(r, q, c[3]);
    let q = madd64::<FMA>(r, q, c[2]);
    let q = madd64::<FMA>(r, q, c[1]);
    let q = madd64::<FMA>(r, q, c[0]);
    let p = 1.0 + madd64::<FMA>(r * r, q, r);
    scale_exp64(x, t, k, p)
}

/// `p * 2^k` for `exp64`, as [`scale_exp32`] (subnormal unit 2^-1074).
#[inline(always)]
fn scale_exp64(x: f64, t: f64, k: f64, p: f64) -> f64 {
    let normal = p.to_bits().wrapping_add(t.to_bits() << 52);
    let kc = if k < -1022.0 { k } else { -1022.0 };
    let kc_bits = (kc + MAGIC_F64).to_bits() << 52;
    let m = f64::from_bits(p.to_bits().wrapping_add(kc_bits).wrapping_add(1074 << 52));
    let sub = (m + 4_503_599_627_370_496.0)
        .to_bits()
        .wrapping_sub(0x4330_0000_0000_0000);
    let y = f64::from_bits(if (normal as i64) < 0x0010_0000_0000_0000 {
        sub
    } else {
        normal
    });
    if x <= EXP_MAX_FINITE_F64 { y } else { x + f64::INFINITY }
}

#[inline(always)]
fn ln32<const FMA: bool>(x: f32) -> f32 {
    // Subnormals (and, harmlessly, zero/negatives) are scaled into the normal range.
    let tiny = x < f32::MIN_POSITIVE;
    let xs = if tiny { x * 16_777_216.0 } else { x }; // 2^24
    let kadj = if tiny { -24.0 } else { 0.0 };
    // Shift the encoding so that mantissas >= sqrt(1/2) carry into the exponent.
    let u = xs.to_bits().wrapping_add(0x3f80_0000 - SQRT_HALF_BITS_F32);
    // Exponent to float without an int->float conversion: 2^23 + e, minus 2^23 + bias.
    let k = f32::from_bits(0x4b00_0000 | (u >> 23)) - (8_388_608.0 + 127.0) + kadj;
    let m = f32::from_bits((u & 0x007f_ffff).wrapping_add(SQRT_HALF_BITS_F32));
    let f = m - 1.0; // exact, in [-0.293, 0.415)
    let s = f / (2.0 + f);
    let z = s * s;
    let c = &LN_C_F32;
    let rz = z * madd32::<FMA>(z, madd32::<FMA>(z, c[2], c[1]), c[0]);
    let hfsq = 0.5 * f * f;
    let lo = madd32::<FMA>(s, hfsq + rz, k * LN2_LO_F32);
    let y = madd32::<FMA>(k, LN2_HI_F32, f - (hfsq - lo));
    // Special inputs. The sign and zero tests look at `xs` (same answers as
    // `x`) so that LLVM does not merge them with the infinity test into one
    // floating-point class test, which it lowers to ~20 integer ops on AVX2.
    let y = if xs > 0.0 { y } else { f32::NAN }; // negative, -inf, NaN
    let y = if xs == 0.0 { f32::NEG_INFINITY } else { y }; // ±0
    if x == f32::INFINITY { x } else { y }
}

#[inline(always)]
fn ln64<const FMA: bool>(x: f64) -> f64 {
    let tiny = x < f64::MIN_POSITIVE;
    let xs = if tiny { x * 18_014_398_509_481_984.0 } else { x }; // 2^54
    let kadj = if tiny { -54.0 } else { 0.0 };
    let u = xs.to_bits().wrapping_add(0x3ff0_0000_0000_0000 - SQRT_HALF_BITS_F64);
    // No i64->f64 conversion (AVX2 has none): 2^52 + e, minus 2^52 + bias.
    let k = f64::from_bits(0x4330_0000_0000_0000 | (u >> 52)) - (4_503_599_627_370_496.0 + 1023.0) + kadj;
    let m = f64::from_bits((u & 0x000f_ffff_ffff_ffff).wrapping_add(SQRT_HALF_BITS_F64));
    let f = m - 1.0;
    let s = f / (2.0 + f);
    let z = s * s;
    let c = &LN_C_F64;
    let w = madd64::<FMA>(z, c[6], c[5]);
    let w = madd64::<FMA>(z, w, c[4]);
    let w = madd64::<FMA>(z, w, c[3]);
    let w = madd64::<FMA>(z, w, c[2]);
    let w = madd64::<FMA>(z, w, c[1]);
    let w = madd64::<FMA>(z, w, c[0]);
    let rz = z * w;
    let hfsq = 0.5 * f * f;
    let lo = madd64::<FMA>(s, hfsq + rz, k * LN2_LO_F64);
    let y = madd64::<FMA>(k, LN2_HI_F64, f - (hfsq - lo));
    // Special inputs, as in `ln32`.
    let y = if xs > 0.0 { y } else { f64::NAN };
    let y = if xs == 0.0 { f64::NEG_INFINITY } else { y };
    if x == f64::INFINITY { x } else { y }
}

// ---------------------------------------------------------------------------
// Public scalar API
// ---------------------------------------------------------------------------

/// `e^x` for one `f32`, branch-free and `#[inline(always)]`, so a loop that
/// calls it per element still auto-vectorises. Same polynomial and special
/// values as [`exp_f32`], bit-identical to its portable path (fused
/// multiply-adds only if FMA is enabled at compile time).
///
/// Max error measured: 0.98 ulp without FMA, 1.01 ulp with (exhaustive).
#[inline(always)]
pub fn exp_f32_scalar(x: f32) -> f32 {
    exp32::<STATIC_FMA>(x)
}

/// `e^x` for one `f64`; like [`exp_f32_scalar`], same polynomial and special
/// values as [`exp_f64`].
///
/// Max error measured: 1 ulp vs std `f64::exp` (32M points).
#[inline(always)]
pub fn exp_f64_scalar(x: f64) -> f64 {
    exp64::<STATIC_FMA>(x)
}

/// `tanh x` for one `f32`, branch-free and `#[inline(always)]` (so a loop calling it per element
/// vectorises, where `f32::tanh` calls the C library per element: ~35 ns a call measured in a
/// chain of scalar ops): `1 − 2/(e^{2|x|} + 1)` in `f64` with [`exp_f64_scalar`], the sign of
/// `x`, rounded once to `f32`; `x` itself below `2⁻¹²` (where `tanh x = x` to within a third of
/// an ulp, and `−0` stays `−0`). `±1` at `±∞`, NaN for NaN.
///
/// Max error measured: within 1 ulp of `f64::tanh`, over every 61st `f32` (test
/// `tanh_f32_ulp_sweep`).
#[inline(always)]
pub fn tanh_f32_scalar(x: f32) -> f32 {
    tanh32::<STATIC_FMA>(x)
}

/// [`tanh_f32_scalar`]'s arithmetic, with fused multiply-adds in the `exp` when `FMA`.
#[inline(always)]
fn tanh32<const FMA: bool>(x: f32) -> f32 {
    let d = f64::from(x);
    let e = exp64::<FMA>(2.0 * d.abs());
    let t = (1.0 - 2.0 / (e + 1.0)) as f32;
    if x.abs() < 1.0 / 4096.0 { x } else { t.copysign(x) }
}

/// `ln x` for one `f32`; like [`exp_f32_scalar`], same polynomial and
/// special values as [`ln_f32`].
///
/// Max error measured: 0.84 ulp (exhaustive, subnormal inputs included).
#[inline(always)]
pub fn ln_f32_scalar(x: f32) -> f32 {
    ln32::<STATIC_FMA>(x)
}

/// `ln x` for one `f64`; like [`exp_f32_scalar`], same polynomial and
/// special values as [`ln_f64`].
///
/// Max error measured: 1 ulp vs std `f64::ln` (32M points).
#[inline(always)]
pub fn ln_f64_scalar(x: f64) -> f64 {
    ln64::<STATIC_FMA>(x)
}

// ---------------------------------------------------------------------------
// Public slice API
// ---------------------------------------------------------------------------

/// `out[i] = e^x[i]`, using the best code path for this CPU.
///
/// Max error measured: 1.01 ulp vs the exact result, exhaustively over all
/// f32 inputs (0.98 ulp on the portable path, 1.01 with FMA).
///
/// Overflow (`x > 88.72283`) and `+inf` give `+inf`; results below
/// `f32::MIN_POSITIVE` are subnormals with gradual underflow (not flushed,
/// and without microcode-assist slowdowns); `x < -103.97208` and `-inf` give
/// `+0`; NaN gives NaN. Code paths may differ from each other by 1 ulp.
///
/// # Panics
/// If `x.len() != out.len()`.
pub fn exp_f32(x: &[f32], out: &mut [f32]) {
    exp_f32_with(Backend::detect(), x, out);
}

/// In-place [`exp_f32`]: `x[i] = e^x[i]`.
///
/// Max error measured: 1.01 ulp (exhaustive), as [`exp_f32`].
pub fn exp_f32_inplace(x: &mut [f32]) {
    exp_f32_inplace_with(Backend::detect(), x);
}

/// `out[i] = e^x[i]`, using the best code path for this CPU.
///
/// Max error measured: 1 ulp vs std `f64::exp` over 32M points (whole
/// range, every binade, subnormal results), on every code path.
///
/// Overflow (`x > 709.782712893384`) and `+inf` give `+inf`; subnormal
/// results use gradual underflow; `x < -745.1332191019412` and `-inf` give
/// `+0`; NaN gives NaN. Code paths may differ from each other by 1 ulp.
///
/// # Panics
/// If `x.len() != out.len()`.
pub fn exp_f64(x: &[f64], out: &mut [f64]) {
    exp_f64_with(Backend::detect(), x, out);
}

/// In-place [`exp_f64`].
///
/// Max error measured: 1 ulp vs std, as [`exp_f64`].
pub fn exp_f64_inplace(x: &mut [f64]) {
    exp_f64_inplace_with(Backend::detect(), x);
}

/// `out[i] = ln x[i]` (natural log), using the best code path for this CPU.
///
/// Max error measured: 0.84 ulp vs the exact result, exhaustively over all
/// positive f32 (subnormals included), on every code path.
///
/// `ln(±0) = -inf`, `ln(+inf) = +inf`, `ln(1) = +0`; negative inputs
/// (including `-inf`) and NaN give NaN.
///
/// # Panics
/// If `x.len() != out.len()`.
pub fn ln_f32(x: &[f32], out: &mut [f32]) {
    ln_f32_with(Backend::detect(), x, out);
}

/// In-place [`ln_f32`].
///
/// Max error measured: 0.84 ulp (exhaustive), as [`ln_f32`].
pub fn ln_f32_inplace(x: &mut [f32]) {
    ln_f32_inplace_with(Backend::detect(), x);
}

/// `out[i] = ln x[i]` (natural log), using the best code path for this CPU.
///
/// Max error measured: 1 ulp vs std `f64::ln` over 32M points (every
/// binade, subnormal inputs included), on every code path.
///
/// Special values as in [`ln_f32`].
///
/// # Panics
/// If `x.len() != out.len()`.
pub fn ln_f64(x: &[f64], out: &mut [f64]) {
    ln_f64_with(Backend::detect(), x, out);
}

/// In-place [`ln_f64`].
///
/// Max error measured: 1 ulp vs std, as [`ln_f64`].
pub fn ln_f64_inplace(x: &mut [f64]) {
    ln_f64_inplace_with(Backend::detect(), x);
}

// ---------------------------------------------------------------------------
// Dispatch
// ---------------------------------------------------------------------------

/// Code path used by the slice functions. Ordered: a CPU that supports a
/// level supports all lower ones.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Backend {
    /// Plain Rust for the compile target (SSE2 on a default x86_64 build).
    /// Uses FMA only if it is enabled at compile time; bit-identical to the
    /// `*_scalar` functions.
    Portable,
    /// x86 AVX2 + FMA, selected at run time.
    Avx2Fma,
    /// x86 AVX-512F (512-bit vectors) + FMA, selected at run time.
    Avx512,
}

/// Cached result of [`Backend::detect`]: 0 = not detected yet, else level + 1.
static DETECTED: AtomicU8 = AtomicU8::new(0);

impl Backend {
    const ALL: [Backend; 3] = [Backend::Portable, Backend::Avx2Fma, Backend::Avx512];

    /// Best backend this CPU supports; detected on first use, then cached.
    pub(crate) fn detect() -> Backend {
        match DETECTED.load(Ordering::Relaxed) {
            0 => {
                let b = Self::detect_uncached();
                DETECTED.store(b as u8 + 1, Ordering::Relaxed);
                b
            }
            n => Self::ALL[usize::from(n - 1)],
        }
    }

    fn detect_uncached() -> Backend {
        #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
        {
            let avx2 = is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma");
            if avx2 && is_x86_feature_detected!("avx512f") {
                return Backend::Avx512;
            }
            if avx2 {
                return Backend::Avx2Fma;
            }
        }
        Backend::Portable
    }
}

/// Runs `f` compiled for the widest vector instructions this CPU has (AVX-512F, or AVX2; plain
/// `f()` elsewhere), so the elementwise loops it inlines vectorise 2–4× wider than the default
/// x86-64 target's SSE2. The bits do not change with the width: every element is computed by
/// the same IEEE operations (Rust never fuses `a * b + c` into an FMA on its own, and float
/// reductions are not reordered by the vectoriser), so results are the same on every CPU.
#[inline(always)]
pub(crate) fn wide<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
    match Backend::detect() {
        // SAFETY: `detect()` found avx512f and avx2 on this CPU, the only requirement of the
        // `#[target_feature]` fn (which just calls `f`).
        Backend::Avx512 => return unsafe { x86::wide_avx512(f) },
        // SAFETY: `detect()` found avx2 on this CPU, the only requirement of the
        // `#[target_feature]` fn (which just calls `f`).
        Backend::Avx2Fma => return unsafe { x86::wide_avx2(f) },
        Backend::Portable => {}
    }
    f()
}

/// Defines `fn $name<T: Float>(args) -> R` running the `#[inline(always)]` function `$inner`
/// compiled for the widest vectors this CPU has (as [`wide`], for a loop whose closure the
/// compiler would not inline into the wide copy). Other generics go in brackets after the name:
/// `fn run[T: Float, F: Pointwise<T, 1>](f: &F, x: &[T]) -> () = run_in`.
macro_rules! wide_fn {
    ($(#[$m:meta])* $vis:vis fn $name:ident($($a:ident: $ty:ty),*) -> $ret:ty = $inner:ident) => {
        $crate::tensor::vmath::wide_fn! {
            $(#[$m])* $vis fn $name[T: $crate::core::float::Float]($($a: $ty),*) -> $ret = $inner
        }
    };
    ($(#[$m:meta])* $vis:vis fn $name:ident[$($g:tt)*]($($a:ident: $ty:ty),*) -> $ret:ty = $inner:ident) => {
        $(#[$m])*
        $vis fn $name<$($g)*>($($a: $ty),*) -> $ret {
            #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
            {
                #[target_feature(enable = "avx512f,avx2")]
                fn w512<$($g)*>($($a: $ty),*) -> $ret {
                    $inner($($a),*)
                }
                #[target_feature(enable = "avx2")]
                fn w256<$($g)*>($($a: $ty),*) -> $ret {
                    $inner($($a),*)
                }
                match $crate::tensor::vmath::Backend::detect() {
                    // SAFETY: `detect()` found avx512f and avx2 on this CPU, all `w512` needs.
                    $crate::tensor::vmath::Backend::Avx512 => return unsafe { w512($($a),*) },
                    // SAFETY: `detect()` found avx2 on this CPU, all `w256` needs.
                    $crate::tensor::vmath::Backend::Avx2Fma => return unsafe { w256($($a),*) },
                    $crate::tensor::vmath::Backend::Portable => {}
                }
            }
            $inner($($a),*)
        }
    };
}
pub(crate) use wide_fn;

/// Element kernels, so one generic driver per instruction set serves all four.
trait Kernel {
    type T: Copy;
    fn eval<const FMA: bool>(x: Self::T) -> Self::T;
    /// Whether [`eval_normal`](Self::eval_normal) gives `eval`'s bits at every element of `xs`
    /// (checked a block at a time by the drivers; never, unless a kernel says so).
    #[inline(always)]
    fn all_normal(_xs: &[Self::T]) -> bool {
        false
    }
    /// `eval` on inputs [`all_normal`](Self::all_normal) accepts: a cheaper path with the same bits.
    #[inline(always)]
    fn eval_normal<const FMA: bool>(x: Self::T) -> Self::T {
        Self::eval::<FMA>(x)
    }
}

macro_rules! kernel {
    ($name:ident, $t:ty, $f:ident) => {
        struct $name;
        impl Kernel for $name {
            type T = $t;
            #[inline(always)]
            fn eval<const FMA: bool>(x: $t) -> $t {
                $f::<FMA>(x)
            }
        }
    };
}

/// `f32` exp: blocks whose inputs all lie in `[EXP_NORMAL_F32, EXP_MAX_FINITE_F32]` (every
/// softmax row without a masked or NaN entry, after its max is taken off) skip the clamps, the
/// subnormal rounding and the overflow select; a block holding NaN, an overflow or an input
/// below the bound takes the full formula. Measured on one thread (Xeon, alternating runs),
/// when the split first skipped only the subnormal rounding: the fused cross-entropy's forward
/// and backward at 32×32768, whose exponentials run on blocks in L1, 2.06/2.00/2.16/1.94 →
/// 1.55/1.86/1.66/1.57 ms; an eager `exp` of 256K `f32` into a fresh buffer is bound by that
/// buffer's memory and did not change (~190 µs), nor did `ln` and `tanh` (no such split).
/// Leaving out the clamps and the overflow select too (AMD EPYC, AVX2, 1 thread, old and new
/// builds alternated 3×): `exp` of 2048 `f32` in L1 0.74 → 0.49 ns per element; the fused
/// softmax forward at 1024×4096 (profiler, fastest of 9) 6.3 → 4.8 ms.
struct Exp32;
impl Kernel for Exp32 {
    type T = f32;
    #[inline(always)]
    fn eval<const FMA: bool>(x: f32) -> f32 {
        exp32::<FMA>(x)
    }
    #[inline(always)]
    // Two compares and an `and` per vector (the measured form; NaN fails both compares).
    #[allow(clippy::manual_range_contains)]
    fn all_normal(xs: &[f32]) -> bool {
        xs.iter()
            .fold(true, |a, &v| a & (v >= EXP_NORMAL_F32) & (v <= EXP_MAX_FINITE_F32))
    }
    #[inline(always)]
    fn eval_normal<const FMA: bool>(x: f32) -> f32 {
        exp32_in_range::<FMA>(x)
    }
}
kernel!(Exp64, f64, exp64);
kernel!(Ln32, f32, ln32);
kernel!(Ln64, f64, ln64);
kernel!(Tanh32, f32, tanh32);

#[inline(always)]
fn map<K: Kernel, const FMA: bool>(x: &[K::T], out: &mut [K::T]) {
    for (xb, ob) in x.chunks(NORMAL_BLOCK).zip(out.chunks_mut(NORMAL_BLOCK)) {
        if K::all_normal(xb) {
            for (o, &v) in ob.iter_mut().zip(xb) {
                *o = K::eval_normal::<FMA>(v);
            }
        } else {
            for (o, &v) in ob.iter_mut().zip(xb) {
                *o = K::eval::<FMA>(v);
            }
        }
    }
}

#[inline(always)]
fn map_inplace<K: Kernel, const FMA: bool>(x: &mut [K::T]) {
    for xb in x.chunks_mut(NORMAL_BLOCK) {
        if K::all_normal(xb) {
            for v in xb.iter_mut() {
                *v = K::eval_normal::<FMA>(*v);
            }
        } else {
            for v in xb.iter_mut() {
                *v = K::eval::<FMA>(*v);
            }
        }
    }
}

/// Elements per block of the drivers' [`Kernel::all_normal`] check: 1 KiB of `f32`, in L1
/// between the check and the loop.
const NORMAL_BLOCK: usize = 256;

#[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
mod x86 {
    use super::{Kernel, map, map_inplace};

    #[target_feature(enable = "avx2")]
    #[inline]
    pub(super) fn wide_avx2<R>(f: impl FnOnce() -> R) -> R {
        f()
    }

    #[target_feature(enable = "avx512f,avx2")]
    #[inline]
    pub(super) fn wide_avx512<R>(f: impl FnOnce() -> R) -> R {
        f()
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) fn map_avx2<K: Kernel>(x: &[K::T], out: &mut [K::T]) {
        map::<K, true>(x, out);
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) fn map_inplace_avx2<K: Kernel>(x: &mut [K::T]) {
        map_inplace::<K, true>(x);
    }

    #[target_feature(enable = "avx512f,avx2,fma")]
    pub(super) fn map_avx512<K: Kernel>(x: &[K::T], out: &mut [K::T]) {
        map::<K, true>(x, out);
    }

    #[target_feature(enable = "avx512f,avx2,fma")]
    pub(super) fn map_inplace_avx512<K: Kernel>(x: &mut [K::T]) {
        map_inplace::<K, true>(x);
    }

    #[target_feature(enable = "fma")]
    pub(super) fn one_fma<K: Kernel>(x: K::T) -> K::T {
        K::eval::<true>(x)
    }
}

/// Kernel `K` at one element with the arithmetic the slice functions use on this CPU (fused
/// multiply-adds where the AVX2 and AVX-512 paths have them): the same bits as a one-element
/// slice, without the vector loop's entry and epilogue (~20 ns per call, measured in a chain of
/// scalar ops).
fn one<K: Kernel>(x: K::T) -> K::T {
    match Backend::detect() {
        #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
        Backend::Avx512 | Backend::Avx2Fma => {
            // SAFETY: `detect()` found fma on this CPU (both backends require it), the only
            // requirement of this `#[target_feature]` fn.
            unsafe { x86::one_fma::<K>(x) }
        }
        _ => K::eval::<STATIC_FMA>(x),
    }
}

/// [`exp_f32`] of one value (the same bits as a one-element slice).
pub(crate) fn exp_f32_one(x: f32) -> f32 {
    one::<Exp32>(x)
}

/// [`exp_f64`] of one value (the same bits as a one-element slice).
pub(crate) fn exp_f64_one(x: f64) -> f64 {
    one::<Exp64>(x)
}

/// `x[i] ← tanh x[i]` for `f32`, using the best code path for this CPU: [`tanh_f32_scalar`]'s
/// formula, with fused multiply-adds in its `exp` on the AVX2 and AVX-512 paths (which halves
/// the latency of one value in a chain of scalar ops). Within 1 ulp of `f64::tanh` on every
/// path (test `tanh_f32_ulp_sweep`).
pub(crate) fn tanh_f32_inplace(x: &mut [f32]) {
    // Through a copy on the stack, as the out-of-place loop: the in-place loop of this kernel
    // compiles to code ~4× slower on the AVX-512 path (measured on 1M f32, one thread: 6.4 ms in
    // place, 1.4 ms out of place; exp's loops are not affected).
    const BLOCK: usize = 512;
    let backend = Backend::detect();
    let mut tmp = [0.0f32; BLOCK];
    for c in x.chunks_mut(BLOCK) {
        let t = &mut tmp[..c.len()];
        t.copy_from_slice(c);
        run::<Tanh32>(backend, t, c);
    }
}

/// [`tanh_f32_inplace`] of one value (the same bits as a one-element slice).
pub(crate) fn tanh_f32_one(x: f32) -> f32 {
    one::<Tanh32>(x)
}

/// [`ln_f32`] of one value (the same bits as a one-element slice).
pub(crate) fn ln_f32_one(x: f32) -> f32 {
    one::<Ln32>(x)
}

/// [`ln_f64`] of one value (the same bits as a one-element slice).
pub(crate) fn ln_f64_one(x: f64) -> f64 {
    one::<Ln64>(x)
}

/// Runs kernel `K` with `backend`, lowered to what the CPU supports.
fn run<K: Kernel>(backend: Backend, x: &[K::T], out: &mut [K::T]) {
    assert_eq!(x.len(), out.len(), "vmath: input and output lengths differ");
    match backend.min(Backend::detect()) {
        #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
        Backend::Avx512 => {
            // SAFETY: the backend was capped at `detect()`, which found avx512f, avx2 and fma
            // on this CPU, the only requirement of this `#[target_feature]` fn.
            unsafe { x86::map_avx512::<K>(x, out) }
        }
        #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
        Backend::Avx2Fma => {
            // SAFETY: the backend was capped at `detect()`, which found avx2 and fma
            // on this CPU, the only requirement of this `#[target_feature]` fn.
            unsafe { x86::map_avx2::<K>(x, out) }
        }
        _ => map::<K, STATIC_FMA>(x, out),
    }
}

/// In-place [`run`].
fn run_inplace<K: Kernel>(backend: Backend, x: &mut [K::T]) {
    match backend.min(Backend::detect()) {
        #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
        Backend::Avx512 => {
            // SAFETY: the backend was capped at `detect()`, which found avx512f, avx2 and fma
            // on this CPU, the only requirement of this `#[target_feature]` fn.
            unsafe { x86::map_inplace_avx512::<K>(x) }
        }
        #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
        Backend::Avx2Fma => {
            // SAFETY: the backend was capped at `detect()`, which found avx2 and fma
            // on this CPU, the only requirement of this `#[target_feature]` fn.
            unsafe { x86::map_inplace_avx2::<K>(x) }
        }
        _ => map_inplace::<K, STATIC_FMA>(x),
    }
}

/// [`exp_f32`] on a forced backend (lowered to what the CPU supports);
/// `Backend::Portable` forces the fallback.
pub(crate) fn exp_f32_with(backend: Backend, x: &[f32], out: &mut [f32]) {
    run::<Exp32>(backend, x, out);
}

/// [`exp_f32_inplace`] on a forced backend.
pub(crate) fn exp_f32_inplace_with(backend: Backend, x: &mut [f32]) {
    run_inplace::<Exp32>(backend, x);
}

/// [`exp_f64`] on a forced backend.
pub(crate) fn exp_f64_with(backend: Backend, x: &[f64], out: &mut [f64]) {
    run::<Exp64>(backend, x, out);
}

/// [`exp_f64_inplace`] on a forced backend.
pub(crate) fn exp_f64_inplace_with(backend: Backend, x: &mut [f64]) {
    run_inplace::<Exp64>(backend, x);
}

/// [`tanh_f32_inplace`] on a forced backend, out of place.
#[cfg(test)]
fn tanh_f32_with(backend: Backend, x: &[f32], out: &mut [f32]) {
    run::<Tanh32>(backend, x, out);
}

/// [`ln_f32`] on a forced backend.
pub(crate) fn ln_f32_with(backend: Backend, x: &[f32], out: &mut [f32]) {
    run::<Ln32>(backend, x, out);
}

/// [`ln_f32_inplace`] on a forced backend.
pub(crate) fn ln_f32_inplace_with(backend: Backend, x: &mut [f32]) {
    run_inplace::<Ln32>(backend, x);
}

/// [`ln_f64`] on a forced backend.
pub(crate) fn ln_f64_with(backend: Backend, x: &[f64], out: &mut [f64]) {
    run::<Ln64>(backend, x, out);
}

/// [`ln_f64_inplace`] on a forced backend.
pub(crate) fn ln_f64_inplace_with(backend: Backend, x: &mut [f64]) {
    run_inplace::<Ln64>(backend, x);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Awkward values: signed zeros, subnormals, infinities, NaN, huge and tiny, and plain ones.
    fn awkward(n: usize) -> Vec<f32> {
        let special = [
            0.0,
            -0.0,
            f32::MIN_POSITIVE / 3.0,
            -f32::MIN_POSITIVE / 7.0,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
            f32::MAX,
            -1e-30,
            1e30,
        ];
        let mut r = crate::rng::Rng::new(5);
        (0..n)
            .map(|i| {
                if i % 7 == 3 {
                    special[i % special.len()]
                } else {
                    (r.uniform() as f32 - 0.5) * 20.0
                }
            })
            .collect()
    }

    /// `wide` changes the vector width, never the bits: an elementwise loop of divisions,
    /// square roots, min/max and selects computed inside `wide` equals the same loop outside.
    #[test]
    fn a_wide_loop_gives_the_same_bits_as_the_plain_one() {
        let (a, b) = (awkward(1003), awkward(1003).into_iter().rev().collect::<Vec<_>>());
        let f = |x: f32, y: f32| {
            let q = x / (y * y + 1.0) - x.abs().sqrt();
            if q > y {
                q.min(y * 0.5)
            } else {
                q.max(x) + exp_f32_scalar(y.min(80.0))
            }
        };
        let plain: Vec<u32> = a.iter().zip(&b).map(|(&x, &y)| f(x, y).to_bits()).collect();
        let mut out = vec![0.0f32; a.len()];
        wide(|| {
            out.iter_mut()
                .zip(a.iter().zip(&b))
                .for_each(|(o, (&x, &y))| *o = f(x, y))
        });
        let wide_bits: Vec<u32> = out.iter().map(|v| v.to_bits()).collect();
        assert_eq!(plain, wide_bits);
    }

    /// The one-value functions give the bits the slice functions give each element of a long
    /// slice (vector body and tail), special values included.
    #[test]
    fn one_value_is_a_slice_element() {
        let x = awkward(1003);
        let (mut e, mut l) = (vec![0.0f32; x.len()], vec![0.0f32; x.len()]);
        exp_f32(&x, &mut e);
        ln_f32(&x, &mut l);
        let mut t = x.clone();
        tanh_f32_inplace(&mut t);
        for (i, &v) in x.iter().enumerate() {
            assert_eq!(exp_f32_one(v).to_bits(), e[i].to_bits(), "exp({v:e})");
            same_or_nan(ln_f32_one(v), l[i], "ln", v);
            same_or_nan(tanh_f32_one(v), t[i], "tanh", v);
        }
        let y: Vec<f64> = x.iter().map(|&v| f64::from(v) * 7.3).collect();
        let (mut e, mut l) = (vec![0.0f64; y.len()], vec![0.0f64; y.len()]);
        exp_f64(&y, &mut e);
        ln_f64(&y, &mut l);
        for (i, &v) in y.iter().enumerate() {
            assert_eq!(exp_f64_one(v).to_bits(), e[i].to_bits(), "exp({v:e})");
            same_or_nan(ln_f64_one(v), l[i], "ln", v);
        }
    }

    /// The exp slice path's blocks with every input in `[EXP_NORMAL_F32, EXP_MAX_FINITE_F32]`
    /// (which skip the clamps, the subnormal rounding and the overflow select) give the full
    /// formula's bits: every 4099th `f32` bit pattern of that range in such blocks, on every
    /// backend, against `exp32` per element; a block holding one input outside it (below the
    /// bound, an overflow, `+∞` or NaN) takes the full path and still gives the bits of each
    /// element alone; and `exp32_in_range` is `exp32` on the range.
    #[test]
    fn exp_blocks_in_range_keep_the_bits() {
        let lo = EXP_NORMAL_F32.to_bits();
        let mut x: Vec<f32> = (0..(lo - 0x8000_0000) / 4099)
            .map(|i| f32::from_bits(lo - i * 4099))
            .collect();
        x.extend((0..EXP_MAX_FINITE_F32.to_bits() / 4099).map(|i| f32::from_bits(i * 4099)));
        x.extend([EXP_MAX_FINITE_F32, -0.0, EXP_NORMAL_F32]);
        assert!(Exp32::all_normal(&x));
        for &v in &x {
            let (a, b) = (exp32_in_range::<false>(v), exp32::<false>(v));
            assert_eq!(a.to_bits(), b.to_bits(), "exp({v:e})");
        }
        for backend in backends() {
            let mut out = vec![0.0f32; x.len()];
            exp_f32_with(backend, &x, &mut out);
            for (&v, &o) in x.iter().zip(&out) {
                // The same backend's full path: a block holding an input below the bound.
                let mut full = [0.0f32; 2];
                exp_f32_with(backend, &[v, -100.0], &mut full);
                assert_eq!(full[0].to_bits(), o.to_bits(), "exp({v:e})");
            }
            // One input outside the range sends its block down the full path.
            for odd in [
                -100.0,
                -87.000_01,
                88.722_84,
                100.0,
                f32::INFINITY,
                f32::NEG_INFINITY,
                f32::NAN,
            ] {
                let mut y = x[..1000].to_vec();
                y[300] = odd;
                assert!(!Exp32::all_normal(&y[256..512]), "{odd}");
                let mut out = vec![0.0f32; y.len()];
                exp_f32_with(backend, &y, &mut out);
                for (&v, &o) in y.iter().zip(&out) {
                    let mut one = [0.0f32];
                    exp_f32_with(backend, &[v], &mut one);
                    same_or_nan(one[0], o, "exp", v);
                }
                // Within 2 ulp of the f64 result rounded to f32 (0 and +∞ included).
                let (want, got) = (f64::from(odd).exp() as f32, out[300]);
                let ulps = (i64::from(want.to_bits()) - i64::from(got.to_bits())).abs();
                assert!(
                    ulps <= 2 || got.is_nan() && want.is_nan(),
                    "exp({odd}) = {got}, not {want}"
                );
            }
        }
    }

    /// `one` has the bits of `slice`, or both are NaN (whose sign and payload may differ between
    /// scalar and vector instructions); `f(x)` names the failure.
    fn same_or_nan<T: Into<f64> + Copy + std::fmt::LowerExp>(one: T, slice: T, f: &str, x: T) {
        let (a, b): (f64, f64) = (one.into(), slice.into());
        assert!(a.to_bits() == b.to_bits() || a.is_nan() && b.is_nan(), "{f}({x:e})");
    }

    /// Backends usable on this machine (the forced fallback is always one).
    fn backends() -> Vec<Backend> {
        Backend::ALL.into_iter().filter(|&b| b <= Backend::detect()).collect()
    }

    type Slice32 = fn(Backend, &[f32], &mut [f32]);
    type Slice64 = fn(Backend, &[f64], &mut [f64]);
    type InPlace32 = fn(Backend, &mut [f32]);
    type InPlace64 = fn(Backend, &mut [f64]);

    /// Error of `got` in units of the f32 spacing at `want` (subnormal spacing
    /// below the normal range). Infinite results must match exactly.
    fn ulp_err32(got: f32, want: f64) -> f64 {
        if got.is_nan() || want.is_nan() {
            return if got.is_nan() && want.is_nan() {
                0.0
            } else {
                f64::INFINITY
            };
        }
        let w32 = want as f32;
        if w32.is_infinite() || got.is_infinite() {
            return if got == w32 { 0.0 } else { f64::INFINITY };
        }
        let e = ((want.abs().to_bits() >> 52) as i32 - 1023).max(-126);
        (f64::from(got) - want).abs() / 2f64.powi(e - 23)
    }

    /// Distance in ulps between two f64 (number of representable values apart).
    fn ulp_dist64(a: f64, b: f64) -> u64 {
        if a.is_nan() || b.is_nan() {
            return if a.is_nan() && b.is_nan() { 0 } else { u64::MAX };
        }
        let ord = |x: f64| {
            let b = x.to_bits();
            if b >> 63 == 1 {
                -((b & !(1 << 63)) as i128)
            } else {
                b as i128
            }
        };
        (ord(a) - ord(b)).unsigned_abs() as u64
    }

    fn ulp_dist32(a: f32, b: f32) -> u64 {
        if a.is_nan() || b.is_nan() {
            return if a.is_nan() && b.is_nan() { 0 } else { u64::MAX };
        }
        let ord = |x: f32| {
            let b = x.to_bits();
            if b >> 31 == 1 {
                -i64::from(b & !(1 << 31))
            } else {
                i64::from(b)
            }
        };
        (ord(a) - ord(b)).unsigned_abs()
    }

    /// Max f32 error of `f` over `xs` on every backend vs the f64 reference.
    fn max_err32(f: Slice32, reference: fn(f64) -> f64, xs: &[f32]) -> f64 {
        let mut out = vec![0.0; xs.len()];
        let mut worst = 0.0f64;
        for b in backends() {
            f(b, xs, &mut out);
            for (&x, &y) in xs.iter().zip(&out) {
                let e = ulp_err32(y, reference(f64::from(x)));
                assert!(e.is_finite(), "{b:?}: x={x:e} got {y:e}");
                worst = worst.max(e);
            }
        }
        worst
    }

    /// Max f64 error (ulps vs std) of `f` over `xs` on every backend.
    fn max_err64(f: Slice64, reference: fn(f64) -> f64, xs: &[f64]) -> u64 {
        let mut out = vec![0.0; xs.len()];
        let mut worst = 0;
        for b in backends() {
            f(b, xs, &mut out);
            for (&x, &y) in xs.iter().zip(&out) {
                let d = ulp_dist64(y, reference(x));
                assert!(d < 1000, "{b:?}: x={x:e} got {y:e} want {:e}", reference(x));
                worst = worst.max(d);
            }
        }
        worst
    }

    /// Deterministic pseudo-random u64 stream (SplitMix64).
    fn rng(seed: u64) -> impl FnMut() -> u64 {
        let mut s = seed;
        move || {
            s = s.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = s;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }
    }

    fn linspace(lo: f64, hi: f64, n: usize) -> impl Iterator<Item = f64> {
        (0..=n).map(move |i| lo + (hi - lo) * i as f64 / n as f64)
    }

    #[test]
    fn tanh_f32_ulp_sweep() {
        let xs: Vec<f32> = (0..u32::MAX)
            .step_by(61)
            .chain([0x8000_0000, 0x7f80_0000, 0xff80_0000])
            .map(f32::from_bits)
            .collect();
        let mut out = vec![0.0f32; xs.len()];
        // The scalar function (the portable path's arithmetic), then every backend's slice path.
        let scalar: Slice32 = |_, x, o| o.iter_mut().zip(x).for_each(|(o, &v)| *o = tanh_f32_scalar(v));
        for (name, f) in [("scalar", scalar), ("slice", tanh_f32_with as Slice32)] {
            for b in backends() {
                f(b, &xs, &mut out);
                let mut worst = 0.0f64;
                for (&x, &got) in xs.iter().zip(&out) {
                    if x.is_nan() {
                        assert!(got.is_nan());
                        continue;
                    }
                    assert_eq!(got.is_sign_negative(), x.is_sign_negative(), "tanh({x:e}) = {got:e}");
                    worst = worst.max(ulp_err32(got, f64::from(x).tanh()));
                }
                assert!(worst <= 1.0, "tanh f32 {name} {b:?}: {worst} ulp");
            }
        }
        for f in [tanh_f32_scalar, tanh_f32_one] {
            assert_eq!(f(f32::INFINITY), 1.0);
            assert_eq!(f(f32::NEG_INFINITY), -1.0);
            assert_eq!(f(-0.0).to_bits(), (-0.0f32).to_bits());
        }
    }

    #[test]
    fn exp_f32_ulp_sweep() {
        // Dense uniform grid over the whole finite-result range, plus a stride
        // through the bit patterns (every binade, down to tiny |x|).
        let mut xs: Vec<f32> = linspace(-104.0, 89.0, 2_000_000).map(|v| v as f32).collect();
        xs.extend((0..0x42d0_0000u32).step_by(1013).map(f32::from_bits));
        xs.extend((0..0x42b2_0000u32).step_by(1019).map(|b| -f32::from_bits(b)));
        let worst = max_err32(exp_f32_with, f64::exp, &xs);
        println!("exp_f32 max error {worst:.3} ulp over {} points", xs.len());
        assert!(worst <= 2.0, "{worst}");
    }

    #[test]
    fn ln_f32_ulp_sweep() {
        // Stride through every positive finite bit pattern (subnormals
        // included), plus a dense grid around 1 where the result is small.
        let mut xs: Vec<f32> = (1..0x7f80_0000u32).step_by(1021).map(f32::from_bits).collect();
        xs.extend(linspace(0.5, 2.0, 1_000_000).map(|v| v as f32));
        xs.extend((0..100_000).map(|i| f32::from_bits(0x3f80_0000 + i)));
        xs.extend((0..100_000).map(|i| f32::from_bits(0x3f80_0000 - i)));
        let worst = max_err32(ln_f32_with, f64::ln, &xs);
        println!("ln_f32 max error {worst:.3} ulp over {} points", xs.len());
        assert!(worst <= 2.0, "{worst}");
    }

    #[test]
    fn exp_f64_ulp_sweep() {
        let mut next = rng(1);
        let mut xs: Vec<f64> = linspace(-746.0, 710.0, 1_000_000).collect();
        // Random bit patterns with |x| < 746: every binade down to tiny |x|.
        while xs.len() < 1_600_000 {
            let x = f64::from_bits(next());
            if x.abs() < 746.0 {
                xs.push(x);
            }
        }
        xs.extend(linspace(-1.0, 1.0, 300_000));
        let worst = max_err64(exp_f64_with, f64::exp, &xs);
        println!("exp_f64 max error {worst} ulp over {} points", xs.len());
        assert!(worst <= 2, "{worst}");
    }

    #[test]
    fn ln_f64_ulp_sweep() {
        let mut next = rng(2);
        // Random positive bit patterns: uniform over binades, subnormals included.
        let mut xs: Vec<f64> = (0..1_000_000)
            .map(|_| f64::from_bits(next() >> 1))
            .filter(|x| x.is_finite())
            .collect();
        xs.extend(linspace(0.5, 2.0, 500_000));
        xs.extend(linspace(1e-300, 1e300, 100_000));
        xs.extend((0..100_000).map(|i| f64::from_bits(1.0f64.to_bits() + i)));
        xs.extend((0..100_000).map(|i| f64::from_bits(1.0f64.to_bits() - i)));
        let worst = max_err64(ln_f64_with, f64::ln, &xs);
        println!("ln_f64 max error {worst} ulp over {} points", xs.len());
        assert!(worst <= 2, "{worst}");
    }

    /// Exhaustive f32 check, per backend: all finite inputs for exp, all
    /// non-negative finite inputs for ln. Several minutes in release mode:
    /// `cargo test --release -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn exhaustive_f32() {
        const CHUNK: u32 = 1 << 16;
        /// Max error per backend over all bit patterns `b | sign`, b < inf.
        fn worst(f: Slice32, reference: fn(f64) -> f64, sign: u32) -> [f64; 3] {
            let threads = std::thread::available_parallelism().map_or(1, |n| n.get()) as u32;
            let chunks = f32::INFINITY.to_bits() / CHUNK;
            std::thread::scope(|sc| {
                let handles: Vec<_> = (0..threads)
                    .map(|t| {
                        sc.spawn(move || {
                            let mut out = vec![0.0f32; CHUNK as usize];
                            let mut w = [0.0f64; 3];
                            // Interleaved chunks balance cheap and costly ranges.
                            for c in (t..chunks).step_by(threads as usize) {
                                let xs: Vec<f32> =
                                    (c * CHUNK..(c + 1) * CHUNK).map(|b| f32::from_bits(b | sign)).collect();
                                let want: Vec<f64> = xs.iter().map(|&x| reference(f64::from(x))).collect();
                                for be in backends() {
                                    f(be, &xs, &mut out);
                                    for ((&x, &y), &r) in xs.iter().zip(&out).zip(&want) {
                                        let e = ulp_err32(y, r);
                                        assert!(e.is_finite(), "{be:?}: x={x:e} got {y:e}");
                                        w[be as usize] = w[be as usize].max(e);
                                    }
                                }
                            }
                            w
                        })
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|h| h.join().unwrap())
                    .fold([0.0f64; 3], |a, b| [a[0].max(b[0]), a[1].max(b[1]), a[2].max(b[2])])
            })
        }
        let exp_pos = worst(exp_f32_with, f64::exp, 0);
        let exp_neg = worst(exp_f32_with, f64::exp, 1 << 31);
        let ln = worst(ln_f32_with, f64::ln, 0);
        println!("exhaustive, ulp by backend {:?}:", Backend::ALL);
        println!("  exp_f32 x>=0 {exp_pos:.3?}, x<=0 {exp_neg:.3?}; ln_f32 {ln:.3?}");
        assert!(exp_pos.iter().chain(&exp_neg).chain(&ln).all(|&e| e <= 2.0));
    }

    /// Larger f64 sweeps (tens of millions of points), per backend:
    /// `cargo test --release -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn dense_f64() {
        fn per_backend(f: Slice64, reference: fn(f64) -> f64, xs: &[f64]) -> [u64; 3] {
            let want: Vec<f64> = xs.iter().map(|&x| reference(x)).collect();
            let mut out = vec![0.0; xs.len()];
            let mut w = [0; 3];
            for b in backends() {
                f(b, xs, &mut out);
                w[b as usize] = out.iter().zip(&want).map(|(&y, &r)| ulp_dist64(y, r)).max().unwrap();
            }
            w
        }
        let mut next = rng(3);
        let unit = |u: u64| (u >> 11) as f64 / (1u64 << 53) as f64;
        let mut xs: Vec<f64> = (0..20_000_000).map(|_| -746.0 + 1456.0 * unit(next())).collect();
        xs.extend((0..5_000_000).map(|_| f64::from_bits(next() & !(1 << 63)) % 746.0));
        xs.extend((0..5_000_000).map(|_| -unit(next()) * 2.0 + 1.0));
        let e = per_backend(exp_f64_with, f64::exp, &xs);
        let mut ls: Vec<f64> = (0..20_000_000)
            .map(|_| f64::from_bits(next() >> 1))
            .filter(|x| x.is_finite())
            .collect();
        ls.extend((0..10_000_000).map(|_| 0.5 + 1.5 * unit(next())));
        let l = per_backend(ln_f64_with, f64::ln, &ls);
        println!("dense f64, ulp vs std by backend {:?}:", Backend::ALL);
        println!(
            "  exp_f64 {e:?} over {} points; ln_f64 {l:?} over {} points",
            xs.len(),
            ls.len()
        );
        assert!(e.iter().chain(&l).all(|&d| d <= 2));
    }

    /// Runs `f` on a 1-element slice (the scalar tail path of every backend).
    fn one32(f: Slice32, b: Backend, x: f32) -> f32 {
        let mut o = [0.0];
        f(b, &[x], &mut o);
        o[0]
    }

    fn one64(f: Slice64, b: Backend, x: f64) -> f64 {
        let mut o = [0.0];
        f(b, &[x], &mut o);
        o[0]
    }

    fn same32(a: f32, b: f32) -> bool {
        a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())
    }

    fn same64(a: f64, b: f64) -> bool {
        a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())
    }

    #[test]
    fn exp_special_values() {
        for b in backends() {
            let e32 = |x| one32(exp_f32_with, b, x);
            let e64 = |x| one64(exp_f64_with, b, x);
            assert_eq!(e32(0.0).to_bits(), 1.0f32.to_bits());
            assert_eq!(e32(-0.0).to_bits(), 1.0f32.to_bits());
            assert!(e32(f32::NAN).is_nan() && e32(-f32::NAN).is_nan());
            assert_eq!(e32(f32::INFINITY), f32::INFINITY);
            assert_eq!(e32(f32::NEG_INFINITY).to_bits(), 0); // +0.0
            assert_eq!(e32(f32::MAX), f32::INFINITY);
            assert_eq!(e32(f32::MIN).to_bits(), 0);
            assert!(ulp_err32(e32(88.72283), f64::from(88.72283f32).exp()) <= 1.0); // finite, near MAX
            assert_eq!(e32(88.72284), f32::INFINITY);
            assert_eq!(e32(-103.27893), f32::from_bits(1)); // smallest subnormal
            assert_eq!(e32(-103.97208), f32::from_bits(1)); // just above half of it
            assert_eq!(e32(-103.97209).to_bits(), 0); // just below: rounds to +0
            assert_eq!(e32(-120.0).to_bits(), 0);

            assert_eq!(e64(0.0).to_bits(), 1.0f64.to_bits());
            assert_eq!(e64(-0.0).to_bits(), 1.0f64.to_bits());
            assert!(e64(f64::NAN).is_nan() && e64(-f64::NAN).is_nan());
            assert_eq!(e64(f64::INFINITY), f64::INFINITY);
            assert_eq!(e64(f64::NEG_INFINITY).to_bits(), 0);
            assert_eq!(e64(f64::MAX), f64::INFINITY);
            assert_eq!(e64(f64::MIN).to_bits(), 0);
            assert_eq!(e64(709.782712893384), 1.7976931348622732e308);
            assert_eq!(e64(709.7827128933841), f64::INFINITY);
            assert_eq!(e64(-745.1332191019411), f64::from_bits(1));
            assert_eq!(e64(-745.1332191019412).to_bits(), 0);
            assert_eq!(e64(-800.0).to_bits(), 0);
        }
    }

    #[test]
    fn exp_overflow_and_underflow_edges() {
        // Every f32 within 20000 ulps of the overflow threshold, the
        // normal/subnormal boundary and the underflow-to-zero threshold.
        let mut xs = vec![];
        for c in [88.72284f32, -87.33655, -103.97208, -103.27893] {
            xs.extend((0..40_000).map(|i| f32::from_bits(c.to_bits() - 20_000 + i)));
        }
        let worst = max_err32(exp_f32_with, f64::exp, &xs);
        assert!(worst <= 2.0, "{worst}");
        // f64: results must agree with std within the bound, including the
        // infinity/zero decision (ulp_dist64 counts inf as one past MAX).
        let mut ys = vec![];
        for c in [709.782712893384f64, -708.3964185322641, -745.1332191019411, -744.44] {
            ys.extend((0..40_000).map(|i| f64::from_bits(c.to_bits() - 20_000 + i)));
        }
        assert!(max_err64(exp_f64_with, f64::exp, &ys) <= 2);
    }

    #[test]
    fn ln_special_values() {
        for b in backends() {
            let l32 = |x| one32(ln_f32_with, b, x);
            let l64 = |x| one64(ln_f64_with, b, x);
            assert_eq!(l32(1.0).to_bits(), 0); // +0.0
            assert_eq!(l32(0.0), f32::NEG_INFINITY);
            assert_eq!(l32(-0.0), f32::NEG_INFINITY);
            for x in [
                -1.0,
                -f32::from_bits(1),
                f32::NEG_INFINITY,
                f32::MIN,
                f32::NAN,
                -f32::NAN,
            ] {
                assert!(l32(x).is_nan(), "ln({x})");
            }
            assert_eq!(l32(f32::INFINITY), f32::INFINITY);
            assert_eq!(l32(f32::MAX), 88.72284);
            assert_eq!(l32(f32::MIN_POSITIVE), -87.33655);
            assert_eq!(l32(f32::from_bits(1)), -103.27893); // smallest subnormal
            assert_eq!(l32(f32::from_bits(0x007f_ffff)), -87.33655); // largest subnormal
            assert_eq!(l32(std::f32::consts::E), 1.0);

            assert_eq!(l64(1.0).to_bits(), 0);
            assert_eq!(l64(0.0), f64::NEG_INFINITY);
            assert_eq!(l64(-0.0), f64::NEG_INFINITY);
            for x in [
                -1.0,
                -f64::from_bits(1),
                f64::NEG_INFINITY,
                f64::MIN,
                f64::NAN,
                -f64::NAN,
            ] {
                assert!(l64(x).is_nan(), "ln({x})");
            }
            assert_eq!(l64(f64::INFINITY), f64::INFINITY);
            for x in [
                f64::MAX,
                f64::MIN_POSITIVE,
                f64::from_bits(1),
                f64::from_bits(0x000f_ffff_ffff_ffff),
                2.0,
            ] {
                assert!(ulp_dist64(l64(x), x.ln()) <= 1, "ln({x:e})");
            }
        }
    }

    #[test]
    fn ln_subnormal_inputs() {
        // Every 97th f32 subnormal, and f64 subnormals spread over all scales.
        let xs: Vec<f32> = (1..0x0080_0000u32).step_by(97).map(f32::from_bits).collect();
        assert!(max_err32(ln_f32_with, f64::ln, &xs) <= 2.0);
        let ys: Vec<f64> = (0..52)
            .flat_map(|s| (1..200u64).map(move |i| f64::from_bits(i << s)))
            .collect();
        assert!(max_err64(ln_f64_with, f64::ln, &ys) <= 2);
    }

    /// Inputs for the tail tests: ordinary values interleaved with specials.
    fn mixed(n: usize, seed: u64) -> Vec<f64> {
        let special = [
            0.0,
            -0.0,
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            1e-310,
            -3.0,
            1000.0,
        ];
        let mut next = rng(seed);
        (0..n)
            .map(|i| {
                let r = next();
                if r.is_multiple_of(7) {
                    special[i % special.len()]
                } else {
                    (r >> 11) as f64 / (1u64 << 53) as f64 * 180.0 - 100.0
                }
            })
            .collect()
    }

    #[test]
    fn slice_lengths_and_tails() {
        let f32s: [(Slice32, InPlace32); 2] =
            [(exp_f32_with, exp_f32_inplace_with), (ln_f32_with, ln_f32_inplace_with)];
        let f64s: [(Slice64, InPlace64); 2] =
            [(exp_f64_with, exp_f64_inplace_with), (ln_f64_with, ln_f64_inplace_with)];
        for b in backends() {
            for len in 0..=67 {
                // Offsets 0..3 move the data against any alignment peeling.
                for off in 0..3 {
                    let src = mixed(len + off, (len * 3 + off) as u64);
                    let x64 = &src[off..];
                    let x32: Vec<f32> = x64.iter().map(|&v| v as f32).collect();
                    for (f, fi) in f32s {
                        let mut out = vec![7.0f32; len];
                        f(b, &x32, &mut out);
                        let mut inp = x32.clone();
                        fi(b, &mut inp);
                        for i in 0..len {
                            let want = one32(f, b, x32[i]);
                            assert!(same32(out[i], want), "{b:?} len {len} i {i} x {}", x32[i]);
                            assert!(same32(inp[i], want), "{b:?} in-place len {len} i {i}");
                        }
                    }
                    for (f, fi) in f64s {
                        let mut out = vec![7.0f64; len];
                        f(b, x64, &mut out);
                        let mut inp = x64.to_vec();
                        fi(b, &mut inp);
                        for i in 0..len {
                            let want = one64(f, b, x64[i]);
                            assert!(same64(out[i], want), "{b:?} len {len} i {i} x {}", x64[i]);
                            assert!(same64(inp[i], want), "{b:?} in-place len {len} i {i}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn backends_agree_within_one_ulp() {
        let x64 = mixed(100_000, 9);
        let x32: Vec<f32> = x64.iter().map(|&v| v as f32).collect();
        let (mut a32, mut b32) = (vec![0.0f32; x32.len()], vec![0.0f32; x32.len()]);
        let (mut a64, mut b64) = (vec![0.0f64; x64.len()], vec![0.0f64; x64.len()]);
        for f in [exp_f32_with, ln_f32_with] {
            f(Backend::Portable, &x32, &mut a32);
            for b in backends() {
                f(b, &x32, &mut b32);
                assert!(
                    a32.iter()
                        .zip(&b32)
                        .all(|(&p, &q)| same32(p, q) || ulp_dist32(p, q) <= 1)
                );
            }
        }
        for f in [exp_f64_with, ln_f64_with] {
            f(Backend::Portable, &x64, &mut a64);
            for b in backends() {
                f(b, &x64, &mut b64);
                assert!(
                    a64.iter()
                        .zip(&b64)
                        .all(|(&p, &q)| same64(p, q) || ulp_dist64(p, q) <= 1)
                );
            }
        }
    }

    #[test]
    fn dispatch_and_forced_fallback() {
        let best = Backend::detect();
        assert_eq!(best, Backend::detect()); // cached, stable
        assert_eq!(best, Backend::detect_uncached());
        #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
        {
            let avx2 = is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma");
            assert_eq!(best >= Backend::Avx2Fma, avx2);
            assert_eq!(best == Backend::Avx512, avx2 && is_x86_feature_detected!("avx512f"));
        }
        #[cfg(not(any(target_arch = "x86", target_arch = "x86_64")))]
        assert_eq!(best, Backend::Portable);

        let x64 = mixed(1000, 5);
        let x32: Vec<f32> = x64.iter().map(|&v| v as f32).collect();
        type Api32 = (fn(&[f32], &mut [f32]), fn(&mut [f32]), Slice32, fn(f32) -> f32);
        type Api64 = (fn(&[f64], &mut [f64]), fn(&mut [f64]), Slice64, fn(f64) -> f64);
        let api32: [Api32; 2] = [
            (exp_f32, exp_f32_inplace, exp_f32_with, exp_f32_scalar),
            (ln_f32, ln_f32_inplace, ln_f32_with, ln_f32_scalar),
        ];
        let api64: [Api64; 2] = [
            (exp_f64, exp_f64_inplace, exp_f64_with, exp_f64_scalar),
            (ln_f64, ln_f64_inplace, ln_f64_with, ln_f64_scalar),
        ];
        for (public, inplace, with, scalar) in api32 {
            let (mut p, mut q) = (vec![0.0f32; x32.len()], vec![0.0f32; x32.len()]);
            // The public functions use the detected backend.
            public(&x32, &mut p);
            with(best, &x32, &mut q);
            assert!(p.iter().zip(&q).all(|(&a, &b)| same32(a, b)));
            let mut v = x32.clone();
            inplace(&mut v);
            assert!(v.iter().zip(&q).all(|(&a, &b)| same32(a, b)));
            // Forcing the fallback gives exactly the scalar functions.
            with(Backend::Portable, &x32, &mut p);
            assert!(x32.iter().zip(&p).all(|(&x, &y)| same32(scalar(x), y)));
            // A backend above the CPU's is lowered, never executed.
            with(Backend::Avx512, &x32, &mut p);
            assert!(p.iter().zip(&q).all(|(&a, &b)| same32(a, b)));
            public(&[], &mut []);
        }
        for (public, inplace, with, scalar) in api64 {
            let (mut p, mut q) = (vec![0.0f64; x64.len()], vec![0.0f64; x64.len()]);
            public(&x64, &mut p);
            with(best, &x64, &mut q);
            assert!(p.iter().zip(&q).all(|(&a, &b)| same64(a, b)));
            let mut v = x64.clone();
            inplace(&mut v);
            assert!(v.iter().zip(&q).all(|(&a, &b)| same64(a, b)));
            with(Backend::Portable, &x64, &mut p);
            assert!(x64.iter().zip(&p).all(|(&x, &y)| same64(scalar(x), y)));
            with(Backend::Avx512, &x64, &mut p);
            assert!(p.iter().zip(&q).all(|(&a, &b)| same64(a, b)));
            public(&[], &mut []);
        }
    }

    #[test]
    #[should_panic(expected = "lengths differ")]
    fn mismatched_lengths_panic() {
        exp_f32(&[1.0, 2.0], &mut [0.0]);
    }
}
