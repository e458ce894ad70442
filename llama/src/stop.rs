//! Stop strings over a stream of token bytes.

use crate::Utf8Decoder;

/// Turns generated token bytes into text to show, ending at the first stop string, which is
/// never shown, not even partly: text that could still become a stop string is held back until
/// it cannot. The engine behind [`GenerateParams::stop`](crate::GenerateParams::stop), for loops
/// written by hand.
///
/// ```
/// use llama::StopStrings;
/// let mut out = StopStrings::new(["END"]);
/// assert_eq!(out.push(b"abc E"), "abc "); // "E" could start "END": held back
/// assert_eq!(out.push(b"N"), "");
/// assert_eq!(out.push(b"D more"), ""); // the stop string and everything after it
/// assert!(out.stopped());
/// assert_eq!(out.text(), "abc ");
/// ```
#[derive(Debug, Default, Clone)]
pub struct StopStrings {
    decoder: Utf8Decoder,
    stop: Vec<String>,
    /// All text generated so far and how much of it was released.
    text: String,
    emitted: usize,
    stopped: bool,
    /// Which stop string appeared.
    matched: Option<usize>,
}

impl StopStrings {
    /// Watches for these strings (empty ones are ignored).
    pub fn new<S: Into<String>>(stops: impl IntoIterator<Item = S>) -> Self {
        let stop = stops.into_iter().map(Into::into).filter(|s: &String| !s.is_empty()).collect();
        StopStrings { stop, ..StopStrings::default() }
    }

    /// Adds a token's bytes (pieces may split UTF-8 characters); returns the text now safe to
    /// show. Once a stop string appeared, [`stopped`](Self::stopped) is true and nothing more is
    /// released.
    #[must_use]
    pub fn push(&mut self, bytes: &[u8]) -> String {
        if self.stopped {
            return String::new();
        }
        self.text.push_str(&self.decoder.push(bytes));
        self.release()
    }

    /// Whether a stop string appeared: generation should end.
    pub fn stopped(&self) -> bool {
        self.stopped
    }

    /// The stop string that appeared, once one did (the earliest in the text; of two at the
    /// same place, the first given).
    ///
    /// ```
    /// use llama::StopStrings;
    /// let mut out = StopStrings::new(["\n\n", "END"]);
    /// let _ = out.push(b"done. END");
    /// assert_eq!(out.matched(), Some("END"));
    /// ```
    pub fn matched(&self) -> Option<&str> {
        self.matched.map(|i| self.stop[i].as_str())
    }

    /// The text released so far.
    pub fn text(&self) -> &str {
        &self.text[..self.emitted]
    }

    /// At the end of generation: the text held back for possibly starting a stop string, and
    /// an incomplete UTF-8 character as U+FFFD. Nothing after a stop string.
    #[must_use]
    pub fn finish(&mut self) -> String {
        if self.stopped {
            return String::new();
        }
        let tail = self.decoder.finish();
        self.text.push_str(&tail);
        let rest = self.text[self.emitted..].to_string();
        self.emitted = self.text.len();
        rest
    }

    /// Releases what can no longer become part of a stop string; detects stop strings.
    fn release(&mut self) -> String {
        let stops = &self.stop;
        let longest = stops.iter().map(String::len).max().unwrap_or(0);
        // A stop string can start at most `longest - 1` bytes before the unreleased text.
        let mut from = self.emitted.saturating_sub(longest.saturating_sub(1));
        while !self.text.is_char_boundary(from) {
            from -= 1;
        }
        let hit = stops
            .iter()
            .enumerate()
            .filter_map(|(which, s)| self.text[from..].find(s.as_str()).map(|i| (from + i, which)))
            .min();
        let end = match hit {
            Some((at, which)) => {
                self.text.truncate(at);
                self.stopped = true;
                self.matched = Some(which);
                at.max(self.emitted)
            }
            None => {
                // Hold back the longest suffix that is a prefix of a stop string.
                let hold = stops
                    .iter()
                    .flat_map(|s| (1..s.len()).rev().filter(move |&k| s.is_char_boundary(k)).map(move |k| &s[..k]))
                    .filter(|prefix| self.text.ends_with(prefix))
                    .map(str::len)
                    .max()
                    .unwrap_or(0);
                (self.text.len() - hold).max(self.emitted)
            }
        };
        let out = self.text[self.emitted..end].to_string();
        self.emitted = end;
        out
    }
}

#[cfg(test)]
mod tests {
    use super::StopStrings;

    #[test]
    fn stops_split_across_pieces_and_characters_are_never_shown() {
        // "é" is two bytes; the stop string "éND" arrives split inside that character.
        let mut out = StopStrings::new(["éND", ""]);
        assert_eq!(out.push(b"caf\xc3"), "caf");
        assert_eq!(out.push(b"\xa9 \xc3"), "é ");
        assert_eq!(out.push(b"\xa9N"), "");
        assert_eq!(out.push(b"D tail"), "");
        assert!(out.stopped());
        assert_eq!((out.finish(), out.text()), (String::new(), "café "));

        let mut out = StopStrings::new(["END"]);
        assert_eq!(out.push(b"a E"), "a ");
        assert_eq!(out.finish(), "E", "held-back text is released at the end");
        let mut out = StopStrings::new(Vec::<String>::new());
        assert_eq!(out.push(b"x\xe2\x82"), "x");
        assert_eq!(out.finish(), "\u{fffd}", "an incomplete character ends as U+FFFD");
    }
}
