//! Multiclass logistic regression (softmax + cross-entropy, L2-regularised) fitted two ways:
//! Newton's method, solving each Newton system `H p = −∇L` by conjugate gradients that only ever
//! touch the Hessian through Hessian-vector products (reverse over reverse, never forming `H`),
//! and plain gradient descent with the step `1/L` from a bound on the curvature.
//!
//! Run: `cargo run --release --example newton`

use tapegrad::functional::{value_and_grad, with_hessian};
use tapegrad::rng::Rng;
use tapegrad::{Tape, Tensor, Var};

const N: usize = 300; // samples
const D: usize = 4; // features (a constant-1 column is appended for the bias)
const C: usize = 3; // classes
const LAMBDA: f64 = 1e-2; // L2 strength: makes the loss strongly convex, H positive definite
const TOL: f64 = 1e-6; // stop when ‖∇L‖ < TOL

struct Data {
    x: Tensor<f64>, // [N, D+1]
    t: Tensor<f64>, // [N, C] one-hot
}

/// Three overlapping Gaussian clouds with features on different scales (an ill-conditioned
/// problem, as real features usually are).
fn make_data(seed: u64) -> Data {
    let mut rng = Rng::new(seed);
    let scale = [2.0, 1.0, 0.5, 0.25];
    let means: Vec<[f64; D]> = (0..C)
        .map(|_| std::array::from_fn(|j| rng.normal() * scale[j]))
        .collect();
    let mut x = Vec::with_capacity(N * (D + 1));
    let mut t = vec![0.0; N * C];
    for i in 0..N {
        let k = rng.below(C);
        t[i * C + k] = 1.0;
        for j in 0..D {
            x.push(means[k][j] + rng.normal() * scale[j]);
        }
        x.push(1.0);
    }
    Data {
        x: Tensor::from_vec(x, [N, D + 1]),
        t: Tensor::from_vec(t, [N, C]),
    }
}

/// Mean cross-entropy of softmax(X W) against the one-hot targets, plus (λ/2)‖W‖².
/// The log-softmax is composed from primitives: z − (m + log Σ exp(z − m)), m detached.
fn loss<'t>(w: Var<'t, f64>, d: &Data) -> Var<'t, f64> {
    let tape = w.tape();
    let (x, t) = (tape.constant(d.x.clone()), tape.constant(d.t.clone()));
    let z = x.matmul(w);
    let m = z.max_axis(1, true).detach();
    let lse = (z - m).exp().sum_axis(1, true).log() + m;
    let nll = ((lse - z) * t).sum_axis(1, false).mean();
    nll + (w * w).sum().mul_scalar(0.5 * LAMBDA)
}

fn eval_loss(w: &Tensor<f64>, d: &Data) -> f64 {
    let tape = Tape::new();
    loss(tape.constant(w.clone()), d).item()
}

fn dot(a: &Tensor<f64>, b: &Tensor<f64>) -> f64 {
    a.data().iter().zip(b.data()).map(|(x, y)| x * y).sum()
}

fn axpy(a: f64, x: &Tensor<f64>, y: &Tensor<f64>) -> Tensor<f64> {
    y.zip_map(x, |y, x| y + a * x)
}

/// Solves `H p = b` by conjugate gradients with `H` available only as `hvp`. Returns `p` and the
/// number of products used.
fn cg(hvp: impl Fn(&Tensor<f64>) -> Tensor<f64>, b: &Tensor<f64>, rtol: f64, max_iter: usize) -> (Tensor<f64>, usize) {
    let mut p = Tensor::zeros(b.shape());
    let mut r = b.clone();
    let mut dir = r.clone();
    let mut rr = dot(&r, &r);
    let stop = rtol * rtol * rr;
    for k in 0..max_iter {
        if rr <= stop {
            return (p, k);
        }
        let hd = hvp(&dir);
        let alpha = rr / dot(&dir, &hd);
        p = axpy(alpha, &dir, &p);
        r = axpy(-alpha, &hd, &r);
        let rr_new = dot(&r, &r);
        dir = axpy(rr_new / rr, &dir, &r);
        rr = rr_new;
    }
    (p, max_iter)
}

/// `λ_max(XᵀX/N)` by power iteration on plain tensors: with `diag(y) − y yᵀ ≼ ½ I`, the loss's
/// curvature is at most `L = ½ λ_max(XᵀX/N) + λ`, so gradient descent with step `1/L` is safe.
fn curvature_bound(d: &Data) -> f64 {
    let x = &d.x;
    let cols = D + 1;
    let mut v = vec![1.0; cols];
    let mut lam = 0.0;
    for _ in 0..200 {
        let xv: Vec<f64> = (0..N)
            .map(|i| (0..cols).map(|j| x.data()[i * cols + j] * v[j]).sum())
            .collect();
        let w: Vec<f64> = (0..cols)
            .map(|j| (0..N).map(|i| x.data()[i * cols + j] * xv[i]).sum::<f64>() / N as f64)
            .collect();
        lam = w.iter().map(|a| a * a).sum::<f64>().sqrt();
        v = w.iter().map(|a| a / lam).collect();
    }
    0.5 * lam + LAMBDA
}

struct Step {
    loss: f64,
    grad_norm: f64,
    hvps: usize,
}

fn newton(d: &Data, max_steps: usize) -> Vec<Step> {
    let mut w = Tensor::zeros([D + 1, C]);
    let mut trace = Vec::new();
    for _ in 0..=max_steps {
        let (l, g, p, k) = with_hessian(
            |w| loss(w, d),
            &w,
            |h| {
                let g = h.grad();
                let gn = dot(&g, &g).sqrt();
                if gn < TOL {
                    return (h.value(), g, None, 0);
                }
                // Inexact Newton: solve to a relative residual that shrinks with ‖g‖.
                let rtol = gn.sqrt().min(0.5);
                let (p, k) = cg(|v| h.hvp(v), &g.map(|a| -a), rtol, 10 * (D + 1) * C);
                (h.value(), g, Some(p), k)
            },
        );
        trace.push(Step {
            loss: l,
            grad_norm: dot(&g, &g).sqrt(),
            hvps: k,
        });
        let Some(p) = p else { break };
        // Backtracking (Armijo) line search; the full step is almost always accepted.
        let slope = dot(&g, &p);
        let mut s = 1.0;
        while eval_loss(&axpy(s, &p, &w), d) > l + 1e-4 * s * slope && s > 1e-8 {
            s *= 0.5;
        }
        w = axpy(s, &p, &w);
    }
    trace
}

fn gradient_descent(d: &Data, lr: f64, max_steps: usize) -> Vec<Step> {
    let mut w = Tensor::zeros([D + 1, C]);
    let mut trace = Vec::new();
    for _ in 0..=max_steps {
        let (l, g) = value_and_grad(|w| loss(w, d), &w);
        let gn = dot(&g, &g).sqrt();
        trace.push(Step {
            loss: l,
            grad_norm: gn,
            hvps: 0,
        });
        if gn < TOL {
            break;
        }
        w = axpy(-lr, &g, &w);
    }
    trace
}

fn main() {
    let d = make_data(2024);
    let lip = curvature_bound(&d);
    println!(
        "softmax regression: {N} samples, {D} features + bias, {C} classes, L2 λ = {LAMBDA}; stop at ‖∇L‖ < {TOL:e}"
    );
    println!("gradient descent step 1/L with L = ½ λmax(XᵀX/N) + λ = {lip:.4}\n");
    let nt = newton(&d, 50);
    let gd = gradient_descent(&d, 1.0 / lip, 20_000);

    println!(
        "{:>6} │ {:>18} {:>10} {:>5} │ {:>18} {:>10}",
        "step", "Newton-CG loss", "‖∇L‖", "Hv's", "grad-descent loss", "‖∇L‖"
    );
    println!("{}", "─".repeat(80));
    let mut rows: Vec<usize> = (0..nt.len()).collect();
    let mut s = 10;
    while s < gd.len() {
        rows.push(s);
        s = if s < 100 { s + 30 } else { s * 2 };
    }
    rows.push(gd.len() - 1);
    rows.dedup();
    for i in rows {
        let left = nt.get(i).map_or(format!("{:>18} {:>10} {:>5}", "", "", ""), |r| {
            format!("{:>18.12} {:>10.2e} {:>5}", r.loss, r.grad_norm, r.hvps)
        });
        let right = gd
            .get(i)
            .map_or(String::new(), |r| format!("{:>18.12} {:>10.2e}", r.loss, r.grad_norm));
        println!("{i:>6} │ {left} │ {right}");
    }
    let hv: usize = nt.iter().map(|r| r.hvps).sum();
    let (nl, gl) = (nt.last().unwrap(), gd.last().unwrap());
    println!();
    println!(
        "Newton-CG: {} steps ({hv} Hessian-vector products), final loss {:.12}, ‖∇L‖ {:.1e}",
        nt.len() - 1,
        nl.loss,
        nl.grad_norm
    );
    println!(
        "gradient descent: {} steps{}, final loss {:.12}, ‖∇L‖ {:.1e}",
        gd.len() - 1,
        if gl.grad_norm < TOL { "" } else { " (not converged)" },
        gl.loss,
        gl.grad_norm
    );
    println!("difference in the final losses: {:.1e}", (nl.loss - gl.loss).abs());
}
