//! Arbitrary JSON as a JSON Schema: conversion refuses or returns a grammar, and every grammar
//! it returns must parse in llama.cpp.
#![no_main]

use libfuzzer_sys::fuzz_target;
use llama::Sampler;

fuzz_target!(|data: &[u8]| {
    let Ok(schema) = serde_json::from_slice::<serde_json::Value>(data) else { return };
    let Ok(gbnf) = llama::json_schema_to_grammar(&schema) else { return };
    match Sampler::chain().grammar(llama_fuzz::vocab_model(), &gbnf, "root") {
        Ok(_) => {}
        Err(e) => panic!("grammar from {schema} does not parse: {e}\n{gbnf}"),
    }
});
