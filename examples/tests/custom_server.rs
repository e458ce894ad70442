//! The custom-server example (examples/custom_server.rs): the library's router nested under
//! `/llm` behind the example's own token check, driven by the official `openai` Python package,
//! with the example's own route beside it. `.ci/setup` installs the package; without it the
//! test fails under CI and is skipped (saying so) elsewhere.

use std::process::{Command, Stdio};

use llama_examples::programs::ServerProcess;

const CLIENT: &str = r#"
import sys, urllib.request, urllib.error, openai
base = sys.argv[1]
root = base[: -len("/llm/v1")]
ok = openai.OpenAI(base_url=base, api_key="unused", default_headers={"x-team-token": "demo"})
r = ok.chat.completions.create(model="smollm2", messages=[{"role": "user", "content": "Say hi"}], max_tokens=8)
assert r.choices[0].message.content, r
assert r.usage.completion_tokens >= 1, r
pieces = [c.choices[0].delta.content or "" for c in ok.chat.completions.create(
    model="smollm2", messages=[{"role": "user", "content": "Count to five"}], max_tokens=8, stream=True) if c.choices]
assert "".join(pieces), pieces
assert [m.id for m in ok.models.list()] == ["smollm2"]
try:
    openai.OpenAI(base_url=base, api_key="unused").models.list()
    raise SystemExit("no token: expected 401")
except openai.AuthenticationError:
    pass
assert urllib.request.urlopen(root + "/hello").read().startswith(b"hello, visitor")
print("ok: chat, stream and models under /llm, 401 without the token, /hello beside them")
"#;

#[test]
fn the_router_nests_under_a_prefix_behind_the_apps_own_auth() {
    let ready = Command::new("python3").args(["-c", "import openai"]).stderr(Stdio::null()).status();
    if !ready.is_ok_and(|s| s.success()) {
        assert!(std::env::var_os("CI").is_none(), "python3 with openai is required: run .ci/setup");
        eprintln!("skipped: python3 with the openai package is missing (run .ci/setup)");
        return;
    }
    let server = ServerProcess::start_example("custom_server", &[], Stdio::inherit()).unwrap();
    assert!(server.url.ends_with("/llm/v1"), "{}", server.url);
    let out = Command::new("python3").args(["-c", CLIENT, &server.url]).output().unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{stdout}\n{stderr}");
    println!("{}", stdout.trim());
}
