// End-to-end test of the demo page in headless Chromium (playwright-core): the trunk-built
// page (www/dist) served on 127.0.0.1; upload a real photo, compare heads and masks with the
// native `dino attention` on the same weights and image, move the slider, switch backend,
// upload a corrupt file and check the page keeps working, run the model out of memory and
// check the page recovers; the model picker with the Hugging Face hub routed to a local file
// (progress, the Cache API across a reload, cancel, clear) and official .pth files dropped in;
// then the same on WebGPU (Chromium's software adapter). Writes screenshots to $SHOTS (default:
// /tmp/dino-e2e-screenshots, replaced by each run).
//
//   DINO_BIN=target/release/dino node www/e2e.mjs
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { ISOLATION, check, chromium, maxAbs, nativeAttention, scratchDir, serveDir } from '../tests/browser-support.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.join(here, '..');
const dist = path.join(here, 'dist');
const dino = process.env.DINO_BIN || path.join(root, 'target/release/dino');
// (one folder, replaced by each run, so that runs do not pile up screenshots)
const shots = process.env.SHOTS || path.join(os.tmpdir(), 'dino-e2e-screenshots');
if (!process.env.SHOTS) fs.rmSync(shots, { recursive: true, force: true });
fs.mkdirSync(shots, { recursive: true });
const photo = path.join(root, 'tests/fixtures/images/chelsea.png');
const weights = path.join(here, 'assets/default-model.safetensors');

// Video: OpenCV's vtest.avi (real footage) transcoded to VP8 WebM by ffmpeg, played in the
// page. Frames sampled at fixed times: the page's attention equals the native CLI's on the very
// pixels the browser decoded (saved losslessly from the page), the frame is the one ffmpeg
// decodes at that time (closest of its neighbours), and the attention on ffmpeg's own decode
// differs only by the two decoders' colour conversion (reported). Then playback, a WebM
// recording and Chromium's fake webcam.
async function videoChecks() {
  const home = os.homedir();
  const vtest = [process.env.DINO_VTEST, '/usr/share/doc/opencv-doc/examples/data/vtest.avi', path.join(home, '.cache/dino-rs/vtest.avi')]
    .find((p) => p && fs.existsSync(p));
  check(Boolean(vtest), `vtest.avi found (${vtest}; tests/setup-tools.sh fetches it)`);
  const dir = scratchDir('dino-video-');
  const webm = path.join(dir, 'vtest.webm');
  execFileSync('ffmpeg', ['-v', 'error', '-y', '-i', vtest, '-t', '4', '-c:v', 'libvpx', '-b:v', '2M', '-an', webm]);
  const rawFrame = (n) => execFileSync('ffmpeg', ['-v', 'error', '-i', webm, '-vf', `select=eq(n\\,${n})`, '-frames:v', '1',
    '-f', 'rawvideo', '-pix_fmt', 'rgb24', '-'], { maxBuffer: 1 << 26 });

  const page = await browser.newPage({ viewport: { width: 1200, height: 900 } });
  page.on('pageerror', (e) => { console.error('page error (video):', e.message); failed = true; });
  await page.goto(url);
  await page.waitForSelector('body[data-ready="1"]', { timeout: 120000 });
  await page.setInputFiles('#video-file', webm);
  await page.waitForFunction(() => window.dinoDemo.video.state.processed >= 1, null, { timeout: 120000 });
  for (const [time, n] of [[1.05, 10], [2.55, 25]]) {
    await page.evaluate((t) => { document.querySelector('#video').currentTime = t; }, time);
    await page.waitForFunction((t) => {
      const it = window.dinoDemo.video.state.item;
      return it && Math.abs(it.time - t) < 1e-6 && !window.dinoDemo.video.state.busy;
    }, time, { timeout: 120000 });
    const got = await page.evaluate(async () => {
      const it = window.dinoDemo.video.state.item;
      const c = new OffscreenCanvas(it.bitmap.width, it.bitmap.height);
      const ctx = c.getContext('2d');
      ctx.drawImage(it.bitmap, 0, 0);
      const rgba = ctx.getImageData(0, 0, c.width, c.height).data;
      const b64 = (bytes) => { let s = ''; for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode(...bytes.subarray(i, i + 0x8000)); return btoa(s); };
      const png = new Uint8Array(await (await c.convertToBlob({ type: 'image/png' })).arrayBuffer());
      return { attention: Array.from(it.r.attention), png: b64(png), rgba: b64(rgba), w: c.width, h: c.height };
    });
    const framePng = path.join(dir, `page-${n}.png`);
    fs.writeFileSync(framePng, Buffer.from(got.png, 'base64'));
    const nativeOn = (img) => native(0.6, 480, weights, img).attention;
    const same = maxAbs(got.attention, nativeOn(framePng));
    check(same <= 1e-5, `video frame at ${time} s: attention equals the native CLI on the page's decoded frame (max abs error ${same})`);
    // which of ffmpeg's frames the page showed: the mean absolute difference of the pixels
    const rgba = Buffer.from(got.rgba, 'base64');
    const diff = (k) => {
      const raw = rawFrame(k);
      let sum = 0;
      for (let i = 0, j = 0; j < raw.length; i += 4, j += 3) {
        for (let c = 0; c < 3; c++) sum += Math.abs(rgba[i + c] - raw[j + c]);
      }
      return sum / raw.length;
    };
    const [before, at, after] = [diff(n - 1), diff(n), diff(n + 1)];
    const ffPng = path.join(dir, `ffmpeg-${n}.png`);
    execFileSync('ffmpeg', ['-v', 'error', '-y', '-i', webm, '-vf', `select=eq(n\\,${n})`, '-frames:v', '1', ffPng]);
    const decoders = maxAbs(got.attention, nativeOn(ffPng));
    check(at < before && at < after && at < 3,
      `the page showed ffmpeg's frame ${n} at ${time} s (mean pixel difference ${at.toFixed(2)} vs ${before.toFixed(2)} and ${after.toFixed(2)} ` +
      `for its neighbours); attention on ffmpeg's decode of it differs by ${decoders.toExponential(2)} (the decoders' colour conversion)`);
  }
  // playback: frames analysed while it plays, the model's speed shown, a WebM recording
  const before = await page.evaluate(() => window.dinoDemo.video.state.processed);
  await page.click('#record');
  await page.evaluate(() => { const v = document.querySelector('#video'); v.currentTime = 0; return v.play(); });
  await page.waitForFunction((n) => window.dinoDemo.video.state.processed >= n + 2 || document.querySelector('#video').ended,
    before, { timeout: 120000 });
  const during = await page.evaluate(() => { const v = document.querySelector('#video'); v.pause(); return v.currentTime; });
  const played = (await page.evaluate(() => window.dinoDemo.video.state.processed)) - before;
  check(played >= 2, `${played} frames analysed while the video played (to ${during.toFixed(2)} s)`);
  await page.click('#record');
  await page.waitForFunction(() => window.dinoDemo.video.state.recorded, null, { timeout: 60000 });
  const rec = await page.evaluate(() => window.dinoDemo.video.state.recorded);
  const speed = (await page.textContent('#video-status')).trim();
  check(rec.size > 1000 && /webm/.test(rec.type) && /frames\/s analysed \(the model: \d+ ms per frame/.test(speed),
    `playing: ${speed}; recorded ${rec.size} bytes of ${rec.type}`);
  await page.screenshot({ path: path.join(shots, 'video.png'), fullPage: true });
  // the webcam (Chromium's fake device)
  await page.click('#webcam');
  await page.waitForFunction(() => window.dinoDemo.video.state.source === 'webcam' && window.dinoDemo.video.state.processed >= 2, null, { timeout: 120000 });
  const cam = await page.evaluate(() => { const r = window.dinoDemo.video.state.item.r; return { heads: r.heads, n: r.attention.length, g: r.gridH * r.gridW }; });
  await page.click('#webcam');
  check(cam.n === cam.heads * cam.g && cam.n > 0, `webcam: frames analysed live (${cam.heads} heads x ${cam.g} patches)`);
  await page.close();
}

// The model picker in a context of its own (fresh cache and storage). Every request that
// leaves 127.0.0.1 is routed here, so nothing touches the network: the hub's ViT-S/16 file is
// the reference script's Hugging Face checkpoint, ViT-B/8's download never answers (to be
// cancelled), anything else is refused.
async function modelPicker() {
  const hubFile = fs.readFileSync(path.join(root, 'tests/fixtures/weights/s16_hf.safetensors'));
  const hubPath = '/facebook/dino-vits16/resolve/main/model.safetensors';
  const hits = [];
  const ctx = await browser.newContext({ viewport: { width: 1200, height: 900 } });
  await ctx.route((u) => u.hostname !== '127.0.0.1', async (route) => {
    const req = route.request();
    const u = new URL(req.url());
    hits.push(`${req.method()} ${u.host}${u.pathname}`);
    if (u.host === 'huggingface.co' && u.pathname === hubPath) {
      return route.fulfill({
        status: 200, body: hubFile,
        headers: { 'access-control-allow-origin': '*', 'content-type': 'application/octet-stream', 'content-length': String(hubFile.length) },
      });
    }
    if (u.host === 'huggingface.co' && u.pathname.startsWith('/facebook/dino-vitb8/')) return; // held open
    return route.abort();
  });
  const gets = () => hits.filter((h) => h === `GET huggingface.co${hubPath}`).length;
  const page = await ctx.newPage();
  page.on('pageerror', (e) => { console.error('page error (picker):', e.message); failed = true; });
  await page.goto(url);
  await page.waitForSelector('body[data-ready="1"]', { timeout: 120000 });
  check(await page.getAttribute('#cache-info', 'data-count') === '0' && await page.isHidden('#download'),
    'a fresh browser has no cached model (and no download bar)');
  const hubOptions = await page.$$eval('#hub-models option', (o) => o.map((x) => x.value));
  check(['vits8', 'vits16', 'vitb8', 'vitb16'].every((m) => hubOptions.includes(`hub:facebook/dino-${m}`)),
    `the picker offers the four official ViTs: ${hubOptions.join(', ')}`);

  await page.selectOption('#model-kind', 'hub:facebook/dino-vits16');
  await page.waitForSelector('body[data-model="facebook/dino-vits16"]', { timeout: 120000 });
  const events = await page.evaluate(() => window.dinoDemo.downloads);
  const last = events[events.length - 1];
  check(events.length >= 2 && events[0].loaded === 0 && events.every((e) => e.total === hubFile.length) &&
    last.loaded === hubFile.length && events.every((e, i) => !i || e.loaded >= events[i - 1].loaded),
    `download progress: ${events.length} events, 0 to ${last.loaded} of ${last.total} bytes`);
  check(gets() === 1 && hits.includes(`HEAD huggingface.co${hubPath}`),
    `the size was asked before the download (HEAD), then one GET: ${hits.join('; ')}`);
  await page.setInputFiles('#files', photo);
  await page.waitForSelector('article.result', { timeout: 120000 });
  const hubWeights = path.join(root, 'tests/fixtures/weights/s16_hf.safetensors');
  const ref = native(0.6, 480, hubWeights);
  const got = await page.evaluate(() => Array.from(window.dinoDemo.items[0].r.attention));
  const err = maxAbs(got, ref.attention);
  check(got.length === ref.attention.length && err <= 1e-5,
    `the hub model's attention equals the native CLI on the same file (max abs error ${err})`);
  check(await page.getAttribute('#cache-info', 'data-count') === '1' &&
    /cached/.test(await page.textContent('#hub-models option[value="hub:facebook/dino-vits16"]')),
    `the model is in the Cache API: "${(await page.textContent('#cache-info')).trim()}"`);
  await page.screenshot({ path: path.join(shots, 'model-picker.png'), fullPage: true });

  // the next visit: the remembered model loads from the cache, without a request
  await page.reload();
  await page.waitForSelector('body[data-ready="1"]', { timeout: 120000 });
  const st = await page.textContent('#status');
  check(await page.getAttribute('body', 'data-model') === 'facebook/dino-vits16' && /from the browser's cache/.test(st) && gets() === 1,
    `after a reload the model comes from the Cache API with no request: "${st.trim()}"`);
  await page.selectOption('#model-kind', 'default');
  await page.waitForSelector('body[data-model="bundled demo model"]', { timeout: 120000 });
  await page.selectOption('#model-kind', 'hub:facebook/dino-vits16');
  await page.waitForSelector('body[data-model="facebook/dino-vits16"]', { timeout: 120000 });
  check(gets() === 1, 'picked again, the cached model loads with no request');

  // a download that does not answer: the size request shows, Cancel stops it, the model stays
  await page.selectOption('#model-kind', 'hub:facebook/dino-vitb8');
  await page.waitForSelector('#download', { state: 'visible', timeout: 30000 });
  await page.screenshot({ path: path.join(shots, 'model-download.png') });
  await page.click('#download-cancel');
  await page.waitForFunction(() => /cancelled/.test(document.querySelector('#status').textContent), null, { timeout: 30000 });
  check(await page.getAttribute('body', 'data-model') === 'facebook/dino-vits16' &&
    await page.$eval('#model-kind', (s) => s.value) === 'hub:facebook/dino-vits16' &&
    await page.isHidden('#download'),
    `cancel: "${(await page.textContent('#status')).trim()}"`);
  // another choice while a download runs: the download stops, the newer choice wins
  await page.selectOption('#model-kind', 'hub:facebook/dino-vitb8');
  await page.waitForSelector('#download', { state: 'visible', timeout: 30000 });
  await page.selectOption('#model-kind', 'default');
  await page.waitForSelector('body[data-model="bundled demo model"]', { timeout: 120000 });
  await page.waitForFunction(() => /^Ready: bundled/.test(document.querySelector('#status').textContent), null, { timeout: 30000 });
  check(await page.isHidden('#download') && await page.$eval('#model-kind', (s) => s.value) === 'default',
    `a new choice during a download replaces it: "${(await page.textContent('#status')).trim()}"`);
  await page.click('#cache-clear');
  await page.waitForFunction(() => document.querySelector('#cache-info').dataset.count === '0', null, { timeout: 30000 });
  check(true, `clear: "${(await page.textContent('#cache-info')).trim()}"`);

  // official .pth files dropped as the model: a backbone and a training checkpoint (teacher)
  await page.setInputFiles('#files', photo);
  await page.waitForSelector('article.result', { timeout: 120000 });
  await page.selectOption('#model-kind', 'file');
  for (const name of ['s16_backbone.pth', 's16_full_checkpoint.pth']) {
    const file = path.join(root, 'tests/fixtures/weights', name);
    await page.setInputFiles('#model-file', file);
    await page.waitForFunction((n) => document.body.dataset.model === n &&
      document.querySelector('#status').textContent.startsWith('Done'), name, { timeout: 120000 });
    const refPth = native(0.6, 480, file);
    const a = await page.evaluate(() => Array.from(window.dinoDemo.items[0].r.attention));
    const e = maxAbs(a, refPth.attention);
    check(a.length === refPth.attention.length && e <= 1e-5, `${name} dropped in the page: attention equals the native CLI (max abs error ${e})`);
  }
  check(hits.every((h) => h.includes('huggingface.co/facebook/')), `no request left the machine: ${hits.length} routed`);
  await ctx.close();
}

const native = (threshold, size = 480, w = weights, image = photo) =>
  nativeAttention(dino, { weights: w, image, size, threshold });

// served as trunk serves it (Trunk.toml): cross-origin isolated, so the worker may take the
// threads build of the CPU engine
const { server, url } = await serveDir(dist, ISOLATION);
const threadsBuilt = fs.existsSync(path.join(dist, 'threads/dino_web.js'));

// (playwright-core starts Chromium with a fresh profile directory of its own). The main run
// has no WebGPU adapter (a browser without WebGPU: 'auto' must fall back to the CPU and say
// so); the last part runs in a second browser with Chromium's software WebGPU adapter.
const baseArgs = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
  // Chromium's fake camera (a test pattern), and permission granted without a prompt
  '--use-fake-device-for-media-stream', '--use-fake-ui-for-media-stream'];
const launch = (args) => chromium.launch({ executablePath: process.env.CHROMIUM || '/usr/bin/chromium', args });
const browser = await launch(baseArgs);
let failed = false;
try {
  const page = await browser.newPage({ viewport: { width: 1200, height: 900 } });
  page.on('pageerror', (e) => { console.error('page error:', e.message); failed = true; });
  await page.goto(url);
  await page.waitForSelector('body[data-ready="1"]', { timeout: 120000 });
  check(true, 'page loaded the bundled model');
  const first = await page.evaluate(() => ({ backend: window.dinoDemo.model.backend, threads: window.dinoDemo.model.threads,
    cores: navigator.hardwareConcurrency, isolated: crossOriginIsolated }));
  check(first.isolated && first.threads === (threadsBuilt ? first.cores : 1),
    `the CPU engine runs on ${first.threads} thread(s) (${first.cores} cores; the threads build ${threadsBuilt ? 'shipped' : 'not built'})`);
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
  const dupDir = scratchDir('dino-dups-');
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
  const nativeOut = scratchDir('dino-dedup-');
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
  const modelWorker = page.workers().find((w) => w.url().endsWith('/worker.js'));
  const grown = await modelWorker.evaluate(async (threads) => {
    // the module that holds the model: the threads build's (shared) memory, or the page's
    const exports = await (await import(threads > 1 ? './threads/dino_web.js' : './dino-web.js')).default();
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
  }, first.threads);
  await page.setInputFiles('#files', photo);
  await page.waitForFunction(() => /was reloaded/.test(document.querySelector('#notice').textContent), null, { timeout: 120000 });
  const oom = await page.textContent('#error');
  check(/out of memory/.test(oom), `out of memory (${grown} pages taken) reported: "${oom.trim().slice(0, 90)}"`);
  await page.setInputFiles('#files', path.join(root, 'tests/fixtures/images/coffee.png'));
  await page.waitForFunction((n) => document.querySelectorAll('article.result').length === n + 1, results0, { timeout: 120000 });
  check(true, 'after the crash the reloaded model works');
  await modelPicker();
  await videoChecks();
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
