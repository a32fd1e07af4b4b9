// The ztunnel's data-path state and the inbound side's reading of a peer's claims: endpoint choice
// with named ports and health, which workloads this node serves, the events that evict pooled
// connections and recheck policy, and the Forwarded header (a peer may only name its own pods).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Address, TunnelProtocol, WorkloadStatus, type Workload } from '../../proto/gen/istio/workload/workload.js';
import { Action, Authorization, Scope } from '../../proto/gen/istio/security/authorization.js';
import { ProxyState, type StateUpdate } from '../../agent/ztunnel/state.js';
import { forwardedFor, forwardedHost } from '../../agent/ztunnel/proxy/inbound.js';
import { ipBytes, plainIp } from '../../agent/ztunnel/proxy/addresses.js';

const ip = (text: string) => Buffer.from(text.split('.').map(Number));

function pod(name: string, address: string, opts: { node?: string; sa?: string; status?: WorkloadStatus; hbone?: boolean; ports?: [number, number][]; policies?: string[] } = {}): StateUpdate {
  const uid = `Kubernetes//Pod/shop/${name}`;
  return {
    kind: 'address',
    name: uid,
    value: Address.fromPartial({
      workload: {
        uid,
        name,
        namespace: 'shop',
        addresses: [ip(address)],
        node: opts.node ?? 'node-1',
        serviceAccount: opts.sa ?? 'web',
        trustDomain: 'cluster.local',
        tunnelProtocol: opts.hbone === false ? TunnelProtocol.NONE : TunnelProtocol.HBONE,
        status: opts.status ?? WorkloadStatus.HEALTHY,
        services: { 'shop/web.shop.svc.cluster.local': { ports: (opts.ports ?? [[80, 8080]]).map(([servicePort, targetPort]) => ({ servicePort, targetPort })) } },
        authorizationPolicies: opts.policies ?? [],
      },
    }),
  };
}

const service: StateUpdate = {
  kind: 'address',
  name: 'shop/web.shop.svc.cluster.local',
  value: Address.fromPartial({
    service: { name: 'web', namespace: 'shop', hostname: 'web.shop.svc.cluster.local', addresses: [{ network: '', address: ip('10.96.0.20') }], ports: [{ servicePort: 80, targetPort: 0 }], subjectAltNames: ['spiffe://cluster.local/ns/shop/sa/extra'] },
  }),
};

test('a VIP resolves to healthy endpoints on any node, each with its own (named) target port', () => {
  const s = new ProxyState('node-1');
  s.apply([service, pod('a', '10.244.1.3', { ports: [[80, 8080]] }), pod('b', '10.244.2.3', { node: 'node-2', ports: [[80, 9090]] }), pod('sick', '10.244.2.4', { node: 'node-2', status: WorkloadStatus.UNHEALTHY })]);
  const svc = s.serviceAt('10.96.0.20');
  assert.ok(svc, 'the VIP is known');
  const eps = s.endpointsOf(svc, 80).map((e) => `${e.workload.name}:${e.port}`).sort();
  assert.deepEqual(eps, ['a:8080', 'b:9090'], 'the unhealthy endpoint is left out; each endpoint maps the named port itself');
  assert.deepEqual(s.endpointsOf(svc, 81).map((e) => e.port).sort(), [81, 81], 'a port the service does not declare is used as dialled');
  s.apply([{ kind: 'address', name: 'Kubernetes//Pod/shop/b', value: null }]);
  assert.deepEqual(s.endpointsOf(svc, 80).map((e) => e.workload.name), ['a'], 'a removed workload is no endpoint any more');
  assert.deepEqual(s.expectedIdentities(s.workloadAt('10.244.1.3')!, svc), ['spiffe://cluster.local/ns/shop/sa/web', 'spiffe://cluster.local/ns/shop/sa/extra'], 'the service\'s SANs are accepted besides the workload\'s identity');
});

test('only workloads of this node are served inbound, whatever the tunnel protocol says yet', () => {
  const s = new ProxyState('node-1');
  s.apply([pod('here', '10.244.1.3'), pod('there', '10.244.2.3', { node: 'node-2' }), pod('plain', '10.244.1.4', { hbone: false })]);
  assert.equal(s.localWorkloadAt('10.244.1.3')?.name, 'here');
  assert.equal(s.localWorkloadAt('10.244.2.3'), undefined, 'another node\'s pod');
  assert.equal(s.localWorkloadAt('10.244.1.4')?.name, 'plain', 'captured before the control plane marks it HBONE (only captured pods reach ztunnel)');
  assert.equal(s.localWorkloadAt('10.244.1.9'), undefined, 'an unknown address');
});

test('state events: a workload change is reported for pool eviction; policy and policy-list changes for recheck', () => {
  const s = new ProxyState('node-1');
  const changed: [Workload, Workload | undefined][] = [];
  let rechecks = 0;
  s.listen({ workloadChanged: (a, b) => changed.push([a, b]), policiesChanged: () => rechecks++ });
  s.apply([pod('a', '10.244.1.3')]);
  assert.equal(changed.length, 0, 'a new workload changes nothing pooled');
  s.apply([pod('a', '10.244.1.3', { sa: 'other' })]);
  assert.equal(changed.length, 1);
  assert.equal(changed[0]![1]?.serviceAccount, 'other');
  const before = rechecks;
  s.apply([pod('a', '10.244.1.3', { sa: 'other' })]);
  assert.equal(rechecks, before, 'the same policy list needs no recheck');
  s.apply([pod('a', '10.244.1.3', { sa: 'other', policies: ['shop/p'] })]);
  assert.equal(rechecks, before + 1, 'a new policy list does');
  s.apply([{ kind: 'authorization', name: 'shop/p', value: Authorization.fromPartial({ name: 'p', namespace: 'shop', scope: Scope.WORKLOAD_SELECTOR, action: Action.DENY }) }]);
  assert.equal(rechecks, before + 2, 'so does a policy');
  assert.ok(s.policies.has('shop/p'));
  s.apply([{ kind: 'address', name: 'Kubernetes//Pod/shop/a', value: null }]);
  assert.equal(changed.at(-1)![1], undefined, 'a removal is reported with no successor');
});

test('Forwarded: for= and host= are read strictly; anything else is no claim', () => {
  assert.deepEqual(forwardedFor('for="10.244.1.3:41000";host=web.shop.svc.cluster.local'), { ip: '10.244.1.3', port: 41000 });
  assert.deepEqual(forwardedFor('for="[fd00::3]:41000"'), { ip: 'fd00::3', port: 41000 });
  assert.equal(forwardedHost('for="10.244.1.3:41000";host=web.shop.svc.cluster.local'), 'web.shop.svc.cluster.local');
  for (const bad of [undefined, '', 'for=unknown', 'for="10.244.1.3"', 'for="10.244.1.3:0"', 'for="10.244.1.3:70000"', 'for="999.1.1.1:80"', 'for="a.b.c.d:80"', 'by="10.0.0.1:80"']) {
    assert.equal(forwardedFor(bad), undefined, `no claim in ${JSON.stringify(bad)}`);
  }
  assert.equal(forwardedHost('host="bad host"'), undefined);
});

test('addresses as policy bytes: IPv4, IPv4-mapped and IPv6; garbage gives no bytes (policy fails closed)', () => {
  assert.deepEqual([...ipBytes('10.244.1.3')], [10, 244, 1, 3]);
  assert.deepEqual([...ipBytes('::ffff:10.244.1.3')], [10, 244, 1, 3]);
  assert.deepEqual([...ipBytes('fd00::1')], [0xfd, 0, ...new Array(13).fill(0), 1]);
  assert.deepEqual([...ipBytes('::ffff:1.2.3.4').slice(0, 4)], [1, 2, 3, 4]);
  assert.equal(ipBytes('64:ff9b::1.2.3.4').length, 16);
  assert.deepEqual([...ipBytes('64:ff9b::1.2.3.4').slice(12)], [1, 2, 3, 4]);
  assert.equal(ipBytes('not an ip').length, 0);
  assert.equal(plainIp('::ffff:10.0.0.1'), '10.0.0.1');
});
