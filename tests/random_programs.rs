//! Randomized testing: random well-formed programs whose ops are drawn from the op registry.
//!
//! A program is a list of instructions, each naming a registry entry that has a
//! [recipe](tapegrad::ops::Recipe) and carrying a few bytes of choices. The instructions run in
//! order on a pool of values (the inputs, then every result so far): the entry's recipe, in
//! **tame** mode, picks operands that fit, axes in range and values mapped into the op's domain,
//! or declines (`None`), and the instruction is skipped. So an op is in these programs the moment
//! it is registered with a recipe, with no change here.
//!
//! For every program: the gradient of `Σ c ⊙ out` (a fixed random `c`, `out` the last value)
//! matches central finite differences in `f64`; the `f32` run agrees with the `f64` run; backward
//! with the `try_` API never fails; and an `add` of two values of the pool that do not broadcast
//! fails with the documented shape error, recording nothing. A fixed seed makes every CI run test
//! the same programs; on failure proptest shrinks the program and the panic prints the smallest
//! failing one as a readable listing (`Debug` for [`Program`]: op names, operands and shapes).
//!
//! A program is *resolved* once, in `f64` on its input values: which instructions ran, and which
//! results joined the pool. A result that is not finite or exceeds [`BOUND`] in magnitude (`exp`
//! of `exp` of …) is left out of the pool — finite differences and `f32` say nothing useful about
//! it. Every other run (the finite differences' perturbed inputs, the `f32` run) replays the
//! resolved instructions, so all runs record the same ops on the same operands.
//!
//! `PROGRAMS` sets the count (default below); `PROGRAMS=20000 cargo test --release --test
//! random_programs` runs a longer campaign.

use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestError, TestRng, TestRunner};
use std::collections::HashMap;
use std::fmt;
use std::sync::OnceLock;
use tapegrad::check::{GradcheckOptions, gradcheck};
use tapegrad::debug::graph::NodeKind;
use tapegrad::ops::{Choice, Recipe, RecipeFn};
use tapegrad::shape::broadcast_shapes;
use tapegrad::{ErrorKind, Float, OpInfo, Registry, Tape, Tensor, Var, attempt};

/// Programs per CI run (fixed seed).
const DEFAULT_PROGRAMS: u32 = 3000;

/// Choice bytes per instruction (operands, axes, constants, signs for values mapped away from 0).
const CHOICE_BYTES: usize = 12;

/// Results larger than this in magnitude are left out of the pool (see the module docs).
const BOUND: f64 = 1e3;

/// The registry entries programs draw from: every one with a recipe, in registration order.
fn entries() -> &'static [&'static OpInfo] {
    static E: OnceLock<Vec<&'static OpInfo>> = OnceLock::new();
    E.get_or_init(|| Registry::builtin().iter().filter(|i| i.recipe.is_some()).collect())
}

/// One raw instruction: an entry (an index into [`entries`]) and its choice bytes, resolved
/// against the pool when it runs (so any raw list is a valid program, and shrinking keeps it
/// valid).
#[derive(Clone, Copy, Debug)]
struct Instr {
    op: usize,
    choices: [u8; CHOICE_BYTES],
}

impl Instr {
    fn info(&self) -> &'static OpInfo {
        entries()[self.op % entries().len()]
    }
}

/// A random program: input shapes (broadcast variants of one base shape), a seed for the input
/// values and the cotangent, and a list of instructions.
#[derive(Clone)]
struct Program {
    base: Vec<usize>,
    /// Per input: for each base axis, keep (false) or set to 1 (true); and how many leading axes
    /// to drop.
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

/// A program after its `f64` run on its input values: the instructions whose results joined the
/// pool, in order, and a listing of every step.
struct Resolved {
    kept: Vec<usize>,
    listing: Vec<String>,
}

/// The name of pool value `i` (`x0…` for inputs, `v…` for results).
fn pool_name(i: usize, n_inputs: usize) -> String {
    if i < n_inputs { format!("x{i}") } else { format!("v{i}") }
}

/// Node `i` of the tape as an expression: pool values by name, nodes recorded by the current
/// step (from `first` on) as `op(inputs; params)`, constants as `const[shape]`.
fn render(
    nodes: &[tapegrad::debug::graph::NodeInfo],
    names: &HashMap<usize, String>,
    first: usize,
    i: usize,
) -> String {
    if let Some(name) = names.get(&i) {
        return name.clone();
    }
    let n = &nodes[i];
    match n.kind {
        NodeKind::Detached { source } => format!("detach({})", render(nodes, names, first, source)),
        NodeKind::Constant => format!("const{:?}", n.shape),
        _ if i < first => format!("#{i}"),
        _ => {
            let args: Vec<String> = n.inputs.iter().map(|&j| render(nodes, names, first, j)).collect();
            let params = if n.params.is_empty() {
                String::new()
            } else {
                format!("; {}", n.params)
            };
            format!("{}({}{params})", n.op, args.join(", "))
        }
    }
}

/// Checks the error path on the pair of pool values the instruction's first two choice bytes
/// name, when they do not broadcast: `a + b` must fail with the documented shape error naming
/// `add`, and record nothing.
fn check_mismatch<'t>(ins: &Instr, pool: &[Var<'t, f64>], names: &[String]) -> Option<String> {
    let (i, j) = (
        ins.choices[0] as usize % pool.len(),
        ins.choices[1] as usize % pool.len(),
    );
    let (a, b) = (pool[i], pool[j]);
    let (sa, sb) = (a.shape(), b.shape());
    if broadcast_shapes(&sa, &sb).is_some() {
        return None;
    }
    let tape = a.tape();
    let before = tape.len();
    let e = match attempt(|| a + b) {
        Ok(_) => panic!("{} + {} with shapes {sa:?}, {sb:?} did not fail", names[i], names[j]),
        Err(e) => e,
    };
    assert_eq!(e.kind(), ErrorKind::Shape, "{e}");
    let msg = e.to_string();
    assert!(
        msg.starts_with("tapegrad: add:") && msg.contains("do not broadcast"),
        "unexpected error: {msg}"
    );
    assert_eq!(tape.len(), before, "a failed op recorded something");
    Some(format!(
        "{} + {}: {:?} vs {:?} -> shape error",
        names[i],
        names[j],
        sa.as_slice(),
        sb.as_slice()
    ))
}

/// Runs the program once in `f64` on its input values, deciding which results join the pool,
/// checking the mismatched-broadcast error along the way, and listing every step.
fn resolve(p: &Program) -> Resolved {
    let tape = Tape::<f64>::new();
    let mut pool: Vec<Var<'_, f64>> = p.input_values().into_iter().map(|x| tape.var(x)).collect();
    let n_inputs = pool.len();
    let mut names: Vec<String> = (0..n_inputs).map(|i| pool_name(i, n_inputs)).collect();
    let mut by_node: HashMap<usize, String> = pool.iter().zip(&names).map(|(v, n)| (v.index(), n.clone())).collect();
    let (mut kept, mut listing) = (Vec::new(), Vec::new());
    for (k, ins) in p.instrs.iter().enumerate() {
        if let Some(line) = check_mismatch(ins, &pool, &names) {
            listing.push(line);
        }
        let info = ins.info();
        let recipe = info.recipe.expect("entries have recipes");
        let first = tape.len();
        let Some(v) = (recipe.f64)(&mut Choice::new(&ins.choices, false), &pool) else {
            listing.push(format!("({}: no value of the pool fits, skipped)", info.name));
            continue;
        };
        let nodes = tape.nodes_info();
        let expr = render(&nodes, &by_node, first, v.index());
        let shape = v.shape();
        let value = v.value();
        if !value.data().iter().all(|x| x.is_finite() && x.abs() <= BOUND) {
            listing.push(format!("({expr}  {:?}: beyond ±{BOUND:e}, left out)", shape.as_slice()));
            continue;
        }
        let name = pool_name(pool.len(), n_inputs);
        listing.push(format!("{name} = {expr}  {:?}", shape.as_slice()));
        by_node.entry(v.index()).or_insert_with(|| name.clone());
        names.push(name);
        pool.push(v);
        kept.push(k);
    }
    Resolved { kept, listing }
}

/// Replays the resolved instructions on `vars` (recorded on one tape) with the recipes for `T`,
/// returning the last value of the pool.
fn run<'t, T: Float>(
    p: &Program,
    kept: &[usize],
    vars: &[Var<'t, T>],
    recipe: fn(&Recipe) -> RecipeFn<T>,
) -> Var<'t, T> {
    let mut pool = vars.to_vec();
    for &k in kept {
        let ins = &p.instrs[k];
        let info = ins.info();
        let call = recipe(info.recipe.as_ref().expect("entries have recipes"));
        let v = call(&mut Choice::new(&ins.choices, false), &pool).unwrap_or_else(|| {
            panic!(
                "{}: the recipe declined on a replay but not when the program was resolved \
                 (a recipe's decisions must depend on shapes and choices only)",
                info.name
            )
        });
        pool.push(v);
    }
    *pool.last().unwrap()
}

/// The loss: `Σ c ⊙ out` with a fixed random `c` (a non-uniform cotangent).
fn loss<'t, T: Float>(p: &Program, out: Var<'t, T>) -> Var<'t, T> {
    let cot = Tensor::<f64>::rand_uniform(out.shape(), 0.5, 1.5, p.seed ^ 0xC0);
    (out * out.tape().constant(cot.cast())).sum()
}

impl fmt::Debug for Program {
    /// The program as a listing: inputs with shapes, one line per step (the op calls each recipe
    /// made, with the shape of the result), the loss.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "Program (value seed {}, base shape {:?}) {{", self.seed, self.base)?;
        for (k, s) in self.input_shapes().iter().enumerate() {
            writeln!(f, "    x{k}: var {s:?}")?;
        }
        match std::panic::catch_unwind(|| resolve(self)) {
            Ok(r) => {
                for line in r.listing {
                    writeln!(f, "    {line}")?;
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
        let instr = (0..entries().len(), any::<[u8; CHOICE_BYTES]>()).prop_map(|(op, choices)| Instr { op, choices });
        (
            Just(base),
            prop::collection::vec(input, 1..=3),
            prop::collection::vec(instr, 1..=12),
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
    static CURRENT: std::cell::RefCell<Option<(Program, Vec<usize>)>> = const { std::cell::RefCell::new(None) };
}

fn program_loss<'t>(v: &[Var<'t, f64>]) -> Var<'t, f64> {
    let (p, kept) = CURRENT.with(|c| c.borrow().clone()).expect("no current program");
    loss(&p, run(&p, &kept, v, |r| r.f64))
}

fn check(p: &Program) -> Result<(), TestCaseError> {
    let inputs = p.input_values();
    let kept = resolve(p).kept;
    // 1. Gradients (f64) against central finite differences.
    let opts = GradcheckOptions {
        atol: 1e-5,
        rtol: 1e-4,
        ..GradcheckOptions::default()
    };
    // gradcheck takes a function of the inputs only: the program rides in a thread-local.
    CURRENT.with(|c| *c.borrow_mut() = Some((p.clone(), kept.clone())));
    let r = gradcheck(program_loss, &inputs, &opts);
    prop_assert!(r.passed, "{r}");
    // 2. Backward with the try_ API succeeds; f32 agrees with f64.
    let t64 = Tape::<f64>::new();
    let v64: Vec<Var<'_, f64>> = inputs.iter().map(|x| t64.var(x.clone())).collect();
    let l64 = loss(p, run(p, &kept, &v64, |r| r.f64));
    let g64 = l64.try_backward().map_err(|e| TestCaseError::fail(e.to_string()))?;
    let t32 = Tape::<f32>::new();
    let v32: Vec<Var<'_, f32>> = inputs.iter().map(|x| t32.var(x.cast())).collect();
    let l32 = loss(p, run(p, &kept, &v32, |r| r.f32));
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
    // 3. Compiled (traced once, replayed on other inputs) agrees with eager to 1e-12 relative
    //    (normwise: to the largest finite magnitude of the eager tensor): the compiled backward
    //    is recorded from the rules and fused, so it runs the ops' own kernels where the eager
    //    rule runs their scalar forms, and fused sums may add in another order. NaN stays NaN,
    //    an infinity the same infinity.
    let refs: Vec<&Tensor<f64>> = inputs.iter().collect();
    let mut step = tapegrad::compile::Compiled::trace(&refs, &[], |_, v, _| loss(p, run(p, &kept, v, |r| r.f64)))
        .map_err(|e| TestCaseError::fail(format!("compile: {e}")))?;
    let moved: Vec<Tensor<f64>> = inputs.iter().map(|x| x.map(|v| v * 0.9 + 0.05)).collect();
    let refs: Vec<&Tensor<f64>> = moved.iter().collect();
    let out = step
        .run(&refs, &[])
        .map_err(|e| TestCaseError::fail(format!("compiled run: {e}")))?;
    let te = Tape::<f64>::new();
    let ve: Vec<Var<'_, f64>> = moved.iter().map(|x| te.var(x.clone())).collect();
    let le = loss(p, run(p, &kept, &ve, |r| r.f64));
    let close = |a: f64, b: f64, scale: f64| {
        a.to_bits() == b.to_bits()
            || (a.is_nan() && b.is_nan())
            || (a.is_finite() && b.is_finite() && (a - b).abs() <= 1e-12 * (b.abs().max(scale) + f64::MIN_POSITIVE))
    };
    let scale_of = |t: &Tensor<f64>| {
        t.data()
            .iter()
            .map(|v| v.abs())
            .filter(|v| v.is_finite())
            .fold(0.0, f64::max)
    };
    prop_assert!(
        close(out.loss.item(), le.item(), le.item().abs()),
        "compiled loss {} vs eager {}",
        out.loss.item(),
        le.item()
    );
    let ge: Vec<Tensor<f64>> = if le.requires_grad() {
        te.grad(&[le], &[Tensor::scalar(1.0)], &ve)
    } else {
        moved.iter().map(|x| Tensor::zeros(x.shape())).collect()
    };
    for (k, (a, b)) in out.grads.iter().zip(&ge).enumerate() {
        let scale = scale_of(b);
        let bad = a.data().iter().zip(b.data()).position(|(x, y)| !close(*x, *y, scale));
        prop_assert!(
            bad.is_none(),
            "input x{k}: compiled gradient differs from eager at {bad:?}: {:?} vs {:?}",
            bad.map(|i| a.data()[i]),
            bad.map(|i| b.data()[i])
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
        Ok(()) => eprintln!(
            "{cases} random programs over {} registry ops passed in {:.1?}",
            entries().len(),
            started.elapsed()
        ),
        Err(TestError::Fail(why, p)) => panic!("smallest failing program:\n{p:?}\nreason: {why}"),
        Err(e) => panic!("{e}"),
    }
}

/// The index of `name` among the entries programs draw from.
fn op(name: &str) -> usize {
    entries()
        .iter()
        .position(|i| i.name == name)
        .unwrap_or_else(|| panic!("{name} has no recipe"))
}

#[test]
fn every_op_with_a_recipe_is_drawn() {
    // Every entry with a recipe is a possible instruction, and the recipes of the ops of a
    // simple 2-D pool make calls (the registry test checks each recipe on its own).
    let names: Vec<&str> = entries().iter().map(|i| i.name).collect();
    for name in ["add", "exp", "max", "matmul_nt", "select", "cross_entropy", "reshape"] {
        assert!(names.contains(&name), "{name} is not drawn: {names:?}");
    }
    assert!(!names.iter().any(|n| n.ends_with("_backward")), "{names:?}");
}

#[test]
fn debug_prints_a_readable_listing() {
    let mut choices = [0u8; CHOICE_BYTES];
    choices[1] = 1;
    let p = Program {
        base: vec![2, 3],
        inputs: vec![(vec![false, false], 0), (vec![false, false], 1)],
        instrs: vec![
            Instr { op: op("add"), choices },
            Instr {
                op: op("exp"),
                choices: [2; CHOICE_BYTES],
            },
            // v3, no keepdim, not over everything: over axis 1.
            Instr {
                op: op("sum"),
                choices: [3, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0],
            },
            Instr {
                op: op("add"),
                choices: [4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            },
        ],
        seed: 1,
    };
    let s = format!("{p:?}");
    assert!(s.contains("x0: var [2, 3]") && s.contains("x1: var [3]"), "{s}");
    assert!(
        s.contains("v2 = add(x0, x1)  [2, 3]") && s.contains("v3 = exp(v2)  [2, 3]"),
        "{s}"
    );
    // sum over axis 1 of v3 ([2]), then the mismatch check: v4 [2] + x0 [2, 3] fails.
    assert!(s.contains("v4 = sum(v3; axis=1)  [2]"), "{s}");
    assert!(s.contains("v4 + x0: [2] vs [2, 3] -> shape error"), "{s}");
    // And the checks pass on it.
    check(&p).unwrap();
}
