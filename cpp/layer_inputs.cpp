// C entry points for llama.cpp's layer-input outputs (its staging header `llama-ext.h`
// declares them with C++ linkage): the graph marks the chosen layers' inputs as outputs
// and llama.cpp copies them back asynchronously after each micro-batch — on a GPU backend
// no graph split at the tapped nodes, unlike an eval callback. Only architectures whose
// graphs record their layer inputs support it (llama's does; gemma3's does not).

#include <cstdint>

#include "llama-ext.h"

extern "C" {

void tandem_set_layer_input(llama_context * ctx, uint32_t layer, bool on) {
    llama_set_embeddings_layer_inp(ctx, layer, on);
}

// Rows of the last decode (n_embd floats each, in batch order).
const float * tandem_layer_input(llama_context * ctx, uint32_t layer) {
    return llama_get_embeddings_layer_inp(ctx, layer);
}

}
