//! Arbitrary JSON as a JSON Schema: conversion refuses or returns a grammar, and every grammar
//! it returns must parse in llama.cpp.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| llama_fuzz::targets::json_schema(data));
