#!/usr/bin/env node
// `npm run bench -- NAME`: runs dist/test/bench/NAME.js (built by npm install / npm run build).
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const dir = join(fileURLToPath(new URL('.', import.meta.url)), '..', 'dist/test/bench');
const names = existsSync(dir) ? readdirSync(dir).filter((f) => f.endsWith('.js')).map((f) => f.slice(0, -3)) : [];
const name = process.argv[2];
if (!name || !names.includes(name)) {
  console.error(`usage: npm run bench -- NAME   (benchmarks: ${names.join(', ') || 'none built: run npm install'})`);
  process.exit(2);
}
const { main } = await import(join(dir, `${name}.js`));
await main();
