//! How long a model stays loaded after its last request, with Ollama's semantics: a duration
//! (`"5m"`, `"30s"`, `"1h30m"`, or a bare number of seconds), `0` to unload right after the
//! reply, any negative value to keep it forever.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// How long an idle model stays loaded. Parses from text as Ollama's `keep_alive` does.
///
/// ```
/// use llama::server::KeepAlive;
/// use std::time::Duration;
/// assert_eq!("1h30m".parse::<KeepAlive>()?, KeepAlive::For(Duration::from_secs(5400)));
/// assert_eq!("-1".parse::<KeepAlive>()?, KeepAlive::Forever);
/// # Ok::<(), llama::server::KeepAliveError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeepAlive {
    /// Never unloaded for idleness.
    Forever,
    /// `Duration::ZERO` unloads as soon as the model is idle.
    For(Duration),
}

/// A keep-alive that is not a duration, a number of seconds or a negative number.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid keep-alive {0:?}: expected a duration such as 5m, 30s, 1h30m, a number of seconds, or -1")]
pub struct KeepAliveError(String);

impl KeepAlive {
    /// From a number of seconds: negative is forever, NaN an error.
    pub fn from_seconds(s: f64) -> Result<KeepAlive, KeepAliveError> {
        if s.is_nan() {
            return Err(KeepAliveError(s.to_string()));
        }
        if s < 0.0 {
            return Ok(KeepAlive::Forever);
        }
        // Anything beyond a century is "forever" for a server: avoids Instant overflow later.
        Ok(Duration::try_from_secs_f64(s)
            .ok()
            .filter(|d| d.as_secs() < 100 * 365 * 86_400)
            .map_or(KeepAlive::Forever, KeepAlive::For))
    }
}

impl FromStr for KeepAlive {
    type Err = KeepAliveError;

    fn from_str(text: &str) -> Result<KeepAlive, KeepAliveError> {
        let bad = || KeepAliveError(text.to_string());
        let s = text.trim();
        if let Ok(secs) = s.parse::<f64>() {
            return KeepAlive::from_seconds(secs);
        }
        let (negative, mut rest) = match s.strip_prefix('-') {
            Some(r) => (true, r),
            None => (false, s.strip_prefix('+').unwrap_or(s)),
        };
        if rest.is_empty() {
            return Err(bad());
        }
        let mut total = 0.0f64;
        while !rest.is_empty() {
            let digits = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).ok_or_else(bad)?;
            let value: f64 = rest[..digits].parse().map_err(|_| bad())?;
            rest = &rest[digits..];
            let unit_len = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
            let scale = match &rest[..unit_len] {
                "ms" => 0.001,
                "s" => 1.0,
                "m" => 60.0,
                "h" => 3600.0,
                _ => return Err(bad()),
            };
            total += value * scale;
            rest = &rest[unit_len..];
        }
        KeepAlive::from_seconds(if negative { -total } else { total })
    }
}

impl fmt::Display for KeepAlive {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeepAlive::Forever => f.write_str("forever"),
            KeepAlive::For(d) => write!(f, "{}s", d.as_secs_f64()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ollama_durations() {
        let secs = |s: u64| KeepAlive::For(Duration::from_secs(s));
        assert_eq!("5m".parse(), Ok(secs(300)));
        assert_eq!("30s".parse(), Ok(secs(30)));
        assert_eq!("1h30m".parse(), Ok(secs(5400)));
        assert_eq!("300".parse(), Ok(secs(300)));
        assert_eq!("0".parse(), Ok(secs(0)));
        assert_eq!("-1".parse(), Ok(KeepAlive::Forever));
        assert_eq!("-5m".parse(), Ok(KeepAlive::Forever));
        assert_eq!("1e300".parse(), Ok(KeepAlive::Forever));
        for bad in ["", "5x", "m", "--1", "1.2.3s", "NaN"] {
            assert!(bad.parse::<KeepAlive>().is_err(), "{bad}");
        }
    }
}
