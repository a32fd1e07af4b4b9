// HBONE on the wire, against a real ztunnel: a foreign client — node:tls and node:http2 used
// directly, not the project's HBONE client — connects from a pod outside the mesh (plain/outsider,
// node-1) to the 15008 of pods on node-2, which the redirection programs hand to node-2's ztunnel.
// Its certificates are made with openssl: SPIFFE leaves signed by the lab's own root key (the
// control plane's CA directory), one from an unrelated root, one of another trust domain.
//
// What it shows (istio-ambient-spec.md §2.1 and §2.4): TLS 1.3 only, ALPN h2, the dialled pod's
// identity presented without SNI, client certificates required, verified against the mesh root
// and the mesh trust domain; CONNECT answered 200 (bytes then flow), 401 (policy), 400 (not
// CONNECT, bad authority, authority not the dialled pod), 503 (ztunnel's own ports, nothing
// listening); and a ztunnel still serving afterwards.
//
// Fixture test/fixtures/hbone-wire.yaml (its header lists the pods).
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { X509Certificate, randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import http2 from 'node:http2';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import tls from 'node:tls';
import { privilegedSkipReason } from '../support/env.js';
import { EchoConnection, TestLab, waitFor } from '../support/lab.js';
import { makePki, type TestPki } from '../support/pki.js';
import {
  FabricCapture,
  TLS13,
  TLS_CLIENT_HELLO,
  TLS_SERVER_HELLO,
  describeTcp,
  helloExtensions,
  serverHelloVersion,
  tcpStreams,
  tlsHandshakeMessages,
} from '../support/capture.js';
import { httpGetFrom } from '../../lab/connect.js';
import { netnsPath } from '../../lab/topology.js';
import { paths, readState } from '../../lab/state.js';
import { CA_FILES } from '../../controlplane/ca/root-store.js';
import { socketIn } from '../../native/index.js';
import { ADMIN_PORT, type ConfigDump } from '../../agent/ztunnel/admin.js';
import { READINESS_PORT } from '../../mesh/ports.js';
import type { EchoReply } from '../../lab/echo.js';
import type { LabPodPlan } from '../../lab/plan.js';

const skip = privilegedSkipReason();
const LAB = 'zt-wire';
const HBONE_PORT = 15008;
const APP_PORT = 8080;
const TIMEOUT_MS = 5000;
/** Longer than the ztunnel's upstream connect timeout (10 s), so a 503 for it is seen too. */
const UPSTREAM_TIMEOUT_MS = 15_000;
const EXT_SERVER_NAME = 0;
const EXT_ALPN = 16;
const H2_PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1');
/** An empty SETTINGS frame: length 0, type 4, flags 0, stream 0. */
const H2_EMPTY_SETTINGS = Buffer.from([0, 0, 0, 4, 0, 0, 0, 0, 0]);
const H2_FRAME_SETTINGS = 4;

/** A client key and certificate (PEM). */
interface ClientCred {
  key: string;
  cert: string;
}

interface TlsOptions {
  /** Omitted: the client presents no certificate. */
  cred?: ClientCred;
  minVersion?: tls.SecureVersion;
  maxVersion?: tls.SecureVersion;
}

/** How a TLS handshake ended, from the client's side. */
type Handshake = { ok: true; socket: tls.TLSSocket; raw: net.Socket } | { ok: false; how: string };

/** What the server did once the client spoke HTTP/2 after its handshake. */
type Spoken = { kind: 'served'; firstFrameType: number } | { kind: 'refused'; how: string } | { kind: 'silent' };

/** How a CONNECT (or other request) on a stream ended. */
type Answer = { status: number; stream: http2.ClientHttp2Stream } | { status: undefined; how: string };

/** Runs openssl in `cwd`; stderr in the error when it fails. */
function openssl(args: string[], cwd: string): void {
  execFileSync('openssl', args, { cwd, stdio: ['ignore', 'ignore', 'pipe'] });
}

/** An EC P-256 leaf for `uri` (a URI SAN), valid for a day, signed by caCert/caKey. */
function issueLeaf(dir: string, caCertFile: string, caKeyFile: string, uri: string): ClientCred {
  const id = `leaf-${randomBytes(4).toString('hex')}`;
  openssl(['req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', `${id}.key`, '-out', `${id}.csr`, '-subj', '/O=foreign-hbone-client'], dir);
  writeFileSync(
    join(dir, `${id}.ext`),
    `subjectAltName=critical,URI:${uri}\nbasicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth,clientAuth\n`,
  );
  // -set_serial, not -CAcreateserial: nothing is written next to the lab's CA files.
  openssl(
    ['x509', '-req', '-in', `${id}.csr`, '-CA', caCertFile, '-CAkey', caKeyFile, '-set_serial', `0x${randomBytes(12).toString('hex')}`, '-days', '1', '-out', `${id}.pem`, '-extfile', `${id}.ext`],
    dir,
  );
  return { key: readFileSync(join(dir, `${id}.key`), 'utf8'), cert: readFileSync(join(dir, `${id}.pem`), 'utf8') };
}

/** The URI SANs of a certificate as Node renders them. */
function uriSans(cert: { subjectAltName?: string | undefined }): string[] {
  return (cert.subjectAltName ?? '')
    .split(', ')
    .filter((s) => s.startsWith('URI:'))
    .map((s) => s.slice(4));
}

describe('HBONE on the wire: a foreign node:tls + node:http2 client against node-2\'s ztunnel', { skip }, () => {
  let lab: TestLab;
  let certDir: string | undefined;
  let foreignRoot: TestPki | undefined;
  let labRoot: string;
  /** Signed by the lab root: the identity the target's policy allows, one it does not, another trust domain's. */
  let allowed: ClientCred;
  let denied: ClientCred;
  let otherDomain: ClientCred;
  /** Signed by an unrelated openssl root, with an identity the policy would allow. */
  let untrusted: ClientCred;
  let ztunnelPid: number;
  /** Every socket and session the tests open, destroyed in `after` whatever happened. */
  const live = new Set<{ destroy(): void }>();

  const spiffe = (ns: string, sa: string, td = lab.plan.trustDomain) => `spiffe://${td}/ns/${ns}/sa/${sa}`;
  const node = (name: string) => lab.plan.nodes.find((n) => n.name === name)!;
  const outsider = () => lab.pod('plain/outsider');
  const target = () => lab.pod('mesh/target');

  async function dump(nodeName: string): Promise<ConfigDump> {
    const r = await httpGetFrom(netnsPath(node(nodeName).ztunnelNetns), '127.0.0.1', ADMIN_PORT, '/config_dump');
    return JSON.parse(r.body) as ConfigDump;
  }

  before(async () => {
    lab = await TestLab.up('hbone-wire.yaml', LAB);
    const ztunnel = readState(lab.name)?.processes.find((p) => p.component === 'ztunnel' && p.node === 'node-2');
    assert.ok(ztunnel, 'the lab state records node-2\'s ztunnel process');
    ztunnelPid = ztunnel.pid;

    // node-2's ztunnel must know its pods as HBONE, hold the target's policy and their certificates
    // (the HBONE listener answers only for a pod whose certificate it holds); node-1's must know the
    // target as HBONE for the mesh client's connection in the last test.
    await waitFor('node-2: target and other as HBONE, their certificates, the target\'s policy', async () => {
      const d = await dump('node-2');
      const hbone = new Set((d.workloads ?? []).filter((w) => w.protocol === 'HBONE').map((w) => `${w.namespace}/${w.name}`));
      const certs = new Set(d.certificates.filter((c) => c.certChain.length > 0).map((c) => c.identity));
      const attached = (d.workloads ?? []).find((w) => w.namespace === 'mesh' && w.name === 'target')?.authorizationPolicies ?? [];
      return (
        hbone.has('mesh/target') && hbone.has('mesh/other') && certs.has(spiffe('mesh', 'target')) && certs.has(spiffe('mesh', 'other')) &&
        (d.policies ?? []).some((p) => p.namespace === 'mesh' && p.name === 'target-allow-client') && attached.includes('mesh/target-allow-client')
      );
    }, 30_000);
    await waitFor('node-1: target as HBONE', async () => ((await dump('node-1')).workloads ?? []).some((w) => w.name === 'target' && w.protocol === 'HBONE'), 30_000);

    // The lab's CA: a self-signed root whose key the control plane keeps in its state directory.
    const caDir = join(paths.controlPlane(lab.name), 'ca');
    const caCert = join(caDir, CA_FILES.caCert);
    const caKey = join(caDir, CA_FILES.caKey);
    labRoot = readFileSync(paths.rootCert(lab.name), 'utf8');
    assert.equal(
      new X509Certificate(readFileSync(caCert)).fingerprint256,
      new X509Certificate(labRoot).fingerprint256,
      'precondition: the lab CA signs with its root (no intermediate), so a leaf it signs chains to root-cert.pem',
    );
    certDir = mkdtempSync(join(tmpdir(), 'ambit-hbone-wire-'));
    allowed = issueLeaf(certDir, caCert, caKey, spiffe('mesh', 'client'));
    denied = issueLeaf(certDir, caCert, caKey, spiffe('mesh', 'intruder'));
    otherDomain = issueLeaf(certDir, caCert, caKey, spiffe('mesh', 'client', 'elsewhere.example'));
    foreignRoot = makePki('not-the-mesh-root');
    const u = foreignRoot.issue(spiffe('mesh', 'client'));
    untrusted = { key: u.keyPem, cert: u.chain[0]! };
  });

  after(async () => {
    for (const s of live) s.destroy();
    live.clear();
    foreignRoot?.close();
    if (certDir) rmSync(certDir, { recursive: true, force: true });
    await lab?.down();
  });

  function track<T extends { destroy(): void; once(event: 'close', fn: () => void): unknown }>(x: T): T {
    live.add(x);
    x.once('close', () => live.delete(x));
    return x;
  }

  /** A TCP connection from the outsider pod's namespace to ip:port. */
  function dial(ip: string, port: number, from: LabPodPlan = outsider()): Promise<net.Socket> {
    const socket = track(new net.Socket({ fd: socketIn(netnsPath(from.netns)) }));
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        socket.destroy();
        reject(new Error(`TCP connect to ${ip}:${port} from ${from.key} timed out`));
      }, TIMEOUT_MS);
      socket.once('error', (err) => {
        clearTimeout(timer);
        reject(err);
      });
      socket.connect(port, ip, () => {
        clearTimeout(timer);
        socket.removeAllListeners('error');
        socket.on('error', () => undefined);
        resolve(socket);
      });
    });
  }

  /**
   * TLS from the outsider to ip:15008, as a foreign HBONE client would: ALPN h2, the mesh root as
   * the only trust anchor, no SNI (no host name is given; ztunnel's client sends none either), and
   * the peer's identity checked by the tests (SPIFFE leaves have no DNS name to check).
   */
  async function handshake(ip: string, opts: TlsOptions): Promise<Handshake> {
    const raw = await dial(ip, HBONE_PORT);
    const socket = track(
      tls.connect({
        socket: raw,
        ca: [labRoot],
        ...(opts.cred ? { key: opts.cred.key, cert: opts.cred.cert } : {}),
        ALPNProtocols: ['h2'],
        minVersion: opts.minVersion ?? 'TLSv1.3',
        maxVersion: opts.maxVersion ?? 'TLSv1.3',
        rejectUnauthorized: true,
        checkServerIdentity: () => undefined,
      }),
    );
    return new Promise<Handshake>((resolve) => {
      const done = (h: Handshake): void => {
        clearTimeout(timer);
        socket.removeListener('error', onError);
        socket.removeListener('close', onClose);
        if (!h.ok) socket.destroy();
        else socket.on('error', () => undefined);
        resolve(h);
      };
      const onError = (err: NodeJS.ErrnoException): void => done({ ok: false, how: err.code ? `${err.code}: ${err.message}` : err.message });
      const onClose = (): void => done({ ok: false, how: 'closed during the handshake' });
      const timer = setTimeout(() => done({ ok: false, how: `no handshake within ${TIMEOUT_MS} ms` }), TIMEOUT_MS);
      socket.once('secureConnect', () => done({ ok: true, socket, raw }));
      socket.once('error', onError);
      socket.once('close', onClose);
    });
  }

  /**
   * After the client's side of the handshake: sends the HTTP/2 preface and waits for the server's
   * first frame (served) or the end of the connection (refused). In TLS 1.3 the server checks the
   * client's certificate after the client considers the handshake done, so a refusal of the
   * client's certificate shows here, as an alert or a close.
   */
  async function speak(h: Handshake): Promise<Spoken> {
    if (!h.ok) return { kind: 'refused', how: h.how };
    const { socket } = h;
    return new Promise<Spoken>((resolve) => {
      let got = Buffer.alloc(0);
      let finished = false;
      const done = (s: Spoken): void => {
        if (finished) return;
        finished = true;
        clearTimeout(timer);
        socket.destroy();
        resolve(s);
      };
      const timer = setTimeout(() => done({ kind: 'silent' }), TIMEOUT_MS);
      socket.on('data', (chunk: Buffer) => {
        got = Buffer.concat([got, chunk]);
        if (got.length >= 9) done({ kind: 'served', firstFrameType: got[3]! });
      });
      socket.on('error', (err: NodeJS.ErrnoException) => done({ kind: 'refused', how: err.code ? `${err.code}: ${err.message}` : err.message }));
      socket.on('end', () => done({ kind: 'refused', how: 'closed (FIN)' }));
      socket.on('close', () => done({ kind: 'refused', how: 'closed' }));
      socket.write(Buffer.concat([H2_PREFACE, H2_EMPTY_SETTINGS]));
    });
  }

  /** An HTTP/2 session over a foreign TLS connection to ip:15008; also the client's local port. */
  async function session(ip: string, cred: ClientCred): Promise<{ session: http2.ClientHttp2Session; localPort: number }> {
    const h = await handshake(ip, { cred });
    if (!h.ok) throw new Error(`TLS to ${ip}:${HBONE_PORT} failed: ${h.how}`);
    const s = track(http2.connect(`https://${ip}:${HBONE_PORT}`, { createConnection: () => h.socket, settings: { enablePush: false } }));
    s.on('error', () => undefined);
    return { session: s, localPort: h.raw.localPort ?? 0 };
  }

  /** Sends a request and waits for its response headers, or for the stream (or session) to end without one. */
  function ask(s: http2.ClientHttp2Session, headers: http2.OutgoingHttpHeaders, timeoutMs = TIMEOUT_MS, endStream = false): Promise<Answer> {
    let stream: http2.ClientHttp2Stream;
    try {
      stream = s.request(headers, { endStream });
    } catch (err) {
      return Promise.resolve({ status: undefined, how: `request refused locally: ${(err as Error).message}` });
    }
    track(stream);
    return new Promise<Answer>((resolve) => {
      let finished = false;
      const done = (a: Answer): void => {
        if (finished) return;
        finished = true;
        clearTimeout(timer);
        resolve(a);
      };
      const timer = setTimeout(() => done({ status: undefined, how: `no response within ${timeoutMs} ms` }), timeoutMs);
      stream.on('response', (h) => done({ status: Number(h[':status']), stream }));
      stream.on('error', (err: NodeJS.ErrnoException) => done({ status: undefined, how: `stream error ${err.code ?? ''} ${err.message}` }));
      stream.on('close', () => done({ status: undefined, how: `stream closed without a response (RST code ${stream.rstCode ?? '-'}, session ${s.destroyed ? 'destroyed' : s.closed ? 'closed' : 'open'})` }));
    });
  }

  const connect = (s: http2.ClientHttp2Session, authority: string, timeoutMs = TIMEOUT_MS) => ask(s, { ':method': 'CONNECT', ':authority': authority }, timeoutMs);

  function show(a: Answer): string {
    return a.status === undefined ? a.how : `HTTP ${a.status}`;
  }

  /** Asserts the answer's status; the stream (and its upstream, if any) is closed afterwards. */
  function assertStatus(a: Answer, status: number, what: string): void {
    if (a.status !== undefined) a.stream.destroy();
    assert.equal(a.status, status, `${what}: expected HTTP ${status}, got ${show(a)}`);
  }

  /** Reads the stream until `want(text)` holds; what was read. */
  function readUntil(stream: http2.ClientHttp2Stream, want: (text: string) => boolean): Promise<string> {
    return new Promise((resolve, reject) => {
      let text = '';
      const timer = setTimeout(() => reject(new Error(`only ${JSON.stringify(text)} within ${TIMEOUT_MS} ms`)), TIMEOUT_MS);
      stream.setEncoding('utf8');
      stream.on('data', (c: string) => {
        text += c;
        if (want(text)) {
          clearTimeout(timer);
          resolve(text);
        }
      });
      stream.on('close', () => {
        clearTimeout(timer);
        if (!want(text)) reject(new Error(`stream closed after ${JSON.stringify(text)}`));
      });
    });
  }

  /** A CONNECT to the target's app port that must be 200 with bytes flowing both ways through the echo. */
  async function assertTunnel(s: http2.ClientHttp2Session, what: string): Promise<EchoReply> {
    const t = target();
    const a = await connect(s, `${t.ip}:${APP_PORT}`);
    if (a.status !== 200) {
      if (a.status !== undefined) a.stream.destroy();
      assert.fail(`${what}: CONNECT ${t.ip}:${APP_PORT} must be 200, got ${show(a)}`);
    }
    try {
      const line = `wire-${randomBytes(6).toString('hex')}`;
      a.stream.write(`${line}\n`);
      const text = await readUntil(a.stream, (x) => x.includes(`${line}\n`));
      const reply = JSON.parse(text.slice(0, text.indexOf('\n'))) as EchoReply;
      assert.equal(`${reply.namespace}/${reply.pod}`, 'mesh/target', `${what}: the echo answering is the target's`);
      return reply;
    } finally {
      a.stream.destroy();
    }
  }

  // ---- TLS ---------------------------------------------------------------------------------------

  test('TLS 1.3 and ALPN h2 are negotiated, and the dialled pod\'s SPIFFE identity is presented without SNI', async () => {
    const t = target();
    const other = lab.pod('mesh/other');
    const capture = await FabricCapture.start(lab.plan);
    let frames;
    let localPort = 0;
    try {
      const h = await handshake(t.ip, { cred: allowed });
      assert.ok(h.ok, `TLS with an allowed mesh certificate must complete: ${h.ok ? '' : h.how}`);
      localPort = h.raw.localPort ?? 0;
      assert.equal(h.socket.getProtocol(), 'TLSv1.3');
      assert.equal(h.socket.alpnProtocol, 'h2');
      assert.ok(h.socket.authorized, `the server's chain verifies to the mesh root: ${String(h.socket.authorizationError)}`);
      const cert = h.socket.getPeerX509Certificate();
      assert.ok(cert, 'the server presents a certificate');
      assert.deepEqual(uriSans(cert), [spiffe('mesh', 'target')], `the certificate is the target pod's (${cert.subjectAltName})`);
      assert.ok(['TLS_AES_256_GCM_SHA384', 'TLS_AES_128_GCM_SHA256'].includes(h.socket.getCipher().standardName), `an AES-GCM suite (${h.socket.getCipher().standardName})`);
      h.socket.destroy();

      // The same listener, another pod of node-2: the certificate follows the dialled address.
      const o = await handshake(other.ip, { cred: allowed });
      assert.ok(o.ok, `TLS to mesh/other: ${o.ok ? '' : o.how}`);
      assert.deepEqual(uriSans(o.socket.getPeerX509Certificate()!), [spiffe('mesh', 'other')], 'dialling mesh/other gets mesh/other\'s certificate');
      o.socket.destroy();
    } finally {
      frames = await capture.stop();
    }
    const out = tcpStreams(frames).find((s) => s.src === outsider().ip && s.srcPort === localPort && s.dst === t.ip && s.dstPort === HBONE_PORT && s.fromStart);
    const back = tcpStreams(frames).find((s) => s.dst === outsider().ip && s.dstPort === localPort && s.src === t.ip && s.srcPort === HBONE_PORT);
    assert.ok(out && back, `the connection crossed the fabric both ways:\n${describeTcp(frames)}`);
    const hello = tlsHandshakeMessages(out.data).find((m) => m.type === TLS_CLIENT_HELLO);
    assert.ok(hello, 'a ClientHello on the wire');
    const exts = helloExtensions(TLS_CLIENT_HELLO, hello.body);
    assert.equal(exts.has(EXT_SERVER_NAME), false, 'the ClientHello carries no server_name (SNI)');
    assert.ok(exts.get(EXT_ALPN)?.includes(Buffer.from('\x02h2', 'latin1')), 'the ClientHello offers ALPN h2');
    const serverHello = tlsHandshakeMessages(back.data).find((m) => m.type === TLS_SERVER_HELLO);
    assert.ok(serverHello, 'a ServerHello on the wire');
    assert.equal(serverHelloVersion(serverHello.body), TLS13, 'the ServerHello selects TLS 1.3');
  });

  test('a client certificate of the mesh is served HTTP/2 (the control for the refusals below)', async () => {
    const s = await speak(await handshake(target().ip, { cred: allowed }));
    assert.deepEqual(s, { kind: 'served', firstFrameType: H2_FRAME_SETTINGS }, 'the server answers the preface with its SETTINGS');
  });

  test('a TLS 1.2-only client is refused in the handshake', async (t) => {
    const h = await handshake(target().ip, { cred: allowed, minVersion: 'TLSv1.2', maxVersion: 'TLSv1.2' });
    assert.ok(!h.ok, `TLS 1.2 must not be negotiated${h.ok ? ` (got ${h.socket.getProtocol()})` : ''}`);
    t.diagnostic(`refused: ${h.how}`);
  });

  test('a client without a certificate is refused', async (t) => {
    const s = await speak(await handshake(target().ip, {}));
    assert.ok(s.kind === 'refused', `no client certificate: ${JSON.stringify(s)}`);
    t.diagnostic(`refused: ${s.how}`);
  });

  test('a client certificate from another root is refused', async (t) => {
    const s = await speak(await handshake(target().ip, { cred: untrusted }));
    assert.ok(s.kind === 'refused', `an untrusted client certificate: ${JSON.stringify(s)}`);
    t.diagnostic(`refused: ${s.how}`);
  });

  test('a certificate of another trust domain (signed by the mesh root) has its session closed before any stream is served', async (ctx) => {
    const t = target();
    const since = lab.accessLog('node-2').length;
    const h = await handshake(t.ip, { cred: otherDomain });
    if (!h.ok) {
      // Refused in the handshake itself (what Istio's ztunnel does): no stream can be served either.
      ctx.diagnostic(`refused in the TLS handshake: ${h.how}`);
      return;
    }
    const s = track(http2.connect(`https://${t.ip}:${HBONE_PORT}`, { createConnection: () => h.socket, settings: { enablePush: false } }));
    s.on('error', () => undefined);
    try {
      const a = await connect(s, `${t.ip}:${APP_PORT}`);
      if (a.status !== undefined) a.stream.destroy();
      assert.equal(a.status, undefined, `a CONNECT from trust domain elsewhere.example must get no answer, got ${show(a)}`);
      await waitFor('the session to be closed', () => s.destroyed || s.closed, TIMEOUT_MS);
      ctx.diagnostic(`TLS completed, then: ${a.how}`);
    } finally {
      s.destroy();
    }
    const reached = lab.accessLog('node-2').slice(since).filter((l) => l['src.identity']?.includes('elsewhere.example'));
    assert.deepEqual(reached, [], 'no connection from the foreign trust domain reached the proxy');
  });

  // ---- CONNECT status codes ------------------------------------------------------------------------

  test('CONNECT <pod ip>:8080 with the allowed identity: 200, and bytes flow both ways to the pod', async () => {
    const { session: s } = await session(target().ip, allowed);
    try {
      const reply = await assertTunnel(s, 'the allowed identity');
      assert.equal(reply.destination, `${target().ip}:${APP_PORT}`, 'the pod was reached on the port the authority named');
      // Two streams at once on the one connection: HBONE multiplexes.
      await Promise.all([assertTunnel(s, 'a second stream'), assertTunnel(s, 'a third stream')]);
    } finally {
      s.destroy();
    }
  });

  test('CONNECT with an identity the policy does not allow: 401, logged as a denied connection with the peer identity', async () => {
    const t = target();
    const since = lab.accessLog('node-2').length;
    const { session: s, localPort } = await session(t.ip, denied);
    try {
      assertStatus(await connect(s, `${t.ip}:${APP_PORT}`), 401, 'mesh/intruder to the target');
    } finally {
      s.destroy();
    }
    const line = await waitFor('node-2\'s access log to record the denial', () =>
      lab.accessLog('node-2').slice(since).find((l) => l['src.identity'] === spiffe('mesh', 'intruder') && l['dst.hbone_addr'] === `${t.ip}:${APP_PORT}`),
    ).catch(() => undefined);
    assert.ok(line, `an access-log line with src.identity ${spiffe('mesh', 'intruder')}; saw ${JSON.stringify(lab.accessLog('node-2').slice(since))}`);
    assert.equal(line.msg, 'connection complete');
    assert.equal(line.direction, 'inbound');
    assert.equal(line['src.addr'], `${outsider().ip}:${localPort}`, 'the source is the foreign client\'s own address');
    assert.equal(line['dst.workload'], 'target');
    assert.equal(line['dst.identity'], spiffe('mesh', 'target'));
    assert.match(String(line.error ?? ''), /allow policies exist, but none allowed|denied/, 'the line says the policy denied it');
    assert.equal(Number(line.bytes_sent), 0);
    assert.equal(Number(line.bytes_recv), 0);
  });

  test('a GET instead of a CONNECT: 400', async () => {
    const t = target();
    const { session: s } = await session(t.ip, allowed);
    try {
      assertStatus(await ask(s, { ':method': 'GET', ':path': '/', ':authority': `${t.ip}:${APP_PORT}` }, TIMEOUT_MS, true), 400, 'GET');
      assertStatus(await ask(s, { ':method': 'POST', ':path': '/', ':authority': `${t.ip}:${APP_PORT}` }, TIMEOUT_MS, true), 400, 'POST');
      await assertTunnel(s, 'a CONNECT on the same session afterwards');
    } finally {
      s.destroy();
    }
  });

  test('CONNECT to another address than the dialled pod: 400 (another pod of node-2, a pod of node-1, an address no workload has)', async () => {
    const t = target();
    const { session: s } = await session(t.ip, allowed);
    try {
      for (const [authority, what] of [
        [`${lab.pod('mesh/other').ip}:${APP_PORT}`, 'mesh/other, a workload of the same node'],
        [`${lab.pod('mesh/client').ip}:${APP_PORT}`, 'mesh/client, a pod of node-1'],
        [`${node('node-2').ztunnelIP}:${APP_PORT}`, 'node-2\'s ztunnel address'],
        ['192.0.2.7:8080', 'an address no workload has'],
      ] as const) {
        assertStatus(await connect(s, authority), 400, `dialled ${t.ip}, CONNECT ${authority} (${what})`);
      }
      await assertTunnel(s, 'a CONNECT for the dialled pod on the same session afterwards');
    } finally {
      s.destroy();
    }
  });

  test('CONNECT with a malformed authority (a host name, no port, port 0, port 65536): 400', async () => {
    const t = target();
    const { session: s } = await session(t.ip, allowed);
    try {
      for (const authority of [`target.mesh.svc.cluster.local:${APP_PORT}`, t.ip, `${t.ip}:`, `${t.ip}:0`, `${t.ip}:65536`, `${t.ip}:80a`]) {
        assertStatus(await connect(s, authority), 400, `CONNECT ${JSON.stringify(authority)}`);
      }
      await assertTunnel(s, 'a well-formed CONNECT on the same session afterwards');
    } finally {
      s.destroy();
    }
  });

  test('CONNECT to the ztunnel\'s own ports of the pod (15008, 15001, 15006): 503', async () => {
    const t = target();
    const { session: s } = await session(t.ip, allowed);
    try {
      for (const port of [15008, 15001, 15006]) assertStatus(await connect(s, `${t.ip}:${port}`), 503, `CONNECT ${t.ip}:${port}`);
      await assertTunnel(s, 'the app port on the same session afterwards');
    } finally {
      s.destroy();
    }
  });

  test('CONNECT to a port of the pod nothing listens on: 503', async () => {
    const t = target();
    const { session: s } = await session(t.ip, allowed);
    try {
      assertStatus(await connect(s, `${t.ip}:9`, UPSTREAM_TIMEOUT_MS), 503, `CONNECT ${t.ip}:9 (no listener)`);
    } finally {
      s.destroy();
    }
  });

  // ---- afterwards --------------------------------------------------------------------------------

  test('afterwards node-2\'s ztunnel is the same process, ready, and carries mesh and foreign traffic', async () => {
    assert.doesNotThrow(() => process.kill(ztunnelPid, 0), `node-2's ztunnel (pid ${ztunnelPid}) is still running`);
    assert.equal(readState(lab.name)?.processes.find((p) => p.component === 'ztunnel' && p.node === 'node-2')?.pid, ztunnelPid, 'and was not replaced');
    const n = node('node-2');
    const ready = await httpGetFrom(netnsPath(n.netns), n.ztunnelIP, READINESS_PORT, '/healthz/ready');
    assert.equal(ready.status, 200, 'node-2\'s ztunnel answers /healthz/ready');
    const conn = await EchoConnection.open(lab.pod('mesh/client'), target().ip, APP_PORT);
    try {
      assert.equal(`${conn.identity.namespace}/${conn.identity.pod}`, 'mesh/target', 'a mesh client on node-1 reaches the target');
      await conn.roundTrip('still-meshed');
    } finally {
      conn.close();
    }
    const { session: s } = await session(target().ip, allowed);
    try {
      await assertTunnel(s, 'a foreign client once more');
    } finally {
      s.destroy();
    }
  });
});
