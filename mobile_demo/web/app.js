// The phone page: LiteRT.js runs the export's .tflite (Wasm, XNNPACK), the JS core does the rest.
// ?model=int8 (default) or ?model=fp32 picks model/<name>/, installed by scripts/install_export.py.
// window.qaDemo exposes {ready, ask(question, context, opts), info} for the end-to-end test.
import {loadLiteRt, loadAndCompile, supportsFeature, Tensor} from '@litertjs/core';
import {QaEngine} from './src/engine.js';
import {codePoints} from './src/tokenizer.js';
import {SAMPLES} from './samples.js';

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const variant = params.get('model') || 'int8';
const threads = Number(params.get('threads') || Math.min(4, navigator.hardwareConcurrency || 1));

/** The interpreter behind the engine: one compiled model, inputs named as in edgeport.json. */
function liteRtModel(compiled, shape, signatureKey) {
  return {
    async run(feeds) {
      const inputs = Object.fromEntries(Object.entries(feeds).map(([n, a]) => [n, new Tensor(a, shape)]));
      // edgeport.json's signature_key; manifests written before it: the model's default signature
      const out = await (signatureKey ? compiled.run(signatureKey, inputs) : compiled.run(inputs));
      const result = {};
      for (const [name, t] of Object.entries(out)) {
        result[name] = Float32Array.from(t.toTypedArray());
        t.delete();
      }
      Object.values(inputs).forEach((t) => t.delete());
      return result;
    },
  };
}

/** A reader's name for the manifest's precision: 'float32', or the quantized weights and activations
 * (quantization.weights / .activations, as edgeport's scheme records them: int8 + int8-dynamic ->
 * 'int8 weights, int8 activations (dynamic)'); manifest.precision when the manifest lacks those fields. */
function precisionLabel(manifest) {
  const q = manifest.quantization;
  if (!q) return manifest.precision === 'fp32' ? 'float32' : manifest.precision;
  if (!q.weights) return manifest.precision;
  const act = q.activations === 'int8-dynamic' ? ', int8 activations (dynamic)'
    : q.activations === 'int8-static' ? ', int8 activations (calibrated)' : '';
  return `${q.weights} weights${act}`;
}

/** The JSON at `url`; an Error naming the file and the HTTP status when the server has none. */
async function getJson(url) {
  const res = await fetch(url);
  if (!res.ok) throw new Error(`${url}: HTTP ${res.status} (is the model '${variant}' installed? see mobile_demo/README.md)`);
  return res.json();
}

async function load() {
  const base = `model/${variant}/`;
  const manifest = await getJson(`${base}edgeport.json`);
  const tokenizerJson = await getJson(base + manifest.tokenizer.file);
  // The threaded runtime needs a cross-origin-isolated page and relaxed SIMD; elsewhere one thread.
  const threaded = self.crossOriginIsolated === true && await supportsFeature('relaxedSimd') &&
    await supportsFeature('threads');
  await loadLiteRt('./litert/wasm/', {threads: threaded});
  const compiled = await loadAndCompile(base + manifest.artifact,
    {accelerator: 'wasm', cpuOptions: {numThreads: threaded ? threads : 1}});
  const shape = manifest.inputs.find((t) => t.name === 'input_ids').shape;
  const engine = new QaEngine(manifest, tokenizerJson, liteRtModel(compiled, shape, manifest.signature_key));
  const mib = (manifest.size_bytes / 2 ** 20).toFixed(1);
  const info = {variant, precision: manifest.precision, label: precisionLabel(manifest), sizeMiB: Number(mib),
    seqLen: engine.converter.maxSeqLen, threads: threaded ? threads : 1, randomWeights: manifest.random_weights};
  $('model-line').textContent = `${manifest.family} ${info.label} · ${mib} MiB · ${info.seqLen} tokens` +
    ` · ${info.threads} thread(s)`;
  $('weights-note').hidden = !manifest.random_weights;
  return {engine, info};
}

function render(context, answers) {
  $('answers').replaceChildren(...answers.map((a) => {
    const li = document.createElement('li');
    const t = document.createElement('span');
    t.className = 'text';
    t.textContent = a.answer === '' ? '(no answer in the passage)' : a.answer;
    const s = document.createElement('span');
    s.className = 'score';
    s.textContent = a.score.toFixed(4);
    li.append(t, s);
    return li;
  }));
  // Highlight spans (code-point offsets) in the passage; the best one strongest, overlaps skipped.
  const cps = codePoints(context);
  const spans = answers.map((a, k) => ({...a, best: k === 0})).filter((a) => a.end > a.start)
    .sort((x, y) => x.start - y.start);
  const parts = [];
  let at = 0;
  for (const a of spans) {
    if (a.start < at) continue;
    parts.push(document.createTextNode(String.fromCodePoint(...cps.slice(at, a.start))));
    const m = document.createElement('mark');
    if (a.best) m.className = 'best';
    m.textContent = String.fromCodePoint(...cps.slice(a.start, a.end));
    parts.push(m);
    at = a.end;
  }
  parts.push(document.createTextNode(String.fromCodePoint(...cps.slice(at))));
  $('highlighted').replaceChildren(...parts);
}

function setup(state) {
  for (const a of document.querySelectorAll('#variants a')) a.classList.toggle('current', a.dataset.variant === variant);
  const custom = new Option('Your own passage', 'custom');
  $('sample').replaceChildren(...SAMPLES.map((s, k) => new Option(s.title, k)), custom);
  // Answers, highlights and timing belong to the passage they were found in: cleared when it changes.
  const clearResults = () => {
    $('answers').replaceChildren();
    $('highlighted').replaceChildren();
    $('status').textContent = 'Ready.';
  };
  const pick = () => {
    const s = SAMPLES[$('sample').value];
    if (!s) return;
    $('passage').value = s.passage;
    $('question').value = s.question;
    clearResults();
  };
  $('sample').addEventListener('change', pick);
  $('passage').addEventListener('input', () => { $('sample').value = 'custom'; clearResults(); });
  pick();
  $('ask').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const context = $('passage').value;
    try {
      const r = await state.engine.answer($('question').value, context, {topK: 3});
      render(context, r.answers);
      $('status').textContent = `${r.inferenceMs.toFixed(0)} ms inference · ${r.windows} window(s)`;
    } catch (e) {
      clearResults();  // no answers from an earlier question stay on screen under this one's error
      $('status').textContent = e.message;
    }
  });
}

const loaded = load();
const ready = loaded.then((state) => {
  setup(state);
  $('go').disabled = false;
  $('status').textContent = 'Ready.';
  return state.info;
}).catch((e) => {
  $('status').textContent = `Could not load the model: ${e.message}`;
  throw e;
});

window.qaDemo = {
  ready,
  /** Answers like the Ask button, with options {topK, maxAnswerLen, handleImpossibleAnswer}. */
  async ask(question, context, opts) {
    return (await loaded).engine.answer(question, context, opts);
  },
  /** Milliseconds of each of `n` model runs on the first window of (question, context): the benchmark. */
  async timeModel(question, context, n) {
    const {engine} = await loaded;
    const f = engine.converter.convert(question, context)[0];
    const all = {input_ids: f.inputIds, attention_mask: f.attentionMask, token_type_ids: f.tokenTypeIds};
    const feeds = Object.fromEntries(engine.inputNames.map((k) => [k, all[k]]));
    const times = [];
    for (let k = 0; k < n; k++) {
      const t0 = performance.now();
      await engine.model.run(feeds);
      times.push(performance.now() - t0);
    }
    return times;
  },
};
