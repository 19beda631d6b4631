//! Stop strings over streamed text: text that could be the start of a stop string is held
//! back until the next piece shows whether it is one, so a stop string split across
//! tokens is still caught and never reaches the client.

/// Streams text through, cutting it at the first stop string.
#[derive(Debug, Default)]
pub struct StopMatcher {
    stops: Vec<String>,
    held: String,
    stopped: bool,
}

impl StopMatcher {
    /// A matcher for `stops` (empty strings are ignored).
    pub fn new(stops: &[String]) -> Self {
        Self {
            stops: stops.iter().filter(|s| !s.is_empty()).cloned().collect(),
            held: String::new(),
            stopped: false,
        }
    }

    /// Whether a stop string has been seen (nothing more is released after it).
    pub fn stopped(&self) -> bool {
        self.stopped
    }

    /// Add text; return what can be released now.
    pub fn push(&mut self, text: &str) -> String {
        if self.stopped {
            return String::new();
        }
        self.held.push_str(text);
        if let Some(at) = self
            .stops
            .iter()
            .filter_map(|s| self.held.find(s.as_str()))
            .min()
        {
            self.stopped = true;
            let out = self.held[..at].to_string();
            self.held.clear();
            return out;
        }
        // Hold the longest suffix that is a proper prefix of some stop string.
        let keep = self
            .held
            .char_indices()
            .map(|(i, _)| i)
            .find(|&i| {
                let tail = &self.held[i..];
                self.stops.iter().any(|s| s.starts_with(tail))
            })
            .unwrap_or(self.held.len());
        let out = self.held[..keep].to_string();
        self.held.drain(..keep);
        out
    }

    /// End of the stream: release what was held (it did not become a stop string).
    pub fn finish(&mut self) -> String {
        if self.stopped {
            return String::new();
        }
        std::mem::take(&mut self.held)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(stops: &[&str], pieces: &[&str]) -> (String, bool) {
        let stops: Vec<String> = stops.iter().map(|s| s.to_string()).collect();
        let mut m = StopMatcher::new(&stops);
        let mut out = String::new();
        for p in pieces {
            out += &m.push(p);
        }
        out += &m.finish();
        (out, m.stopped())
    }

    #[test]
    fn no_stops_pass_everything_through_at_once() {
        let mut m = StopMatcher::new(&[]);
        assert_eq!(m.push("abc"), "abc");
        assert_eq!(m.push(""), "");
        assert_eq!(m.finish(), "");
    }

    #[test]
    fn a_stop_split_across_pieces_is_cut() {
        assert_eq!(
            run(&["\n\n"], &["one", "\n", "\ntwo"]),
            ("one".into(), true)
        );
        assert_eq!(run(&["END"], &["abE", "N", "D!"]), ("ab".into(), true));
    }

    #[test]
    fn a_near_miss_is_released_later() {
        let stops = vec!["END".to_string()];
        let mut m = StopMatcher::new(&stops);
        assert_eq!(m.push("xEN"), "x");
        assert_eq!(m.push("Y"), "ENY");
        assert_eq!(m.push("E"), "");
        assert_eq!(m.finish(), "E");
        assert!(!m.stopped());
    }

    #[test]
    fn the_earliest_of_several_stops_wins_and_nothing_follows() {
        let stops = vec!["b".to_string(), "a".to_string()];
        let mut m = StopMatcher::new(&stops);
        assert_eq!(m.push("xxabyy"), "xx");
        assert_eq!(m.push("more"), "");
        assert_eq!(m.finish(), "");
    }

    #[test]
    fn multibyte_text_is_cut_on_character_boundaries() {
        assert_eq!(run(&["é!"], &["caf", "é", "é!x"]), ("café".into(), true));
        assert_eq!(run(&["日本"], &["今日", "は"]), ("今日は".into(), false));
    }
}
