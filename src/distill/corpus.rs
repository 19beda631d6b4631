//! An offline prompt corpus for self-distillation: instructions composed from templates in
//! the categories the bench measures (chat, code, math, QA, RAG, summarization,
//! translation), plus passages taken from text files the user points at (source code and
//! documentation already on the machine) for the code, RAG and summarization prompts.
//! Deterministic for a seed and the same input files; any prompt sharing an 8-word run
//! with an excluded file (the bench suites) is dropped, so training never sees the test.
//!
//! Passages are deduplicated (a passage most of whose 8-word runs appeared before is
//! dropped; license and copyright files, thousands of near-copies on a Debian system, are
//! skipped) and capped per file. Every prompt belongs to a group — its template, or its
//! passage's source file — and a share of the groups is held out, so that held-out
//! prompts share no template and no source file with training.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use sha2::Digest;

use crate::sampling::Rng;

const TOPICS: &[&str] = &[
    "photosynthesis",
    "the water cycle",
    "compound interest",
    "black holes",
    "vaccines",
    "the French Revolution",
    "plate tectonics",
    "machine learning",
    "sourdough baking",
    "the stock market",
    "climate change",
    "the immune system",
    "renewable energy",
    "the printing press",
    "quantum computing",
    "honeybees",
    "coral reefs",
    "inflation",
    "the Roman Empire",
    "sleep",
    "electric cars",
    "volcanoes",
    "the internet",
    "public libraries",
    "chess openings",
    "jazz music",
    "the human heart",
    "recycling",
    "solar panels",
    "the Moon landing",
    "antibiotics",
    "urban gardening",
    "earthquakes",
    "marathon training",
    "the Silk Road",
    "nuclear fusion",
    "bird migration",
    "supply chains",
    "cryptography",
    "the Renaissance",
    "ocean tides",
    "meditation",
    "3D printing",
    "rainforests",
    "the periodic table",
    "remote work",
    "glaciers",
    "the Olympic Games",
    "microplastics",
    "time zones",
    "composting",
    "DNA",
    "wind turbines",
    "ancient Egypt",
    "credit scores",
    "the speed of light",
    "mushrooms",
    "open-source software",
    "bridges",
    "coffee",
];

const AUDIENCES: &[&str] = &[
    "a ten-year-old",
    "a busy manager",
    "a first-year university student",
    "my grandmother",
    "a software engineer",
    "a tourist",
    "a high-school teacher",
    "a complete beginner",
];

const CHAT: &[&str] = &[
    "Explain {topic} to {audience} in a few short paragraphs.",
    "Give me five surprising facts about {topic}.",
    "Write a short blog post introduction about {topic}.",
    "What are the most common misconceptions about {topic}? Correct each one briefly.",
    "Write a friendly email inviting {audience} to a talk about {topic}.",
    "Write a short poem about {topic}.",
    "Give me a study plan for learning about {topic} in two weeks.",
    "Write a dialogue between {audience} and an expert about {topic}.",
    "What questions should I ask to understand {topic} better?",
    "Describe the history of {topic} in about 150 words.",
];

const QA: &[&str] = &[
    "What is {topic}?",
    "Why does {topic} matter today?",
    "How does {topic} work, in simple terms?",
    "What are the pros and cons of {topic}?",
    "Who were the key people behind {topic}?",
    "What is one common question people have about {topic}, and its answer?",
];

const LANGS: &[&str] = &[
    "Python",
    "Rust",
    "JavaScript",
    "C",
    "Go",
    "Java",
    "TypeScript",
    "Bash",
];

const CODE_TASKS: &[&str] = &[
    "reverses the words in a sentence",
    "checks whether a string is a palindrome",
    "counts how often each word appears in a text",
    "merges two sorted lists into one sorted list",
    "computes the n-th Fibonacci number iteratively",
    "removes duplicates from a list while keeping the order",
    "parses a date in YYYY-MM-DD format and validates it",
    "finds the largest and smallest number in an array",
    "converts a temperature from Celsius to Fahrenheit",
    "returns the prime numbers below a given limit",
    "flattens a nested list",
    "computes the median of a list of numbers",
    "checks whether two strings are anagrams",
    "implements binary search over a sorted array",
    "reads a CSV line and splits it into fields, honouring quotes",
    "rotates a matrix by 90 degrees",
    "groups a list of words by their first letter",
    "validates an email address with simple rules",
    "computes the greatest common divisor of two integers",
    "implements a simple stack with push, pop and peek",
];

const CODE_ASKS: &[&str] = &[
    "Write a {lang} function that {task}.",
    "Write a {lang} function that {task}, with a short docstring or comment.",
    "Show how to write a {lang} program that {task}, and explain it briefly.",
    "Write unit tests in {lang} for a function that {task}.",
];

const MATH: &[&str] = &[
    "A shop sells pencils at {a} cents each. How much do {b} pencils cost in dollars? Show your steps.",
    "A train travels {a} km in {b} hours. What is its average speed? Explain.",
    "What is {a} multiplied by {b}? Show the long multiplication.",
    "Solve for x: {a}x + {b} = {c}. Show each step.",
    "A rectangle is {a} cm long and {b} cm wide. What are its area and perimeter?",
    "If you save {a} dollars a month for {b} months, how much do you have? Then add 5% interest once.",
    "What is {a}% of {c}? Explain how you computed it.",
    "A recipe for {b} people needs {a} grams of flour. How much flour for {c} people?",
];

const TRANSLATE_TO: &[&str] = &[
    "French",
    "German",
    "Spanish",
    "Italian",
    "Portuguese",
    "Dutch",
];

const SENTENCES: &[&str] = &[
    "The library opens at nine and closes at six on weekdays.",
    "Could you tell me where the nearest train station is?",
    "We are planning a trip to the mountains next summer.",
    "My brother is learning to play the guitar.",
    "The meeting has been moved to Thursday afternoon.",
    "Please remember to water the plants while I am away.",
    "This soup tastes even better the next day.",
    "The museum has a new exhibition about {topic}.",
    "I read an interesting article about {topic} yesterday.",
    "Our teacher explained {topic} with a simple example.",
];

/// Options for [`generate`].
#[derive(Debug, Clone)]
pub struct CorpusOptions {
    /// Number of prompts to generate.
    pub count: usize,
    /// Seed for the generator's RNG.
    pub seed: u64,
    /// Files or directories whose text (source code, documentation) supplies passages.
    pub sources: Vec<PathBuf>,
    /// Files whose prompts must not leak into the corpus (JSON lines with "prompt", or text).
    pub exclude: Vec<PathBuf>,
    /// Held-out prompts to make besides `count` (from held-out groups only).
    pub heldout: usize,
}

/// A corpus: training prompts and held-out prompts from disjoint groups.
#[derive(Debug, Clone, PartialEq)]
pub struct Corpus {
    /// Training prompts.
    pub train: Vec<String>,
    /// Held-out prompts: no template or source file in common with `train`.
    pub heldout: Vec<String>,
}

/// Share of groups (templates, source files) held out.
const HELDOUT_GROUPS: u64 = 8;

/// Whether group `g` is held out: a fixed hash, so the split does not depend on the seed
/// or on which other groups exist.
fn held_out(g: &str) -> bool {
    let h = sha2::Sha256::digest(g.as_bytes());
    (h[0] as u64).is_multiple_of(HELDOUT_GROUPS)
}

/// Passages kept per source file, so that no one file dominates.
const PER_FILE: usize = 4;

fn pick<'a>(rng: &mut Rng, xs: &[&'a str]) -> &'a str {
    xs[(rng.next_u64() % xs.len() as u64) as usize]
}

/// A template and its group name (its category and index).
fn pick_template<'a>(rng: &mut Rng, kind: &str, xs: &[&'a str]) -> (&'a str, String) {
    let i = (rng.next_u64() % xs.len() as u64) as usize;
    (xs[i], format!("{kind}/{i}"))
}

fn fill(t: &str, rng: &mut Rng) -> String {
    let n = |rng: &mut Rng, lo: u64, hi: u64| (lo + rng.next_u64() % (hi - lo)).to_string();
    t.replace("{topic}", pick(rng, TOPICS))
        .replace("{audience}", pick(rng, AUDIENCES))
        .replace("{lang}", pick(rng, LANGS))
        .replace("{task}", pick(rng, CODE_TASKS))
        .replace("{a}", &n(rng, 2, 90))
        .replace("{b}", &n(rng, 2, 40))
        .replace("{c}", &n(rng, 40, 500))
}

/// A passage and the file it came from.
struct Passage {
    text: String,
    file: String,
}

/// Files that hold boilerplate copied across thousands of packages.
fn boilerplate(f: &Path) -> bool {
    let name = f
        .file_name()
        .map(|n| n.to_string_lossy().to_lowercase())
        .unwrap_or_default();
    [
        "copyright",
        "license",
        "licence",
        "copying",
        "changelog",
        "notice",
    ]
    .iter()
    .any(|b| name.starts_with(b))
}

/// Paragraph-sized passages (300–1500 characters) from the text files under `sources`:
/// at most `PER_FILE` per file, files visited in a seeded order, near-duplicates dropped.
fn passages(sources: &[PathBuf], seed: u64) -> Vec<Passage> {
    let mut files = Vec::new();
    for s in sources {
        let mut fs = Vec::new();
        walk(s, &mut fs, 0);
        // Named relative to the source given (stable across machines and temp dirs).
        files.extend(fs.into_iter().map(|f| {
            let name = match f.strip_prefix(s) {
                Ok(r) if !r.as_os_str().is_empty() => r.display().to_string(),
                _ => f
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
            };
            (f, name)
        }));
    }
    files.sort();
    files.retain(|(f, _)| !boilerplate(f));
    let mut rng = Rng::new(seed ^ 0x5eed);
    for i in (1..files.len()).rev() {
        files.swap(i, (rng.next_u64() % (i as u64 + 1)) as usize);
    }
    let mut seen: HashSet<u64> = HashSet::new();
    let mut out = Vec::new();
    for (f, name) in files {
        let Ok(text) = std::fs::read_to_string(&f) else {
            continue; // binary or unreadable
        };
        let mut kept = 0;
        for para in text.split("\n\n") {
            let p = para.trim();
            if !(300..=1500).contains(&p.len()) || !p.chars().all(|c| c == '\n' || !c.is_control())
            {
                continue;
            }
            let sh: Vec<u64> = shingles(p).iter().map(|s| hash64(s)).collect();
            let old = sh.iter().filter(|h| seen.contains(h)).count();
            seen.extend(&sh);
            if sh.is_empty() || 2 * old >= sh.len() {
                continue; // most of it seen before
            }
            out.push(Passage {
                text: p.to_string(),
                file: name.clone(),
            });
            kept += 1;
            if kept == PER_FILE {
                break;
            }
        }
        if out.len() > 50_000 {
            break;
        }
    }
    out
}

fn hash64(s: &str) -> u64 {
    let h = sha2::Sha256::digest(s.as_bytes());
    u64::from_le_bytes(h[..8].try_into().expect("8 bytes"))
}

fn walk(p: &Path, out: &mut Vec<PathBuf>, depth: usize) {
    if p.is_file() {
        out.push(p.to_path_buf());
    } else if p.is_dir()
        && depth < 8
        && let Ok(rd) = std::fs::read_dir(p)
    {
        for e in rd.flatten() {
            walk(&e.path(), out, depth + 1);
        }
    }
}

fn shingles(s: &str) -> Vec<String> {
    let w: Vec<String> = s.split_whitespace().map(|w| w.to_lowercase()).collect();
    w.windows(8).map(|x| x.join(" ")).collect()
}

/// `count` distinct training prompts and `heldout` held-out ones.
pub fn generate(o: &CorpusOptions) -> Result<Corpus, String> {
    let mut banned = HashSet::new();
    for f in &o.exclude {
        for p in super::collect::load_prompt_texts(f)? {
            banned.insert(p.trim().to_lowercase());
            banned.extend(shingles(&p));
        }
    }
    let passages = passages(&o.sources, o.seed);
    let mut rng = Rng::new(o.seed);
    let mut seen = HashSet::new();
    let mut c = Corpus {
        train: Vec::with_capacity(o.count),
        heldout: Vec::with_capacity(o.heldout),
    };
    let mut tries = 0usize;
    while c.train.len() < o.count || c.heldout.len() < o.heldout {
        tries += 1;
        if tries > (o.count + o.heldout) * 50 + 1000 {
            return Err(format!(
                "only {} + {} held-out distinct prompts could be made; add --from sources or ask for fewer",
                c.train.len(),
                c.heldout.len()
            ));
        }
        let kind = rng.next_u64() % if passages.is_empty() { 5 } else { 8 };
        // Template-only kinds: (group name, templates).
        let simple: [(&str, &[&str]); 4] = [
            ("chat", CHAT),
            ("qa", QA),
            ("code", CODE_ASKS),
            ("math", MATH),
        ];
        let (p, group) = match kind {
            0..=3 => {
                let (name, xs) = simple[kind as usize];
                let (t, g) = pick_template(&mut rng, name, xs);
                (fill(t, &mut rng), g)
            }
            4 => {
                let (t, g) = pick_template(&mut rng, "translate", SENTENCES);
                (
                    format!(
                        "Translate into {}: {}",
                        pick(&mut rng, TRANSLATE_TO),
                        fill(t, &mut rng)
                    ),
                    g,
                )
            }
            k => {
                let ps = &passages[(rng.next_u64() % passages.len() as u64) as usize];
                let passage = &ps.text;
                let p = match k {
                    5 => format!("Summarize the following text in a few sentences.\n\n{passage}"),
                    6 => format!(
                        "Answer using only the context below.\n\nContext:\n{passage}\n\nQuestion: What is the main purpose of what is described here?"
                    ),
                    _ => format!(
                        "Explain what the following text or code does, step by step.\n\n{passage}"
                    ),
                };
                (p, format!("file:{}", ps.file))
            }
        };
        let side = if held_out(&group) {
            &mut c.heldout
        } else {
            &mut c.train
        };
        let want = if held_out(&group) { o.heldout } else { o.count };
        if side.len() >= want
            || banned.contains(&p.trim().to_lowercase())
            || shingles(&p).iter().any(|s| banned.contains(s))
            || !seen.insert(p.clone())
        {
            continue;
        }
        side.push(p);
    }
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn corpus_is_deterministic_distinct_and_keeps_excluded_prompts_out() {
        let dir = tempfile::tempdir().unwrap();
        // A source file in a training group (the split is a fixed hash of the name).
        let name = (0..)
            .map(|i| format!("doc{i}.txt"))
            .find(|n| !held_out(&format!("file:{n}")))
            .unwrap();
        let src = dir.path().join(name);
        let para = "word ".repeat(80);
        std::fs::write(&src, format!("{para}\n\nshort\n\n{}", "other ".repeat(90))).unwrap();
        let ex = dir.path().join("bench.jsonl");
        // Ban one whole template instance's 8-word run.
        std::fs::write(
            &ex,
            "{\"prompt\": \"Give me five surprising facts about photosynthesis.\"}\n",
        )
        .unwrap();
        let o = CorpusOptions {
            count: 2000,
            seed: 7,
            sources: vec![dir.path().to_path_buf()],
            exclude: vec![ex],
            heldout: 40,
        };
        let c = generate(&o).unwrap();
        assert_eq!(c, generate(&o).unwrap());
        let a = &c.train;
        assert_eq!((a.len(), c.heldout.len()), (2000, 40));
        assert_eq!(a.iter().collect::<HashSet<_>>().len(), 2000);
        assert!(!c.heldout.iter().any(|p| a.contains(p)));
        assert!(
            !a.iter()
                .any(|p| p.contains("surprising facts about photosynthesis"))
        );
        assert!(a.iter().any(|p| p.starts_with("Summarize")));
        assert!(a.iter().any(|p| p.starts_with("Translate into")));
    }
}
