// Start/end logits of every window -> the best answers, as transformers' question-answering pipeline
// post-processes them and edgeport's Python pipeline copies (edgeport/runtime/pipelines/qa.py); a port of
// the Java core's AnswerDecoder, in double precision:
//  - per window, logits outside the context ([CLS] excepted) become -10000, softmax over the window;
//  - null score = min over windows of p_start[CLS] * p_end[CLS]; then [CLS] gets probability 0;
//  - span (i, j): p_start[i] * p_end[j], i <= j <= i + maxAnswerLen - 1, both in the context; the
//    window's 2 * topK + 10 best are kept, each widened to whole words (word extents inside the window);
//  - spans with the same text ignoring case add their scores (the first keeps its offsets);
//  - with handleImpossibleAnswer the empty answer joins; sorted by score (stable), cut to topK.
// Where a window has fewer valid spans than it keeps, transformers fills in zero-score spans in numpy's
// argpartition order (some ill-formed); this keeps positive-score spans only.

import {codePoints} from './tokenizer.js';

/** Softmax over the window with non-context positions other than [CLS] set to -10000 (Float64Array). */
export function probabilities(f, logits) {
  const n = f.inputIds.length, p = new Float64Array(n);
  let max = -Infinity;
  for (let k = 0; k < n; k++) {
    const keep = (k === 0 || f.wordIds[k] >= 0) && f.attentionMask[k] === 1;
    p[k] = keep ? logits[k] : -10000.0;
    if (p[k] > max) max = p[k];
  }
  let sum = 0;
  for (let k = 0; k < n; k++) sum += (p[k] = Math.exp(p[k] - max));
  for (let k = 0; k < n; k++) p[k] /= sum;
  return p;
}

/** The window's best `keep` [start, end, score] spans, both ends in the context, best first. */
export function bestSpans(f, ps, pe, keep, maxAnswerLen) {
  const best = [];
  const n = f.inputIds.length;
  for (let i = 0; i < n; i++) {
    if (f.wordIds[i] < 0) continue;
    for (let j = i; j < Math.min(n, i + maxAnswerLen); j++) {
      if (f.wordIds[j] < 0) continue;
      const s = ps[i] * pe[j];
      if (!(s > 0) || (best.length === keep && s <= best[keep - 1][2])) continue;
      let at = best.length;
      while (at > 0 && best[at - 1][2] < s) at--;
      best.splice(at, 0, [i, j, s]);
      if (best.length > keep) best.pop();
    }
  }
  return best;
}

function wordStart(f, pos) {
  let k = pos;
  while (k - 1 >= 0 && f.wordIds[k - 1] === f.wordIds[pos]) k--;
  return f.charStart[k];
}

function wordEnd(f, pos) {
  let k = pos;
  while (k + 1 < f.wordIds.length && f.wordIds[k + 1] === f.wordIds[pos]) k++;
  return f.charEnd[k];
}

/**
 * @param {string} context the passage the windows were made from
 * @param {object[]} features windows from FeatureConverter.convert
 * @param {ArrayLike<number>[]} startLogits one per window, a value per position
 * @param {ArrayLike<number>[]} endLogits likewise
 * @param {{topK?: number, maxAnswerLen?: number, handleImpossibleAnswer?: boolean}} opts defaults 1, 15, false
 * @returns {{answer: string, start: number, end: number, score: number}[]} code-point offsets, best first
 * @throws {Error} when topK or maxAnswerLen is below 1
 */
export function decodeAnswers(context, features, startLogits, endLogits, opts = {}) {
  const {topK = 1, maxAnswerLen = 15, handleImpossibleAnswer = false} = opts;
  if (!(topK >= 1 && maxAnswerLen >= 1)) throw new Error('topK and maxAnswerLen must be >= 1');
  const cps = codePoints(context);
  const answers = [];
  let minNull = 1e6;
  features.forEach((f, w) => {
    const ps = probabilities(f, startLogits[w]), pe = probabilities(f, endLogits[w]);
    minNull = Math.min(minNull, ps[0] * pe[0]);
    ps[0] = pe[0] = 0;
    for (const [i, j, score] of bestSpans(f, ps, pe, 2 * topK + 10, maxAnswerLen)) {
      const a = wordStart(f, i), b = wordEnd(f, j);
      const text = String.fromCodePoint(...cps.slice(a, b));
      const same = answers.find((x) => x.answer.toLowerCase() === text.toLowerCase());
      if (same) same.score += score;
      else answers.push({answer: text, start: a, end: b, score});
    }
  });
  if (handleImpossibleAnswer) answers.push({answer: '', start: 0, end: 0, score: minNull});
  answers.sort((x, y) => y.score - x.score);  // Array.prototype.sort is stable
  return answers.slice(0, topK);
}
