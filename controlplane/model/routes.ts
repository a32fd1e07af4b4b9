// Gateway API HTTPRoutes and GRPCRoutes attached to Services (GAMMA) as the rules a waypoint runs.
//
// Malformed input is handled rule by rule, with an error naming the field; the route's other
// rules stay:
// - a rule whose matches cannot be read is left out whole (which requests it was meant for is
//   unknown; dropping only the bad match could widen what the rule does);
// - a rule whose matches are known but whose filters or backends cannot be honoured (a filter
//   Ambit does not support, such as ExtensionRef or an unknown type, or a malformed one) is kept
//   with its matches and RouteRule.invalid_reason set: the waypoint answers the requests it
//   matches with HTTP 500. Gateway API: such a filter must not be skipped and the requests must get
//   an error; leaving the rule out would let them fall through to a less specific rule;
// - a backend that cannot be resolved stays in the rule with invalid_reason set, so its share of
//   requests fails (500) as Gateway API says.

import {
  BackendRef,
  HeaderMatch,
  HeaderModifier,
  Redirect,
  Rewrite,
  RouteFilter,
  RouteMatch,
  RouteRule,
  StringMatch,
} from '../../proto/gen/ambit/waypoint/v1alpha1/waypoint.js';
import type { GRPCRoute, HTTPRoute, Service } from '../../mesh/k8s/types.js';
import type { ModelContext } from './context.js';
import { arr, isRecord, namespaceOf, objectRef, portNumber, show, str } from './labels.js';
import { perView, perObject } from './memo.js';
import { servicePorts } from './ports.js';
import type { Problem } from './types.js';

export type AnyRoute = HTTPRoute | GRPCRoute;
export type RouteKind = 'HTTPRoute' | 'GRPCRoute';

/** A parentRef of a route that names a Service. */
export interface ServiceParent {
  route: AnyRoute;
  kind: RouteKind;
  /** Index in spec.parentRefs. */
  index: number;
  /** `<namespace>/<name>` of the Service. */
  service: string;
  port: number | undefined;
  sectionName: string | undefined;
  /** Set when the reference is not a usable Service reference (a wrong group); the route is ignored for it. */
  invalid: string | undefined;
}

export function routeKind(route: AnyRoute): RouteKind {
  return route.kind === 'GRPCRoute' ? 'GRPCRoute' : 'HTTPRoute';
}

/** Every route's Service parentRefs, by `<namespace>/<service name>`: one pass over all routes per computation. */
export const routeParentsByService = perView((ctx: ModelContext): ReadonlyMap<string, readonly ServiceParent[]> => {
  const out = new Map<string, ServiceParent[]>();
  const add = (route: AnyRoute): void => {
    const spec = isRecord(route.spec) ? route.spec : {};
    arr((spec as Record<string, unknown>).parentRefs).forEach((ref, index) => {
      if (!isRecord(ref) || ref.kind !== 'Service' || typeof ref.name !== 'string') return;
      const namespace = typeof ref.namespace === 'string' ? ref.namespace : namespaceOf(route);
      // A parentRef's group defaults to gateway.networking.k8s.io: a Service needs "" (or "core") spelled out.
      const invalid = ref.group === '' || ref.group === 'core'
        ? undefined
        : `spec.parentRefs[${index}]: kind Service needs group "" (core)${ref.group === undefined ? '; an omitted group means gateway.networking.k8s.io' : `, not ${show(ref.group)}`}, so the route does not attach to it`;
      const port = ref.port === undefined ? undefined : portNumber(ref.port) ?? -1;
      const service = `${namespace}/${ref.name}`;
      const parent: ServiceParent = {
        route,
        kind: routeKind(route),
        index,
        service,
        port: port === -1 ? undefined : port,
        sectionName: str(ref.sectionName),
        invalid: invalid ?? (port === -1 ? `spec.parentRefs[${index}].port: ${show(ref.port)} is not a port number; the route does not attach to it` : undefined),
      };
      const list = out.get(service);
      if (list) list.push(parent);
      else out.set(service, [parent]);
    });
  };
  ctx.view.httpRoutes.forEach(add);
  ctx.view.grpcRoutes.forEach(add);
  return out;
});

/** The service port a parentRef attaches to: 0 for all ports; undefined (with a reason) when it names none of the service's ports. */
export function parentPort(parent: ServiceParent, svc: Service): { port: number | undefined; error?: string } {
  const { ports } = servicePorts(svc);
  if (parent.sectionName !== undefined) {
    const byName = ports.find((p) => p.name === parent.sectionName);
    if (!byName) return { port: undefined, error: `spec.parentRefs[${parent.index}].sectionName: service ${parent.service} has no port named ${show(parent.sectionName)}` };
    if (parent.port !== undefined && parent.port !== byName.port) {
      return { port: undefined, error: `spec.parentRefs[${parent.index}]: sectionName ${show(parent.sectionName)} is port ${byName.port}, not ${parent.port}` };
    }
    return { port: byName.port };
  }
  if (parent.port === undefined) return { port: 0 };
  if (!ports.some((p) => p.port === parent.port)) return { port: undefined, error: `spec.parentRefs[${parent.index}].port: service ${parent.service} has no port ${parent.port}` };
  return { port: parent.port };
}

/** Gateway API's order between routes: oldest first, then by namespace/name. */
export function compareRoutes(a: AnyRoute, b: AnyRoute): number {
  const ta = createdAt(a);
  const tb = createdAt(b);
  if (ta !== tb) return ta < tb ? -1 : 1;
  const ka = `${namespaceOf(a)}/${a.metadata.name}`;
  const kb = `${namespaceOf(b)}/${b.metadata.name}`;
  return ka < kb ? -1 : ka > kb ? 1 : 0;
}

function createdAt(route: AnyRoute): number {
  const value = route.metadata.creationTimestamp;
  const ms = value instanceof Date ? value.getTime() : typeof value === 'string' ? Date.parse(value) : NaN;
  // Without a timestamp (a YAML file) a route sorts after the dated ones, by name.
  return Number.isFinite(ms) ? ms : Number.POSITIVE_INFINITY;
}

/** A route's rules as the waypoint runs them, whatever service it is attached to. */
export interface TranslatedRoute {
  hostnames: string[];
  rules: RouteRule[];
  /** The whole route is refused (a malformed spec or hostname): waypoints leave it out. */
  leftOut: boolean;
  /** One line per problem, for Waypoint.warnings. */
  warnings: string[];
  problems: Problem[];
}

export const translateRoute = perObject((route: AnyRoute, ctx: ModelContext): TranslatedRoute => new RouteTranslator(route, ctx).translate());

// Gateway API's Duration: 1 to 4 numbers of at most 5 digits, each with a unit h, m, s or ms.
const DURATION = /^([0-9]{1,5}(h|m|s|ms)){1,4}$/;
const DURATION_PART = /([0-9]{1,5})(ms|h|m|s)/g;
const UNIT_MS: Readonly<Record<string, number>> = { h: 3_600_000, m: 60_000, s: 1000, ms: 1 };
const MAX_UINT32 = 0xffff_ffff;

/** A Gateway API duration ("10s", "500ms", "1h2m") in milliseconds; undefined when malformed. */
export function durationMs(text: unknown): number | undefined {
  if (typeof text !== 'string' || !DURATION.test(text)) return undefined;
  let total = 0;
  DURATION_PART.lastIndex = 0;
  for (let m = DURATION_PART.exec(text); m; m = DURATION_PART.exec(text)) total += Number(m[1]) * UNIT_MS[m[2]!]!;
  return total <= MAX_UINT32 ? total : undefined;
}

const HEADER_NAME = /^[A-Za-z0-9!#$%&'*+.^_`|~-]+$/;
const HOSTNAME = /^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
const METHODS: ReadonlySet<string> = new Set(['GET', 'HEAD', 'POST', 'PUT', 'DELETE', 'CONNECT', 'OPTIONS', 'TRACE', 'PATCH']);
const HTTP_FILTERS: ReadonlySet<string> = new Set(['RequestHeaderModifier', 'ResponseHeaderModifier', 'RequestRedirect', 'URLRewrite', 'RequestMirror']);
const GRPC_FILTERS: ReadonlySet<string> = new Set(['RequestHeaderModifier', 'ResponseHeaderModifier', 'RequestMirror']);
const REDIRECT_CODES: ReadonlySet<number> = new Set([301, 302, 303, 307, 308]);
const MAX_WEIGHT = 1_000_000;

/** A rule field the waypoint cannot honour: the rule is left out, or answered with 500 (see rule()). */
class BadRule extends Error {
  constructor(readonly field: string, readonly why: string) {
    super(`${field}: ${why}`);
  }
}

class RouteTranslator {
  private readonly kind: RouteKind;
  private readonly namespace: string;
  private readonly warnings: string[] = [];
  private readonly problems: Problem[] = [];

  constructor(private readonly route: AnyRoute, private readonly ctx: ModelContext) {
    this.kind = routeKind(route);
    this.namespace = namespaceOf(route);
  }

  translate(): TranslatedRoute {
    const spec = isRecord(this.route.spec) ? this.route.spec : undefined;
    if (!spec) {
      this.report('error', 'spec', `${show(this.route.spec)} is not an object; the route is left out`);
      return this.result([], [], true);
    }
    const hostnames: string[] = [];
    if (spec.hostnames !== undefined) {
      if (!Array.isArray(spec.hostnames)) {
        this.report('error', 'spec.hostnames', `${show(spec.hostnames)} is not a list; the route is left out`);
        return this.result([], [], true);
      }
      for (const [i, h] of spec.hostnames.entries()) {
        if (typeof h !== 'string' || h.length > 253 || !HOSTNAME.test(h)) {
          // Fewer hostnames would widen the route: leave it out instead.
          this.report('error', `spec.hostnames[${i}]`, `${show(h)} is not a hostname; the route is left out`);
          return this.result([], [], true);
        }
        hostnames.push(h);
      }
    }
    if (spec.rules !== undefined && !Array.isArray(spec.rules)) {
      this.report('error', 'spec.rules', `${show(spec.rules)} is not a list; the route is left out`);
      return this.result(hostnames, [], true);
    }
    const rules: RouteRule[] = [];
    arr(spec.rules).forEach((raw, i) => {
      try {
        rules.push(this.rule(raw, `spec.rules[${i}]`));
      } catch (err) {
        if (!(err instanceof BadRule)) throw err;
        this.report('error', err.field, `${err.why}; the rule is left out`);
      }
    });
    return this.result(hostnames, rules);
  }

  private result(hostnames: string[], rules: RouteRule[], leftOut = false): TranslatedRoute {
    return { hostnames, rules, leftOut, warnings: this.warnings, problems: this.problems };
  }

  private report(severity: Problem['severity'], field: string, message: string): void {
    const text = `${field}: ${message}`;
    this.problems.push({ object: objectRef(this.kind, this.route), severity, message: text });
    this.warnings.push(`${this.kind} ${this.namespace}/${this.route.metadata.name}: ${text}`);
  }

  /** Abandons the rule; the catcher reports it and decides what becomes of the rule. */
  private bad(field: string, message: string): never {
    throw new BadRule(field, message);
  }

  private rule(raw: unknown, field: string): RouteRule {
    if (!isRecord(raw)) this.bad(field, `${show(raw)} is not a rule`);
    const name = raw.name === undefined ? '' : typeof raw.name === 'string' ? raw.name : this.bad(`${field}.name`, `${show(raw.name)} is not a string`);
    const matches = this.list(raw.matches, `${field}.matches`).map((m, i) => (this.kind === 'GRPCRoute' ? this.grpcMatch(m, `${field}.matches[${i}]`) : this.httpMatch(m, `${field}.matches[${i}]`)));
    // No matches: every request (HTTP: path prefix "/", spelled out for the waypoint).
    if (matches.length === 0 && this.kind === 'HTTPRoute') matches.push(RouteMatch.fromPartial({ path: { type: 'PathPrefix', value: '/' } }));
    let filters: RouteFilter[];
    let backends: BackendRef[];
    try {
      filters = this.filters(raw.filters, `${field}.filters`, matches);
      backends = this.list(raw.backendRefs, `${field}.backendRefs`).map((b, i) => this.backend(b, `${field}.backendRefs[${i}]`, true));
    } catch (err) {
      if (!(err instanceof BadRule)) throw err;
      // The matches are known: keep them, and answer them with 500 rather than let the requests
      // fall through to another rule (Gateway API: a filter that cannot be honoured must not be skipped).
      this.report('error', err.field, `${err.why}; the rule is kept for its matches, which the waypoint answers with HTTP 500`);
      return RouteRule.fromPartial({ name, matches, invalidReason: `${err.field}: ${err.why}` });
    }
    const out = RouteRule.fromPartial({ name, matches, filters, backends });
    if (this.kind === 'HTTPRoute' && raw.timeouts !== undefined) this.timeouts(raw.timeouts, `${field}.timeouts`, out);
    return out;
  }

  private list(value: unknown, field: string): unknown[] {
    if (value === undefined || value === null) return [];
    if (!Array.isArray(value)) this.bad(field, `${show(value)} is not a list`);
    return value;
  }

  private httpMatch(raw: unknown, field: string): RouteMatch {
    if (!isRecord(raw)) this.bad(field, `${show(raw)} is not a match`);
    const path = raw.path === undefined ? { type: 'PathPrefix', value: '/' } : this.path(raw.path, `${field}.path`);
    let method = '';
    if (raw.method !== undefined) {
      if (typeof raw.method !== 'string' || !METHODS.has(raw.method)) this.bad(`${field}.method`, `${show(raw.method)} is not an HTTP method Gateway API allows`);
      method = raw.method;
    }
    return RouteMatch.fromPartial({
      path,
      headers: this.headerMatches(raw.headers, `${field}.headers`),
      queryParams: this.headerMatches(raw.queryParams, `${field}.queryParams`),
      method,
    });
  }

  private path(raw: unknown, field: string): StringMatch {
    if (!isRecord(raw)) this.bad(field, `${show(raw)} is not a path match`);
    const type = raw.type ?? 'PathPrefix';
    const value = raw.value ?? '/';
    if (typeof value !== 'string') this.bad(`${field}.value`, `${show(value)} is not a string`);
    if (type === 'Exact' || type === 'PathPrefix') {
      const why = pathProblem(value);
      if (why) this.bad(`${field}.value`, `${show(value)} ${why}`);
    } else if (type === 'RegularExpression') {
      this.regex(value, `${field}.value`);
    } else {
      this.bad(`${field}.type`, `${show(type)} is not Exact, PathPrefix or RegularExpression`);
    }
    return StringMatch.fromPartial({ type, value });
  }

  private regex(value: string, field: string): void {
    try {
      new RegExp(value);
    } catch {
      this.bad(field, `${show(value)} is not a valid regular expression`);
    }
  }

  private headerMatches(raw: unknown, field: string): HeaderMatch[] {
    const seen = new Set<string>();
    const out: HeaderMatch[] = [];
    this.list(raw, field).forEach((h, i) => {
      const f = `${field}[${i}]`;
      if (!isRecord(h)) this.bad(f, `${show(h)} is not a match`);
      if (typeof h.name !== 'string' || !HEADER_NAME.test(h.name)) this.bad(`${f}.name`, `${show(h.name)} is not a header or parameter name`);
      if (typeof h.value !== 'string') this.bad(`${f}.value`, `${show(h.value)} is not a string`);
      const type = h.type ?? 'Exact';
      if (type !== 'Exact' && type !== 'RegularExpression') this.bad(`${f}.type`, `${show(type)} is not Exact or RegularExpression`);
      if (type === 'RegularExpression') this.regex(h.value, `${f}.value`);
      // Gateway API: of entries with the same name (case-insensitive for headers) only the first counts.
      const key = field.endsWith('headers') ? h.name.toLowerCase() : h.name;
      if (seen.has(key)) {
        this.report('warning', `${f}.name`, `${show(h.name)} is matched by an earlier entry; this one is ignored, as Gateway API specifies`);
        return;
      }
      seen.add(key);
      out.push(HeaderMatch.fromPartial({ type, name: h.name, value: h.value }));
    });
    return out;
  }

  private grpcMatch(raw: unknown, field: string): RouteMatch {
    if (!isRecord(raw)) this.bad(field, `${show(raw)} is not a match`);
    let grpcService = '';
    let grpcMethod = '';
    if (raw.method !== undefined) {
      const m = raw.method;
      if (!isRecord(m)) this.bad(`${field}.method`, `${show(m)} is not a method match`);
      const type = m.type ?? 'Exact';
      if (type !== 'Exact' && type !== 'RegularExpression') this.bad(`${field}.method.type`, `${show(type)} is not Exact or RegularExpression`);
      if (m.service !== undefined && typeof m.service !== 'string') this.bad(`${field}.method.service`, `${show(m.service)} is not a string`);
      if (m.method !== undefined && typeof m.method !== 'string') this.bad(`${field}.method.method`, `${show(m.method)} is not a string`);
      grpcService = (m.service as string | undefined) ?? '';
      grpcMethod = (m.method as string | undefined) ?? '';
      if (grpcService === '' && grpcMethod === '') this.bad(`${field}.method`, 'names neither service nor method');
      if (type === 'RegularExpression') {
        if (grpcService !== '') this.regex(grpcService, `${field}.method.service`);
        if (grpcMethod !== '') this.regex(grpcMethod, `${field}.method.method`);
        // The waypoint's matcher takes exact names; a regular expression it would misread is refused.
        this.bad(`${field}.method.type`, 'RegularExpression method matches are not supported yet');
      }
    }
    return RouteMatch.fromPartial({ headers: this.headerMatches(raw.headers, `${field}.headers`), grpcService, grpcMethod });
  }

  private filters(raw: unknown, field: string, matches: RouteMatch[]): RouteFilter[] {
    const allowed = this.kind === 'GRPCRoute' ? GRPC_FILTERS : HTTP_FILTERS;
    const filters = this.list(raw, field).map((f, i) => {
      const ff = `${field}[${i}]`;
      if (!isRecord(f)) this.bad(ff, `${show(f)} is not a filter`);
      if (typeof f.type !== 'string' || !allowed.has(f.type)) {
        const what = f.type === 'ExtensionRef' ? `filter ExtensionRef${isRecord(f.extensionRef) && typeof f.extensionRef.name === 'string' ? ` (${show(f.extensionRef.kind)} ${show(f.extensionRef.name)})` : ''} is not supported by Ambit` : `${show(f.type)} is not a filter type Ambit supports in a ${this.kind}`;
        this.bad(`${ff}.type`, `${what} (supported: ${[...allowed].join(', ')})`);
      }
      switch (f.type) {
        case 'RequestHeaderModifier':
          return RouteFilter.fromPartial({ type: f.type, requestHeaderModifier: this.headerModifier(f.requestHeaderModifier, `${ff}.requestHeaderModifier`) });
        case 'ResponseHeaderModifier':
          return RouteFilter.fromPartial({ type: f.type, responseHeaderModifier: this.headerModifier(f.responseHeaderModifier, `${ff}.responseHeaderModifier`) });
        case 'RequestRedirect':
          return RouteFilter.fromPartial({ type: f.type, requestRedirect: this.redirect(f.requestRedirect, `${ff}.requestRedirect`, matches) });
        case 'URLRewrite':
          return RouteFilter.fromPartial({ type: f.type, urlRewrite: this.rewrite(f.urlRewrite, `${ff}.urlRewrite`, matches) });
        default:
          if (!isRecord(f.requestMirror)) this.bad(`${ff}.requestMirror`, `${show(f.requestMirror)} is not a mirror`);
          return RouteFilter.fromPartial({ type: f.type, requestMirror: this.backend(f.requestMirror.backendRef, `${ff}.requestMirror.backendRef`, false) });
      }
    });
    const types = filters.map((f) => f.type);
    if (types.includes('RequestRedirect') && types.includes('URLRewrite')) this.bad(field, 'RequestRedirect and URLRewrite cannot be used together');
    for (const type of ['RequestHeaderModifier', 'ResponseHeaderModifier', 'RequestRedirect', 'URLRewrite']) {
      if (types.filter((t) => t === type).length > 1) this.bad(field, `${type} is given more than once`);
    }
    return filters;
  }

  private headerModifier(raw: unknown, field: string): HeaderModifier {
    if (!isRecord(raw)) this.bad(field, `${show(raw)} is not a header modifier`);
    const values = (list: unknown, f: string): { name: string; value: string }[] =>
      this.list(list, f).map((h, i) => {
        if (!isRecord(h) || typeof h.name !== 'string' || !HEADER_NAME.test(h.name) || typeof h.value !== 'string') {
          this.bad(`${f}[${i}]`, `${show(h)} is not a header {name, value}`);
        }
        return { name: h.name as string, value: h.value as string };
      });
    const remove = this.list(raw.remove, `${field}.remove`).map((h, i) => {
      if (typeof h !== 'string' || !HEADER_NAME.test(h)) this.bad(`${field}.remove[${i}]`, `${show(h)} is not a header name`);
      return h;
    });
    return HeaderModifier.fromPartial({ set: values(raw.set, `${field}.set`), add: values(raw.add, `${field}.add`), remove });
  }

  private redirect(raw: unknown, field: string, matches: RouteMatch[]): Redirect {
    if (!isRecord(raw)) this.bad(field, `${show(raw)} is not a redirect`);
    if (raw.scheme !== undefined && raw.scheme !== 'http' && raw.scheme !== 'https') this.bad(`${field}.scheme`, `${show(raw.scheme)} is not http or https`);
    const hostname = this.optionalHostname(raw.hostname, `${field}.hostname`);
    let port = 0;
    if (raw.port !== undefined) port = portNumber(raw.port) ?? this.bad(`${field}.port`, `${show(raw.port)} is not a port number`);
    let statusCode = 302;
    if (raw.statusCode !== undefined) {
      if (typeof raw.statusCode !== 'number' || !REDIRECT_CODES.has(raw.statusCode)) this.bad(`${field}.statusCode`, `${show(raw.statusCode)} is not 301, 302, 303, 307 or 308`);
      statusCode = raw.statusCode;
    }
    const path = raw.path === undefined ? undefined : this.pathModifier(raw.path, `${field}.path`, matches);
    return Redirect.fromPartial({ scheme: (raw.scheme as string | undefined) ?? '', hostname, path, port, statusCode });
  }

  private rewrite(raw: unknown, field: string, matches: RouteMatch[]): Rewrite {
    if (!isRecord(raw)) this.bad(field, `${show(raw)} is not a rewrite`);
    const hostname = this.optionalHostname(raw.hostname, `${field}.hostname`);
    const path = raw.path === undefined ? undefined : this.pathModifier(raw.path, `${field}.path`, matches);
    return Rewrite.fromPartial({ hostname, path });
  }

  private optionalHostname(raw: unknown, field: string): string {
    if (raw === undefined) return '';
    if (typeof raw !== 'string' || raw.length > 253 || raw.startsWith('*') || !HOSTNAME.test(raw)) this.bad(field, `${show(raw)} is not a hostname`);
    return raw;
  }

  private pathModifier(raw: unknown, field: string, matches: RouteMatch[]): StringMatch {
    if (!isRecord(raw)) this.bad(field, `${show(raw)} is not a path modifier`);
    if (raw.type === 'ReplaceFullPath') {
      if (typeof raw.replaceFullPath !== 'string' || pathProblem(raw.replaceFullPath)) this.bad(`${field}.replaceFullPath`, `${show(raw.replaceFullPath)} is not a path`);
      return StringMatch.fromPartial({ type: raw.type, value: raw.replaceFullPath });
    }
    if (raw.type === 'ReplacePrefixMatch') {
      if (typeof raw.replacePrefixMatch !== 'string' || pathProblem(raw.replacePrefixMatch)) this.bad(`${field}.replacePrefixMatch`, `${show(raw.replacePrefixMatch)} is not a path`);
      // Gateway API: only meaningful, and only allowed, when every match is a path prefix.
      if (matches.some((m) => m.path?.type !== 'PathPrefix')) this.bad(`${field}.type`, 'ReplacePrefixMatch needs every match of the rule to be a PathPrefix match');
      return StringMatch.fromPartial({ type: raw.type, value: raw.replacePrefixMatch });
    }
    return this.bad(`${field}.type`, `${show(raw.type)} is not ReplaceFullPath or ReplacePrefixMatch`);
  }

  private timeouts(raw: unknown, field: string, rule: RouteRule): void {
    if (!isRecord(raw)) {
      this.report('warning', field, `${show(raw)} is not an object; no timeouts`);
      return;
    }
    const read = (key: 'request' | 'backendRequest'): number | undefined => {
      if (raw[key] === undefined) return undefined;
      const ms = durationMs(raw[key]);
      if (ms === undefined) this.report('warning', `${field}.${key}`, `${show(raw[key])} is not a Gateway API duration (e.g. "10s", "500ms", "1h2m"); no ${key} timeout`);
      return ms;
    };
    const request = read('request');
    const backend = read('backendRequest');
    if (request !== undefined) rule.requestTimeoutMs = request;
    if (backend !== undefined) {
      // Gateway API: the backend timeout may not exceed the whole request's (0 = none).
      if (request !== undefined && request !== 0 && (backend === 0 || backend > request)) {
        this.report('warning', `${field}.backendRequest`, `${show(raw.backendRequest)} is longer than the request timeout ${show(raw.request)}; the request timeout applies`);
        rule.backendRequestTimeoutMs = request;
      } else {
        rule.backendRequestTimeoutMs = backend;
      }
    }
  }

  /** A backendRef (weighted) or a mirror's backendRef (no weight). Unresolvable ones keep invalid_reason. */
  private backend(raw: unknown, field: string, weighted: boolean): BackendRef {
    if (!isRecord(raw)) this.bad(field, `${show(raw)} is not a backend reference`);
    const group = raw.group ?? '';
    const kind = raw.kind ?? 'Service';
    const namespace = typeof raw.namespace === 'string' ? raw.namespace : this.namespace;
    const name = typeof raw.name === 'string' ? raw.name : '';
    let weight = 1;
    if (weighted && raw.weight !== undefined) {
      if (typeof raw.weight !== 'number' || !Number.isInteger(raw.weight) || raw.weight < 0 || raw.weight > MAX_WEIGHT) {
        this.bad(`${field}.weight`, `${show(raw.weight)} is not a weight (0-${MAX_WEIGHT})`);
      }
      weight = raw.weight;
    }
    const port = raw.port === undefined ? undefined : portNumber(raw.port);
    const out = BackendRef.fromPartial({
      hostname: name === '' ? '' : `${name}.${namespace}.svc.${this.ctx.opts.domainSuffix}`,
      namespace,
      port: port ?? 0,
      weight: weighted ? weight : 0,
    });
    const invalid = this.backendProblem(raw, { group, kind, namespace, name, port });
    if (invalid) {
      out.invalidReason = invalid;
      this.report('error', field, `${invalid}; requests sent to it fail (500)`);
    }
    return out;
  }

  private backendProblem(raw: Record<string, unknown>, ref: { group: unknown; kind: unknown; namespace: string; name: string; port: number | undefined }): string | undefined {
    if ((ref.group !== '' && ref.group !== 'core') || ref.kind !== 'Service') return `backend kind ${show(ref.group)}/${show(ref.kind)} is not supported (only Services)`;
    // Per-backend filters: not supported, and Gateway API forbids skipping a filter.
    if (raw.filters !== undefined && raw.filters !== null && !(Array.isArray(raw.filters) && raw.filters.length === 0)) return 'filters on a backendRef are not supported by Ambit (a filter must not be skipped)';
    if (ref.name === '') return `name ${show(raw.name)} is not a service name`;
    if (ref.namespace !== this.namespace) return `backend ${ref.namespace}/${ref.name} is in another namespace, which needs a ReferenceGrant; Ambit does not support ReferenceGrant yet`;
    const svc = this.ctx.services.get(`${ref.namespace}/${ref.name}`);
    if (!svc) return `service ${ref.namespace}/${ref.name} does not exist`;
    if (raw.port === undefined) return 'port is required for a Service backend';
    if (ref.port === undefined) return `port ${show(raw.port)} is not a port number`;
    if (!servicePorts(svc).ports.some((p) => p.port === ref.port)) return `service ${ref.namespace}/${ref.name} has no port ${ref.port}`;
    return undefined;
  }
}

/** Why a Gateway API path value is refused, or undefined when it is fine. */
function pathProblem(value: string): string | undefined {
  if (!value.startsWith('/')) return 'does not start with "/"';
  if (value.length > 1024) return 'is longer than 1024 characters';
  if (value.includes('//') || value.includes('/./') || value.includes('/../') || value.endsWith('/.') || value.endsWith('/..')) return 'is not a normalized path';
  if (value.includes('#') || value.toLowerCase().includes('%2f')) return 'contains "#" or an encoded "/"';
  return undefined;
}
