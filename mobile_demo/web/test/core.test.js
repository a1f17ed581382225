// The JS core against fixtures the Python runtime pipeline made (mobile_demo/scripts/make_fixtures.py):
// tokens like the `tokenizers` library, windows like the pipeline's feeds, answers like its answers.
import {test} from 'node:test';
import assert from 'node:assert/strict';
import {readFileSync} from 'node:fs';
import {fileURLToPath} from 'node:url';
import {BertTokenizer} from '../src/tokenizer.js';
import {FeatureConverter} from '../src/features.js';
import {decodeAnswers} from '../src/decode.js';
import {QaEngine} from '../src/engine.js';

const dir = fileURLToPath(new URL('../../fixtures/', import.meta.url));
const read = (name) => JSON.parse(readFileSync(dir + name, 'utf8'));
const fx = read('qa_fixtures.json');
const tokenizerJson = read('tokenizer.json');
const manifest = read('edgeport.json');
const tok = BertTokenizer.fromTokenizerJson(tokenizerJson);
const S = fx.settings;
const converter = new FeatureConverter(tok, S.max_seq_len, S.doc_stride, S.max_question_len);

const padded = (head, n, pad = 0) => Int32Array.from({length: n}, (_, k) => (k < head.length ? head[k] : pad));
const logits = (w, key) => Float32Array.from({length: S.max_seq_len}, (_, k) => w[key][k] ?? 0);
// The pipeline's zero-score filler spans are not reproduced (see decode.js).
const positive = (c) => c.answers.filter((a) => a.score > 0);

function assertSameAnswers(name, expected, got) {
  assert.equal(got.length, expected.length, `${name}: number of answers`);
  expected.forEach((e, k) => {
    const a = got[k];
    assert.deepEqual([a.answer, a.start, a.end], [e.answer, e.start, e.end], `${name} answer ${k}`);
    assert.ok(Math.abs(a.score - e.score) <= 1e-9 * Math.max(1, e.score), `${name} answer ${k}: score ${a.score} vs ${e.score}`);
  });
}

test('at least 30 cases, some needing the stride', () => {
  assert.ok(fx.cases.length >= 30);
  assert.ok(fx.cases.filter((c) => c.windows.length > 1).length >= 3);
});

test('questions and passages tokenize like the tokenizers library', () => {
  for (const c of fx.cases) {
    for (const [what, text, exp] of [['question', c.question, c.question_tokens], ['context', c.context, c.context_tokens]]) {
      const e = tok.encode(text);
      const at = `${c.name}/${what}`;
      assert.deepEqual(e.ids, exp.ids, `${at}: ids`);
      assert.deepEqual(e.tokens, exp.tokens, `${at}: tokens`);
      assert.deepEqual(e.start.map((s, k) => [s, e.end[k]]), exp.offsets, `${at}: offsets`);
      assert.deepEqual(e.wordIds, exp.word_ids, `${at}: word ids`);
    }
  }
});

test('windows match the feeds of the Python pipeline', () => {
  for (const c of fx.cases) {
    const fs = converter.convert(c.question, c.context);
    assert.equal(fs.length, c.windows.length, `${c.name}: windows`);
    fs.forEach((f, w) => {
      const win = c.windows[w];
      assert.deepEqual(f.inputIds, padded(win.input_ids, S.max_seq_len), `${c.name} window ${w}: input_ids`);
      assert.deepEqual(f.tokenTypeIds, padded(win.token_type_ids, S.max_seq_len), `${c.name} window ${w}: types`);
      assert.deepEqual(f.attentionMask, padded(new Array(win.attention_mask_ones).fill(1), S.max_seq_len),
        `${c.name} window ${w}: mask`);
    });
  }
});

test('stored logits decode to the pipeline answers', () => {
  let nullOnTop = 0;
  for (const c of fx.cases) {
    const fs = converter.convert(c.question, c.context);
    const got = decodeAnswers(c.context, fs, c.windows.map((w) => logits(w, 'start_logits')),
      c.windows.map((w) => logits(w, 'end_logits')),
      {topK: c.top_k, maxAnswerLen: S.max_answer_len, handleImpossibleAnswer: c.handle_impossible_answer});
    assertSameAnswers(c.name, positive(c), got);
    if (got[0].answer === '') nullOnTop++;
  }
  assert.ok(nullOnTop >= 1, 'the null answer wins somewhere');
});

test('the engine feeds the signature names and answers like the pipeline', async () => {
  for (const c of fx.cases) {
    const model = {
      async run(feeds) {
        assert.deepEqual(Object.keys(feeds).sort(), manifest.inputs.map((t) => t.name).sort());
        const w = c.windows.find((x) => x.input_ids.every((id, k) => feeds.input_ids[k] === id));
        assert.ok(w, 'fed a window the pipeline never ran');
        return {start_logits: logits(w, 'start_logits'), end_logits: logits(w, 'end_logits')};
      },
    };
    const r = await new QaEngine(manifest, tokenizerJson, model).answer(c.question, c.context,
      {topK: c.top_k, handleImpossibleAnswer: c.handle_impossible_answer});
    assert.equal(r.windows, c.windows.length);
    assertSameAnswers(c.name, positive(c), r.answers);
  }
});

test('bad input is refused with a message', async () => {
  assert.throws(() => new QaEngine({...manifest, task: 'fill-mask'}, tokenizerJson, null), /not question-answering/);
  assert.throws(() => BertTokenizer.fromTokenizerJson({...tokenizerJson, pre_tokenizer: {type: 'Metaspace'}}),
    /BertPreTokenizer/);
  const engine = new QaEngine(manifest, tokenizerJson, null);
  await assert.rejects(engine.answer('  ', 'text'), /question and a passage/);
  assert.throws(() => decodeAnswers('x', [], [], [], {topK: 0}), />= 1/);
});
