// Serves page.js (bundled with the SDK) from its own origin, prints that origin, then for each
// server base URL read from stdin opens the page in headless Chromium and prints the page's
// outcome as one JSON line.
import http from "node:http";
import readline from "node:readline";
import * as esbuild from "esbuild";
import { chromium } from "playwright-core";

const here = new URL(".", import.meta.url).pathname;
const bundle = await esbuild.build({
  entryPoints: [here + "page.js"],
  bundle: true,
  format: "esm",
  platform: "browser",
  write: false,
});
const script = bundle.outputFiles[0].text;
const html = '<!doctype html><meta charset="utf-8"><title>chat</title><script type="module" src="/page.js"></script>';
const pages = http.createServer((req, res) => {
  const js = req.url.startsWith("/page.js");
  res.setHeader("content-type", js ? "text/javascript" : "text/html");
  res.end(js ? script : html);
});
await new Promise((ok) => pages.listen(0, "127.0.0.1", ok));
const origin = `http://127.0.0.1:${pages.address().port}`;
console.log(origin);

// The flags Chromium needs on a machine with no outside network, as root.
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync"],
});
for await (const base of readline.createInterface({ input: process.stdin })) {
  const page = await browser.newPage();
  await page.goto(`${origin}/?base=${encodeURIComponent(base.trim())}`);
  await page.waitForFunction(() => window.result, null, { timeout: 120_000 });
  console.log(JSON.stringify(await page.evaluate(() => window.result)));
  await page.close();
}
await browser.close();
pages.close();
