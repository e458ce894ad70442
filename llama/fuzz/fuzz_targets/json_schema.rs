//! Arbitrary JSON as a JSON Schema: conversion refuses or returns a grammar, and every grammar
//! it returns must parse in llama.cpp.
#![no_main]

// The model loads before the first input, so no input is charged for it (libFuzzer's timeout).
libfuzzer_sys::fuzz_target!(init: { llama_fuzz::vocab_model(); }, |data: &[u8]| llama_fuzz::targets::json_schema(data));
