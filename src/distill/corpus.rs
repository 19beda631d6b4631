//! An offline prompt corpus for self-distillation: instructions composed from templates in
//! the categories the bench measures (chat, code, math, QA, RAG, summarization,
//! translation), plus passages taken from text files the user points at (source code and
//! documentation already on the machine) for the code, RAG and summarization prompts.
//! Deterministic for a seed and the same input files; any prompt sharing an 8-word run
//! with an excluded file (the bench suites) is dropped, so training never sees the test.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

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
}

fn pick<'a>(rng: &mut Rng, xs: &[&'a str]) -> &'a str {
    xs[(rng.next_u64() % xs.len() as u64) as usize]
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

/// Paragraph-sized passages (300–1500 characters) from the text files under `sources`.
fn passages(sources: &[PathBuf]) -> Vec<String> {
    let mut files = Vec::new();
    for s in sources {
        walk(s, &mut files, 0);
    }
    files.sort();
    let mut out = Vec::new();
    for f in files {
        let Ok(text) = std::fs::read_to_string(&f) else {
            continue; // binary or unreadable
        };
        for para in text.split("\n\n") {
            let p = para.trim();
            if (300..=1500).contains(&p.len()) && p.chars().all(|c| c == '\n' || !c.is_control()) {
                out.push(p.to_string());
            }
        }
        if out.len() > 50_000 {
            break;
        }
    }
    out
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

/// `count` distinct prompts.
pub fn generate(o: &CorpusOptions) -> Result<Vec<String>, String> {
    let mut banned = HashSet::new();
    for f in &o.exclude {
        for p in super::collect::load_prompt_texts(f)? {
            banned.insert(p.trim().to_lowercase());
            banned.extend(shingles(&p));
        }
    }
    let passages = passages(&o.sources);
    let mut rng = Rng::new(o.seed);
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(o.count);
    let mut tries = 0usize;
    while out.len() < o.count {
        tries += 1;
        if tries > o.count * 50 + 1000 {
            return Err(format!(
                "only {} distinct prompts could be made; add --from sources or ask for fewer",
                out.len()
            ));
        }
        let kind = rng.next_u64() % if passages.is_empty() { 5 } else { 8 };
        let p = match kind {
            0 => fill(pick(&mut rng, CHAT), &mut rng),
            1 => fill(pick(&mut rng, QA), &mut rng),
            2 => fill(pick(&mut rng, CODE_ASKS), &mut rng),
            3 => fill(pick(&mut rng, MATH), &mut rng),
            4 => format!(
                "Translate into {}: {}",
                pick(&mut rng, TRANSLATE_TO),
                fill(pick(&mut rng, SENTENCES), &mut rng)
            ),
            k => {
                let passage = &passages[(rng.next_u64() % passages.len() as u64) as usize];
                match k {
                    5 => format!("Summarize the following text in a few sentences.\n\n{passage}"),
                    6 => format!(
                        "Answer using only the context below.\n\nContext:\n{passage}\n\nQuestion: What is the main purpose of what is described here?"
                    ),
                    _ => format!(
                        "Explain what the following text or code does, step by step.\n\n{passage}"
                    ),
                }
            }
        };
        if banned.contains(&p.trim().to_lowercase())
            || shingles(&p).iter().any(|s| banned.contains(s))
            || !seen.insert(p.clone())
        {
            continue;
        }
        out.push(p);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn corpus_is_deterministic_distinct_and_keeps_excluded_prompts_out() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("doc.txt");
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
        };
        let a = generate(&o).unwrap();
        assert_eq!(a, generate(&o).unwrap());
        assert_eq!(a.len(), 2000);
        assert_eq!(a.iter().collect::<HashSet<_>>().len(), 2000);
        assert!(
            !a.iter()
                .any(|p| p.contains("surprising facts about photosynthesis"))
        );
        assert!(a.iter().any(|p| p.starts_with("Summarize")));
        assert!(a.iter().any(|p| p.starts_with("Translate into")));
    }
}
