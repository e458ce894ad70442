//! Progress on stderr: a bar per request counting its tokens on a terminal, plain lines
//! otherwise (logs and CI see every step start and end).

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

pub struct Progress {
    bars: MultiProgress,
}

/// One request's bar.
pub struct Task {
    bar: ProgressBar,
}

impl Progress {
    pub fn new() -> Progress {
        Progress { bars: MultiProgress::with_draw_target(ProgressDrawTarget::stderr()) }
    }

    /// A line above the bars (or on its own where there are none).
    pub fn log(&self, line: &str) {
        if self.bars.is_hidden() {
            eprintln!("{line}");
        } else {
            let _ = self.bars.println(line);
        }
    }

    /// A bar for `label`, out of `max_tokens`.
    pub fn task(&self, label: &str, max_tokens: usize) -> Task {
        let bar = self.bars.add(ProgressBar::new(max_tokens as u64));
        // The template is a constant; a default bar is the fallback should it ever be refused.
        let style = ProgressStyle::with_template("{prefix:>12} [{bar:24}] {pos:>4}/{len} tokens  {wide_msg}")
            .map(|s| s.progress_chars("=> "))
            .unwrap_or_else(|_| ProgressStyle::default_bar());
        bar.set_style(style);
        bar.set_prefix(label.to_string());
        Task { bar }
    }
}

impl Task {
    pub fn message(&self, msg: &str) {
        self.bar.set_message(msg.to_string());
    }

    pub fn token(&self) {
        self.bar.inc(1);
    }

    /// Removes the bar; its outcome goes to the log.
    pub fn finish(self, progress: &Progress, line: &str) {
        self.bar.finish_and_clear();
        progress.log(line);
    }
}
