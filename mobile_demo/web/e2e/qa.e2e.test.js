// End to end: the phone page in headless Chromium (Debian's chromium driven by playwright-core) under
// phone emulation answers questions exactly as the Python pipeline does on the same artifacts.
//
// E2E_CONFIG names a JSON file written by tests/test_mobile_demo.py:
//   {"models": {"int8": EXPORT_DIR, "fp32": EXPORT_DIR},
//    "expected": {"int8": [{question, context, top_k, handle_impossible_answer, answers: [...]}], ...},
//    "screenshot": PNG path or null, "chromium": "/usr/bin/chromium"}
// Without it (or without Chromium) the test is skipped, saying why.
import {test} from 'node:test';
import assert from 'node:assert/strict';
import {existsSync, readFileSync} from 'node:fs';
import {startServer} from '../serve.mjs';
import {CHROMIUM_FLAGS} from './flags.mjs';

const configPath = process.env.E2E_CONFIG;
const config = configPath ? JSON.parse(readFileSync(configPath, 'utf8')) : null;
const chromiumPath = config?.chromium ?? '/usr/bin/chromium';
const skip = !config ? 'E2E_CONFIG not set (tests/test_mobile_demo.py sets it)' :
  !existsSync(chromiumPath) ? `no Chromium at ${chromiumPath} (apt-get install chromium)` :
  !existsSync(new URL('../litert/wasm/', import.meta.url)) ? 'LiteRT.js not copied into litert/ (node setup.mjs)' : false;


/** Answers agree: same text and offsets, scores within `rtol` (Wasm and native XNNPACK round differently). */
/** Returns the largest relative score difference seen. */
function assertSameAnswers(at, expected, got, rtol) {
  const positive = expected.filter((a) => a.score > 0);  // the pipeline's zero-score filler spans: see decode.js
  assert.equal(got.length, positive.length, `${at}: number of answers`);
  let worst = 0;
  positive.forEach((e, k) => {
    assert.deepEqual([got[k].answer, got[k].start, got[k].end], [e.answer, e.start, e.end], `${at}: answer ${k}`);
    const rel = Math.abs(got[k].score - e.score) / e.score;
    assert.ok(rel <= rtol, `${at}: score ${got[k].score} vs ${e.score}`);
    worst = Math.max(worst, rel);
  });
  return worst;
}

test('the phone page answers like the Python pipeline', {skip, timeout: 300_000}, async (t) => {
  const {chromium, devices} = await import('playwright-core');
  const {server, url} = await startServer(0, config.models);
  const browser = await chromium.launch({executablePath: chromiumPath, args: CHROMIUM_FLAGS});
  try {
    const context = await browser.newContext({...devices['Pixel 7']});
    const page = await context.newPage();
    const foreign = [];
    page.on('request', (r) => { if (!r.url().startsWith(url)) foreign.push(r.url()); });
    const failed = [];  // every request the page makes is served (no 404 for a favicon or a missing file)
    page.on('response', (r) => { if (r.status() >= 400) failed.push(`${r.status()} ${r.url()}`); });
    for (const [variant, cases] of Object.entries(config.expected)) {
      await page.goto(`${url}?model=${variant}`);
      const info = await page.evaluate(() => window.qaDemo.ready);
      assert.equal(info.variant, variant);
      let worst = 0;
      for (const c of cases) {
        const r = await page.evaluate(([q, ctx, o]) => window.qaDemo.ask(q, ctx, o),
          [c.question, c.context, {topK: c.top_k, handleImpossibleAnswer: c.handle_impossible_answer}]);
        worst = Math.max(worst, assertSameAnswers(`${variant}/${c.name}`, c.answers, r.answers, 1e-3));
      }
      t.diagnostic(`${variant} (${info.precision}, ${info.seqLen} tokens): ${cases.length} questions, ` +
        `largest relative score difference browser vs Python ${worst.toExponential(2)}`);
      // The page itself: type a question, press Ask, read the answers list.
      const c = cases[0];
      await page.fill('#passage', c.context);
      await page.fill('#question', c.question);
      await page.click('#go');
      await page.waitForFunction(() => document.querySelectorAll('#answers li').length > 0);
      const shown = await page.$$eval('#answers li .text', (els) => els.map((e) => e.textContent));
      const top3 = c.answers_top3.map((a) => (a.answer === '' ? '(no answer in the passage)' : a.answer));
      assert.deepEqual(shown, top3, `${variant}: answers shown on the page`);
      if (config.screenshot && variant === Object.keys(config.expected)[0]) {
        await page.screenshot({path: config.screenshot, fullPage: true});
      }
      // The header names the precision in words (not the scheme's raw 'int8-int8-dynamic').
      const line = await page.textContent('#model-line');
      assert.ok(!line.includes('int8-int8'), `${variant}: model line '${line}'`);
      assert.ok(line.includes(info.precision === 'fp32' ? 'float32' : 'int8 weights'), `${variant}: model line '${line}'`);
      // An empty question: the error is shown and the previous question's answers are gone.
      await page.fill('#question', '');
      await page.click('#go');
      await page.waitForFunction(() => document.querySelector('#status').textContent.includes('give a question'));
      assert.equal(await page.$$eval('#answers li', (els) => els.length), 0, `${variant}: stale answers left`);
      assert.equal(await page.textContent('#highlighted'), '', `${variant}: stale highlights left`);
    }
    assert.deepEqual(foreign, [], 'the page fetched something from another origin');
    assert.deepEqual(failed, [], 'requests the server could not answer');
  } finally {
    await browser.close();
    server.closeAllConnections();
    server.close();
  }
});
