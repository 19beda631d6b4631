// A thin C entry point over llama.cpp's own speculative decoding (common/speculative.h),
// so Tandem's benchmarks can run llama.cpp's n-gram modes in the same binary, with the same
// build flags and the exact vendored llama.cpp version, on a context Tandem created.
//
// The loop follows llama.cpp's speculative-simple example: decode the prompt but its last
// token, then per round draft with common_speculative_draft, decode [last, draft...] in one
// batch, accept the greedy-agreeing prefix, common_speculative_accept, seq_rm the rest.
//
// `draft-dflash` (llama.cpp's DFlash block-diffusion drafter) additionally needs the drafter
// model and its context (ctx_other = the target context, whose token embeddings and head
// the drafter shares), the target's layer inputs injected after every target decode
// (common_speculative_process), and the drafter's cache trimmed like the target's.

#include "common.h"
#include "speculative.h"
#include "llama.h"
#include "llama-ext.h"

#include <algorithm>
#include <chrono>
#include <memory>
#include <set>
#include <cstring>
#include <exception>
#include <string>
#include <vector>

extern "C" {

struct tandem_llama_spec_stats {
    int32_t n_generated;
    int32_t n_rounds;
    int32_t n_drafted;
    int32_t n_accepted;
    double t_prefill_s;
    double t_draft_s;
    double t_verify_s;
    double t_total_s;
};

// spec_types: comma-separated llama.cpp names ("ngram-simple", "ngram-mod", "ngram-map-k",
// "ngram-cache", "draft-dflash", ...) or "none" for plain decoding; drafter_path: the dflash
// GGUF for draft-dflash (else ignored). Returns 0 on success; otherwise writes a message
// into err.
int tandem_llama_spec_generate(llama_context * ctx, const int32_t * prompt, int32_t n_prompt,
                               int32_t n_predict, const char * spec_types, int32_t draft_max,
                               const char * drafter_path,
                               int32_t * out_tokens, tandem_llama_spec_stats * stats,
                               char * err, size_t err_len) {
    using clk = std::chrono::steady_clock;
    auto secs = [](clk::time_point a, clk::time_point b) { return std::chrono::duration<double>(b - a).count(); };
    auto fail = [&](const std::string & m) {
        if (err && err_len) { std::strncpy(err, m.c_str(), err_len - 1); err[err_len - 1] = 0; }
        return 1;
    };
    try {
        std::memset(stats, 0, sizeof(*stats));
        if (n_prompt < 2) return fail("prompt needs at least 2 tokens");
        const llama_model * model = llama_get_model(ctx);
        const llama_vocab * vocab = llama_model_get_vocab(model);
        const int n_vocab = llama_vocab_n_tokens(vocab);
        const int n_ctx = (int) llama_n_ctx(ctx);
        const int n_batch = (int) llama_n_batch(ctx);
        if (n_prompt + 1 >= n_ctx) return fail("prompt longer than the context");

        // Declaration order = reverse destruction order: spec before the drafter context,
        // the context before its model, the layer-input switch-off last.
        struct model_del { void operator()(llama_model * m) const { llama_model_free(m); } };
        struct ctx_del { void operator()(llama_context * c) const { llama_free(c); } };
        std::vector<int32_t> dflash_layers;
        struct layer_inp_off {
            llama_context * ctx; std::vector<int32_t> * ids;
            ~layer_inp_off() { for (int32_t l : *ids) llama_set_embeddings_layer_inp(ctx, (uint32_t) l, false); }
        } restore{ctx, &dflash_layers};
        std::unique_ptr<llama_model, model_del> model_dft;
        std::unique_ptr<llama_context, ctx_del> ctx_dft;
        common_speculative_ptr spec;
        std::string types = spec_types ? spec_types : "none";
        if (types != "none") {
            common_params_speculative params;
            std::vector<std::string> names;
            size_t start = 0;
            while (start <= types.size()) {
                size_t end = types.find(',', start);
                if (end == std::string::npos) end = types.size();
                names.push_back(types.substr(start, end - start));
                start = end + 1;
            }
            params.types = common_speculative_types_from_names(names);
            const bool dflash = std::find(params.types.begin(), params.types.end(),
                                          COMMON_SPECULATIVE_TYPE_DRAFT_DFLASH) != params.types.end();
            if (dflash) {
                if (!drafter_path || !*drafter_path) return fail("draft-dflash needs a drafter file (--drafter)");
                // Only some architectures' graphs expose the layer inputs the drafter reads;
                // on others llama.cpp aborts the process (GGML_ASSERT), so refuse up front.
                char arch[128] = {0};
                llama_model_meta_val_str(model, "general.architecture", arch, sizeof(arch));
                static const std::set<std::string> with_layer_inputs = {
                    "llama", "qwen3", "qwen3moe", "qwen35", "qwen35moe", "qwen3next", "gemma3n", "gemma4", "lfm2"};
                if (!with_layer_inputs.count(arch)) {
                    return fail(std::string("llama.cpp's draft-dflash cannot run on a '") + arch +
                                "' target (its graph does not expose the layer inputs a DFlash drafter reads)");
                }
                llama_model_params mp = llama_model_default_params();
                model_dft.reset(llama_model_load_from_file(drafter_path, mp));
                if (!model_dft) return fail(std::string("llama.cpp could not load the drafter ") + drafter_path);
                const uint32_t n_ids = llama_model_target_layer_ids_n(model_dft.get());
                const int32_t * ids = llama_model_target_layer_ids(model_dft.get());
                if (n_ids == 0 || !ids) return fail(std::string(drafter_path) + " is not a DFlash drafter (no target layers)");
                for (uint32_t i = 0; i < n_ids; ++i) {
                    if (ids[i] <= 0 || ids[i] >= llama_model_n_layer(model)) return fail("drafter target layer out of range");
                    dflash_layers.push_back(ids[i]);
                }
                llama_context_params cp = llama_context_default_params();
                cp.n_ctx = (uint32_t) n_ctx + 128; // the block is written past the last position
                cp.n_batch = 512;
                cp.n_ubatch = 512;
                cp.n_seq_max = 1;
                cp.n_threads = llama_n_threads(ctx);
                cp.n_threads_batch = llama_n_threads_batch(ctx);
                cp.no_perf = true;
                cp.ctx_other = ctx;
                ctx_dft.reset(llama_init_from_model(model_dft.get(), cp));
                if (!ctx_dft) return fail("llama.cpp could not create the drafter context");
                params.draft.ctx_tgt = ctx;
                params.draft.ctx_dft = ctx_dft.get();
                params.draft.n_max = draft_max;
                params.draft.n_min = 0;
                params.draft.p_min = 0.0f;
                // With backend sampling the block decode needs n_outputs_max_per_seq > 1, or
                // every draft comes back empty; greedy top-1 on the CPU is what we compare.
                params.draft.backend_sampling = false;
            }
            spec.reset(common_speculative_init(params, 1));
            if (!spec) return fail("llama.cpp enabled no speculative implementation for '" + types + "'");
        }
        // After each target decode: the drafter injects that batch's layer inputs.
        auto inject = [&](const llama_token * toks, int n, llama_pos pos0) -> bool {
            if (!ctx_dft) return true;
            common_batch cb(ctx);
            for (int j = 0; j < n; ++j) cb.add(toks[j], pos0 + j, 0, false);
            return common_speculative_process(spec.get(), cb);
        };

        auto t0 = clk::now();
        llama_memory_clear(llama_get_memory(ctx), true);
        llama_batch batch = llama_batch_init(std::max(n_batch, draft_max + 1), 0, 1);
        auto add = [&](llama_token t, llama_pos p, bool logits) {
            int i = batch.n_tokens++;
            batch.token[i] = t; batch.pos[i] = p; batch.n_seq_id[i] = 1; batch.seq_id[i][0] = 0; batch.logits[i] = logits;
        };
        // prompt minus its last token: that one opens the first verification batch
        for (int i = 0; i < n_prompt - 1; i += n_batch) {
            batch.n_tokens = 0;
            for (int j = i; j < std::min(n_prompt - 1, i + n_batch); ++j) add(prompt[j], j, false);
            if (llama_decode(ctx, batch) != 0) { llama_batch_free(batch); return fail("prompt decode failed"); }
            if (!inject(prompt + i, std::min(n_prompt - 1, i + n_batch) - i, i)) {
                llama_batch_free(batch); return fail("draft-dflash: feature injection failed");
            }
        }
        llama_tokens history(prompt, prompt + n_prompt - 1);
        llama_token id_last = prompt[n_prompt - 1];
        int n_past = n_prompt - 1;
        if (spec) common_speculative_begin(spec.get(), 0, history);
        auto t1 = clk::now();
        stats->t_prefill_s = secs(t0, t1);

        llama_tokens draft;
        int n_gen = 0;
        bool done = false;
        while (!done) {
            auto td = clk::now();
            draft.clear();
            int n_draft_max = std::min({n_ctx - n_past - 2, n_predict - n_gen - 1, n_batch - 1, draft_max});
            if (spec && n_draft_max > 0) {
                auto & dp = common_speculative_get_draft_params(spec.get(), 0);
                dp.drafting = true;
                dp.n_max = n_draft_max;
                dp.pos0 = n_past;
                dp.id_last = id_last;
                dp.prompt = &history;
                dp.result = &draft;
                common_speculative_draft(spec.get());
                if ((int) draft.size() > n_draft_max) draft.resize(n_draft_max);
                // The block's noise K/V must not stay next to the injected context.
                if (ctx_dft) llama_memory_seq_rm(llama_get_memory(ctx_dft.get()), 0, n_past, -1);
            }
            auto tv = clk::now();
            stats->t_draft_s += secs(td, tv);
            if (n_past + 1 + (int) draft.size() > n_ctx) break;

            batch.n_tokens = 0;
            add(id_last, n_past, true);
            for (size_t i = 0; i < draft.size(); ++i) add(draft[i], n_past + 1 + (int) i, true);
            if (llama_decode(ctx, batch) != 0) { llama_batch_free(batch); return fail("verification decode failed"); }
            auto ti = clk::now();
            stats->t_verify_s += secs(tv, ti);
            if (ctx_dft) {
                std::vector<llama_token> fed{id_last};
                fed.insert(fed.end(), draft.begin(), draft.end());
                if (!inject(fed.data(), (int) fed.size(), n_past)) {
                    llama_batch_free(batch); return fail("draft-dflash: feature injection failed");
                }
                stats->t_draft_s += secs(ti, clk::now());
            }

            // greedy acceptance: argmax of each row until it disagrees with the draft
            std::vector<llama_token> ids;
            for (size_t i = 0; i <= draft.size(); ++i) {
                const float * row = llama_get_logits_ith(ctx, (int) i);
                int best = 0;
                for (int v = 1; v < n_vocab; ++v) if (row[v] > row[best]) best = v;
                ids.push_back(best);
                if (i == draft.size() || best != draft[i]) break;
            }
            const int n_acc = (int) ids.size() - 1;
            if (spec && !draft.empty()) common_speculative_accept(spec.get(), 0, (uint16_t) n_acc);
            stats->n_rounds++;
            stats->n_drafted += (int) draft.size();
            stats->n_accepted += n_acc;
            n_past += (int) ids.size();
            for (llama_token id : ids) {
                history.push_back(id_last);
                id_last = id;
                if (llama_vocab_is_eog(vocab, id)) { done = true; break; }
                out_tokens[n_gen++] = id;
                if (n_gen >= n_predict) { done = true; break; }
            }
            llama_memory_seq_rm(llama_get_memory(ctx), 0, n_past, -1);
            if (ctx_dft) llama_memory_seq_rm(llama_get_memory(ctx_dft.get()), 0, n_past, -1);
        }
        llama_batch_free(batch);
        stats->n_generated = n_gen;
        stats->t_total_s = secs(t0, clk::now());
        return 0;
    } catch (const std::exception & e) {
        return fail(e.what());
    } catch (...) {
        return fail("unknown C++ exception");
    }
}

}  // extern "C"
