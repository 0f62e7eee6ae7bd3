// Builds dist/{{name}}.wasm: esbuild bundles src/index.js, the SDK and apache-arrow into
// one ES module, then componentize-js turns it into a WebAssembly component of the
// `source` world of wit/connector.wit.
import { mkdir, stat, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { componentize } from '@bytecodealliance/componentize-js';
import { build } from 'esbuild';

// componentize-js 0.23 reads the WIT through @bytecodealliance/preview2-shim, whose
// filesystem must preopen `/` (0.25.x does; 0.26 preopens nothing): that is why
// package.json pins preview2-shim 0.25.0.
const NAME = '{{name}}';
const WORLD = 'source';
const root = dirname(fileURLToPath(import.meta.url));
const bundle = join(root, 'build', 'bundle.js');
const out = join(root, 'dist', `${NAME}.wasm`);

await build({
  entryPoints: [join(root, 'src', 'index.js')],
  bundle: true,
  format: 'esm',
  platform: 'neutral',
  target: 'es2022',
  mainFields: ['module', 'main'],
  // Imports of the component (the agent's host functions) stay imports.
  external: ['culvert:*'],
  outfile: bundle,
  logLevel: 'warning',
});

const started = Date.now();
const { component } = await componentize({
  sourcePath: bundle,
  witPath: join(root, 'wit'),
  worldName: WORLD,
  // The agent's sandbox offers WASI without wasi:http; HTTP goes through host.http-send.
  disableFeatures: ['http', 'fetch-event'],
});
await mkdir(dirname(out), { recursive: true });
await writeFile(out, component);
const { size } = await stat(out);
console.log(`built dist/${NAME}.wasm (${(size / 1048576).toFixed(1)} MiB, componentize ${((Date.now() - started) / 1000).toFixed(1)} s)`);
