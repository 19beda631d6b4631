// A thin C entry point over llama.cpp's own speculative decoding (common/speculative.h),
// so Tandem's benchmarks can run llama.cpp's n-gram modes in the same binary, with the same
// build flags and the exact vendored llama.cpp version, on a context Tandem created.
//
// The loop follows llama.cpp's speculative-simple example: decode the prompt but its last
// token, then per round draft with common_speculative_draft, decode [last, draft...] in one
// batch, accept the greedy-agreeing prefix, common_speculative_accept, seq_rm the rest.

#include "speculative.h"
#include "llama.h"

#include <chrono>
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
// "ngram-cache", ...) or "none" for plain decoding. Returns 0 on success; otherwise writes
// a message into err.
int tandem_llama_spec_generate(llama_context * ctx, const int32_t * prompt, int32_t n_prompt,
                               int32_t n_predict, const char * spec_types, int32_t draft_max,
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
            spec.reset(common_speculative_init(params, 1));
            if (!spec) return fail("llama.cpp enabled no speculative implementation for '" + types + "'");
        }

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
            }
            auto tv = clk::now();
            stats->t_draft_s += secs(td, tv);
            if (n_past + 1 + (int) draft.size() > n_ctx) break;

            batch.n_tokens = 0;
            add(id_last, n_past, true);
            for (size_t i = 0; i < draft.size(); ++i) add(draft[i], n_past + 1 + (int) i, true);
            if (llama_decode(ctx, batch) != 0) { llama_batch_free(batch); return fail("verification decode failed"); }
            stats->t_verify_s += secs(tv, clk::now());

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
