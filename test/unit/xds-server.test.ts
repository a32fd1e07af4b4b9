import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import * as grpc from '@grpc/grpc-js';
import { Address, Workload } from '../../proto/gen/istio/workload/workload.js';
import { Authorization, Action, Scope } from '../../proto/gen/istio/security/authorization.js';
import { Waypoint } from '../../proto/gen/ambit/waypoint/v1alpha1/waypoint.js';
import type { DeltaDiscoveryResponse } from '../../proto/gen/envoy/service/discovery/v3/discovery.js';
import { workloadUpdate } from '../../controlplane/discovery.js';
import { ADDRESS_TYPE, AUTHORIZATION_TYPE, WAYPOINT_TYPE } from '../../mesh/xds/types.js';
import { MAX_XDS_REQUEST_BYTES } from '../../controlplane/xds/wire.js';
import { RawStream, rawBytesStream, startTestXds, type TestXds } from '../support/xds.js';

function workload(name: string, ip: string, extra: Partial<Workload> = {}): Workload {
  return Workload.fromPartial({ uid: `Kubernetes//Pod/demo/${name}`, name, namespace: 'demo', addresses: [Buffer.from(ip.split('.').map(Number))], node: 'node-1', ...extra });
}

function uid(name: string): string {
  return `Kubernetes//Pod/demo/${name}`;
}

function setWorkloads(s: TestXds, workloads: Workload[], removals: string[] = []): void {
  s.xds.publish(ADDRESS_TYPE, s.xds.cache.apply(ADDRESS_TYPE, workloads.map((w) => workloadUpdate(w, '')), removals));
}

function setPolicy(s: TestXds, name: string, action: Action): void {
  const a = Authorization.fromPartial({ name, namespace: 'demo', scope: Scope.NAMESPACE, action, rules: [] });
  s.xds.publish(AUTHORIZATION_TYPE, s.xds.cache.apply(AUTHORIZATION_TYPE, [{ name: `demo/${name}`, aliases: [], message: Authorization.encode(a).finish() }], []));
}

function setWaypoint(s: TestXds, name: string, trafficType = 'service'): void {
  const w = Waypoint.fromPartial({ name, namespace: 'demo', trafficType });
  s.xds.publish(WAYPOINT_TYPE, s.xds.cache.apply(WAYPOINT_TYPE, [{ name: `demo/${name}`, aliases: [], message: Waypoint.encode(w).finish() }], []));
}

function names(r: DeltaDiscoveryResponse): string[] {
  return r.resources.map((x) => x.name).sort();
}

function decodedWorkload(r: DeltaDiscoveryResponse, name: string): Workload {
  const res = r.resources.find((x) => x.name === name);
  assert.ok(res?.resource, `${name} is in the response`);
  assert.equal(res.resource.typeUrl, ADDRESS_TYPE);
  const w = Address.decode(res.resource.value).workload;
  assert.ok(w, `${name} is a workload`);
  return w;
}

describe('xDS server: DeltaAggregatedResources protocol', () => {
  let s: TestXds;
  const streams: RawStream[] = [];
  /** A stream with node-1's token, another token, or (null) none. */
  const open = (token: string | null = s.tokens['node-1']!): RawStream => {
    const st = new RawStream(s, token ?? undefined);
    streams.push(st);
    return st;
  };

  before(async () => {
    s = await startTestXds();
    setWorkloads(s, [workload('a', '10.244.1.10'), workload('b', '10.244.1.11'), workload('c', '10.244.2.10')]);
    setPolicy(s, 'deny-all', Action.DENY);
    setWaypoint(s, 'waypoint');
    setWaypoint(s, 'other');
  });

  after(async () => {
    for (const st of streams) st.close();
    await s.close();
  });

  test('initial state: a wildcard subscription gets every resource of the type, with versions and aliases', async () => {
    const st = open();
    st.send({ typeUrl: ADDRESS_TYPE });
    const r = await st.next(ADDRESS_TYPE);
    assert.deepEqual(names(r), [uid('a'), uid('b'), uid('c')]);
    assert.equal(decodedWorkload(r, uid('b')).name, 'b');
    const a = r.resources.find((x) => x.name === uid('a'))!;
    assert.match(a.version, /^[0-9a-f]{16}$/, 'the version is a content hash');
    assert.deepEqual(a.aliases, ['/10.244.1.10'], 'aliases are <network>/<ip>');
    assert.notEqual(r.nonce, '');
    assert.deepEqual(r.removedResources, []);
    st.ack(r);
    st.send({ typeUrl: AUTHORIZATION_TYPE });
    const p = await st.next(AUTHORIZATION_TYPE);
    assert.deepEqual(names(p), ['demo/deny-all']);
    st.ack(p);
    assert.deepEqual(await st.quiet(200), [], 'nothing more after the ACKs');
    const conn = s.xds.status().find((c) => c.node.startsWith('ztunnel~') && c.types[ADDRESS_TYPE]?.ackedNonce === r.nonce);
    assert.ok(conn, 'the server records the ACK');
    assert.equal(conn.caller, 'node node-1');
  });

  test('a type with no resources still gets an (empty) initial response, so the client knows it is synced', async () => {
    const empty = await startTestXds();
    try {
      const st = new RawStream(empty, empty.tokens['node-1']);
      st.send({ typeUrl: AUTHORIZATION_TYPE });
      const r = await st.next(AUTHORIZATION_TYPE);
      assert.deepEqual(r.resources, []);
      st.close();
    } finally {
      await empty.close();
    }
  });

  test('incremental update and removal: a push carries only what changed', async () => {
    const st = open();
    st.send({ typeUrl: ADDRESS_TYPE });
    st.ack(await st.next(ADDRESS_TYPE));
    setWorkloads(s, [workload('b', '10.244.1.11', { serviceAccount: 'changed' })]);
    const update = await st.next(ADDRESS_TYPE);
    assert.deepEqual(names(update), [uid('b')], 'only the changed workload');
    assert.equal(decodedWorkload(update, uid('b')).serviceAccount, 'changed');
    st.ack(update);
    setWorkloads(s, [workload('b', '10.244.1.11', { serviceAccount: 'changed' })]);
    assert.deepEqual(await st.quiet(200), [], 'the same content again is no change');
    setWorkloads(s, [], [uid('c')]);
    const removal = await st.next(ADDRESS_TYPE);
    assert.deepEqual(removal.resources, []);
    assert.deepEqual(removal.removedResources, [uid('c')]);
    st.ack(removal);
    setWorkloads(s, [workload('c', '10.244.2.10')]);
    st.ack(await st.next(ADDRESS_TYPE));
  });

  test('NACK: recorded and reported, never answered by a resend; the next change is sent', async () => {
    const st = open();
    st.send({ typeUrl: AUTHORIZATION_TYPE });
    const first = await st.next(AUTHORIZATION_TYPE);
    st.nack(first, 'cannot parse demo/deny-all');
    assert.deepEqual(await st.quiet(300), [], 'no resend loop after a NACK');
    const conn = s.xds.status().find((c) => c.types[AUTHORIZATION_TYPE]?.lastNonce === first.nonce);
    assert.equal(conn?.types[AUTHORIZATION_TYPE]?.nack, 'cannot parse demo/deny-all');
    assert.equal(conn?.types[AUTHORIZATION_TYPE]?.nacks, 1);
    setPolicy(s, 'deny-all', Action.ALLOW);
    const next = await st.next(AUTHORIZATION_TYPE);
    assert.deepEqual(names(next), ['demo/deny-all']);
    st.ack(next);
    await st.quiet(50);
    const after = s.xds.status().find((c) => c.types[AUTHORIZATION_TYPE]?.lastNonce === next.nonce);
    assert.equal(after?.types[AUTHORIZATION_TYPE]?.nack, null, 'a later ACK clears the NACK');
    setPolicy(s, 'deny-all', Action.DENY);
    st.ack(await st.next(AUTHORIZATION_TYPE));
  });

  test('reconnect with initial_resource_versions: only what changed meanwhile is sent, and what is gone is removed', async () => {
    const first = open();
    first.send({ typeUrl: ADDRESS_TYPE });
    const initial = await first.next(ADDRESS_TYPE);
    first.ack(initial);
    const held = Object.fromEntries(initial.resources.map((r) => [r.name, r.version]));
    first.close();
    // While the client is away: a changed, c removed, d added; b unchanged.
    setWorkloads(s, [workload('a', '10.244.1.10', { node: 'node-2' }), workload('d', '10.244.2.11')], [uid('c')]);
    const again = open();
    again.send({ typeUrl: ADDRESS_TYPE, initialResourceVersions: held });
    const r = await again.next(ADDRESS_TYPE);
    assert.deepEqual(names(r), [uid('a'), uid('d')], 'changed and new only; the unchanged b is not resent');
    assert.deepEqual(r.removedResources, [uid('c')]);
    again.ack(r);
    // Restore for the other tests.
    setWorkloads(s, [workload('a', '10.244.1.10'), workload('c', '10.244.2.10')], [uid('d')]);
    await again.next(ADDRESS_TYPE);
  });

  test('a reconnect holding exactly the current versions gets an empty response (synced), not the whole state', async () => {
    const first = open();
    first.send({ typeUrl: ADDRESS_TYPE });
    const initial = await first.next(ADDRESS_TYPE);
    first.close();
    const again = open();
    again.send({ typeUrl: ADDRESS_TYPE, initialResourceVersions: Object.fromEntries(initial.resources.map((r) => [r.name, r.version])) });
    const r = await again.next(ADDRESS_TYPE);
    assert.deepEqual(r.resources, []);
    assert.deepEqual(r.removedResources, []);
  });

  test('two clients with different subscriptions each get what they subscribed to', async () => {
    const all = open(s.tokens['node-1']);
    const one = open(s.tokens['node-2']);
    all.send({ typeUrl: WAYPOINT_TYPE });
    one.send({ typeUrl: WAYPOINT_TYPE, resourceNamesSubscribe: ['demo/waypoint', 'demo/missing'] });
    const a0 = await all.next(WAYPOINT_TYPE);
    assert.deepEqual(names(a0), ['demo/other', 'demo/waypoint']);
    const o0 = await one.next(WAYPOINT_TYPE);
    assert.deepEqual(names(o0), ['demo/waypoint'], 'only the named resource');
    assert.deepEqual(o0.removedResources, ['demo/missing'], 'a subscribed name that does not exist is reported as removed');
    all.ack(a0);
    one.ack(o0);
    setWaypoint(s, 'other', 'workload');
    assert.deepEqual(names(await all.next(WAYPOINT_TYPE)), ['demo/other']);
    assert.deepEqual(await one.quiet(200), [], 'a change outside the subscription is not sent');
    setWaypoint(s, 'waypoint', 'all');
    assert.deepEqual(names(await all.next(WAYPOINT_TYPE)), ['demo/waypoint']);
    assert.deepEqual(names(await one.next(WAYPOINT_TYPE)), ['demo/waypoint']);
    // Subscribing later to a name: sent at once; unsubscribing: no more updates.
    one.send({ typeUrl: WAYPOINT_TYPE, resourceNamesSubscribe: ['demo/other'], resourceNamesUnsubscribe: ['demo/waypoint'] });
    assert.deepEqual(names(await one.next(WAYPOINT_TYPE)), ['demo/other']);
    setWaypoint(s, 'waypoint', 'service');
    assert.deepEqual(names(await all.next(WAYPOINT_TYPE)), ['demo/waypoint']);
    assert.deepEqual(await one.quiet(200), [], 'unsubscribed');
  });

  test('subscription by alias (<network>/<ip>, ztunnel on-demand): the resource comes under its name', async () => {
    const st = open();
    st.send({ typeUrl: ADDRESS_TYPE, resourceNamesSubscribe: ['*'], resourceNamesUnsubscribe: ['*'] });
    const none = await st.next(ADDRESS_TYPE);
    assert.deepEqual(none.resources, [], '"subscribe to nothing" gets an empty initial response');
    st.send({ typeUrl: ADDRESS_TYPE, resourceNamesSubscribe: ['/10.244.1.11'] });
    const r = await st.next(ADDRESS_TYPE);
    assert.deepEqual(names(r), [uid('b')]);
    setWorkloads(s, [workload('b', '10.244.1.11', { serviceAccount: 'again' })]);
    assert.deepEqual(names(await st.next(ADDRESS_TYPE)), [uid('b')], 'changes follow the alias subscription');
    setWorkloads(s, [workload('a', '10.244.1.10', { serviceAccount: 'x' })]);
    assert.deepEqual(await st.quiet(200), [], 'other resources are not sent');
    setWorkloads(s, [workload('a', '10.244.1.10')]);
  });

  test('an alias that moves to another resource: the client gets the new one and loses the old one', async () => {
    const st = open();
    st.send({ typeUrl: ADDRESS_TYPE, resourceNamesSubscribe: ['*'], resourceNamesUnsubscribe: ['*'] });
    await st.next(ADDRESS_TYPE);
    setWorkloads(s, [workload('e', '10.244.3.3')]);
    st.send({ typeUrl: ADDRESS_TYPE, resourceNamesSubscribe: ['/10.244.3.3'] });
    assert.deepEqual(names(await st.next(ADDRESS_TYPE)), [uid('e')]);
    // The address now belongs to f (e was recycled): f comes, e goes.
    setWorkloads(s, [workload('f', '10.244.3.3'), workload('e', '10.244.3.4')]);
    const moved = await st.next(ADDRESS_TYPE);
    assert.deepEqual(names(moved), [uid('f')]);
    assert.deepEqual(moved.removedResources, [uid('e')]);
    setWorkloads(s, [], [uid('f')]);
    const gone = await st.next(ADDRESS_TYPE);
    assert.deepEqual(gone.removedResources, [uid('f')], 'the resource behind the alias is gone');
    setWorkloads(s, [], [uid('e')]);
    assert.deepEqual(await st.quiet(200), [], 'e was already removed from this client');
  });

  test('a wildcard client that unsubscribes a name it also named still gets that resource\'s changes', async () => {
    const st = open();
    st.send({ typeUrl: ADDRESS_TYPE, resourceNamesSubscribe: ['*', uid('a')] });
    st.ack(await st.next(ADDRESS_TYPE));
    setWorkloads(s, [workload('a', '10.244.1.10', { serviceAccount: 'renamed' })]);
    st.send({ typeUrl: ADDRESS_TYPE, resourceNamesUnsubscribe: [uid('a')] });
    const r = await st.next(ADDRESS_TYPE);
    assert.deepEqual(names(r), [uid('a')], 'still covered by the wildcard');
    setWorkloads(s, [workload('a', '10.244.1.10')]);
    await st.next(ADDRESS_TYPE);
  });

  test('a NACK of an earlier response that crosses a newer push is still recorded', async () => {
    const st = open();
    st.send({ typeUrl: AUTHORIZATION_TYPE });
    const first = await st.next(AUTHORIZATION_TYPE);
    setPolicy(s, 'deny-all', Action.ALLOW);
    const second = await st.next(AUTHORIZATION_TYPE);
    st.nack(first, 'the first one was bad');
    await st.quiet(100);
    const conn = s.xds.status().find((c) => c.types[AUTHORIZATION_TYPE]?.lastNonce === second.nonce);
    assert.equal(conn?.types[AUTHORIZATION_TYPE]?.nack, 'the first one was bad');
    setPolicy(s, 'deny-all', Action.DENY);
    await st.next(AUTHORIZATION_TYPE);
  });

  test('a client without a token is refused (UNAUTHENTICATED) and gets nothing', async () => {
    const st = open(null);
    st.send({ typeUrl: ADDRESS_TYPE });
    const end = await st.end();
    assert.equal(grpc.status[end.code], 'UNAUTHENTICATED');
    assert.match(end.details, /authorization/);
    assert.equal(st.responses.length, 0);
    const bad = open('not-a-token');
    bad.send({ typeUrl: ADDRESS_TYPE });
    assert.equal(grpc.status[(await bad.end()).code], 'UNAUTHENTICATED');
    assert.equal(bad.responses.length, 0);
  });

  test('garbage bytes end that stream with INVALID_ARGUMENT; the server keeps serving others', async () => {
    const garbage = rawBytesStream(s, s.tokens['node-1']!);
    garbage.write(Buffer.from([0xff, 0xff, 0xff, 0xff, 0x0f, 0x01, 0x02]));
    const end = await garbage.end();
    garbage.close();
    assert.equal(grpc.status[end.code], 'INVALID_ARGUMENT', end.details);
    assert.match(end.details, /not a DeltaDiscoveryRequest/);
    const st = open();
    st.send({ typeUrl: ADDRESS_TYPE });
    assert.equal((await st.next(ADDRESS_TYPE)).resources.length, 3);
  });

  test('an oversized request is refused before decoding (RESOURCE_EXHAUSTED)', async () => {
    const big = rawBytesStream(s, s.tokens['node-1']!);
    big.write(Buffer.alloc(MAX_XDS_REQUEST_BYTES + 1));
    const end = await big.end();
    big.close();
    assert.equal(grpc.status[end.code], 'RESOURCE_EXHAUSTED', end.details);
  });

  test('an unknown type URL is ignored; the same stream keeps working for known types', async () => {
    const st = open();
    st.send({ typeUrl: 'type.googleapis.com/envoy.config.cluster.v3.Cluster' });
    st.send({ typeUrl: AUTHORIZATION_TYPE });
    const r = await st.next();
    assert.equal(r.typeUrl, AUTHORIZATION_TYPE, 'the first response is for the known type');
    assert.equal(st.ended, undefined);
  });

  test('endless NACKs: the flooding client is cut off, another client still gets its pushes at once', async () => {
    const flood = open();
    const good = open(s.tokens['node-2']);
    flood.send({ typeUrl: AUTHORIZATION_TYPE });
    const r = await flood.next(AUTHORIZATION_TYPE);
    good.send({ typeUrl: AUTHORIZATION_TYPE });
    good.ack(await good.next(AUTHORIZATION_TYPE));
    for (let i = 0; i < 2000 && !flood.ended; i++) flood.nack(r, `bad ${i}`);
    const end = await flood.end();
    assert.equal(grpc.status[end.code], 'RESOURCE_EXHAUSTED', end.details);
    const started = Date.now();
    setPolicy(s, 'deny-all', Action.ALLOW);
    const pushed = await good.next(AUTHORIZATION_TYPE, 2000);
    assert.deepEqual(names(pushed), ['demo/deny-all']);
    assert.ok(Date.now() - started < 1000, `pushed in ${Date.now() - started} ms`);
    setPolicy(s, 'deny-all', Action.DENY);
  });
});
