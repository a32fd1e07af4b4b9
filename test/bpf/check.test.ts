// `ambit check` through the CLI: on this machine every check passes with a real probe, and a
// missing capability is reported with its fix and a failing exit code.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { privilegedSkipReason } from '../support/env.js';

const AMBIT = fileURLToPath(new URL('../../../bin/ambit', import.meta.url));
const skip = privilegedSkipReason();

test('ambit check passes here, with the eBPF programs loaded and a tcx link attached for real', { skip }, () => {
  const r = spawnSync(process.execPath, [AMBIT, 'check'], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stdout + r.stderr);
  for (const line of ['kernel', 'BTF', 'bpffs', 'cgroup v2', 'capabilities', 'redirection programs pass the verifier', 'tcx links attach']) {
    assert.match(r.stdout, new RegExp(`✔ .*${line}`), line);
  }
  assert.doesNotMatch(r.stdout, /✘/);
});

test('without capabilities, check fails and says how to fix it', { skip }, () => {
  const r = spawnSync('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', '--', process.execPath, AMBIT, 'check'], { encoding: 'utf8' });
  assert.equal(r.status, 1, r.stdout + r.stderr);
  assert.match(r.stdout, /✘ missing CAP_NET_ADMIN, CAP_SYS_ADMIN, CAP_BPF\n\s+hint: run as root/);
  assert.match(r.stdout, /Some checks failed/);
});
