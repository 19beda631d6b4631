//! Targets in the quant types users download, made once per build under Cargo's test
//! temporary directory: llama.cpp re-quantisations of the real models, and a 256-wide
//! random llama (the library's fixture) whose re-quantisation gets K-quant shared tensors,
//! which our real models' widths (576, 640) never get.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use tandem::gguf::GgmlType;
use tandem::gguf::fixture::{RandomLlama, write_random_llama};
use tandem::llama::{QuantOverrides, quantize_with};

fn dir() -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join("quant-models");
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Make `name` in the shared directory once (atomically: test binaries run in parallel).
fn once(name: &str, make: impl FnOnce(&Path)) -> String {
    static LOCK: Mutex<()> = Mutex::new(());
    let _g = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let out = dir().join(name);
    if !out.is_file() {
        let part = dir().join(format!("{name}.{}.part", std::process::id()));
        make(&part);
        std::fs::rename(&part, &out).unwrap();
    }
    out.display().to_string()
}

/// `model` (a manifest name) re-quantised as `ftype`, the head (and tied embeddings) in
/// `output` if given.
pub fn quantized(model: &str, ftype: &str, output: Option<GgmlType>) -> String {
    let tag = output.map_or(String::new(), |t| format!("-out-{}", t.name()));
    once(&format!("{model}-{ftype}{tag}.gguf"), |p| {
        let src = tandem::models::resolve(model).unwrap();
        let over = QuantOverrides {
            output,
            token_embd: None,
        };
        quantize_with(&src, p, ftype, 2, over).unwrap();
    })
}

/// The random 256-wide llama with SmolLM2's tokenizer and an untied head, re-quantised as
/// `ftype` (`f16`: as written).
pub fn synthetic(ftype: &str) -> String {
    let f16 = once("random-llama-f16.gguf", |p| {
        let tok = tandem::models::resolve("smollm2-135m").unwrap();
        write_random_llama(&tok, p, &RandomLlama::default()).unwrap();
    });
    if ftype == "f16" {
        return f16;
    }
    once(&format!("random-llama-{ftype}.gguf"), |p| {
        quantize_with(Path::new(&f16), p, ftype, 2, QuantOverrides::default()).unwrap();
    })
}

/// The storage types of a file's head and embeddings.
pub fn shared_types(path: &str) -> (GgmlType, GgmlType) {
    let g = tandem::gguf::Gguf::open(Path::new(path)).unwrap();
    let ty = |n: &str| g.tensor(n).and_then(|t| GgmlType::from_id(t.type_id));
    let embd = ty("token_embd.weight").unwrap();
    (ty("output.weight").unwrap_or(embd), embd)
}
