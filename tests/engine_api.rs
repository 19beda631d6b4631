//! The embedding API (`tandem::Engine`) on the real SmolLM2 model: streams equal the
//! speculative engine's own tokens, cancellation (explicit and by dropping the stream)
//! frees the KV cells, stop strings, a bounded queue, and clear set-up errors.

mod common;

use tandem::api::{ApiError, Engine, FinishReason, Message, Request};
use tandem::session::DraftSpec;

const MODEL: &str = "smollm2-135m";
const COUNTING: &str = "Count: 1, 2, 3, 4, 5, 6, 7, 8,";

fn engine(draft: DraftSpec) -> Engine {
    Engine::builder(MODEL)
        .threads(2)
        .draft(draft)
        .max_queue(2)
        .build()
        .expect("engine")
}

/// The README promises that an `Engine` can be shared between threads.
#[test]
fn engine_and_streams_cross_threads() {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>() {}
    send_sync::<Engine>();
    send::<tandem::api::TextStream>();
    send_sync::<tandem::api::CancelHandle>();
}

#[test]
fn streamed_text_is_the_drafted_and_the_plain_answer() {
    let _x = common::exclusive();
    let plain = engine(DraftSpec::None);
    let drafted = engine("ngram".parse().unwrap());
    for p in &common::PROMPTS[..6] {
        let req = Request::chat(vec![Message::user(*p)]).with_max_tokens(40);
        let a = plain.generate(&req).unwrap();
        let mut b = drafted.generate(&req).unwrap();
        let a_text: String = a.map(Result::unwrap).collect();
        let b_text: String = (&mut b).map(Result::unwrap).collect();
        assert_eq!(a_text, b_text, "{p}");
        let f = b.finish().unwrap();
        assert!(f.completion_tokens > 0 && f.prompt_tokens > 0);
        assert_eq!(f.drafter, "ngram");
        // The text is exactly the detokenized tokens of a chat prompt.
        let toks = drafted.prompt_tokens(&req.prompt).unwrap();
        assert_eq!(toks, common::prompt_tokens(drafted.model(), p));
    }
}

#[test]
fn cancelling_or_dropping_a_stream_stops_it_and_frees_the_cells() {
    let _x = common::exclusive();
    let e = engine("ngram".parse().unwrap());
    let req = Request::raw(COUNTING).with_max_tokens(3000);
    let mut s = e.generate(&req).unwrap();
    for _ in 0..3 {
        s.next().unwrap().unwrap();
    }
    s.cancel();
    let f = s.finish().unwrap();
    assert_eq!(f.reason, FinishReason::Cancelled);
    assert!(f.completion_tokens < 3000);
    assert_eq!(e.status().kv_tokens(), 0);

    let mut s = e.generate(&req).unwrap();
    s.next().unwrap().unwrap();
    drop(s);
    // The next request waits behind the dropped one, which ends at its next token.
    let f = e
        .generate(&Request::raw("The capital of France is").with_max_tokens(4))
        .unwrap()
        .finish()
        .unwrap();
    assert_eq!(f.completion_tokens, 4);
    assert_eq!(e.status().cancelled(), 2);
    // A finished generation's cells stay as the prompt cache: prompt and answer but the
    // last token (never decoded).
    assert_eq!(
        e.status().kv_tokens(),
        f.prompt_tokens + f.completion_tokens - 1
    );
}

#[test]
fn stop_strings_cut_the_text_before_them() {
    let _x = common::exclusive();
    let e = engine("ngram".parse().unwrap());
    let full: String = e
        .generate(&Request::raw(COUNTING).with_max_tokens(30))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert!(full.contains(" 12,"), "{full:?}");
    let mut s = e
        .generate(
            &Request::raw(COUNTING)
                .with_max_tokens(30)
                .with_stop(vec![" 12,".into()]),
        )
        .unwrap();
    let text: String = (&mut s).map(Result::unwrap).collect();
    let f = s.finish().unwrap();
    assert_eq!(text, full[..full.find(" 12,").unwrap()]);
    assert_eq!(f.reason, FinishReason::Stop);
    assert!(f.stop_string);
}

#[test]
fn a_full_queue_refuses_and_bad_requests_fail_at_once() {
    let _x = common::exclusive();
    let e = engine("ngram".parse().unwrap());
    let long = Request::raw(COUNTING).with_max_tokens(2000);
    let mut running = e.generate(&long).unwrap();
    running.next().unwrap().unwrap(); // under way: the queue is empty again
    let q1 = e.generate(&long).unwrap();
    let _q2 = e.generate(&long).unwrap();
    assert_eq!(e.status().queued(), 2);
    assert!(matches!(
        e.generate(&long),
        Err(ApiError::Busy { queued: 2 })
    ));
    // A caller that gives up while waiting gives its slot back at once.
    drop(q1);
    assert_eq!(e.status().queued(), 1);
    let _q3 = e.generate(&long).unwrap();
    assert!(matches!(e.generate(&long), Err(ApiError::Busy { .. })));
    running.cancel();
    assert_eq!(running.finish().unwrap().reason, FinishReason::Cancelled);

    let err = |r: Request| e.generate(&r).err().expect("should fail");
    assert!(matches!(err(Request::raw("  ")), ApiError::EmptyPrompt));
    assert!(matches!(
        err(Request::chat(vec![])),
        ApiError::BadRequest(_)
    ));
    assert!(matches!(
        err(Request::raw("x").with_max_tokens(0)),
        ApiError::BadRequest(_)
    ));
    assert!(matches!(
        err(Request::raw("word ".repeat(5000))),
        ApiError::PromptTooLong { n_ctx: 4096, .. }
    ));
    let mut hot = tandem::sampling::SamplingConfig::greedy();
    hot.temp = -1.0;
    assert!(matches!(
        err(Request::raw("x").with_sampling(hot)),
        ApiError::BadRequest(_)
    ));
}

#[test]
fn bad_engine_settings_are_clear_setup_errors() {
    let _x = common::exclusive();
    let setup = |b: tandem::api::EngineBuilder| match b.build() {
        Err(ApiError::Setup(m)) => m,
        Err(e) => panic!("not a setup error: {e}"),
        Ok(_) => panic!("should fail"),
    };
    assert!(setup(Engine::builder(MODEL).draft_max(0)).contains("--draft-max"));
    assert!(setup(Engine::builder(MODEL).context_size(8)).contains("--ctx-size"));
    assert!(setup(Engine::builder(MODEL).max_queue(0)).contains("queue"));
    assert!(setup(Engine::builder("/nonexistent/model.gguf")).contains("model.gguf"));
    // A GGUF the manifest does not know (a link to the real model under another name)
    // has no shipped drafter.
    let dir = tempfile::tempdir().unwrap();
    let unknown = dir.path().join("unregistered.gguf");
    std::os::unix::fs::symlink(tandem::models::resolve(MODEL).unwrap(), &unknown).unwrap();
    assert!(
        setup(Engine::builder(unknown.to_str().unwrap()).draft("diffusion".parse().unwrap()))
            .contains("no shipped drafter")
    );
    let bad = dir.path().join("bad.gguf");
    std::fs::write(&bad, b"GGUF\x03\x00\x00\x00garbage").unwrap();
    let m = setup(Engine::builder(bad.to_str().unwrap()));
    assert!(
        m.contains("bad.gguf") || m.to_lowercase().contains("gguf"),
        "{m}"
    );
}

/// A long prompt's prefill stops within a chunk when its request is cancelled (a client
/// that hangs up on a 3,000-token prompt does not hold the engine for the whole prefill).
#[test]
fn cancelling_during_a_long_prefill_stops_it() {
    let _x = common::exclusive();
    let e = engine("none".parse().unwrap());
    let long = "The river flows past the old mill and on to the sea. ".repeat(250);
    let s = e.generate(&Request::raw(long).with_max_tokens(8)).unwrap();
    let n = s.prompt_tokens();
    assert!(n > 2500, "{n}");
    while !e.status().busy() {
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    std::thread::sleep(std::time::Duration::from_millis(50));
    s.cancel();
    let f = s.finish().unwrap();
    assert_eq!(f.reason, FinishReason::Cancelled);
    assert_eq!(f.completion_tokens, 0);
    assert!(
        f.stats.prompt_processed < n,
        "{} of {n} prompt tokens processed",
        f.stats.prompt_processed
    );
    assert_eq!(e.status().kv_tokens(), 0);
}

/// Two conversations taking turns: each finds its own history again (the prompt cache
/// saves the one a request would overwrite and restores it when it comes back); with a
/// single slot the second conversation's turn overwrites the first's.
#[test]
fn alternating_conversations_each_find_their_history() {
    let _x = common::exclusive();
    let turns = |e: &Engine| {
        let sys = Message::system("You are a concise assistant.");
        let ask = |msgs: Vec<Message>| {
            let mut s = e
                .generate(&Request::chat(msgs).with_max_tokens(48))
                .unwrap();
            let text: String = (&mut s).map(Result::unwrap).collect();
            (text, s.finish().unwrap())
        };
        let a1 = vec![sys.clone(), Message::user("Tell me about rivers.")];
        let (ta, fa) = ask(a1.clone());
        let (_, _) = ask(vec![sys.clone(), Message::user("Tell me about mountains.")]);
        let mut a2 = a1;
        a2.push(Message::assistant(ta));
        a2.push(Message::user("Go on."));
        let (_, f2) = ask(a2);
        (fa, f2)
    };
    let e = Engine::builder(MODEL)
        .threads(2)
        .draft("ngram".parse().unwrap())
        .build()
        .unwrap();
    let (a1, a2) = turns(&e);
    assert!(
        a2.cached_tokens >= a1.prompt_tokens + a1.completion_tokens - 1,
        "{} cached after a {}+{} token turn",
        a2.cached_tokens,
        a1.prompt_tokens,
        a1.completion_tokens
    );
    drop(e);
    let one = Engine::builder(MODEL)
        .threads(2)
        .draft("ngram".parse().unwrap())
        .prompt_cache_slots(1)
        .build()
        .unwrap();
    let (a1, a2) = turns(&one);
    assert!(a2.cached_tokens < a1.prompt_tokens, "{}", a2.cached_tokens);
}
