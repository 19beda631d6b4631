//! The training program's export round trip (on the real SmolLM2 and Gemma 3 targets — Gemma's
//! features exceed f16's range) and the `tandem distill` pipeline (on SmolLM2):
//!
//! * a network exported to a `dflash` GGUF, loaded by Tandem's drafter, gives the same
//!   logits as the training network on the same target features, the training-time feature
//!   scale folded into the export (F32 export: max |Δ| ≤
//!   1e-3 of the logits' scale — summation order only; F16: ≤ 2e-2, the weights' and the
//!   activations' rounding to f16);
//! * `tandem distill run` with a tiny budget makes a drafter that `generate` uses, output
//!   identical to plain decoding; training resumes from its checkpoint and lands on the same
//!   weights as an uninterrupted run.

mod common;

use std::path::Path;

use candle_core::Tensor;
use tandem::distill::Record;
use tandem::draft::diffusion::format::DflashShape;
use tandem::draft::diffusion::{DflashModel, Embeddings};
use tandem::gguf::{GgmlType, Gguf};
use tandem::llama::Outputs;
use tandem::sampling::Rng;
use tandem::train::data::{BlockOptions, DraftVocab, make_batch};
use tandem::train::export::export;
use tandem::train::net::Net;

#[test]
fn exported_drafter_gives_the_training_networks_logits() {
    exported_drafter_matches_training("smollm2-135m");
}

#[test]
fn exported_gemma3_drafter_gives_the_training_networks_logits() {
    exported_drafter_matches_training("gemma3-270m");
}

fn exported_drafter_matches_training(name: &str) {
    let _g = common::exclusive();
    let model = common::model(name, false);
    let tg = Gguf::open(Path::new(model.path())).unwrap();
    let shape = DflashShape::for_target(&tg, 2, &[], 16);
    let embd = Embeddings::of_target(&tg).unwrap();
    // A draft vocabulary with gaps, and a head seeded from the target's rows.
    let d2t: Vec<i32> = (0..3000).map(|i| i * 7 + 3).collect();
    let vocab = DraftVocab::from_d2t(d2t.clone(), shape.n_vocab);
    let net = Net::new(shape.clone(), embd.rows(&d2t), 5).unwrap();
    // Move the norms off 1.0 so that every weight matters.
    let mut rng = Rng::new(9);
    for (_, p) in &net.params {
        if p.rank() == 1 {
            let n = p.elem_count();
            let v: Vec<f32> = (0..n)
                .map(|_| 1.0 + 0.3 * (rng.uniform() as f32 - 0.5))
                .collect();
            p.set(&Tensor::from_vec(v, n, &candle_core::Device::Cpu).unwrap())
                .unwrap();
        }
    }

    // Real target features for a prompt.
    let toks = common::prompt_tokens(&model, common::PROMPTS[1]);
    let mut ctx = common::context(&model, 1024);
    ctx.set_feature_layers(&shape.target_layers).unwrap();
    ctx.decode(&toks, 0, Outputs::Last).unwrap();
    let mut feats = Vec::new();
    ctx.features_into(0..toks.len() - 1, &mut feats).unwrap();
    let c = toks.len() - 1;
    // Training divides features by a per-feature scale (their RMS, the library's own
    // rule); export folds it into fc.weight, so Tandem is fed the raw features.
    let nf = feats.len() / c;
    let mut rms = tandem::train::FeatureRms::new(nf);
    rms.add(&feats);
    let scale = rms.finish();
    let mut scaled = feats.clone();
    tandem::train::divide_columns(&mut scaled, &scale);
    let rec = Record {
        prompt_index: 0,
        n_prompt: toks.len(),
        tokens: toks.clone(),
        features: scaled,
        top_ids: Vec::new(),
        top_p: Vec::new(),
    };
    let block = BlockOptions {
        block_size: 16,
        anchors: 1,
        gamma: 5.0,
        loss_positions: 0,
        max_context: 4096,
        labels: tandem::train::Labels::Hard,
        prompt_anchors: false,
    };
    let mask_embd = embd.rows(&[shape.mask_token as i32]);
    let b = make_batch(&rec, &[c], &embd, &mask_embd, &vocab, &block).unwrap();
    let h = net.hidden(&b).unwrap().narrow(0, 1, 15).unwrap();
    let want: Vec<Vec<f32>> = h
        .matmul(&net.p("output.weight").t().unwrap())
        .unwrap()
        .to_vec2()
        .unwrap();

    let dir = tempfile::tempdir().unwrap();
    for (wtype, tol) in [(GgmlType::F32, 1e-3f32), (GgmlType::F16, 2e-2)] {
        let path = dir.path().join(format!("d-{wtype:?}.gguf"));
        export(&net, &vocab, &scale, &tg, &path, wtype).unwrap();
        let head = common::head(&model);
        let ours = DflashModel::load(&path, &model, || Some(head.clone()), 2).unwrap();
        let mut cache = ours.new_cache();
        ours.inject(&mut cache, &feats);
        let mut got = Vec::new();
        ours.draft_logits(&cache, toks[c], 16, &mut got);
        let mut worst = 0.0f32;
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            let scale = w.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            for (j, &t) in d2t.iter().enumerate() {
                let d = (g[t as usize] - w[j]).abs();
                worst = worst.max(d / scale);
                assert!(
                    d <= tol * scale,
                    "{wtype:?} row {i} token {t}: {} vs {}",
                    g[t as usize],
                    w[j]
                );
            }
            // Tokens outside the draft vocabulary are never proposed.
            assert_eq!(g[0], f32::NEG_INFINITY);
        }
        eprintln!("{wtype:?} export: worst |Δ|/scale {worst:.2e}");
    }
}

#[test]
fn distill_run_makes_a_working_drafter_and_training_resumes_exactly() {
    let _g = common::exclusive();
    common::model("smollm2-135m", false);
    let dir = tempfile::tempdir().unwrap();
    let d = |p: &str| dir.path().join(p).display().to_string();
    let small = [
        "--prompts",
        "6",
        "--max-new",
        "24",
        "--heldout",
        "2",
        "--vocab",
        "2048",
        "--anchors",
        "4",
        "--checkpoint-every",
        "3",
    ];
    let mut args = vec!["distill", "run", "-m", "smollm2-135m", "--out"];
    let run = d("run");
    args.push(&run);
    args.extend(small);
    args.extend(["--steps", "6"]);
    let out = common::tandem_ok(&args);
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(log.contains("plan:"), "{log}");
    let drafter = d("run/drafter.gguf");
    assert!(Path::new(&drafter).exists());

    // The drafter works and changes nothing in the output.
    let generate = |extra: &[&str]| {
        let mut a = vec![
            "generate",
            "-m",
            "smollm2-135m",
            "-p",
            common::PROMPTS[0],
            "-n",
            "24",
        ];
        a.extend(extra);
        String::from_utf8(common::tandem_ok(&a).stdout).unwrap()
    };
    assert_eq!(
        generate(&["--draft", "diffusion", "--drafter", &drafter]),
        generate(&["--draft", "none"])
    );

    // 3 steps of a 6-step schedule, then resumed to 6: the same weights as 6 at once.
    let data = d("run/data");
    let train = |out: &str, steps: &[&str]| {
        let out = d(out);
        let mut a = vec![
            "distill",
            "train",
            "-m",
            "smollm2-135m",
            "--data",
            &data,
            "--out",
            &out,
        ];
        a.extend(&small[6..]);
        a.extend(steps);
        common::tandem_ok(&a);
    };
    train("part", &["--steps", "6", "--until", "3"]);
    train("part", &["--steps", "6"]);
    let a = std::fs::read(d("run/train/drafter.gguf")).unwrap();
    let b = std::fs::read(d("part/drafter.gguf")).unwrap();
    assert!(a == b, "resumed training differs from an uninterrupted run");

    // Feature noise changes the weights, and a noisy run resumes exactly too.
    let noise = ["--feature-noise", "0.1"];
    train("noisy", &[&["--steps", "6"][..], &noise].concat());
    train(
        "noisy-part",
        &[&["--steps", "6", "--until", "3"][..], &noise].concat(),
    );
    train("noisy-part", &[&["--steps", "6"][..], &noise].concat());
    let n = std::fs::read(d("noisy/drafter.gguf")).unwrap();
    assert!(n != a, "--feature-noise changed nothing");
    assert!(
        n == std::fs::read(d("noisy-part/drafter.gguf")).unwrap(),
        "resumed noisy training differs from an uninterrupted run"
    );
}

/// `--init last-layers`: the drafter starts as the target's last layer and output norm.
#[test]
fn drafter_layers_start_as_the_targets_last_ones() {
    let model = common::model("smollm2-135m", false);
    let tg = Gguf::open(Path::new(model.path())).unwrap();
    let shape = DflashShape::for_target(&tg, 1, &[], 16);
    let embd = Embeddings::of_target(&tg).unwrap();
    let net = Net::new(shape.clone(), embd.rows(&[1, 2, 3]), 5).unwrap();
    tandem::train::init::apply(&net, &tg, tandem::train::Init::LastLayers).unwrap();
    let n = tg.get_int("llama.block_count").unwrap();
    let target = |name: &str| {
        let e = Embeddings::of_tensor(&tg, name).unwrap();
        let rows = tg.tensor(name).unwrap().dims.get(1).copied().unwrap_or(1) as i32;
        e.rows(&(0..rows).collect::<Vec<_>>())
    };
    let ours = |name: &str| -> Vec<f32> { net.p(name).flatten_all().unwrap().to_vec1().unwrap() };
    assert_eq!(ours("output_norm.weight"), target("output_norm.weight"));
    for t in ["ffn_down", "ffn_up", "attn_v", "ffn_norm"] {
        assert_eq!(
            ours(&format!("blk.0.{t}.weight")),
            target(&format!("blk.{}.{t}.weight", n - 1)),
            "{t}"
        );
    }
    // Q/K rows are the target's, reordered within each head for NeoX rotation.
    let (q, tq) = (
        ours("blk.0.attn_q.weight"),
        target(&format!("blk.{}.attn_q.weight", n - 1)),
    );
    assert_ne!(q, tq);
    let mut a: Vec<u32> = q.iter().map(|x| x.to_bits()).collect();
    let mut b: Vec<u32> = tq.iter().map(|x| x.to_bits()).collect();
    a.sort_unstable();
    b.sort_unstable();
    assert_eq!(a, b);
}

/// `--init-from`: a run starts from an exported drafter — its draft vocabulary and every
/// weight; the feature scale folded into `fc.weight` at export is taken back out with the
/// new run's scale, so the network computes what the file computes.
#[test]
fn a_run_starts_from_an_exported_drafter() {
    let model = common::model("smollm2-135m", false);
    let tg = Gguf::open(Path::new(model.path())).unwrap();
    let shape = DflashShape::for_target(&tg, 1, &[], 16);
    let embd = Embeddings::of_target(&tg).unwrap();
    let d2t: Vec<i32> = (0..500).map(|i| i * 11 + 1).collect();
    let vocab = DraftVocab::from_d2t(d2t.clone(), shape.n_vocab);
    let net = Net::new(shape.clone(), embd.rows(&d2t), 5).unwrap();
    let nf = shape.n_features();
    let old_scale: Vec<f32> = (0..nf).map(|i| 0.5 + (i % 7) as f32).collect();
    let new_scale: Vec<f32> = (0..nf).map(|i| 1.0 + (i % 5) as f32).collect();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("d.gguf");
    export(&net, &vocab, &old_scale, &tg, &path, GgmlType::F32).unwrap();

    let dr = Gguf::open(&path).unwrap();
    assert_eq!(
        tandem::train::init::drafter_vocab(&dr, shape.n_vocab).unwrap(),
        d2t
    );
    let other = Net::new(shape.clone(), embd.rows(&d2t), 6).unwrap();
    tandem::train::init::from_drafter(&other, &dr, &shape.target_layers, &new_scale).unwrap();
    let vals =
        |n: &Net, name: &str| -> Vec<f32> { n.p(name).flatten_all().unwrap().to_vec1().unwrap() };
    for (name, _) in &net.params {
        let (a, b) = (vals(&net, name), vals(&other, name));
        if name == "fc.weight" {
            // W·diag(1/s_old)·diag(s_new): what the new run's scaled features need.
            for (i, (x, y)) in a.iter().zip(&b).enumerate() {
                let c = i % nf;
                let want = x / old_scale[c] * new_scale[c];
                assert!(
                    (y - want).abs() <= 1e-6 * want.abs().max(1e-3),
                    "{name}[{i}]"
                );
            }
        } else {
            assert_eq!(a, b, "{name}");
        }
    }
    // A drafter made for other feature layers is refused.
    let err = tandem::train::init::from_drafter(&other, &dr, &[1, 2], &new_scale).unwrap_err();
    assert!(err.to_string().contains("target layers"), "{err}");
}
