//! `tandem serve` end to end on loopback: the official openai Python client, greedy output
//! equal to `tandem generate`, a bounded load test, bad input, disconnects, overload.
//! The tests run one at a time (each starts its own server; the machine has 2 cores).

mod common;

use std::io::{Read, Write};
use std::time::Duration;

use common::server::{API_KEY, Server, read_reply, run_python};
use common::{exclusive, tandem_ok};
use serde_json::{Value, json};

const MODEL: &str = "smollm2-135m";
const N: usize = 24;

/// Prompts for the client checks: chat, code, a list.
const PROMPTS: [&str; 3] = [
    "Write a haiku about rivers.",
    "Write a Python function that adds two numbers.",
    "List five fruits, one per line.",
];

fn generate(prompt: &str, raw: bool) -> String {
    let n = N.to_string();
    let mut args = vec!["generate", "-m", MODEL, "-p", prompt, "-n", &n, "-t", "2"];
    if raw {
        args.push("--raw");
    }
    let out = tandem_ok(&args);
    let text = String::from_utf8(out.stdout).unwrap();
    // `generate` ends its output with a newline of its own.
    text.strip_suffix('\n').unwrap_or(&text).to_string()
}

#[test]
fn openai_client_gets_what_generate_prints() {
    let _x = exclusive();
    let server = Server::start(MODEL, &[]);
    let prompts = serde_json::to_string(&PROMPTS).unwrap();
    let n = N.to_string();
    let out = run_python(
        "client_checks.py",
        &[&server.base_url(), API_KEY, MODEL, &prompts, &n],
    );
    assert_eq!(out["models"], json!([MODEL]));
    assert_eq!(out["model"], MODEL);
    for (i, p) in PROMPTS.iter().enumerate() {
        let chat = &out["chat"][i];
        let want = generate(p, false);
        assert_eq!(chat["text"], want.as_str(), "chat answer to {p:?}");
        assert_eq!(chat["role"], "assistant");
        let stream = &out["chat_stream"][i];
        assert_eq!(stream["text"], want.as_str(), "streamed answer to {p:?}");
        assert!(stream["chunks"].as_u64().unwrap() > 1, "streamed in pieces");
        // The same conversation again: the prompt cache reuses all of it but its last
        // token, and the answer is the same.
        for k in ["prompt_tokens", "completion_tokens"] {
            assert_eq!(stream["usage"][k], chat["usage"][k]);
        }
        let n_prompt = chat["usage"]["prompt_tokens"].as_u64().unwrap();
        assert_eq!(
            stream["usage"]["prompt_tokens_details"]["cached_tokens"],
            n_prompt - 1
        );
        assert_eq!(stream["finish_reason"], chat["finish_reason"]);
        // The default: n-gram + the shipped diffusion drafter under the fail-fast policy.
        assert_eq!(stream["tandem"]["drafter"], "auto");
        assert_eq!(stream["tandem"]["policy"], "failfast");
        let tokens = chat["usage"]["completion_tokens"].as_u64().unwrap() as usize;
        assert!(tokens <= N);
        let reason = if tokens == N { "length" } else { "stop" };
        assert_eq!(chat["finish_reason"], reason);

        let completion = &out["completions"][i];
        assert_eq!(
            completion["text"],
            generate(p, true).as_str(),
            "completion of {p:?}"
        );
        let stats = &completion["tandem"];
        assert!(stats["rounds"].as_u64().is_some() && stats["drafted_at"].is_array());
        // llama-server's `timings`, consistent with `usage` and the speculative counts.
        for (t, u, tandem) in [
            (&completion["timings"], &completion["usage"], stats),
            (&stream["timings"], &stream["usage"], &stream["tandem"]),
        ] {
            let cached = u["prompt_tokens_details"]["cached_tokens"]
                .as_u64()
                .unwrap();
            assert_eq!(t["cache_n"], cached, "{t}");
            assert_eq!(
                t["prompt_n"].as_u64().unwrap() + cached,
                u["prompt_tokens"].as_u64().unwrap(),
                "{t}"
            );
            assert_eq!(t["predicted_n"], u["completion_tokens"], "{t}");
            assert_eq!(t["draft_n"], tandem["drafted"], "{t}");
            assert_eq!(t["draft_n_accepted"], tandem["accepted"], "{t}");
            assert!(t["prompt_ms"].as_f64().unwrap() > 0.0, "{t}");
            if u["completion_tokens"].as_u64().unwrap() > 0 {
                assert!(t["predicted_per_second"].as_f64().unwrap() > 0.0, "{t}");
            }
        }
    }
    // The stop string cut the first chat answer before it.
    let first = out["chat"][0]["text"].as_str().unwrap();
    assert!(first.len() >= 12, "{first:?}");
    let stopped = &out["stopped"];
    assert_eq!(stopped["finish_reason"], "stop");
    assert!(first.starts_with(stopped["text"].as_str().unwrap()));
    assert!(stopped["text"].as_str().unwrap().len() < first.len());
    assert_eq!(out["seeded_equal"], true);
    // speculative.n_max = 0: plain decoding, the same answer, nothing drafted.
    let plain = &out["no_speculation"];
    assert_eq!(plain["text"], out["chat"][0]["text"]);
    assert_eq!(plain["timings"]["draft_n"], 0, "{plain}");
    // tandem.draft / tandem.policy: that drafter and policy, the same answer.
    let nf = &out["ngram_fixed"];
    assert_eq!(nf["text"], out["chat"][0]["text"]);
    assert_eq!(nf["tandem"]["drafter"], "ngram", "{nf}");
    assert_eq!(nf["tandem"]["policy"], "fixed", "{nf}");

    let e = &out["errors"];
    for (case, status, kind) in [
        ("unknown_model", 404, "NotFoundError"),
        ("wrong_key", 401, "AuthenticationError"),
        ("bad_temperature", 400, "BadRequestError"),
        ("too_many_tokens", 400, "BadRequestError"),
        ("bad_role", 400, "BadRequestError"),
        ("bad_n_max", 400, "BadRequestError"),
        ("prompt_too_long", 400, "BadRequestError"),
    ] {
        assert_eq!(e[case]["status"], status, "{case}: {}", e[case]);
        assert_eq!(e[case]["type"], kind, "{case}");
    }
    // /tokenize and /detokenize: a round trip, pieces that spell the text, bad ids a 400,
    // and the API key required as everywhere.
    let t = &out["tokens"];
    assert_eq!(t["detokenized"], t["text"], "{t}");
    let ids = t["tokens"].as_array().unwrap();
    assert!(!ids.is_empty());
    let pieces = t["pieces"].as_array().unwrap();
    assert_eq!(pieces.len(), ids.len());
    let spelled: String = pieces
        .iter()
        .map(|p| p["piece"].as_str().unwrap())
        .collect();
    assert_eq!(spelled, t["text"].as_str().unwrap());
    assert_eq!(t["bad_status"], 400);
    assert_eq!(t["no_key_status"], 401);
    // The server is still healthy and idle, its KV cells kept as the prompt cache.
    let h = server.wait_idle();
    assert!(h["kv_tokens"].as_u64().unwrap() > 0, "{h}");
}

/// The prompt cache: a 6-turn conversation through the openai client reuses, from turn 2
/// on, the whole previous turn (prompt and answer) instead of processing it again, and
/// answers as without the cache. As with llama-server's `cache_prompt`, "the same" holds
/// up to near-ties of batched rounding: the reused cells were computed token by token
/// while generating, a fresh prefill computes them in one batch (seen here: "approximately
/// 1,298 km" vs "14,320 km" at a top-2 gap of 0.44); tests/prompt_cache.rs checks the
/// near-tie rule with the logits at hand. Here the answers must agree until a first
/// difference, after which the two conversations are no longer the same.
#[test]
fn a_multi_turn_conversation_reuses_its_history_and_answers_the_same() {
    let _x = exclusive();
    let server = Server::start(MODEL, &[]);
    let out = run_python("multi_turn.py", &[&server.base_url(), API_KEY, MODEL, "40"]);
    let (on, off) = (
        out["cached"].as_array().unwrap(),
        out["uncached"].as_array().unwrap(),
    );
    let n = |v: &Value| v.as_u64().unwrap();
    let mut report = Vec::new();
    let mut same_so_far = true;
    for (i, (a, b)) in on.iter().zip(off).enumerate() {
        if same_so_far && a["text"] != b["text"] {
            assert!(i > 0, "the first turn (nothing to reuse) differs");
            let (x, y) = (a["text"].as_str().unwrap(), b["text"].as_str().unwrap());
            let common = x.chars().zip(y.chars()).take_while(|(p, q)| p == q).count();
            report.push(format!(
                "turn {}: answers part after {common} characters ({x:?} vs {y:?})",
                i + 1
            ));
            same_so_far = false;
        }
        assert_eq!(n(&b["usage"]["prompt_tokens_details"]["cached_tokens"]), 0);
        let cached = n(&a["usage"]["prompt_tokens_details"]["cached_tokens"]);
        assert_eq!(cached, n(&a["timings"]["cache_n"]));
        if i > 0 {
            // The previous prompt and answer (the answer's last token has a KV cell only
            // when the answer ended on its own: then the end token was the last one).
            let prev = &on[i - 1];
            let mut want =
                n(&prev["usage"]["prompt_tokens"]) + n(&prev["usage"]["completion_tokens"]);
            if prev["finish_reason"] == "length" {
                want -= 1;
            }
            assert!(
                cached >= want,
                "turn {}: cached {cached}, previous turn {want}",
                i + 1
            );
        }
        report.push(format!(
            "turn {}: prompt {} tokens, cached {cached}; prompt ms {:.0} with the cache, {:.0} without",
            i + 1,
            n(&a["usage"]["prompt_tokens"]),
            a["timings"]["prompt_ms"].as_f64().unwrap(),
            b["timings"]["prompt_ms"].as_f64().unwrap()
        ));
    }
    eprintln!("{}", report.join("\n"));
}

/// `GET /metrics`, parsed by prometheus_client's OpenMetrics parser: after three requests
/// its counters moved by exactly what the responses' `timings` say.
#[test]
fn metrics_count_what_the_responses_report() {
    let _x = exclusive();
    let server = Server::start(MODEL, &[]);
    let out = run_python("metrics_checks.py", &[&server.base_url(), API_KEY, MODEL]);
    let (d, sums) = (&out["delta"], &out["sums"]);
    let f = |v: &Value| v.as_f64().unwrap();
    for (metric, sum) in [
        ("tandem_prompt_tokens_total", "prompt"),
        ("tandem_prompt_tokens_cached_total", "cached"),
        ("tandem_generation_tokens_total", "predicted"),
        ("tandem_spec_decode_num_draft_tokens_total", "draft"),
        ("tandem_spec_decode_num_accepted_tokens_total", "accepted"),
    ] {
        assert_eq!(f(&d[metric]), f(&sums[sum]), "{metric}: {out}");
    }
    assert_eq!(f(&d["tandem_requests_total"]), 3.0, "{out}");
    // Turns 2 and 3 extend the conversation: both hit the prompt cache.
    assert_eq!(f(&d["tandem_prompt_cache_hits_total"]), 2.0, "{out}");
    assert!(f(&sums["cached"]) > 0.0);
    assert_eq!(f(&out["after"]["tandem_num_requests_waiting"]), 0.0);
    assert!(
        out["content_type"]
            .as_str()
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    assert_eq!(out["no_key_status"], 401);
}

#[test]
fn eight_concurrent_streaming_clients_get_their_lone_answers() {
    let _x = exclusive();
    let server = Server::start(MODEL, &["--draft", "ngram"]);
    let out = run_python(
        "load.py",
        &[
            &server.base_url(),
            API_KEY,
            MODEL,
            "--clients",
            "8",
            "--requests",
            "3",
            "--max-tokens",
            "32",
        ],
    );
    eprintln!("load: {out}");
    assert_eq!(out["requests"], 24);
    assert_eq!(out["all_equal"], true, "{}", out["mismatches"]);
    // One conversation's cells at most stay (the prompt cache).
    assert!(server.wait_idle()["kv_tokens"].as_u64().unwrap() <= 4096);
}

fn post(server: &Server, path: &str, key: Option<&str>, body: &str) -> (u16, Value) {
    let r = server.request("POST", path, key, Some(body));
    let v = serde_json::from_str(&r.body)
        .unwrap_or_else(|e| panic!("{path} {body:.80}: not JSON ({e}): {:?}", r.body));
    (r.status, v)
}

#[test]
fn bad_requests_get_openai_errors_and_the_server_keeps_serving() {
    let _x = exclusive();
    let server = Server::start(MODEL, &["--max-body", "65536"]);
    let chat = "/v1/chat/completions";
    let good = r#"{"model":"smollm2-135m","messages":[{"role":"user","content":"Say hi."}],"max_tokens":4,"temperature":0}"#;
    let cases: Vec<(&str, Option<&str>, String, u16)> = vec![
        (chat, Some(API_KEY), "{not json".into(), 400),
        (chat, Some(API_KEY), "".into(), 400),
        (chat, Some(API_KEY), "[1, 2]".into(), 400),
        (
            chat,
            Some(API_KEY),
            r#"{"messages":[{"role":"user","content":"x"}],"max_tokens":"ten"}"#.into(),
            400,
        ),
        (chat, Some(API_KEY), r#"{"messages":"hello"}"#.into(), 400),
        (
            chat,
            Some(API_KEY),
            r#"{"messages":[{"role":"user","content":"x"}],"temperature":"hot"}"#.into(),
            400,
        ),
        (
            chat,
            Some(API_KEY),
            r#"{"messages":[{"role":"user","content":"x"}],"stream":"yes"}"#.into(),
            400,
        ),
        (chat, Some(API_KEY), r#"{"messages":[]}"#.into(), 400),
        (
            chat,
            Some(API_KEY),
            r#"{"messages":[{"role":"user","content":"  "}]}"#.into(),
            400,
        ),
        (
            "/v1/completions",
            Some(API_KEY),
            r#"{"prompt":[1,2,3]}"#.into(),
            400,
        ),
        (
            "/v1/completions",
            Some(API_KEY),
            r#"{"prompt":"x","top_p":1.5}"#.into(),
            400,
        ),
        (
            chat,
            Some(API_KEY),
            good.replace("smollm2-135m", "gpt-4"),
            404,
        ),
        (chat, None, good.into(), 401),
        (chat, Some("sk-wrong"), good.into(), 401),
        ("/v1/nothing", Some(API_KEY), good.into(), 404),
    ];
    for (path, key, body, status) in &cases {
        let (got, v) = post(&server, path, *key, body);
        assert_eq!(got, *status, "{path} {body}: {v}");
        assert!(
            v["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{v}"
        );
        assert!(v["error"]["type"].is_string(), "{v}");
    }
    // Oversized bodies: declared by Content-Length (refused before reading), and sent
    // chunked with no length (refused at the limit).
    let big = format!(
        r#"{{"messages":[{{"role":"user","content":"{}"}}]}}"#,
        "x".repeat(100_000)
    );
    let (got, v) = post(&server, chat, Some(API_KEY), &big);
    assert_eq!(got, 413, "{v}");
    let mut s = server.connect();
    let head = format!(
        "POST {chat} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {API_KEY}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    );
    s.write_all(head.as_bytes()).unwrap();
    let piece = "y".repeat(16_384);
    for _ in 0..8 {
        if s.write_all(format!("{:x}\r\n{piece}\r\n", piece.len()).as_bytes())
            .is_err()
        {
            break; // the server may answer and close before the end
        }
    }
    let _ = s.write_all(b"0\r\n\r\n");
    assert_eq!(read_reply(&mut s).status, 413);
    // Wrong method, and no key on a GET.
    assert_eq!(
        server
            .request("DELETE", "/v1/models", Some(API_KEY), None)
            .status,
        405
    );
    assert_eq!(server.request("GET", "/v1/models", None, None).status, 401);
    assert_eq!(server.request("GET", "/health", None, None).status, 401);
    // Still serving, with the right answer.
    let (got, v) = post(&server, chat, Some(API_KEY), good);
    assert_eq!(got, 200, "{v}");
    let want = {
        let out = tandem_ok(&[
            "generate", "-m", MODEL, "-p", "Say hi.", "-n", "4", "-t", "2",
        ]);
        String::from_utf8(out.stdout)
            .unwrap()
            .trim_end_matches('\n')
            .to_string()
    };
    assert_eq!(v["choices"][0]["message"]["content"], want.as_str());
}

/// Start a long streaming completion, read its first events, and hang up.
fn hang_up_mid_stream(server: &Server) {
    let body = r#"{"prompt":"Count: 1, 2, 3, 4, 5, 6, 7, 8,","max_tokens":2000,"temperature":0,"stream":true}"#;
    let mut s = server.connect();
    let req = format!(
        "POST /v1/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {API_KEY}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    // Two data events: the generation is under way.
    while seen.windows(6).filter(|w| w == b"data: ").count() < 2 {
        let n = s.read(&mut buf).expect("read the stream");
        assert!(
            n > 0,
            "stream ended early: {}",
            String::from_utf8_lossy(&seen)
        );
        seen.extend_from_slice(&buf[..n]);
    }
    assert!(
        seen.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&seen)
    );
    drop(s);
}

#[test]
fn a_client_that_hangs_up_cancels_its_generation_and_frees_its_cells() {
    let _x = exclusive();
    let server = Server::start(MODEL, &["--max-tokens", "4096"]);
    hang_up_mid_stream(&server);
    let h = server.wait_idle();
    assert_eq!(h["cancelled"], 1, "{h}");
    assert_eq!(h["kv_tokens"], 0, "{h}");
    let rss0 = server.rss_kib();
    for _ in 0..20 {
        hang_up_mid_stream(&server);
    }
    let h = server.wait_idle();
    let rss1 = server.rss_kib();
    assert_eq!(h["cancelled"], 21, "{h}");
    assert_eq!(h["kv_tokens"], 0, "{h}");
    // 20 abandoned 2000-token generations would hold far more than this if anything
    // leaked per request (each answer's text, its channel, its KV cells).
    assert!(
        rss1 < rss0 + 16 * 1024,
        "server memory grew from {rss0} KiB to {rss1} KiB"
    );
    // A non-streaming request whose client hangs up is cancelled as well.
    let body = r#"{"prompt":"Count: 1, 2, 3, 4, 5, 6, 7, 8,","max_tokens":2000,"temperature":0}"#;
    let mut s = server.connect();
    let req = format!(
        "POST /v1/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {API_KEY}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).unwrap();
    let t0 = std::time::Instant::now();
    while server.health()["busy"] != true {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "the request never started"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    drop(s);
    let h = server.wait_idle();
    assert_eq!(h["cancelled"], 22, "{h}");
    // And it still answers.
    let (got, v) = post(
        &server,
        "/v1/completions",
        Some(API_KEY),
        r#"{"prompt":"The capital of France is","max_tokens":8,"temperature":0}"#,
    );
    assert_eq!(got, 200, "{v}");
    assert_eq!(
        v["usage"]["completion_tokens"].as_u64().map(|n| n > 0),
        Some(true)
    );
}

#[test]
fn a_full_queue_gets_503_and_the_others_complete() {
    let _x = exclusive();
    let server = Server::start(MODEL, &["--queue", "1"]);
    let body = r#"{"prompt":"Count: 1, 2, 3, 4, 5, 6, 7, 8,","max_tokens":400,"temperature":0}"#;
    // Three requests at once: one running, one waiting, so at least one is refused.
    let statuses: Vec<u16> = std::thread::scope(|sc| {
        let hs: Vec<_> = (0..3)
            .map(|i| {
                let server = &server;
                sc.spawn(move || {
                    std::thread::sleep(Duration::from_millis(100 * i));
                    server
                        .request("POST", "/v1/completions", Some(API_KEY), Some(body))
                        .status
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(statuses.contains(&503), "{statuses:?}");
    assert!(statuses.contains(&200), "{statuses:?}");
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 503),
        "{statuses:?}"
    );
    assert!(server.wait_idle()["kv_tokens"].as_u64().unwrap() <= 4096);
}

#[test]
fn tool_calls_round_trip_through_the_openai_client() {
    let _x = exclusive();
    let server = Server::start(MODEL, &[]);
    let out = run_python("tools.py", &[&server.base_url(), API_KEY, MODEL]);
    eprintln!("{out}");
    assert_eq!(out["finish"], "tool_calls", "{out}");
    assert!(out["id"].as_str().unwrap().starts_with("call_"), "{out}");
    assert_eq!(out["stream_same"], true, "{out}");
    assert!(!out["after_tool"].as_str().unwrap().is_empty(), "{out}");
    assert_eq!(out["bad_status"], 400, "{out}");
    assert!(
        out["bad_message"].as_str().unwrap().contains("get_stock"),
        "{out}"
    );
}

#[test]
fn response_format_json_schema_gives_valid_json_and_bad_schemas_get_400() {
    let _x = exclusive();
    let server = Server::start(MODEL, &[]);
    let out = run_python("structured.py", &[&server.base_url(), API_KEY, MODEL]);
    assert_eq!(out["person"]["city"], "London", "{out}");
    assert_eq!(out["bad_status"], 400, "{out}");
    assert!(
        out["bad_message"].as_str().unwrap().contains("JSON schema"),
        "{out}"
    );
}
