// What a web app does with the official SDK in the browser: stream a chat from the server
// whose base URL the page's query names. The outcome lands in `window.result` for the driver.
import OpenAI from "openai";

const base = new URLSearchParams(location.search).get("base");
const result = { chunks: 0, text: "", error: null };
try {
  const client = new OpenAI({ baseURL: base, apiKey: "unused", dangerouslyAllowBrowser: true, maxRetries: 0 });
  const stream = await client.chat.completions.create({
    model: "smollm2",
    messages: [{ role: "user", content: "Say hello." }],
    max_tokens: 12,
    stream: true,
  });
  for await (const chunk of stream) {
    result.chunks += 1;
    result.text += chunk.choices[0]?.delta?.content ?? "";
  }
} catch (e) {
  result.error = `${e?.constructor?.name}: ${e?.message}`;
}
window.result = result;
