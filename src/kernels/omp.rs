//! Parallel loops on ggml's OpenMP thread team (see `cpp/omp_team.cpp` for why).

use std::ffi::{c_int, c_void};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Mutex;

unsafe extern "C" {
    fn tandem_omp_run(
        n_threads: c_int,
        n_tasks: c_int,
        f: extern "C" fn(*mut c_void, c_int),
        ctx: *mut c_void,
    );
}

struct Job<'a> {
    f: &'a (dyn Fn(usize) + Sync),
    /// The first panic of a task, re-raised on the caller once the team is done (a panic
    /// must not unwind through the C frames).
    panic: Mutex<Option<Box<dyn std::any::Any + Send>>>,
}

extern "C" fn trampoline(ctx: *mut c_void, i: c_int) {
    // SAFETY: `ctx` is the `Job` that `run` passed and keeps alive until the team returns.
    let job = unsafe { &*(ctx as *const Job) };
    if let Err(p) = catch_unwind(AssertUnwindSafe(|| (job.f)(i as usize))) {
        job.panic
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_or_insert(p);
    }
}

/// `f(i)` for every `i` in `0..n` on up to `threads` OpenMP threads (the caller is one of
/// them); returns when all are done. A panic in `f` is re-raised here.
pub fn run(threads: usize, n: usize, f: &(dyn Fn(usize) + Sync)) {
    if n == 0 {
        return;
    }
    if threads <= 1 || n == 1 {
        (0..n).for_each(f);
        return;
    }
    let job = Job {
        f,
        panic: Mutex::new(None),
    };
    let n = c_int::try_from(n).expect("task count fits in c_int");
    let t = c_int::try_from(threads).unwrap_or(c_int::MAX);
    // SAFETY: `trampoline` only reads `job`, which outlives the call; OpenMP joins every
    // task before `tandem_omp_run` returns.
    unsafe { tandem_omp_run(t, n, trampoline, &job as *const Job as *mut c_void) };
    if let Some(p) = job.panic.into_inner().unwrap_or_else(|e| e.into_inner()) {
        std::panic::resume_unwind(p);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn every_task_runs_once_and_panics_come_back() {
        let hits: Vec<AtomicUsize> = (0..100).map(|_| AtomicUsize::new(0)).collect();
        run(2, 100, &|i| {
            hits[i].fetch_add(1, Ordering::Relaxed);
        });
        assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 1));
        let r = catch_unwind(|| run(2, 10, &|i| assert!(i != 7, "task seven")));
        assert!(r.is_err());
    }
}
