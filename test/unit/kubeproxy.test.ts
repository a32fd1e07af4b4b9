import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseManifests } from '../../mesh/k8s/manifest.js';
import { planLab, type LabPlan } from '../../lab/plan.js';
import { endpointChainName, kubeProxyRuleset, serviceChainName } from '../../lab/kubeproxy.js';

function fixture(name: string): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(dir, 'package.json'))) dir = dirname(dir);
  return join(dir, 'test', 'fixtures', name);
}

const EMPTY_SERVICE = 'apiVersion: v1\nkind: Service\nmetadata: {name: empty, namespace: mesh}\nspec: {selector: {app: nobody}, ports: [{port: 80}]}\n';
const UDP_SERVICE = 'apiVersion: v1\nkind: Service\nmetadata: {name: dns, namespace: plain}\nspec: {selector: {app: server}, ports: [{name: dns, port: 53, targetPort: 5353, protocol: UDP}]}\n';

/** The two-node fixture plus a service without endpoints (mesh/empty) and a UDP one (plain/dns). */
function labPlan(extra: string[] = [EMPTY_SERVICE, UDP_SERVICE]): LabPlan {
  const file = fixture('two-node.yaml');
  const text = [readFileSync(file, 'utf8'), ...extra].join('---\n');
  return planLab(parseManifests(text, file), file);
}

test('the ruleset recreates its table in one transaction and DNATs each VIP:port to its endpoints', () => {
  const plan = labPlan();
  const rules = kubeProxyRuleset(plan, 'node-1');
  const echo = plan.services.find((s) => s.key === 'mesh/echo')!;
  const port = echo.ports[0]!;
  const [ep0, ep1] = port.endpoints;
  const svcChain = serviceChainName(echo, port);
  assert.match(svcChain, /^svc-[0-9a-f]{12}$/);
  const lines = rules.split('\n').map((l) => l.trim());
  // Create-if-missing, delete, define: idempotent, and no stale chains survive.
  assert.deepEqual(lines.slice(1, 4), ['table ip ambit-kube-proxy', 'delete table ip ambit-kube-proxy', 'table ip ambit-kube-proxy {']);
  assert.ok(lines.includes(`10.96.0.10 . tcp . 80 : goto ${svcChain},`) || lines.includes(`10.96.0.10 . tcp . 80 : goto ${svcChain}`));
  assert.ok(lines.includes(`numgen random mod 2 vmap { 0 : goto ${endpointChainName(echo, port, ep0!)}, 1 : goto ${endpointChainName(echo, port, ep1!)} } comment "mesh/echo:http/TCP"`));
  assert.ok(lines.includes(`ip saddr ${ep0!.ip} jump mark-for-masquerade`), 'hairpin traffic is masqueraded');
  assert.ok(lines.includes(`meta l4proto tcp dnat to ${ep0!.ip}:8080 comment "mesh/echo-0"`));
  assert.ok(lines.includes('meta l4proto udp dnat to 10.244.2.5:5353 comment "plain/server"'));
  assert.ok(lines.includes('type nat hook prerouting priority dstnat; policy accept;'));
  assert.ok(lines.includes('type nat hook output priority -100; policy accept;'));
  // Cluster IPs without a matching service port are refused: reset for TCP, ICMP otherwise.
  assert.ok(lines.includes('elements = { 10.96.0.10, 10.96.0.11, 10.96.0.12 }'));
  assert.ok(lines.includes('ip daddr @cluster-ips meta l4proto tcp reject with tcp reset'));
  assert.ok(lines.includes('ip daddr @cluster-ips reject'));
  assert.ok(!rules.includes('10.96.0.11 . tcp'), 'a service without endpoints gets no DNAT entry');
});

test('the ruleset is valid with no services at all, and refuses an unknown node', () => {
  const file = fixture('two-node.yaml');
  const noServices = readFileSync(file, 'utf8').split('---\n').filter((d) => !/^kind: Service$/m.test(d)).join('---\n');
  const rules = kubeProxyRuleset(planLab(parseManifests(noServices, file), file), 'node-2');
  assert.ok(!rules.includes('elements'));
  assert.throws(() => kubeProxyRuleset(labPlan(), 'node-3'), { name: 'ConfigError', message: /has no node "node-3" \(nodes: node-1, node-2\)/ });
});

function run(cmd: string, args: string[], input?: string): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(cmd, args, { encoding: 'utf8', input, timeout: 20_000 });
  return { status: r.status, stdout: r.stdout ?? '', stderr: r.stderr ?? (r.error ? String(r.error) : '') };
}

function must(cmd: string, args: string[], input?: string): string {
  const r = run(cmd, args, input);
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed (${r.status}): ${r.stderr}`);
  return r.stdout;
}

function rootSkipReason(): string | false {
  if (process.platform !== 'linux') return 'needs Linux (network namespaces, nftables)';
  if (process.getuid?.() !== 0) return 'needs root to create a network namespace and load nftables rules';
  if (run('nft', ['--version']).status !== 0) return 'needs nft (apt-get install nftables)';
  if (run('ip', ['-V']).status !== 0) return 'needs ip (apt-get install iproute2)';
  return false;
}

const skip = rootSkipReason();
const NETNS = `ambit_unittest_kp_${process.pid}`;
let created = false;

after(() => {
  if (created) run('ip', ['netns', 'del', NETNS]);
});

function inNetns(cmd: string, args: string[], input?: string): string {
  return must('ip', ['netns', 'exec', NETNS, cmd, ...args], input);
}

/** In the namespace: serve on :8080 on every address, dial VIPs, report who answered. */
const PROBE = `
const net = require('net');
const dial = (host, port) => new Promise((resolve) => {
  const c = net.connect({ host, port });
  let data = '';
  c.setTimeout(3000, () => { c.destroy(); resolve('error:TIMEOUT'); });
  c.on('data', (d) => { data += d; });
  c.on('end', () => resolve(data));
  c.on('error', (e) => resolve('error:' + e.code));
});
const server = net.createServer((s) => s.end(s.localAddress.replace('::ffff:', '')));
server.listen(8080, '0.0.0.0', async () => {
  const seen = new Set();
  for (let i = 0; i < 40; i++) seen.add(await dial('10.96.0.10', 80));
  const unknownPort = await dial('10.96.0.10', 81);
  const noEndpoints = await dial('10.96.0.11', 80);
  console.log(JSON.stringify({ seen: [...seen].sort(), unknownPort, noEndpoints }));
  server.close();
});
`;

test('in a throwaway netns: loads, re-applies idempotently, balances across endpoints, rejects the rest', { skip }, () => {
  must('ip', ['netns', 'add', NETNS]);
  created = true;
  must('ip', ['-n', NETNS, 'link', 'set', 'lo', 'up']);
  // The two echo endpoints' addresses live on a veth inside the namespace so node-local traffic
  // reaches them; the VIP range is routed out of it, as a node routes it towards the fabric.
  must('ip', ['-n', NETNS, 'link', 'add', 'kp0', 'type', 'veth', 'peer', 'name', 'kp1']);
  must('ip', ['-n', NETNS, 'link', 'set', 'kp0', 'up']);
  must('ip', ['-n', NETNS, 'link', 'set', 'kp1', 'up']);
  must('ip', ['-n', NETNS, 'addr', 'add', '10.244.1.4/32', 'dev', 'kp0']);
  must('ip', ['-n', NETNS, 'addr', 'add', '10.244.2.3/32', 'dev', 'kp0']);
  must('ip', ['-n', NETNS, 'route', 'add', '10.96.0.0/16', 'dev', 'kp0']);

  const plan = labPlan();
  const rules = kubeProxyRuleset(plan, 'node-1');
  inNetns('nft', ['-f', '-'], rules);
  const first = inNetns('nft', ['list', 'table', 'ip', 'ambit-kube-proxy']);
  inNetns('nft', ['-f', '-'], rules);
  const second = inNetns('nft', ['list', 'table', 'ip', 'ambit-kube-proxy']);
  assert.equal(second, first, 'applying the same ruleset twice leaves the same table');
  const echo = plan.services.find((s) => s.key === 'mesh/echo')!;
  assert.ok(first.includes(`chain ${serviceChainName(echo, echo.ports[0]!)} {`));
  assert.match(first, /10\.96\.0\.10 \. tcp \. 80 : goto svc-[0-9a-f]{12}/);

  const result = JSON.parse(inNetns(process.execPath, ['-e', PROBE])) as { seen: string[]; unknownPort: string; noEndpoints: string };
  assert.deepEqual(result.seen, ['10.244.1.4', '10.244.2.3'], 'both endpoints answer through the VIP');
  assert.equal(result.unknownPort, 'error:ECONNREFUSED', 'an unknown port of a cluster IP is reset, not left to time out');
  assert.equal(result.noEndpoints, 'error:ECONNREFUSED', 'a service without endpoints is reset');

  // Removing a service removes its chains (a flush alone would leave them behind).
  const smaller = kubeProxyRuleset(labPlan([]), 'node-1');
  inNetns('nft', ['-f', '-'], smaller);
  const third = inNetns('nft', ['list', 'table', 'ip', 'ambit-kube-proxy']);
  const udp = plan.services.find((s) => s.key === 'plain/dns')!;
  assert.ok(!third.includes(serviceChainName(udp, udp.ports[0]!)));
  assert.ok(third.includes(serviceChainName(echo, echo.ports[0]!)));
});
