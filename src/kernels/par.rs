//! Parallel loops for Tandem's own compute (the drafter's layers, the lazy output head).
//!
//! They run on ggml's OpenMP team (`kernels::omp`): spawning threads per product cost ~80 µs
//! each on our 2-core machine (two `std::thread::scope` spawns + joins), and any separate
//! pool competes for the cores with libgomp's workers, which spin for milliseconds after
//! every llama.cpp decode.

use std::sync::Mutex;

/// How many threads Tandem's own compute may use; the threads are OpenMP's.
#[derive(Debug, Clone)]
pub struct Pool {
    threads: usize,
}

impl Pool {
    /// A pool of `threads` threads (at least 1).
    pub fn new(threads: usize) -> Self {
        Self {
            threads: threads.max(1),
        }
    }

    /// The number of threads.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// `f(i)` for `i` in `0..n`, in parallel, results in order.
    pub fn map<R: Send>(&self, n: usize, f: impl Fn(usize) -> R + Sync) -> Vec<R> {
        let slots: Vec<Mutex<Option<R>>> = (0..n).map(|_| Mutex::new(None)).collect();
        crate::kernels::omp::run(self.threads, n, &|i| {
            *slots[i].lock().unwrap_or_else(|e| e.into_inner()) = Some(f(i));
        });
        slots
            .into_iter()
            .map(|s| {
                s.into_inner()
                    .unwrap_or_else(|e| e.into_inner())
                    .expect("every task ran")
            })
            .collect()
    }

    /// `f(i, items[i])` for every item, in parallel: hands each task its own (e.g. a set
    /// of disjoint `&mut` slices to fill in place).
    pub fn for_each_owned<T: Send>(&self, items: Vec<T>, f: impl Fn(usize, T) + Sync) {
        let slots: Vec<Mutex<Option<T>>> = items.into_iter().map(|t| Mutex::new(Some(t))).collect();
        crate::kernels::omp::run(self.threads, slots.len(), &|i| {
            let item = slots[i]
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take()
                .expect("each item is taken once");
            f(i, item);
        });
    }

    /// `0..len` cut into about `parts_per_thread × threads` contiguous ranges (at least
    /// `min_len` long, except the last): more parts than threads lets a worker that was
    /// delayed (another process, llama.cpp's own threads winding down) be helped out.
    pub fn ranges(
        &self,
        len: usize,
        parts_per_thread: usize,
        min_len: usize,
    ) -> Vec<std::ops::Range<usize>> {
        let parts = (self.threads * parts_per_thread)
            .min(len / min_len.max(1))
            .max(1);
        let chunk = len.div_ceil(parts).max(1);
        (0..len)
            .step_by(chunk)
            .map(|lo| lo..(lo + chunk).min(len))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn map_keeps_order_and_ranges_cover_everything() {
        for t in [1, 2, 3] {
            let p = Pool::new(t);
            assert_eq!(p.map(5, |i| i * i), vec![0, 1, 4, 9, 16]);
            let mut v = vec![0; 10];
            let parts: Vec<&mut [i32]> = v.chunks_mut(3).collect();
            p.for_each_owned(parts, |i, s| s.fill(i as i32));
            assert_eq!(v, [0, 0, 0, 1, 1, 1, 2, 2, 2, 3]);
            for len in [0, 1, 7, 100, 1001] {
                let r = p.ranges(len, 4, 8);
                let flat: Vec<usize> = r.iter().flat_map(|r| r.clone()).collect();
                assert_eq!(flat, (0..len).collect::<Vec<_>>());
            }
        }
    }
}
