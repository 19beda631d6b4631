//! The embedding example (examples/assistant.rs) runs: two turns of a conversation, each
//! streamed, the second seeing the first. `cargo test` builds examples before it runs
//! tests, so the binary sits next to the tandem binary.

mod common;

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use tandem::api::{Engine, Message, Request};

fn example_binary() -> PathBuf {
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_tandem"));
    let path = bin.parent().unwrap().join("examples/assistant");
    assert!(
        path.is_file(),
        "{} missing: build it with `cargo build --release --examples`",
        path.display()
    );
    path
}

#[test]
fn the_assistant_example_holds_a_conversation() {
    let _x = common::exclusive();
    let mut child = Command::new(example_binary())
        .args(["smollm2-135m", "24"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run the example");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"What is the capital of France?\nAnd of Italy?\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let replies: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("assistant> "))
        .collect();
    assert_eq!(replies.len(), 2, "{stdout}");
    assert!(
        replies.iter().all(|r| r.len() > "assistant> ".len()),
        "{stdout}"
    );
    assert_eq!(
        stderr.matches("per verification step").count(),
        2,
        "{stderr}"
    );

    // Its first reply is the library's own answer to the same conversation.
    let engine = Engine::builder("smollm2-135m").threads(2).build().unwrap();
    let history = vec![
        Message::system("You are a helpful, concise assistant."),
        Message::user("What is the capital of France?"),
    ];
    let reply = engine
        .generate(&Request::chat(history).with_max_tokens(24))
        .unwrap();
    let text: String = reply.map(Result::unwrap).collect();
    let first_line = text.lines().next().unwrap_or("");
    assert!(
        replies[0].starts_with(&format!("assistant> {first_line}")),
        "{stdout}\n---\n{text}"
    );
}
