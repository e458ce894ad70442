//! Tool calling on a real model whose template supports tools (Qwen2.5-Coder-0.5B-Instruct):
//! required calls validate against the schema on every seed, `auto` calls when the question
//! needs the tool and answers in text when it does not, a tool result gives a text answer,
//! streaming deltas add up to the final parse, and bad input is an error or content, never a
//! crash. Also: the prompt common renders equals what Python's `jinja2` renders from the same
//! template (`jinja_reference.py`).

mod common;

use std::process::{Command, Stdio};
use std::sync::OnceLock;

use llama::engine::{Engine, EngineParams};
use llama::tools::{ChatDelta, ChatRequest, ChatTemplates, Parsed, RenderedChat, Tool, ToolCallStream, ToolChoice};
use llama::{ChatMessage, GenerateParams, Model, Sampler, ToolCall};
use serde_json::{json, Value};

fn qwen() -> &'static Model {
    static MODEL: OnceLock<Model> = OnceLock::new();
    MODEL.get_or_init(|| {
        let path = common::models::ensure(&common::models::QWEN_CODER_DRAFT)
            .unwrap_or_else(|e| panic!("cannot fetch Qwen2.5-Coder-0.5B: {e}"));
        Model::load(path).expect("load Qwen2.5-Coder-0.5B")
    })
}

fn templates() -> &'static ChatTemplates {
    static T: OnceLock<ChatTemplates> = OnceLock::new();
    T.get_or_init(|| ChatTemplates::new(qwen()).expect("common parses Qwen's template"))
}

/// One engine per test binary: 4 slots share the 2 cores; tests submit concurrently.
fn engine() -> &'static Engine {
    static E: OnceLock<Engine> = OnceLock::new();
    E.get_or_init(|| Engine::new(qwen(), EngineParams::default().slots(4).n_ctx(8192).threads(2)).expect("engine"))
}

fn weather_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "city": {"type": "string", "description": "City name, e.g. Paris"},
            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}
        },
        "required": ["city", "unit"]
    })
}

fn weather() -> Tool {
    Tool::new("get_weather", "Get the current weather in a city", weather_schema())
}

fn time_tool() -> Tool {
    Tool::new(
        "get_time",
        "Get the current local time in a time zone",
        json!({"type": "object", "properties": {"zone": {"type": "string"}}, "required": ["zone"]}),
    )
}

fn render(messages: Vec<ChatMessage>, tools: Vec<Tool>, choice: ToolChoice) -> RenderedChat {
    ChatRequest::new(messages).tools(tools).tool_choice(choice).render(templates()).expect("render")
}

/// Runs the rendered request on the engine with `chain`; returns the raw text and its parse.
fn run(rendered: &RenderedChat, chain: Sampler, max_tokens: usize) -> (String, Parsed) {
    let sampler = rendered.sampler(qwen(), chain).expect("grammar sampler");
    let request = rendered.request(sampler, GenerateParams::default().max_tokens(max_tokens));
    let (text, _) = engine().handle().submit(request).expect("submit").collect_text().expect("generate").remove(0);
    let parsed = rendered.parser().expect("parser").parse(&text);
    (text, parsed)
}

fn valid_weather_call(call: &ToolCall) -> Result<(), String> {
    if call.name != "get_weather" {
        return Err(format!("called {:?}", call.name));
    }
    let args: Value =
        serde_json::from_str(&call.arguments).map_err(|e| format!("arguments {:?}: {e}", call.arguments))?;
    let validator = jsonschema::validator_for(&weather_schema()).map_err(|e| e.to_string())?;
    validator.validate(&args).map_err(|e| format!("arguments {args} do not validate: {e}"))
}

fn ask_weather() -> Vec<ChatMessage> {
    vec![ChatMessage::user("What is the weather like in Paris right now? Use celsius.")]
}

#[test]
fn required_calls_validate_on_20_of_20_seeds() {
    let rendered = render(ask_weather(), vec![weather()], ToolChoice::Required);
    let grammar = rendered.grammar.as_ref().expect("a required call has a grammar");
    assert!(!grammar.lazy, "required: strict from the first token");
    // Submitted together so the engine batches them; each has its own seeded sampler.
    let completions: Vec<_> = (0..20u32)
        .map(|seed| {
            let chain = Sampler::chain().top_k(40).top_p(0.95).min_p(0.05).temp(0.8).dist(seed);
            let sampler = rendered.sampler(qwen(), chain).unwrap();
            let request = rendered.request(sampler, GenerateParams::default().max_tokens(96));
            engine().handle().submit(request).unwrap()
        })
        .collect();
    let parser = rendered.parser().unwrap();
    let mut failures = Vec::new();
    for (seed, completion) in completions.into_iter().enumerate() {
        let (text, _) = completion.collect_text().unwrap().remove(0);
        let parsed = parser.parse(&text);
        let result = match parsed.message.tool_calls.as_slice() {
            [] => Err(format!("no call: {text:?} ({:?})", parsed.malformed)),
            calls => calls.iter().try_for_each(valid_weather_call),
        };
        if let Err(e) = result {
            failures.push(format!("seed {seed}: {e}"));
        }
    }
    println!("required: {}/20 seeded runs gave a call whose arguments validate", 20 - failures.len());
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn auto_calls_the_tool_then_answers_the_result_in_text() {
    let rendered = render(ask_weather(), vec![weather(), time_tool()], ToolChoice::Auto);
    let grammar = rendered.grammar.as_ref().expect("auto has a lazy grammar");
    assert!(grammar.lazy && !grammar.triggers.is_empty(), "{grammar:?}");
    let (text, parsed) = run(&rendered, Sampler::greedy(), 96);
    let call = match parsed.message.tool_calls.as_slice() {
        [call] => call.clone(),
        other => panic!("expected one call, got {other:?} from {text:?}"),
    };
    valid_weather_call(&call).unwrap();
    assert!(call.id.starts_with("call_"), "{call:?}");

    // Second turn: the assistant's call and the tool's result go back in.
    let mut messages = ask_weather();
    messages.push(parsed.message.clone());
    // Qwen2.5-Coder-0.5B was not trained on tool results: given a bare result (JSON or a
    // sentence) it repeated the call on all of 20 tries (4 phrasings, greedy and 4 seeds). A
    // result that says what to do next, as applications' tools often do, is answered in text.
    let result = "It is 21 degrees celsius and sunny in Paris. Now answer the user's question in one plain \
                  sentence; do not call the tool again.";
    messages.push(ChatMessage::tool_result(&call.id, result));
    let rendered = render(messages, vec![weather(), time_tool()], ToolChoice::Auto);
    assert!(rendered.prompt.contains("<tool_response>"), "the result is in the prompt:\n{}", rendered.prompt);
    let (text, parsed) = run(&rendered, Sampler::greedy(), 64);
    assert!(parsed.message.tool_calls.is_empty(), "answered with another call: {text:?}");
    assert!(parsed.message.content.contains("21"), "the answer uses the result: {text:?}");
}

#[test]
fn auto_without_need_for_a_tool_gives_plain_text() {
    let messages = vec![ChatMessage::user("Write a one-line Python expression that adds 2 and 3.")];
    let rendered = render(messages, vec![weather()], ToolChoice::Auto);
    let (text, parsed) = run(&rendered, Sampler::greedy(), 48);
    assert!(parsed.message.tool_calls.is_empty(), "called a tool: {text:?}");
    assert!(parsed.malformed.is_none() && !parsed.message.content.trim().is_empty(), "{parsed:?}");
    assert_eq!(parsed.message.content, text, "plain text is the content, untouched");
}

#[test]
fn a_named_function_is_the_one_called() {
    let messages = vec![ChatMessage::user("What is the weather like in Paris?")];
    let rendered = render(messages, vec![weather(), time_tool()], ToolChoice::Function("get_time".into()));
    assert!(!rendered.grammar.as_ref().unwrap().lazy);
    let (text, parsed) = run(&rendered, Sampler::greedy(), 64);
    let names: Vec<&str> = parsed.message.tool_calls.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["get_time"], "{text:?}");
}

#[test]
fn none_describes_tools_but_never_constrains() {
    let rendered = render(ask_weather(), vec![weather()], ToolChoice::None);
    assert!(rendered.grammar.is_none());
    assert!(rendered.prompt.contains("get_weather"), "tools are still described");
}

#[test]
fn streamed_deltas_add_up_to_the_final_parse() {
    let rendered = render(ask_weather(), vec![weather()], ToolChoice::Required);
    let sampler = rendered.sampler(qwen(), Sampler::greedy()).unwrap();
    let request = rendered.request(sampler, GenerateParams::default().max_tokens(96));
    let mut stream = ToolCallStream::new(rendered.parser().unwrap());
    let mut deltas = Vec::new();
    for event in engine().handle().submit(request).unwrap() {
        if let llama::engine::Event::Piece { piece, .. } = event {
            deltas.extend(stream.push(&piece.text));
        }
    }
    let (parsed, rest) = stream.finish();
    deltas.extend(rest);
    let (mut names, mut args, mut content) = (Vec::new(), String::new(), String::new());
    for d in &deltas {
        match d {
            ChatDelta::ToolCallStart { index, id, name } => names.push((*index, id.clone(), name.clone())),
            ChatDelta::ToolCallArguments { index: 0, fragment } => args.push_str(fragment),
            ChatDelta::Content(c) => content.push_str(c),
            other => panic!("unexpected delta {other:?}"),
        }
    }
    let call = &parsed.message.tool_calls[0];
    assert_eq!(names, [(0, call.id.clone(), "get_weather".to_string())], "{deltas:?}");
    assert_eq!(args, call.arguments, "fragments concatenate to the arguments: {deltas:?}");
    assert!(
        deltas.iter().filter(|d| matches!(d, ChatDelta::ToolCallArguments { .. })).count() > 1,
        "streamed in pieces"
    );
    assert_eq!(content, parsed.message.content);
    valid_weather_call(call).unwrap();
}

#[test]
fn malformed_tool_call_output_comes_back_as_content() {
    let rendered = render(ask_weather(), vec![weather()], ToolChoice::Auto);
    let parser = rendered.parser().unwrap();
    let text = "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": ";
    let parsed = parser.parse(text);
    assert!(parsed.message.tool_calls.is_empty(), "{parsed:?}");
    assert!(parsed.malformed.is_some(), "{parsed:?}");
    assert_eq!(parsed.message.content, text);
    // The partial parser says what it can and never panics on arbitrary prefixes.
    for end in (0..=text.len()).filter(|&i| text.is_char_boundary(i)) {
        let _ = parser.parse_partial(&text[..end]);
    }
}

#[test]
fn bad_tool_schemas_are_errors_with_a_reason() {
    let messages = ask_weather();
    for schema in [
        json!({"type": "object", "properties": {"x": {"$ref": "#/definitions/missing"}}}),
        json!({"type": "object", "properties": {"x": {"type": "nonsense"}}}),
        json!({"type": "object", "properties": {"x": {"$ref": "other.json#/x"}}}),
        // Became x{5,1} in the grammar, which hung llama.cpp's grammar parser.
        json!({"type": "object", "properties": {"x": {"type": "string", "minLength": 5, "maxLength": 1}}}),
    ] {
        let tool = Tool::new("bad", "a tool whose schema has no grammar", schema.clone());
        let err = ChatRequest::new(messages.clone())
            .tools(vec![tool])
            .tool_choice(ToolChoice::Required)
            .render(templates())
            .and_then(|r| r.sampler(qwen(), Sampler::greedy()).map(|_| ()));
        let err = err.expect_err(&format!("schema {schema} was accepted"));
        assert!(!err.to_string().is_empty(), "{schema}: {err}");
    }
}

/// Six conversations with tools: the prompt common renders equals Python jinja2's rendering of
/// the template stored in the GGUF (run the way Hugging Face's tokenizers run chat templates).
#[test]
fn prompts_match_python_jinja2_on_six_conversations() {
    let call =
        |id: &str, name: &str, args: Value| ToolCall { id: id.into(), name: name.into(), arguments: args.to_string() };
    let conversations: Vec<(&str, Vec<ChatMessage>, Vec<Tool>)> = vec![
        ("one tool, one question", ask_weather(), vec![weather()]),
        (
            "system prompt and two tools",
            vec![ChatMessage::system("You are a terse assistant."), ChatMessage::user("Time in Tokyo?")],
            vec![weather(), time_tool()],
        ),
        (
            "a call and its result",
            vec![
                ChatMessage::user("Weather in Oslo, celsius?"),
                ChatMessage::assistant_tool_calls(
                    "",
                    vec![call("call_1", "get_weather", json!({"city": "Oslo", "unit": "celsius"}))],
                ),
                ChatMessage::tool_result("call_1", r#"{"temperature": -3}"#),
            ],
            vec![weather()],
        ),
        (
            "parallel calls and two results",
            vec![
                ChatMessage::user("Weather and time in Lima?"),
                ChatMessage::assistant_tool_calls(
                    "",
                    vec![
                        call("call_a", "get_weather", json!({"city": "Lima", "unit": "celsius"})),
                        call("call_b", "get_time", json!({"zone": "America/Lima"})),
                    ],
                ),
                ChatMessage::tool_result("call_a", "18 degrees, cloudy"),
                ChatMessage::tool_result("call_b", "14:05"),
            ],
            vec![weather(), time_tool()],
        ),
        (
            "several turns",
            vec![
                ChatMessage::user("Hi!"),
                ChatMessage::assistant("Hello! How can I help?"),
                ChatMessage::user("Is it raining in Bergen?"),
            ],
            vec![weather()],
        ),
        (
            "unicode and a nested schema",
            vec![ChatMessage::user("Météo à Zürich — «maintenant»? 天气")],
            vec![Tool::new(
                "lookup",
                "Looks things up: \"quoted\" and <b>marked</b>",
                json!({"type": "object", "properties": {"q": {"type": "object", "properties": {"terms": {"type": "array", "items": {"type": "string"}}}}}, "required": ["q"]}),
            )],
        ),
    ];
    let template = qwen().chat_template().expect("Qwen has a template");
    for (name, messages, tools) in conversations {
        let ours = ChatRequest::new(messages.clone()).tools(tools.clone()).render(templates()).unwrap().prompt;
        let theirs = jinja2(&template, &messages, &tools);
        assert_eq!(ours, theirs, "{name}: common and jinja2 differ");
    }
    println!("jinja2: 6/6 prompts identical");
}

/// Renders with Python's jinja2 through `jinja_reference.py`; fails when jinja2 is missing.
fn jinja2(template: &str, messages: &[ChatMessage], tools: &[Tool]) -> String {
    let messages: Vec<Value> = messages
        .iter()
        .map(|m| {
            let mut v = json!({"role": m.role, "content": m.content});
            if !m.tool_calls.is_empty() {
                // As Hugging Face documents it: arguments as an object, not JSON text.
                v["tool_calls"] = m
                    .tool_calls
                    .iter()
                    .map(|c| {
                        let args: Value = serde_json::from_str(&c.arguments).unwrap();
                        json!({"id": c.id, "type": "function", "function": {"name": c.name, "arguments": args}})
                    })
                    .collect();
            }
            if let Some(id) = &m.tool_call_id {
                v["tool_call_id"] = json!(id);
            }
            v
        })
        .collect();
    let tools: Vec<Value> = tools
        .iter()
        .map(|t| json!({"type": "function", "function": {"name": t.name, "description": t.description, "parameters": t.parameters}}))
        .collect();
    let input = json!({"template": template, "messages": messages, "tools": tools, "add_generation_prompt": true});
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/jinja_reference.py");
    let mut child = Command::new("python3")
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 is needed (run .ci/setup)");
    use std::io::Write;
    child.stdin.take().unwrap().write_all(input.to_string().as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "jinja_reference.py failed (run .ci/setup): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}
