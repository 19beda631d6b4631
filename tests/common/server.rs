//! A real `tandem serve` process on loopback for the server tests, a minimal raw HTTP/1.1
//! client (for requests no well-behaved client sends), and the openai Python client.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Once;
use std::time::Duration;

pub const API_KEY: &str = "sk-tandem-test";

/// A running server, killed on drop.
pub struct Server {
    pub child: Child,
    /// host:port
    pub addr: String,
    /// Kept open so that the server never writes to a closed pipe.
    _stdout: BufReader<std::process::ChildStdout>,
}

impl Server {
    /// Start `tandem serve -m MODEL --port 0 --api-key API_KEY -t 2 <extra>`.
    pub fn start(model: &str, extra: &[&str]) -> Server {
        let mut args = vec![
            "serve",
            "-m",
            model,
            "--port",
            "0",
            "--api-key",
            API_KEY,
            "-t",
            "2",
        ];
        args.extend_from_slice(extra);
        let mut child = Command::new(env!("CARGO_BIN_EXE_tandem"))
            .args(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn tandem serve");
        let mut line = String::new();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        stdout
            .read_line(&mut line)
            .expect("read the listening line");
        let addr = line
            .trim()
            .strip_prefix("listening on http://")
            .unwrap_or_else(|| panic!("unexpected first line: {line:?}"))
            .to_string();
        Server {
            child,
            addr,
            _stdout: stdout,
        }
    }

    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Resident memory of the server process in KiB.
    pub fn rss_kib(&self) -> u64 {
        let s = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        s.lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS")
    }

    /// GET /health as JSON.
    pub fn health(&self) -> serde_json::Value {
        let r = self.request("GET", "/health", Some(API_KEY), None);
        assert_eq!(r.status, 200, "{}", r.body);
        serde_json::from_str(&r.body).unwrap()
    }

    /// Wait until the inference thread is idle with an empty queue.
    pub fn wait_idle(&self) -> serde_json::Value {
        for _ in 0..600 {
            let h = self.health();
            if h["busy"] == false && h["queued"] == 0 {
                return h;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("server never became idle");
    }

    /// One request on a fresh connection, read to the end.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        key: Option<&str>,
        body: Option<&str>,
    ) -> Reply {
        let mut s = self.connect();
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n",
            self.addr
        );
        if let Some(k) = key {
            head += &format!("Authorization: Bearer {k}\r\n");
        }
        if let Some(b) = body {
            head += &format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                b.len()
            );
        }
        head += "\r\n";
        s.write_all(head.as_bytes()).unwrap();
        if let Some(b) = body {
            s.write_all(b.as_bytes()).unwrap();
        }
        read_reply(&mut s)
    }

    pub fn connect(&self) -> TcpStream {
        let s = TcpStream::connect(&self.addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
        s
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub struct Reply {
    pub status: u16,
    pub body: String,
}

/// Read a whole response (the server closes the connection after it).
pub fn read_reply(s: &mut TcpStream) -> Reply {
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).to_string();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    let body = text
        .split_once("\r\n\r\n")
        .map(|x| x.1)
        .unwrap_or("")
        .to_string();
    Reply { status, body }
}

/// `python3` with the openai client importable: (interpreter, PYTHONPATH). Installs the
/// pinned client into target/pyclient on first use (scripts/setup.sh does it too).
pub fn openai_python() -> (String, PathBuf) {
    static INSTALL: Once = Once::new();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let dir = root.join("target/pyclient");
    INSTALL.call_once(|| {
        if dir.join("openai").is_dir() {
            return;
        }
        let st = Command::new("python3")
            .args(["-m", "pip", "install", "-q", "--target"])
            .arg(&dir)
            .arg("-r")
            .arg(root.join("tests/openai/requirements.txt"))
            .status()
            .expect("python3 -m pip");
        assert!(st.success(), "installing the openai client failed");
    });
    ("python3".into(), dir)
}

/// Run a script from tests/openai with the openai client; its stdout parsed as JSON.
pub fn run_python(script: &str, args: &[&str]) -> serde_json::Value {
    let (py, path) = openai_python();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new(py)
        .arg(root.join("tests/openai").join(script))
        .args(args)
        .env("PYTHONPATH", path)
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "{script} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{script} printed no JSON ({e}):\n{}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}
