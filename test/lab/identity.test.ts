// Mesh identity in a real lab: the control plane's CA, each node's ztunnel holding the
// certificates of its enrolled pods' identities (through impersonation with its node credential),
// released when they leave, and a root that survives a control-plane restart.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { readFileSync, statSync } from 'node:fs';
import { privilegedSkipReason } from '../support/env.js';
import { TestLab, waitFor } from '../support/lab.js';
import { labStatus } from '../../lab/status.js';
import { restartComponent } from '../../lab/components.js';
import { httpGetFrom } from '../../lab/connect.js';
import { netnsPath } from '../../lab/topology.js';
import { ADMIN_PORT, type ConfigDump } from '../../agent/ztunnel/admin.js';

const skip = privilegedSkipReason();
const WEB = 'spiffe://cluster.local/ns/shop/sa/web';
const DB = 'spiffe://cluster.local/ns/shop/sa/db';

describe('mesh identity in a two-node lab', { skip }, () => {
  let lab: TestLab;

  before(async () => {
    lab = await TestLab.up('identity.yaml', 't-identity');
  });

  after(async () => {
    await lab?.down();
  });

  async function certificates(node: string): Promise<ConfigDump['certificates']> {
    const n = lab.plan.nodes.find((x) => x.name === node)!;
    const r = await httpGetFrom(netnsPath(n.ztunnelNetns), '127.0.0.1', ADMIN_PORT, '/config_dump');
    return (JSON.parse(r.body) as ConfigDump).certificates;
  }

  test('lab status names the node credentials (0600) and the root certificate', async () => {
    const s = await labStatus(lab.name);
    assert.equal(s.credentials.length, 2);
    for (const path of s.credentials) assert.equal(statSync(path).mode & 0o777, 0o600, `${path} is readable by its owner only`);
    assert.ok(s.rootCertificate, 'the root certificate is named');
    assert.ok(new X509Certificate(readFileSync(s.rootCertificate!)).ca);
    assert.ok(s.components.some((c) => c.component === 'controlplane' && c.running && c.address === lab.plan.controlPlane.ip));
  });

  test("each ztunnel holds exactly its node's enrolled identities, signed by the mesh root", async () => {
    const root = new X509Certificate(readFileSync((await labStatus(lab.name)).rootCertificate!));
    for (const [node, identity] of [['node-1', WEB], ['node-2', DB]] as const) {
      const certs = await certificates(node);
      assert.deepEqual(certs.map((c) => c.identity), [identity], `${node} holds ${identity} only (legacy/old is not enrolled)`);
      assert.equal(certs[0]!.state, 'Available');
      const leaf = new X509Certificate(Buffer.from(certs[0]!.certChain[0]!.pem, 'base64'));
      assert.equal(leaf.subjectAltName, `URI:${identity}`);
      assert.ok(leaf.verify(root.publicKey), 'the leaf verifies against the lab root');
      assert.equal(certs[0]!.rootCerts[0]!.serialNumber, root.serialNumber.toLowerCase());
    }
  });

  test('an identity that leaves the node is released; one that joins is fetched', async () => {
    lab.editFile((t) => t.replace(/(name: shop\n\s+labels:\n\s+)istio\.io\/dataplane-mode: ambient/, '$1team: shop'));
    await waitFor('node-1 to release web', async () => (await certificates('node-1')).length === 0);
    lab.editFile((t) => t.replace(/(name: legacy)\n/, '$1\n  labels:\n    istio.io/dataplane-mode: ambient\n'));
    await waitFor('node-1 to hold legacy/default', async () => (await certificates('node-1')).some((c) => c.identity === 'spiffe://cluster.local/ns/legacy/sa/default' && c.state === 'Available'));
    lab.editFile((t) => t.replace(/(name: shop\n\s+labels:\n\s+)team: shop/, '$1istio.io/dataplane-mode: ambient'));
    await waitFor('node-1 to hold web again', async () => (await certificates('node-1')).some((c) => c.identity === WEB && c.state === 'Available'));
  });

  test('the root survives a control-plane restart, and certificates keep coming', async () => {
    const before = readFileSync((await labStatus(lab.name)).rootCertificate!, 'utf8');
    await restartComponent(lab.name, 'controlplane', '-');
    await waitFor('the restarted control plane to be ready', async () => {
      const r = await httpGetFrom(netnsPath(lab.plan.controlPlane.netns), lab.plan.controlPlane.ip, 15014, '/ready', 1000).catch(() => null);
      return r?.status === 200;
    });
    assert.equal(readFileSync((await labStatus(lab.name)).rootCertificate!, 'utf8'), before, 'the same root');
    // An identity fetched after the restart is signed by the same root.
    const LEGACY = 'spiffe://cluster.local/ns/legacy/sa/default';
    const oldSerial = (await certificates('node-1')).find((x) => x.identity === LEGACY)?.certChain[0]?.serialNumber;
    lab.editFile((t) => t.replace(/(name: legacy)\n  labels:\n    istio.io\/dataplane-mode: ambient\n/, '$1\n'));
    await waitFor('node-1 to release legacy/default', async () => !(await certificates('node-1')).some((c) => c.identity === LEGACY));
    lab.editFile((t) => t.replace(/(name: legacy)\n/, '$1\n  labels:\n    istio.io/dataplane-mode: ambient\n'));
    const root = new X509Certificate(before);
    await waitFor('a new certificate from the restarted CA', async () => {
      const c = (await certificates('node-1')).find((x) => x.identity === LEGACY);
      return (
        c?.state === 'Available' &&
        c.certChain[0]!.serialNumber !== oldSerial &&
        new X509Certificate(Buffer.from(c.certChain[0]!.pem, 'base64')).verify(root.publicKey)
      );
    }, 20_000);
  });
});
