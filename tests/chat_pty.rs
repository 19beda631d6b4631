//! `tandem chat` in a pseudo-terminal (driven by tests/chat/drive.py through Python's
//! `pty`): multi-turn with the prompt cache, /stats, Ctrl-C stops an answer without
//! quitting, /reset and /system, Ctrl-D quits cleanly.

mod common;

#[test]
fn chat_in_a_terminal_reuses_turns_survives_ctrl_c_and_quits_on_eof() {
    let _x = common::exclusive();
    common::model("smollm2-135m", false);
    let out = std::process::Command::new("python3")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/chat/drive.py"))
        .arg(env!("CARGO_BIN_EXE_tandem"))
        .arg("smollm2-135m")
        .output()
        .expect("python3");
    let text = String::from_utf8_lossy(&out.stdout);
    let v: serde_json::Value = serde_json::from_str(text.trim())
        .unwrap_or_else(|e| panic!("{e}: {text} {}", String::from_utf8_lossy(&out.stderr)));
    assert!(v.get("error").is_none(), "{v}");
    eprintln!("{v}");
    assert_eq!(v["first_reused"], 0);
    // The second turn reuses the first turn's prompt and answer.
    let (p, r) = (
        v["second_prompt"].as_u64().unwrap(),
        v["second_reused"].as_u64().unwrap(),
    );
    assert!(r > 20 && r < p, "{v}");
    assert_eq!(v["alive_after_ctrl_c"], true);
    assert_eq!(v["stop_after_ctrl_c"], "cancelled");
    assert_eq!(v["exit_code"], 0);
}
