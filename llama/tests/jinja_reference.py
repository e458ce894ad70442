"""Renders a chat template with Python's jinja2 the way Hugging Face's tokenizers do, as the
reference the `tools` test compares llama.cpp's rendering with.

Reads one JSON object on stdin: template, messages, tools, add_generation_prompt (and optional
bos_token, eos_token); writes the rendered prompt to stdout, nothing else.

The environment follows what those tokenizers document for chat templates: a sandboxed
environment with trim_blocks and lstrip_blocks, `tojson` that keeps non-ASCII characters and
key order and does not escape HTML, `raise_exception`, and `strftime_now`.
"""

import json
import sys
from datetime import datetime

from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.exceptions import TemplateError


def raise_exception(message):
    raise TemplateError(message)


def tojson(value, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def main():
    req = json.load(sys.stdin)
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    template = env.from_string(req["template"])
    out = template.render(
        messages=req["messages"],
        tools=req.get("tools") or None,
        add_generation_prompt=req.get("add_generation_prompt", True),
        bos_token=req.get("bos_token", ""),
        eos_token=req.get("eos_token", ""),
    )
    sys.stdout.write(out)


if __name__ == "__main__":
    main()
