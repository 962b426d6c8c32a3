//! Multi-head self-attention and a pre-norm transformer block, built from the primitives: the
//! projections are [`Linear`] layers, heads are split and merged with `reshape` and `permute`,
//! scores are a batched `matmul_nt`, the causal mask is a `select` against a large negative
//! constant, and the weights a fused `softmax`. Nothing here has a rule of its own, so every
//! gradient (of any order) comes from the primitives' rules.

use super::checkpoint::{Sequential, Stage};
use super::layers::LayerNorm;
use super::{Activation, Init, Linear, Mlp, ParamId, ParamStore, Params};
use crate::autodiff::tape::Var;
use crate::core::float::Float;
use crate::tensor::Tensor;

/// The score given to a masked position before the softmax: `exp(−10³⁰ − max)` is exactly 0 in
/// `f32` and `f64`, and, unlike `−∞`, it never makes `∞ − ∞` or `0 · ∞` anywhere in a rule.
pub const MASKED_SCORE: f64 = -1e30;

/// Multi-head self-attention, PyTorch-like: four [`Linear`] projections `{name}.q_proj`,
/// `{name}.k_proj`, `{name}.v_proj` and `{name}.out_proj` (each `[dim, dim]` with a bias), `heads`
/// heads of size `dim / heads`, scaled dot-product weights `softmax(q kᵀ / √(dim/heads))`.
///
/// ```
/// use tapegrad::nn::{MultiHeadAttention, ParamStore};
/// use tapegrad::{Tape, Tensor};
/// let mut store = ParamStore::<f64>::new();
/// let attn = MultiHeadAttention::new(&mut store, "attn", 8, 2, 1);
/// assert!(store.by_name("attn.q_proj.weight").is_some());
/// let tape = Tape::new();
/// let p = store.bind(&tape);
/// let x = tape.constant(Tensor::rand_normal([3, 5, 8], 0.0, 1.0, 2));   // [batch, time, dim]
/// let y = attn.forward(&p, x, true);
/// assert_eq!(y.shape().as_slice(), &[3, 5, 8]);
/// ```
#[derive(Clone, Copy, Debug)]
pub struct MultiHeadAttention {
    /// The query projection (`{name}.q_proj`).
    pub q_proj: Linear,
    /// The key projection (`{name}.k_proj`).
    pub k_proj: Linear,
    /// The value projection (`{name}.v_proj`).
    pub v_proj: Linear,
    /// The output projection (`{name}.out_proj`).
    pub out_proj: Linear,
    /// The number of heads.
    pub heads: usize,
    /// The model width (`heads ·` head size).
    pub dim: usize,
}

impl MultiHeadAttention {
    /// Adds the four projections (`dim → dim`, Xavier-uniform weights, zero biases), seeded.
    /// Panics unless `heads` divides `dim`.
    #[track_caller]
    pub fn new<T: Float>(store: &mut ParamStore<T>, name: &str, dim: usize, heads: usize, seed: u64) -> Self {
        assert!(
            heads > 0 && dim.is_multiple_of(heads),
            "tapegrad: MultiHeadAttention needs heads ({heads}) to divide dim ({dim})"
        );
        let s = |k: u64| seed.wrapping_mul(0x9E37_79B9).wrapping_add(k);
        let proj = |store: &mut ParamStore<T>, what: &str, k| {
            Linear::new(store, &format!("{name}.{what}"), dim, dim, Init::XavierUniform, s(k))
        };
        MultiHeadAttention {
            q_proj: proj(store, "q_proj", 0),
            k_proj: proj(store, "k_proj", 1),
            v_proj: proj(store, "v_proj", 2),
            out_proj: proj(store, "out_proj", 3),
            heads,
            dim,
        }
    }

    /// The attention weights `softmax(q kᵀ / √d_head)` of `x: [batch, time, dim]`, shape
    /// `[batch, heads, time, time]`; with `causal`, position `i` attends only to `j ≤ i` (the
    /// others get exactly 0).
    #[track_caller]
    pub fn weights<'t, T: Float>(&self, p: &Params<'t, T>, x: Var<'t, T>, causal: bool) -> Var<'t, T> {
        let (q, k, _) = self.qkv(p, x, false);
        self.scores_to_weights(q, k, causal)
    }

    /// Self-attention of `x: [batch, time, dim]`, the same shape out: project to queries, keys
    /// and values, split them into heads (`[batch, heads, time, dim/heads]`), weight the values
    /// by `softmax(q kᵀ / √d_head)` (causally masked when `causal`), merge the heads and project.
    /// Panics when `x` is not `[batch, time, dim]`.
    #[track_caller]
    pub fn forward<'t, T: Float>(&self, p: &Params<'t, T>, x: Var<'t, T>, causal: bool) -> Var<'t, T> {
        let s = x.shape();
        let (b, t) = (s[0], s[1]);
        let (q, k, v) = self.qkv(p, x, true);
        let w = self.scores_to_weights(q, k, causal);
        let merged = w
            .matmul(v.expect("values"))
            .permute([0, 2, 1, 3])
            .reshape([b * t, self.dim]);
        self.out_proj.forward(p, merged).reshape([b, t, self.dim])
    }

    /// Queries, keys (and values when asked), each `[batch, heads, time, dim/heads]`.
    #[track_caller]
    fn qkv<'t, T: Float>(
        &self,
        p: &Params<'t, T>,
        x: Var<'t, T>,
        values: bool,
    ) -> (Var<'t, T>, Var<'t, T>, Option<Var<'t, T>>) {
        let s = x.shape();
        assert!(
            s.len() == 3 && s[2] == self.dim,
            "tapegrad: MultiHeadAttention expects [batch, time, {}], got {:?}",
            self.dim,
            s.as_slice()
        );
        let (b, t, h) = (s[0], s[1], self.heads);
        let flat = x.reshape([b * t, self.dim]);
        let split = |l: &Linear| {
            l.forward(p, flat)
                .reshape([b, t, h, self.dim / h])
                .permute([0, 2, 1, 3])
        };
        (
            split(&self.q_proj),
            split(&self.k_proj),
            values.then(|| split(&self.v_proj)),
        )
    }

    #[track_caller]
    fn scores_to_weights<'t, T: Float>(&self, q: Var<'t, T>, k: Var<'t, T>, causal: bool) -> Var<'t, T> {
        let t = q.shape()[2];
        let scale = T::from_f64(1.0 / ((self.dim / self.heads) as f64).sqrt());
        let mut scores = q.matmul_nt(k) * scale;
        if causal {
            let tape = q.tape();
            let allowed = tape.constant(causal_mask(t));
            scores = allowed.select(scores, tape.scalar(T::from_f64(MASKED_SCORE)));
        }
        scores.softmax(-1)
    }
}

/// The causal mask `[t, t]`: 1 where `j ≤ i` (position `i` may attend to `j`), 0 elsewhere.
///
/// ```
/// assert_eq!(tapegrad::nn::causal_mask::<f64>(2).to_vec(), vec![1.0, 0.0, 1.0, 1.0]);
/// ```
pub fn causal_mask<T: Float>(t: usize) -> Tensor<T> {
    Tensor::from_fn([t, t], |k| if k % t.max(1) <= k / t.max(1) { T::ONE } else { T::ZERO })
}

/// A pre-norm transformer block: `x + attn(ln1(x))`, then `x + mlp(ln2(x))`, with
/// [`LayerNorm`]s `{name}.ln1`, `{name}.ln2`, a [`MultiHeadAttention`] `{name}.attn` and a
/// two-layer ReLU [`Mlp`] `{name}.mlp` (`dim → hidden → dim`, layers `{name}.mlp.0`, `{name}.mlp.1`).
///
/// ```
/// use tapegrad::nn::{ParamStore, TransformerBlock};
/// use tapegrad::{Tape, Tensor};
/// let mut store = ParamStore::<f32>::new();
/// let block = TransformerBlock::new(&mut store, "block", 8, 2, 16, 3);
/// let tape = Tape::new();
/// let p = store.bind(&tape);
/// let x = tape.constant(Tensor::rand_normal([2, 4, 8], 0.0, 1.0, 5));
/// assert_eq!(block.forward(&p, x, true).shape().as_slice(), &[2, 4, 8]);
/// ```
#[derive(Clone, Debug)]
pub struct TransformerBlock {
    /// The norm before attention (`{name}.ln1`).
    pub ln1: LayerNorm,
    /// The self-attention (`{name}.attn`).
    pub attn: MultiHeadAttention,
    /// The norm before the MLP (`{name}.ln2`).
    pub ln2: LayerNorm,
    /// The position-wise MLP (`{name}.mlp`).
    pub mlp: Mlp,
}

impl TransformerBlock {
    /// Adds the block's parameters: width `dim`, `heads` heads, an MLP of `hidden` units; seeded.
    #[track_caller]
    pub fn new<T: Float>(
        store: &mut ParamStore<T>,
        name: &str,
        dim: usize,
        heads: usize,
        hidden: usize,
        seed: u64,
    ) -> Self {
        let ln1 = LayerNorm::new(store, &format!("{name}.ln1"), dim);
        let attn = MultiHeadAttention::new(store, &format!("{name}.attn"), dim, heads, seed);
        let ln2 = LayerNorm::new(store, &format!("{name}.ln2"), dim);
        let mlp = Mlp::new(
            store,
            &format!("{name}.mlp"),
            &[dim, hidden, dim],
            Activation::Relu,
            seed.wrapping_add(17),
        );
        TransformerBlock { ln1, attn, ln2, mlp }
    }

    /// `x: [batch, time, dim]` through the block (causal attention when `causal`), same shape out.
    #[track_caller]
    pub fn forward<'t, T: Float>(&self, p: &Params<'t, T>, x: Var<'t, T>, causal: bool) -> Var<'t, T> {
        let s = x.shape();
        let (b, t, d) = (s[0], s[1], s[2]);
        let x = x + self.attn.forward(p, self.ln1.forward(p, x), causal);
        let h = self.ln2.forward(p, x).reshape([b * t, d]);
        x + self.mlp.forward(p, h).reshape([b, t, d])
    }

    /// Every parameter the block reads, each once: `ln1`, the four attention projections, `ln2`
    /// and the MLP's layers (weight, then bias).
    pub fn params(&self) -> Vec<ParamId> {
        let mut ids = vec![self.ln1.weight, self.ln1.bias];
        for l in [
            &self.attn.q_proj,
            &self.attn.k_proj,
            &self.attn.v_proj,
            &self.attn.out_proj,
        ] {
            ids.extend([l.weight, l.bias]);
        }
        ids.extend([self.ln2.weight, self.ln2.bias]);
        for l in &self.mlp.layers {
            ids.extend([l.weight, l.bias]);
        }
        ids
    }

    /// The block as one [`Stage`] of a [`Sequential`] model (causal attention when `causal`),
    /// so a stack of blocks can be [checkpointed](super::checkpoint) under a memory budget.
    pub fn stage(&self, causal: bool) -> TransformerStage {
        TransformerStage {
            block: self.clone(),
            causal,
        }
    }

    /// A stack of blocks applied in order, one [`Stage`] each: [`Sequential::forward`] is
    /// `blocks[n-1].forward(… blocks[0].forward(x))`, and
    /// [`Sequential::forward_planned`] runs it under a
    /// [`CheckpointPlan`](super::checkpoint::CheckpointPlan).
    ///
    /// ```
    /// use tapegrad::nn::checkpoint::CheckpointPlan;
    /// use tapegrad::nn::{ParamStore, TransformerBlock};
    /// use tapegrad::{Tape, Tensor};
    /// let mut store = ParamStore::<f64>::new();
    /// let blocks: Vec<_> = (0..4)
    ///     .map(|i| TransformerBlock::new(&mut store, &format!("blocks.{i}"), 8, 2, 16, i))
    ///     .collect();
    /// let seq = TransformerBlock::stack::<f64>(&blocks, true);
    /// let x = Tensor::rand_normal([2, 5, 8], 0.0, 1.0, 9);
    /// let costs = seq.measure(&store, &x);
    /// let plain = CheckpointPlan::none(4).peak_bytes(&costs);
    /// let plan = CheckpointPlan::for_budget(&costs, plain / 2).unwrap();
    ///
    /// let tape = Tape::new();
    /// let p = store.bind(&tape);
    /// let g = seq.forward_planned(&p, tape.constant(x.clone()), &plan).sum().backward();
    /// let tape2 = Tape::new();
    /// let p2 = store.bind(&tape2);
    /// let mut h = tape2.constant(x);
    /// for b in &blocks {
    ///     h = b.forward(&p2, h, true);
    /// }
    /// let g2 = h.sum().backward();
    /// let w = blocks[0].attn.q_proj.weight;
    /// assert!(g[p[w]].max_abs_diff(&g2[p2[w]]) < 1e-12);
    /// ```
    pub fn stack<T: Float>(blocks: &[TransformerBlock], causal: bool) -> Sequential<T> {
        let mut seq = Sequential::new();
        for b in blocks {
            seq.push(b.stage(causal));
        }
        seq
    }
}

/// A [`TransformerBlock`] as a [`Stage`]: made by [`TransformerBlock::stage`].
#[derive(Clone, Debug)]
pub struct TransformerStage {
    /// The block.
    pub block: TransformerBlock,
    /// Whether its attention is causal.
    pub causal: bool,
}

impl<T: Float> Stage<T> for TransformerStage {
    fn params(&self) -> Vec<ParamId> {
        self.block.params()
    }

    fn forward<'t>(&self, x: Var<'t, T>, p: &[Var<'t, T>]) -> Var<'t, T> {
        // The block looks its parameters up by id; lay the stage's variables out at their ids
        // (the other slots hold `x`, and the block never reads them).
        let ids = self.block.params();
        let len = ids.iter().map(|id| id.0 + 1).max().unwrap_or(0);
        let mut vars = vec![x; len];
        for (id, &v) in ids.iter().zip(p) {
            vars[id.0] = v;
        }
        self.block.forward(&Params::from_vars(vars), x, self.causal)
    }
}
