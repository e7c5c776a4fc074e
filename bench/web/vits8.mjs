// What a visitor's CPU does with the paper's attention setting: ViT-S/8 (seeded weights of the
// official shape, from make_model.py) at 480x480 (3,600 patches), `attention` in a module
// worker as the demo page runs it, on the single-threaded package and on the threads build,
// in headless Chromium (cross-origin isolated). Prints a table.
//
//   python3 bench/web/make_model.py /tmp/webbench && bash web/build.sh --cpu-only
//   PKG_DIR=web/pkg-threads bash web/build.sh --cpu-only --threads
//   node bench/web/vits8.mjs /tmp/webbench [ITERS]
import path from 'node:path';
import { root, runPage, timing } from './harness.mjs';

const modelDir = process.argv[2] || '/tmp/webbench';
const iters = Number(process.argv[3] || 3);

const worker = (pkg) => `import * as dino from './${pkg}/dino_web.js';
${timing}
onmessage = async ({ data: { iters } }) => {
  try {
    await dino.default();
    const threads = dino.initThreadPool ? navigator.hardwareConcurrency : 1;
    if (dino.initThreadPool) await dino.initThreadPool(threads);
    const bytes = new Uint8Array(await (await fetch('./model/vit_small8.safetensors')).arrayBuffer());
    const model = await dino.Dino.load(bytes, { backend: 'cpu', heads: 6 });
    const photo = new Uint8Array(await (await fetch('./photo.png')).arrayBuffer());
    const run = () => model.attention(photo, { size: '480x480' });
    const first = await run();
    const t = [];
    for (let i = 0; i < iters; i++) { const t0 = performance.now(); await run(); t.push(performance.now() - t0); }
    postMessage({ threads, median: median(t), min: Math.min(...t), grid: [first.gridH, first.gridW], attention: first.attention });
  } catch (e) { postMessage({ error: String(e.message || e) }); }
};`;

const page = `<!doctype html><meta charset="utf-8"><script type="module">
const out = {};
for (const pkg of ['pkg', 'pkg-threads']) {
  const w = new Worker('./worker-' + pkg + '.js', { type: 'module' });
  out[pkg] = await new Promise((resolve) => { w.onmessage = (e) => resolve(e.data); w.postMessage({ iters: ${iters} }); });
  w.terminate();
}
window.result = out;
</script>`;

const r = await runPage({
  page, modelDir,
  scripts: { '/worker-pkg.js': worker('pkg'), '/worker-pkg-threads.js': worker('pkg-threads') },
  files: (p) => (p === '/photo.png' ? path.join(root, 'tests/fixtures/images/chelsea.png') : null),
  timeout: 900000,
  extract: () => ({ one: { ...window.result.pkg, attention: null }, many: { ...window.result['pkg-threads'], attention: null },
    same: window.result.pkg.attention && window.result.pkg.attention.every((v, i) => v === window.result['pkg-threads'].attention[i]) }),
});
for (const x of [r.one, r.many]) if (x.error) throw new Error(x.error);
console.log(`ViT-S/8, 480x480 (${r.one.grid[0]}x${r.one.grid[1]} patches), attention + masks, in a worker, median of ${iters}`);
console.log('| dino-web build | threads | median s | min s |\n|---|---|---|---|');
console.log(`| single-threaded (dino-web-cpu) | 1 | ${(r.one.median / 1000).toFixed(2)} | ${(r.one.min / 1000).toFixed(2)} |`);
console.log(`| threads (dino-web-cpu-threads) | ${r.many.threads} | ${(r.many.median / 1000).toFixed(2)} | ${(r.many.min / 1000).toFixed(2)} |`);
console.log(`attention identical with threads on and off: ${r.same}`);
