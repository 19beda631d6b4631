//! Bad input gets a clear one-line error and a non-zero exit — never a panic or a hang.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn tandem(args: &[&str], stdin: &[u8]) -> (i32, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tandem"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn tandem");
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    let start = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if start.elapsed() > Duration::from_secs(120) {
            child.kill().unwrap();
            panic!("tandem {args:?} hung");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn assert_clean_error(args: &[&str], stdin: &[u8], expect: &str) {
    let (code, _out, err) = tandem(args, stdin);
    assert_ne!(code, 0, "{args:?} should fail");
    assert!(
        !err.contains("panicked") && !err.contains("RUST_BACKTRACE"),
        "{args:?} panicked: {err}"
    );
    let lines: Vec<_> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "{args:?}: want one error line, got: {err}");
    assert!(
        lines[0].to_lowercase().contains(&expect.to_lowercase()),
        "{args:?}: '{}' lacks '{expect}'",
        lines[0]
    );
}

fn smollm2() -> String {
    tandem::models::resolve("smollm2-135m")
        .unwrap()
        .display()
        .to_string()
}

#[test]
fn missing_model_file() {
    assert_clean_error(
        &["generate", "-m", "/nonexistent/model.gguf", "-p", "hi"],
        b"",
        "not found",
    );
}

#[test]
fn unknown_model_name() {
    assert_clean_error(
        &["generate", "-m", "no-such-model", "-p", "hi"],
        b"",
        "unknown model",
    );
}

#[test]
fn non_gguf_file() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("notes.gguf");
    std::fs::write(&p, b"this is plain text, not a model\n").unwrap();
    assert_clean_error(
        &["generate", "-m", p.to_str().unwrap(), "-p", "hi"],
        b"",
        "not a GGUF",
    );
}

#[test]
fn truncated_gguf() {
    let _guard = common::exclusive();
    let src = std::fs::read(smollm2()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    for (i, cut) in [src.len() / 2, 100_000, 20].into_iter().enumerate() {
        let p = dir.path().join(format!("cut{i}.gguf"));
        std::fs::write(&p, &src[..cut]).unwrap();
        assert_clean_error(
            &["generate", "-m", p.to_str().unwrap(), "-p", "hi"],
            b"",
            "gguf",
        );
    }
}

#[test]
fn corrupt_gguf_header() {
    let src = std::fs::read(smollm2()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("corrupt.gguf");
    let mut bad = src[..4096].to_vec();
    bad[8..16].copy_from_slice(&u64::MAX.to_le_bytes()); // absurd tensor count
    std::fs::write(&p, &bad).unwrap();
    assert_clean_error(
        &["generate", "-m", p.to_str().unwrap(), "-p", "hi"],
        b"",
        "corrupt",
    );
}

#[test]
fn empty_prompt() {
    let m = smollm2();
    assert_clean_error(&["generate", "-m", &m, "-p", ""], b"", "empty");
    assert_clean_error(&["generate", "-m", &m, "-p", "   \n"], b"", "empty");
    assert_clean_error(&["generate", "-m", &m], b"", "empty"); // empty stdin
}

#[test]
fn prompt_longer_than_context() {
    let _guard = common::exclusive();
    let long = "word ".repeat(400);
    assert_clean_error(
        &["generate", "-m", &smollm2(), "-c", "64", "-p", &long],
        b"",
        "context holds only 64",
    );
}

#[test]
fn absurd_settings() {
    let m = smollm2();
    assert_clean_error(
        &["generate", "-m", &m, "-p", "hi", "--draft-max", "0"],
        b"",
        "--draft-max",
    );
    assert_clean_error(
        &["generate", "-m", &m, "-p", "hi", "--draft-max", "100000"],
        b"",
        "--draft-max",
    );
    assert_clean_error(
        &["generate", "-m", &m, "-p", "hi", "-n", "0"],
        b"",
        "--max-tokens",
    );
    assert_clean_error(
        &["generate", "-m", &m, "-p", "hi", "--temp", "-1"],
        b"",
        "--temp",
    );
    assert_clean_error(
        &["generate", "-m", &m, "-p", "hi", "--top-p", "0"],
        b"",
        "--top-p",
    );
    assert_clean_error(
        &["generate", "-m", &m, "-p", "hi", "-t", "0"],
        b"",
        "--threads",
    );
    assert_clean_error(
        &["generate", "-m", &m, "-p", "hi", "--draft", "bogus"],
        b"",
        "unknown drafter",
    );
    assert_clean_error(
        &["generate", "-m", &m, "-p", "hi", "-c", "999999999"],
        b"",
        "--ctx-size",
    );
}

#[test]
fn generates_and_reports_stats() {
    let _guard = common::exclusive();
    let (code, out, err) = tandem(
        &[
            "generate",
            "-m",
            &smollm2(),
            "-p",
            "Say hello.",
            "-n",
            "16",
            "-t",
            "2",
        ],
        b"",
    );
    assert_eq!(code, 0, "{err}");
    assert!(!out.trim().is_empty());
    assert!(err.contains("tok/s") && err.contains("accepted"), "{err}");
    // stdin prompt works too
    let (code, out, _) = tandem(
        &[
            "generate",
            "-m",
            &smollm2(),
            "-n",
            "8",
            "-t",
            "2",
            "--draft",
            "none",
        ],
        b"Say hello.",
    );
    assert_eq!(code, 0);
    assert!(!out.trim().is_empty());
}
