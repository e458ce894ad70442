//! Settings of the samplers that take more than one number: plain structs with llama.cpp's
//! defaults, changed by field or by chained setters of the same names.
//!
//! ```
//! use llama::{Penalties, Sampler};
//! let chain = Sampler::chain().penalties(Penalties::default().repeat(1.1)).top_k(40).temp(0.8).dist(42);
//! # let _ = chain;
//! ```

/// The largest penalty window: llama.cpp allocates the whole window up front, so a larger one is
/// clamped to this (2^20 tokens).
pub const MAX_PENALTY_WINDOW: usize = 1 << 20;

/// One chaining setter per listed field, documented as setting it.
macro_rules! setters {
    ($ty:ident { $($field:ident: $t:ty),* $(,)? }) => {
        impl $ty {
            $(
                #[doc = concat!("Sets `", stringify!($field), "`.")]
                #[must_use]
                pub fn $field(mut self, $field: $t) -> Self {
                    self.$field = $field;
                    self
                }
            )*
        }
    };
}

/// Repetition, frequency and presence penalties over the last `last_n` accepted tokens
/// ([`Sampler::penalties`](crate::Sampler::penalties)). The default penalises nothing.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Penalties {
    /// How many of the last accepted tokens count (0 = off; at most [`MAX_PENALTY_WINDOW`]).
    pub last_n: usize,
    /// Divides the logit of a repeated token (1.0 = off).
    pub repeat: f32,
    /// Subtracted once per earlier occurrence (0.0 = off).
    pub frequency: f32,
    /// Subtracted once if the token occurred at all (0.0 = off).
    pub presence: f32,
}

impl Default for Penalties {
    fn default() -> Self {
        Penalties { last_n: 64, repeat: 1.0, frequency: 0.0, presence: 0.0 }
    }
}
setters!(Penalties { last_n: usize, repeat: f32, frequency: f32, presence: f32 });

/// DRY ("don't repeat yourself"): penalises extending a sequence that already occurred
/// ([`Sampler::dry`](crate::Sampler::dry)). The default (multiplier 0) is off.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Dry {
    /// Strength (0.0 = off).
    pub multiplier: f32,
    /// Growth of the penalty with the repeated length.
    pub base: f32,
    /// Repeats up to this length go unpunished.
    pub allowed_length: usize,
    /// How many of the last tokens are searched (0 = off; at most [`MAX_PENALTY_WINDOW`]).
    pub last_n: usize,
    /// Strings that end a repeated sequence (newline, `:`, quote, `*` by default).
    pub breakers: Vec<String>,
}

impl Default for Dry {
    fn default() -> Self {
        Dry {
            multiplier: 0.0,
            base: 1.75,
            allowed_length: 2,
            last_n: 64,
            breakers: ["\n", ":", "\"", "*"].map(String::from).to_vec(),
        }
    }
}
setters!(Dry { multiplier: f32, base: f32, allowed_length: usize, last_n: usize, breakers: Vec<String> });

/// Mirostat 1.0: steers toward a target surprise ([`Sampler::mirostat`](crate::Sampler::mirostat);
/// ends a chain).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Mirostat {
    /// Target surprise.
    pub tau: f32,
    /// Learning rate.
    pub eta: f32,
    /// How many tokens the estimate uses.
    pub m: usize,
    /// Seed of its random choice.
    pub seed: u32,
}

impl Default for Mirostat {
    fn default() -> Self {
        Mirostat { tau: 5.0, eta: 0.1, m: 100, seed: llama_sys::LLAMA_DEFAULT_SEED }
    }
}
setters!(Mirostat { tau: f32, eta: f32, m: usize, seed: u32 });

/// Mirostat 2.0 ([`Sampler::mirostat_v2`](crate::Sampler::mirostat_v2); ends a chain).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct MirostatV2 {
    /// Target surprise.
    pub tau: f32,
    /// Learning rate.
    pub eta: f32,
    /// Seed of its random choice.
    pub seed: u32,
}

impl Default for MirostatV2 {
    fn default() -> Self {
        MirostatV2 { tau: 5.0, eta: 0.1, seed: llama_sys::LLAMA_DEFAULT_SEED }
    }
}
setters!(MirostatV2 { tau: f32, eta: f32, seed: u32 });

/// Exclude Top Choices: with `probability`, removes every token above `threshold` but the least
/// likely of them ([`Sampler::xtc`](crate::Sampler::xtc)). The default is off.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Xtc {
    /// Chance of acting on a token (0.0 = off).
    pub probability: f32,
    /// Probability above which a token counts as a top choice.
    pub threshold: f32,
    /// Seed of the chance.
    pub seed: u32,
}

impl Default for Xtc {
    fn default() -> Self {
        Xtc { probability: 0.0, threshold: 0.1, seed: llama_sys::LLAMA_DEFAULT_SEED }
    }
}
setters!(Xtc { probability: f32, threshold: f32, seed: u32 });

/// Dynamic temperature: `temp ± delta`, chosen by the candidates' entropy
/// ([`Sampler::temp_ext`](crate::Sampler::temp_ext)). `delta` 0 is a plain temperature.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct TempExt {
    /// Centre temperature.
    pub temp: f32,
    /// Half-width of the range (0.0 = a fixed temperature).
    pub delta: f32,
    /// How the entropy maps into the range.
    pub exponent: f32,
}

impl Default for TempExt {
    fn default() -> Self {
        TempExt { temp: 0.8, delta: 0.0, exponent: 1.0 }
    }
}
setters!(TempExt { temp: f32, delta: f32, exponent: f32 });

/// Adaptive-p: picks tokens near probability `target`, adapting with an average of `decay`
/// ([`Sampler::adaptive_p`](crate::Sampler::adaptive_p); ends a chain).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct AdaptiveP {
    /// Target probability (negative = off: plain sampling from the distribution).
    pub target: f32,
    /// Weight of the history in the moving average.
    pub decay: f32,
    /// Seed of its random choice.
    pub seed: u32,
}

impl Default for AdaptiveP {
    fn default() -> Self {
        AdaptiveP { target: -1.0, decay: 0.9, seed: llama_sys::LLAMA_DEFAULT_SEED }
    }
}
setters!(AdaptiveP { target: f32, decay: f32, seed: u32 });
