//! Helpers shared by the examples, benches and the C-equivalence test.

pub mod derived;
pub mod greedy;
pub mod models;
pub mod programs;
