//! Hostile files: the GGUF reader, the lazy head's loader and the drafter loader on real
//! model and drafter files that were truncated, bit-flipped and spliced (proptest). Every
//! case must end in a clean error or a successful load — never a panic, a hang, or an
//! allocation sized by a length read from the file. A counting global allocator records
//! the largest single allocation of each case.
//!
//! Cases: `TANDEM_FUZZ_CASES` (default 48 per file kind, a few seconds in CI; set it to
//! thousands for a longer run).

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use tandem::draft::diffusion::DflashModel;
use tandem::gguf::Gguf;
use tandem::head::OutputHead;

struct Counting;

static LARGEST: AtomicUsize = AtomicUsize::new(0);
static TRACK: AtomicBool = AtomicBool::new(false);

// SAFETY: forwards to the system allocator; only records sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        if TRACK.load(Ordering::Relaxed) {
            LARGEST.fetch_max(l.size(), Ordering::Relaxed);
        }
        // SAFETY: same layout contract as the caller's.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: `p` came from `System.alloc` with `l`.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        if TRACK.load(Ordering::Relaxed) {
            LARGEST.fetch_max(n, Ordering::Relaxed);
        }
        // SAFETY: as for `alloc`/`dealloc`.
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// One mutation of a file's bytes.
#[derive(Debug, Clone)]
enum Mutation {
    /// Keep only the first part (a fraction of the length) of the file.
    Truncate(f64),
    /// XOR a byte at a position (fraction of the header region, or of the whole file).
    Flip { at: f64, mask: u8, header: bool },
    /// Overwrite 8 bytes with a value (lengths and counts are u64 in GGUF).
    Word { at: f64, value: u64 },
    /// Copy a run of bytes from one place to another.
    Splice { from: f64, to: f64, len: usize },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (0.0..1.0f64).prop_map(Mutation::Truncate),
        (0.0..1.0f64, 1..=255u8, prop::bool::weighted(0.8))
            .prop_map(|(at, mask, header)| Mutation::Flip { at, mask, header }),
        (
            0.0..1.0f64,
            prop_oneof![Just(0u64), Just(u64::MAX), Just(1u64 << 40), any::<u64>()]
        )
            .prop_map(|(at, value)| Mutation::Word { at, value }),
        (0.0..1.0f64, 0.0..1.0f64, 1..4096usize).prop_map(|(from, to, len)| Mutation::Splice {
            from,
            to,
            len
        }),
    ]
}

/// Apply mutations; `header` is the length of the metadata + tensor directory region,
/// where most structure (and most parsing) lives.
fn apply(bytes: &[u8], header: usize, ms: &[Mutation]) -> Vec<u8> {
    let mut b = bytes.to_vec();
    for m in ms {
        if b.len() < 16 {
            break;
        }
        let pos = |f: f64, n: usize| ((f * n as f64) as usize).min(n - 1);
        match *m {
            Mutation::Truncate(_) => {} // applied to the whole file by `fuzz`
            Mutation::Flip {
                at,
                mask,
                header: h,
            } => {
                let n = if h { header.min(b.len()) } else { b.len() };
                let i = pos(at, n);
                b[i] ^= mask;
            }
            Mutation::Word { at, value } => {
                let i = pos(at, header.min(b.len()).saturating_sub(8).max(1));
                let end = (i + 8).min(b.len());
                b[i..end].copy_from_slice(&value.to_le_bytes()[..end - i]);
            }
            Mutation::Splice { from, to, len } => {
                let n = header.min(b.len());
                let (f, t) = (pos(from, n), pos(to, n));
                let len = len.min(b.len() - f).min(b.len() - t);
                let run = b[f..f + len].to_vec();
                b[t..t + len].copy_from_slice(&run);
            }
        }
    }
    b
}

fn cases() -> u32 {
    std::env::var("TANDEM_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(48)
}

/// Run `load` on mutated copies of `src`; each must return without panicking, within a
/// time bound, allocating no single block larger than `max_alloc`. With `header_only`, only
/// the metadata and tensor directory are copied and the data section is left as zeros (a
/// sparse file of the original length: big models stay cheap to mutate).
fn fuzz(src: &Path, header_only: bool, max_alloc: usize, load: &dyn Fn(&Path) -> bool) {
    let full_len = std::fs::metadata(src).unwrap().len();
    let g = Gguf::open(src).unwrap();
    let header = g.data_start() as usize;
    let mut bytes = std::fs::read(src).unwrap();
    if header_only {
        bytes.truncate(header);
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hostile.gguf");
    let (ok, refused) = (std::cell::Cell::new(0), std::cell::Cell::new(0));
    let mut runner = TestRunner::new(Config {
        cases: cases(),
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&prop::collection::vec(mutation(), 1..4), |ms| {
            let b = apply(&bytes, header, &ms);
            // A truncation anywhere in the original file.
            let len = match ms.iter().find_map(|m| match m {
                Mutation::Truncate(f) => Some((f * full_len as f64) as u64),
                _ => None,
            }) {
                Some(cut) => cut,
                None => full_len,
            };
            let f = std::fs::File::create(&path).unwrap();
            std::io::Write::write_all(&mut &f, &b[..b.len().min(len as usize)]).unwrap();
            f.set_len(len).unwrap();
            drop(f);
            LARGEST.store(0, Ordering::Relaxed);
            TRACK.store(true, Ordering::Relaxed);
            let t = Instant::now();
            let loaded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| load(&path)));
            TRACK.store(false, Ordering::Relaxed);
            let largest = LARGEST.load(Ordering::Relaxed);
            prop_assert!(loaded.is_ok(), "panicked on {ms:?}");
            prop_assert!(
                t.elapsed() < Duration::from_secs(20),
                "took {:?} on {ms:?}",
                t.elapsed()
            );
            prop_assert!(
                largest <= max_alloc,
                "allocated {largest} bytes at once on {ms:?}"
            );
            let c = if loaded.unwrap() { &ok } else { &refused };
            c.set(c.get() + 1);
            Ok(())
        })
        .unwrap();
    eprintln!(
        "{}: {} cases, {} still loaded, {} refused cleanly",
        src.display(),
        ok.get() + refused.get(),
        ok.get(),
        refused.get()
    );
}

/// Read every tensor of a GGUF (the reader's whole surface).
fn read_all(p: &Path) -> bool {
    match Gguf::open(p) {
        Ok(g) => g.tensors.iter().all(|t| g.read_tensor(&t.name).is_ok()),
        Err(e) => {
            assert!(!e.to_string().is_empty());
            false
        }
    }
}

#[test]
fn hostile_drafter_files_are_refused_cleanly() {
    let _g = common::exclusive();
    let target = common::model("smollm2-135m", false);
    let drafter = tandem::models::shipped_drafter("smollm2-135m").expect("shipped drafter");
    let head = common::head(&target);
    let size = std::fs::metadata(&drafter).unwrap().len() as usize;
    // The loader copies the target's shared embeddings (49,152 × 576 Q8_0, 30 MB) and
    // the drafter's own tensors: nothing may exceed that by an order of magnitude.
    fuzz(&drafter, false, 4 * size.max(32 << 20), &|p| {
        let a = read_all(p);
        let b = DflashModel::load(p, &target, || Some(head.clone()), 1).is_ok();
        a && b
    });
}

#[test]
fn hostile_model_files_are_refused_cleanly() {
    let _g = common::exclusive();
    let model = tandem::models::resolve("smollm2-135m").unwrap();
    // The head (49,152 × 576 Q8_0) is 30 MB; the reader may allocate that, never more
    // than a small multiple of it.
    fuzz(&model, true, 128 << 20, &|p| {
        let a = read_all(p);
        let b = OutputHead::load(p, 49152, 576, 1).is_ok();
        a && b
    });
}
