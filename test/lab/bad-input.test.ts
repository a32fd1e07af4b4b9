// The CLI's handling of bad input, driven through bin/ambit as a user drives it: malformed lab
// files, an exhausted pod CIDR, name clashes, no root, a lab name that is taken, a lab that cannot
// get ready in time (rolled back), an interrupted `lab up` (removed by `lab down`), and lab
// commands aimed at pods or labs that do not exist. Whatever fails must say what is wrong and where,
// and leave nothing behind: no namespace, hosts file, state directory, pin or process.
//
// Each test uses its own lab name (t-bad-...); the file's `after` takes every one of them down.
import { after, before, describe, test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { chmodSync, existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { privilegedSkipReason } from '../support/env.js';
import { EchoConnection, FIXTURES, waitFor } from '../support/lab.js';
import { BPF_LABS_ROOT, LABS_DIR, labDir, paths, readState, type ProcessRecord } from '../../lab/state.js';
import { isOurs } from '../../lab/processes.js';
import { netnsName } from '../../lab/plan.js';
import { loadPlan, type LabStatus } from '../../lab/status.js';
import { netnsPath } from '../../lab/topology.js';
import { tcxQuery } from '../../native/index.js';

const skip = privilegedSkipReason();
const ROOT = fileURLToPath(new URL('../../..', import.meta.url));
const AMBIT = join(ROOT, 'bin/ambit');
const NOBODY = ['--reuid=65534', '--regid=65534', '--clear-groups'];

interface CliResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** A running `bin/ambit ARGS`, and its result once it exits. */
function startAmbit(args: string[], opts: { env?: Record<string, string>; prefix?: string[] } = {}): { child: ChildProcess; done: Promise<CliResult> } {
  const argv = [...(opts.prefix ?? []), AMBIT, ...args];
  const child = spawn(argv[0]!, argv.slice(1), { cwd: ROOT, env: { ...process.env, ...opts.env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout!.setEncoding('utf8').on('data', (c: string) => (stdout += c));
  child.stderr!.setEncoding('utf8').on('data', (c: string) => (stderr += c));
  const done = new Promise<CliResult>((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (code, signal) => resolve({ code, signal, stdout, stderr }));
  });
  return { child, done };
}

const children = new Set<ChildProcess>();

async function ambit(args: string[], opts: { env?: Record<string, string>; prefix?: string[] } = {}): Promise<CliResult> {
  const { child, done } = startAmbit(args, opts);
  children.add(child);
  try {
    return await done;
  } finally {
    children.delete(child);
  }
}

/** What a failed command must look like: non-zero exit, the error code, and no stack trace. */
function assertFailed(r: CliResult, code: string): void {
  assert.notEqual(r.code, 0, `expected a failure, got exit 0\nstdout: ${r.stdout}`);
  assert.match(r.stderr, new RegExp(`\\[${code}\\]`), `stderr carries ${code}:\n${r.stderr}`);
  assert.doesNotMatch(r.stderr, /\n\s+at .+:\d+:\d+/, `a user error, not a stack trace:\n${r.stderr}`);
}

const labNames = new Set<string>();
const tempDirs: string[] = [];

/** Writes a lab file into a fresh temp directory (readable by everyone, for the not-root test). */
function labFile(name: string, text: string): string {
  labNames.add(name);
  const dir = mkdtempSync(join(tmpdir(), `ambit-${name}-`));
  tempDirs.push(dir);
  chmodSync(dir, 0o755);
  const file = join(dir, 'lab.yaml');
  writeFileSync(file, text, { mode: 0o644 });
  return file;
}

/** test/fixtures/one-node.yaml under another lab name. */
function oneNodeLab(name: string): string {
  const text = readFileSync(join(FIXTURES, 'one-node.yaml'), 'utf8').replace(/^(kind: Lab\nmetadata:\n\s+name: )\S+/m, `$1${name}`);
  assert.match(text, new RegExp(`name: ${name}\\n`));
  return labFile(name, text);
}

/** A one-node Lab document (document 1) followed by the given documents. */
function labWith(name: string, ...docs: string[]): string {
  const head = `apiVersion: ambit.dev/v1alpha1\nkind: Lab\nmetadata:\n  name: ${name}\nspec:\n  nodes:\n    - node-1\n`;
  return [head, ...docs].join('---\n');
}

const DEMO_NAMESPACE = 'apiVersion: v1\nkind: Namespace\nmetadata:\n  name: demo\n';

/** Everything of lab `name` that still exists: namespaces, hosts files, state, pins, processes. */
function leftovers(name: string, processes: ProcessRecord[] = []): string[] {
  const prefix = `${netnsName(name)}_`;
  const found: string[] = [];
  const netns = execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' })
    .split('\n')
    .map((l) => l.split(' ')[0]!)
    .filter((n) => n.startsWith(prefix));
  found.push(...netns.map((n) => `namespace ${n}`));
  if (existsSync('/etc/netns')) found.push(...readdirSync('/etc/netns').filter((n) => n.startsWith(prefix)).map((n) => `/etc/netns/${n}`));
  if (existsSync(labDir(name))) found.push(`state ${labDir(name)}`);
  if (existsSync(join(BPF_LABS_ROOT, name))) found.push(`pins ${join(BPF_LABS_ROOT, name)}`);
  for (const p of processes) if (isOurs(p)) found.push(`${p.component} of ${p.node} (pid ${p.pid})`);
  return found;
}

/** Processes still running a helper command (ip, nsenter, nft, sysctl) on the lab's namespaces. */
function helpersRunning(name: string): number[] {
  const prefix = `${netnsName(name)}_`;
  const pids: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const cmdline = readFileSync(`/proc/${entry}/cmdline`, 'utf8');
      if (cmdline.includes(prefix) && !cmdline.includes('dist/cli/main.js')) pids.push(Number(entry));
    } catch {
      // Exited meanwhile.
    }
  }
  return pids;
}

/** Every process record the state file has shown so far, polled while `lab up` runs. */
function watchState(name: string): { processes: Map<number, ProcessRecord>; netns: Set<string>; etcNetns: Set<string>; stop: () => void } {
  const processes = new Map<number, ProcessRecord>();
  const netns = new Set<string>();
  const etcNetns = new Set<string>();
  const poll = () => {
    const s = readState(name);
    for (const p of s?.processes ?? []) processes.set(p.pid, p);
    for (const n of s?.netns ?? []) netns.add(n);
    for (const n of s?.etcNetns ?? []) etcNetns.add(n);
  };
  const timer = setInterval(poll, 10);
  return { processes, netns, etcNetns, stop: () => (clearInterval(timer), poll()) };
}

const failedLogs = (name: string) => join(LABS_DIR, `.failed-${name}-logs`);

async function status(name: string): Promise<LabStatus> {
  const r = await ambit(['lab', 'status', name, '-o', 'json']);
  assert.equal(r.code, 0, r.stderr);
  return JSON.parse(r.stdout) as LabStatus;
}

/** An echo round trip from mesh/client to mesh/server of a running one-node lab, through its ztunnel. */
async function assertLabWorks(name: string): Promise<void> {
  const plan = loadPlan(name);
  const client = plan.pods.find((p) => p.key === 'mesh/client')!;
  const server = plan.pods.find((p) => p.key === 'mesh/server')!;
  const c = await EchoConnection.open(client, server.ip, 8080);
  try {
    assert.equal(c.identity.pod, 'server');
    await c.roundTrip('still here');
  } finally {
    c.close();
  }
  await waitFor(`the ztunnel of lab ${name} to log the connection`, () =>
    readFileSync(paths.log(name, 'ztunnel', 'node-1'), 'utf8')
      .split('\n')
      .some((l) => l.includes('"target":"access"') && l.includes(`"src.addr":"${c.local}"`)),
  );
}

describe('ambit lab: bad input', { skip }, () => {
  after(async () => {
    for (const child of children) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    for (const name of labNames) {
      if (leftovers(name).length > 0) await ambit(['lab', 'down', name]);
      rmSync(failedLogs(name), { recursive: true, force: true });
    }
    for (const dir of tempDirs) rmSync(dir, { recursive: true, force: true });
  });

  describe('a malformed lab file names the file, the document and the field, and creates nothing', () => {
    const cases: { what: string; name: string; docs: string[]; expect: string[] }[] = [
      {
        what: 'a YAML syntax error',
        name: 't-bad-yaml',
        docs: [DEMO_NAMESPACE, 'apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\n  namespace: demo\n spec: [\n'],
        expect: ['document 3', 'YAML syntax error', 'line 19'],
      },
      {
        what: 'a Pod with a non-numeric containerPort',
        name: 't-bad-cport',
        docs: [DEMO_NAMESPACE, 'apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\n  namespace: demo\nspec:\n  containers:\n    - name: web\n      ports:\n        - containerPort: http\n'],
        expect: ['document 3 (Pod demo/web): spec.containers[0].ports[0].containerPort', '"http"'],
      },
      {
        what: 'a Service whose targetPort is out of range',
        name: 't-bad-tport',
        docs: [DEMO_NAMESPACE, 'apiVersion: v1\nkind: Service\nmetadata:\n  name: web\n  namespace: demo\nspec:\n  selector:\n    app: web\n  ports:\n    - port: 80\n      targetPort: 70000\n'],
        expect: ['document 3 (Service demo/web): spec.ports[0].targetPort', '70000'],
      },
      {
        what: 'a Service whose targetPort is not a valid port name',
        name: 't-bad-tname',
        docs: [DEMO_NAMESPACE, 'apiVersion: v1\nkind: Service\nmetadata:\n  name: web\n  namespace: demo\nspec:\n  ports:\n    - name: http\n      port: 80\n      targetPort: HTTP_PORT\n'],
        expect: ['document 3 (Service demo/web): spec.ports[0].targetPort', '"HTTP_PORT"'],
      },
      {
        what: 'a document without kind',
        name: 't-bad-kind',
        docs: [DEMO_NAMESPACE, 'apiVersion: v1\nmetadata:\n  name: web\n  namespace: demo\nspec:\n  containers:\n    - name: web\n'],
        expect: ['document 3', 'kind: is required'],
      },
    ];
    for (const c of cases) {
      test(c.what, async () => {
        const file = labFile(c.name, labWith(c.name, ...c.docs));
        const r = await ambit(['lab', 'up', file]);
        assertFailed(r, 'AMBIT_CONFIG_INVALID');
        assert.ok(r.stderr.includes(`${file}: `), `stderr names the file:\n${r.stderr}`);
        for (const e of c.expect) assert.ok(r.stderr.includes(e), `stderr says ${JSON.stringify(e)}:\n${r.stderr}`);
        assert.deepEqual(leftovers(c.name), []);
      });
    }

    for (const [what, spec] of [
      ['a Lab document without nodes', 'spec:\n  serviceCIDR: 10.96.0.0/16\n'],
      ['a Lab document with an empty node list', 'spec:\n  nodes: []\n'],
    ] as const) {
      test(what, async () => {
        const name = what.includes('empty') ? 't-bad-nodes0' : 't-bad-nonodes';
        const file = labFile(name, `apiVersion: ambit.dev/v1alpha1\nkind: Lab\nmetadata:\n  name: ${name}\n${spec}---\n${DEMO_NAMESPACE}`);
        const r = await ambit(['lab', 'up', file]);
        assertFailed(r, 'AMBIT_CONFIG_INVALID');
        assert.ok(r.stderr.includes(`${file}: document 1 (Lab ${name}): spec.nodes: `), `stderr names the file, document and field:\n${r.stderr}`);
        assert.deepEqual(leftovers(name), []);
      });
    }

    test('a lab file that does not exist', async () => {
      const dir = mkdtempSync(join(tmpdir(), 'ambit-t-bad-nofile-'));
      tempDirs.push(dir);
      const file = join(dir, 'typo.yaml');
      const r = await ambit(['lab', 'up', file]);
      assertFailed(r, 'AMBIT_CONFIG_INVALID');
      assert.ok(r.stderr.includes(`${file}: cannot read`), `names the file:\n${r.stderr}`);
    });
  });

  test('a pod CIDR with fewer addresses than pods fails with AMBIT_CIDR_EXHAUSTED, naming the node and the CIDR', async () => {
    const name = 't-bad-cidr';
    // A /29 has .3-.6 for pods (.1 is the node's gateway, .2 its ztunnel): five replicas do not fit.
    const file = labFile(
      name,
      `apiVersion: ambit.dev/v1alpha1\nkind: Lab\nmetadata:\n  name: ${name}\nspec:\n  nodes:\n    - name: node-1\n      podCIDR: 10.244.1.0/29\n---\n` +
        'apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: 5\n  selector:\n    matchLabels:\n      app: web\n' +
        '  template:\n    metadata:\n      labels:\n        app: web\n    spec:\n      containers:\n        - name: web\n',
    );
    const r = await ambit(['lab', 'up', file]);
    assertFailed(r, 'AMBIT_CIDR_EXHAUSTED');
    for (const e of [file, 'node-1', '10.244.1.0/29', 'spec.nodes[0].podCIDR', '5 pods']) {
      assert.ok(r.stderr.includes(e), `stderr says ${JSON.stringify(e)}:\n${r.stderr}`);
    }
    assert.deepEqual(leftovers(name), []);
  });

  describe('a name clash names both documents and creates nothing', () => {
    test('two Pods with the same namespace and name', async () => {
      const name = 't-bad-clash';
      const pod = (container: string) => `apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\n  namespace: demo\nspec:\n  containers:\n    - name: ${container}\n`;
      const file = labFile(name, labWith(name, DEMO_NAMESPACE, pod('a'), pod('b')));
      const r = await ambit(['lab', 'up', file]);
      assertFailed(r, 'AMBIT_CONFIG_INVALID');
      assert.ok(r.stderr.includes(`${file}: document 4 (Pod demo/web)`), `names the second document:\n${r.stderr}`);
      assert.match(r.stderr, /document 3\b/, `names the first document:\n${r.stderr}`);
      assert.match(r.stderr, /name clash/);
      assert.deepEqual(leftovers(name), []);
    });

    test("a Deployment whose replica would take a declared Pod's name", async () => {
      const name = 't-bad-clashd';
      const deployment =
        'apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n  namespace: demo\nspec:\n  replicas: 2\n  selector:\n    matchLabels:\n      app: web\n' +
        '  template:\n    metadata:\n      labels:\n        app: web\n    spec:\n      containers:\n        - name: web\n';
      const pod = 'apiVersion: v1\nkind: Pod\nmetadata:\n  name: web-1\n  namespace: demo\nspec:\n  containers:\n    - name: web\n';
      // The Deployment comes first: the clash is found only once every document is read.
      const file = labFile(name, labWith(name, DEMO_NAMESPACE, deployment, pod));
      const r = await ambit(['lab', 'up', file]);
      assertFailed(r, 'AMBIT_CONFIG_INVALID');
      assert.ok(r.stderr.includes(`${file}: document 3 (Deployment demo/web)`), `names the Deployment's document:\n${r.stderr}`);
      assert.match(r.stderr, /document 4\b/, `names the Pod's document:\n${r.stderr}`);
      assert.ok(r.stderr.includes('demo/web-1'), `names the clashing pod:\n${r.stderr}`);
      assert.deepEqual(leftovers(name), []);
    });
  });

  test('without root, lab up says it needs root and creates nothing', async (t: TestContext) => {
    const name = 't-bad-noroot';
    const file = oneNodeLab(name);
    // The checkout must be usable by an unprivileged user for this to show anything.
    const probe = await ambit(['--help'], { prefix: ['setpriv', ...NOBODY, '--'], env: { HOME: tmpdir() } }).catch((err: Error) => ({ code: -1, stderr: err.message }) as CliResult);
    if (probe.code !== 0) {
      t.skip(`the CLI cannot run as uid 65534 here (setpriv missing or the checkout is not readable): ${probe.stderr.trim().split('\n')[0]}`);
      return;
    }
    for (const args of [['lab', 'up', file], ['lab', 'down', name]]) {
      const r = await ambit(args, { prefix: ['setpriv', ...NOBODY, '--'], env: { HOME: tmpdir() } });
      assertFailed(r, 'AMBIT_NOT_ROOT');
      assert.match(r.stderr, new RegExp(`ambit ${args.slice(0, 2).join(' ')} needs root`));
    }
    assert.deepEqual(leftovers(name), []);
  });

  describe('with a lab running', () => {
    const name = 't-bad-live';
    let file: string;

    before(async () => {
      file = oneNodeLab(name);
      await ambit(['lab', 'down', name]); // an interrupted earlier run
      const r = await ambit(['lab', 'up', file]);
      assert.equal(r.code, 0, r.stderr);
    });

    test('a second lab of the same name is refused (AMBIT_LAB_EXISTS, mentions --replace) and the first keeps working', async () => {
      const before = await status(name);
      const r = await ambit(['lab', 'up', file]);
      assertFailed(r, 'AMBIT_LAB_EXISTS');
      assert.ok(r.stderr.includes(`'${name}'`), `names the lab:\n${r.stderr}`);
      assert.match(r.stderr, /--replace/);

      const now = await status(name);
      assert.deepEqual(
        now.components.map((c) => [c.component, c.pid, c.running]),
        before.components.map((c) => [c.component, c.pid, true]),
        'the same processes still run',
      );
      await assertLabWorks(name);
    });

    test('lab exec with an unknown pod says so and lists the pods', async () => {
      const r = await ambit(['lab', 'exec', '--lab', name, 'mesh/nobody', '--', 'true']);
      assertFailed(r, 'AMBIT_LAB_NOT_FOUND');
      for (const e of ["'mesh/nobody'", 'mesh/client', 'mesh/server']) assert.ok(r.stderr.includes(e), `stderr says ${e}:\n${r.stderr}`);
      const ok = await ambit(['lab', 'exec', '--lab', name, 'mesh/client', '--', 'true']);
      assert.equal(ok.code, 0, `a known pod works: ${ok.stderr}`);
    });

    test('--replace replaces the lab: new processes, no duplicate links, and it works', async () => {
      const old = await status(name);
      const oldRecords = readState(name)!.processes;
      const r = await ambit(['lab', 'up', file, '--replace']);
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout, new RegExp(`lab ${name} is ready`));

      const now = await status(name);
      assert.equal(now.phase, 'ready');
      assert.ok(now.components.every((c) => c.running), 'every new component runs');
      const oldPids = new Set(old.components.map((c) => c.pid));
      assert.ok(now.components.every((c) => !oldPids.has(c.pid)), 'the components are new processes');
      assert.deepEqual(oldRecords.filter((p) => isOurs(p)).map((p) => p.pid), [], 'the old processes are gone');

      const plan = loadPlan(name);
      const node = plan.nodes[0]!;
      for (const pod of plan.pods) {
        for (const direction of ['ingress', 'egress'] as const) {
          assert.equal(tcxQuery({ netns: netnsPath(node.netns), name: pod.hostVeth }, direction).length, 1, `one program on ${pod.key}'s ${direction}`);
        }
      }
      await assertLabWorks(name);
    });
  });

  test(
    'two lab up of the same name at once: one builds the lab, the other is refused, and the lab works',
    async () => {
      const name = 't-bad-race';
      const file = oneNodeLab(name);
      await ambit(['lab', 'down', name]);
      const results = await Promise.all([ambit(['lab', 'up', file]), ambit(['lab', 'up', file])]);
      const ok = results.filter((r) => r.code === 0);
      const refused = results.filter((r) => r.code !== 0);
      try {
        assert.equal(ok.length, 1, `exactly one lab up succeeds:\n${results.map((r) => r.stderr).join('\n')}`);
        assertFailed(refused[0]!, 'AMBIT_LAB_EXISTS');
        await assertLabWorks(name);
      } finally {
        await ambit(['lab', 'down', name]);
        rmSync(failedLogs(name), { recursive: true, force: true });
      }
    },
  );

  test('lab status and lab exec say when the lab does not exist, or when there is no lab at all', async () => {
    const named = await ambit(['lab', 'status', 't-bad-absent']);
    assertFailed(named, 'AMBIT_LAB_NOT_FOUND');
    assert.match(named.stderr, /no lab named 't-bad-absent'/);

    // A machine with no lab at all: an empty state directory of its own (other labs may run here).
    const empty = mkdtempSync(join(tmpdir(), 'ambit-nolabs-'));
    tempDirs.push(empty);
    for (const args of [['lab', 'status'], ['lab', 'exec', 'mesh/client', '--', 'true']]) {
      const r = await ambit(args, { env: { AMBIT_LAB_DIR: empty } });
      assertFailed(r, 'AMBIT_LAB_NOT_FOUND');
      assert.match(r.stderr, /no lab is running: start one with 'ambit lab up FILE'/);
    }
  });

  test('a lab that is not ready in time is rolled back completely (AMBIT_LAB_UP_FAILED)', async () => {
    const name = 't-bad-rollback';
    const file = oneNodeLab(name);
    await ambit(['lab', 'down', name]);
    const seen = watchState(name);
    let r: CliResult;
    try {
      r = await ambit(['lab', 'up', file, '--timeout', '0.2']);
    } finally {
      seen.stop();
    }
    try {
      assertFailed(r, 'AMBIT_LAB_UP_FAILED');
      assert.match(r.stderr, new RegExp(`lab ${name} failed to come up and was rolled back`));
      assert.match(r.stderr, /not ready after/);
      // It got as far as starting processes (the control plane first) before the timeout hit.
      assert.ok([...seen.processes.values()].some((p) => p.component === 'controlplane'), 'the control plane had been started');
      assert.ok(seen.netns.size >= 5, `namespaces were created: ${[...seen.netns].join(', ')}`);

      assert.deepEqual(leftovers(name, [...seen.processes.values()]), []);
      for (const ns of seen.netns) assert.ok(!existsSync(netnsPath(ns)), `${ns} is gone`);
      for (const ns of seen.etcNetns) assert.ok(!existsSync(paths.etcNetns(ns)), `/etc/netns/${ns} is gone`);

      // The logs of the failed attempt are kept for the user, where the message says.
      const kept = /\(logs kept in (.+)\)/.exec(r.stderr)?.[1];
      assert.equal(kept, failedLogs(name));
      assert.ok(existsSync(join(kept, 'controlplane.log')), "the control plane's log is kept");
    } finally {
      rmSync(failedLogs(name), { recursive: true, force: true });
    }
  });

  describe('an interrupted lab up is removed completely by lab down', () => {
    /** Starts `lab up`, SIGKILLs it once `when` holds; returns its file and the processes it had started. */
    async function interrupt(name: string, when: () => boolean): Promise<{ file: string; processes: ProcessRecord[] }> {
      const file = oneNodeLab(name);
      await ambit(['lab', 'down', name]);
      const seen = watchState(name);
      const { child, done } = startAmbit(['lab', 'up', file]);
      children.add(child);
      try {
        // Polled tightly: the moment to interrupt may last only some milliseconds.
        const deadline = Date.now() + 30_000;
        while (!when()) {
          assert.ok(Date.now() < deadline && child.exitCode === null, `lab up of ${name} never got that far`);
          await new Promise((r) => setTimeout(r, 2));
        }
        child.kill('SIGKILL');
        const r = await done;
        assert.equal(r.signal, 'SIGKILL', `lab up was killed before it finished:\n${r.stdout}${r.stderr}`);
      } finally {
        children.delete(child);
        seen.stop();
      }
      // Commands the killed CLI had in flight (ip netns add, ...) finish on their own.
      await waitFor('in-flight helper commands to finish', () => helpersRunning(name).length === 0);
      return { file, processes: [...seen.processes.values()] };
    }

    async function assertDownRemovesAll(name: string, processes: ProcessRecord[]): Promise<void> {
      assert.notDeepEqual(leftovers(name, processes), [], 'the interrupted lab left something to remove');
      const r = await ambit(['lab', 'down', name]);
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout, new RegExp(`lab ${name} removed`));
      assert.deepEqual(leftovers(name, processes), []);
    }

    test('killed while it creates namespaces', async () => {
      const name = 't-bad-kill-ns';
      const prefix = `${netnsName(name)}_`;
      const { file, processes } = await interrupt(name, () => existsSync('/run/netns') && readdirSync('/run/netns').some((n) => n.startsWith(prefix)));
      assert.deepEqual(processes, [], 'killed before it started any process');
      assert.deepEqual(readState(name)?.netns, [], 'the state file does not list the namespaces yet: lab down must find them by name');
      // A half-built lab still holds its name.
      const again = await ambit(['lab', 'up', file]);
      assertFailed(again, 'AMBIT_LAB_EXISTS');
      await assertDownRemovesAll(name, processes);
    });

    test('killed after it started the lab processes', async () => {
      const name = 't-bad-kill-proc';
      // The control plane, then the node's ztunnel, workloads and agent.
      const { processes } = await interrupt(name, () => (readState(name)?.processes.length ?? 0) >= 4);
      assert.equal(processes.length, 4);
      assert.ok(processes.some((p) => isOurs(p)), 'the processes outlive the killed CLI');
      await assertDownRemovesAll(name, processes);
    });
  });
});
