import { AmbitError } from '../errors.js';

/** The HBONE peer answered a CONNECT with a status other than 200. */
export class HboneStatusError extends AmbitError {
  constructor(
    readonly status: number,
    target: string,
  ) {
    super('AMBIT_HBONE_STATUS', `HBONE CONNECT to ${target} was answered ${status}${STATUS_MEANING[status] ? ` (${STATUS_MEANING[status]})` : ''}`);
  }
}

/** The HBONE connection itself failed: TCP, TLS, the peer's identity, or HTTP/2. */
export class HboneConnectionError extends AmbitError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('AMBIT_HBONE_CONNECTION', message, options);
  }
}

const STATUS_MEANING: Record<number, string> = {
  400: 'a malformed request',
  401: 'denied by an authorization policy at the destination',
  503: 'the destination is unknown there or its connect failed',
};
