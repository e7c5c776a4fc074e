// End-to-end test of the demo page in headless Chromium (playwright-core): the trunk-built
// page (www/dist) served on 127.0.0.1; upload a real photo, compare heads and masks with the
// native `dino attention` on the same weights and image, move the slider, switch backend,
// upload a corrupt file and check the page keeps working, run the model out of memory and
// check the page recovers; then the same on WebGPU (Chromium's software adapter). Writes
// screenshots to $SHOTS.
//
//   DINO_BIN=target/release/dino node www/e2e.mjs
import http from 'node:http';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.join(here, '..');
const dist = path.join(here, 'dist');
const tools = process.env.NPM_TOOLS || path.join(os.homedir(), '.cache/dino-rs/npm-tools');
const { chromium } = await import(path.join(tools, 'node_modules/playwright-core/index.mjs'));
const dino = process.env.DINO_BIN || path.join(root, 'target/release/dino');
const shots = process.env.SHOTS || fs.mkdtempSync(path.join(os.tmpdir(), 'dino-shots-'));
const photo = path.join(root, 'tests/fixtures/images/chelsea.png');
const weights = path.join(here, 'assets/default-model.safetensors');

const maxAbs = (a, b) => a.reduce((m, v, i) => Math.max(m, Math.abs(v - b[i])), 0);

function check(ok, what) {
  if (!ok) { console.error(`FAIL: ${what}`); process.exit(1); }
  console.log(`ok: ${what}`);
}

function npy(file) {
  const b = fs.readFileSync(file);
  const len = b.readUInt16LE(8);
  const header = b.subarray(10, 10 + len).toString();
  const data = b.subarray(10 + len);
  return header.includes("'<f4'") ? new Float32Array(data.buffer.slice(data.byteOffset, data.byteOffset + data.length)) : Uint8Array.from(data);
}

function native(threshold, size = 480) {
  const out = fs.mkdtempSync(path.join(os.tmpdir(), 'dino-native-'));
  execFileSync(dino, ['attention', '-w', weights, '--resize', String(size), '--threshold', String(threshold), photo, '-o', out]);
  return { attention: npy(path.join(out, 'attention.npy')), masks: npy(path.join(out, 'masks.npy')) };
}

const types = { '.html': 'text/html', '.js': 'text/javascript', '.wasm': 'application/wasm', '.css': 'text/css' };
const server = http.createServer((req, res) => {
  const file = path.join(dist, decodeURIComponent(new URL(req.url, 'http://x').pathname));
  const target = fs.existsSync(file) && fs.statSync(file).isDirectory() ? path.join(file, 'index.html') : file;
  if (!target.startsWith(dist) || !fs.existsSync(target)) { res.writeHead(404); res.end(); return; }
  res.writeHead(200, { 'content-type': types[path.extname(target)] || 'application/octet-stream' });
  fs.createReadStream(target).pipe(res);
});
await new Promise((r) => server.listen(0, '127.0.0.1', r));
const url = `http://127.0.0.1:${server.address().port}/`;

// (playwright-core starts Chromium with a fresh profile directory of its own). The main run
// has no WebGPU adapter (a browser without WebGPU: 'auto' must fall back to the CPU and say
// so); the last part runs in a second browser with Chromium's software WebGPU adapter.
const baseArgs = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync'];
const launch = (args) => chromium.launch({ executablePath: process.env.CHROMIUM || '/usr/bin/chromium', args });
const browser = await launch(baseArgs);
let failed = false;
try {
  const page = await browser.newPage({ viewport: { width: 1200, height: 900 } });
  page.on('pageerror', (e) => { console.error('page error:', e.message); failed = true; });
  await page.goto(url);
  await page.waitForSelector('body[data-ready="1"]', { timeout: 120000 });
  check(true, 'page loaded the bundled model');
  const first = await page.evaluate(() => ({ backend: window.dinoDemo.model.backend }));
  const notice0 = await page.textContent('#notice');
  check(first.backend === 'cpu' && /no WebGPU adapter/.test(notice0),
    `auto without a WebGPU adapter runs on the CPU and says why: "${notice0.trim().slice(0, 90)}"`);

  // a timer on the main thread keeps ticking while the worker runs the model
  await page.evaluate(() => { window.__ticks = 0; window.__timer = setInterval(() => { window.__ticks++; }, 50); });
  const t0 = Date.now();
  await page.setInputFiles('#files', photo);
  await page.waitForSelector('article.result', { timeout: 120000 });
  const ticks = await page.evaluate(() => { clearInterval(window.__timer); return window.__ticks; });
  const elapsed = Date.now() - t0;
  check(ticks >= elapsed / 50 / 2, `main thread stayed responsive during inference (${ticks} timer ticks in ${elapsed} ms)`);
  const heads = await page.evaluate(() => window.dinoDemo.model.heads);
  const shown = await page.$$eval('article.result figcaption', (c) => c.filter((x) => x.textContent.startsWith('head ')).length);
  check(shown === heads, `${shown} head maps shown for ${heads} heads`);
  const ref = native(0.6);
  const got = await page.evaluate(() => ({
    attention: Array.from(window.dinoDemo.items[0].r.attention),
    masks: Array.from(window.dinoDemo.items[0].masks),
  }));
  const maxErr = maxAbs(got.attention, ref.attention);
  check(got.attention.length === ref.attention.length && maxErr <= 1e-5, `attention equals the native CLI (max abs error ${maxErr})`);
  check(got.masks.every((v, i) => v === ref.masks[i]), 'masks equal the native CLI at threshold 0.6');
  await page.screenshot({ path: path.join(shots, 'page-0.6.png'), fullPage: true });

  const before = Number(await page.getAttribute('article.result', 'data-mask-patches'));
  await page.$eval('#threshold', (el) => { el.value = '0.3'; el.dispatchEvent(new Event('input')); });
  const after = Number(await page.getAttribute('article.result', 'data-mask-patches'));
  const ref3 = native(0.3);
  const masks3 = await page.evaluate(() => Array.from(window.dinoDemo.items[0].masks));
  check(after < before && masks3.every((v, i) => v === ref3.masks[i]), `slider 0.6 -> 0.3: ${before} -> ${after} mask patches, equal to the native CLI`);

  await page.selectOption('#backend', 'webgpu');
  await page.waitForFunction(() => document.querySelector('#status').textContent.startsWith('Done'), null, { timeout: 120000 });
  const err = await page.textContent('#notice');
  check(/falling back to the CPU/.test(err) && (await page.evaluate(() => window.dinoDemo.model.backend)) === 'cpu',
    `WebGPU chosen without an adapter: falls back to the CPU and says so: "${err.trim().slice(0, 90)}"`);
  await page.selectOption('#backend', 'cpu');
  await page.waitForFunction(() => document.querySelector('#status').textContent.startsWith('Done'), null, { timeout: 120000 });
  check((await page.$$('article.result')).length === 1, 'switching backend recomputed the image');

  await page.setInputFiles('#files', { name: 'broken.png', mimeType: 'image/png', buffer: Buffer.from('not an image') });
  await page.waitForFunction(() => document.querySelector('#error').textContent.includes('broken.png'), null, { timeout: 60000 });
  check(true, `corrupt file reported: "${(await page.textContent('#error')).trim().slice(0, 100)}"`);
  await page.setInputFiles('#files', path.join(root, 'tests/fixtures/images/coffee.png'));
  await page.waitForFunction(() => document.querySelectorAll('article.result').length === 2, null, { timeout: 120000 });
  check(true, 'the page keeps working after the error');
  // near-duplicates: the same groups as `dino dedup` with the same model and threshold
  const dupDir = fs.mkdtempSync(path.join(os.tmpdir(), 'dino-dups-'));
  const dupFiles = [
    ['tests/fixtures/images/chelsea.png', 'chelsea.png'],
    ['native/assets/photos/chelsea.jpg', 'chelsea_small.jpg'],
    ['tests/fixtures/images/coffee.png', 'coffee.png'],
    ['native/assets/photos/apple.jpg', 'apple.jpg'],
    ['native/assets/photos/rocket.jpg', 'rocket.jpg'],
  ].map(([src, name]) => { fs.copyFileSync(path.join(root, src), path.join(dupDir, name)); return path.join(dupDir, name); });
  await page.setInputFiles('#dup-files', dupFiles);
  await page.waitForSelector('#dup-results[data-groups]', { timeout: 120000 });
  const pageGroups = await page.evaluate(() => window.dinoDemo.dup.groups.map((g) => [...g].sort().join('+')).sort());
  const nativeOut = fs.mkdtempSync(path.join(os.tmpdir(), 'dino-dedup-'));
  execFileSync(dino, ['dedup', '-w', weights, dupDir, '--out', nativeOut, '--threshold', '0.99']);
  const rows = fs.readFileSync(path.join(nativeOut, 'groups.csv'), 'utf8').trim().split('\n').slice(1);
  const byGroup = {};
  for (const line of rows) {
    const [g, , file] = line.split(',');
    (byGroup[g] ||= []).push(path.basename(file.replace(/"/g, '')));
  }
  const nativeGroups = Object.values(byGroup).map((g) => g.sort().join('+')).sort();
  check(JSON.stringify(pageGroups) === JSON.stringify(nativeGroups) && pageGroups.length > 0,
    `near-duplicate groups equal dino dedup: ${JSON.stringify(pageGroups)}`);
  await page.$eval('#dup-threshold', (el) => { el.value = '0.5'; el.dispatchEvent(new Event('input')); });
  const loose = await page.evaluate(() => window.dinoDemo.dup.groups.length);
  check(loose >= 1, `threshold 0.5 regroups instantly (${loose} group(s))`);
  await page.screenshot({ path: path.join(shots, 'page-final.png'), fullPage: true });

  // out of memory: take all of the worker's 4 GiB wasm memory (grow it to the limit, then
  // allocate the allocator's free space), so that the model's next allocation fails and the
  // module traps; the page must say so, restart the worker, reload the model and keep working
  const results0 = (await page.$$('article.result')).length;
  const grown = await page.workers()[0].evaluate(async () => {
    const exports = await (await import('./dino-web.js')).default();
    let pages = 0;
    for (const step of [4096, 256, 16, 1]) {
      try { for (;;) { exports.memory.grow(step); pages += step; } } catch { /* at the limit */ }
    }
    // (trunk's build names the export with a suffix)
    const malloc = exports.__wbindgen_malloc || exports.__wbindgen_malloc_command_export;
    for (const bytes of [1 << 26, 1 << 22, 1 << 18, 1 << 14]) {
      try { for (;;) malloc(bytes, 4); } catch { /* allocator empty */ }
    }
    return pages;
  });
  await page.setInputFiles('#files', photo);
  await page.waitForFunction(() => /was reloaded/.test(document.querySelector('#notice').textContent), null, { timeout: 120000 });
  const oom = await page.textContent('#error');
  check(/out of memory/.test(oom), `out of memory (${grown} pages taken) reported: "${oom.trim().slice(0, 90)}"`);
  await page.setInputFiles('#files', path.join(root, 'tests/fixtures/images/coffee.png'));
  await page.waitForFunction((n) => document.querySelectorAll('article.result').length === n + 1, results0, { timeout: 120000 });
  check(true, 'after the crash the reloaded model works');
  const phone = await browser.newPage({ viewport: { width: 390, height: 844 }, isMobile: true });
  await phone.goto(url);
  await phone.waitForSelector('body[data-ready="1"]', { timeout: 120000 });
  await phone.setInputFiles('#files', photo);
  await phone.waitForSelector('article.result', { timeout: 120000 });
  await phone.screenshot({ path: path.join(shots, 'phone.png'), fullPage: true });

  // WebGPU: Chromium's software adapter (SwiftShader) — slow, so a 224 px image
  const gpuBrowser = await launch([...baseArgs, '--enable-unsafe-webgpu', '--enable-unsafe-swiftshader']);
  try {
    const gpu = await gpuBrowser.newPage({ viewport: { width: 1200, height: 900 } });
    gpu.on('pageerror', (e) => { console.error('page error (WebGPU):', e.message); failed = true; });
    await gpu.goto(url);
    await gpu.waitForSelector('body[data-ready="1"]', { timeout: 120000 });
    const m = await gpu.evaluate(() => ({ backend: window.dinoDemo.model.backend, backendNote: window.dinoDemo.model.backendNote }));
    check(m.backend === 'webgpu', `auto with a WebGPU adapter runs on WebGPU (${m.backendNote})`);
    await gpu.selectOption('#size', '224');
    const t1 = Date.now();
    await gpu.setInputFiles('#files', photo);
    await gpu.waitForSelector('article.result', { timeout: 300000 });
    const ms = Date.now() - t1;
    const refGpu = native(0.6, 224);
    const got = await gpu.evaluate(() => ({
      backend: window.dinoDemo.items[0].r.backend,
      attention: Array.from(window.dinoDemo.items[0].r.attention),
      masks: Array.from(window.dinoDemo.items[0].masks),
    }));
    const err = maxAbs(got.attention, refGpu.attention);
    check(got.backend === 'webgpu' && got.attention.length === refGpu.attention.length && err <= 1e-4,
      `WebGPU attention in the page equals the native CLI (max abs error ${err.toExponential(2)}, ${ms} ms on SwiftShader)`);
    const flipped = got.masks.filter((v, i) => v !== refGpu.masks[i]).length;
    check(flipped <= 2, `WebGPU masks: ${flipped} of ${got.masks.length} patches differ from the native CLI`);
    await gpu.screenshot({ path: path.join(shots, 'page-webgpu.png'), fullPage: true });
  } finally {
    await gpuBrowser.close();
  }
  check(true, `screenshots in ${shots}`);
} finally {
  await browser.close();
  server.close();
}
if (failed) process.exit(1);
