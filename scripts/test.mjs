#!/usr/bin/env node
// Runs the test suites from dist/ in a fixed order (unit, bpf, lab, e2e), one file at a time:
// the lab suites build namespaces and load eBPF, and must not run beside each other.
// `npm test -- PATTERN...` runs only the files whose path contains one of the patterns.
import { readdirSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const root = join(fileURLToPath(new URL('.', import.meta.url)), '..');
const order = ['unit', 'bpf', 'lab', 'e2e'];

function find(dir) {
  let out = [];
  for (const name of readdirSync(dir).sort()) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) out = out.concat(find(p));
    else if (name.endsWith('.test.js')) out.push(p);
  }
  return out;
}

const base = join(root, 'dist/test');
const patterns = process.argv.slice(2);
const files = find(base)
  .filter((f) => patterns.length === 0 || patterns.some((p) => f.includes(p)))
  .sort((a, b) => {
    const rank = (f) => order.indexOf(relative(base, f).split('/')[0]);
    return rank(a) - rank(b) || a.localeCompare(b);
  });
if (files.length === 0) {
  console.error(`no test files match ${patterns.join(' ')}`);
  process.exit(1);
}
const r = spawnSync(process.execPath, ['--test', '--test-concurrency=1', '--test-timeout=300000', ...files], { stdio: 'inherit', cwd: root });
process.exit(r.status ?? 1);
