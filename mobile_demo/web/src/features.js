// Windows over a (question, context) pair, as transformers' question-answering pipeline makes them with a
// fast tokenizer (a port of the Java core's FeatureConverter): question first, only the context truncated,
// consecutive windows overlapping by docStride tokens (huggingface/tokenizers Encoding::truncate with a
// stride), each window [CLS] q [SEP] c [SEP], type ids 0 then 1, padded to maxSeqLen.

import {codePoints} from './tokenizer.js';

export class FeatureConverter {
  /**
   * @param {import('./tokenizer.js').BertTokenizer} tokenizer
   * @param {number} maxSeqLen the artifact's static sequence length
   * @param {number} docStride context tokens shared by consecutive windows (transformers: min(S/2, 128))
   * @param {number} maxQueryLen question tokens kept (0: all)
   */
  constructor(tokenizer, maxSeqLen, docStride, maxQueryLen) {
    Object.assign(this, {tokenizer, maxSeqLen, docStride, maxQueryLen});
  }

  /** The question cut after its maxQueryLen-th token, as text (the Python pipeline's rule). */
  cutQuestion(question) {
    const q = this.tokenizer.encode(question);
    if (this.maxQueryLen <= 0 || q.ids.length <= this.maxQueryLen) return question;
    return String.fromCodePoint(...codePoints(question).slice(0, q.end[this.maxQueryLen - 1]));
  }

  /**
   * The windows, in context order. Each: {inputIds, tokenTypeIds, attentionMask: Int32Array(S),
   * charStart, charEnd, wordIds: Int32Array(S), -1 outside the context}.
   * @throws {Error} when the question leaves no more than docStride tokens per window
   */
  convert(question, context) {
    const q = this.tokenizer.encode(this.cutQuestion(question));
    const c = this.tokenizer.encode(context);
    const budget = this.maxSeqLen - q.ids.length - 3;
    if (c.ids.length <= budget) return [this.window(q, c, 0, c.ids.length)];
    if (this.docStride >= budget) {
      throw new Error(`question of ${q.ids.length} tokens leaves ${budget} context tokens per window, ` +
        `not more than the stride ${this.docStride}`);
    }
    const out = [];
    for (let from = 0; ; from += budget - this.docStride) {
      const to = Math.min(from + budget, c.ids.length);
      out.push(this.window(q, c, from, to));
      if (to === c.ids.length) return out;
    }
  }

  window(q, c, from, to) {
    const S = this.maxSeqLen, tok = this.tokenizer;
    const f = {
      inputIds: new Int32Array(S).fill(tok.padId), tokenTypeIds: new Int32Array(S),
      attentionMask: new Int32Array(S), charStart: new Int32Array(S).fill(-1),
      charEnd: new Int32Array(S).fill(-1), wordIds: new Int32Array(S).fill(-1),
    };
    let p = 0;
    f.inputIds[p++] = tok.clsId;
    for (const id of q.ids) f.inputIds[p++] = id;
    f.inputIds[p++] = tok.sepId;
    for (let t = from; t < to; t++, p++) {
      f.inputIds[p] = c.ids[t];
      f.tokenTypeIds[p] = 1;
      f.charStart[p] = c.start[t];
      f.charEnd[p] = c.end[t];
      f.wordIds[p] = c.wordIds[t];
    }
    f.inputIds[p] = tok.sepId;
    f.tokenTypeIds[p++] = 1;
    f.attentionMask.fill(1, 0, p);
    return f;
  }
}

/**
 * Checks a parsed edgeport.json (edgeport/manifest.py's contract) is a question-answering TFLite export
 * with a tokenizer, inputs input_ids / attention_mask and outputs start_logits / end_logits.
 * @returns {{manifest: object, seqLen: number, inputNames: string[]}}
 * @throws {Error} naming what is wrong
 */
export function checkManifest(m) {
  if (m.task !== 'question-answering') throw new Error(`edgeport.json: task is '${m.task}', not question-answering`);
  if (m.target !== 'tflite') throw new Error(`edgeport.json: target is '${m.target}', not tflite`);
  if (!m.tokenizer) throw new Error('edgeport.json: the export has no tokenizer');
  const names = (list) => (list || []).map((t) => t.name);
  for (const n of ['input_ids', 'attention_mask']) {
    if (!names(m.inputs).includes(n)) throw new Error(`edgeport.json: no input named ${n}`);
  }
  for (const n of ['start_logits', 'end_logits']) {
    if (!names(m.outputs).includes(n)) throw new Error(`edgeport.json: no output named ${n}`);
  }
  const shape = m.inputs.find((t) => t.name === 'input_ids').shape;
  return {manifest: m, seqLen: shape[shape.length - 1], inputNames: names(m.inputs)};
}
