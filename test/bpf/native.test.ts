// The native shim against the real kernel: sockets created inside a namespace carry the options
// the ztunnel relies on, namespaced operations touch only their namespace, and failures name
// what failed.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { once } from 'node:events';
import {
  BPF_OBJECT_PATH,
  IP_TRANSPARENT,
  SOL_IP,
  SOL_SOCKET,
  SO_MARK,
  SO_REUSEPORT,
  bpfLoad,
  closeFd,
  getsockoptInt,
  linkDetach,
  listenSocket,
  probeTcx,
  socketIn,
  tcxAttach,
  tcxQuery,
  progInfo,
  type LoadedObject,
} from '../../native/index.js';
import { NativeError } from '../../mesh/errors.js';
import { privilegedSkipReason } from '../support/env.js';
import { TestNetns } from '../support/netns.js';

const skip = privilegedSkipReason();

describe('native shim', { skip }, () => {
  let ns: TestNetns;
  let obj: LoadedObject;

  before(() => {
    ns = new TestNetns('native');
    ns.ip('addr', 'add', '10.250.0.1/32', 'dev', 'lo');
    obj = bpfLoad(BPF_OBJECT_PATH, null);
  });

  after(() => {
    ns?.delete();
    if (obj) for (const fd of [...obj.programs.values(), ...obj.maps.values()]) closeFd(fd);
  });

  test('a transparent listener is created inside the namespace with its options set', async () => {
    const fd = listenSocket({ netns: ns.path, port: 15001, transparent: true, reusePort: true, mark: 0x539 });
    assert.equal(getsockoptInt(fd, SOL_IP, IP_TRANSPARENT), 1);
    assert.equal(getsockoptInt(fd, SOL_SOCKET, SO_REUSEPORT), 1);
    assert.equal(getsockoptInt(fd, SOL_SOCKET, SO_MARK), 0x539);
    const server = net.createServer((s) => s.end('inside\n'));
    server.listen({ fd });
    await once(server, 'listening');
    // Reachable from inside the namespace, at an address that exists only there.
    const client = new net.Socket({ fd: socketIn(ns.path) });
    client.connect(15001, '10.250.0.1');
    const [data] = (await once(client, 'data')) as [Buffer];
    assert.equal(data.toString(), 'inside\n');
    client.destroy();
    server.close();
  });

  test('a client socket can be bound to a chosen port inside the namespace', async () => {
    const server = net.createServer((s) => s.end(`${s.remotePort}\n`));
    server.listen({ fd: listenSocket({ netns: ns.path, port: 18000 }) });
    await once(server, 'listening');
    const client = new net.Socket({ fd: socketIn(ns.path, { port: 41234 }) });
    client.connect(18000, '10.250.0.1');
    const [data] = (await once(client, 'data')) as [Buffer];
    assert.equal(data.toString(), '41234\n');
    client.destroy();
    server.close();
  });

  test('tcx attach and query happen inside the namespace named, and detach removes the program', () => {
    const prog = obj.programs.get('proxy_in')!;
    const { linkFd, ifindex } = tcxAttach(prog, { netns: ns.path, name: 'lo' }, 'ingress');
    assert.equal(ifindex, 1);
    assert.deepEqual(tcxQuery({ netns: ns.path, name: 'lo' }, 'ingress'), [progInfo(prog).id]);
    linkDetach(linkFd);
    closeFd(linkFd);
    assert.deepEqual(tcxQuery({ netns: ns.path, name: 'lo' }, 'ingress'), []);
  });

  test('failures are NativeErrors naming the call, the errno and what was wrong', () => {
    assert.throws(
      () => listenSocket({ netns: '/run/netns/ambit_test_no_such_ns', port: 1 }),
      (e: unknown) => e instanceof NativeError && e.errno === 'ENOENT' && /ambit_test_no_such_ns/.test(e.message),
    );
    assert.throws(
      () => tcxAttach(obj.programs.get('from_pod')!, { netns: ns.path, name: 'nosuchdev0' }, 'ingress'),
      (e: unknown) => e instanceof NativeError && /nosuchdev0/.test(e.message),
    );
    assert.throws(
      () => bpfLoad('/nonexistent/redirect.bpf.o', null),
      (e: unknown) => e instanceof NativeError && e.code === 'AMBIT_NATIVE' && /nonexistent/.test(e.message),
    );
    assert.throws(
      () => listenSocket({ netns: ns.path, ip: 'not-an-ip', port: 1 }),
      (e: unknown) => e instanceof NativeError && e.errno === 'EINVAL' && /not-an-ip/.test(e.message),
    );
  });

  test('the tcx probe succeeds here, and a failing probe says why', () => {
    probeTcx(obj.programs.get('from_pod')!);
    assert.throws(() => probeTcx(obj.maps.get('stats')!), (e: unknown) => e instanceof NativeError && /tcx attach/.test(e.message));
  });
});
