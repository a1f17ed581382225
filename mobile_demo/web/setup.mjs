// Copy LiteRT.js (installed by `npm ci`) into the page's own folder, so nothing comes from a CDN:
//   litert/core/        @litertjs/core's ES module
//   litert/wasm-utils/  its one dependency
//   litert/wasm/        the Wasm runtimes (plain, threaded, JSPI, compat)
// Run: node setup.mjs
import {cpSync, mkdirSync, rmSync} from 'node:fs';
import {fileURLToPath} from 'node:url';

const here = fileURLToPath(new URL('.', import.meta.url));
const nm = `${here}node_modules/@litertjs/`;
rmSync(`${here}litert`, {recursive: true, force: true});
mkdirSync(`${here}litert`);
cpSync(`${nm}core/dist/index.js`, `${here}litert/core/index.js`);
cpSync(`${nm}wasm-utils/dist/index.js`, `${here}litert/wasm-utils/index.js`);
cpSync(`${nm}core/wasm`, `${here}litert/wasm`, {recursive: true});
console.log('LiteRT.js copied into litert/');
