// The model's worker: the package loads here, off the page's thread. (Import maps do not reach
// workers in every browser, so the module is named by its path; a bundler resolves 'dino-web'.)
import init, { Dino } from './node_modules/dino-web/dino_web.js';

const ready = init();
let model = null;

onmessage = async ({ data: { id, op, payload } }) => {
  try {
    await ready;
    if (op === 'load') {
      const next = await Dino.load(payload, { backend: 'auto' });
      if (model) model.free();
      model = next;
      postMessage({ id, result: { heads: model.heads, patch: model.patch, backend: model.backend } });
    } else if (op === 'attention') {
      if (!model) throw new Error('no model is loaded');
      const r = await model.attention(payload, { threshold: 0.6, size: 480 });
      postMessage({ id, result: r }, [r.attention.buffer, r.masks.buffer]);
    }
  } catch (e) {
    postMessage({ id, error: String((e && e.message) || e) });
  }
};
