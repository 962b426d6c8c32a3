//! `check::localize`: a wrong rule planted at a random position of a random program is found, at
//! the right node, every time; programs with only correct rules report nothing (library ops
//! included); second order, first-order-only rules, composed twins, projections, checkpoints.
//!
//! `LOCALIZE_SCALE=10 cargo test --test localize` runs ten times as many random programs (other
//! seeds too).

/// The multiplier of the program counts (and the seed offset), from `LOCALIZE_SCALE`.
fn scale() -> usize {
    std::env::var("LOCALIZE_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1)
}

use std::panic::Location;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tapegrad::check::{LocalizeOptions, LocalizeReport, SecondOrder, localize};
use tapegrad::rng::Rng;
use tapegrad::shape::broadcast_shapes;
use tapegrad::{Cotangents, Float, Op, Result, Tape, Tensor, Value, Var, VjpCtx, pointwise};

// ---------------------------------------------------------------------------------------------
// User ops: correct ones, and the mistakes a person makes writing them.
// ---------------------------------------------------------------------------------------------

/// A mistake planted in a user op's rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mistake {
    /// The rule is right.
    None,
    /// `x³` with the rule `2x²·g`.
    CubeFactor,
    /// `x·σ(x)` with the rule `σ(x)·g` (the product rule forgotten).
    SwishProduct,
    /// Softmax with the diagonal-only rule `g ⊙ y(1 − y)`.
    SoftmaxDiagonal,
    /// `x @ w` with the weight's gradient negated.
    AffineSign,
    /// `x³` whose rule computes `3x²` from values, as a constant: right first order, wrong second.
    CubeConstant,
}

const MISTAKES: [Mistake; 5] = [
    Mistake::CubeFactor,
    Mistake::SwishProduct,
    Mistake::SoftmaxDiagonal,
    Mistake::AffineSign,
    Mistake::CubeConstant,
];

/// `x³`.
struct Cube(Mistake);
impl<T: Float> Op<T> for Cube {
    fn name(&self) -> &'static str {
        "user_cube"
    }
    fn forward(&self, x: &[&Tensor<T>]) -> Result<Tensor<T>> {
        Ok(x[0].map(|v| v * v * v))
    }
    fn vjp<V: Value<T>>(&self, cx: &VjpCtx<'_, V>, g: &V) -> Result<Cotangents<V>> {
        let x = cx.input(0);
        let gx = match self.0 {
            Mistake::CubeFactor => pointwise!(T; g, x => g * x * x * T::from_f64(2.0)),
            Mistake::CubeConstant => {
                let d = x.value().map(|v| T::from_f64(3.0) * v * v);
                g.mul(&g.constant(d))
            }
            _ => pointwise!(T; g, x => g * x * x * T::from_f64(3.0)),
        };
        Ok(cx.grads([Some(gx)]))
    }
}

/// `x·σ(x)`.
struct Swish(Mistake);
impl<T: Float> Op<T> for Swish {
    fn name(&self) -> &'static str {
        "user_swish"
    }
    fn forward(&self, x: &[&Tensor<T>]) -> Result<Tensor<T>> {
        Ok(x[0].map(|v| v / (T::ONE + (-v).exp())))
    }
    fn vjp<V: Value<T>>(&self, cx: &VjpCtx<'_, V>, g: &V) -> Result<Cotangents<V>> {
        use tapegrad::Math;
        let x = cx.input(0);
        let gx = if self.0 == Mistake::SwishProduct {
            pointwise!(T; g, x => g * x.sigmoid())
        } else {
            pointwise!(T; g, x => {
                let s = x.sigmoid();
                g * (s + x * s * (-s + T::ONE))
            })
        };
        Ok(cx.grads([Some(gx)]))
    }
}

/// Softmax along the last axis, with the closed-form rule `y ⊙ (g − Σ g⊙y)`.
struct RowSoftmax(Mistake);
impl<T: Float> Op<T> for RowSoftmax {
    fn name(&self) -> &'static str {
        "user_softmax"
    }
    fn forward(&self, x: &[&Tensor<T>]) -> Result<Tensor<T>> {
        Ok(Tape::<T>::new().constant(x[0].clone()).softmax(-1).value())
    }
    fn vjp<V: Value<T>>(&self, cx: &VjpCtx<'_, V>, g: &V) -> Result<Cotangents<V>> {
        let y = cx.output();
        if self.0 == Mistake::SoftmaxDiagonal {
            return Ok(cx.grads([Some(pointwise!(T; g, y => g * y * (-y + T::ONE)))]));
        }
        let mut rows = y.shape();
        *rows.last_mut().unwrap() = 1;
        let s = &g.mul(y).sum_to(&rows);
        Ok(cx.grads([Some(pointwise!(T; g, y, s => y * (g - s)))]))
    }
}

/// `a ⊙ b` (same shapes).
struct Bilinear;
impl<T: Float> Op<T> for Bilinear {
    fn name(&self) -> &'static str {
        "user_bilinear"
    }
    fn forward(&self, x: &[&Tensor<T>]) -> Result<Tensor<T>> {
        Ok(x[0].zip_map(x[1], |a, b| a * b))
    }
    fn vjp<V: Value<T>>(&self, cx: &VjpCtx<'_, V>, g: &V) -> Result<Cotangents<V>> {
        let (a, b) = (cx.input(0), cx.input(1));
        Ok(cx.grads([Some(g.mul(b)), Some(g.mul(a))]))
    }
}

/// `x @ w`.
struct Affine(Mistake);
impl<T: Float> Op<T> for Affine {
    fn name(&self) -> &'static str {
        "user_affine"
    }
    fn forward(&self, x: &[&Tensor<T>]) -> Result<Tensor<T>> {
        let t = Tape::<T>::new();
        Ok(t.constant(x[0].clone()).matmul(t.constant(x[1].clone())).value())
    }
    fn vjp<V: Value<T>>(&self, cx: &VjpCtx<'_, V>, g: &V) -> Result<Cotangents<V>> {
        let (x, w) = (cx.input(0), cx.input(1));
        let gw = x.matmul_t(g, true, false);
        let gw = if self.0 == Mistake::AffineSign { gw.neg() } else { gw };
        Ok(cx.grads([Some(g.matmul_t(w, false, true)), Some(gw)]))
    }
}

/// `x²` with a first-order-only rule (computed from values).
struct SquareFirstOrder;
impl<T: Float> Op<T> for SquareFirstOrder {
    fn name(&self) -> &'static str {
        "user_square_fo"
    }
    fn forward(&self, x: &[&Tensor<T>]) -> Result<Tensor<T>> {
        Ok(x[0].map(|a| a * a))
    }
    fn vjp<V: Value<T>>(&self, cx: &VjpCtx<'_, V>, g: &V) -> Result<Cotangents<V>> {
        let gx = cx.input(0).value().zip_map(&g.value(), |x, g| T::from_f64(2.0) * x * g);
        Ok(cx.first_order_only("user_square_fo", g, [Some(gx)]))
    }
}

// ---------------------------------------------------------------------------------------------
// Random programs.
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug)]
enum Code {
    Add,
    Sub,
    Mul,
    Div,
    ExpTanh,
    Log,
    Sqrt,
    Tanh,
    Sigmoid,
    Scale,
    Powf,
    SumAxis,
    MeanAxis,
    Transpose,
    Reshape,
    MatMulT,
    Softmax,
    LogSoftmax,
    UserCube,
    UserSwish,
    UserSoftmax,
    UserBilinear,
    UserAffine,
    UserSquareFo,
}

const CODES: [Code; 24] = [
    Code::Add,
    Code::Sub,
    Code::Mul,
    Code::Div,
    Code::ExpTanh,
    Code::Log,
    Code::Sqrt,
    Code::Tanh,
    Code::Sigmoid,
    Code::Scale,
    Code::Powf,
    Code::SumAxis,
    Code::MeanAxis,
    Code::Transpose,
    Code::Reshape,
    Code::MatMulT,
    Code::Softmax,
    Code::LogSoftmax,
    Code::UserCube,
    Code::UserSwish,
    Code::UserSoftmax,
    Code::UserBilinear,
    Code::UserAffine,
    Code::UserSquareFo,
];

#[derive(Clone, Copy, Debug)]
struct Instr {
    code: Code,
    a: usize,
    b: usize,
    p: usize,
    /// The mistake planted here (only in user ops that can make it).
    mistake: Mistake,
}

#[derive(Clone, Debug)]
struct Program {
    inputs: Vec<Vec<usize>>,
    /// The instructions; `segment` (start, end) of them run inside one checkpoint.
    instrs: Vec<Instr>,
    segment: Option<(usize, usize)>,
    seed: u64,
}

/// The line every planted op is recorded at (so a report can be matched to it).
static PLANT_LINE: std::sync::OnceLock<u32> = std::sync::OnceLock::new();

/// Applies one instruction to the pool (values requiring a gradient), returning the new value.
fn step<'t, T: Float>(ins: &Instr, pool: &[Var<'t, T>]) -> Var<'t, T> {
    let tape = pool[0].tape();
    let c = |x: f64| T::from_f64(x);
    let a = pool[ins.a % pool.len()];
    let (sa, nd) = (a.shape(), a.shape().len());
    // A second operand that broadcasts with `a` (`a` itself if none does).
    let partner = |same: bool| {
        (0..pool.len())
            .map(|k| pool[(ins.b + k) % pool.len()])
            .find(|b| {
                if same {
                    b.shape() == sa
                } else {
                    broadcast_shapes(&sa, &b.shape()).is_some()
                }
            })
            .unwrap_or(a)
    };
    if ins.mistake != Mistake::None {
        let m = ins.mistake;
        // A wrong rule can be right at some inputs (`σ(x)` is swish's derivative at x = 0, a
        // negated weight gradient xᵀg is right when x = 0), and programs do make exact zeros
        // (`a − a`, a log-softmax over one class), or make the difference vanish below any
        // tolerance (the diagonal-only softmax rule on a saturated row, where y ≈ one-hot): no
        // check can see the mistake there. So the planted op gets its operand squashed into
        // (0.7, 1.7), away from those points.
        let a = a.tanh() * c(0.5) + c(1.2);
        // (a softmax over rows of one element has the gradient 0 both ways: give it rows of two)
        let x = if m == Mistake::SoftmaxDiagonal && sa.last().is_none_or(|&n| n < 2) {
            let two = Tensor::from_vec(vec![c(1.0), c(-2.0)], [1, 2]);
            a.reshape([a.numel(), 1]) * tape.constant(two)
        } else {
            a
        };
        return match m {
            Mistake::CubeFactor | Mistake::CubeConstant => plant(tape, Cube(m), &[x]),
            Mistake::SwishProduct => plant(tape, Swish(m), &[x]),
            Mistake::SoftmaxDiagonal => plant(tape, RowSoftmax(m), &[x]),
            Mistake::AffineSign => {
                let x2 = if nd == 2 { x } else { x.reshape([1, x.numel()]) };
                plant(tape, Affine(m), &[x2, x2.t()])
            }
            Mistake::None => unreachable!(),
        };
    }
    match ins.code {
        Code::Add => a + partner(false),
        Code::Sub => a - partner(false),
        Code::Mul => a * partner(false),
        Code::Div => {
            let b = partner(false);
            a / (b * b + c(0.5))
        }
        Code::ExpTanh => a.tanh().exp(),
        Code::Log => (a * a + c(0.5)).log(),
        Code::Sqrt => (a * a + c(0.5)).sqrt(),
        Code::Tanh => a.tanh(),
        Code::Sigmoid => a.sigmoid(),
        Code::Scale => a * c(1.5) + c(-0.25),
        Code::Powf => (a * a + c(0.5)).powf(c(if ins.p.is_multiple_of(2) { 1.5 } else { -0.5 })),
        Code::SumAxis | Code::MeanAxis | Code::Softmax | Code::LogSoftmax | Code::Transpose if nd == 0 => a.tanh(),
        Code::SumAxis => a.sum_axis((ins.p % nd) as isize, ins.p & 8 != 0),
        Code::MeanAxis => a.mean_axis(-1 - (ins.p % nd) as isize, ins.p & 8 != 0),
        Code::Softmax => a.softmax((ins.p % nd) as isize),
        Code::LogSoftmax => a.log_softmax(-1),
        Code::Transpose => a.t() * c(0.9),
        Code::Reshape => a.reshape([a.numel()]),
        Code::MatMulT => {
            let a2 = if nd == 2 { a } else { a.reshape([1, a.numel()]) };
            a2.matmul(a2.t()) * c(0.3)
        }
        Code::UserCube => tape.apply(Cube(Mistake::None), &[a.tanh()]),
        Code::UserSwish => tape.apply(Swish(Mistake::None), &[a]),
        Code::UserSoftmax if nd == 0 => tape.apply(Swish(Mistake::None), &[a]),
        Code::UserSoftmax => tape.apply(RowSoftmax(Mistake::None), &[a]),
        Code::UserBilinear => tape.apply(Bilinear, &[a, partner(true)]),
        Code::UserAffine => {
            let a2 = if nd == 2 { a } else { a.reshape([1, a.numel()]) };
            tape.apply(Affine(Mistake::None), &[a2, (a2.t() * c(0.5)).tanh()])
        }
        Code::UserSquareFo => tape.apply(SquareFirstOrder, &[a]),
    }
}

/// Records a planted op (always at this one line).
fn plant<'t, T: Float>(tape: &'t Tape<T>, op: impl Op<T>, inputs: &[Var<'t, T>]) -> Var<'t, T> {
    PLANT_LINE.get_or_init(|| line!() + 1);
    tape.apply(op, inputs)
}

/// Runs instructions on a pool, appending each result.
fn run_instrs<'t, T: Float>(instrs: &[Instr], pool: &mut Vec<Var<'t, T>>) {
    for ins in instrs {
        let v = step(ins, pool);
        pool.push(v);
    }
}

/// A program's loss: every value it computed, summed with weights, so every node lies on a path.
fn run<'t, T: Float>(p: &Program, vars: &[Var<'t, T>]) -> (Var<'t, T>, Vec<Var<'t, T>>) {
    let tape = vars[0].tape();
    let mut pool = vars.to_vec();
    match p.segment {
        None => run_instrs(&p.instrs, &mut pool),
        Some((s, e)) => {
            run_instrs(&p.instrs[..s], &mut pool);
            let inner: Arc<[Instr]> = p.instrs[s..e].into();
            let n = pool.len();
            let out = tape.checkpoint(&pool, move |v| {
                let mut pool = v.to_vec();
                run_instrs(&inner, &mut pool);
                let mut acc = *pool.last().unwrap();
                for x in &pool[n..] {
                    acc = acc + x.sum() * T::from_f64(0.1);
                }
                acc
            });
            pool.push(out);
            run_instrs(&p.instrs[e..], &mut pool);
        }
    }
    let mut rng = Rng::new(p.seed ^ 0x1055);
    let mut loss = pool[0].sum() * T::from_f64(0.5);
    for x in &pool[1..] {
        loss = loss + x.sum() * T::from_f64(0.5 + rng.uniform());
    }
    (loss, pool)
}

fn program(rng: &mut Rng, mistake: Option<Mistake>) -> (Program, Option<usize>) {
    let (r, c) = (1 + rng.below(4), 1 + rng.below(5));
    let variants = [vec![r, c], vec![1, c], vec![c], vec![r, 1]];
    let inputs: Vec<Vec<usize>> = (0..1 + rng.below(3)).map(|_| variants[rng.below(4)].clone()).collect();
    let n = 3 + rng.below(10);
    let mut instrs: Vec<Instr> = (0..n)
        .map(|_| Instr {
            code: CODES[rng.below(CODES.len())],
            a: rng.below(64),
            b: rng.below(64),
            p: rng.below(256),
            mistake: Mistake::None,
        })
        .collect();
    let planted = mistake.map(|m| {
        let at = rng.below(n);
        instrs[at].mistake = m;
        at
    });
    let segment = (rng.below(3) == 0).then(|| {
        let s = rng.below(n);
        (s, s + 1 + rng.below(n - s))
    });
    let p = Program {
        inputs,
        instrs,
        segment,
        seed: rng.next_u64(),
    };
    (p, planted)
}

fn localize_program<T: Float>(
    p: &Program,
    opts: &LocalizeOptions<T>,
) -> (LocalizeReport, Vec<(usize, &'static Location<'static>)>) {
    let tape = Tape::<T>::new();
    let vars: Vec<Var<'_, T>> = p
        .inputs
        .iter()
        .enumerate()
        .map(|(k, s)| tape.var(Tensor::<f64>::rand_normal(s, 0.0, 1.0, p.seed.wrapping_add(k as u64)).cast()))
        .collect();
    let (loss, pool) = run(p, &vars);
    let nodes = pool.iter().map(|v| (v.index(), v.location())).collect();
    (localize(loss, opts), nodes)
}

fn planted_is_found<T: Float>(programs: usize, seed: u64) {
    let mut rng = Rng::new(seed);
    let opts = LocalizeOptions::<T>::default();
    let mut found_by_second_order = 0;
    let mut inside_checkpoints = 0;
    for n in 0..programs {
        let m = MISTAKES[n % MISTAKES.len()];
        let (p, at) = program(&mut rng, Some(m));
        let at = at.unwrap();
        let (report, pool) = localize_program::<T>(&p, &opts);
        let failures: Vec<_> = report.failures().collect();
        assert_eq!(failures.len(), 1, "program {n} ({m:?} at {at}), {p:?}:\n{report}");
        let f = failures[0];
        let line = *PLANT_LINE.get().unwrap();
        assert_eq!(
            f.location.line(),
            line,
            "program {n}: found at the wrong line:\n{report}"
        );
        assert_eq!(f.location.file(), file!());
        let inside = p.segment.is_some_and(|(s, e)| (s..e).contains(&at));
        assert_eq!(f.within.len(), inside as usize, "program {n}:\n{report}");
        if inside {
            inside_checkpoints += 1;
        } else {
            // The planted value's place in the pool (a checkpoint adds one value for its segment).
            let idx = match p.segment {
                Some((s, e)) if at >= e => p.inputs.len() + s + 1 + (at - e),
                _ => p.inputs.len() + at,
            };
            assert_eq!(f.node, pool[idx].0, "program {n}: found at the wrong node:\n{report}");
            assert_eq!(f.location, pool[idx].1);
        }
        if matches!(f.second_order, SecondOrder::Checked(ref c) if !c.passed) {
            found_by_second_order += 1;
            assert_eq!(m, Mistake::CubeConstant);
        }
    }
    assert_eq!(
        found_by_second_order,
        programs / MISTAKES.len(),
        "every constant-rule mistake by second order"
    );
    assert!(inside_checkpoints > 0);
}

#[test]
fn a_wrong_rule_planted_in_random_programs_is_found_at_its_node_every_time_f64() {
    planted_is_found::<f64>(400 * scale(), 16 + scale() as u64);
}

#[test]
fn a_wrong_rule_planted_in_random_programs_is_found_at_its_node_every_time_f32() {
    planted_is_found::<f32>(150 * scale(), 32 + scale() as u64);
}

fn correct_programs_pass<T: Float>(programs: usize, seed: u64, opts: &LocalizeOptions<T>) -> (usize, usize) {
    let mut rng = Rng::new(seed);
    let (mut checked, mut skipped) = (0, 0);
    for n in 0..programs {
        let (p, _) = program(&mut rng, None);
        let (report, _) = localize_program::<T>(&p, opts);
        assert!(report.passed(), "program {n}: {p:?}\n{report}");
        checked += report.checked;
        skipped += report.skipped_library;
    }
    (checked, skipped)
}

#[test]
fn random_programs_with_only_correct_rules_report_nothing() {
    let (n, s) = (scale(), scale() as u64);
    let (checked, skipped) = correct_programs_pass::<f64>(300 * n, 64 + s, &LocalizeOptions::default());
    assert!(checked > 300 && skipped > 300, "{checked} checked, {skipped} skipped");
    let (checked, skipped) =
        correct_programs_pass::<f64>(300 * n, 65 + s, &LocalizeOptions::default().include_library_ops());
    assert!(checked > 1000 && skipped == 0, "{checked} checked, {skipped} skipped");
    correct_programs_pass::<f32>(200 * n, 66 + s, &LocalizeOptions::default().include_library_ops());
}

// ---------------------------------------------------------------------------------------------
// The parts of a report.
// ---------------------------------------------------------------------------------------------

#[test]
fn the_learners_softmax_is_named_with_its_line_and_its_composed_twin() {
    let tape = Tape::<f64>::new();
    let x = tape.var(Tensor::rand_normal([6, 4], 0.0, 1.0, 1));
    let w = tape.var(Tensor::rand_normal([4, 5], 0.0, 1.0, 2));
    let hidden = tape.apply(Swish(Mistake::None), &[x.matmul(w)]);
    let h = tape.apply(RowSoftmax(Mistake::SoftmaxDiagonal), &[hidden]);
    let loss = -(h.log() * tape.constant(Tensor::rand_uniform([6, 5], 0.0, 1.0, 3))).mean();
    let opts = LocalizeOptions::default().twin("softmax_composed", |_: &RowSoftmax, v| v[0].softmax_composed(-1));
    let r = localize(loss, &opts);
    assert_eq!((r.checked, r.failures().count()), (2, 1), "{r}");
    let bad = r.first_failure().unwrap();
    assert_eq!(
        (bad.op, bad.node, bad.location),
        ("user_softmax", h.index(), h.location())
    );
    let first = bad.first_order.as_ref().unwrap();
    assert!(!first.passed && !first.projected && first.compared == 30, "{first}");
    let worst = first.worst.as_ref().unwrap();
    assert!((worst.rule - worst.other).abs() > 1e-3);
    let twin = bad.twin.as_ref().unwrap();
    assert!(!twin.passed && twin.forward_max_abs < 1e-15, "{r}");
    assert!(twin.vjp_max_abs > 1e-3);
    let text = r.to_string();
    for want in [
        "user_softmax",
        "[6, 5]",
        file!(),
        "first order: DISAGREES",
        "composed twin softmax_composed: DISAGREES",
    ] {
        assert!(text.contains(want), "{want:?} missing from:\n{text}");
    }
    // The swish before it passed, first and second order.
    let swish = &r.checks[0];
    assert!(
        swish.passed() && matches!(&swish.second_order, SecondOrder::Checked(c) if c.passed),
        "{swish}"
    );
    assert!(r.forward_runs > 2 * 30 && r.rule_runs >= 2);
}

#[test]
fn a_first_order_only_rule_is_declared_not_failed_and_a_constant_rule_fails_second_order() {
    let tape = Tape::<f64>::new();
    let x = tape.var(Tensor::rand_normal([3, 3], 0.0, 1.0, 4));
    let a = tape.apply(SquareFirstOrder, &[x]);
    let b = tape.apply(Cube(Mistake::CubeConstant), &[a.tanh()]);
    let r = localize(b.sum(), &LocalizeOptions::default());
    assert_eq!(r.checks.len(), 2);
    assert!(
        r.checks[0].passed() && r.checks[0].second_order == SecondOrder::FirstOrderOnly,
        "{r}"
    );
    let c = &r.checks[1];
    assert!(c.first_order.as_ref().unwrap().passed, "{r}");
    let SecondOrder::Checked(s) = &c.second_order else {
        panic!("{r}")
    };
    assert!(!s.passed, "{r}");
    assert!(r.to_string().contains("second order: DISAGREES"), "{r}");
    // With second order off, the constant rule passes (its first order is right).
    let mut opts = LocalizeOptions::default();
    opts.second_order = false;
    assert!(localize(b.sum(), &opts).passed());
}

#[test]
fn a_large_node_is_checked_by_projections_and_sampled_elements() {
    let tape = Tape::<f64>::new();
    let x = tape.var(Tensor::rand_normal([40, 40], 0.0, 1.0, 5));
    let y = tape.apply(Cube(Mistake::CubeFactor), &[x]);
    let z = tape.apply(Cube(Mistake::None), &[y.tanh()]);
    let r = localize(z.sum(), &LocalizeOptions::default());
    assert_eq!(r.failures().count(), 1, "{r}");
    let f = r.first_failure().unwrap().first_order.clone().unwrap();
    assert!(f.projected && f.compared == 3 + 16, "{f}");
    assert!(
        f.worst.unwrap().element.is_some(),
        "a failing sampled element is the one named"
    );
    assert!(r.checks[1].passed(), "{r}");
}

#[test]
fn library_ops_are_skipped_by_default_and_checked_with_their_twins_on_request() {
    let tape = Tape::<f64>::new();
    let x = tape.var(Tensor::rand_normal([4, 6], 0.0, 1.0, 6));
    let y = x.softmax(1) * x.log_softmax(0);
    let loss = y.cross_entropy(tapegrad::softmax::Target::Classes(&[1, 0, 5, 2])) + x.exp().sum();
    let r = localize(loss, &LocalizeOptions::default());
    assert_eq!((r.checked, r.skipped_library), (0, r.on_path), "{r}");
    let r = localize(loss, &LocalizeOptions::default().include_library_ops());
    assert!(r.passed() && r.checked == r.on_path, "{r}");
    let twins: Vec<&str> = r
        .checks
        .iter()
        .filter_map(|c| c.twin.as_ref().map(|t| t.name))
        .collect();
    assert_eq!(
        twins,
        ["softmax_composed", "log_softmax_composed", "cross_entropy_composed"]
    );
}

#[test]
fn a_node_inside_a_checkpoint_is_found_and_named_with_the_checkpoint() {
    let tape = Tape::<f64>::new();
    let x = tape.var(Tensor::rand_normal([3, 4], 0.0, 1.0, 7));
    let line = line!() + 2;
    let y = tape.checkpoint(&[x], |v| {
        v[0].tape().apply(Swish(Mistake::SwishProduct), &[v[0].tanh()]).exp()
    });
    let r = localize((y * y).sum(), &LocalizeOptions::default());
    let f = r.first_failure().expect("found");
    assert_eq!((f.op, f.location.line()), ("user_swish", line), "{r}");
    assert_eq!(f.within.len(), 1);
    assert_eq!((f.within[0].node, f.within[0].location), (y.index(), y.location()));
    assert!(r.to_string().contains("inside the checkpoint"), "{r}");
}

/// An op with no rule, and one whose forward depends on a counter.
struct NoRule;
impl<T: Float> Op<T> for NoRule {
    fn name(&self) -> &'static str {
        "no_rule"
    }
    fn forward(&self, x: &[&Tensor<T>]) -> Result<Tensor<T>> {
        Ok(x[0].clone())
    }
}
struct Drifting(Arc<AtomicU64>);
impl<T: Float> Op<T> for Drifting {
    fn name(&self) -> &'static str {
        "drifting"
    }
    fn forward(&self, x: &[&Tensor<T>]) -> Result<Tensor<T>> {
        let k = self.0.fetch_add(1, Ordering::Relaxed) as f64;
        Ok(x[0].map(|v| v + T::from_f64(k)))
    }
    fn vjp<V: Value<T>>(&self, cx: &VjpCtx<'_, V>, g: &V) -> Result<Cotangents<V>> {
        Ok(cx.grads([Some(g.clone())]))
    }
}

#[test]
fn a_missing_rule_and_a_forward_that_is_not_a_function_are_problems() {
    let tape = Tape::<f64>::new();
    let x = tape.var(Tensor::rand_normal([2, 2], 0.0, 1.0, 8));
    let a = tape.apply(NoRule, &[x]);
    let b = tape.apply(Drifting(Arc::new(AtomicU64::new(0))), &[x]);
    let r = localize((a + b).sum(), &LocalizeOptions::default());
    let f: Vec<_> = r.failures().collect();
    assert_eq!(f.len(), 2, "{r}");
    assert!(
        f[0].problem
            .as_ref()
            .unwrap()
            .contains("no vector-Jacobian product rule"),
        "{r}"
    );
    assert!(f[1].problem.as_ref().unwrap().contains("does not reproduce"), "{r}");
}

#[test]
fn every_library_op_a_program_records_is_skipped_by_default() {
    let tape = Tape::<f64>::new();
    let x = tape.var(Tensor::rand_normal([3, 4], 0.0, 1.0, 9));
    let y = tape.var(Tensor::rand_normal([4], 0.0, 1.0, 10));
    let mut vals = vec![
        x + y,
        x - y,
        x * y,
        x / (y * y + 1.0),
        -x,
        x.exp(),
        (x * x + 1.0).log(),
        (x * x + 1.0).sqrt(),
        x.tanh(),
        x.sigmoid(),
        x.relu(),
        x.abs(),
        x.sin(),
        x.cos(),
        x.square(),
        (x * x + 1.0).powf(1.5),
        x.add_scalar(1.0),
        x.rdiv_scalar(2.0) * 0.0 + x,
        x.sum(),
        x.mean(),
        x.sum_axis(0, true),
        x.mean_axis(1, false),
        x.max_axis(1, true),
        x.t(),
        x.transpose(0, 1),
        x.permute([1, 0]),
        x.reshape([12]),
        y.broadcast_to([3, 4]),
        x.sum_to([4]),
        x.matmul(x.t()),
        x.matmul_t(x, false, true),
        x.gt(tape.scalar(0.0)).select(x, y),
        x.softmax(1),
        x.log_softmax(0),
        x.cross_entropy(tapegrad::softmax::Target::Classes(&[0, 1, 2])),
    ];
    let mut loss = vals.pop().unwrap();
    for v in vals {
        loss = loss + v.sum();
    }
    let r = localize(loss, &LocalizeOptions::default());
    assert_eq!(
        r.checked,
        0,
        "library ops checked by default (not registered?):\n{r}\n{:?}",
        r.checks.iter().map(|c| c.op).collect::<Vec<_>>()
    );
    assert!(r.skipped_library > 40, "{r}");
    let all = localize(loss, &LocalizeOptions::default().include_library_ops());
    assert!(all.passed(), "{all}");
}
