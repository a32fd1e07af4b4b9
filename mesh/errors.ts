// Every error Ambit raises on purpose is an AmbitError with a stable `code`, so callers, tests and
// logs can match on the code rather than on message text (the undici / Node core convention).

export class AmbitError extends Error {
  readonly code: string;

  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
    this.name = new.target.name;
  }
}

/** A configuration document (lab file, Kubernetes object) is invalid. Names the document and field. */
export class ConfigError extends AmbitError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('AMBIT_CONFIG_INVALID', message, options);
  }
}

/** The operation needs root (network namespaces, eBPF). */
export class NotRootError extends AmbitError {
  constructor(what: string) {
    super('AMBIT_NOT_ROOT', `${what} needs root (network namespaces and eBPF): run it as root, e.g. with sudo`);
  }
}

/** A lab with this name already exists and --replace was not given. */
export class LabExistsError extends AmbitError {
  constructor(name: string) {
    super('AMBIT_LAB_EXISTS', `a lab named '${name}' already exists: remove it with 'ambit lab down ${name}' or pass --replace`);
  }
}

/** No lab matched the request. */
export class LabNotFoundError extends AmbitError {
  constructor(message: string) {
    super('AMBIT_LAB_NOT_FOUND', message);
  }
}

/** A pod CIDR has fewer addresses than the pods placed on its node. */
export class CidrExhaustedError extends AmbitError {
  constructor(message: string) {
    super('AMBIT_CIDR_EXHAUSTED', message);
  }
}

/** A system call made through the native shim failed; `errno` is the symbolic name (ENOENT, ...). */
export class NativeError extends AmbitError {
  readonly errno: string;
  readonly syscall: string;

  constructor(syscall: string, errno: string, detail?: string) {
    super('AMBIT_NATIVE', `${syscall} failed: ${errno}${detail ? ` (${detail})` : ''}`);
    this.errno = errno;
    this.syscall = syscall;
  }
}

/** The native shim or the eBPF object is missing: the build did not run. */
export class NotBuiltError extends AmbitError {
  constructor(what: string, path: string) {
    super('AMBIT_NOT_BUILT', `${what} is missing at ${path}: run 'npm install' (or 'npm run build') first`);
  }
}

/** The kernel refused to load the eBPF object; the message carries the verifier's words. */
export class BpfLoadError extends AmbitError {
  constructor(message: string) {
    super('AMBIT_BPF_LOAD', message);
  }
}

/** An external command (ip, nft, nsenter) failed; the message carries its stderr. */
export class CommandError extends AmbitError {
  readonly exitCode: number | null;

  constructor(command: string, exitCode: number | null, stderr: string) {
    super('AMBIT_COMMAND_FAILED', `'${command}' failed (exit ${exitCode ?? 'signal'}): ${stderr.trim() || 'no output'}`);
    this.exitCode = exitCode;
  }
}

/** Something did not become ready in time; the message says what was still pending. */
export class TimeoutError extends AmbitError {
  constructor(message: string) {
    super('AMBIT_TIMEOUT', message);
  }
}

export function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
