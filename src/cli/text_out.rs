//! Generated text streamed to stdout as tokens are committed, UTF-8 safe across token
//! boundaries; a closed pipe (e.g. `| head`) ends generation quietly.

use std::io::{StdoutLock, Write};

use tandem::text::Utf8Stream;

pub struct TextOut {
    utf8: Utf8Stream,
    out: StdoutLock<'static>,
    failed: bool,
}

impl TextOut {
    pub fn new() -> Self {
        Self {
            utf8: Utf8Stream::default(),
            out: std::io::stdout().lock(),
            failed: false,
        }
    }

    /// Write one token's bytes; `false` (stop generating) once stdout is closed.
    pub fn push(&mut self, bytes: &[u8]) -> bool {
        let s = self.utf8.push(bytes);
        if self
            .out
            .write_all(s.as_bytes())
            .and_then(|_| self.out.flush())
            .is_err()
        {
            self.failed = true;
        }
        !self.failed
    }

    /// Write what is pending and end the line; `false` if stdout was closed during
    /// generation (then no statistics line should follow).
    pub fn finish(mut self) -> bool {
        let _ = self.out.write_all(self.utf8.finish().as_bytes());
        let _ = writeln!(self.out);
        !self.failed
    }
}
