// End-to-end test of the package as a user installs it: `npm pack` of each package folder given
// (default web/pkg), the minimal example copied to a temporary folder, `npm install` of the
// tarball there (offline), the page served and opened in headless Chromium; its attention must
// equal the native `dino attention` on the same weights and photo. A threads build is served
// cross-origin isolated (COOP/COEP) and must run on every core with the same result. Also
// checks what each tarball holds.
//
//   bash web/build.sh --cpu-only && PKG_DIR=web/pkg-threads bash web/build.sh --cpu-only --threads
//   DINO_BIN=target/release/dino node web/examples/test.mjs web/pkg web/pkg-threads
import fs from 'node:fs';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { ISOLATION, check, chromium, maxAbs, nativeAttention, scratchDir, serveDir } from '../../tests/browser-support.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.join(here, '../..');
const dino = process.env.DINO_BIN || path.join(root, 'target/release/dino');
const weights = path.join(root, 'tests/fixtures/weights/s16_hf.safetensors');
const photo = path.join(root, 'tests/fixtures/images/chelsea.png');

const want = nativeAttention(dino, { weights, image: photo }).attention;

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking'],
});
const results = [];
try {
  for (const dir of process.argv.slice(2).length ? process.argv.slice(2) : ['web/pkg']) {
    results.push(await checkPackage(path.resolve(root, dir)));
  }
} finally {
  await browser.close();
}
if (results.length > 1) {
  const same = results.every((r) => r.attention.every((v, i) => v === results[0].attention[i]));
  check(same, `every package gives the same attention (${results.map((r) => `${r.name}: ${r.threads} thread(s)`).join(', ')})`);
}

async function checkPackage(pkgDir) {
  // the package as npm would publish it
  const work = scratchDir('dino-web-example-');
  const packed = JSON.parse(execFileSync('npm', ['pack', pkgDir, '--json', '--pack-destination', work]));
  const tarball = path.join(work, packed[0].filename);
  const files = packed[0].files.map((f) => f.path).sort();
  const meta = JSON.parse(fs.readFileSync(path.join(pkgDir, 'package.json'), 'utf8'));
  const threaded = meta.name.endsWith('-threads');
  check(['README.md', 'dino_web.d.ts', 'dino_web.js', 'dino_web_bg.wasm', 'package.json'].every((f) => files.includes(f)) &&
    (!threaded || files.some((f) => f.startsWith('snippets/'))) &&
    meta.exports['.'].types && meta.exports['.'].default && meta.types && meta.version,
    `npm pack: ${packed[0].filename}, ${(packed[0].size / 1024).toFixed(0)} KiB packed, files ${files.join(', ')}`);

  // the example, installed from the tarball as a user would (under the name its code imports)
  const app = path.join(work, 'app');
  fs.cpSync(path.join(here, 'minimal'), app, { recursive: true });
  execFileSync('npm', ['install', '--offline', '--no-audit', '--no-fund', `dino-web@file:${tarball}`], { cwd: app, stdio: 'inherit' });
  check(fs.existsSync(path.join(app, 'node_modules/dino-web/dino_web_bg.wasm')), `npm install of ${meta.name} (offline)`);
  fs.copyFileSync(weights, path.join(app, 'model.safetensors'));
  fs.copyFileSync(photo, path.join(app, 'chelsea.png'));

  // a threads build needs a cross-origin isolated page
  const { server, url: site } = await serveDir(app, threaded ? ISOLATION : {});
  const url = `${site}?model=model.safetensors&image=chelsea.png`;
  try {
    const page = await browser.newPage();
    let failed = null;
    page.on('pageerror', (e) => { failed = e.message; });
    await page.goto(url);
    await page.waitForFunction(() => window.result || /Error/.test(document.querySelector('#status').textContent), null, { timeout: 120000 });
    check(!failed, `no page error${failed ? `: ${failed}` : ''}`);
    const got = await page.evaluate(() => ({ attention: Array.from(window.result.attention), threads: window.threads,
      status: document.querySelector('#status').textContent }));
    const cores = await page.evaluate(() => navigator.hardwareConcurrency);
    check(got.threads === (threaded ? cores : 1), `${meta.name}: ${got.threads} thread(s) on ${cores} cores`);
    const err = maxAbs(got.attention, want);
    check(got.attention.length === want.length && err <= 1e-5,
      `${meta.name}: the installed package's attention in the example page equals the native CLI (max abs error ${err}); "${got.status}"`);
    await page.close();
    return { name: meta.name, threads: got.threads, attention: got.attention };
  } finally {
    server.close();
  }
}
