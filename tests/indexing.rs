//! Indexing and joining in real programs, against closed forms: Rosenbrock in N dimensions written
//! with slices, a spring network written with `gather`, gradients that accumulate on repeated
//! indices, and the errors (op, index, extent, your line; nothing recorded). The registry checks
//! every op's samples (finite differences, second order, NaN, references, random programs, the
//! fuzzer); this file checks what it cannot see.

use tapegrad::check::GradcheckOptions;
use tapegrad::functional::{gradgradcheck, hessian};
use tapegrad::{ErrorKind, Indices, Tape, Tensor, Var, attempt};

mod common;
use common::panic_message;

fn here(line: u32) -> String {
    format!("{}:{line}", file!())
}

/// `‖got − want‖∞ ≤ rtol · ‖want‖∞` (the closed forms sum their terms in another order).
fn assert_close(got: &Tensor<f64>, want: &Tensor<f64>, rtol: f64, what: &str) {
    assert_eq!(got.shape(), want.shape(), "{what}: shapes differ");
    let scale = want.data().iter().fold(0.0f64, |m, x| m.max(x.abs()));
    let diff = got.max_abs_diff(want);
    assert!(
        diff <= rtol * scale,
        "{what}: differs by {diff:e} (scale {scale:e})\n got  {got}\n want {want}"
    );
}

// ---------------------------------------------------------------------------------------------
// Rosenbrock with slices.
// ---------------------------------------------------------------------------------------------

/// `Σ 100 (x[1:] − x[:-1]²)² + (1 − x[:-1])²`, no shift matrices.
fn rosenbrock(x: Var<'_, f64>) -> Var<'_, f64> {
    let (head, tail) = (x.slice(0, ..-1), x.slice(0, 1..));
    let a = tail - head * head;
    let b = 1.0 - head;
    (a * a * 100.0 + b * b).sum()
}

#[test]
fn rosenbrock_in_n_dimensions_with_slices_matches_its_closed_form_gradient_and_hessian() {
    for n in [2usize, 3, 9] {
        let x0 = Tensor::<f64>::rand_uniform([n], -1.5, 1.5, 40 + n as u64);
        let x = x0.data();
        let tape = Tape::<f64>::new();
        let xv = tape.var(x0.clone());
        let f = rosenbrock(xv);
        let want_f: f64 = (0..n - 1)
            .map(|i| 100.0 * (x[i + 1] - x[i] * x[i]).powi(2) + (1.0 - x[i]).powi(2))
            .sum();
        assert!((f.item() - want_f).abs() <= 1e-12 * want_f.abs());

        // ∂f/∂x_i = −400 x_i (x_{i+1} − x_i²) − 2 (1 − x_i)   [i < n−1]
        //         + 200 (x_i − x_{i−1}²)                      [i > 0]
        let grad = Tensor::from_fn([n], |i| {
            let mut g = 0.0;
            if i + 1 < n {
                g += -400.0 * x[i] * (x[i + 1] - x[i] * x[i]) - 2.0 * (1.0 - x[i]);
            }
            if i > 0 {
                g += 200.0 * (x[i] - x[i - 1] * x[i - 1]);
            }
            g
        });
        assert_close(&f.backward()[xv], &grad, 1e-12, &format!("gradient, n = {n}"));

        // The Hessian is tridiagonal: H_ii = 1200 x_i² − 400 x_{i+1} + 2 [i < n−1] + 200 [i > 0],
        // H_{i,i+1} = H_{i+1,i} = −400 x_i. Second order runs through slice's recorded rule
        // (slice_backward) and its rule (slice).
        let h = hessian(rosenbrock, &x0);
        let want_h = Tensor::from_fn([n, n], |k| {
            let (i, j) = (k / n, k % n);
            if i == j {
                let mut d = if i > 0 { 200.0 } else { 0.0 };
                if i + 1 < n {
                    d += 1200.0 * x[i] * x[i] - 400.0 * x[i + 1] + 2.0;
                }
                d
            } else if j == i + 1 {
                -400.0 * x[i]
            } else if i == j + 1 {
                -400.0 * x[j]
            } else {
                0.0
            }
        });
        assert_close(&h, &want_h, 1e-12, &format!("Hessian, n = {n}"));
    }
}

#[test]
fn rosenbrock_minimum_is_at_ones() {
    let tape = Tape::<f64>::new();
    let x = tape.var(Tensor::ones([6]));
    let f = rosenbrock(x);
    assert_eq!(f.item(), 0.0);
    assert_eq!(f.backward()[x], Tensor::zeros([6]));
}

// ---------------------------------------------------------------------------------------------
// A spring network with gather.
// ---------------------------------------------------------------------------------------------

/// Edges as index pairs: node 2 has four springs, and the edge (0, 1) is listed twice, so
/// gradients must accumulate into repeated rows.
const EDGES: [(usize, usize); 9] = [(0, 1), (1, 2), (2, 0), (2, 3), (3, 4), (4, 5), (5, 3), (1, 4), (0, 1)];
const NODES: usize = 6;
const DIM: usize = 3;

/// The row index `[E, D]` that gathers endpoint `pick` of every edge (each row repeated `DIM` times).
fn endpoint(pick: fn((usize, usize)) -> usize) -> Indices {
    let data = EDGES.iter().flat_map(|&e| [pick(e); DIM]).collect();
    Indices::new(data, [EDGES.len(), DIM])
}

/// Stiffnesses and rest lengths of the springs.
fn springs() -> (Tensor<f64>, Tensor<f64>) {
    (
        Tensor::rand_uniform([EDGES.len()], 0.5, 2.0, 7),
        Tensor::rand_uniform([EDGES.len()], 0.3, 1.2, 8),
    )
}

/// `Σ_e k_e (|x_i − x_j| − L_e)²` with the endpoints gathered.
fn energy(x: Var<'_, f64>) -> Var<'_, f64> {
    let tape = x.tape();
    let (k, l) = springs();
    let d = x.gather(0, endpoint(|e| e.0)) - x.gather(0, endpoint(|e| e.1));
    let r = (d * d).sum_axis(1, false).sqrt();
    let s = r - tape.constant(l);
    (tape.constant(k) * s * s).sum()
}

/// The same energy with the endpoints looked up as rows (by `embedding` or `index_select`).
fn energy_by_rows(x: Var<'_, f64>, embedding: bool) -> Var<'_, f64> {
    let tape = x.tape();
    let (k, l) = springs();
    let lookup = |ids: Vec<usize>| {
        if embedding {
            x.embedding(ids)
        } else {
            x.index_select(0, ids)
        }
    };
    let d = lookup(EDGES.iter().map(|e| e.0).collect()) - lookup(EDGES.iter().map(|e| e.1).collect());
    let r = (d * d).sum_axis(-1, false).sqrt();
    let s = r - tape.constant(l);
    (tape.constant(k) * s * s).sum()
}

#[test]
fn spring_network_with_gather_matches_its_closed_form_gradient() {
    let x0 = Tensor::<f64>::rand_normal([NODES, DIM], 0.0, 1.0, 11);
    let (k, l) = springs();
    let x = |i: usize, c: usize| x0.data()[i * DIM + c];
    // E = Σ_e k (r − L)², r = |x_i − x_j|: ∂E/∂x_i = 2k (r − L)(x_i − x_j)/r, ∂E/∂x_j = −that.
    let mut grad = vec![0.0; NODES * DIM];
    let mut want_e = 0.0;
    for (e, &(i, j)) in EDGES.iter().enumerate() {
        let r = (0..DIM).map(|c| (x(i, c) - x(j, c)).powi(2)).sum::<f64>().sqrt();
        let (ke, le) = (k.data()[e], l.data()[e]);
        want_e += ke * (r - le).powi(2);
        for c in 0..DIM {
            let f = 2.0 * ke * (r - le) * (x(i, c) - x(j, c)) / r;
            grad[i * DIM + c] += f;
            grad[j * DIM + c] -= f;
        }
    }
    let grad = Tensor::from_vec(grad, [NODES, DIM]);

    let tape = Tape::<f64>::new();
    let xv = tape.var(x0.clone());
    let en = energy(xv);
    assert!((en.item() - want_e).abs() <= 1e-12 * want_e);
    assert_close(&en.backward()[xv], &grad, 1e-12, "gather");

    // Rows looked up by embedding or index_select: the same energy and gradient.
    for (name, embedding) in [("embedding", true), ("index_select", false)] {
        let tape = Tape::<f64>::new();
        let xv = tape.var(x0.clone());
        let en = energy_by_rows(xv, embedding);
        assert!((en.item() - want_e).abs() <= 1e-12 * want_e, "{name}");
        assert_close(&en.backward()[xv], &grad, 1e-12, name);
    }

    // Second order: gather's recorded rule is scatter_add, whose rule is gather again.
    let r = gradgradcheck(|v| energy(v[0]), &[x0], &GradcheckOptions::default());
    assert!(r.passed, "{r}");
}

// ---------------------------------------------------------------------------------------------
// Repeated indices accumulate (the classic bug keeps only one of them).
// ---------------------------------------------------------------------------------------------

#[test]
fn gradients_of_gathers_accumulate_on_repeated_indices() {
    let tape = Tape::<f64>::new();
    let w = Tensor::<f64>::rand_uniform([3, 5], 0.5, 1.5, 3);

    // gather along axis 1: ∂/∂x[r][c] Σ w ⊙ gather = Σ over p with index[r][p] = c of w[r][p].
    let idx = [[2usize, 2, 0, 2, 3], [1, 1, 1, 1, 1], [3, 0, 3, 0, 3]];
    let index = Indices::new(idx.iter().flatten().copied().collect(), [3, 5]);
    let x = tape.var(Tensor::rand_normal([3, 4], 0.0, 1.0, 4));
    let g = (x.gather(1, &index) * tape.constant(w.clone())).sum().backward()[x].clone();
    let want = Tensor::from_fn([3, 4], |k| {
        let (r, c) = (k / 4, k % 4);
        (0..5).filter(|&p| idx[r][p] == c).map(|p| w.get(&[r, p])).sum()
    });
    assert_close(&g, &want, 1e-15, "gather axis 1");
    assert_eq!(g.get(&[1, 1]), w.data()[5..10].iter().sum::<f64>(), "all five into one");

    // gather along axis 0 (each column picks rows).
    let rows = [[0usize, 2, 2], [2, 2, 0]];
    let x = tape.var(Tensor::rand_normal([3, 3], 0.0, 1.0, 5));
    let w2 = Tensor::<f64>::rand_uniform([2, 3], 0.5, 1.5, 6);
    let index = Indices::new(rows.iter().flatten().copied().collect(), [2, 3]);
    let g = (x.gather(0, index) * tape.constant(w2.clone())).sum().backward()[x].clone();
    let want = Tensor::from_fn([3, 3], |k| {
        let (r, c) = (k / 3, k % 3);
        (0..2).filter(|&p| rows[p][c] == r).map(|p| w2.get(&[p, c])).sum()
    });
    assert_close(&g, &want, 1e-15, "gather axis 0");

    // index_select: row i gets the sum of the weights of every position that took it.
    let sel = [1usize, 3, 1, 1, 0];
    let x = tape.var(Tensor::rand_normal([4, 2], 0.0, 1.0, 7));
    let w3 = Tensor::<f64>::rand_uniform([5, 2], 0.5, 1.5, 8);
    let g = (x.index_select(0, sel) * tape.constant(w3.clone())).sum().backward()[x].clone();
    let want = Tensor::from_fn([4, 2], |k| {
        let (i, c) = (k / 2, k % 2);
        (0..5).filter(|&p| sel[p] == i).map(|p| w3.get(&[p, c])).sum()
    });
    assert_close(&g, &want, 1e-15, "index_select");

    // embedding with [2, 3] ids: the same, per row of the table.
    let ids = [4usize, 4, 0, 4, 2, 0];
    let table = tape.var(Tensor::rand_normal([5, 2], 0.0, 1.0, 9));
    let w4 = Tensor::<f64>::rand_uniform([2, 3, 2], 0.5, 1.5, 10);
    let e = table.embedding(Indices::new(ids.to_vec(), [2, 3]));
    let g = (e * tape.constant(w4.clone())).sum().backward()[table].clone();
    let want = Tensor::from_fn([5, 2], |k| {
        let (i, c) = (k / 2, k % 2);
        (0..6).filter(|&p| ids[p] == i).map(|p| w4.data()[p * 2 + c]).sum()
    });
    assert_close(&g, &want, 1e-15, "embedding");
    assert_eq!(g.get(&[1, 0]), 0.0, "a row never looked up gets nothing");

    // scatter_add: repeated targets accumulate in the value; the source's gradient is gathered.
    let base = tape.var(Tensor::zeros([3]));
    let src = tape.var(Tensor::from_vec(vec![1.0, 2.0, 4.0, 8.0], [4]));
    let y = base.scatter_add(0, [2, 0, 2, 2], src);
    assert_eq!(y.value().to_vec(), vec![2.0, 0.0, 13.0]);
    let wy = tape.constant(Tensor::from_vec(vec![10.0, 20.0, 30.0], [3]));
    let gs = (y * wy).sum().backward();
    assert_eq!(gs[src].to_vec(), vec![30.0, 10.0, 30.0, 30.0]);
    assert_eq!(gs[base].to_vec(), vec![10.0, 20.0, 30.0]);

    // Overlapping slices: x[1:] + x[:-1] sends 1 to the ends and 2 to the inside.
    let x = tape.var(Tensor::zeros([5]));
    let g = (x.slice(0, 1..) + x.slice(0, ..-1)).sum().backward()[x].clone();
    assert_eq!(g.to_vec(), vec![1.0, 2.0, 2.0, 2.0, 1.0]);
    // The same value twice in a concat.
    let g = Var::concat(0, &[x, x, x.slice(0, 3..)]).sum().backward()[x].clone();
    assert_eq!(g.to_vec(), vec![2.0, 2.0, 2.0, 3.0, 3.0]);
}

#[test]
fn second_derivatives_of_gathers_accumulate_too() {
    // f = Σ gather(x)²: ∂f/∂x_c = 2 m_c x_c with m_c the multiplicity of c, so H = diag(2 m_c).
    const INDEX: [usize; 6] = [0, 3, 3, 1, 3, 0];
    let mult = [2.0, 1.0, 0.0, 3.0];
    let x0 = Tensor::<f64>::rand_normal([4], 0.0, 1.0, 12);
    fn f(x: Var<'_, f64>) -> Var<'_, f64> {
        let y = x.gather(0, INDEX);
        (y * y).sum()
    }
    let h = hessian(f, &x0);
    let want = Tensor::from_fn([4, 4], |k| if k / 4 == k % 4 { 2.0 * mult[k / 4] } else { 0.0 });
    assert_eq!(h, want);
    // The same through embedding (rows of a [4, 1] table).
    fn g(x: Var<'_, f64>) -> Var<'_, f64> {
        let y = x.reshape([4, 1]).embedding(INDEX);
        (y * y).sum()
    }
    assert_eq!(hessian(g, &x0), want);
}

// ---------------------------------------------------------------------------------------------
// The API: Python slices, negative axes, splitting and joining.
// ---------------------------------------------------------------------------------------------

#[test]
fn slices_follow_python() {
    let tape = Tape::<f64>::new();
    let x = tape.var(Tensor::from_vec((0..7).map(f64::from).collect(), [7]));
    let v = |y: Var<'_, f64>| y.value().to_vec();
    assert_eq!(v(x.slice(0, 2..5)), [2.0, 3.0, 4.0]);
    assert_eq!(v(x.slice(0, -2..)), [5.0, 6.0]);
    assert_eq!(v(x.slice(0, ..-5)), [0.0, 1.0]);
    assert_eq!(v(x.slice(0, 1..=3)), [1.0, 2.0, 3.0]);
    assert_eq!(v(x.slice(0, ..=-1)), v(x));
    assert_eq!(v(x.slice(0, -3..=-2)), [4.0, 5.0]);
    assert_eq!(v(x.slice(0, (1, -1))), [1.0, 2.0, 3.0, 4.0, 5.0], "x[1:-1]");
    assert_eq!(v(x.slice(0, (-6, 3usize))), [1.0, 2.0]);
    assert_eq!(v(x.slice_step(0, 1.., 2)), [1.0, 3.0, 5.0]);
    assert_eq!(v(x.slice_step(0, ..-1, 4)), [0.0, 4.0]);
    assert_eq!(v(x.slice(0, -100..100)), v(x), "clamped, as Python");
    let (five, two) = (5, 2);
    assert!(v(x.slice(0, five..two)).is_empty());
    assert!(v(x.slice(0, 9..)).is_empty());
    let i: usize = 3;
    assert_eq!(v(x.slice(0, i..i + 2)), [3.0, 4.0], "usize variables work too");
    // An empty slice still has a gradient: zeros of the input's shape.
    assert_eq!(x.slice(0, (4, -3)).sum().backward()[x], Tensor::zeros([7]));
}

#[test]
fn negative_axes_work_everywhere() {
    let tape = Tape::<f64>::new();
    let a = Tensor::<f64>::rand_normal([2, 3, 4], 0.0, 1.0, 13);
    let x = tape.var(a.clone());
    let same = |p: Var<'_, f64>, q: Var<'_, f64>| assert_eq!(p.value(), q.value());
    same(x.permute([-1, 0, -2]), x.permute([2usize, 0, 1]));
    same(x.permute(vec![2usize, 0, 1]), x.permute([2, 0, 1]));
    same(x.permute(&[-1isize, -3, -2][..]), x.permute([2, 0, 1]));
    same(x.transpose(-1, 0), x.transpose(2, 0));
    same(x.slice(-1, 1..), x.slice(2, 1..));
    same(x.narrow(-2, -2, 2), x.narrow(1, 1, 2));
    same(x.index_select(-1, [3, 0]), x.index_select(2, [3, 0]));
    let idx = Indices::new(vec![0, 1, 2, 2, 1, 0], [1, 3, 2]);
    same(x.gather(-1, &idx), x.gather(2, &idx));
    let low = Indices::new(vec![0, 1, 1, 1, 0, 0], [1, 3, 2]);
    same(
        x.scatter_add(-3, &low, x.gather(2, &idx)),
        x.scatter_add(0, &low, x.gather(2, &idx)),
    );
    same(Var::concat(-2, &[x, x]), Var::concat(1, &[x, x]));
    same(Var::stack(-1, &[x, x]), Var::stack(3, &[x, x]));
    same(Var::stack(-4, &[x, x]), Var::stack(0, &[x, x]));
    same(x.split(-1, 3)[1], x.split(2, 3)[1]);
    same(x.chunk(-3, 2)[1], x.chunk(0, 2)[1]);
    same(x.unsqueeze(-1), x.unsqueeze(3));
    same(x.unsqueeze(-1).squeeze(-1), x);
    same(x.flatten(-2, -1), x.flatten(1, 2));
    // A permutation with negative axes has the right gradient (the inverse permutation).
    let w = tape.constant(Tensor::rand_normal([4, 2, 3], 0.0, 1.0, 14));
    let g = (x.permute([-1, 0, 1]) * w).sum().backward()[x].clone();
    assert_eq!(g, w.value().permute([1, 2, 0]));
}

#[test]
fn split_chunk_concat_and_stack_undo_each_other() {
    let tape = Tape::<f64>::new();
    let x = tape.var(Tensor::rand_normal([5, 3], 0.0, 1.0, 15));
    for pieces in [
        x.split(0, 2),
        x.split(0, 5),
        x.split(0, 9),
        x.chunk(0, 2),
        x.chunk(0, 7),
        x.split_sizes(0, [0, 4, 1]),
    ] {
        assert_eq!(Var::concat(0, &pieces).value(), x.value());
    }
    assert_eq!(
        x.chunk(0, 7).iter().map(|p| p.shape()[0]).collect::<Vec<_>>(),
        [1, 1, 1, 1, 1, 0, 0]
    );
    let empty = tape.var(Tensor::zeros([0, 3]));
    assert_eq!(empty.split(0, 2).len(), 1, "one empty piece, as PyTorch");
    let rows: Vec<Var<'_, f64>> = (0..5).map(|i| x.narrow(0, i, 1).squeeze(0)).collect();
    assert_eq!(Var::stack(0, &rows).value(), x.value());
    let cols: Vec<Var<'_, f64>> = (0..3).map(|j| x.slice(1, j..j + 1).flatten(0, -1)).collect();
    assert_eq!(Var::stack(-1, &cols).value(), x.value());
    // Padding and slicing back.
    let p = x.pad([(1, 2), (0, 3)], f64::NAN);
    assert_eq!(p.shape().as_slice(), &[8, 6]);
    assert_eq!(p.slice(0, (1, -2)).slice(1, ..3).value(), x.value());
    assert!(p.value().data()[0].is_nan());
    // The padding's NaN never reaches the gradient.
    let g = p.slice(0, 1..6).slice(1, 0..3).sum().backward()[x].clone();
    assert_eq!(g, Tensor::ones([5, 3]));
}

#[test]
fn select_scalar_takes_numbers_on_either_side() {
    let tape = Tape::<f64>::new();
    let x = tape.var(Tensor::from_vec(vec![-1.0, 0.5, 4.0], [3]));
    let m = x.gt(tape.scalar(0.0));
    assert_eq!(m.select_scalar(x, 0.0).value().to_vec(), vec![0.0, 0.5, 4.0]);
    assert_eq!(m.select_scalar(-1.0, x).value().to_vec(), vec![-1.0, -1.0, -1.0]);
    assert_eq!(m.select_scalar(2.0, 3.0).value().to_vec(), vec![3.0, 2.0, 2.0]);
    // The branch not taken gets exactly zero gradient, even where it is NaN.
    let y = m.select_scalar(x.log(), f64::NAN).sum();
    assert!(y.item().is_nan());
    assert_eq!(y.backward()[x].to_vec(), vec![0.0, 2.0, 0.25]);
}

// ---------------------------------------------------------------------------------------------
// Errors: op, index, extent, your line; nothing recorded.
// ---------------------------------------------------------------------------------------------

/// Runs `f` (one call on the line `line`), which must fail: its error, after checking that it
/// names `op`, carries `line` and recorded nothing on `tape`.
fn fails<R>(tape: &Tape<f64>, op: &str, line: u32, f: impl FnOnce() -> R) -> tapegrad::Error {
    let before = tape.len();
    let Err(e) = attempt(f) else {
        panic!("{op}: expected an error")
    };
    let msg = e.to_string();
    assert!(msg.starts_with(&format!("tapegrad: {op}: ")), "{msg}");
    // The call's line (rustfmt may have moved it a line or two below the one given).
    let at = e.location().expect("the error carries a location");
    assert!(
        at.file() == file!() && (line..=line + 3).contains(&at.line()),
        "{msg} (expected line {line})"
    );
    assert_eq!(tape.len(), before, "{op}: a failed call recorded something: {msg}");
    e
}

#[test]
fn out_of_range_indices_name_the_op_the_index_and_the_extent() {
    let tape = Tape::<f64>::new();
    let x = tape.var(Tensor::zeros([2, 3]));

    let line = line!() + 1;
    let e = fails(&tape, "gather", line, || {
        x.gather(1, Indices::new(vec![0, 1, 2, 3], [2, 2]))
    });
    assert_eq!(e.kind(), ErrorKind::Invalid);
    assert!(
        e.message().contains(
            "index 3 at [1, 1] of the index [2, 2] is out of range for axis 1 of the input [2, 3], of extent 3"
        ),
        "{e}"
    );

    let line = line!() + 1;
    let e = fails(&tape, "index_select", line, || x.index_select(0, [1, 2, 0]));
    assert_eq!(e.kind(), ErrorKind::Invalid);
    assert!(
        e.message()
            .contains("index 2 at position 1 of the indices is out of range for axis 0 of [2, 3], of extent 2"),
        "{e}"
    );

    let line = line!() + 1;
    let e = fails(&tape, "embedding", line, || {
        x.embedding(Indices::new(vec![1, 0, 7], [3, 1]))
    });
    assert_eq!(e.kind(), ErrorKind::Invalid);
    assert!(
        e.message()
            .contains("id 7 at [2, 0] of the ids [3, 1] is out of range for the table [2, 3], which has 2 rows"),
        "{e}"
    );

    let src = tape.var(Tensor::ones([1, 2]));
    let line = line!() + 1;
    let e = fails(&tape, "scatter_add", line, || {
        x.scatter_add(0, Indices::new(vec![1, 2], [1, 2]), src)
    });
    assert_eq!(e.kind(), ErrorKind::Invalid);
    assert!(
        e.message().contains("index 2 at [0, 1]") && e.message().contains("of extent 2"),
        "{e}"
    );

    // usize::MAX is just out of range, not an overflow.
    let line = line!() + 1;
    let e = fails(&tape, "gather", line, || {
        x.gather(0, Indices::new(vec![usize::MAX; 2], [1, 2]))
    });
    assert!(e.message().contains(&format!("index {}", usize::MAX)), "{e}");

    // The panicking form says the same.
    let line = line!() + 1;
    let msg = panic_message(|| x.index_select(-1, [5]));
    assert!(
        msg.starts_with("tapegrad: index_select: index 5") && msg.contains(&here(line)),
        "{msg}"
    );
}

#[test]
fn index_shapes_that_do_not_fit_are_shape_errors() {
    let tape = Tape::<f64>::new();
    let x = tape.var(Tensor::zeros([2, 3]));
    let line = line!() + 1;
    let e = fails(&tape, "gather", line, || x.gather(0, Indices::from([0, 1])));
    assert_eq!(e.kind(), ErrorKind::Shape);
    assert!(
        e.message()
            .contains("the index [2] has 1 axes but the input [2, 3] has 2"),
        "{e}"
    );
    let line = line!() + 1;
    let e = fails(&tape, "gather", line, || x.gather(0, Indices::new(vec![0; 8], [2, 4])));
    assert!(
        e.message().contains("larger than the input [2, 3] on axis 1 (4 > 3)"),
        "{e}"
    );
    let src = tape.var(Tensor::zeros([2, 2]));
    let line = line!() + 1;
    let e = fails(&tape, "scatter_add", line, || {
        x.scatter_add(1, Indices::new(vec![0; 2], [2, 1]), src)
    });
    assert!(
        e.message()
            .contains("the source [2, 2] must have the index's shape [2, 1]"),
        "{e}"
    );
    let line = line!() + 1;
    let e = fails(&tape, "gather", line, || x.gather(2, Indices::new(vec![0; 6], [2, 3])));
    assert!(e.message().contains("axis 2 is out of range"), "{e}");
    let s = tape.var(Tensor::scalar(1.0));
    let line = line!() + 1;
    let e = fails(&tape, "embedding", line, || s.embedding([0]));
    assert_eq!(e.kind(), ErrorKind::Shape);
    let line = line!() + 1;
    let msg = panic_message(|| Indices::new(vec![0, 1, 2], [2, 2]));
    assert!(
        msg.contains("tapegrad: indices: 3 indices cannot fill shape [2, 2]") && msg.contains(&here(line)),
        "{msg}"
    );
}

#[test]
fn bad_slices_splits_joins_and_pads_are_reported() {
    let tape = Tape::<f64>::new();
    let x = tape.var(Tensor::zeros([4, 3]));
    let y = tape.var(Tensor::zeros([2, 2]));

    let line = line!() + 1;
    let e = fails(&tape, "slice", line, || x.slice_step(0, .., 0));
    assert_eq!(e.kind(), ErrorKind::Invalid);
    assert!(e.message().contains("step 0 is not positive"), "{e}");
    let line = line!() + 1;
    fails(&tape, "slice", line, || x.slice_step(1, .., -1));
    let line = line!() + 1;
    let e = fails(&tape, "slice", line, || x.slice(2, 1..));
    assert_eq!(e.kind(), ErrorKind::Shape);

    let line = line!() + 1;
    let e = fails(&tape, "narrow", line, || x.narrow(0, 3, 2));
    assert!(
        e.message()
            .contains("start 3 and length 2 do not fit axis 0 of [4, 3] (extent 4)"),
        "{e}"
    );
    let line = line!() + 1;
    fails(&tape, "narrow", line, || x.narrow(1, -4, 1));

    let line = line!() + 1;
    let e = fails(&tape, "split", line, || x.split(0, 0));
    assert_eq!(e.kind(), ErrorKind::Invalid);
    let line = line!() + 1;
    let e = fails(&tape, "split_sizes", line, || x.split_sizes(-1, [1, 1]));
    assert!(
        e.message()
            .contains("sizes [1, 1] do not add up to the extent 3 of axis -1 of [4, 3]"),
        "{e}"
    );
    let line = line!() + 1;
    fails(&tape, "chunk", line, || x.chunk(0, 0));

    let line = line!() + 1;
    let e = fails(&tape, "concat", line, || Var::concat(0, &[x, y]));
    assert_eq!(e.kind(), ErrorKind::Shape);
    assert!(
        e.message().contains("part 1 has shape [2, 2] but part 0 has [4, 3]"),
        "{e}"
    );
    let line = line!() + 1;
    let e = fails(&tape, "concat", line, || Var::<f64>::concat(0, &[]));
    assert_eq!(e.kind(), ErrorKind::Invalid);
    let line = line!() + 1;
    let e = fails(&tape, "stack", line, || Var::stack(0, &[x, x, y]));
    assert!(
        e.message().contains("part 2 has shape [2, 2] but part 0 has [4, 3]"),
        "{e}"
    );
    let line = line!() + 1;
    let e = fails(&tape, "stack", line, || Var::stack(3, &[x, x]));
    assert!(
        e.message()
            .contains("axis 3 is out of range for a new axis of [4, 3]: the result has 3 axes"),
        "{e}"
    );
    let other = Tape::<f64>::new();
    let z = other.var(Tensor::zeros([4, 3]));
    let line = line!() + 1;
    let e = fails(&tape, "stack", line, || Var::stack(0, &[x, z]));
    assert_eq!(e.kind(), ErrorKind::ForeignVar);

    let line = line!() + 1;
    let e = fails(&tape, "pad", line, || x.pad([(1, 1)], 0.0));
    assert!(
        e.message()
            .contains("1 (before, after) pairs for [4, 3], which has 2 axes"),
        "{e}"
    );
    let line = line!() + 1;
    fails(&tape, "pad", line, || x.pad([(0, 0), (usize::MAX, 1)], 0.0));
    let line = line!() + 1;
    let e = fails(&tape, "pad", line, || x.pad([(0, 0), (usize::MAX / 2, 0)], 0.0));
    assert!(e.message().contains("too large"), "{e}");

    let line = line!() + 1;
    let e = fails(&tape, "squeeze", line, || x.squeeze(1));
    assert!(e.message().contains("axis 1 of [4, 3] has extent 3, not 1"), "{e}");
    let line = line!() + 1;
    fails(&tape, "unsqueeze", line, || x.unsqueeze(-4));
    let line = line!() + 1;
    let e = fails(&tape, "flatten", line, || x.flatten(1, 0));
    assert!(e.message().contains("the start axis comes after the end axis"), "{e}");

    let line = line!() + 1;
    let e = fails(&tape, "permute", line, || x.permute([0, -3]));
    assert_eq!(e.kind(), ErrorKind::Invalid);
    assert!(
        e.message()
            .contains("[0, -3] is not a permutation of the axes of [4, 3]"),
        "{e}"
    );

    // select_scalar records its number first, then the select: a mask that does not broadcast
    // with the branch is the select's error, at your line, and the number is taken back.
    let m = tape.constant(Tensor::ones([2]));
    let line = line!() + 1;
    let e = fails(&tape, "select", line, || m.select_scalar(x, 0.0));
    assert_eq!(e.kind(), ErrorKind::Shape);
}

#[test]
fn a_call_that_records_several_nodes_records_all_or_nothing() {
    // In anomaly mode the second piece of a split (a NaN) is refused: the first is not kept.
    let tape = Tape::<f64>::with_anomaly();
    let x = tape.var(Tensor::from_vec(vec![1.0, 2.0, f64::NAN], [3]));
    let before = tape.len();
    assert_eq!(attempt(|| x.split(0, 2)).unwrap_err().kind(), ErrorKind::NonFinite);
    assert_eq!(tape.len(), before);
    // scatter_add is a scatter and an add: an add that overflows is refused, and so is the scatter.
    let base = tape.var(Tensor::from_vec(vec![f64::MAX, 0.0], [2]));
    let src = tape.var(Tensor::from_vec(vec![f64::MAX], [1]));
    let before = tape.len();
    assert!(attempt(|| base.scatter_add(0, [0], src)).is_err());
    assert_eq!(tape.len(), before);
    // select_scalar records its number as a constant first; a refused select takes it back.
    let m = tape.constant(Tensor::ones([2]));
    let before = tape.len();
    assert!(attempt(|| m.select_scalar(f64::INFINITY, base)).is_err());
    assert_eq!(tape.len(), before);
}
