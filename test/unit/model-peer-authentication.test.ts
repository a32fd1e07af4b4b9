// PeerAuthentication: precedence (mesh, namespace, workload; oldest wins; UNSET inherits), the
// policies each workload lists, and what the converted policies do to plaintext on each port.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { viewFromObjects } from '../../mesh/config/kinds.js';
import { buildContext, type ModelContext } from '../../controlplane/model/context.js';
import { peerAuthenticationAuthorizations, podPeerAuthentication } from '../../controlplane/model/peer-authentication.js';
import { workloadPolicies } from '../../controlplane/model/policy-selection.js';
import { DEFAULT_MODEL_OPTIONS } from '../../controlplane/model/types.js';
import { Action, type Authorization, type Match } from '../../proto/gen/istio/security/authorization.js';
import type { PeerAuthentication, Pod } from '../../mesh/k8s/types.js';

const STATIC = 'istio-system/istio_converted_static_strict';

function pa(name: string, namespace: string, spec: unknown, created?: string | Date): PeerAuthentication {
  return {
    apiVersion: 'security.istio.io/v1',
    kind: 'PeerAuthentication',
    metadata: { name, namespace, ...(created !== undefined ? { creationTimestamp: created } : {}) },
    spec,
  } as PeerAuthentication;
}

function pod(name: string, namespace: string, labels: Record<string, string> = {}): Pod {
  return { apiVersion: 'v1', kind: 'Pod', metadata: { name, namespace, labels }, spec: { containers: [{ name: 'c' }] }, status: { phase: 'Running', podIP: '10.0.0.1' } };
}

interface World {
  ctx: ModelContext;
  authorizations: Map<string, Authorization>;
  problems: string[];
  /** Mode and listed policies of the pod `<namespace>/<name>`. */
  of(key: string): { mode: string; policies: string[] };
  /** Whether plaintext (no peer identity) may reach the pod on a port, by what it lists. */
  plaintext(key: string, port: number): boolean;
}

function world(objects: unknown[]): World {
  const { view } = viewFromObjects(objects);
  const ctx = buildContext(view, DEFAULT_MODEL_OPTIONS);
  const t = peerAuthenticationAuthorizations(ctx);
  const authorizations = new Map((t.value ?? []).map((a) => [`${a.namespace}/${a.name}`, a]));
  const find = (key: string): Pod => view.pods.find((p) => `${p.metadata.namespace}/${p.metadata.name}` === key)!;
  return {
    ctx,
    authorizations,
    problems: t.problems.map((p) => `${p.object.namespace}/${p.object.name}: ${p.message}`),
    of: (key) => podPeerAuthentication(find(key), ctx),
    plaintext: (key, port) => {
      const names = workloadPolicies(find(key), ctx);
      for (const name of names) {
        const a = authorizations.get(name);
        // ztunnel skips unknown names: a listed name must exist, or the port silently opens.
        assert.ok(a, `${key} lists ${name}, which does not exist`);
        assert.equal(a.action, Action.DENY);
        if (deniesPlaintext(a, port)) return false;
      }
      return true;
    },
  };
}

/** ztunnel's rbac.rs for a connection without identity to `port`, over the fields these policies use. */
function deniesPlaintext(a: Authorization, port: number): boolean {
  const holds = (m: Match): boolean =>
    (m.destinationPorts.length === 0 || m.destinationPorts.includes(port)) &&
    (m.notDestinationPorts.length === 0 || !m.notDestinationPorts.includes(port)) &&
    // notPrincipals presence: a connection without identity is not "present", so it holds.
    m.principals.length === 0;
  return a.rules.length > 0 && a.rules.some((r) => r.clauses.every((c) => c.matches.length === 0 || c.matches.some(holds)));
}

test('no PeerAuthentication: PERMISSIVE, nothing listed, no static policy', () => {
  const w = world([pod('a', 'ns')]);
  assert.deepEqual(w.of('ns/a'), { mode: 'PERMISSIVE', policies: [] });
  assert.equal(w.authorizations.size, 0);
});

test('the static STRICT policy: DENY, WORKLOAD_SELECTOR, not_principals presence, in the root namespace', () => {
  const w = world([pa('m', 'istio-system', { mtls: { mode: 'STRICT' } }), pod('a', 'ns')]);
  const s = w.authorizations.get(STATIC)!;
  assert.deepEqual(JSON.parse(JSON.stringify(s)), {
    name: 'istio_converted_static_strict',
    namespace: 'istio-system',
    scope: 2,
    action: 1,
    rules: [{ clauses: [{ matches: [{ namespaces: [], notNamespaces: [], principals: [], notPrincipals: [{ presence: {} }], sourceIps: [], notSourceIps: [], destinationIps: [], notDestinationIps: [], destinationPorts: [], notDestinationPorts: [], serviceAccounts: [], notServiceAccounts: [], extensions: [] }] }] }],
    dryRun: false,
    extensions: [],
  });
  assert.deepEqual(w.of('ns/a'), { mode: 'STRICT', policies: [STATIC] });
  assert.equal(w.plaintext('ns/a', 80), false);
});

test('precedence: mesh, then namespace (UNSET inherits), then workload', () => {
  const w = world([
    pa('mesh', 'istio-system', { mtls: { mode: 'STRICT' } }),
    pa('ns', 'loose', { mtls: { mode: 'PERMISSIVE' } }),
    pa('wl', 'loose', { selector: { matchLabels: { app: 'tight' } }, mtls: { mode: 'STRICT' } }),
    pa('unset', 'inherit', { mtls: {} }),
    pa('wl-unset', 'inherit', { selector: { matchLabels: { app: 'x' } }, mtls: { mode: 'UNSET' } }),
    pa('off', 'inherit', { selector: { matchLabels: { app: 'off' } }, mtls: { mode: 'DISABLE' } }),
    pod('plain', 'loose'),
    pod('tight', 'loose', { app: 'tight' }),
    pod('x', 'inherit', { app: 'x' }),
    pod('off', 'inherit', { app: 'off' }),
    pod('none', 'elsewhere'),
  ]);
  assert.deepEqual(w.of('loose/plain'), { mode: 'PERMISSIVE', policies: [] });
  assert.deepEqual(w.of('loose/tight'), { mode: 'STRICT', policies: [STATIC] });
  assert.deepEqual(w.of('inherit/x'), { mode: 'STRICT', policies: [STATIC] });
  assert.deepEqual(w.of('inherit/off'), { mode: 'DISABLE', policies: [] });
  assert.deepEqual(w.of('elsewhere/none'), { mode: 'STRICT', policies: [STATIC] });
});

test('conflicts at one level: the oldest wins (string or Date timestamps), then the name', () => {
  const w = world([
    pa('a-new', 'ns', { mtls: { mode: 'STRICT' } }, '2025-01-01T00:00:00Z'),
    pa('z-old', 'ns', { mtls: { mode: 'PERMISSIVE' } }, new Date('2020-01-01T00:00:00Z')),
    pa('w-new', 'ns', { selector: { matchLabels: { app: 'p' } }, mtls: { mode: 'PERMISSIVE' } }, new Date('2025-01-01T00:00:00Z')),
    pa('w-old', 'ns', { selector: { matchLabels: { app: 'p' } }, mtls: { mode: 'STRICT' } }, '2021-01-01T00:00:00Z'),
    pa('b', 'tie', { mtls: { mode: 'PERMISSIVE' } }, '2021-01-01T00:00:00Z'),
    pa('a', 'tie', { mtls: { mode: 'STRICT' } }, '2021-01-01T00:00:00Z'),
    pod('other', 'ns'),
    pod('p', 'ns', { app: 'p' }),
    pod('t', 'tie'),
  ]);
  assert.equal(w.of('ns/other').mode, 'PERMISSIVE');
  assert.equal(w.of('ns/p').mode, 'STRICT');
  assert.equal(w.of('tie/t').mode, 'STRICT');
  assert.ok(w.problems.some((p) => p.startsWith('ns/a-new: ignored: ns/z-old also applies to the whole namespace and is older')));
});

test('conflicts at one level with equal or missing creation times: the stricter mode in effect wins, never the name', () => {
  const T = '2024-05-01T00:00:00Z';
  const w = world([
    // Namespace level, equal times: STRICT beats PERMISSIVE whatever the names.
    pa('a-permissive', 'eq', { mtls: { mode: 'PERMISSIVE' } }, T),
    pa('z-strict', 'eq', { mtls: { mode: 'STRICT' } }, T),
    // No creation times at all (as from files): likewise.
    pa('a-open', 'none', { mtls: { mode: 'PERMISSIVE' } }),
    pa('b-off', 'none', { mtls: { mode: 'DISABLE' } }),
    pa('z-closed', 'none', { mtls: { mode: 'STRICT' } }),
    // PERMISSIVE beats DISABLE (both allow plaintext; the order is STRICT > PERMISSIVE > DISABLE > UNSET).
    pa('a-off', 'pd', { mtls: { mode: 'DISABLE' } }, T),
    pa('z-perm', 'pd', { mtls: { mode: 'PERMISSIVE' } }, T),
    // UNSET counts as what it inherits: under a STRICT mesh it is STRICT and beats PERMISSIVE.
    pa('mesh', 'istio-system', { mtls: { mode: 'STRICT' } }, T),
    pa('a-perm', 'inherit', { mtls: { mode: 'PERMISSIVE' } }, T),
    pa('z-unset', 'inherit', { mtls: {} }, T),
    // Workload level: two policies select the pod, equal times: STRICT wins.
    pa('a-wl', 'wl', { selector: { matchLabels: { app: 'p' } }, mtls: { mode: 'PERMISSIVE' } }, T),
    pa('z-wl', 'wl', { selector: { matchLabels: { app: 'p' } }, mtls: { mode: 'STRICT' } }, T),
    // Workload level, both STRICT: the one without a plaintext port exception wins.
    pa('a-hole', 'ports', { selector: { matchLabels: { app: 'p' } }, mtls: { mode: 'STRICT' }, portLevelMtls: { '8080': { mode: 'PERMISSIVE' } } }),
    pa('z-tight', 'ports', { selector: { matchLabels: { app: 'p' } }, mtls: { mode: 'STRICT' } }),
    pod('p', 'eq'),
    pod('p', 'none'),
    pod('p', 'pd'),
    pod('p', 'inherit'),
    pod('p', 'wl', { app: 'p' }),
    pod('p', 'ports', { app: 'p' }),
  ]);
  assert.deepEqual(w.of('eq/p'), { mode: 'STRICT', policies: [STATIC] });
  assert.deepEqual(w.of('none/p'), { mode: 'STRICT', policies: [STATIC] });
  assert.equal(w.of('pd/p').mode, 'PERMISSIVE');
  assert.deepEqual(w.of('inherit/p'), { mode: 'STRICT', policies: [STATIC] });
  assert.deepEqual(w.of('wl/p'), { mode: 'STRICT', policies: [STATIC] });
  assert.deepEqual(w.of('ports/p'), { mode: 'STRICT', policies: [STATIC] });
  assert.equal(w.plaintext('ports/p', 8080), false);
  // The warnings say what happened: a tie, decided by strictness.
  const msg = (key: string): string => w.problems.find((p) => p.startsWith(`${key}: `))!;
  assert.match(msg('eq/a-permissive'), /ignored: eq\/z-strict also applies to the whole namespace and was created at the same time \(2024-05-01T00:00:00\.000Z\); on such a tie Ambit applies the stricter: STRICT over this one's PERMISSIVE/);
  assert.match(msg('none/a-open'), /has no creation time either; on such a tie Ambit applies the stricter: STRICT/);
  assert.match(msg('none/b-off'), /STRICT over this one's DISABLE/);
  assert.match(msg('inherit/a-perm'), /STRICT \(inherited, UNSET\) over this one's PERMISSIVE/);
  assert.ok(!w.problems.some((p) => /is older/.test(p)));
});

test('STRICT with a plaintext port: only the converted policy is listed, and it opens exactly that port', () => {
  for (const parent of ['STRICT', 'UNSET']) {
    const w = world([
      pa('mesh', 'istio-system', { mtls: { mode: 'STRICT' } }),
      pa('db', 'ns', { selector: { matchLabels: { app: 'db' } }, mtls: { mode: parent }, portLevelMtls: { '5432': { mode: 'PERMISSIVE' }, '9000': { mode: 'DISABLE' } } }),
      pod('db', 'ns', { app: 'db' }),
    ]);
    assert.deepEqual(w.of('ns/db').policies, ['ns/converted_peer_authentication_db'], parent);
    assert.equal(w.plaintext('ns/db', 5432), true);
    assert.equal(w.plaintext('ns/db', 9000), true);
    assert.equal(w.plaintext('ns/db', 8080), false);
  }
});

test('PERMISSIVE with a STRICT port: the converted policy closes exactly that port', () => {
  for (const [mode, mesh] of [['PERMISSIVE', 'PERMISSIVE'], ['UNSET', 'PERMISSIVE'], ['DISABLE', undefined], ['PERMISSIVE', 'STRICT']] as const) {
    const objects: unknown[] = [
      pa('api', 'ns', { selector: { matchLabels: { app: 'api' } }, mtls: { mode }, portLevelMtls: { '8443': { mode: 'STRICT' }, '8080': { mode: 'PERMISSIVE' } } }),
      pod('api', 'ns', { app: 'api' }),
    ];
    if (mesh) objects.push(pa('mesh', 'istio-system', { mtls: { mode: mesh } }));
    const w = world(objects);
    const label = `${mode} under mesh ${mesh ?? 'none'}`;
    // istiod sends nothing for PERMISSIVE + STRICT port under a STRICT mesh while the workload
    // lists the converted name; Ambit generates it.
    assert.deepEqual(w.of('ns/api').policies, ['ns/converted_peer_authentication_api'], label);
    assert.equal(w.plaintext('ns/api', 8443), false, label);
    assert.equal(w.plaintext('ns/api', 8080), true, label);
    assert.equal(w.plaintext('ns/api', 9999), true, label);
  }
});

test('UNSET workload under an UNSET namespace and a STRICT mesh keeps STRICT on the other ports', () => {
  // istiod's conversion skips the exception here (the namespace policy exists but is UNSET) while
  // the workload drops the static policy: every port would be plaintext.
  const w = world([
    pa('mesh', 'istio-system', { mtls: { mode: 'STRICT' } }),
    pa('ns', 'ns', { mtls: { mode: 'UNSET' } }),
    pa('web', 'ns', { selector: { matchLabels: { app: 'web' } }, portLevelMtls: { '8080': { mode: 'PERMISSIVE' } } }),
    pod('web', 'ns', { app: 'web' }),
  ]);
  assert.equal(w.plaintext('ns/web', 8080), true);
  assert.equal(w.plaintext('ns/web', 8081), false);
});

test('all-STRICT ports under STRICT need no converted policy', () => {
  const w = world([pa('w', 'ns', { selector: { matchLabels: { app: 'a' } }, mtls: { mode: 'STRICT' }, portLevelMtls: { '80': { mode: 'STRICT' } } }), pod('a', 'ns', { app: 'a' })]);
  assert.deepEqual(w.of('ns/a').policies, [STATIC]);
  assert.deepEqual([...w.authorizations.keys()], [STATIC]);
});

test('invalid modes fail closed to STRICT and are reported with the field', () => {
  const w = world([
    pa('typo', 'a', { mtls: { mode: 'STRICTT' } }),
    pa('num', 'b', { mtls: { mode: 3 } }),
    pa('str', 'c', { mtls: 'STRICT' }),
    pa('port', 'd', { selector: { matchLabels: { app: 'x' } }, mtls: { mode: 'PERMISSIVE' }, portLevelMtls: { '8443': { mode: 'strict' } } }),
    pa('badkey', 'e', { selector: { matchLabels: { app: 'x' } }, mtls: { mode: 'PERMISSIVE' }, portLevelMtls: { https: { mode: 'STRICT' } } }),
    pa('map', 'f', { selector: { matchLabels: { app: 'x' } }, mtls: { mode: 'PERMISSIVE' }, portLevelMtls: ['8443'] }),
    pod('p', 'a'),
    pod('p', 'b'),
    pod('p', 'c'),
    pod('p', 'd', { app: 'x' }),
    pod('p', 'e', { app: 'x' }),
    pod('p', 'f', { app: 'x' }),
  ]);
  for (const ns of ['a', 'b', 'c', 'e', 'f']) assert.equal(w.of(`${ns}/p`).mode, 'STRICT', ns);
  assert.equal(w.plaintext('d/p', 8443), false);
  assert.equal(w.plaintext('d/p', 80), true);
  assert.ok(w.problems.some((p) => p.startsWith('a/typo: spec.mtls.mode: "STRICTT"')));
  assert.ok(w.problems.some((p) => p.startsWith('d/port: spec.portLevelMtls.8443.mode')));
});

test('a broken selector: STRICT applies to the whole namespace, anything else is ignored', () => {
  const w = world([
    pa('ns', 'ns', { mtls: { mode: 'PERMISSIVE' } }),
    pa('strict', 'ns', { selector: { matchLabels: { app: 1 } }, mtls: { mode: 'STRICT' } }),
    pa('open', 'other', { selector: 'app=x', mtls: { mode: 'PERMISSIVE' } }),
    pa('ns', 'other', { mtls: { mode: 'STRICT' } }),
    pod('p', 'ns', { app: 'y' }),
    pod('p', 'other', { app: 'x' }),
  ]);
  assert.equal(w.of('ns/p').mode, 'STRICT');
  assert.equal(w.of('other/p').mode, 'STRICT');
});

test('never throws for junk PeerAuthentications', () => {
  const junk: unknown[] = [null, 1, 'x', [], {}, { mode: null }, { '80': null }, { selector: [] }];
  const objects: unknown[] = [pod('p', 'ns', { app: 'a' })];
  junk.forEach((j, i) => {
    objects.push(pa(`s${i}`, 'ns', j));
    objects.push(pa(`m${i}`, 'ns', { mtls: j, selector: { matchLabels: { app: 'a' } } }));
    objects.push(pa(`p${i}`, 'ns', { portLevelMtls: j, selector: { matchLabels: { app: 'a' } } }));
    objects.push(pa(`t${i}`, 'ns', { mtls: { mode: 'PERMISSIVE' } }, j as string));
  });
  const w = world(objects);
  assert.ok(['STRICT', 'PERMISSIVE', 'DISABLE'].includes(w.of('ns/p').mode));
  w.plaintext('ns/p', 80);
});
