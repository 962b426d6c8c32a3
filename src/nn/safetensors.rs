//! Saving and loading a [`ParamStore`] in the [safetensors](https://github.com/huggingface/safetensors)
//! format (behind the `safetensors` feature), with the names and layouts PyTorch uses — so a
//! model's parameters move between tapegrad and a PyTorch `state_dict` both ways.
//!
//! A [`Linear`](super::Linear) layer stores `{name}.weight` as `[outputs, inputs]` and
//! `{name}.bias` as `[outputs]`, as `torch.nn.Linear` does; an [`Mlp`](super::Mlp) named `"mlp"` has
//! the names of a PyTorch module holding `self.mlp = nn.ModuleList([...])`.
//!
//! ```
//! use tapegrad::nn::{Activation, Mlp, ParamStore};
//! let mut store = ParamStore::<f32>::new();
//! let _mlp = Mlp::new(&mut store, "mlp", &[3, 4, 2], Activation::Tanh, 7);
//! let bytes = store.to_safetensors().unwrap();
//! let mut back = ParamStore::<f32>::new();
//! let _same = Mlp::new(&mut back, "mlp", &[3, 4, 2], Activation::Tanh, 99); // other values
//! back.load_safetensors(&bytes).unwrap();
//! assert_eq!(back.by_name("mlp.1.weight"), store.by_name("mlp.1.weight"));
//! ```

use super::ParamStore;
use crate::core::error::{Error, ErrorKind, Result};
use crate::core::float::Float;
use crate::core::shape::fmt_shape;
use crate::tensor::Tensor;
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use std::path::Path;

fn io(op: &str, msg: impl Into<String>) -> Error {
    Error::new(ErrorKind::Io, op, msg)
}

/// The element type's safetensors dtype.
fn dtype<T: Float>() -> Dtype {
    if T::NAME == "f32" { Dtype::F32 } else { Dtype::F64 }
}

/// Little-endian bytes of a tensor's elements.
fn to_bytes<T: Float>(t: &Tensor<T>) -> Vec<u8> {
    let mut out = Vec::with_capacity(t.numel() * std::mem::size_of::<T>());
    for &x in t.data() {
        match dtype::<T>() {
            Dtype::F32 => out.extend_from_slice(&(x.to_f64() as f32).to_le_bytes()),
            _ => out.extend_from_slice(&x.to_f64().to_le_bytes()),
        }
    }
    out
}

/// The elements of a stored tensor of dtype F32, F64, F16 or BF16, converted to `T`.
fn from_view<T: Float>(name: &str, v: &TensorView<'_>) -> Result<Vec<T>> {
    let d = v.data();
    let half = |b: u16, bf: bool| -> f64 {
        if bf {
            f32::from_bits((b as u32) << 16) as f64
        } else {
            // IEEE binary16 → f64
            let (s, e, m) = ((b >> 15) as i32, ((b >> 10) & 0x1f) as i32, (b & 0x3ff) as f64);
            let sign = if s == 1 { -1.0 } else { 1.0 };
            match e {
                0 => sign * m * 2f64.powi(-24),
                31 if m == 0.0 => sign * f64::INFINITY,
                31 => f64::NAN,
                _ => sign * (1.0 + m / 1024.0) * 2f64.powi(e - 15),
            }
        }
    };
    Ok(match v.dtype() {
        Dtype::F32 => d
            .chunks_exact(4)
            .map(|c| T::from_f64(f32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64))
            .collect(),
        Dtype::F64 => d
            .chunks_exact(8)
            .map(|c| T::from_f64(f64::from_le_bytes(c.try_into().expect("8 bytes"))))
            .collect(),
        Dtype::F16 => d
            .chunks_exact(2)
            .map(|c| T::from_f64(half(u16::from_le_bytes([c[0], c[1]]), false)))
            .collect(),
        Dtype::BF16 => d
            .chunks_exact(2)
            .map(|c| T::from_f64(half(u16::from_le_bytes([c[0], c[1]]), true)))
            .collect(),
        other => {
            return Err(io(
                "load",
                format!("tensor {name:?} has dtype {other:?}; only floating-point tensors can be loaded"),
            ));
        }
    })
}

impl<T: Float> ParamStore<T> {
    /// The store in safetensors format: every parameter under its name, in this store's element
    /// type (`f32` as `F32`, `f64` as `F64`).
    pub fn to_safetensors(&self) -> Result<Vec<u8>> {
        let bytes: Vec<(String, Vec<u8>, Vec<usize>)> = self
            .params
            .iter()
            .map(|(k, v)| (k.clone(), to_bytes(v), v.shape().to_vec()))
            .collect();
        let views = bytes
            .iter()
            .map(|(k, b, s)| {
                TensorView::new(dtype::<T>(), s.clone(), b)
                    .map(|v| (k.clone(), v))
                    .map_err(|e| io("save", format!("parameter {k:?}: {e}")))
            })
            .collect::<Result<Vec<_>>>()?;
        safetensors::tensor::serialize(views, None).map_err(|e| io("save", e.to_string()))
    }

    /// Writes the store to `path` in safetensors format (see [`to_safetensors`](Self::to_safetensors)).
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let bytes = self.to_safetensors()?;
        std::fs::write(path, bytes).map_err(|e| io("save", format!("{}: {e}", path.display())))
    }

    /// Replaces every parameter's value with the tensor of the same name in `bytes` (safetensors
    /// format; `F32`, `F64`, `F16` and `BF16` are converted to this store's element type).
    /// Strict, like PyTorch's `load_state_dict`: a missing name, an unexpected name or a shape that
    /// differs is an error naming them, and on error the store is unchanged.
    pub fn load_safetensors(&mut self, bytes: &[u8]) -> Result<()> {
        let file = SafeTensors::deserialize(bytes).map_err(|e| io("load", format!("not a safetensors file: {e}")))?;
        let names: Vec<String> = file.names().into_iter().map(|s| s.to_string()).collect();
        let missing: Vec<&str> = self
            .params
            .keys()
            .filter(|k| !names.contains(k))
            .map(|k| k.as_str())
            .collect();
        let unexpected: Vec<&str> = names
            .iter()
            .filter(|k| !self.params.contains_key(k.as_str()))
            .map(|k| k.as_str())
            .collect();
        if !missing.is_empty() || !unexpected.is_empty() {
            return Err(io(
                "load",
                format!("the file does not match the store: missing {missing:?}, unexpected {unexpected:?}"),
            ));
        }
        let mut new = Vec::with_capacity(self.params.len());
        for (k, old) in &self.params {
            let v = file.tensor(k).map_err(|e| io("load", format!("{k:?}: {e}")))?;
            if v.shape() != old.shape() {
                return Err(io(
                    "load",
                    format!(
                        "{k:?} has shape {} in the file but {} in the store",
                        fmt_shape(v.shape()),
                        fmt_shape(old.shape())
                    ),
                ));
            }
            new.push(Tensor::try_from_vec(from_view::<T>(k, &v)?, old.shape())?);
        }
        for ((_, slot), t) in self.params.iter_mut().zip(new) {
            *slot = t;
        }
        Ok(())
    }

    /// Loads `path` (see [`load_safetensors`](Self::load_safetensors)).
    pub fn load(&mut self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|e| io("load", format!("{}: {e}", path.display())))?;
        self.load_safetensors(&bytes)
    }
}
