//! Saving and loading parameters in safetensors format (the `safetensors` feature): a round trip,
//! strict errors, and a file written by PyTorch (`scripts/make_safetensors_fixture.py`).
#![cfg(feature = "safetensors")]

use tapegrad::nn::{Activation, Mlp, ParamStore};
use tapegrad::{ErrorKind, Tape, Tensor};

fn data(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

#[test]
fn a_store_round_trips_through_a_file_bit_for_bit() {
    for seed in [1u64, 2] {
        let mut store = ParamStore::<f64>::new();
        let _ = Mlp::new(&mut store, "mlp", &[3, 5, 2], Activation::Relu, seed);
        let dir = std::env::temp_dir().join(format!("tapegrad-st-{}-{seed}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("p.safetensors");
        store.save(&path).unwrap();
        let mut back = ParamStore::<f64>::new();
        let _ = Mlp::new(&mut back, "mlp", &[3, 5, 2], Activation::Relu, seed + 100);
        back.load(&path).unwrap();
        for ((_, a, x), (_, b, y)) in store.iter().zip(back.iter()) {
            assert_eq!(a, b);
            assert_eq!(x, y, "{a}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

#[test]
fn loading_is_strict_and_leaves_the_store_unchanged_on_error() {
    let mut small = ParamStore::<f32>::new();
    let _ = Mlp::new(&mut small, "mlp", &[3, 4, 2], Activation::Tanh, 1);
    let bytes = small.to_safetensors().unwrap();
    // another architecture: a shape differs
    let mut other = ParamStore::<f32>::new();
    let _ = Mlp::new(&mut other, "mlp", &[3, 6, 2], Activation::Tanh, 1);
    let before = other.by_name("mlp.0.weight").unwrap().clone();
    let e = other.load_safetensors(&bytes).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Io);
    assert!(
        e.to_string().contains("mlp.0.weight") && e.to_string().contains("[4, 3]"),
        "{e}"
    );
    assert_eq!(other.by_name("mlp.0.weight").unwrap(), &before, "unchanged on error");
    // other names
    let mut renamed = ParamStore::<f32>::new();
    let _ = Mlp::new(&mut renamed, "net", &[3, 4, 2], Activation::Tanh, 1);
    let e = renamed.load_safetensors(&bytes).unwrap_err();
    assert!(
        e.to_string().contains("missing") && e.to_string().contains("net.0.weight"),
        "{e}"
    );
    assert!(
        e.to_string().contains("unexpected") && e.to_string().contains("mlp.0.weight"),
        "{e}"
    );
    // not a safetensors file at all
    assert!(small.load_safetensors(b"not a file").is_err());
    assert_eq!(small.load(data("does-not-exist")).unwrap_err().kind(), ErrorKind::Io);
}

#[test]
fn a_state_dict_written_by_pytorch_loads_and_computes_what_pytorch_computed() {
    let mut store = ParamStore::<f32>::new();
    let mlp = Mlp::new(&mut store, "mlp", &[3, 4, 2], Activation::Tanh, 0);
    store.load(data("torch_mlp.safetensors")).unwrap();
    // input and PyTorch's output, from the same script
    let mut io = ParamStore::<f32>::new();
    io.insert("input", Tensor::zeros([5, 3]));
    io.insert("expected", Tensor::zeros([5, 2]));
    io.load(data("torch_mlp_io.safetensors")).unwrap();
    let tape = Tape::<f32>::new();
    let p = store.bind(&tape);
    let y = mlp
        .forward(&p, tape.constant(io.by_name("input").unwrap().clone()))
        .value();
    let want = io.by_name("expected").unwrap();
    assert!(y.max_abs_diff(want) < 1e-6, "{y} vs {want}");
    // and the same file loads into an f64 store (converted)
    let mut wide = ParamStore::<f64>::new();
    let _ = Mlp::new(&mut wide, "mlp", &[3, 4, 2], Activation::Tanh, 0);
    wide.load(data("torch_mlp.safetensors")).unwrap();
    let a = wide.by_name("mlp.1.bias").unwrap().cast::<f32>();
    assert_eq!(&a, store.by_name("mlp.1.bias").unwrap());
}
