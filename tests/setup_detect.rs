//! The set-up's detection (scripts/lib/detect.sh) against temporary trees laid out like a
//! fresh Debian machine (only libclang-cpp, which bindgen cannot load), a provisioned one
//! (libclang-dev), and one where LIBCLANG_PATH names a folder outside the usual ones.

use std::path::{Path, PathBuf};
use std::process::Command;

fn touch(root: &Path, rel: &str) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, b"").unwrap();
}

fn tree(name: &str, files: &[&str]) -> PathBuf {
    let root = std::env::temp_dir().join(format!("tandem-setup-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).unwrap();
    for f in files {
        touch(&root, f);
    }
    root
}

/// Runs `has_libclang ROOT` from the set-up's own script; true when it finds one.
fn has_libclang(root: &Path, libclang_path: Option<&Path>) -> bool {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/lib/detect.sh");
    let mut cmd = Command::new("bash");
    cmd.arg("-c")
        .arg(format!(". '{}' && has_libclang \"$1\"", script.display()))
        .arg("detect")
        .arg(root)
        .env_remove("LIBCLANG_PATH");
    if let Some(p) = libclang_path {
        cmd.env("LIBCLANG_PATH", p);
    }
    let st = cmd.status().expect("bash runs");
    assert!(st.code().is_some_and(|c| c <= 1), "{st}");
    st.success()
}

#[test]
fn a_fresh_machine_with_only_libclang_cpp_has_no_libclang() {
    let root = tree(
        "fresh",
        &[
            "usr/lib/x86_64-linux-gnu/libclang-cpp.so.14",
            "usr/lib/llvm-14/lib/libclang-cpp.so.14",
            "usr/lib/llvm-14/lib/libLLVM-14.so.1",
        ],
    );
    assert!(!has_libclang(&root, None));
    std::fs::remove_dir_all(root).unwrap();
}

#[test]
fn a_provisioned_machine_has_libclang() {
    // What Debian's libclang-dev (with libclang1-14) lays out.
    for layout in [
        &[
            "usr/lib/llvm-14/lib/libclang.so",
            "usr/lib/llvm-14/lib/libclang-cpp.so.14",
        ][..],
        &["usr/lib/x86_64-linux-gnu/libclang-14.so.1"][..],
        &["usr/lib/llvm-14/lib/libclang.so.1"][..],
        &["usr/local/lib/libclang-17.so"][..],
    ] {
        let root = tree("provisioned", layout);
        assert!(has_libclang(&root, None), "{layout:?}");
        std::fs::remove_dir_all(root).unwrap();
    }
}

#[test]
fn libclang_path_is_honoured() {
    let root = tree("fresh2", &["usr/lib/x86_64-linux-gnu/libclang-cpp.so.14"]);
    let elsewhere = tree("elsewhere", &["opt/llvm/lib/libclang.so.18"]);
    assert!(has_libclang(&root, Some(&elsewhere.join("opt/llvm/lib"))));
    // A LIBCLANG_PATH that holds only libclang-cpp does not count.
    let cpp_only = tree("cpponly", &["lib/libclang-cpp.so.18"]);
    assert!(!has_libclang(&root, Some(&cpp_only.join("lib"))));
    for d in [root, elsewhere, cpp_only] {
        std::fs::remove_dir_all(d).unwrap();
    }
}
