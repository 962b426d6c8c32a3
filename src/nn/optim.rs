//! Optimisers: [`Sgd`] (momentum, Nesterov, weight decay) and [`Adam`] (with L2 weight decay, or
//! decoupled as AdamW). They update a [`ParamStore`] in place: when the store is the sole owner of
//! its buffers (the tape that recorded them has been dropped or cleared), no parameter and no
//! optimiser state is ever reallocated. Clip gradients first with
//! [`ParamGrads::clip_global_norm`](crate::nn::ParamGrads::clip_global_norm).
//!
//! ```
//! use tapegrad::nn::{ParamGrads, ParamStore};
//! use tapegrad::optim::{Adam, Optimizer};
//! use tapegrad::Tensor;
//!
//! // Minimise ‖w − (1, −2)‖² with hand-written gradients 2(w − target).
//! let mut store = ParamStore::<f64>::new();
//! let w = store.insert("w", Tensor::zeros([2]));
//! let ptr = store.get(w).data().as_ptr();
//! let mut opt = Adam::new(0.1);
//! for _ in 0..500 {
//!     let g = store.get(w).zip_map(&Tensor::from_vec(vec![1.0, -2.0], [2]), |a, b| 2.0 * (a - b));
//!     opt.step(&mut store, &ParamGrads::from_vec(vec![g]));
//! }
//! assert!((store.get(w).data()[0] - 1.0).abs() < 1e-3);
//! assert!((store.get(w).data()[1] + 2.0).abs() < 1e-3);
//! assert_eq!(store.get(w).data().as_ptr(), ptr);     // updated in place
//! ```

use crate::core::float::Float;
use crate::nn::{ParamGrads, ParamStore};
use crate::tensor::Tensor;

/// Something that updates parameters from their gradients.
pub trait Optimizer<T: Float> {
    /// One update of every parameter of `params` from `grads` (one gradient per parameter, in
    /// store order). Panics when the counts or shapes differ.
    fn step(&mut self, params: &mut ParamStore<T>, grads: &ParamGrads<T>);

    /// The learning rate.
    fn lr(&self) -> f64;

    /// Changes the learning rate (for schedules).
    fn set_lr(&mut self, lr: f64);
}

#[track_caller]
fn check<T: Float>(params: &ParamStore<T>, grads: &ParamGrads<T>, opt: &str) {
    assert_eq!(
        params.len(),
        grads.len(),
        "tapegrad: {opt}.step got {} gradients for {} parameters",
        grads.len(),
        params.len()
    );
    for (id, name, p) in params.iter() {
        let g = grads.get(id);
        assert_eq!(
            p.shape(),
            g.shape(),
            "tapegrad: {opt}.step: gradient of {name:?} has shape {:?}, the parameter {:?}",
            g.shape(),
            p.shape()
        );
    }
}

/// Lazily allocated per-parameter state (zeros of each parameter's shape).
fn state<T: Float>(slot: &mut Vec<Tensor<T>>, params: &ParamStore<T>) {
    if slot.len() != params.len() {
        *slot = params.iter().map(|(_, _, p)| Tensor::zeros(p.shape())).collect();
    }
}

/// Stochastic gradient descent: `v ← μ v + (g + λ p)`, `p ← p − η v`
/// (Nesterov: `p ← p − η (g + λ p + μ v)`).
#[derive(Clone, Debug)]
pub struct Sgd<T: Float> {
    /// Learning rate η.
    pub lr: f64,
    /// Momentum μ (0: plain SGD).
    pub momentum: f64,
    /// L2 weight decay λ, added to the gradient.
    pub weight_decay: f64,
    /// Nesterov momentum.
    pub nesterov: bool,
    velocity: Vec<Tensor<T>>,
}

impl<T: Float> Sgd<T> {
    /// Plain SGD with learning rate `lr`.
    pub fn new(lr: f64) -> Self {
        Sgd {
            lr,
            momentum: 0.0,
            weight_decay: 0.0,
            nesterov: false,
            velocity: Vec::new(),
        }
    }

    /// Sets the momentum.
    pub fn momentum(mut self, m: f64) -> Self {
        self.momentum = m;
        self
    }

    /// Uses Nesterov momentum.
    pub fn nesterov(mut self, on: bool) -> Self {
        self.nesterov = on;
        self
    }

    /// Sets the L2 weight decay.
    pub fn weight_decay(mut self, wd: f64) -> Self {
        self.weight_decay = wd;
        self
    }
}

impl<T: Float> Optimizer<T> for Sgd<T> {
    #[track_caller]
    fn step(&mut self, params: &mut ParamStore<T>, grads: &ParamGrads<T>) {
        check(params, grads, "Sgd");
        let (lr, mu, wd) = (
            T::from_f64(self.lr),
            T::from_f64(self.momentum),
            T::from_f64(self.weight_decay),
        );
        let use_v = self.momentum != 0.0;
        if use_v {
            state(&mut self.velocity, params);
        }
        let nesterov = self.nesterov;
        for (k, g) in grads.iter() {
            let g = g.data();
            if use_v {
                let v = self.velocity[k.0].data_mut();
                params.update(k, |p| {
                    for ((p, &g), v) in p.iter_mut().zip(g).zip(v.iter_mut()) {
                        let d = g + wd * *p;
                        *v = mu * *v + d;
                        *p -= lr * if nesterov { d + mu * *v } else { *v };
                    }
                });
            } else {
                params.update(k, |p| {
                    for (p, &g) in p.iter_mut().zip(g) {
                        *p -= lr * (g + wd * *p);
                    }
                });
            }
        }
    }

    fn lr(&self) -> f64 {
        self.lr
    }

    fn set_lr(&mut self, lr: f64) {
        self.lr = lr;
    }
}

/// Adam (Kingma & Ba): bias-corrected running moments of the gradient and its square,
/// `p ← p − η m̂ / (√v̂ + ε)`. Weight decay is either L2 (added to the gradient, [`Adam::new`] with
/// [`weight_decay`](Adam::weight_decay)) or decoupled (`p ← p − η λ p`, [`Adam::adamw`]).
#[derive(Clone, Debug)]
pub struct Adam<T: Float> {
    /// Learning rate η.
    pub lr: f64,
    /// Decay of the first moment, β₁.
    pub beta1: f64,
    /// Decay of the second moment, β₂.
    pub beta2: f64,
    /// ε, added to √v̂.
    pub eps: f64,
    /// Weight decay λ.
    pub weight_decay: f64,
    /// True for AdamW's decoupled weight decay, false for L2 added to the gradient.
    pub decoupled: bool,
    t: u64,
    m: Vec<Tensor<T>>,
    v: Vec<Tensor<T>>,
}

impl<T: Float> Adam<T> {
    /// Adam with `lr` and the usual β₁ = 0.9, β₂ = 0.999, ε = 1e-8, no weight decay.
    pub fn new(lr: f64) -> Self {
        Adam {
            lr,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
            decoupled: false,
            t: 0,
            m: Vec::new(),
            v: Vec::new(),
        }
    }

    /// AdamW: Adam with decoupled weight decay `weight_decay`.
    pub fn adamw(lr: f64, weight_decay: f64) -> Self {
        Adam {
            weight_decay,
            decoupled: true,
            ..Self::new(lr)
        }
    }

    /// Sets the weight decay (L2 unless built with [`adamw`](Self::adamw)).
    pub fn weight_decay(mut self, wd: f64) -> Self {
        self.weight_decay = wd;
        self
    }

    /// Sets β₁ and β₂.
    pub fn betas(mut self, beta1: f64, beta2: f64) -> Self {
        self.beta1 = beta1;
        self.beta2 = beta2;
        self
    }

    /// Sets ε.
    pub fn eps(mut self, eps: f64) -> Self {
        self.eps = eps;
        self
    }

    /// The number of steps taken.
    pub fn steps(&self) -> u64 {
        self.t
    }
}

impl<T: Float> Optimizer<T> for Adam<T> {
    #[track_caller]
    fn step(&mut self, params: &mut ParamStore<T>, grads: &ParamGrads<T>) {
        check(params, grads, "Adam");
        state(&mut self.m, params);
        state(&mut self.v, params);
        self.t += 1;
        let t = self.t as i32;
        let (b1, b2) = (self.beta1, self.beta2);
        // Bias corrections folded into the step size and ε (as in the paper's final form).
        let c1 = 1.0 - b1.powi(t);
        let c2 = 1.0 - b2.powi(t);
        let step = T::from_f64(self.lr * c2.sqrt() / c1);
        let eps = T::from_f64(self.eps * c2.sqrt());
        let (b1t, b2t) = (T::from_f64(b1), T::from_f64(b2));
        let (ob1, ob2) = (T::from_f64(1.0 - b1), T::from_f64(1.0 - b2));
        let (l2, decay) = if self.decoupled {
            (T::ZERO, T::from_f64(1.0 - self.lr * self.weight_decay))
        } else {
            (T::from_f64(self.weight_decay), T::ONE)
        };
        for (k, g) in grads.iter() {
            let g = g.data();
            let m = self.m[k.0].data_mut();
            let v = self.v[k.0].data_mut();
            params.update(k, |p| {
                for (((p, &g), m), v) in p.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut()) {
                    let g = g + l2 * *p;
                    *m = b1t * *m + ob1 * g;
                    *v = b2t * *v + ob2 * g * g;
                    *p = decay * *p - step * *m / (v.sqrt() + eps);
                }
            });
        }
    }

    fn lr(&self) -> f64 {
        self.lr
    }

    fn set_lr(&mut self, lr: f64) {
        self.lr = lr;
    }
}
