// The model runs here, off the page's main thread: the tab stays responsive while a large
// image is analysed. Messages: {id, op: 'load' | 'attention' | 'copyDescriptor', args}.
import init, { Dino } from './dino-web.js';

const ready = init();
let model = null;

onmessage = async (e) => {
  const { id, op, args } = e.data;
  try {
    await ready;
    let result;
    if (op === 'load') {
      const next = await Dino.load(args.bytes, args.options);
      if (model) model.free();
      model = next;
      result = { backend: model.backend, backendNote: model.backendNote, heads: model.heads,
        patch: model.patch, dim: model.dim };
    } else if (!model) {
      throw new Error('no model is loaded');
    } else if (op === 'attention') {
      result = await model.attention(args.image, args.options);
    } else if (op === 'copyDescriptor') {
      result = await model.copyDescriptor(args.image, args.options);
    } else {
      throw new Error(`unknown operation ${op}`);
    }
    postMessage({ id, ok: true, result });
  } catch (err) {
    postMessage({ id, ok: false, error: String((err && err.message) || err) });
  }
};
