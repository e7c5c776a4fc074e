// ViT-S/16 at 224x224 in headless Chromium: dino-web (our CPU engine in wasm, one thread and,
// from the threads build, all cores) against ONNX Runtime Web (wasm backend, 1 thread and all
// cores) on the same network and input, in the same page and run (cross-origin isolated).
//
//   python3 bench/web/make_model.py /tmp/webbench      # the model, as .safetensors and .onnx
//   bash web/build.sh --cpu-only                        # web/pkg
//   PKG_DIR=web/pkg-threads bash web/build.sh --cpu-only --threads   # web/pkg-threads
//   npm --prefix ~/.cache/dino-rs/npm-tools install onnxruntime-web@1.23.2 playwright-core@1.65.1
//   node bench/web/bench.mjs /tmp/webbench [ITERS]
import fs from 'node:fs';
import path from 'node:path';
import { runPage, timing, tools } from './harness.mjs';

const modelDir = process.argv[2] || '/tmp/webbench';
const iters = Number(process.argv[3] || 10);
const ortDir = path.join(tools, 'node_modules/onnxruntime-web/dist');
const ortVersion = JSON.parse(fs.readFileSync(path.join(ortDir, '../package.json'))).version;

const page = `<!doctype html><meta charset="utf-8"><script type="module">
import init, { Dino } from './pkg/dino_web.js';
import * as ort from './ort/ort.wasm.min.mjs';
const ITERS = ${iters};
${timing}
await init();
const bytes = async (u) => new Uint8Array(await (await fetch(u)).arrayBuffer());
const model = await Dino.load(await bytes('./model/vit_small16.safetensors'), { backend: 'cpu' });
// one 224x224 image of seeded noise, as ImageData (dino-web) and as the normalised tensor (ORT)
let seed = 1; const rnd = () => (seed = (seed * 1103515245 + 12345) % 2147483648) / 2147483648;
const img = new ImageData(224, 224);
for (let i = 0; i < img.data.length; i++) img.data[i] = i % 4 === 3 ? 255 : Math.floor(rnd() * 256);
const mean = [0.485, 0.456, 0.406], std = [0.229, 0.224, 0.225];
const x = new Float32Array(3 * 224 * 224);
for (let c = 0; c < 3; c++) for (let p = 0; p < 224 * 224; p++) x[c * 224 * 224 + p] = (img.data[4 * p + c] / 255 - mean[c]) / std[c];
const out = {};
const ours = await model.embed(img, { size: '224x224' });
out.dinoEmbed = await time(() => model.embed(img, { size: '224x224' }), ITERS);
out.dinoAttention = await time(() => model.attention(img, { size: '224x224' }), ITERS);
// the threads build runs in a worker, as in the demo page (the page's main thread must not
// block, so rayon would spin there): one rayon thread per core, the same weights and input
const worker = new Worker('./threads-worker.js', { type: 'module' });
const fromWorker = await new Promise((resolve, reject) => {
  worker.onmessage = (e) => resolve(e.data);
  worker.onerror = (e) => reject(new Error(e.message));
  worker.postMessage({ iters: ITERS, pixels: img.data, width: 224, height: 224 });
});
if (fromWorker.error) throw new Error(fromWorker.error);
out.threadsEmbed = fromWorker.embed;
out.threadsAttention = fromWorker.attention;
const a1 = (await model.attention(img, { size: '224x224' })).attention;
out.threadsDiff = Math.max(...Array.from(fromWorker.cls, (v, i) => Math.abs(v - ours[i])),
  ...Array.from(fromWorker.attn, (v, i) => Math.abs(v - a1[i])));
const onnx = await bytes('./model/vit_small16.onnx');
for (const threads of [1, navigator.hardwareConcurrency]) {
  ort.env.wasm.numThreads = threads;
  ort.env.wasm.wasmPaths = location.origin + '/ort/';
  const session = await ort.InferenceSession.create(onnx, { executionProviders: ['wasm'], graphOptimizationLevel: 'all' });
  const feeds = { x: new ort.Tensor('float32', x, [1, 3, 224, 224]) };
  const cls = (await session.run(feeds)).cls.data;
  out['ort' + threads] = await time(() => session.run(feeds), ITERS);
  out.maxAbsDiff = Math.max(...Array.from(cls, (v, i) => Math.abs(v - ours[i])));
  out.isolated = crossOriginIsolated;
  await session.release();
}
window.result = out;
</script>`;

const threadsWorker = `import init, { Dino, initThreadPool } from './pkg-threads/dino_web.js';
${timing}
onmessage = async ({ data: { iters, pixels, width, height } }) => {
  try {
    await init();
    await initThreadPool(navigator.hardwareConcurrency);
    const bytes = new Uint8Array(await (await fetch('./model/vit_small16.safetensors')).arrayBuffer());
    const model = await Dino.load(bytes, { backend: 'cpu' });
    const img = new ImageData(new Uint8ClampedArray(pixels), width, height);
    const cls = await model.embed(img, { size: '224x224' });
    const attn = (await model.attention(img, { size: '224x224' })).attention;
    const embed = await time(() => model.embed(img, { size: '224x224' }), iters);
    const attention = await time(() => model.attention(img, { size: '224x224' }), iters);
    postMessage({ cls, attn, embed, attention });
  } catch (e) { postMessage({ error: String(e.message || e) }); }
};`;

const { r, cores } = await runPage({
  page, modelDir,
  scripts: { '/threads-worker.js': threadsWorker },
  files: (p) => (p.startsWith('/ort/') ? path.join(ortDir, p.slice(5)) : null),
  args: ['--disable-quic', '--disable-component-update', '--disable-sync'],
  extract: () => ({ r: window.result, cores: navigator.hardwareConcurrency }),
});
const row = (name, t) => `| ${name} | ${t.median.toFixed(1)} | ${t.min.toFixed(1)} | ${(r.dinoEmbed.median / t.median).toFixed(2)}x | ${(t.median / Math.min(r.ort1.median, r['ort' + cores].median)).toFixed(2)}x |`;
console.log(`ViT-S/16, 224x224, batch 1, Chromium headless (${cores} cores, cross-origin isolated: ${r.isolated}), median of ${iters}`);
console.log('| engine | median ms | min ms | speed vs dino-web embed (1 thread) | time vs ORT Web\'s best |\n|---|---|---|---|---|');
console.log(row('dino-web CPU engine, embed (CLS), 1 thread', r.dinoEmbed));
console.log(row('dino-web CPU engine, attention + masks, 1 thread', r.dinoAttention));
console.log(row(`dino-web CPU engine, embed (CLS), ${cores} threads`, r.threadsEmbed));
console.log(row(`dino-web CPU engine, attention + masks, ${cores} threads`, r.threadsAttention));
console.log(row(`ONNX Runtime Web ${ortVersion} wasm, 1 thread`, r.ort1));
console.log(row(`ONNX Runtime Web ${ortVersion} wasm, ${cores} threads`, r['ort' + cores]));
console.log(`CLS max abs difference between the two engines: ${r.maxAbsDiff.toExponential(2)}`);
console.log(`dino-web threads on vs off, CLS and attention max abs difference: ${r.threadsDiff.toExponential(2)}`);
