// The node's holder of workload certificates, as ztunnel's SecretManager (zt:src/identity/manager.rs):
// one key and certificate per identity of the node's enrolled pods, prefetched at background
// priority, fetched at high priority when a connection waits on one, renewed at half-life,
// retried with exponential backoff while an old certificate stays in use until it expires, and
// forgotten when the node no longer runs the identity.
import { ConfigError, errorMessage } from '../../mesh/errors.js';
import { identityUri, parseIdentity, type Identity } from '../../mesh/identity/spiffe.js';
import type { Logger } from '../../mesh/log.js';
import { DEFAULT_BACKOFF, backoffDelay, type BackoffOptions } from './backoff.js';
import { holdCertificate, refreshTime, type HeldCertificate } from './certificate.js';
import { createCsr } from './csr.js';
import { CertificateRefusedError, CertificateTimeoutError, IdentityManagerClosedError } from './errors.js';
import { PriorityQueue } from './queue.js';

export type { HeldCertificate } from './certificate.js';

/** What the manager needs of a CA; CaClient (mesh/identity/ca-client.ts) is one. */
export interface CertificateSigner {
  createCertificate(csrPem: string, validitySeconds: number, identity: Identity, impersonate?: boolean): Promise<string[]>;
}

export interface IdentityManagerOptions {
  ca: CertificateSigner;
  /** The lifetime asked of the CA (ztunnel's SECRET_TTL); default 24 h. */
  ttlSeconds?: number;
  backoff?: BackoffOptions;
  /** CSRs (key generation and CA call) in progress at once; default 8. */
  concurrency?: number;
  log: Logger;
}

export interface FetchOptions {
  /** How long the caller waits for a certificate; default 10 s. */
  timeoutMs?: number;
}

/** Istio's words for a certificate's state (ztunnel's config dump). */
export type CertificateState = 'Initializing' | 'Available' | 'Unavailable';

/** One identity as `ambit ztunnel-config certificates` shows it; times are ISO 8601. */
export interface CertificateStatus {
  identity: string;
  state: CertificateState;
  serial?: string;
  notBefore?: string;
  notAfter?: string;
  /** When the next renewal or retry starts; absent while one is queued or in progress. */
  nextRefresh?: string;
  /** The last failure, cleared by the next success. */
  lastError?: string;
  /** PEM chain, leaf first; no key. */
  chain?: string[];
}

export const DEFAULT_TTL_SECONDS = 86_400;
export const DEFAULT_CONCURRENCY = 8;
export const DEFAULT_FETCH_TIMEOUT_MS = 10_000;
/** While a caller waits on an identity in backoff, it is retried this often, not at the backoff's pace. */
const WAITING_RETRY_MS = 1000;
/** setTimeout fires at once for delays above 2^31−1 ms; a 90-day certificate's half-life is longer. */
const MAX_TIMER_MS = 2 ** 31 - 1;

interface Waiter {
  resolve(cert: HeldCertificate): void;
  reject(err: Error): void;
  timer: NodeJS.Timeout;
}

interface Entry {
  readonly id: Identity;
  readonly uri: string;
  /** In the last setNodeIdentities(); otherwise held only for a fetch() (see dropIfUnwanted). */
  inNodeSet: boolean;
  held?: HeldCertificate;
  inFlight: boolean;
  /** The pending renewal or retry. */
  timer?: NodeJS.Timeout;
  timerDue?: number;
  failures: number;
  lastAttemptAt?: number;
  lastError?: { message: string; retryable: boolean; cause: unknown };
  waiters: Set<Waiter>;
}

/** Whether a waiter should wait for another attempt: a CaRequestError says so; an unknown failure is assumed passing. */
function isRetryable(err: unknown): boolean {
  return !(typeof err === 'object' && err !== null && (err as { retryable?: unknown }).retryable === false);
}

const iso = (ms: number | Date | undefined) => (ms === undefined ? undefined : new Date(ms).toISOString());

export class IdentityManager {
  private readonly ca: CertificateSigner;
  private readonly ttlSeconds: number;
  private readonly backoff: BackoffOptions;
  private readonly concurrency: number;
  private readonly log: Logger;
  private readonly entries = new Map<string, Entry>();
  private readonly queue = new PriorityQueue<Entry>();
  private inFlight = 0;
  private closed = false;
  private readonly issuedListeners: ((held: HeldCertificate) => void)[] = [];

  constructor(opts: IdentityManagerOptions) {
    const ttl = opts.ttlSeconds ?? DEFAULT_TTL_SECONDS;
    const backoff = opts.backoff ?? DEFAULT_BACKOFF;
    const concurrency = opts.concurrency ?? DEFAULT_CONCURRENCY;
    // Whole seconds of at least 1: the CA's unit, and 0 would ask it for its default instead.
    if (!Number.isInteger(ttl) || ttl < 1) throw new ConfigError(`identity manager: ttlSeconds must be a whole number of seconds ≥ 1, got ${ttl}`);
    if (!Number.isInteger(concurrency) || concurrency < 1) throw new ConfigError(`identity manager: concurrency must be an integer ≥ 1, got ${concurrency}`);
    if (!(backoff.initialMs > 0) || !(backoff.maxMs >= backoff.initialMs)) {
      throw new ConfigError(`identity manager: backoff needs 0 < initialMs ≤ maxMs, got ${backoff.initialMs} and ${backoff.maxMs}`);
    }
    this.ca = opts.ca;
    this.ttlSeconds = ttl;
    this.backoff = { initialMs: backoff.initialMs, maxMs: backoff.maxMs };
    this.concurrency = concurrency;
    this.log = opts.log;
  }

  /**
   * The identities of the node's enrolled pods. New ones are prefetched at background priority;
   * those left out are forgotten (timers, key, certificate) unless a fetch() waits on them.
   * Throws InvalidIdentityError, changing nothing, if one is not a valid SPIFFE identity.
   */
  setNodeIdentities(ids: readonly Identity[]): void {
    const wanted = new Map<string, Identity>();
    for (const id of ids) {
      const uri = identityUri(id);
      wanted.set(uri, parseIdentity(uri));
    }
    if (this.closed) return;
    for (const entry of [...this.entries.values()]) {
      if (wanted.has(entry.uri)) continue;
      entry.inNodeSet = false;
      if (entry.waiters.size === 0) this.drop(entry);
    }
    for (const [uri, id] of wanted) {
      const entry = this.entries.get(uri);
      if (entry) {
        entry.inNodeSet = true;
        continue;
      }
      this.queue.push(this.add(uri, id, true), 'background');
    }
    this.pump();
  }

  /**
   * A valid certificate for `id`: at once if one is held, else as soon as the CA answers, ahead
   * of every prefetch and renewal. Rejects with CertificateRefusedError when the CA refuses the
   * identity or answers with a certificate that cannot be held (also at once, if its last answer
   * was such and no new attempt is under way),
   * CertificateTimeoutError after `timeoutMs` (while the CA is unreachable the manager keeps
   * trying until then), IdentityManagerClosedError on close(). An identity outside the node set
   * may be asked for: the CA decides.
   */
  fetch(id: Identity, opts: FetchOptions = {}): Promise<HeldCertificate> {
    const uri = identityUri(id);
    if (this.closed) return Promise.reject(new IdentityManagerClosedError(uri));
    let entry = this.entries.get(uri);
    if (!entry) {
      try {
        entry = this.add(uri, parseIdentity(uri), false);
      } catch (err) {
        return Promise.reject(err);
      }
    }
    const now = Date.now();
    if (entry.held && entry.held.notAfter.getTime() > now) return Promise.resolve(entry.held);
    const queued = this.queue.priorityOf(entry) !== undefined;
    if (entry.lastError && !entry.lastError.retryable && !entry.inFlight && !queued) {
      const err = this.refused(entry);
      this.dropIfUnwanted(entry, now);
      return Promise.reject(err);
    }
    const timeoutMs = opts.timeoutMs ?? DEFAULT_FETCH_TIMEOUT_MS;
    const target = entry;
    const promise = new Promise<HeldCertificate>((resolve, reject) => {
      const waiter: Waiter = {
        resolve,
        reject,
        timer: setTimeout(() => {
          target.waiters.delete(waiter);
          const last = target.lastError ? `; last error: ${target.lastError.message}` : '; the CA has not answered yet';
          reject(new CertificateTimeoutError(`no certificate for ${uri} within ${timeoutMs} ms${last}`));
          this.dropIfUnwanted(target, Date.now());
        }, Math.min(timeoutMs, MAX_TIMER_MS)).unref(),
      };
      target.waiters.add(waiter);
    });
    if (!entry.inFlight) {
      if (queued) {
        this.queue.push(entry, 'high');
      } else if (!(entry.failures > 0 && entry.timer)) {
        // Nothing pending (or only a renewal set for a time that a suspended clock made late).
        this.cancelTimer(entry);
        this.queue.push(entry, 'high');
      } else {
        // In backoff, and a caller waits: the CA may be back, and a backoff grown to minutes
        // would outlast the caller. Retry soon, but at most once a second per identity however
        // many callers wait, so a CA that is still down is not hammered.
        const soon = Math.max(now, (entry.lastAttemptAt ?? 0) + WAITING_RETRY_MS);
        if ((entry.timerDue ?? Infinity) > soon) this.schedule(entry, soon);
      }
      this.pump();
    }
    return promise;
  }

  /** Called with every certificate issued or renewed (copies held elsewhere, e.g. proxy workers, follow it). */
  onIssued(listener: (held: HeldCertificate) => void): void {
    this.issuedListeners.push(listener);
  }

  /** The current certificate for `id` if it is valid now. */
  get(id: Identity): HeldCertificate | undefined {
    const held = this.entries.get(identityUri(id))?.held;
    return held && held.notAfter.getTime() > Date.now() ? held : undefined;
  }

  /** Every identity held, by URI. */
  snapshot(): CertificateStatus[] {
    const now = Date.now();
    return [...this.entries.values()]
      .sort((a, b) => (a.uri < b.uri ? -1 : a.uri > b.uri ? 1 : 0))
      .map((e) => {
        const valid = e.held !== undefined && e.held.notAfter.getTime() > now;
        const status: CertificateStatus = { identity: e.uri, state: valid ? 'Available' : e.held || e.lastError ? 'Unavailable' : 'Initializing' };
        if (e.held) {
          status.serial = e.held.serial;
          status.notBefore = iso(e.held.notBefore);
          status.notAfter = iso(e.held.notAfter);
          status.chain = [...e.held.chain];
        }
        if (e.timerDue !== undefined) status.nextRefresh = iso(e.timerDue);
        if (e.lastError) status.lastError = e.lastError.message;
        return status;
      });
  }

  /** Stops every timer and rejects every waiting fetch; requests in progress end unheard. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const entry of this.entries.values()) {
      this.cancelTimer(entry);
      this.settleWaiters(entry, (w) => w.reject(new IdentityManagerClosedError(entry.uri)));
      entry.held = undefined;
    }
    this.entries.clear();
    this.queue.clear();
  }

  private add(uri: string, id: Identity, inNodeSet: boolean): Entry {
    const entry: Entry = { id, uri, inNodeSet, inFlight: false, failures: 0, waiters: new Set() };
    this.entries.set(uri, entry);
    return entry;
  }

  /** Starts queued requests up to the concurrency limit. */
  private pump(): void {
    while (!this.closed && this.inFlight < this.concurrency) {
      const entry = this.queue.shift();
      if (!entry) return;
      this.start(entry);
    }
  }

  private start(entry: Entry): void {
    entry.inFlight = true;
    entry.lastAttemptAt = Date.now();
    this.inFlight++;
    this.request(entry)
      .then(
        ({ held, receivedAt }) => this.issued(entry, held, receivedAt),
        (err: unknown) => this.failed(entry, err),
      )
      .catch((err: unknown) => this.log.error({ identity: entry.uri, err: errorMessage(err) }, 'certificate bookkeeping failed'))
      .finally(() => {
        this.inFlight--;
        this.pump();
      });
  }

  private async request(entry: Entry): Promise<{ held: HeldCertificate; receivedAt: number }> {
    const { csrPem, keyPem } = await createCsr(entry.id);
    const chain = await this.ca.createCertificate(csrPem, this.ttlSeconds, entry.id, true);
    const receivedAt = Date.now();
    return { held: holdCertificate(entry.id, chain, keyPem, receivedAt), receivedAt };
  }

  /** Whether the entry is still the one held for its identity (not dropped, manager not closed). */
  private current(entry: Entry): boolean {
    return this.entries.get(entry.uri) === entry;
  }

  private issued(entry: Entry, held: HeldCertificate, receivedAt: number): void {
    entry.inFlight = false;
    if (!this.current(entry)) return;
    const renewal = entry.held !== undefined;
    entry.held = held;
    entry.failures = 0;
    entry.lastError = undefined;
    this.settleWaiters(entry, (w) => w.resolve(held));
    for (const l of this.issuedListeners) l(held);
    const refreshAt = refreshTime(held, receivedAt);
    this.schedule(entry, refreshAt);
    this.log.info({ identity: entry.uri, serial: held.serial, notAfter: held.notAfter.toISOString(), refreshAt: iso(refreshAt) }, renewal ? 'certificate renewed' : 'certificate issued');
  }

  private failed(entry: Entry, err: unknown): void {
    entry.inFlight = false;
    if (!this.current(entry)) return;
    const now = Date.now();
    entry.failures++;
    entry.lastError = { message: errorMessage(err), retryable: isRetryable(err), cause: err };
    if (!entry.lastError.retryable) {
      const refusal = this.refused(entry);
      this.settleWaiters(entry, (w) => w.reject(refusal));
    }
    const delay = backoffDelay(entry.failures, this.backoff);
    const stillValid = entry.held !== undefined && entry.held.notAfter.getTime() > now;
    this.log.warn(
      { identity: entry.uri, attempt: entry.failures, retryInMs: delay, keeping: stillValid ? entry.held?.serial : undefined, err: entry.lastError.message },
      stillValid ? 'certificate renewal failed; the current certificate stays in use' : 'certificate request failed',
    );
    this.schedule(entry, now + delay);
    this.dropIfUnwanted(entry, now);
  }

  private refused(entry: Entry): CertificateRefusedError {
    return new CertificateRefusedError(`no certificate for ${entry.uri}: ${entry.lastError?.message ?? 'refused'}`, entry.lastError?.cause);
  }

  private settleWaiters(entry: Entry, settle: (w: Waiter) => void): void {
    for (const w of entry.waiters) {
      clearTimeout(w.timer);
      settle(w);
    }
    entry.waiters.clear();
  }

  /** Queues the entry at `at` (wall clock, as certificate dates are). */
  private schedule(entry: Entry, at: number): void {
    this.cancelTimer(entry);
    entry.timerDue = at;
    const arm = () => {
      const delay = at - Date.now();
      if (delay > 0) {
        entry.timer = setTimeout(arm, Math.min(delay, MAX_TIMER_MS)).unref();
        return;
      }
      entry.timer = undefined;
      entry.timerDue = undefined;
      if (!this.current(entry)) return;
      this.queue.push(entry, entry.waiters.size > 0 ? 'high' : 'background');
      this.pump();
    };
    arm();
  }

  private cancelTimer(entry: Entry): void {
    if (entry.timer) clearTimeout(entry.timer);
    entry.timer = undefined;
    entry.timerDue = undefined;
  }

  /**
   * An identity outside the node set is kept only while a caller waits on it or its certificate
   * is valid (until the next setNodeIdentities() leaves it out): failed one-off fetches do not
   * accumulate and retry for ever.
   */
  private dropIfUnwanted(entry: Entry, now: number): void {
    if (entry.inNodeSet || entry.waiters.size > 0 || !this.current(entry)) return;
    if (entry.held && entry.held.notAfter.getTime() > now) return;
    this.drop(entry);
  }

  private drop(entry: Entry): void {
    this.cancelTimer(entry);
    this.queue.delete(entry);
    entry.held = undefined;
    this.entries.delete(entry.uri);
    this.log.debug({ identity: entry.uri }, 'identity released');
  }
}
