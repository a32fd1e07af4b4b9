// Workload discovery in a real lab: the control plane (in its own namespace on the fabric) turns the
// lab's YAML into Istio's workload API and streams it over delta xDS (TLS, node credentials) to
// each node's ztunnel; edits reach every ztunnel; policy status and problems are reported; a
// control plane outage leaves the ztunnels serving their last state, and they resync after it.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { privilegedSkipReason } from '../support/env.js';
import { TestLab, waitFor } from '../support/lab.js';
import { httpGetFrom } from '../../lab/connect.js';
import { netnsPath } from '../../lab/topology.js';
import { killComponent, restartComponent } from '../../lab/components.js';
import { LAB_WIDE, paths, readJson } from '../../lab/state.js';
import { ADMIN_PORT, type ConfigDump } from '../../agent/ztunnel/admin.js';
import { HEALTH_PORT } from '../../controlplane/controlplane.js';
import type { PolicyStatus } from '../../controlplane/model/types.js';
import type { StatusCondition } from '../../mesh/k8s/types.js';

const skip = privilegedSkipReason();

describe('workload discovery over delta xDS in a two-node lab', { skip }, () => {
  let lab: TestLab;

  before(async () => {
    lab = await TestLab.up('discovery.yaml', 't-discovery');
  });

  after(async () => {
    await lab?.down();
  });

  async function dump(node: string): Promise<ConfigDump> {
    const n = lab.plan.nodes.find((x) => x.name === node)!;
    const r = await httpGetFrom(netnsPath(n.ztunnelNetns), '127.0.0.1', ADMIN_PORT, '/config_dump');
    return JSON.parse(r.body) as ConfigDump;
  }

  async function controlPlane<T>(path: string): Promise<T> {
    const r = await httpGetFrom(netnsPath(lab.plan.controlPlane.netns), '127.0.0.1', HEALTH_PORT, path);
    assert.equal(r.status, 200, `${path}: ${r.body}`);
    return JSON.parse(r.body) as T;
  }

  function statusFile(): Record<string, { conditions: StatusCondition[] }> {
    return readJson<Record<string, { conditions: StatusCondition[] }>>(paths.policyStatus(lab.name)) ?? {};
  }

  test('every ztunnel holds every workload with its node and address, HBONE exactly for redirected enrolled pods', async () => {
    const enrolled = ['shop/client', 'shop/web-0', 'shop/web-1', 'shop/api'];
    for (const node of ['node-1', 'node-2']) {
      // The agents report redirection after lab up returns; wait for it to reach this ztunnel,
      // and on a timeout let the assertions below say what is missing.
      const converged = async (): Promise<ConfigDump | null> => {
        const d = await dump(node);
        const hbone = new Set((d.workloads ?? []).filter((w) => w.protocol === 'HBONE').map((w) => `${w.namespace}/${w.name}`));
        return enrolled.every((k) => hbone.has(k)) ? d : null;
      };
      const d = await waitFor(`${node}: redirection of enrolled pods`, converged).catch(() => dump(node));
      assert.ok(d.xds?.ready, `${node}: initial state received`);
      const byName = new Map((d.workloads ?? []).map((w) => [`${w.namespace}/${w.name}`, w]));
      assert.deepEqual([...byName.keys()].sort(), lab.plan.pods.map((p) => p.key).sort(), `${node} knows every pod of the cluster, not just its own`);
      for (const p of lab.plan.pods) {
        const w = byName.get(p.key)!;
        assert.deepEqual(w.workloadIps, [p.ip], p.key);
        assert.equal(w.node, p.node, p.key);
        assert.equal(w.uid, `Kubernetes//Pod/${p.key}`);
      }
      for (const key of enrolled) assert.equal(byName.get(key)!.protocol, 'HBONE', `${key} is enrolled and redirected`);
      assert.equal(byName.get('shop/legacy')!.protocol, 'TCP', 'opted out with istio.io/dataplane-mode=none');
      assert.equal(byName.get('plain/outsider')!.protocol, 'TCP', 'not in an ambient namespace');
      assert.equal(byName.get('shop/web-0')!.serviceAccount, 'web');
      assert.equal(byName.get('shop/web-0')!.workloadName, 'web', 'the Deployment');
    }
  });

  test('services carry their VIP and target ports (named ports resolved per pod) and their waypoint', async () => {
    const d = await dump('node-1');
    const web = d.services!.find((s) => s.name === 'web')!;
    const plannedWeb = lab.plan.services.find((s) => s.key === 'shop/web')!;
    assert.deepEqual(web.vips, [`/${plannedWeb.vip}`]);
    assert.deepEqual(web.ports, { '80': 0 }, 'a named target port is 0 on the service');
    assert.deepEqual(web.endpoints, { total: 2, healthy: 2 });
    const web0 = d.workloads!.find((w) => w.name === 'web-0')!;
    assert.deepEqual(web0.services, { 'shop/web.shop.svc.cluster.local': { '80': 8080 } }, '...and resolved on each workload');
    const api = d.services!.find((s) => s.name === 'api')!;
    assert.equal(api.waypoint, 'shop/waypoint.shop.svc.cluster.local:15008');
    assert.equal(web.waypoint, undefined);
  });

  test('L4 policies reach the ztunnels; the policy with HTTP attributes is reported (status, /debug/policies), the waypoint policy is not sent to ztunnel', async () => {
    const d = await dump('node-2');
    assert.deepEqual(d.policies!.map((p) => p.name).sort(), ['web-from-client', 'web-get-only']);
    const webGetOnly = d.policies!.find((p) => p.name === 'web-get-only')!;
    assert.deepEqual(webGetOnly.rules, [], 'the ALLOW lost its only (HTTP) rule: it denies everything else');
    const web0 = d.workloads!.find((w) => w.name === 'web-0')!;
    assert.deepEqual(web0.authorizationPolicies, ['shop/web-from-client', 'shop/web-get-only']);

    const policies = await controlPlane<PolicyStatus[]>('/debug/policies');
    const byName = new Map(policies.map((p) => [p.name, p]));
    assert.deepEqual(byName.get('web-get-only')!.dropped, ['methods']);
    assert.deepEqual(byName.get('api-l7')!.enforcedBy, ['waypoint shop/waypoint']);
    const status = await waitFor('policy status written', () => (Object.keys(statusFile()).length === 3 ? statusFile() : null));
    const cond = status['AuthorizationPolicy shop/web-get-only']!.conditions[0]!;
    assert.equal(cond.type, 'ZtunnelAccepted');
    assert.equal(cond.reason, 'UnsupportedValue');
    assert.match(cond.message, /methods/);
    assert.equal(status['AuthorizationPolicy shop/api-l7']!.conditions[0]!.type, 'WaypointAccepted');
  });

  test('an edit reaches every ztunnel within seconds; a policy that cannot be translated fails closed with a problem naming it', async () => {
    lab.editFile(
      (t) =>
        `${t}---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: broken
  namespace: shop
spec:
  selector:
    matchLabels:
      app: api
  action: DENY
  rules:
    - from:
        - source:
            ipBlocks: ["10.0.0.300/8"]
`,
    );
    for (const node of ['node-1', 'node-2']) {
      const policy = await waitFor(`${node} to get shop/broken`, async () => (await dump(node)).policies!.find((p) => p.name === 'broken'), 15_000);
      assert.equal(policy.action, 'Deny');
      assert.deepEqual(policy.rules, [{}], 'a DENY that cannot be translated denies everything it selects (one rule, no clauses)');
    }
    const problems = await controlPlane<{ object: string; message: string }[]>('/debug/problems');
    const problem = problems.find((p) => p.object === 'AuthorizationPolicy shop/broken');
    assert.ok(problem, 'the problem names the policy');
    assert.match(problem.message, /10\.0\.0\.300\/8/);
    const d = await dump('node-1');
    assert.ok(d.policies!.some((p) => p.name === 'web-from-client'), 'the other policies keep working');

    lab.editFile((t) => t.slice(0, t.indexOf('---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: broken')));
    for (const node of ['node-1', 'node-2']) {
      await waitFor(`${node} to drop shop/broken`, async () => !(await dump(node)).policies!.some((p) => p.name === 'broken'), 15_000);
    }
  });

  test('while the control plane is down the ztunnels keep their state; after it returns they resync', async () => {
    const before = await dump('node-1');
    await killComponent(lab.name, 'controlplane', LAB_WIDE);
    await waitFor('node-1 to notice the control plane is gone', async () => !(await dump('node-1')).xds!.connected, 15_000);
    const during = await dump('node-1');
    assert.equal(during.workloads!.length, before.workloads!.length, 'the last good workloads are still served');
    assert.equal(during.policies!.length, before.policies!.length);
    assert.ok(during.xds!.ready, 'still ready: it has a state to serve');
    // A change made while the control plane is away is picked up when it returns.
    lab.editFile((t) => t.replace('name: client\n  namespace: shop\n  labels:\n    app: client', 'name: client\n  namespace: shop\n  labels:\n    app: client\n    version: v2'));
    lab.editFile((t) => t.replace('      serviceAccountName: web\n', '      serviceAccountName: web-v2\n'));
    await restartComponent(lab.name, 'controlplane', LAB_WIDE);
    await waitFor('node-1 to reconnect and resync', async () => {
      const d = await dump('node-1');
      return d.xds!.connected && d.workloads!.find((w) => w.name === 'web-0')!.serviceAccount === 'web-v2';
    }, 20_000);
    const after = await dump('node-1');
    assert.ok(after.xds!.reconnects >= 1);
    assert.equal(after.workloads!.length, before.workloads!.length);
  });
});
