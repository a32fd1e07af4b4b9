// What one misbehaving xDS client may cost the server: a client that stops reading is cut off
// after the write deadline and its share of the large-response budget goes to the others; one
// caller cannot hold every stream; the server keeps serving through all of it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as grpc from '@grpc/grpc-js';
import { Workload } from '../../proto/gen/istio/workload/workload.js';
import { workloadUpdate } from '../../controlplane/discovery.js';
import { ADDRESS_TYPE, AUTHORIZATION_TYPE } from '../../mesh/xds/types.js';
import { RawStream, stalledStream, startTestXds, type TestXds } from '../support/xds.js';

/** About 1.5 MB of workloads: every full state is a "large" response. */
function fill(s: TestXds): void {
  const workloads = Array.from({ length: 4000 }, (_, i) =>
    Workload.fromPartial({ uid: `Kubernetes//Pod/bulk/pod-${i}`, name: `pod-${i}-${'x'.repeat(300)}`, namespace: 'bulk', addresses: [Buffer.from([10, 1, i >> 8, i & 255])] }),
  );
  s.xds.publish(ADDRESS_TYPE, s.xds.cache.apply(ADDRESS_TYPE, workloads.map((w) => workloadUpdate(w, '')), []));
}

test('a client that stops reading is cut off after the write deadline; the large-response slot it held goes to the next client', async () => {
  const s = await startTestXds(['node-1', 'node-2'], { maxLargeResponses: 1, writeDeadlineMs: 1500 });
  fill(s);
  const stalled = stalledStream(s, s.tokens['node-1']!, { typeUrl: ADDRESS_TYPE });
  let good: RawStream | undefined;
  try {
    // The stalled client has the only slot; a well-behaved client asks after it.
    await new Promise((r) => setTimeout(r, 300));
    good = new RawStream(s, s.tokens['node-2']);
    good.send({ typeUrl: ADDRESS_TYPE });
    const started = Date.now();
    const r = await good.next(ADDRESS_TYPE, 10_000);
    assert.equal(r.resources.length, 4000, 'the full state, once the slot was freed');
    assert.ok(Date.now() - started >= 1000, 'it had to wait for the stalled client to be cut off');
    const code = await Promise.race([stalled.closed, new Promise<number>((_, reject) => setTimeout(() => reject(new Error('the stalled stream was never ended')), 10_000))]);
    assert.ok(code !== undefined, 'the stalled stream was ended by the server');
    assert.equal(s.xds.status().length, 1, 'only the good client is still tracked');
  } finally {
    stalled.close();
    good?.close();
    await s.close();
  }
});

test('after a large response that got its slot at once, the stream goes on: later subscriptions and updates arrive', async () => {
  const s = await startTestXds(['node-1']);
  fill(s);
  const st = new RawStream(s, s.tokens['node-1']);
  try {
    st.send({ typeUrl: ADDRESS_TYPE });
    const first = await st.next(ADDRESS_TYPE);
    assert.equal(first.resources.length, 4000);
    st.ack(first);
    st.send({ typeUrl: AUTHORIZATION_TYPE });
    const authz = await st.next(AUTHORIZATION_TYPE);
    assert.deepEqual(authz.resources, [], 'the second type, subscribed after the large response');
    st.ack(authz);
    const extra = Workload.fromPartial({ uid: 'Kubernetes//Pod/bulk/late', name: 'late', namespace: 'bulk', addresses: [Buffer.from([10, 2, 0, 1])] });
    s.xds.publish(ADDRESS_TYPE, s.xds.cache.apply(ADDRESS_TYPE, [workloadUpdate(extra, '')], []));
    const update = await st.next(ADDRESS_TYPE);
    assert.deepEqual(update.resources.map((r) => r.name), ['Kubernetes//Pod/bulk/late']);
  } finally {
    st.close();
    await s.close();
  }
});

test('one caller cannot hold more than its share of streams; others still connect', async () => {
  const s = await startTestXds(['node-1', 'node-2'], { maxConnectionsPerCaller: 2 });
  const streams: RawStream[] = [];
  try {
    for (let i = 0; i < 2; i++) {
      const st = new RawStream(s, s.tokens['node-1']);
      streams.push(st);
      st.send({ typeUrl: ADDRESS_TYPE });
      await st.next(ADDRESS_TYPE);
    }
    const third = new RawStream(s, s.tokens['node-1']);
    streams.push(third);
    third.send({ typeUrl: ADDRESS_TYPE });
    const end = await third.end();
    assert.equal(grpc.status[end.code], 'RESOURCE_EXHAUSTED');
    assert.match(end.details, /node node-1 already holds 2 xDS streams/);
    const other = new RawStream(s, s.tokens['node-2']);
    streams.push(other);
    other.send({ typeUrl: ADDRESS_TYPE });
    await other.next(ADDRESS_TYPE);
  } finally {
    for (const st of streams) st.close();
    await s.close();
  }
});

test('a stream whose token is refused gets no response, whatever it sent before the refusal', async () => {
  const s = await startTestXds();
  try {
    const st = new RawStream(s, 'unknown-token');
    for (let i = 0; i < 5; i++) st.send({ typeUrl: ADDRESS_TYPE, resourceNamesSubscribe: [`name-${i}`] });
    const end = await st.end();
    assert.equal(grpc.status[end.code], 'UNAUTHENTICATED');
    assert.equal(st.responses.length, 0);
    st.close();
  } finally {
    await s.close();
  }
});
