"""Drives a running server example over loopback TCP, as its users do: with the official
`openai` package (base URL changed, nothing else), raw sockets where a client misbehaves on
purpose, and plain HTTP for the non-OpenAI routes.

    python3 openai_client.py MODE BASE_URL [ARGS...]

MODE picks the scenario the server was started for (see examples/server/tests/loopback.rs):
main, busy, keepalive, swap, shutdown. Exits non-zero with a message on the first failure.
"""

import http.client as httpclient
import json
import math
import os
import signal
import socket
import sys
import threading
import time
import urllib.parse

import jsonschema
import openai

QUESTION = "What is the capital of France? Answer in one sentence."


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def split(base):
    u = urllib.parse.urlsplit(base)
    return u.hostname, u.port


def call(base, method, path, body=None, headers=None, timeout=120):
    """One request on its own connection: (status, headers, body bytes)."""
    host, port = split(base)
    conn = httpclient.HTTPConnection(host, port, timeout=timeout)
    hdrs = {"Content-Type": "application/json"}
    hdrs.update(headers or {})
    if isinstance(body, (dict, list)):
        body = json.dumps(body).encode()
    conn.request(method, path, body=body, headers=hdrs)
    r = conn.getresponse()
    data = r.read()
    conn.close()
    return r.status, {k.lower(): v for k, v in r.getheaders()}, data


def healthy(base):
    status, _, body = call(base, "GET", "/health")
    check(status == 200, f"/health answered {status}: {body!r}")


def metric(base, name, **labels):
    """Sum of the samples of `name` whose labels include `labels`."""
    _, _, body = call(base, "GET", "/metrics")
    total, found = 0.0, False
    for line in body.decode().splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        head, value = line.rsplit(" ", 1)
        metric_name = head.split("{", 1)[0]
        if metric_name != name:
            continue
        if all(f'{k}="{v}"' in head for k, v in labels.items()):
            total += float(value)
            found = True
    check(found, f"metric {name} {labels} missing")
    return total


def wait_for(what, cond, timeout=30.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def client(base):
    return openai.OpenAI(base_url=base, api_key="not-needed", max_retries=0, timeout=120)


def chat(c, model, content, **kw):
    kw.setdefault("max_tokens", 16)
    kw.setdefault("temperature", 0)
    return c.chat.completions.create(model=model, messages=[{"role": "user", "content": content}], **kw)


def stream_text(c, model, content, max_tokens=16):
    """Streams a chat with usage; checks the chunk protocol and returns (text, usage)."""
    chunks = list(
        c.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": content}],
            max_tokens=max_tokens,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    check(chunks[0].choices[0].delta.role == "assistant", "the first chunk carries the role")
    finishes = [ch.choices[0].finish_reason for ch in chunks if ch.choices and ch.choices[0].finish_reason]
    check(finishes in (["stop"], ["length"]), f"one finish reason, in the last content chunk: {finishes}")
    check(chunks[-1].choices == [] and chunks[-1].usage is not None, "the usage chunk comes last, with no choices")
    check(all(ch.usage is None for ch in chunks[:-1]), "only the last chunk has usage")
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    return text, chunks[-1].usage


class RawStream:
    """A streaming chat request on a bare socket, read line by line."""

    def __init__(self, base, model, content, max_tokens):
        host, port = split(base)
        self.sock = socket.create_connection((host, port), timeout=60)
        body = json.dumps(
            {
                "model": model,
                "messages": [{"role": "user", "content": content}],
                "max_tokens": max_tokens,
                "temperature": 0,
                "stream": True,
            }
        ).encode()
        head = (
            f"POST /v1/chat/completions HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        self.sock.sendall(head + body)
        self.file = self.sock.makefile("rb")
        self.status = int(self.file.readline().split()[1])

    def next_data(self):
        """The next `data:` payload, or None at the end of the stream."""
        while True:
            line = self.file.readline()
            if not line:
                return None
            if line.startswith(b"data: "):
                return line[6:].strip().decode()

    def close(self):
        # RST rather than FIN: the server sees a dead peer on its next write.
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        self.file.close()
        self.sock.close()


def disconnect_cancels(base, model):
    """A client that vanishes mid-stream: its generation is cancelled, its slot serves the next."""
    before = metric(base, "llama_http_client_disconnects_total")
    cancelled = metric(base, "llama_finished_total", model=model, reason="cancelled")
    generated = metric(base, "llama_generated_tokens_total", model=model)
    s = RawStream(base, model, "Write a long story about a dragon.", max_tokens=400)
    check(s.status == 200, f"stream status {s.status}")
    for _ in range(3):
        check(s.next_data() is not None, "the stream started")
    s.close()
    wait_for("the disconnect to be counted", lambda: metric(base, "llama_http_client_disconnects_total") > before)
    wait_for(
        "the generation to be cancelled",
        lambda: metric(base, "llama_finished_total", model=model, reason="cancelled") > cancelled,
    )
    wait_for("the slot to be free", lambda: metric(base, "llama_slots_busy", model=model) == 0)
    spent = metric(base, "llama_generated_tokens_total", model=model) - generated
    check(spent < 400, f"the cancelled generation stopped early ({spent} tokens)")
    r = chat(client(base), model, QUESTION)
    check(r.choices[0].message.content, "the next request is served")


def scenario_main(base):
    model = "smollm2"
    c = client(base)

    r = chat(c, model, QUESTION)
    check(r.object == "chat.completion" and r.model == model, f"chat shape: {r}")
    check(r.id.startswith("chatcmpl-"), r.id)
    check(r.choices[0].message.role == "assistant" and r.choices[0].message.content, "chat content")
    check(r.choices[0].finish_reason in ("stop", "length"), r.choices[0].finish_reason)
    check(0 < r.usage.completion_tokens <= 16, f"usage {r.usage}")
    check(r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens, "total tokens")
    check(r.usage.prompt_tokens_details.cached_tokens is not None, "cached tokens reported")

    text, usage = stream_text(c, model, QUESTION)
    check(text and usage.prompt_tokens == r.usage.prompt_tokens, f"streamed {text!r}, usage {usage}")
    check(usage.prompt_tokens_details.cached_tokens > 0, "the repeated prompt came from the cache")

    # Without include_usage: no usage chunk at all.
    chunks = list(chat(c, model, QUESTION, stream=True))
    check(all(ch.choices for ch in chunks), "no usage chunk unless asked")

    t = c.completions.create(model=model, prompt=counting(10), max_tokens=16, temperature=0)
    check(t.object == "text_completion" and t.id.startswith("cmpl-"), f"completion {t}")
    check(continues(t.choices[0].text, 10) and t.usage.completion_tokens == 16, f"completion {t}")
    streamed = "".join(
        ch.choices[0].text
        for ch in c.completions.create(model=model, prompt=counting(10), max_tokens=16, temperature=0, stream=True)
        if ch.choices
    )
    check(continues(streamed, 10), f"streamed completion {streamed!r}")

    lp = chat(c, model, QUESTION, logprobs=True, top_logprobs=3, max_tokens=4)
    entries = lp.choices[0].logprobs.content
    check(len(entries) == lp.usage.completion_tokens, "one logprob entry per token")
    check(all(len(e.top_logprobs) == 3 and e.logprob <= 0 for e in entries), "top logprobs")

    many = chat(c, model, "Name a fruit.", n=2, temperature=1.0, seed=7, max_tokens=8)
    check([ch.index for ch in many.choices] == [0, 1], "n=2 gives two choices")

    # The client asks for base64 by default and decodes it; ask for floats too.
    for fmt in (openai.NOT_GIVEN, "float"):
        e = c.embeddings.create(model=model, input=["a cat", "a kitten", "a car"], encoding_format=fmt)
        check(len(e.data) == 3 and [d.index for d in e.data] == [0, 1, 2], "three embeddings")
        for d in e.data:
            check(len(d.embedding) == len(e.data[0].embedding) > 0, "same width")
            norm = math.sqrt(sum(x * x for x in d.embedding))
            check(abs(norm - 1.0) < 1e-3, f"normalized: {norm}")
        check(e.usage.prompt_tokens > 0, "embedding usage")

    schema = {
        "type": "object",
        "properties": {
            "city": {"type": "string", "maxLength": 24},
            "population": {"type": "integer", "minimum": 0},
            "capital": {"type": "boolean"},
        },
        "required": ["city", "population", "capital"],
        "additionalProperties": False,
    }
    for seed in (1, 2):
        s = c.chat.completions.create(
            model=model,
            messages=[
                {"role": "system", "content": "You output only JSON."},
                {"role": "user", "content": "Describe Paris as a JSON object with the keys city, population and capital."},
            ],
            response_format={"type": "json_schema", "json_schema": {"name": "city", "schema": schema, "strict": True}},
            max_tokens=64,
            temperature=0.8,
            seed=seed,
        )
        check(s.choices[0].finish_reason == "stop", f"the JSON was closed: {s.choices[0]}")
        jsonschema.validate(json.loads(s.choices[0].message.content), schema)
    o = c.chat.completions.create(
        model=model,
        messages=[
            {"role": "system", "content": "You output only JSON."},
            {"role": "user", "content": "Give the name and age of a cat as a JSON object."},
        ],
        response_format={"type": "json_object"},
        max_tokens=64,
        seed=3,
    )
    if o.choices[0].finish_reason == "stop":
        json.loads(o.choices[0].message.content)

    models = c.models.list()
    ids = [m.id for m in models.data]
    check(model in ids, f"models {ids}")
    check(models.data[0].model_extra.get("loaded") is True, "loaded flag")
    check(c.models.retrieve(model).id == model, "retrieve")

    try:
        chat(c, "no-such-model", QUESTION)
        raise AssertionError("unknown model accepted")
    except openai.NotFoundError as e:
        check(e.code == "model_not_found", e)
    try:
        chat(c, model, QUESTION, max_tokens=-1)
        raise AssertionError("negative max_tokens accepted")
    except openai.BadRequestError as e:
        check(e.param == "max_tokens", e)

    concurrent_streams(base, model, 8)
    bad_inputs(base, model)

    status, _, body = call(base, "POST", "/tokenize", {"content": "Hello world"})
    tokens = json.loads(body)["tokens"]
    check(status == 200 and tokens, body)
    status, _, body = call(base, "POST", "/detokenize", {"tokens": tokens})
    check(status == 200 and json.loads(body)["content"] == "Hello world", body)

    status, headers, body = call(base, "GET", "/metrics")
    text = body.decode()
    check(status == 200 and headers["content-type"].startswith("text/plain"), headers)
    for name in ("llama_http_requests_total", "llama_generated_tokens_total", "llama_time_to_first_token_seconds"):
        check(name in text, f"{name} in /metrics")


def counting(start):
    """A prompt whose continuation any model gets right: the next numbers."""
    return ", ".join(str(start + k) for k in range(4)) + ","


def continues(text, start):
    """`text` carries on the count begun by `counting(start)` for at least three numbers."""
    numbers = [w.strip() for w in text.split(",")]
    return numbers[:3] == [str(start + 4 + k) for k in range(3)]


def concurrent_streams(base, model, n):
    """n clients stream at once; each gets its own continuation, complete."""
    starts = [1 + 13 * i for i in range(n)]
    results = [None] * n
    errors = []

    def run(i):
        try:
            chunks = list(
                client(base).completions.create(
                    model=model,
                    prompt=counting(starts[i]),
                    max_tokens=16,
                    temperature=0,
                    stream=True,
                    stream_options={"include_usage": True},
                )
            )
            finishes = [ch.choices[0].finish_reason for ch in chunks if ch.choices and ch.choices[0].finish_reason]
            check(finishes == ["length"], f"client {i} finished once, at max_tokens: {finishes}")
            check(chunks[-1].usage.completion_tokens == 16, f"client {i} usage {chunks[-1].usage}")
            results[i] = "".join(ch.choices[0].text for ch in chunks if ch.choices)
        except Exception as e:  # reported below with its client's index
            errors.append((i, repr(e)))

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    check(not errors, f"concurrent clients failed: {errors}")
    for i in range(n):
        check(continues(results[i], starts[i]), f"client {i} got its own text: {counting(starts[i])!r} -> {results[i]!r}")
    check(metric(base, "llama_slots_busy_max", model=model) >= min(n, 4), "the streams ran together")


def bad_inputs(base, model):
    """Each bad request gets its status and an OpenAI error body; the server stays healthy."""
    msg = [{"role": "user", "content": "hi"}]
    long_prompt = "hello " * 5000
    cases = [
        ("malformed JSON", "/v1/chat/completions", b'{"messages": [', 400),
        ("not an object", "/v1/chat/completions", b"[1, 2]", 400),
        ("messages of the wrong type", "/v1/chat/completions", {"messages": "hi"}, 400),
        ("temperature of the wrong type", "/v1/chat/completions", {"messages": msg, "temperature": "hot"}, 400),
        ("stop of the wrong type", "/v1/chat/completions", {"messages": msg, "stop": 5}, 400),
        ("negative max_tokens", "/v1/chat/completions", {"messages": msg, "max_tokens": -5}, 400),
        ("huge max_tokens", "/v1/chat/completions", {"messages": msg, "max_tokens": 10**15}, 400),
        ("max_tokens beyond i64", "/v1/chat/completions", {"messages": msg, "max_tokens": 10**30}, 400),
        ("empty messages", "/v1/chat/completions", {"messages": []}, 400),
        ("unknown role", "/v1/chat/completions", {"messages": [{"role": "wizard", "content": "x"}]}, 400),
        ("temperature out of range", "/v1/chat/completions", {"messages": msg, "temperature": 9}, 400),
        ("n over the slots", "/v1/chat/completions", {"messages": msg, "n": 100}, 400),
        ("bad grammar", "/v1/chat/completions", {"messages": msg, "grammar": "root ::= ("}, 400),
        ("bad keep_alive", "/v1/chat/completions", {"messages": msg, "keep_alive": "soon"}, 400),
        ("invalid UTF-8", "/v1/chat/completions", b'{"messages": [{"role": "user", "content": "\xff\xfe"}]}', 400),
        ("10 MB body", "/v1/chat/completions", b"x" * (10 << 20), 413),
        ("unknown model", "/v1/chat/completions", {"model": "nope", "messages": msg}, 404),
        ("prompt over the context", "/v1/completions", {"prompt": long_prompt, "max_tokens": 4}, 400),
        ("embedding of nothing", "/v1/embeddings", {"input": []}, 400),
        ("token outside the vocabulary", "/detokenize", {"tokens": [10**9]}, 400),
    ]
    for what, path, body, expected in cases:
        status, headers, data = call(base, "POST", path, body)
        check(status == expected, f"{what}: {status} (expected {expected}): {data[:300]!r}")
        err = json.loads(data)["error"]
        check(set(err) == {"message", "type", "param", "code"} and err["message"], f"{what}: error body {err}")
        if what == "prompt over the context":
            numbers = [w for w in err["message"].replace(",", " ").split() if w.isdigit()]
            check(len(numbers) >= 2, f"the message names both sizes: {err['message']}")
        healthy(base)
    status, _, _ = call(base, "GET", "/no/such/route")
    check(status == 404, "unknown route")
    healthy(base)


def scenario_busy(base):
    """Started with --parallel 1 --max-queue 1."""
    model = "smollm2"
    disconnect_cancels(base, model)
    # One request runs, one waits in the queue, the next is turned away.
    running = RawStream(base, model, "Write a long story about a dragon.", max_tokens=200)
    check(running.status == 200 and running.next_data(), "the first request runs")
    queued = {}

    def wait_in_queue():
        queued["result"] = call(base, "POST", "/v1/chat/completions", {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4})

    t = threading.Thread(target=wait_in_queue)
    t.start()
    wait_for("a queued request", lambda: metric(base, "llama_queue_depth", model=model) == 1)
    status, headers, body = call(base, "POST", "/v1/chat/completions", {"messages": [{"role": "user", "content": "Hi"}]})
    check(status == 503, f"a full queue answers 503, got {status}: {body!r}")
    check(headers.get("retry-after", "").isdigit(), f"Retry-After: {headers}")
    check(json.loads(body)["error"]["type"] == "server_error", body)
    try:
        chat(client(base), model, "Hi")
        raise AssertionError("the openai client was not refused")
    except openai.APIStatusError as e:
        check(e.status_code == 503 and e.response.headers.get("retry-after"), e)
    healthy(base)
    while running.next_data() not in (None, "[DONE]"):
        pass
    t.join()
    check(queued["result"][0] == 200, f"the queued request is served: {queued['result']}")
    check(metric(base, "llama_rejected_busy_total", model=model) >= 2, "rejections counted")


def loaded(base):
    _, _, body = call(base, "GET", "/v1/models")
    return {m["id"]: m["loaded"] for m in json.loads(body)["data"]}


def scenario_keepalive(base):
    """Started with --keep-alive 0."""
    model = "smollm2"
    c = client(base)
    wait_for("the preloaded model to be unloaded", lambda: loaded(base)[model] is False)
    for _ in range(2):
        check(chat(c, model, QUESTION).choices[0].message.content, "answered")
        check(loaded(base)[model] is False, "unloaded after the reply")
    check(metric(base, "llama_model_loads_total", model=model) >= 3, "every request loaded the model")
    # A request's keep_alive overrides the server's.
    chat(c, model, QUESTION, extra_body={"keep_alive": "5m"})
    _, _, body = call(base, "GET", "/v1/models")
    card = json.loads(body)["data"][0]
    check(card["loaded"] is True and card["expires_at"] > time.time() + 200, f"kept 5 minutes: {card}")
    chat(c, model, QUESTION, extra_body={"keep_alive": 0})
    check(loaded(base)[model] is False, "a request's keep_alive 0 unloads")


def scenario_swap(base, first, second):
    """Started with --max-loaded-models 1 and two models."""
    c = client(base)
    for model in (first, second, first, second):
        r = chat(c, model, QUESTION)
        check(r.model == model and r.choices[0].message.content, f"{model} answered")
        state = loaded(base)
        check(state == {first: model == first, second: model == second}, f"only {model} loaded: {state}")
    for model in (first, second):
        check(metric(base, "llama_model_loads_total", model=model) == 2, f"{model} loaded twice")


def scenario_shutdown(base, pid):
    """SIGTERM during a stream: the stream still ends properly; new connections are refused."""
    s = RawStream(base, "smollm2", "Write a short story about a robot.", max_tokens=48)
    check(s.status == 200 and s.next_data(), "streaming")
    os.kill(pid, signal.SIGTERM)
    last = None
    while True:
        data = s.next_data()
        if data is None:
            break
        last = data
    check(last == "[DONE]", f"the stream finished after SIGTERM: last {last!r}")


WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "description": "City name, e.g. Paris"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city", "unit"],
        },
    },
}
ASK_WEATHER = [{"role": "user", "content": "What is the weather like in Paris right now? Use celsius."}]


def valid_weather_call(call):
    check(call.type == "function" and call.function.name == "get_weather", f"the weather tool was called: {call}")
    check(call.id and call.id.startswith("call_"), f"call id: {call.id}")
    jsonschema.validate(json.loads(call.function.arguments), WEATHER["function"]["parameters"])


def streamed_calls(chunks):
    """Reassembles streamed tool calls the way OpenAI clients do: by `index`, the first delta
    of a call bringing its id, type and name, later ones only argument fragments."""
    calls, content, finish, pieces = {}, "", None, 0
    for ch in chunks:
        if not ch.choices:
            continue
        choice = ch.choices[0]
        d = choice.delta
        content += d.content or ""
        for tc in d.tool_calls or []:
            if tc.index not in calls:
                check(tc.id and tc.type == "function" and tc.function.name, f"the first delta of a call names it: {tc}")
                calls[tc.index] = {"id": tc.id, "name": tc.function.name, "arguments": ""}
            else:
                check(tc.id is None and tc.function.name is None, f"later deltas carry arguments only: {tc}")
            calls[tc.index]["arguments"] += tc.function.arguments or ""
            pieces += 1
        finish = choice.finish_reason or finish
    return calls, content, finish, pieces


TOOL_RESULT = (
    "It is 21 degrees celsius and sunny in Paris. Now answer the user's question in one plain sentence; "
    "do not call the tool again."
)


def scenario_tools(base, model):
    """Started with the Qwen2.5-Coder-0.5B model: tool calls through the official client."""
    c = client(base)
    # Required: every seeded run calls the tool with arguments that validate.
    for seed in range(3):
        r = c.chat.completions.create(
            model=model, messages=ASK_WEATHER, tools=[WEATHER], tool_choice="required", seed=seed, max_tokens=96
        )
        choice = r.choices[0]
        check(choice.finish_reason == "tool_calls", f"finish_reason: {choice}")
        check(len(choice.message.tool_calls) >= 1, f"tool calls: {choice.message}")
        for tool_call in choice.message.tool_calls:
            valid_weather_call(tool_call)
    # Auto: the question needs the tool; then the result goes back and the answer is text.
    r = c.chat.completions.create(model=model, messages=ASK_WEATHER, tools=[WEATHER], temperature=0, max_tokens=96)
    msg = r.choices[0].message
    check(r.choices[0].finish_reason == "tool_calls" and msg.tool_calls, f"auto called the tool: {msg}")
    tool_call = msg.tool_calls[0]
    valid_weather_call(tool_call)
    turn2 = ASK_WEATHER + [
        msg.model_dump(exclude_none=True),
        # This 0.5B model repeats the call after a bare result; one that says what to do next
        # (as applications' tools often do) is answered in text (see llama/tests/tools.rs).
        {"role": "tool", "tool_call_id": tool_call.id, "content": TOOL_RESULT},
    ]
    r = c.chat.completions.create(model=model, messages=turn2, tools=[WEATHER], temperature=0, max_tokens=64)
    answer = r.choices[0]
    check(answer.finish_reason == "stop" and not answer.message.tool_calls, f"text answer: {answer}")
    check("21" in (answer.message.content or ""), f"the answer uses the result: {answer.message.content!r}")
    # Auto, no tool needed: plain text.
    r = c.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "Write a one-line Python expression that adds 2 and 3."}],
        tools=[WEATHER],
        temperature=0,
        max_tokens=48,
    )
    check(not r.choices[0].message.tool_calls and r.choices[0].message.content, f"plain text: {r.choices[0]}")
    check(r.choices[0].finish_reason in ("stop", "length"), r.choices[0].finish_reason)
    # A named function.
    r = c.chat.completions.create(
        model=model,
        messages=ASK_WEATHER,
        tools=[WEATHER],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        temperature=0,
        max_tokens=96,
    )
    valid_weather_call(r.choices[0].message.tool_calls[0])
    # Streaming, required and auto: deltas keyed by index reassemble into valid calls.
    for choice in ("required", "auto"):
        chunks = list(
            c.chat.completions.create(
                model=model, messages=ASK_WEATHER, tools=[WEATHER], tool_choice=choice, temperature=0, max_tokens=96, stream=True
            )
        )
        calls, content, finish, pieces = streamed_calls(chunks)
        check(finish == "tool_calls" and len(calls) >= 1, f"{choice}: streamed calls {calls} content {content!r} finish {finish}")
        if choice == "required":
            # Under auto this model writes bare JSON calls, which are recognised only at the end.
            check(pieces > 2, f"{choice}: arguments arrive in fragments ({pieces} deltas)")
        for tool_call in calls.values():
            check(tool_call["id"].startswith("call_") and tool_call["name"] == "get_weather", tool_call)
            jsonschema.validate(json.loads(tool_call["arguments"]), WEATHER["function"]["parameters"])
    chunks = list(c.chat.completions.create(model=model, messages=turn2, tools=[WEATHER], temperature=0, max_tokens=64, stream=True))
    calls, content, finish, _ = streamed_calls(chunks)
    check(not calls and "21" in content and finish == "stop", f"streamed text answer {content!r} {finish}")
    # Bad tools: a 400 naming the reason, and the server stays healthy.
    bad = [
        ("schema without a grammar", {"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {"x": {"$ref": "#/definitions/missing"}}}}}], "tool_choice": "required"}),
        ("parameters not an object", {"tools": [{"type": "function", "function": {"name": "f", "parameters": 3}}]}),
        ("unknown named function", {"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "nope"}}}),
        ("tools and a grammar", {"tools": [WEATHER], "grammar": "root ::= \"x\""}),
        ("not a function tool", {"tools": [{"type": "retrieval", "function": {"name": "f"}}]}),
    ]
    for what, extra in bad:
        status, _, data = call(base, "POST", "/v1/chat/completions", {"model": model, "messages": ASK_WEATHER, **extra})
        check(status == 400, f"{what}: {status} {data[:300]!r}")
        err = json.loads(data)["error"]
        check(err["message"] and err["param"] in ("tools", "tool_choice") or err["param"].startswith("tools["), f"{what}: {err}")
        healthy(base)


def main():
    mode, base = sys.argv[1], sys.argv[2].rstrip("/")
    if mode == "main":
        scenario_main(base)
    elif mode == "busy":
        scenario_busy(base)
    elif mode == "keepalive":
        scenario_keepalive(base)
    elif mode == "swap":
        scenario_swap(base, sys.argv[3], sys.argv[4])
    elif mode == "tools":
        scenario_tools(base, sys.argv[3])
    elif mode == "shutdown":
        scenario_shutdown(base, int(sys.argv[3]))
    else:
        raise SystemExit(f"unknown mode {mode}")
    print(f"{mode}: ok")


if __name__ == "__main__":
    main()
