//! Compiles `cpp/llama_spec.cpp` and `cpp/llama_dflash.cpp`, small C entry points over
//! llama.cpp's own speculative decoding and DFlash graph (the benchmarks' baselines and the
//! parity reference), against exactly the llama.cpp sources and static libraries that
//! `llama-cpp-sys-2` built; `cpp/omp_team.cpp`, which runs Tandem's parallel work on
//! ggml's OpenMP team; and `cpp/layer_inputs.cpp`, C entry points for llama.cpp's
//! layer-input outputs.

use std::path::{Path, PathBuf};

fn main() {
    println!("cargo:rerun-if-changed=cpp/llama_spec.cpp");
    println!("cargo:rerun-if-changed=cpp/llama_dflash.cpp");
    println!("cargo:rerun-if-changed=cpp/omp_team.cpp");
    println!("cargo:rerun-if-changed=cpp/layer_inputs.cpp");
    println!("cargo:rerun-if-env-changed=DEP_LLAMA_GGML_CMAKE_DIR");
    let cmake_dir =
        std::env::var("DEP_LLAMA_GGML_CMAKE_DIR").expect("llama-cpp-sys-2 exports its cmake dir");
    // $OUT/lib/cmake -> $OUT
    let out = Path::new(&cmake_dir)
        .parent()
        .and_then(Path::parent)
        .expect("sys OUT dir");
    let cache = std::fs::read_to_string(out.join("build/CMakeCache.txt"))
        .expect("llama.cpp CMakeCache.txt");
    let src: PathBuf = cache
        .lines()
        .find_map(|l| l.strip_prefix("llama.cpp_SOURCE_DIR:STATIC="))
        .or_else(|| {
            cache
                .lines()
                .find_map(|l| l.strip_prefix("CMAKE_HOME_DIRECTORY:INTERNAL="))
        })
        .expect("llama.cpp source dir in CMakeCache.txt")
        .into();
    // llama.cpp's own speculative loops, for the bench and the parity tests only.
    if std::env::var_os("CARGO_FEATURE_BENCH").is_some() {
        shims(&src);
    }
    // Tandem's own parallel work on ggml's OpenMP team (llama-cpp-sys-2 is built with its
    // `openmp` feature and links libgomp).
    cc::Build::new()
        .cpp(true)
        .file("cpp/omp_team.cpp")
        .flag("-fopenmp")
        .cpp_link_stdlib(None)
        .compile("tandem_omp_team");
    // llama.cpp's layer-input outputs (drafter features from GPU decodes).
    cc::Build::new()
        .cpp(true)
        .std("c++17")
        .file("cpp/layer_inputs.cpp")
        .include(src.join("include"))
        .include(src.join("src"))
        .include(src.join("ggml/include"))
        .cpp_link_stdlib(None)
        .warnings(false)
        .compile("tandem_layer_inputs");
}

fn shims(src: &Path) {
    cc::Build::new()
        .cpp(true)
        .std("c++17")
        .file("cpp/llama_spec.cpp")
        .file("cpp/llama_dflash.cpp")
        .include(src.join("common"))
        .include(src.join("include"))
        .include(src.join("src")) // llama-ext.h: layer-input extraction switch
        .include(src.join("ggml/include"))
        .cpp_link_stdlib(None)
        .warnings(false)
        .compile("tandem_llama_spec");
}
