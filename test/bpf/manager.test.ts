// The agent's reconciler (agent/redirection/manager.ts) against the real kernel and real devices:
// a "node" namespace with pod veths and /32 routes, and a ztunnel namespace behind its own veth.
// Each reconcile runs in test/support/manager-worker.ts inside the node namespace, one agent
// lifetime per run, the pins carrying the state from one to the next.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { Datapath } from '../../agent/redirection/datapath.js';
import { POD_F_ENABLED } from '../../bpf/maps.js';
import type { Namespace, Pod } from '../../mesh/k8s/types.js';
import { ensureBpffs } from '../../agent/redirection/bpffs.js';
import { privilegedSkipReason } from '../support/env.js';
import { TestNetns } from '../support/netns.js';
import type { ManagerWorkerOutput } from '../support/manager-worker.js';

const skip = privilegedSkipReason();
const WORKER = fileURLToPath(new URL('../support/manager-worker.js', import.meta.url));
const ROOT = `/sys/fs/bpf/ambit/test-manager-${process.pid}`;

const mesh: Namespace = { apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'mesh', labels: { 'istio.io/dataplane-mode': 'ambient' } } };

function pod(name: string, ip: string, extra: { phase?: string; labels?: Record<string, string> } = {}): Pod {
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name, namespace: 'mesh', ...(extra.labels ? { labels: extra.labels } : {}) },
    spec: { nodeName: 'node-1', containers: [{ name: 'app' }] },
    status: { podIP: ip, ...(extra.phase ? { phase: extra.phase } : {}) },
  };
}

describe('the reconciler (RedirectionManager) on real devices', { skip }, () => {
  let node: TestNetns;
  let zt: TestNetns;

  before(() => {
    ensureBpffs();
    node = new TestNetns('mgrnode');
    zt = new TestNetns('mgrzt');
    node.ip('link', 'add', 'ztunnel0', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', zt.name);
    node.ip('link', 'set', 'ztunnel0', 'up');
    node.ip('route', 'add', '10.244.1.2/32', 'dev', 'ztunnel0');
    zt.ip('addr', 'add', '10.244.1.2/32', 'dev', 'eth0');
    zt.ip('link', 'set', 'eth0', 'up');
  });

  after(() => {
    Datapath.destroy(ROOT);
    node?.delete();
    zt?.delete();
  });

  /** A pod's host-side veth with the /32 route a ptp CNI installs; returns its ifindex. */
  function veth(name: string, ip: string): number {
    node.ip('link', 'add', name, 'type', 'veth', 'peer', 'name', `${name}p`);
    node.ip('link', 'set', name, 'up');
    node.ip('route', 'add', `${ip}/32`, 'dev', name);
    return node.json<{ ifindex: number }>('link', 'show', name)[0]!.ifindex;
  }

  function reconcile(pods: Pod[]): ManagerWorkerOutput {
    const out = execFileSync('nsenter', [`--net=${node.path}`, '--', process.execPath, WORKER, ROOT, zt.path, JSON.stringify({ namespaces: [mesh], pods })], {
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    return JSON.parse(out.trim().split('\n').pop()!) as ManagerWorkerOutput;
  }

  const ztIfindex = () => node.json<{ ifindex: number }>('link', 'show', 'ztunnel0')[0]!.ifindex;

  test('an enrolled pod gets its veth and both maps', () => {
    const a = veth('vpa', '10.244.1.3');
    const out = reconcile([pod('a', '10.244.1.3')]);
    assert.deepEqual(out.result, [{ key: 'mesh/a', ifindex: a, enrolled: true, state: 'enabled' }]);
    assert.deepEqual(out.pods, [[a, { ip: '10.244.1.3', flags: POD_F_ENABLED }]]);
    assert.deepEqual(out.ips, [['10.244.1.3', POD_F_ENABLED]]);
  });

  test("a reused pod IP keeps its pods_by_ip entry when the old pod's veth goes", () => {
    node.ip('link', 'del', 'vpa');
    const b = veth('vpb', '10.244.1.3');
    const out = reconcile([pod('b', '10.244.1.3', { labels: { 'istio.io/dataplane-mode': 'none' } })]);
    assert.deepEqual(out.pods, [[b, { ip: '10.244.1.3', flags: 0 }]], 'only the new veth');
    assert.deepEqual(out.ips, [['10.244.1.3', 0]], "the IP is the new pod's, with its flags");
  });

  test('a finished pod does not take the state of a running pod with the same IP', () => {
    const c = veth('vpc', '10.244.1.4');
    const out = reconcile([pod('b', '10.244.1.3', { labels: { 'istio.io/dataplane-mode': 'none' } }), pod('c', '10.244.1.4'), pod('done', '10.244.1.4', { phase: 'Succeeded' })]);
    assert.ok(!out.result.some((r) => r.key === 'mesh/done'), 'the finished pod is skipped');
    assert.deepEqual(out.pods.find(([i]) => i === c)?.[1], { ip: '10.244.1.4', flags: POD_F_ENABLED });
  });

  test("a pod claiming ztunnel's own address is never captured", () => {
    const out = reconcile([pod('b', '10.244.1.3', { labels: { 'istio.io/dataplane-mode': 'none' } }), pod('c', '10.244.1.4'), pod('impostor', '10.244.1.2')]);
    const impostor = out.result.find((r) => r.key === 'mesh/impostor')!;
    assert.match(impostor.error ?? '', /ztunnel's own veth/);
    assert.ok(!out.pods.some(([i]) => i === ztIfindex()), "ztunnel's veth has no pod entry");
  });

  test('a veth whose pod left the view keeps its capture until the veth is gone', () => {
    const c = node.json<{ ifindex: number }>('link', 'show', 'vpc')[0]!.ifindex;
    let out = reconcile([pod('b', '10.244.1.3', { labels: { 'istio.io/dataplane-mode': 'none' } })]);
    assert.deepEqual(out.pods.find(([i]) => i === c)?.[1], { ip: '10.244.1.4', flags: POD_F_ENABLED }, 'kept, still enabled');
    assert.ok(out.ips.some(([ip, f]) => ip === '10.244.1.4' && f === POD_F_ENABLED));
    node.ip('link', 'del', 'vpc');
    out = reconcile([pod('b', '10.244.1.3', { labels: { 'istio.io/dataplane-mode': 'none' } })]);
    assert.ok(!out.pods.some(([i]) => i === c), 'removed once the veth is gone');
    assert.ok(!out.ips.some(([ip]) => ip === '10.244.1.4'));
  });
});
