// Benchmark driver: keeps one phone page open in headless Chromium and times model runs inside it.
//   node bench/driver.mjs VARIANT EXPORT_DIR THREADS
// Prints "ready" once the model is compiled, then for each line "N" on stdin prints a JSON list of N
// in-page timings (ms, performance.now() around one LiteRT.js run: input copy, invoke, output copy).
// An empty line or end of input closes the browser. Used by benchmarks/bench_mobile_web.py.
import {createInterface} from 'node:readline';
import {chromium, devices} from 'playwright-core';
import {startServer} from '../serve.mjs';
import {CHROMIUM_FLAGS} from '../e2e/flags.mjs';

const [variant, dir, threads = '2'] = process.argv.slice(2);
const QUESTION = 'Who built the lighthouse?';
const {server, url} = await startServer(0, {[variant]: dir});
const browser = await chromium.launch({executablePath: '/usr/bin/chromium', args: CHROMIUM_FLAGS});
const page = await (await browser.newContext({...devices['Pixel 7']})).newPage();
await page.goto(`${url}?model=${variant}&threads=${threads}`);
const info = await page.evaluate(() => window.qaDemo.ready);
const passage = await page.$eval('#passage', (e) => e.value);
await page.evaluate(([q, c]) => window.qaDemo.timeModel(q, c, 3), [QUESTION, passage]);  // warm-up
console.log(`ready ${JSON.stringify(info)}`);
for await (const line of createInterface({input: process.stdin})) {
  if (!line.trim()) break;
  const times = await page.evaluate(([q, c, n]) => window.qaDemo.timeModel(q, c, n), [QUESTION, passage, Number(line)]);
  console.log(JSON.stringify(times));
}
await browser.close();
server.closeAllConnections();
server.close();
process.exit(0);
