// The node's pinned eBPF state: programs, maps and tcx links under one bpffs directory.
//
// Pins make redirection outlive the agent: killed, it leaves every link and map in place and the
// kernel keeps steering traffic. Opening a Datapath adopts whatever is pinned: maps are reused with
// their contents and links whose device has gone are removed. Live links keep their programs until
// switchPrograms(), which the agent calls once it has filled the maps: when a map had to be
// recreated, the old programs keep using the old map until then, so there is no moment in which
// a link runs over an empty map. Nothing is ever attached twice.
import { existsSync, mkdirSync, readdirSync, rmSync, unlinkSync } from 'node:fs';
import { join } from 'node:path';
import {
  BPF_ANY,
  bpfLoad,
  closeFd,
  linkDetach,
  linkInfo,
  linkUpdate,
  mapDelete,
  mapInfo,
  mapKeys,
  mapLookup,
  mapUpdate,
  numPossibleCpus,
  objGet,
  objPin,
  tcxAttach,
  tcxQuery,
  progInfo,
  BPF_OBJECT_PATH,
  type LinkInfo,
  type TcxDirection,
} from '../../native/index.js';
import {
  MAP_LAYOUT,
  MAP_NAMES,
  PROGRAM_NAMES,
  PROXY_CONFIG_SIZE,
  STAT_NAMES,
  decodePodState,
  POD_F_ENABLED,
  POD_STATE_SIZE,
  decodeProxyConfig,
  encodePodFlags,
  encodePodState,
  encodeProxyConfig,
  ipv4Bytes,
  ipv4String,
  sumPerCpu,
  u32Key,
  type MapName,
  type PodState,
  type ProgramName,
  type ProxyConfig,
  type StatName,
} from '../../bpf/maps.js';
import { BpfLoadError, NativeError } from '../../mesh/errors.js';
import type { Logger } from '../../mesh/log.js';

const LINKS_DIR = 'links';
const PROXY_LINK = 'proxy_ingress';

/** Which program a pinned link runs, from its pin name (pod_<ifindex>_<direction> or proxy_ingress). */
function programForLink(pin: string): ProgramName | null {
  if (pin === PROXY_LINK) return 'proxy_in';
  const m = /^pod_\d+_(ingress|egress)$/.exec(pin);
  if (!m) return null;
  return m[1] === 'ingress' ? 'from_pod' : 'to_pod';
}

export function podLinkName(ifindex: number, direction: TcxDirection): string {
  return `pod_${ifindex}_${direction}`;
}

export interface PinnedLink {
  name: string;
  fd: number;
  info: LinkInfo;
}

export interface OpenResult {
  adoptedLinks: number;
  removedStaleLinks: number;
  recreatedMaps: boolean;
}

export class Datapath {
  readonly root: string;
  private readonly programs: Map<ProgramName, number>;
  private readonly maps: Map<MapName, number>;
  private readonly links = new Map<string, PinnedLink>();
  private readonly log: Logger | undefined;

  private constructor(root: string, programs: Map<ProgramName, number>, maps: Map<MapName, number>, log?: Logger) {
    this.root = root;
    this.programs = programs;
    this.maps = maps;
    this.log = log;
  }

  /** Loads the programs, adopting the maps and links already pinned under `root`. */
  static open(root: string, log?: Logger, objectPath = BPF_OBJECT_PATH): { datapath: Datapath; result: OpenResult } {
    mkdirSync(join(root, LINKS_DIR), { recursive: true });
    let recreatedMaps = false;
    let loaded;
    try {
      loaded = bpfLoad(objectPath, root);
    } catch (err) {
      // A pinned map from an older layout cannot be reused. Its contents are derived state (the
      // agent rewrites every entry from its config), so replacing it loses nothing.
      if (!(err instanceof NativeError) || !/reuse pinned map|mismatch/i.test(err.message)) throw asLoadError(err);
      log?.warn({ err: err.message }, 'pinned maps have an older layout: recreating them');
      for (const name of MAP_NAMES) rmSync(join(root, name), { force: true });
      recreatedMaps = true;
      try {
        loaded = bpfLoad(objectPath, root);
      } catch (again) {
        throw asLoadError(again);
      }
    }
    const programs = new Map<ProgramName, number>();
    for (const name of PROGRAM_NAMES) {
      const fd = loaded.programs.get(name);
      if (fd === undefined) throw new BpfLoadError(`${objectPath} has no program '${name}'`);
      programs.set(name, fd);
    }
    const maps = new Map<MapName, number>();
    for (const name of MAP_NAMES) {
      const fd = loaded.maps.get(name);
      if (fd === undefined) throw new BpfLoadError(`${objectPath} has no map '${name}'`);
      const info = mapInfo(fd);
      const want = MAP_LAYOUT[name];
      if (info.keySize !== want.keySize || info.valueSize !== want.valueSize) {
        throw new BpfLoadError(
          `map ${name}: kernel reports key/value sizes ${info.keySize}/${info.valueSize}, bpf/maps.ts expects ${want.keySize}/${want.valueSize}`,
        );
      }
      maps.set(name, fd);
    }
    const dp = new Datapath(root, programs, maps, log);
    dp.pinPrograms();
    const { adopted, removed } = dp.adoptLinks();
    return { datapath: dp, result: { adoptedLinks: adopted, removedStaleLinks: removed, recreatedMaps } };
  }

  private pinPrograms(): void {
    for (const [name, fd] of this.programs) {
      const path = join(this.root, `prog_${name}`);
      rmSync(path, { force: true });
      objPin(fd, path);
    }
  }

  /** Takes over the live pinned links; unpins links whose device is gone. */
  private adoptLinks(): { adopted: number; removed: number } {
    let adopted = 0;
    let removed = 0;
    const dir = join(this.root, LINKS_DIR);
    for (const name of readdirSync(dir)) {
      const path = join(dir, name);
      const program = programForLink(name);
      let fd: number;
      try {
        fd = objGet(path);
      } catch {
        rmSync(path, { force: true });
        removed++;
        continue;
      }
      const info = linkInfo(fd);
      if (!program || info.ifindex === 0) {
        this.log?.info({ link: name }, program ? 'removing link of a device that is gone' : 'removing unknown pin');
        closeFd(fd);
        unlinkSync(path);
        removed++;
        continue;
      }
      this.links.set(name, { name, fd, info });
      adopted++;
    }
    return { adopted, removed };
  }

  /** Moves every link to this Datapath's programs, atomically per link. Returns how many moved. */
  switchPrograms(): number {
    let moved = 0;
    for (const link of this.links.values()) {
      const program = programForLink(link.name);
      if (!program) continue;
      const fd = this.program(program);
      if (linkInfo(link.fd).progId === progInfo(fd).id) continue;
      linkUpdate(link.fd, fd);
      link.info = linkInfo(link.fd);
      moved++;
    }
    return moved;
  }

  program(name: ProgramName): number {
    const fd = this.programs.get(name);
    if (fd === undefined) throw new Error(`program ${name} not loaded`);
    return fd;
  }

  private map(name: MapName): number {
    const fd = this.maps.get(name);
    if (fd === undefined) throw new Error(`map ${name} not loaded`);
    return fd;
  }

  // ---- links -------------------------------------------------------------------------------------

  /** Ensures the link exists: adopted if pinned and alive on this device, else attached and pinned. */
  private ensureLink(name: string, program: ProgramName, device: { netns?: string; name?: string; ifindex?: number }, direction: TcxDirection): 'adopted' | 'attached' {
    const existing = this.links.get(name);
    if (existing) {
      const info = linkInfo(existing.fd);
      const sameDevice = device.ifindex === undefined || info.ifindex === device.ifindex;
      if (info.ifindex !== 0 && sameDevice) return 'adopted';
      this.removeLink(name);
    }
    const { linkFd } = tcxAttach(this.program(program), device, direction);
    const path = join(this.root, LINKS_DIR, name);
    try {
      rmSync(path, { force: true });
      objPin(linkFd, path);
    } catch (err) {
      // Unpinned, the link would vanish with this process; better to not have it at all.
      linkDetach(linkFd);
      closeFd(linkFd);
      throw err;
    }
    this.links.set(name, { name, fd: linkFd, info: linkInfo(linkFd) });
    return 'attached';
  }

  private removeLink(name: string): void {
    const link = this.links.get(name);
    if (link) {
      try {
        linkDetach(link.fd);
      } catch (err) {
        // A defunct link (device gone) may refuse detach; unpinning below still frees it.
        this.log?.debug({ link: name, err: (err as Error).message }, 'detach failed');
      }
      closeFd(link.fd);
      this.links.delete(name);
    }
    rmSync(join(this.root, LINKS_DIR, name), { force: true });
  }

  /** Attaches from_pod (ingress) and to_pod (egress) to a pod's host-side veth in this netns. */
  attachPod(ifindex: number): 'adopted' | 'attached' {
    const a = this.ensureLink(podLinkName(ifindex, 'ingress'), 'from_pod', { ifindex }, 'ingress');
    const b = this.ensureLink(podLinkName(ifindex, 'egress'), 'to_pod', { ifindex }, 'egress');
    return a === 'adopted' && b === 'adopted' ? 'adopted' : 'attached';
  }

  detachPod(ifindex: number): void {
    this.removeLink(podLinkName(ifindex, 'ingress'));
    this.removeLink(podLinkName(ifindex, 'egress'));
  }

  /**
   * Attaches proxy_in to ztunnel's eth0 (tcx ingress) inside ztunnel's netns, or verifies the
   * pinned link is attached there: eth0 has the same ifindex in every namespace, so a link left on
   * a replaced namespace's eth0 would otherwise pass for the right one.
   */
  attachProxy(netns: string, ifname: string, ifindex: number): 'adopted' | 'attached' {
    const device = { netns, name: ifname, ifindex };
    const how = this.ensureLink(PROXY_LINK, 'proxy_in', device, 'ingress');
    const link = this.links.get(PROXY_LINK)!;
    if (tcxQuery(device, 'ingress').includes(linkInfo(link.fd).progId)) return how;
    this.log?.warn({ netns }, 'the pinned ztunnel link is not on this namespace\'s eth0: re-attaching');
    this.removeLink(PROXY_LINK);
    return this.ensureLink(PROXY_LINK, 'proxy_in', device, 'ingress');
  }

  /** The ifindexes of pods with pinned links. */
  podLinkIfindexes(): Set<number> {
    const out = new Set<number>();
    for (const name of this.links.keys()) {
      const m = /^pod_(\d+)_/.exec(name);
      if (m) out.add(Number(m[1]));
    }
    return out;
  }

  pinnedLinks(): PinnedLink[] {
    return [...this.links.values()].map((l) => ({ ...l, info: linkInfo(l.fd) }));
  }

  // ---- maps --------------------------------------------------------------------------------------

  setProxyConfig(cfg: ProxyConfig): void {
    mapUpdate(this.map('proxy_config'), u32Key(0), encodeProxyConfig(cfg), BPF_ANY);
  }

  proxyConfig(): ProxyConfig | null {
    const v = mapLookup(this.map('proxy_config'), u32Key(0), PROXY_CONFIG_SIZE);
    if (!v || v.readUInt32LE(4) === 0) return null;
    return decodeProxyConfig(v);
  }

  /**
   * Writes a pod's state. The order of the two writes follows the transition, so that proxy_in
   * (which reads pods_by_ip) never classifies a SYN that from_pod (pods_by_ifindex) redirected as
   * inbound: when enabling, the IP first; when disabling, the veth first.
   */
  setPod(ifindex: number, state: PodState): void {
    const byIP = () => mapUpdate(this.map('pods_by_ip'), ipv4Bytes(state.ip), encodePodFlags(state.flags), BPF_ANY);
    const byIfindex = () => mapUpdate(this.map('pods_by_ifindex'), u32Key(ifindex), encodePodState(state), BPF_ANY);
    if (state.flags & POD_F_ENABLED) {
      byIP();
      byIfindex();
    } else {
      byIfindex();
      byIP();
    }
  }

  /** Forgets a veth. pods_by_ip is kept in line separately (syncPodIPs): a reused pod IP may
   * already belong to another veth. */
  deletePod(ifindex: number): void {
    mapDelete(this.map('pods_by_ifindex'), u32Key(ifindex));
  }

  /** Makes pods_by_ip hold exactly `want` (IP → flags). */
  syncPodIPs(want: ReadonlyMap<string, number>): void {
    const have = this.podIPs();
    for (const [ip, flags] of want) {
      if (have.get(ip) !== flags) mapUpdate(this.map('pods_by_ip'), ipv4Bytes(ip), encodePodFlags(flags), BPF_ANY);
    }
    for (const ip of have.keys()) {
      if (!want.has(ip)) mapDelete(this.map('pods_by_ip'), ipv4Bytes(ip));
    }
  }

  pods(): Map<number, PodState> {
    const fd = this.map('pods_by_ifindex');
    const out = new Map<number, PodState>();
    for (const key of mapKeys(fd, 4)) {
      const v = mapLookup(fd, key, POD_STATE_SIZE);
      if (v) out.set(key.readUInt32LE(0), decodePodState(v));
    }
    return out;
  }

  podIPs(): Map<string, number> {
    const fd = this.map('pods_by_ip');
    const out = new Map<string, number>();
    for (const key of mapKeys(fd, 4)) {
      const v = mapLookup(fd, key, 4);
      if (v) out.set(ipv4String(key), v.readUInt32LE(0));
    }
    return out;
  }

  stats(): Record<StatName, bigint> {
    const fd = this.map('stats');
    const size = 8 * numPossibleCpus();
    const out = {} as Record<StatName, bigint>;
    STAT_NAMES.forEach((name, i) => {
      const v = mapLookup(fd, u32Key(i), size);
      out[name] = v ? sumPerCpu(v) : 0n;
    });
    return out;
  }

  /** Closes this process's descriptors; pinned objects stay in the kernel. */
  close(): void {
    for (const l of this.links.values()) closeFd(l.fd);
    this.links.clear();
    for (const fd of [...this.programs.values(), ...this.maps.values()]) closeFd(fd);
    this.programs.clear();
    this.maps.clear();
  }

  /** Detaches every pinned link under `root` and removes the directory: redirection stops. */
  static destroy(root: string): number {
    if (!existsSync(root)) return 0;
    let detached = 0;
    const dir = join(root, LINKS_DIR);
    if (existsSync(dir)) {
      for (const name of readdirSync(dir)) {
        const path = join(dir, name);
        try {
          const fd = objGet(path);
          try {
            linkDetach(fd);
            detached++;
          } catch {
            // Defunct links refuse detach; unpinning frees them.
          }
          closeFd(fd);
        } catch {
          // Not a link (or already gone): removing the pin below is all that is left to do.
        }
      }
    }
    rmSync(root, { recursive: true, force: true });
    return detached;
  }
}

function asLoadError(err: unknown): Error {
  if (err instanceof NativeError) return new BpfLoadError(`loading the redirection programs failed: ${err.message}`);
  return err as Error;
}
