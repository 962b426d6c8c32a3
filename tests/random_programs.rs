//! Randomized testing: random well-formed expression programs over random shapes and broadcasts.
//!
//! For every program: the gradient of `Σ c ⊙ out` (a fixed random `c`) matches central finite
//! differences in `f64`; the `f32` run agrees with the `f64` run; backward never fails; and an
//! operation whose operands do not broadcast fails with the documented shape error (a panic whose
//! message is a tapegrad `Error`), recording nothing. A fixed seed makes every CI run test the
//! same programs; on failure proptest shrinks the program and the panic prints the smallest
//! failing one as a readable listing (`Debug` for [`Program`]).
//!
//! `PROGRAMS` sets the count (default below); `PROGRAMS=20000 cargo test --release --test
//! random_programs` runs a longer campaign.

use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestError, TestRng, TestRunner};
use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use tapegrad::check::{GradcheckOptions, gradcheck};
use tapegrad::shape::broadcast_shapes;
use tapegrad::{Float, Tape, Tensor, Var};

/// Programs per CI run (fixed seed).
const DEFAULT_PROGRAMS: u32 = 3000;

/// The operations a program draws from. Domains are kept safe by construction (`log(a² + ½)`), so
/// every program is well-formed and differentiable almost everywhere.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Code {
    Add,
    Sub,
    Mul,
    Div,
    Exp,
    Log,
    Sqrt,
    Tanh,
    Sigmoid,
    Neg,
    Scalar,
    Powf,
    SumAxis,
    MeanAxis,
    MaxAxis,
    Permute,
    Reshape,
    BroadcastTo,
    MatMul,
    Select,
    SumAll,
}

const CODES: [Code; 21] = [
    Code::Add,
    Code::Sub,
    Code::Mul,
    Code::Div,
    Code::Exp,
    Code::Log,
    Code::Sqrt,
    Code::Tanh,
    Code::Sigmoid,
    Code::Neg,
    Code::Scalar,
    Code::Powf,
    Code::SumAxis,
    Code::MeanAxis,
    Code::MaxAxis,
    Code::Permute,
    Code::Reshape,
    Code::BroadcastTo,
    Code::MatMul,
    Code::Select,
    Code::SumAll,
];

/// One raw instruction: an op and operand/parameter choices, resolved against the values that
/// exist when it runs (so any raw list is a valid program, and shrinking keeps it valid).
#[derive(Clone, Copy, Debug)]
struct Instr {
    code: Code,
    a: u8,
    b: u8,
    p: u8,
}

/// A random program: input shapes (broadcast variants of one base shape), a seed for the input
/// values and the cotangent, and a list of instructions.
#[derive(Clone)]
struct Program {
    base: Vec<usize>,
    /// Per input: for each base axis, keep (0), set to 1 (1); and how many leading axes to drop.
    inputs: Vec<(Vec<bool>, usize)>,
    instrs: Vec<Instr>,
    seed: u64,
}

impl Program {
    fn input_shapes(&self) -> Vec<Vec<usize>> {
        self.inputs
            .iter()
            .map(|(ones, drop)| {
                let s: Vec<usize> = self
                    .base
                    .iter()
                    .zip(ones)
                    .map(|(&d, &one)| if one { 1 } else { d })
                    .collect();
                s[(*drop).min(s.len())..].to_vec()
            })
            .collect()
    }

    fn input_values(&self) -> Vec<Tensor<f64>> {
        self.input_shapes()
            .iter()
            .enumerate()
            .map(|(k, s)| Tensor::rand_normal(s, 0.0, 1.0, self.seed.wrapping_add(k as u64)))
            .collect()
    }
}

/// One resolved step, for printing and for checking the error path.
enum Step {
    Value(String),
    /// Two operands that do not broadcast: the op must fail with a shape error.
    Mismatch(String),
}

/// Runs the program on `vars` (recorded on one tape), returning the output and a trace.
fn run<'t, T: Float>(p: &Program, vars: &[Var<'t, T>]) -> (Var<'t, T>, Vec<Step>) {
    let tape = vars[0].tape();
    let mut vals: Vec<Var<'t, T>> = vars.to_vec();
    let mut trace = Vec::new();
    let c = |x: f64| T::from_f64(x);
    let name = |i: usize, n: usize| if i < n { format!("x{i}") } else { format!("v{i}") };
    let n_in = vars.len();
    for ins in &p.instrs {
        let (ia, ib) = (ins.a as usize % vals.len(), ins.b as usize % vals.len());
        let (a, b) = (vals[ia], vals[ib]);
        let (sa, sb) = (a.shape(), b.shape());
        let nd = sa.len();
        let bc = broadcast_shapes(&sa, &sb).is_some();
        let (na, nb) = (name(ia, n_in), name(ib, n_in));
        let binary = matches!(
            ins.code,
            Code::Add | Code::Sub | Code::Mul | Code::Div | Code::Select | Code::BroadcastTo
        );
        if binary && !bc {
            // The documented error: a shape error naming the op, recording nothing.
            let before = tape.len();
            let r = catch_unwind(AssertUnwindSafe(|| a + b));
            let msg = match r {
                Ok(_) => panic!("{na} + {nb} with shapes {sa:?}, {sb:?} did not fail"),
                Err(e) => e.downcast_ref::<String>().cloned().unwrap_or_default(),
            };
            assert!(
                msg.starts_with("tapegrad: add:") && msg.contains("do not broadcast"),
                "unexpected panic: {msg}"
            );
            assert_eq!(tape.len(), before, "a failed op recorded something");
            trace.push(Step::Mismatch(format!("{na} + {nb}: {sa:?} vs {sb:?} -> shape error")));
            continue;
        }
        let pm = ins.p as usize;
        let (v, desc) = match ins.code {
            Code::Add => (a + b, format!("{na} + {nb}")),
            Code::Sub => (a - b, format!("{na} - {nb}")),
            Code::Mul => (a * b, format!("{na} * {nb}")),
            Code::Div => (a / (b * b + c(0.5)), format!("{na} / ({nb}² + 0.5)")),
            Code::Exp => (a.tanh().exp(), format!("exp(tanh({na}))")),
            Code::Log => ((a * a + c(0.5)).log(), format!("log({na}² + 0.5)")),
            Code::Sqrt => ((a * a + c(0.5)).sqrt(), format!("sqrt({na}² + 0.5)")),
            Code::Tanh => (a.tanh(), format!("tanh({na})")),
            Code::Sigmoid => (a.sigmoid(), format!("sigmoid({na})")),
            Code::Neg => (-a, format!("-{na}")),
            Code::Scalar => match pm % 3 {
                0 => (a * c(1.5) + c(-0.25), format!("{na} * 1.5 - 0.25")),
                1 => ((a * a + c(1.0)).rdiv_scalar(c(2.0)), format!("2 / ({na}² + 1)")),
                _ => (a / c(4.0), format!("{na} / 4")),
            },
            Code::Powf => {
                let e = if pm.is_multiple_of(2) { 1.5 } else { -0.5 };
                ((a * a + c(0.5)).powf(c(e)), format!("({na}² + 0.5)^{e}"))
            }
            Code::SumAxis | Code::MeanAxis | Code::MaxAxis if nd == 0 => (a.tanh(), format!("tanh({na})")),
            Code::SumAxis => {
                let (ax, keep) = ((pm % nd) as isize, pm & 8 != 0);
                (a.sum_axis(ax, keep), format!("sum_axis({na}, {ax}, keepdim={keep})"))
            }
            Code::MeanAxis => {
                let (ax, keep) = (-1 - (pm % nd) as isize, pm & 8 != 0);
                (a.mean_axis(ax, keep), format!("mean_axis({na}, {ax}, keepdim={keep})"))
            }
            Code::MaxAxis => {
                let (ax, keep) = ((pm % nd) as isize, pm & 8 != 0);
                (a.max_axis(ax, keep), format!("max_axis({na}, {ax}, keepdim={keep})"))
            }
            Code::Permute if nd >= 2 => {
                let mut perm: Vec<usize> = (0..nd).collect();
                perm.rotate_left(1 + pm % (nd - 1));
                if pm & 16 != 0 {
                    perm.swap(0, nd - 1);
                }
                (a.permute(&perm), format!("permute({na}, {perm:?})"))
            }
            Code::Permute => (a.sigmoid(), format!("sigmoid({na})")),
            Code::Reshape => {
                let n = a.numel();
                let s: Vec<usize> = if pm.is_multiple_of(2) { vec![n] } else { vec![1, n] };
                (a.reshape(&s), format!("reshape({na}, {s:?})"))
            }
            Code::BroadcastTo => {
                let s = broadcast_shapes(&sa, &sb).unwrap().to_vec();
                (a.broadcast_to(&s), format!("broadcast_to({na}, {s:?})"))
            }
            Code::MatMul if nd >= 2 => {
                let ok_b = sb.len() >= 2
                    && sb[sb.len() - 1] == sa[nd - 1]
                    && broadcast_shapes(&sa[..nd - 2], &sb[..sb.len() - 2]).is_some();
                if ok_b {
                    (a.matmul_t(b, false, true), format!("{na} @ {nb}ᵀ"))
                } else {
                    (a.t().matmul(a), format!("{na}ᵀ @ {na}"))
                }
            }
            Code::MatMul => (a * a, format!("{na} * {na}")),
            Code::Select => {
                let m = a.detach().gt(b.detach());
                (m.select(a * b, b), format!("where({na} > {nb}, {na} * {nb}, {nb})"))
            }
            Code::SumAll => (a.sum(), format!("sum({na})")),
        };
        trace.push(Step::Value(format!(
            "v{} = {desc}  {:?}",
            vals.len(),
            v.shape().as_slice()
        )));
        vals.push(v);
    }
    (*vals.last().unwrap(), trace)
}

/// The loss: `Σ c ⊙ out` with a fixed random `c` (a non-uniform cotangent).
fn loss<'t, T: Float>(p: &Program, out: Var<'t, T>) -> Var<'t, T> {
    let cot = Tensor::<f64>::rand_uniform(out.shape(), 0.5, 1.5, p.seed ^ 0xC0);
    (out * out.tape().constant(cot.cast())).sum()
}

impl fmt::Debug for Program {
    /// The program as a listing: inputs with shapes, one line per step, the loss.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "Program (value seed {}, base shape {:?}) {{", self.seed, self.base)?;
        for (k, s) in self.input_shapes().iter().enumerate() {
            writeln!(f, "    x{k}: var {s:?}")?;
        }
        let tape = Tape::<f64>::new();
        let vars: Vec<Var<'_, f64>> = self.input_values().into_iter().map(|x| tape.var(x)).collect();
        let r = catch_unwind(AssertUnwindSafe(|| run(self, &vars).1));
        match r {
            Ok(trace) => {
                for s in trace {
                    match s {
                        Step::Value(s) | Step::Mismatch(s) => writeln!(f, "    {s}")?,
                    }
                }
                writeln!(f, "    loss = sum(last * c), c ~ U(0.5, 1.5)")?;
            }
            Err(_) => writeln!(f, "    (the program panicked while building)")?,
        }
        write!(f, "}}")
    }
}

fn program() -> impl Strategy<Value = Program> {
    let base = prop::collection::vec(1usize..=3, 0..=3);
    base.prop_flat_map(|base| {
        let nd = base.len();
        let input = (prop::collection::vec(prop::bool::weighted(0.25), nd), 0..=nd.min(1));
        let instr = (0..CODES.len(), any::<u8>(), any::<u8>(), any::<u8>()).prop_map(|(c, a, b, p)| Instr {
            code: CODES[c],
            a,
            b,
            p,
        });
        (
            Just(base),
            prop::collection::vec(input, 1..=3),
            prop::collection::vec(instr, 1..=8),
            any::<u64>(),
        )
            .prop_map(|(base, inputs, instrs, seed)| Program {
                base,
                inputs,
                instrs,
                seed,
            })
    })
}

thread_local! {
    static CURRENT: std::cell::RefCell<Option<Program>> = const { std::cell::RefCell::new(None) };
}

fn program_loss<'t>(v: &[Var<'t, f64>]) -> Var<'t, f64> {
    let p = CURRENT.with(|c| c.borrow().clone()).expect("no current program");
    loss(&p, run(&p, v).0)
}

fn check(p: &Program) -> Result<(), TestCaseError> {
    let inputs = p.input_values();
    // 1. Gradients (f64) against central finite differences.
    let opts = GradcheckOptions {
        atol: 1e-5,
        rtol: 1e-4,
        ..GradcheckOptions::default()
    };
    // gradcheck takes a function of the inputs only: the program rides in a thread-local.
    CURRENT.with(|c| *c.borrow_mut() = Some(p.clone()));
    let r = gradcheck(program_loss, &inputs, &opts);
    prop_assert!(r.passed, "{r}");
    // 2. Backward with the try_ API succeeds; f32 agrees with f64.
    let t64 = Tape::<f64>::new();
    let v64: Vec<Var<'_, f64>> = inputs.iter().map(|x| t64.var(x.clone())).collect();
    let l64 = loss(p, run(p, &v64).0);
    let g64 = l64.try_backward().map_err(|e| TestCaseError::fail(e.to_string()))?;
    let t32 = Tape::<f32>::new();
    let v32: Vec<Var<'_, f32>> = inputs.iter().map(|x| t32.var(x.cast())).collect();
    let l32 = loss(p, run(p, &v32).0);
    let g32 = l32.try_backward().map_err(|e| TestCaseError::fail(e.to_string()))?;
    let (y64, y32) = (l64.item(), l32.item() as f64);
    prop_assert!(
        (y64 - y32).abs() <= 1e-3 * (1.0 + y64.abs()),
        "f32 loss {y32} vs f64 {y64}"
    );
    for (k, (a, b)) in v64.iter().zip(&v32).enumerate() {
        let (ga, gb) = (&g64[*a], g32[*b].cast::<f64>());
        let scale = 1.0 + ga.data().iter().fold(0.0f64, |m, x| m.max(x.abs()));
        let d = gb.max_abs_diff(ga);
        prop_assert!(
            d <= 2e-3 * scale,
            "input x{k}: f32 gradient differs by {d} (scale {scale})"
        );
    }
    Ok(())
}

#[test]
fn random_programs_match_finite_differences_and_f32() {
    let cases = std::env::var("PROGRAMS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(DEFAULT_PROGRAMS);
    let config = Config {
        cases,
        failure_persistence: None,
        max_shrink_iters: 2000,
        ..Config::default()
    };
    let mut runner = TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &[42; 32]));
    let started = std::time::Instant::now();
    match runner.run(&program(), |p| check(&p)) {
        Ok(()) => eprintln!("{cases} random programs passed in {:.1?}", started.elapsed()),
        Err(TestError::Fail(why, p)) => panic!("smallest failing program:\n{p:?}\nreason: {why}"),
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn debug_prints_a_readable_listing() {
    let p = Program {
        base: vec![2, 3],
        inputs: vec![(vec![false, false], 0), (vec![false, false], 1)],
        instrs: vec![
            Instr {
                code: Code::Add,
                a: 0,
                b: 1,
                p: 0,
            },
            Instr {
                code: Code::Exp,
                a: 2,
                b: 0,
                p: 0,
            },
        ],
        seed: 1,
    };
    let s = format!("{p:?}");
    assert!(s.contains("x0: var [2, 3]") && s.contains("x1: var [3]"), "{s}");
    assert!(
        s.contains("v2 = x0 + x1  [2, 3]") && s.contains("v3 = exp(tanh(v2))"),
        "{s}"
    );
    // And the checks pass on it.
    check(&p).unwrap();
}
