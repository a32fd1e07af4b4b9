import { AmbitError } from '../errors.js';

/** A Kubernetes API request failed; `status` is the HTTP status when there was one. */
export class KubernetesApiError extends AmbitError {
  readonly status: number | undefined;

  constructor(message: string, status: number | undefined, options?: { cause?: unknown }) {
    super('AMBIT_KUBERNETES_API', message, options);
    this.status = status;
  }
}
