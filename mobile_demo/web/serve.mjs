// A static server for the demo on the loopback address only, with the headers that make the page
// cross-origin isolated (COOP/COEP), which LiteRT.js's threaded Wasm runtime needs (SharedArrayBuffer).
//   node serve.mjs [port]      (default 8377; port 0 picks a free one)
// Exported: startServer(port, models) -> Promise<{server, url}> for the end-to-end test; `models` maps a
// name to an export folder served as model/<name>/ (default: the page's own model/ folder).
import {createServer} from 'node:http';
import {createReadStream, statSync} from 'node:fs';
import {extname, normalize, join} from 'node:path';
import {fileURLToPath} from 'node:url';

const root = fileURLToPath(new URL('.', import.meta.url));
const TYPES = {'.html': 'text/html; charset=utf-8', '.js': 'text/javascript; charset=utf-8', '.mjs': 'text/javascript',
  '.css': 'text/css', '.json': 'application/json', '.wasm': 'application/wasm', '.tflite': 'application/octet-stream',
  '.png': 'image/png'};

/** The file a URL path names: under the page's folder, or in an export folder given for model/<name>/. */
function resolve(path, models) {
  const m = /^\/model\/([A-Za-z0-9_-]+)\/([^/]+)$/.exec(path);
  if (m && models[m[1]]) return join(models[m[1]], m[2]);
  const file = join(root, path.endsWith('/') ? `${path}index.html` : path);
  return file.startsWith(root) && !path.includes('node_modules') ? file : null;
}

function handle(req, res, models) {
  const path = normalize(decodeURIComponent(new URL(req.url, 'http://x').pathname));
  const file = resolve(path, models);
  let size = -1;
  try {
    if (file && statSync(file).isFile()) size = statSync(file).size;
  } catch { /* missing */ }
  const headers = {'Cross-Origin-Opener-Policy': 'same-origin', 'Cross-Origin-Embedder-Policy': 'require-corp',
    'Cross-Origin-Resource-Policy': 'same-origin', 'Cache-Control': 'no-store'};
  if (size < 0) {
    res.writeHead(404, {...headers, 'Content-Type': 'text/plain'});
    res.end('not found\n');
    return;
  }
  res.writeHead(200, {...headers, 'Content-Type': TYPES[extname(file)] || 'application/octet-stream',
    'Content-Length': size});
  createReadStream(file).pipe(res);
}

export function startServer(port = 8377, models = {}) {
  return new Promise((resolve, reject) => {
    const server = createServer((req, res) => handle(req, res, models));
    server.on('error', reject);
    server.listen(port, '127.0.0.1', () => resolve({server, url: `http://127.0.0.1:${server.address().port}/`}));
  });
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const {url} = await startServer(Number(process.argv[2] ?? 8377));
  console.log(`serving ${root} at ${url}`);
}
