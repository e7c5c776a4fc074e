// End-to-end test of the package as a user installs it: `npm pack web/pkg`, the minimal example
// copied to a temporary folder, `npm install` of the tarball there (offline), the page served
// and opened in headless Chromium; its attention must equal the native `dino attention` on the
// same weights and photo. Also checks what the tarball holds.
//
//   bash web/build.sh --cpu-only && DINO_BIN=target/release/dino node web/examples/test.mjs
import http from 'node:http';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.join(here, '../..');
const tools = process.env.NPM_TOOLS || path.join(os.homedir(), '.cache/dino-rs/npm-tools');
const { chromium } = await import(path.join(tools, 'node_modules/playwright-core/index.mjs'));
const dino = process.env.DINO_BIN || path.join(root, 'target/release/dino');
const weights = path.join(root, 'tests/fixtures/weights/s16_hf.safetensors');
const photo = path.join(root, 'tests/fixtures/images/chelsea.png');

function check(ok, what) {
  if (!ok) { console.error(`FAIL: ${what}`); process.exit(1); }
  console.log(`ok: ${what}`);
}

// the package as npm would publish it
const work = fs.mkdtempSync(path.join(os.tmpdir(), 'dino-web-example-'));
const packed = JSON.parse(execFileSync('npm', ['pack', path.join(root, 'web/pkg'), '--json', '--pack-destination', work]));
const tarball = path.join(work, packed[0].filename);
const files = packed[0].files.map((f) => f.path).sort();
const meta = JSON.parse(fs.readFileSync(path.join(root, 'web/pkg/package.json'), 'utf8'));
check(['README.md', 'dino_web.d.ts', 'dino_web.js', 'dino_web_bg.wasm', 'package.json'].every((f) => files.includes(f)) &&
  meta.exports['.'].types && meta.exports['.'].default && meta.types && meta.version,
  `npm pack: ${packed[0].filename}, ${(packed[0].size / 1024).toFixed(0)} KiB packed, files ${files.join(', ')}`);

// the example, installed from the tarball as a user would (under the name its code imports)
const app = path.join(work, 'app');
fs.cpSync(path.join(here, 'minimal'), app, { recursive: true });
execFileSync('npm', ['install', '--offline', '--no-audit', '--no-fund', `dino-web@file:${tarball}`], { cwd: app, stdio: 'inherit' });
check(fs.existsSync(path.join(app, 'node_modules/dino-web/dino_web_bg.wasm')), 'npm install of the tarball (offline)');
fs.copyFileSync(weights, path.join(app, 'model.safetensors'));
fs.copyFileSync(photo, path.join(app, 'chelsea.png'));

const types = { '.html': 'text/html', '.js': 'text/javascript', '.wasm': 'application/wasm' };
const server = http.createServer((req, res) => {
  const file = path.join(app, decodeURIComponent(new URL(req.url, 'http://x').pathname));
  const target = file.endsWith('/') ? path.join(file, 'index.html') : file;
  if (!target.startsWith(app) || !fs.existsSync(target)) { res.writeHead(404); res.end(); return; }
  res.writeHead(200, { 'content-type': types[path.extname(target)] || 'application/octet-stream' });
  fs.createReadStream(target).pipe(res);
});
await new Promise((r) => server.listen(0, '127.0.0.1', r));
const url = `http://127.0.0.1:${server.address().port}/?model=model.safetensors&image=chelsea.png`;

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking'],
});
try {
  const page = await browser.newPage();
  let failed = null;
  page.on('pageerror', (e) => { failed = e.message; });
  await page.goto(url);
  await page.waitForFunction(() => window.result || /Error/.test(document.querySelector('#status').textContent), null, { timeout: 120000 });
  check(!failed, `no page error${failed ? `: ${failed}` : ''}`);
  const got = await page.evaluate(() => ({ attention: Array.from(window.result.attention), status: document.querySelector('#status').textContent }));
  const out = fs.mkdtempSync(path.join(os.tmpdir(), 'dino-native-'));
  execFileSync(dino, ['attention', '-w', weights, '--resize', '480', '--threshold', '0.6', photo, '-o', out]);
  const b = fs.readFileSync(path.join(out, 'attention.npy'));
  const len = b.readUInt16LE(8);
  const data = b.subarray(10 + len);
  const want = new Float32Array(data.buffer.slice(data.byteOffset, data.byteOffset + data.length));
  const err = got.attention.reduce((m, v, i) => Math.max(m, Math.abs(v - want[i])), 0);
  check(got.attention.length === want.length && err <= 1e-5,
    `the installed package's attention in the example page equals the native CLI (max abs error ${err}); "${got.status}"`);
} finally {
  await browser.close();
  server.close();
}
