// Tool calling and reasoning through upstream's `common/` chat pipeline (feature `common`).
//
// Thin on purpose: JSON strings in, JSON strings out, every call behind LLAMA_RS_BARRIER so no
// C++ exception reaches Rust. The safe crate's `tools` module owns the types, validation and
// documentation; this file only converts between JSON and common's structs. Built by build.rs
// with the `cc` crate, next to shim.cpp (which owns the per-thread exception slot).

#include "barrier.h"

#include "chat.h"
#include "common.h"
#include "json.h"

#include <cstdlib>
#include <cstring>
#include <string>

using json = common_json;

namespace {

// A heap copy the Rust side frees with llama_rs_string_free.
char * dup_string(const std::string & s) {
    char * out = static_cast<char *>(std::malloc(s.size() + 1));
    if (out == nullptr) {
        throw std::bad_alloc();
    }
    std::memcpy(out, s.data(), s.size());
    out[s.size()] = '\0';
    return out;
}

common_chat_tool_choice tool_choice_from(const std::string & s) {
    if (s == "none") {
        return COMMON_CHAT_TOOL_CHOICE_NONE;
    }
    if (s == "required") {
        return COMMON_CHAT_TOOL_CHOICE_REQUIRED;
    }
    if (s == "auto") {
        return COMMON_CHAT_TOOL_CHOICE_AUTO;
    }
    throw std::invalid_argument("unknown tool_choice: " + s);
}

common_chat_format format_from(const std::string & name) {
    for (int i = 0; i < COMMON_CHAT_FORMAT_COUNT; i++) {
        if (name == common_chat_format_name(static_cast<common_chat_format>(i))) {
            return static_cast<common_chat_format>(i);
        }
    }
    throw std::invalid_argument("unknown chat format: " + name);
}

const char * trigger_type_name(common_grammar_trigger_type t) {
    switch (t) {
        case COMMON_GRAMMAR_TRIGGER_TYPE_TOKEN:
            return "token";
        case COMMON_GRAMMAR_TRIGGER_TYPE_WORD:
            return "word";
        case COMMON_GRAMMAR_TRIGGER_TYPE_PATTERN:
            return "pattern";
        case COMMON_GRAMMAR_TRIGGER_TYPE_PATTERN_FULL:
            return "pattern_full";
    }
    return "unknown";
}

}  // namespace

// The templates of one model (default and tool-use variants), parsed once.
struct llama_rs_chat_templates {
    common_chat_templates_ptr ptr;
};

// The output parser of one rendered request.
struct llama_rs_chat_parser {
    common_chat_parser_params params;
};

extern "C" {

void llama_rs_string_free(char * s) noexcept {
    std::free(s);
}

llama_rs_chat_templates * llama_rs_chat_templates_init(const llama_model * model, const char * override_src) noexcept {
    LLAMA_RS_BARRIER(nullptr, {
        auto tmpls = common_chat_templates_init(model, override_src ? override_src : "");
        if (!tmpls) {
            throw std::runtime_error("the model has no usable chat template");
        }
        return new llama_rs_chat_templates{ std::move(tmpls) };
    })
}

void llama_rs_chat_templates_free(llama_rs_chat_templates * t) noexcept {
    try {
        delete t;
    } catch (...) {
        // A destructor that throws leaks at worst; it must not unwind into Rust.
    }
}

// `request` is a JSON object: messages and tools in OpenAI's wire format, tool_choice
// ("auto" | "required" | "none"), parallel_tool_calls, add_generation_prompt, enable_thinking,
// reasoning_format (a name common knows), chat_template_kwargs (object), now (Unix seconds).
char * llama_rs_chat_templates_apply(const llama_rs_chat_templates * t, const char * request) noexcept {
    LLAMA_RS_BARRIER(nullptr, {
        const json req = json::parse(request);
        common_chat_templates_inputs in;
        in.messages = common_chat_msgs_parse_oaicompat(req.at("messages"));
        if (req.contains("tools") && !req.at("tools").is_null()) {
            in.tools = common_chat_tools_parse_oaicompat(req.at("tools"));
        }
        in.tool_choice           = tool_choice_from(req.value("tool_choice", std::string("auto")));
        in.parallel_tool_calls   = req.value("parallel_tool_calls", false);
        in.add_generation_prompt = req.value("add_generation_prompt", true);
        in.enable_thinking       = req.value("enable_thinking", true);
        in.reasoning_format      = common_reasoning_format_from_name(req.value("reasoning_format", std::string("auto")));
        in.use_jinja             = true;
        if (req.contains("now")) {
            in.now = std::chrono::system_clock::time_point(std::chrono::seconds(req.at("now").get<int64_t>()));
        }
        if (req.contains("chat_template_kwargs")) {
            for (const auto & item : req.at("chat_template_kwargs").items()) {
                in.chat_template_kwargs[item.key()] = item.value().dump();
            }
        }
        const common_chat_params out = common_chat_templates_apply(t->ptr.get(), in);

        json triggers = json::array();
        for (const auto & tr : out.grammar_triggers) {
            triggers.push_back(json::object({
                { "type",  trigger_type_name(tr.type) },
                { "value", tr.value                   },
                { "token", tr.token                   },
            }));
        }
        const json res = json::object({
            { "prompt",             out.prompt                              },
            { "format",             common_chat_format_name(out.format)     },
            { "grammar",            out.grammar                             },
            { "grammar_lazy",       out.grammar_lazy                        },
            { "grammar_triggers",   triggers                                },
            { "preserved_tokens",   out.preserved_tokens                    },
            { "additional_stops",   out.additional_stops                    },
            { "generation_prompt",  out.generation_prompt                   },
            { "supports_thinking",  out.supports_thinking                   },
            { "thinking_start_tag", out.thinking_start_tag                  },
            { "thinking_end_tags",  out.thinking_end_tags                   },
            { "parser",             out.parser                              },
        });
        return dup_string(res.dump());
    })
}

// `spec` is a JSON object: format (a name common_chat_format_name returns), generation_prompt,
// parser (the serialized parser from apply), reasoning_format (a name), parse_tool_calls.
llama_rs_chat_parser * llama_rs_chat_parser_init(const char * spec) noexcept {
    LLAMA_RS_BARRIER(nullptr, {
        const json s = json::parse(spec);
        common_chat_parser_params p;
        p.format            = format_from(s.at("format").get<std::string>());
        p.generation_prompt = s.value("generation_prompt", std::string());
        p.reasoning_format  = common_reasoning_format_from_name(s.value("reasoning_format", std::string("auto")));
        p.parse_tool_calls  = s.value("parse_tool_calls", true);
        const std::string parser = s.value("parser", std::string());
        if (!parser.empty()) {
            p.parser.load(parser);
        }
        return new llama_rs_chat_parser{ std::move(p) };
    })
}

void llama_rs_chat_parser_free(llama_rs_chat_parser * p) noexcept {
    try {
        delete p;
    } catch (...) {
        // As in llama_rs_chat_templates_free.
    }
}

// Parses model output (`len` bytes, UTF-8) into an OpenAI-style assistant message as JSON:
// role, content, reasoning_content, tool_calls. `is_partial`: the output may continue (streaming).
char * llama_rs_chat_parse(const llama_rs_chat_parser * p, const char * text, size_t len, bool is_partial) noexcept {
    LLAMA_RS_BARRIER(nullptr, {
        const common_chat_msg msg = common_chat_parse(std::string(text, len), is_partial, p->params);
        return dup_string(msg.to_json_oaicompat().dump());
    })
}

}  // extern "C"
