// The node's pinned eBPF state (agent/redirection/datapath.ts) against the real kernel: what an
// agent pins, what survives it, what its restart adopts and what it throws away.
//
// Every pin lives under /sys/fs/bpf/ambit/test-<pid>, one directory per test, and every device in
// throwaway namespaces. Datapath.attachPod takes an ifindex in the caller's own namespace and this
// process lives in the root one, where nothing may be created, so pod links are attached by
// test/support/datapath-worker.ts run inside the "node" namespace through nsenter: each worker run
// is one agent lifetime that ends as a killed agent does, with only the pins left. attachProxy takes
// a namespace path and is driven from here.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, rmdirSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Datapath, podLinkName } from '../../agent/redirection/datapath.js';
import { MAP_LAYOUT, MAP_NAMES, POD_F_ENABLED, PROGRAM_NAMES, decodePodState, u32Key } from '../../bpf/maps.js';
import {
  BPF_OBJECT_PATH,
  bpfLoad,
  closeFd,
  linkFdById,
  mapInfo,
  mapLookup,
  objGet,
  objPin,
  progFdById,
  progInfo,
  tcxQuery,
  type TcxDirection,
} from '../../native/index.js';
import { privilegedSkipReason } from '../support/env.js';
import { waitFor } from '../support/lab.js';
import { TestNetns } from '../support/netns.js';
import type { WorkerLink, WorkerOp, WorkerOutput } from '../support/datapath-worker.js';

const skip = privilegedSkipReason();
const AMBIT_BPF = '/sys/fs/bpf/ambit';
const BASE = join(AMBIT_BPF, `test-${process.pid}`);
const WORKER = fileURLToPath(new URL('../support/datapath-worker.js', import.meta.url));

/** The name of a loaded program, by id. */
function programName(id: number): string {
  const fd = progFdById(id);
  assert.ok(fd !== null, `program ${id} is loaded`);
  try {
    return progInfo(fd).name;
  } finally {
    closeFd(fd);
  }
}

/** Key and value sizes of a pinned map. */
function pinnedMapLayout(path: string): { keySize: number; valueSize: number } {
  const fd = objGet(path);
  try {
    const info = mapInfo(fd);
    return { keySize: info.keySize, valueSize: info.valueSize };
  } finally {
    closeFd(fd);
  }
}

describe('the pinned datapath (agent/redirection/datapath.ts)', { skip }, () => {
  let node: TestNetns;
  let zt: TestNetns;
  let ambitDirExisted = true;
  const roots: string[] = [];
  let veths = 0;

  before(() => {
    ambitDirExisted = existsSync(AMBIT_BPF);
    node = new TestNetns('dpnode');
    zt = new TestNetns('dpzt');
  });

  after(() => {
    for (const root of roots) Datapath.destroy(root);
    Datapath.destroy(BASE);
    if (!ambitDirExisted) {
      try {
        rmdirSync(AMBIT_BPF);
      } catch {
        // A lab pinned something there meanwhile: not ours to remove.
      }
    }
    node?.delete();
    zt?.delete();
  });

  /** A fresh pin directory for one test (not created: open() must create it). */
  function freshRoot(tag: string): string {
    const root = join(BASE, tag);
    roots.push(root);
    return root;
  }

  /** A pod's host-side veth in the node namespace (both ends stay there); returns its ifindex. */
  function podVeth(ns: TestNetns = node): { name: string; ifindex: number } {
    const name = `vt${++veths}`;
    ns.ip('link', 'add', name, 'type', 'veth', 'peer', 'name', `${name}p`);
    ns.ip('link', 'set', name, 'up');
    const [link] = ns.json<{ ifindex: number }>('link', 'show', name);
    return { name, ifindex: link!.ifindex };
  }

  /** One agent lifetime inside the node namespace. */
  function agent(root: string, ops: WorkerOp[]): WorkerOutput {
    const out = execFileSync('nsenter', [`--net=${node.path}`, '--', process.execPath, WORKER, root, JSON.stringify(ops)], {
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    return JSON.parse(out.trim().split('\n').pop()!) as WorkerOutput;
  }

  const hook = (ifindex: number, direction: TcxDirection, ns: TestNetns = node) => tcxQuery({ netns: ns.path, ifindex }, direction);

  test('open() on an empty directory pins the three programs and the four maps, and map writes land in the pins', () => {
    const root = freshRoot('empty');
    const { datapath, result } = Datapath.open(root);
    try {
      assert.deepEqual(result, { adoptedLinks: 0, removedStaleLinks: 0, recreatedMaps: false });
      for (const name of PROGRAM_NAMES) {
        const fd = objGet(join(root, `prog_${name}`));
        try {
          assert.equal(progInfo(fd).name, name, `prog_${name} pins the ${name} program`);
        } finally {
          closeFd(fd);
        }
      }
      for (const name of MAP_NAMES) assert.deepEqual(pinnedMapLayout(join(root, name)), MAP_LAYOUT[name], `map ${name} is pinned with its layout`);
      assert.deepEqual(readdirSync(join(root, 'links')), [], 'no links yet');

      // What the agent writes is in the pinned map, where the next agent (and the kernel) finds it.
      datapath.setPod(7, { ip: '10.244.1.7', flags: POD_F_ENABLED });
      const fd = objGet(join(root, 'pods_by_ifindex'));
      try {
        const v = mapLookup(fd, u32Key(7), MAP_LAYOUT.pods_by_ifindex.valueSize);
        assert.ok(v, 'the pinned pods_by_ifindex has the entry');
        assert.deepEqual(decodePodState(v), { ip: '10.244.1.7', flags: POD_F_ENABLED });
      } finally {
        closeFd(fd);
      }
    } finally {
      datapath.close();
    }
  });

  test("attachPod() puts from_pod on the veth's ingress and to_pod on its egress, pinned so they outlive the agent", () => {
    const root = freshRoot('attach');
    const veth = podVeth();
    const out = agent(root, [['attachPod', veth.ifindex], ['programs']]);
    assert.deepEqual(out.open, { adoptedLinks: 0, removedStaleLinks: 0, recreatedMaps: false });
    assert.equal(out.results[0], 'attached');

    // The agent has exited: only the pins hold the links now.
    const ingress = hook(veth.ifindex, 'ingress');
    const egress = hook(veth.ifindex, 'egress');
    assert.equal(ingress.length, 1, 'one program on the ingress hook');
    assert.equal(egress.length, 1, 'one program on the egress hook');
    assert.equal(programName(ingress[0]!), 'from_pod');
    assert.equal(programName(egress[0]!), 'to_pod');
    for (const direction of ['ingress', 'egress'] as const) {
      assert.ok(existsSync(join(root, 'links', podLinkName(veth.ifindex, direction))), `the ${direction} link is pinned`);
    }
  });

  test('a reopen (agent restart) adopts the links, attaches nothing twice, keeps the map contents, and moves the links to the new programs only when told', () => {
    const root = freshRoot('restart');
    const veth = podVeth();
    const first = agent(root, [['attachPod', veth.ifindex], ['setPod', veth.ifindex, '10.244.1.3', POD_F_ENABLED], ['links']]);
    const firstLinks = first.results[2] as WorkerLink[];
    assert.equal(firstLinks.length, 2);

    const second = agent(root, [['attachPod', veth.ifindex], ['links'], ['programs'], ['pods'], ['switchPrograms']]);
    assert.deepEqual(second.open, { adoptedLinks: 2, removedStaleLinks: 0, recreatedMaps: false });
    assert.equal(second.results[0], 'adopted', 'attachPod of an adopted pod attaches nothing');
    const links = second.results[1] as WorkerLink[];
    const byName = (ls: WorkerLink[]) => new Map(ls.map((l) => [l.name, l.id]));
    assert.deepEqual(byName(links), byName(firstLinks), 'the same pinned links, not new ones');

    // Until switchPrograms() (the agent calls it once the maps are filled), the adopted links kept
    // running the programs they had; then both moved, atomically, to the new ones.
    const progIds = (ls: WorkerLink[]) => ls.map((l) => l.progId).sort();
    assert.deepEqual(progIds(links), progIds(firstLinks), 'adopted links keep their programs until the switch');
    assert.equal(second.results[4], 2, 'the switch moved both links');
    const programs = second.results[2] as Record<string, number>;
    assert.deepEqual(hook(veth.ifindex, 'ingress'), [programs.from_pod], 'exactly one program on ingress: the restarted agent\'s from_pod');
    assert.deepEqual(hook(veth.ifindex, 'egress'), [programs.to_pod], 'exactly one program on egress: the restarted agent\'s to_pod');
    assert.deepEqual(second.results[3], [[veth.ifindex, { ip: '10.244.1.3', flags: POD_F_ENABLED }]], 'the pod map kept its entry');

    // A third lifetime changes nothing either.
    const third = agent(root, [['attachPod', veth.ifindex]]);
    assert.deepEqual(third.open, { adoptedLinks: 2, removedStaleLinks: 0, recreatedMaps: false });
    assert.equal(hook(veth.ifindex, 'ingress').length, 1);
    assert.equal(hook(veth.ifindex, 'egress').length, 1);
  });

  test("attachProxy() puts proxy_in on the ztunnel's interface in its namespace, and a reopen adopts it", () => {
    const root = freshRoot('proxy');
    const eth0 = podVeth(zt);
    const a = Datapath.open(root);
    try {
      assert.equal(a.datapath.attachProxy(zt.path, eth0.name, eth0.ifindex), 'attached');
    } finally {
      a.datapath.close();
    }
    const ids = hook(eth0.ifindex, 'ingress', zt);
    assert.equal(ids.length, 1);
    assert.equal(programName(ids[0]!), 'proxy_in');

    const b = Datapath.open(root);
    try {
      assert.equal(b.result.adoptedLinks, 1);
      assert.equal(b.datapath.attachProxy(zt.path, eth0.name, eth0.ifindex), 'adopted');
      assert.deepEqual(hook(eth0.ifindex, 'ingress', zt), ids, 'the same proxy_in until the switch');
      assert.equal(b.datapath.switchPrograms(), 1);
      assert.deepEqual(hook(eth0.ifindex, 'ingress', zt), [progInfo(b.datapath.program('proxy_in')).id], 'one proxy_in, the new one');
    } finally {
      b.datapath.close();
    }
  });

  test(
    "attachProxy() onto a new ztunnel namespace moves proxy_in there, even when its interface has the old one's ifindex",
    () => {
      const root = freshRoot('proxy-move');
      // The old ztunnel's namespace still exists (its pod is terminating); the new one is built the
      // same way, so its eth0 gets the same ifindex.
      const old = new TestNetns('dpzold');
      const now = new TestNetns('dpznew');
      try {
        const oldEth0 = podVeth(old);
        const newEth0 = podVeth(now);
        assert.equal(newEth0.ifindex, oldEth0.ifindex, 'precondition: the same ifindex in both namespaces');
        const { datapath } = Datapath.open(root);
        try {
          assert.equal(datapath.attachProxy(old.path, oldEth0.name, oldEth0.ifindex), 'attached');
          assert.equal(datapath.attachProxy(now.path, newEth0.name, newEth0.ifindex), 'attached', 'nothing pinned is on the new interface yet');
          assert.deepEqual(hook(newEth0.ifindex, 'ingress', now), [progInfo(datapath.program('proxy_in')).id], 'proxy_in runs on the new ztunnel interface');
          assert.deepEqual(hook(oldEth0.ifindex, 'ingress', old), [], 'and no longer on the old one');
        } finally {
          datapath.close();
        }
      } finally {
        Datapath.destroy(root);
        old.delete();
        now.delete();
      }
    },
  );

  test('a link whose device was deleted is removed as stale on the next open; live links are kept', () => {
    const root = freshRoot('stale');
    const gone = podVeth();
    const kept = podVeth();
    agent(root, [['attachPod', gone.ifindex], ['attachPod', kept.ifindex]]);
    node.ip('link', 'del', gone.name);

    const out = agent(root, [['links']]);
    assert.equal(out.open.removedStaleLinks, 2, 'both links of the deleted veth are stale');
    assert.equal(out.open.adoptedLinks, 2, 'both links of the live veth are adopted');
    assert.deepEqual(
      (out.results[0] as WorkerLink[]).map((l) => l.name).sort(),
      [podLinkName(kept.ifindex, 'egress'), podLinkName(kept.ifindex, 'ingress')],
    );
    for (const direction of ['ingress', 'egress'] as const) {
      assert.ok(!existsSync(join(root, 'links', podLinkName(gone.ifindex, direction))), `the stale ${direction} pin is gone`);
      assert.equal(hook(kept.ifindex, direction).length, 1, `the live veth keeps its ${direction} program`);
    }
  });

  test('a pinned map with an incompatible layout is replaced, and open succeeds', () => {
    const root = freshRoot('layout');
    // An "older" pods_by_ip: a hash map with 8-byte values where 4-byte ones are expected (the
    // object's own pods_by_ifindex, pinned under the wrong name).
    const obj = bpfLoad(BPF_OBJECT_PATH, null);
    try {
      mkdirSync(root, { recursive: true });
      objPin(obj.maps.get('pods_by_ifindex')!, join(root, 'pods_by_ip'));
    } finally {
      for (const fd of [...obj.programs.values(), ...obj.maps.values()]) closeFd(fd);
    }
    assert.equal(pinnedMapLayout(join(root, 'pods_by_ip')).valueSize, 8, 'precondition: the pinned map has the wrong value size');

    const { datapath, result } = Datapath.open(root);
    try {
      assert.equal(result.recreatedMaps, true);
      assert.deepEqual(pinnedMapLayout(join(root, 'pods_by_ip')), MAP_LAYOUT.pods_by_ip, 'the pin now has the current layout');
      datapath.setPod(9, { ip: '10.244.1.9', flags: POD_F_ENABLED });
      assert.deepEqual([...datapath.podIPs()], [['10.244.1.9', POD_F_ENABLED]], 'the replaced map is the one the datapath uses');
    } finally {
      datapath.close();
    }
  });

  test('Datapath.destroy detaches every link and removes the directory', async () => {
    const root = freshRoot('destroy');
    const pod = podVeth();
    const eth0 = podVeth(zt);
    const first = agent(root, [['attachPod', pod.ifindex], ['links']]);
    const { datapath } = Datapath.open(root);
    try {
      datapath.attachProxy(zt.path, eth0.name, eth0.ifindex);
    } finally {
      datapath.close();
    }
    const ids = [...(first.results[1] as WorkerLink[]).map((l) => l.id)];
    assert.equal(hook(pod.ifindex, 'ingress').length, 1, 'precondition: attached');

    assert.equal(Datapath.destroy(root), 3, 'three links detached');
    assert.ok(!existsSync(root), 'the pin directory is gone');
    assert.deepEqual(hook(pod.ifindex, 'ingress'), []);
    assert.deepEqual(hook(pod.ifindex, 'egress'), []);
    assert.deepEqual(hook(eth0.ifindex, 'ingress', zt), []);
    // Unpinned and unreferenced, the links are freed (after an RCU grace period).
    await waitFor('the destroyed links to be freed', () =>
      ids.every((id) => {
        const fd = linkFdById(id);
        if (fd !== null) closeFd(fd);
        return fd === null;
      }),
    );
    assert.equal(Datapath.destroy(root), 0, 'destroying what is gone is a no-op');
  });
});
