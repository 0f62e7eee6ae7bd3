// Errors a connector reports to the agent, and their translation to the WIT `connector-error`.

/** The error kinds of the WIT `error-kind` enum, so the agent can decide between retrying and stopping. */
export const ErrorKind = Object.freeze({
  /** The configuration is invalid; the message names the field. */
  CONFIG: 'config',
  /** The endpoint cannot be reached or the connection broke; retrying may help. */
  CONNECTION: 'connection',
  /** Credentials were refused. */
  AUTH: 'auth',
  /** The credentials work but lack a privilege; the message names it. */
  PERMISSION: 'permission',
  /** The data or schema uses something this connector cannot carry exactly. */
  UNSUPPORTED: 'unsupported',
  /** The replication state is gone or inconsistent. */
  STATE: 'state',
  /** A bug or an unexpected answer from the remote system. */
  INTERNAL: 'internal',
});

const KINDS = new Set(Object.values(ErrorKind));

/** An error with a message for the person operating the pipeline: what is wrong and how to fix it. */
export class ConnectorError extends Error {
  /**
   * @param {string} kind one of {@link ErrorKind}
   * @param {string} message what is wrong and how to fix it
   */
  constructor(kind, message) {
    super(message);
    this.name = 'ConnectorError';
    this.kind = KINDS.has(kind) ? kind : ErrorKind.INTERNAL;
  }

  /** A `config` error. */
  static config(message) {
    return new ConnectorError(ErrorKind.CONFIG, message);
  }

  /** A `connection` error (the agent retries). */
  static connection(message) {
    return new ConnectorError(ErrorKind.CONNECTION, message);
  }

  /** An `auth` error. */
  static auth(message) {
    return new ConnectorError(ErrorKind.AUTH, message);
  }

  /** A `permission` error. */
  static permission(message) {
    return new ConnectorError(ErrorKind.PERMISSION, message);
  }

  /** An `unsupported` error. */
  static unsupported(message) {
    return new ConnectorError(ErrorKind.UNSUPPORTED, message);
  }

  /** A `state` error. */
  static state(message) {
    return new ConnectorError(ErrorKind.STATE, message);
  }

  /** An `internal` error. */
  static internal(message) {
    return new ConnectorError(ErrorKind.INTERNAL, message);
  }
}

/** The WIT `connector-error` record for anything thrown: a ConnectorError keeps its kind, anything else is `internal`. */
export function toWitError(e, call) {
  if (e instanceof ConnectorError) return { kind: e.kind, message: e.message };
  if (e && typeof e === 'object' && KINDS.has(e.kind) && typeof e.message === 'string') {
    return { kind: e.kind, message: e.message };
  }
  const text = e instanceof Error ? `${e.name}: ${e.message}` : String(e);
  return { kind: ErrorKind.INTERNAL, message: `unexpected error in \`${call}\`: ${text}` };
}
