// A thin C entry point over llama.cpp's own DFlash drafter graph (src/models/dflash.cpp),
// driven the way common/speculative.cpp drives it: target features are injected into the
// drafter's KV cache with an embedding batch, then the block [last, <mask>...] is decoded
// non-causally in one pass. Tandem uses it as the reference for its Rust forward pass
// (parity tests) and as the speed baseline.

#include "common.h"
#include "llama.h"

#include <cstring>
#include <exception>
#include <string>
#include <vector>

extern "C" {

struct tandem_dflash {
    llama_model * model = nullptr;
    llama_context * ctx = nullptr;
    int32_t n_vocab = 0;
    int32_t n_embd_enc = 0;
    int32_t n_batch = 0;
    common_batch * batch = nullptr;
};

void tandem_dflash_free(tandem_dflash * d) {
    if (!d) return;
    delete d->batch;
    if (d->ctx) llama_free(d->ctx);
    if (d->model) llama_model_free(d->model);
    delete d;
}

// exact: keep the drafter's KV cache in F32 without flash attention and without weight
// repacking, so the graph's arithmetic is plain f32 (parity tests). Otherwise llama.cpp's
// defaults (F16 cache, flash attention as llama.cpp decides) - the speed baseline.
tandem_dflash * tandem_dflash_open(const char * path, llama_context * ctx_tgt, int32_t n_ctx,
                                   int32_t n_threads, int32_t n_features, bool exact, char * err, size_t err_len) {
    auto fail = [&](const std::string & m) -> tandem_dflash * {
        if (err && err_len) { std::strncpy(err, m.c_str(), err_len - 1); err[err_len - 1] = 0; }
        return nullptr;
    };
    try {
        auto * d = new tandem_dflash();
        llama_model_params mp = llama_model_default_params();
        mp.use_extra_bufts = !exact;
        d->model = llama_model_load_from_file(path, mp);
        if (!d->model) { tandem_dflash_free(d); return fail("llama.cpp could not load the drafter"); }
        llama_context_params cp = llama_context_default_params();
        cp.n_ctx = n_ctx;
        cp.n_batch = 512;
        cp.n_ubatch = 512;
        cp.n_seq_max = 1;
        cp.n_threads = n_threads;
        cp.n_threads_batch = n_threads;
        cp.no_perf = true;
        cp.ctx_other = ctx_tgt;
        if (exact) {
            cp.type_k = GGML_TYPE_F32;
            cp.type_v = GGML_TYPE_F32;
            cp.flash_attn_type = LLAMA_FLASH_ATTN_TYPE_DISABLED;
        }
        d->ctx = llama_init_from_model(d->model, cp);
        if (!d->ctx) { tandem_dflash_free(d); return fail("llama.cpp could not create the drafter context"); }
        llama_set_causal_attn(d->ctx, false);
        d->n_vocab = llama_vocab_n_tokens(llama_model_get_vocab(d->model));
        d->n_embd_enc = n_features; // target layers x target hidden size
        d->n_batch = 512;
        d->batch = new common_batch(d->ctx);
        return d;
    } catch (const std::exception & e) {
        return fail(e.what());
    }
}


// Inject the features of positions pos0..pos0+n (n rows of n_features floats).
int32_t tandem_dflash_inject(tandem_dflash * d, const float * feats, int32_t n, int32_t pos0) {
    for (int32_t off = 0; off < n; off += d->n_batch) {
        const int32_t m = std::min(d->n_batch, n - off);
        d->batch->clear();
        for (int32_t i = 0; i < m; ++i) {
            const llama_pos p = pos0 + off + i;
            const llama_pos pos_arr[4] = { p, p, p, 0 };
            d->batch->add_embd({ feats + (size_t) (off + i) * d->n_embd_enc, 1, (size_t) d->n_embd_enc }, pos_arr, 0, false);
        }
        const int32_t rc = llama_process(d->ctx, LLAMA_PROCESS_TYPE_DECODE, d->batch->get());
        if (rc != 0) return rc;
    }
    return 0;
}

// Decode the block tokens[0..n] at positions pos0.. and copy the logits of rows 1..n into
// out ((n - 1) x n_vocab); the block's cells are removed from the cache afterwards.
int32_t tandem_dflash_block(tandem_dflash * d, const int32_t * tokens, int32_t n, int32_t pos0, float * out) {
    d->batch->clear();
    for (int32_t i = 0; i < n; ++i) {
        d->batch->add(tokens[i], pos0 + i, 0, true);
    }
    const int32_t rc = llama_process(d->ctx, LLAMA_PROCESS_TYPE_DECODE, d->batch->get());
    if (rc == 0 && out) {
        for (int32_t i = 1; i < n; ++i) {
            const float * l = llama_get_logits_ith(d->ctx, i);
            if (!l) return -100;
            std::memcpy(out + (size_t) (i - 1) * d->n_vocab, l, sizeof(float) * d->n_vocab);
        }
    }
    llama_memory_seq_rm(llama_get_memory(d->ctx), 0, pos0, -1);
    return rc;
}

void tandem_dflash_clear(tandem_dflash * d) {
    llama_memory_clear(llama_get_memory(d->ctx), true);
}

}
