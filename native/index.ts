// The binding to libambit (native/ambit.c). Everything here is synchronous: each call is a few
// system calls, made at control-plane rate (enrolment, reconciliation), never per packet.
import { existsSync } from 'node:fs';
import { constants } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import koffi from 'koffi';
import { NativeError, NotBuiltError } from '../mesh/errors.js';

export const PROJECT_ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
export const LIBRARY_PATH = join(PROJECT_ROOT, 'build/native/libambit.so');
export const BPF_OBJECT_PATH = join(PROJECT_ROOT, 'build/bpf/redirect.bpf.o');

const errnoNames = new Map<number, string>(Object.entries(constants.errno).map(([name, n]) => [n, name]));

type Fn = (...args: unknown[]) => number;
interface Lib {
  lastError: () => string;
  bpfLoad: Fn;
  objGet: Fn;
  objPin: Fn;
  close: Fn;
  mapUpdate: Fn;
  mapLookup: Fn;
  mapDelete: Fn;
  mapNextKey: Fn;
  mapInfo: Fn;
  progInfo: Fn;
  linkInfo: Fn;
  linkFdById: Fn;
  progFdById: Fn;
  linkUpdate: Fn;
  linkDetach: Fn;
  numPossibleCpus: Fn;
  tcxAttach: Fn;
  tcxQuery: Fn;
  testRun: Fn;
  listen: Fn;
  socket: Fn;
  transparentSocket: Fn;
  getsockoptInt: Fn;
  probeTcx: Fn;
}

let lib: Lib | undefined;

function load(): Lib {
  if (lib) return lib;
  if (!existsSync(LIBRARY_PATH)) throw new NotBuiltError('the native shim (libambit.so)', LIBRARY_PATH);
  const so = koffi.load(LIBRARY_PATH);
  lib = {
    lastError: so.func('const char *ambit_last_error(void)') as () => string,
    bpfLoad: so.func('int ambit_bpf_load(const char *obj, const char *pin_root, void *names, int names_len, void *fds, int max)'),
    objGet: so.func('int ambit_obj_get(const char *path)'),
    objPin: so.func('int ambit_obj_pin(int fd, const char *path)'),
    close: so.func('int ambit_close(int fd)'),
    mapUpdate: so.func('int ambit_map_update(int fd, const void *key, const void *value, uint64_t flags)'),
    mapLookup: so.func('int ambit_map_lookup(int fd, const void *key, void *value)'),
    mapDelete: so.func('int ambit_map_delete(int fd, const void *key)'),
    mapNextKey: so.func('int ambit_map_next_key(int fd, const void *key, void *next)'),
    mapInfo: so.func('int ambit_map_info(int fd, void *out)'),
    progInfo: so.func('int ambit_prog_info(int fd, void *out, void *name, void *tag)'),
    linkInfo: so.func('int ambit_link_info(int fd, void *out)'),
    linkFdById: so.func('int ambit_link_fd_by_id(uint32_t id)'),
    progFdById: so.func('int ambit_prog_fd_by_id(uint32_t id)'),
    linkUpdate: so.func('int ambit_link_update(int link_fd, int prog_fd)'),
    linkDetach: so.func('int ambit_link_detach(int link_fd)'),
    numPossibleCpus: so.func('int ambit_num_possible_cpus(void)'),
    tcxAttach: so.func('int ambit_tcx_attach(int prog_fd, const char *ifname, int ifindex, int egress, const char *netns, void *ifindex_out)'),
    tcxQuery: so.func('int ambit_tcx_query(const char *netns, const char *ifname, int ifindex, int egress, void *ids, int max)'),
    testRun: so.func('int ambit_test_run(int prog_fd, const char *netns, const void *data, int len, void *ctx, int ctx_len, void *out, void *out_len, void *retval)'),
    listen: so.func('int ambit_listen(const char *netns, const char *ip, int port, int transparent, int reuseport, uint32_t mark, int backlog)'),
    socket: so.func('int ambit_socket(const char *netns, const char *ip, int port)'),
    transparentSocket: so.func('int ambit_transparent_socket(const char *ip)'),
    getsockoptInt: so.func('int ambit_getsockopt_int(int fd, int level, int opt)'),
    probeTcx: so.func('int ambit_probe_tcx(int prog_fd)'),
  };
  return lib;
}

/** Throws a NativeError for a negative return; returns non-negative values unchanged. */
function check(ret: number, syscall: string): number {
  if (ret >= 0) return ret;
  const l = load();
  throw new NativeError(syscall, errnoNames.get(-ret) ?? `errno ${-ret}`, l.lastError());
}

export function isBuilt(): boolean {
  return existsSync(LIBRARY_PATH) && existsSync(BPF_OBJECT_PATH);
}

// ---- eBPF objects ------------------------------------------------------------------------------

export interface LoadedObject {
  programs: Map<string, number>;
  maps: Map<string, number>;
}

/**
 * Loads an eBPF object. With pinRoot, its pinned-by-name maps are pinned there, or reused with
 * their contents when compatible ones are already pinned. The caller owns every returned fd.
 */
export function bpfLoad(objectPath: string, pinRoot: string | null): LoadedObject {
  const names = Buffer.alloc(4096);
  const fds = new Int32Array(64);
  const n = check(load().bpfLoad(objectPath, pinRoot, names, names.length, fds, fds.length), 'bpf_object__load');
  const result: LoadedObject = { programs: new Map(), maps: new Map() };
  const lines = names.toString('utf8', 0, names.indexOf(0)).split('\n').filter(Boolean);
  lines.forEach((line, i) => {
    const [kind, name] = line.split(' ') as [string, string];
    (kind === 'prog' ? result.programs : result.maps).set(name, fds[i]!);
  });
  if (lines.length !== n) throw new NativeError('bpf_object__load', 'EPROTO', `expected ${n} names, got ${lines.length}`);
  return result;
}

export function objGet(path: string): number {
  return check(load().objGet(path), `bpf_obj_get(${path})`);
}

export function objPin(fd: number, path: string): void {
  check(load().objPin(fd, path), `bpf_obj_pin(${path})`);
}

export function closeFd(fd: number): void {
  check(load().close(fd), 'close');
}

// ---- maps --------------------------------------------------------------------------------------

export const BPF_ANY = 0n;

export function mapUpdate(fd: number, key: Buffer, value: Buffer, flags: bigint = BPF_ANY): void {
  check(load().mapUpdate(fd, key, value, flags), 'bpf_map_update_elem');
}

/** The value, or null when the key is absent. */
export function mapLookup(fd: number, key: Buffer, valueSize: number): Buffer | null {
  const value = Buffer.alloc(valueSize);
  const ret = load().mapLookup(fd, key, value);
  if (ret === -constants.errno.ENOENT) return null;
  check(ret, 'bpf_map_lookup_elem');
  return value;
}

/** True when the key was present. */
export function mapDelete(fd: number, key: Buffer): boolean {
  const ret = load().mapDelete(fd, key);
  if (ret === -constants.errno.ENOENT) return false;
  check(ret, 'bpf_map_delete_elem');
  return true;
}

export function mapKeys(fd: number, keySize: number): Buffer[] {
  const keys: Buffer[] = [];
  let prev: Buffer | null = null;
  for (;;) {
    const next = Buffer.alloc(keySize);
    const ret = load().mapNextKey(fd, prev, next);
    if (ret === -constants.errno.ENOENT) return keys;
    check(ret, 'bpf_map_get_next_key');
    keys.push(next);
    prev = next;
  }
}

export interface MapInfo {
  type: number;
  keySize: number;
  valueSize: number;
  maxEntries: number;
  id: number;
}

export function mapInfo(fd: number): MapInfo {
  const out = new Uint32Array(5);
  check(load().mapInfo(fd, out), 'bpf_map_get_info');
  return { type: out[0]!, keySize: out[1]!, valueSize: out[2]!, maxEntries: out[3]!, id: out[4]! };
}

export function numPossibleCpus(): number {
  return check(load().numPossibleCpus(), 'libbpf_num_possible_cpus');
}

// ---- programs and links ------------------------------------------------------------------------

export interface ProgInfo {
  id: number;
  type: number;
  name: string;
  tag: string;
}

export function progInfo(fd: number): ProgInfo {
  const out = new Uint32Array(2);
  const name = Buffer.alloc(16);
  const tag = Buffer.alloc(8);
  check(load().progInfo(fd, out, name, tag), 'bpf_prog_get_info');
  const end = name.indexOf(0);
  return { id: out[0]!, type: out[1]!, name: name.toString('utf8', 0, end < 0 ? 16 : end), tag: tag.toString('hex') };
}

export interface LinkInfo {
  type: number;
  id: number;
  progId: number;
  /** For tcx links: the device; 0 once the device has gone (the link is defunct). */
  ifindex: number;
  attachType: number;
}

export function linkInfo(fd: number): LinkInfo {
  const out = new Uint32Array(5);
  check(load().linkInfo(fd, out), 'bpf_link_get_info');
  return { type: out[0]!, id: out[1]!, progId: out[2]!, ifindex: out[3]!, attachType: out[4]! };
}

/** An fd for a link id, or null when the link went away meanwhile. */
export function linkFdById(id: number): number | null {
  const ret = load().linkFdById(id);
  if (ret === -constants.errno.ENOENT) return null;
  return check(ret, 'bpf_link_get_fd_by_id');
}

export function progFdById(id: number): number | null {
  const ret = load().progFdById(id);
  if (ret === -constants.errno.ENOENT) return null;
  return check(ret, 'bpf_prog_get_fd_by_id');
}

/** Atomically replaces the program behind a link. */
export function linkUpdate(linkFd: number, progFd: number): void {
  check(load().linkUpdate(linkFd, progFd), 'bpf_link_update');
}

export function linkDetach(linkFd: number): void {
  check(load().linkDetach(linkFd), 'bpf_link_detach');
}

export type TcxDirection = 'ingress' | 'egress';

export interface Device {
  /** The network namespace the device lives in (a path such as /run/netns/X); omit for our own. */
  netns?: string;
  name?: string;
  ifindex?: number;
}

/** Attaches a program as a tcx link on a device; returns the link fd and the device's ifindex. */
export function tcxAttach(progFd: number, device: Device, direction: TcxDirection): { linkFd: number; ifindex: number } {
  const ifindexOut = new Int32Array(1);
  const linkFd = check(
    load().tcxAttach(progFd, device.name ?? null, device.ifindex ?? 0, direction === 'egress' ? 1 : 0, device.netns ?? null, ifindexOut),
    `tcx attach (${device.name ?? `ifindex ${device.ifindex}`} ${direction})`,
  );
  return { linkFd, ifindex: ifindexOut[0]! };
}

/** The ids of the programs attached to a device's tcx hook, in run order. */
export function tcxQuery(device: Device, direction: TcxDirection): number[] {
  const ids = new Uint32Array(64);
  const n = check(
    load().tcxQuery(device.netns ?? null, device.name ?? null, device.ifindex ?? 0, direction === 'egress' ? 1 : 0, ids, ids.length),
    `tcx query (${device.name ?? `ifindex ${device.ifindex}`} ${direction})`,
  );
  return Array.from(ids.subarray(0, n));
}

/** Proves the kernel takes tcx links, in a private namespace that disappears afterwards. */
export function probeTcx(progFd: number): void {
  check(load().probeTcx(progFd), 'tcx probe');
}

export interface TestRunResult {
  retval: number;
  data: Buffer;
}

/** BPF_PROG_TEST_RUN. `ctx` is a struct __sk_buff; its ifindex fields name devices in `netns`. */
export function testRun(progFd: number, packet: Buffer, ctx: Buffer | null, netns?: string): TestRunResult {
  const out = Buffer.alloc(packet.length + 256);
  const outLen = new Int32Array([out.length]);
  const retval = new Uint32Array(1);
  check(
    load().testRun(progFd, netns ?? null, packet, packet.length, ctx, ctx?.length ?? 0, out, outLen, retval),
    'BPF_PROG_TEST_RUN',
  );
  return { retval: retval[0]! | 0, data: out.subarray(0, outLen[0]!) };
}

// ---- sockets in namespaces ---------------------------------------------------------------------

export interface ListenOptions {
  netns?: string;
  ip?: string;
  port: number;
  transparent?: boolean;
  reusePort?: boolean;
  mark?: number;
  backlog?: number;
}

/** A listening socket fd created inside a network namespace, for net.Server.listen({ fd }). */
export function listenSocket(opts: ListenOptions): number {
  return check(
    load().listen(
      opts.netns ?? null,
      opts.ip ?? '0.0.0.0',
      opts.port,
      opts.transparent ? 1 : 0,
      opts.reusePort ? 1 : 0,
      opts.mark ?? 0,
      opts.backlog ?? 511,
    ),
    `listen ${opts.ip ?? '0.0.0.0'}:${opts.port}${opts.netns ? ` in ${opts.netns}` : ''}`,
  );
}

/** An unconnected TCP socket fd living in a network namespace, optionally bound to a local port. */
export function socketIn(netns: string, bind?: { ip?: string; port?: number }): number {
  return check(load().socket(netns, bind?.ip ?? null, bind?.port ?? 0), `socket in ${netns}`);
}

/**
 * An unconnected TCP socket in this namespace bound to `ip` with IP_TRANSPARENT (any local port):
 * connecting it sends from an address the namespace does not own (the proxy's client's).
 */
export function transparentSocket(ip: string): number {
  return check(load().transparentSocket(ip), `transparent socket from ${ip}`);
}

export const SOL_SOCKET = 1;
export const SOL_IP = 0;
export const SO_MARK = 36;
export const SO_REUSEPORT = 15;
export const IP_TRANSPARENT = 19;

export function getsockoptInt(fd: number, level: number, option: number): number {
  return check(load().getsockoptInt(fd, level, option), 'getsockopt');
}
