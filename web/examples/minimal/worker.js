// The model's worker: the package loads here, off the page's thread. (Import maps do not reach
// workers in every browser, so the module is named by its path; a bundler resolves 'dino-web'.)
// With the threads build (dino-web-cpu-threads) on a cross-origin isolated page, the CPU engine
// gets one thread per core; any other build or page runs it on this one.
import * as dino from './node_modules/dino-web/dino_web.js';

const ready = (async () => {
  await dino.default();
  if (dino.initThreadPool && self.crossOriginIsolated) {
    await dino.initThreadPool(navigator.hardwareConcurrency);
    return navigator.hardwareConcurrency;
  }
  return 1;
})();
let model = null;

onmessage = async ({ data: { id, op, payload } }) => {
  try {
    const threads = await ready;
    if (op === 'load') {
      const next = await dino.Dino.load(payload, { backend: 'auto' });
      if (model) model.free();
      model = next;
      postMessage({ id, result: { heads: model.heads, patch: model.patch, backend: model.backend, threads } });
    } else if (op === 'attention') {
      if (!model) throw new Error('no model is loaded');
      const r = await model.attention(payload, { threshold: 0.6, size: 480 });
      postMessage({ id, result: r }, [r.attention.buffer, r.masks.buffer]);
    }
  } catch (e) {
    postMessage({ id, error: String((e && e.message) || e) });
  }
};
