//! Grammar-constrained generation: 100 seeded runs on the JSON grammar and 10 seeded runs on
//! each of 10 JSON Schemas; every output must parse, and validate against its schema with an
//! independent validator (the `jsonschema` crate). Ten seeds run as ten sequences of one batch.

mod common;

use llama::{AddSpecial, Batch, ChatMessage, ContextParams, Logits, Output, Sampler, SpecialSyntax, Token};
use serde_json::{json, Value};

const PARALLEL: usize = 10;
const MAX_TOKENS: usize = 256;

/// Generates one output per seed, all in parallel sequences sharing the prompt.
fn generate(instruction: &str, seeds: &[u32], make: impl Fn(u32) -> Sampler) -> Vec<String> {
    let model = common::smollm2();
    let vocab = model.vocab();
    let chat = model
        .apply_chat_template(&[ChatMessage::system("You output only JSON."), ChatMessage::user(instruction)], true)
        .unwrap();
    let prompt = vocab.tokenize_with(&chat, AddSpecial::No, SpecialSyntax::Tokens).unwrap();
    let n = seeds.len();
    let params =
        ContextParams::default().n_ctx((prompt.len() + MAX_TOKENS + 8) * n).n_seq_max(n).kv_unified(true).n_threads(2);
    let mut ctx = model.context(params).unwrap();
    let all: Vec<usize> = (0..n).collect();
    let mut batch = Batch::new(prompt.len().max(n), n);
    for (i, &t) in prompt.iter().enumerate() {
        let logits = if i + 1 == prompt.len() { Logits::Want } else { Logits::Skip };
        batch.add(t, i, &all, logits).unwrap();
    }
    ctx.decode(&batch).unwrap();

    let mut samplers: Vec<Sampler> = seeds.iter().map(|&s| make(s)).collect();
    let mut outputs: Vec<Vec<Token>> = vec![Vec::new(); n];
    let mut done = vec![false; n];
    // Where each sequence's logits are in the last batch.
    let mut index: Vec<usize> = vec![prompt.len() - 1; n];
    for step in 0..MAX_TOKENS {
        batch.clear();
        for seq in 0..n {
            if done[seq] {
                continue;
            }
            let t = samplers[seq].sample(&ctx, Output::At(index[seq])).unwrap();
            if vocab.is_eog(t) {
                done[seq] = true;
                continue;
            }
            outputs[seq].push(t);
            index[seq] = batch.len();
            batch.add(t, prompt.len() + step, &[seq], Logits::Want).unwrap();
        }
        if batch.is_empty() {
            break;
        }
        ctx.decode(&batch).unwrap();
    }
    outputs.iter().map(|toks| vocab.detokenize(toks).unwrap()).collect()
}

/// A hand-written GBNF for flat JSON objects: at most six members, primitive values, bounded
/// strings, so every run ends within the token budget (the unbounded `Sampler::json` grammar
/// lets a 135M model ramble past any budget).
const FLAT_JSON: &str = r#"
root   ::= "{" ws ( member ( "," ws member ){0,5} )? "}" ws
member ::= string ":" ws value
value  ::= string | number | ( "true" | "false" | "null" ) ws
string ::= "\"" ( [^"\\\x7F\x00-\x1F] | "\\" ["\\/bfnrt] ){0,40} "\"" ws
number ::= "-"? ( [0] | [1-9] [0-9]{0,8} ) ( "." [0-9]{1,4} )? ws
ws     ::= ( " " | "\n" [ ]{0,4} )?
"#;

fn chain(schema: Option<&Value>, seed: u32) -> Sampler {
    let model = common::smollm2();
    let c = Sampler::chain();
    let c = match schema {
        Some(s) => c.json_schema(model, s).unwrap(),
        None => c.grammar(model, FLAT_JSON, "root").unwrap(),
    };
    c.top_k(40).temp(0.8).dist(seed)
}

/// One test function: the two parts must not run in parallel (two 2-thread decoders on two
/// cores spin against each other in ggml's barriers).
#[test]
fn grammar_and_schema_outputs_are_valid() {
    json_grammar_outputs_always_parse();
    schema_outputs_validate_against_their_schemas();
}

fn json_grammar_outputs_always_parse() {
    let mut n_ok = 0;
    for wave in 0..100 / PARALLEL {
        let seeds: Vec<u32> = (0..PARALLEL as u32).map(|i| 1000 + wave as u32 * 100 + i).collect();
        let outs = generate("Give a JSON object with the title and year of a famous book.", &seeds, |s| chain(None, s));
        for out in outs {
            let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out:?}"));
            assert!(v.is_object());
            n_ok += 1;
        }
    }
    assert_eq!(n_ok, 100);
}

fn schemas() -> Vec<(&'static str, Value)> {
    vec![
        (
            "A person with a name and an age.",
            json!({"type": "object", "properties": {
                "name": {"type": "string", "maxLength": 20},
                "age": {"type": "integer", "minimum": 0, "maximum": 120}}, "required": ["name", "age"]}),
        ),
        ("Pick a colour.", json!({"type": "string", "enum": ["red", "green", "blue"]})),
        (
            "A few small integers.",
            json!({"type": "array", "items": {"type": "integer", "minimum": -10, "maximum": 10}, "minItems": 2, "maxItems": 5}),
        ),
        (
            "A blog post with a title, tags and whether it is published.",
            json!({"type": "object", "properties": {
                "title": {"type": "string", "maxLength": 30},
                "tags": {"type": "array", "items": {"type": "string", "maxLength": 10}, "maxItems": 3},
                "published": {"type": "boolean"}}, "required": ["title"]}),
        ),
        (
            "Either a digit or a short word.",
            json!({"anyOf": [{"type": "integer", "minimum": 0, "maximum": 9}, {"type": "string", "maxLength": 5}]}),
        ),
        (
            "A line segment between two points.",
            json!({
                "$defs": {"point": {"type": "object", "properties": {
                    "x": {"type": "integer", "minimum": -100, "maximum": 100},
                    "y": {"type": "integer", "minimum": -100, "maximum": 100}}, "required": ["x", "y"]}},
                "type": "object",
                "properties": {"from": {"$ref": "#/$defs/point"}, "to": {"$ref": "#/$defs/point"}},
                "required": ["from", "to"]}),
        ),
        (
            "An event with a date and an id.",
            json!({"type": "object", "properties": {
                "date": {"type": "string", "format": "date"},
                "id": {"type": "string", "format": "uuid"}}, "required": ["date", "id"]}),
        ),
        (
            "An order line with a price and a quantity.",
            json!({"type": "object", "properties": {
                "price": {"type": "number", "minimum": 0, "maximum": 1000},
                "qty": {"type": "integer", "exclusiveMinimum": 0, "maximum": 50}}, "required": ["price", "qty"]}),
        ),
        (
            "A versioned note that may be null.",
            json!({"type": "object", "properties": {
                "version": {"const": 2},
                "note": {"type": ["string", "null"], "maxLength": 15}}, "required": ["version", "note"]}),
        ),
        (
            "A tuple of a word, a rating from 1 to 5 and a flag.",
            json!({"type": "array", "prefixItems": [
                {"type": "string", "maxLength": 8},
                {"type": "integer", "minimum": 1, "maximum": 5},
                {"type": "boolean"}], "items": false}),
        ),
    ]
}

fn schema_outputs_validate_against_their_schemas() {
    for (i, (instruction, schema)) in schemas().into_iter().enumerate() {
        let validator = jsonschema::validator_for(&schema).unwrap();
        // `items: false` (closed tuples) is validated but not needed by the converter.
        let mut for_grammar = schema.clone();
        if let Some(o) = for_grammar.as_object_mut() {
            o.remove("items").filter(|v| !v.is_boolean()).map(|v| o.insert("items".into(), v));
        }
        let seeds: Vec<u32> = (0..PARALLEL as u32).map(|s| 7 + 31 * s + i as u32).collect();
        let outs = generate(instruction, &seeds, |s| chain(Some(&for_grammar), s));
        for out in outs {
            let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("schema {i}: {e}: {out:?}"));
            let errors: Vec<String> = validator.iter_errors(&v).map(|e| e.to_string()).collect();
            assert!(errors.is_empty(), "schema {i}: {out} → {errors:?}");
        }
    }
}
