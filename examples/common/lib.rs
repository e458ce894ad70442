//! Helpers shared by the examples, benches and the C-equivalence test.

pub mod cli;
pub mod derived;
pub mod greedy;
#[cfg(feature = "mtmd")]
pub mod media;
pub mod models;
pub mod programs;

/// The README's Rust snippets, compiled as doctests (`cargo test --doc`) so they cannot drift
/// from the API. Here because this package enables every feature they use.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
struct ReadmeSnippets;
