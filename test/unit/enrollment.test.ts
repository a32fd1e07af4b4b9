import { test } from 'node:test';
import assert from 'node:assert/strict';
import { enrollment, enrollmentReason, isEnrolled } from '../../mesh/enrollment.js';
import type { Namespace, Pod } from '../../mesh/k8s/types.js';

const MODE = 'istio.io/dataplane-mode';

function ns(name: string, mode?: string): Namespace {
  return { apiVersion: 'v1', kind: 'Namespace', metadata: { name, ...(mode ? { labels: { [MODE]: mode } } : {}) } };
}

function pod(opts: { namespace?: string; mode?: string; hostNetwork?: boolean; sidecarAnnotation?: boolean; istioProxy?: boolean } = {}): Pod {
  const p: Pod = {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name: 'web', namespace: opts.namespace ?? 'demo' },
    spec: { containers: [{ name: 'web' }] },
  };
  if (opts.mode) p.metadata.labels = { [MODE]: opts.mode };
  if (opts.hostNetwork) p.spec.hostNetwork = true;
  if (opts.sidecarAnnotation) p.metadata.annotations = { 'sidecar.istio.io/status': '{"containers":["istio-proxy"]}' };
  if (opts.istioProxy) p.spec.containers.push({ name: 'istio-proxy' });
  return p;
}

test('Istio ambient enrollment matrix: pod label x namespace label', () => {
  // [pod label, namespace label, enrolled]
  const matrix: [string | undefined, string | undefined, boolean][] = [
    [undefined, undefined, false],
    [undefined, 'ambient', true],
    [undefined, 'none', false],
    ['ambient', undefined, true],
    ['ambient', 'none', true],
    ['ambient', 'ambient', true],
    ['none', 'ambient', false],
    ['none', undefined, false],
    // Istio's namespace selector is "pod label NotIn [none]": any other value still enrolls.
    ['sidecar', 'ambient', true],
    ['sidecar', undefined, false],
  ];
  for (const [podMode, nsMode, want] of matrix) {
    assert.equal(isEnrolled(pod({ mode: podMode }), ns('demo', nsMode)), want, `pod=${podMode ?? '-'} namespace=${nsMode ?? '-'}`);
  }
});

test('an unknown namespace (undefined) counts only the pod label', () => {
  assert.equal(isEnrolled(pod({ namespace: 'default' }), undefined), false);
  assert.equal(isEnrolled(pod({ namespace: 'default', mode: 'ambient' }), undefined), true);
});

test('hostNetwork, kube-system and sidecar pods are never enrolled, whatever the labels', () => {
  const cases: [string, Pod, Namespace][] = [
    ['hostNetwork', pod({ mode: 'ambient', hostNetwork: true }), ns('demo', 'ambient')],
    ['kube-system', pod({ namespace: 'kube-system', mode: 'ambient' }), ns('kube-system', 'ambient')],
    ['sidecar annotation', pod({ mode: 'ambient', sidecarAnnotation: true }), ns('demo', 'ambient')],
    ['istio-proxy container', pod({ istioProxy: true }), ns('demo', 'ambient')],
  ];
  for (const [what, p, n] of cases) assert.equal(isEnrolled(p, n), false, what);
});

test('the reason says why, for status output', () => {
  assert.equal(enrollmentReason(pod(), ns('demo', 'ambient')), 'namespace demo label istio.io/dataplane-mode=ambient');
  assert.equal(enrollmentReason(pod({ mode: 'ambient' }), ns('demo')), 'pod label istio.io/dataplane-mode=ambient');
  assert.equal(enrollmentReason(pod({ mode: 'none' }), ns('demo', 'ambient')), 'opted out by pod label istio.io/dataplane-mode=none');
  assert.equal(enrollmentReason(pod({ hostNetwork: true }), ns('demo', 'ambient')), 'hostNetwork pods are never captured');
  assert.equal(enrollmentReason(pod({ istioProxy: true }), ns('demo', 'ambient')), 'the pod has an Istio sidecar');
  assert.equal(enrollmentReason(pod(), ns('demo')), 'neither the pod nor namespace demo has istio.io/dataplane-mode=ambient');
  assert.deepEqual(enrollment(pod({ namespace: 'kube-system', mode: 'ambient' }), undefined), { enrolled: false, reason: 'pods in kube-system are never captured' });
});
