// `ambit check --node N`: is a lab node's redirection in place? Checks what the kernel holds (the
// pinned links, their devices) as well as what the processes report.
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import type { CheckResult } from '../agent/preflight.js';
import { closeFd, linkInfo, objGet } from '../native/index.js';
import { labStatus, resolveLabName } from './status.js';
import { paths } from './state.js';

export async function nodeChecks(node: string, lab?: string): Promise<CheckResult[]> {
  const name = resolveLabName(lab);
  const s = await labStatus(name);
  const n = s.nodes.find((x) => x.name === node);
  if (!n) return [{ id: 'node', ok: false, message: `lab ${name} has no node ${node} (nodes: ${s.nodes.map((x) => x.name).join(', ')})` }];
  const out: CheckResult[] = [{ id: 'netns', ok: existsSync(`/run/netns/${n.netns}`), message: `node namespace ${n.netns}` }];
  for (const c of s.components.filter((x) => x.node === node)) {
    out.push({ id: c.component, ok: c.running, message: `${c.component} running (pid ${c.pid})`, hint: `see ${c.log}` });
  }
  out.push({ id: 'ztunnel-ready', ok: n.ztunnel.ready, message: `ztunnel ${n.ztunnel.ip} ready (15021 /healthz/ready)` });
  const root = paths.bpfRoot(name, node);
  for (const pod of s.pods.filter((p) => p.node === node && p.enrolled)) {
    out.push({ id: 'redirection', ok: pod.redirection === 'enabled', message: `${pod.namespace}/${pod.name} redirection ${pod.redirection ?? 'missing'}` });
  }
  const linksDir = join(root, 'links');
  const pins = existsSync(linksDir) ? readdirSync(linksDir) : [];
  const defunct = pins.filter((pin) => {
    const fd = objGet(join(linksDir, pin));
    try {
      return linkInfo(fd).ifindex === 0;
    } finally {
      closeFd(fd);
    }
  });
  out.push({
    id: 'links',
    ok: pins.length > 0 && defunct.length === 0,
    message: `${pins.length} pinned tcx links under ${linksDir}${defunct.length ? `, ${defunct.length} defunct: ${defunct.join(', ')}` : ''}`,
    hint: 'restart the node agent: it re-attaches and removes defunct links',
  });
  return out;
}
