// What the browser benchmarks share: the npm tools (playwright-core, onnxruntime-web) from
// tests/setup-tools.sh's folder, a local server that is cross-origin isolated (threads in
// wasm need it) and serves the dino-web packages, the benchmark models and extra routes, and
// one headless Chromium page that runs until the page sets `window.result`.
import http from 'node:http';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const root = path.join(path.dirname(fileURLToPath(import.meta.url)), '../..');
export const tools = process.env.NPM_TOOLS || path.join(os.homedir(), '.cache/dino-rs/npm-tools');

const isolation = { 'Cross-Origin-Opener-Policy': 'same-origin', 'Cross-Origin-Embedder-Policy': 'require-corp' };
const types = { '.js': 'text/javascript', '.mjs': 'text/javascript', '.wasm': 'application/wasm' };

// Serves `/` (the page), `/pkg/*` and `/pkg-threads/*` (web/), `/model/*` (modelDir), and
// `routes`: path -> generated JavaScript text, or a function of the path giving a file (or
// null). Runs the page in headless Chromium with `args` added and returns `extract()`
// evaluated in the page once `window.result` is set.
export async function runPage({ page, modelDir, scripts = {}, files = () => null, args = [], timeout = 300000, extract }) {
  const { chromium } = await import(path.join(tools, 'node_modules/playwright-core/index.mjs'));
  const server = http.createServer((req, res) => {
    const p = decodeURIComponent(new URL(req.url, 'http://x').pathname);
    if (p === '/') { res.writeHead(200, { ...isolation, 'content-type': 'text/html' }); res.end(page); return; }
    if (scripts[p] !== undefined) {
      res.writeHead(200, { ...isolation, 'content-type': 'text/javascript' });
      res.end(scripts[p]);
      return;
    }
    const file = files(p) ?? (p.startsWith('/pkg/') || p.startsWith('/pkg-threads/') ? path.join(root, 'web', p)
      : p.startsWith('/model/') ? path.join(modelDir, p.slice(7)) : null);
    if (!file || !fs.existsSync(file)) { res.writeHead(404); res.end(); return; }
    res.writeHead(200, { ...isolation, 'content-type': types[path.extname(file)] || 'application/octet-stream' });
    fs.createReadStream(file).pipe(res);
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  const browser = await chromium.launch({ executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking', ...args] });
  try {
    const p = await browser.newPage();
    p.on('pageerror', (e) => { console.error('page error:', e.message); process.exit(1); });
    await p.goto(`http://127.0.0.1:${server.address().port}/`);
    await p.waitForFunction(() => window.result, null, { timeout, polling: 500 });
    return await p.evaluate(extract);
  } finally {
    await browser.close();
    server.close();
  }
}

// Page-side helpers, pasted into a page or worker: the median, and a timer that warms up
// twice then times `iters` calls.
export const timing = `const median = (a) => { const s = [...a].sort((x, y) => x - y); return s[s.length >> 1]; };
async function time(fn, iters) { for (let i = 0; i < 2; i++) await fn(); const t = [];
  for (let i = 0; i < iters; i++) { const t0 = performance.now(); await fn(); t.push(performance.now() - t0); }
  return { median: median(t), min: Math.min(...t) }; }`;
