// Question answering over a passage: windows -> model -> answers. The model is any object with
// `async run(inputs)`, inputs {input_ids, attention_mask[, token_type_ids]: Int32Array(S)} named as in
// edgeport.json, returning {start_logits, end_logits: Float32Array(S)}.

import {BertTokenizer} from './tokenizer.js';
import {FeatureConverter, checkManifest} from './features.js';
import {decodeAnswers} from './decode.js';

export const DOC_STRIDE = 128;
export const MAX_QUERY_LEN = 64;

export class QaEngine {
  /**
   * @param {object} manifest parsed edgeport.json
   * @param {object} tokenizerJson parsed tokenizer.json
   * @param {{run: function(object): Promise<object>}} model
   */
  constructor(manifest, tokenizerJson, model) {
    const {seqLen, inputNames} = checkManifest(manifest);
    this.inputNames = inputNames;
    this.converter = new FeatureConverter(BertTokenizer.fromTokenizerJson(tokenizerJson), seqLen,
      Math.min(Math.floor(seqLen / 2), DOC_STRIDE), MAX_QUERY_LEN);
    this.model = model;
  }

  /**
   * @returns {Promise<{answers: object[], windows: number, inferenceMs: number}>} inferenceMs: model time
   *   summed over windows, milliseconds
   * @throws {Error} on an empty question or passage
   */
  async answer(question, context, opts = {}) {
    if (!question.trim() || !context.trim()) throw new Error('give a question and a passage');
    const features = this.converter.convert(question, context);
    const starts = [], ends = [];
    let ms = 0;
    for (const f of features) {
      const inputs = {input_ids: f.inputIds, attention_mask: f.attentionMask, token_type_ids: f.tokenTypeIds};
      const feeds = Object.fromEntries(this.inputNames.map((n) => [n, inputs[n]]));
      const t0 = performance.now();
      const out = await this.model.run(feeds);
      ms += performance.now() - t0;
      starts.push(out.start_logits);
      ends.push(out.end_logits);
    }
    return {answers: decodeAnswers(context, features, starts, ends, opts), windows: features.length, inferenceMs: ms};
  }
}
