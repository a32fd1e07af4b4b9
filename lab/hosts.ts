// The lab has no cluster DNS; service names resolve through a per-pod hosts file instead
// (/etc/netns/<pod netns>/hosts, which `ip netns exec` bind-mounts over /etc/hosts). glibc does
// not apply resolv.conf search domains to the hosts file, so every short form a pod may use is
// listed explicitly, and only the pod's own namespace gets the bare service name.

import type { LabPlan, LabPodPlan } from './plan.js';

export function hostsFileFor(plan: LabPlan, pod: Pick<LabPodPlan, 'namespace' | 'name' | 'ip'>): string {
  const lines = [
    `# ${pod.namespace}/${pod.name} in lab ${plan.name}: written by ambit lab, service names as cluster DNS would answer them`,
    '127.0.0.1 localhost',
    '::1 localhost ip6-localhost ip6-loopback',
    `${pod.ip} ${pod.name}`,
  ];
  for (const svc of plan.services) {
    const names = [`${svc.name}.${svc.namespace}`, `${svc.name}.${svc.namespace}.svc`, `${svc.name}.${svc.namespace}.svc.cluster.local`];
    if (svc.namespace === pod.namespace) names.push(svc.name);
    // A headless name answers with its pods' own addresses, as cluster DNS does.
    const addresses = svc.headless ? svc.selected.map((p) => p.ip) : svc.vip === null ? [] : [svc.vip];
    for (const address of addresses) lines.push(`${address} ${names.join(' ')}`);
  }
  return `${lines.join('\n')}\n`;
}
