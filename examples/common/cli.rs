//! Command-line pieces that several examples and benches share, for `#[command(flatten)]`.

use std::path::PathBuf;

use clap::builder::{PossibleValuesParser, RangedU64ValueParser};

use crate::models::{self, FetchError};

/// `--model PATH` or `--model-name NAME`; with neither, the default model.
#[derive(Debug, Clone, clap::Args)]
pub struct ModelArgs {
    /// GGUF model file (default: SmolLM2-135M-Instruct, fetched on first use).
    #[arg(long, value_name = "PATH")]
    pub model: Option<PathBuf>,
    /// A known model by name, fetched on first use.
    #[arg(
        long,
        value_name = "NAME",
        conflicts_with = "model",
        value_parser = PossibleValuesParser::new(models::NAMED.map(|(name, _)| name))
    )]
    pub model_name: Option<String>,
}

impl ModelArgs {
    /// The model's path, fetching a named or the default model first if needed.
    pub fn path(&self) -> Result<PathBuf, FetchError> {
        match (&self.model, &self.model_name) {
            (Some(path), _) => Ok(path.clone()),
            (None, Some(name)) => models::by_name(name),
            (None, None) => models::default_model(),
        }
    }
}

/// `--bench`, which `cargo bench` passes to benches that have no libtest harness.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchFlag {
    // Counted rather than set: a second `--bench` typed after `--` must not be an error.
    #[arg(long, hide = true, action = clap::ArgAction::Count)]
    pub bench: u8,
}

/// A count that means nothing below `min` (threads, rounds), rejected by clap with the others.
pub fn at_least(min: u64) -> RangedU64ValueParser<usize> {
    RangedU64ValueParser::new().range(min..)
}
