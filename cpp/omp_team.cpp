// Runs Tandem's own parallel work (the Rust drafter's products, the lazy head) on the same
// OpenMP thread team that ggml uses for llama.cpp's decodes. After a decode, libgomp's
// workers keep spinning for several milliseconds waiting for the next parallel region; a
// separate Rust thread pool would fight them for the cores (measured: a 2-thread Rust pool
// ran no faster than 1 thread right after a target decode). Handing the work to that
// very team turns the spinning into useful work and starts it without a wake-up.

#include <omp.h>

extern "C" {

// Calls f(ctx, i) for i in [0, n_tasks) on n_threads OpenMP threads (dynamic schedule, so
// a delayed thread is helped out). f must not throw or unwind.
void tandem_omp_run(int n_threads, int n_tasks, void (*f)(void *, int), void * ctx) {
#pragma omp parallel for num_threads(n_threads) schedule(dynamic, 1)
    for (int i = 0; i < n_tasks; i++) {
        f(ctx, i);
    }
}

}
