// scripts/build.mjs (what `npm install` runs): with system packages missing and no root, it must
// stop and print the exact command that installs them, not half-build.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const BUILD = fileURLToPath(new URL('../../../scripts/build.mjs', import.meta.url));

test('without root and without the build tools, the build names what is missing and the apt-get command', () => {
  // A PATH holding only a shell: every tool the build looks for appears missing.
  const bin = mkdtempSync(join(tmpdir(), 'ambit-build-path-'));
  try {
    symlinkSync('/bin/sh', join(bin, 'sh'));
    // Found before PATH is narrowed: the child's PATH holds only the shell.
    const setpriv = spawnSync('sh', ['-c', 'command -v setpriv'], { encoding: 'utf8' }).stdout.trim();
    const asUser = process.getuid?.() === 0 ? [setpriv, '--reuid=65534', '--regid=65534', '--clear-groups', '--'] : [];
    const argv = [...asUser, process.execPath, BUILD, 'deps'];
    const r = spawnSync(argv[0]!, argv.slice(1), { encoding: 'utf8', env: { PATH: bin } });
    assert.equal(r.status, 1, r.stderr);
    assert.match(r.stderr, /missing system packages/);
    for (const pkg of ['clang', 'llvm', 'iproute2', 'nftables', 'util-linux']) assert.match(r.stderr, new RegExp(`package ${pkg}`));
    assert.match(r.stderr, /sudo apt-get update && sudo apt-get install -y --no-install-recommends clang llvm .*iproute2 nftables util-linux/);
  } finally {
    rmSync(bin, { recursive: true, force: true });
  }
});
