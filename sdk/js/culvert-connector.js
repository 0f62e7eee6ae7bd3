// Culvert connector SDK for JavaScript.
//
// A connector is a module built with componentize-js against wit/connector.wit. With this
// SDK the module only has to
//   export const sourceConnector = source({ spec, check, discover, open });
// or
//   export const destinationConnector = destination({ spec, check, open });
// where `open` returns a plain object (a reader with `next`/`ack`, or a writer with
// `committed`/`apply`). The SDK parses and validates the configuration against `spec`,
// converts positions, batches and errors to and from their WIT shapes, and turns anything
// thrown into a `connector-error` (a ConnectorError keeps its kind; anything else is
// reported as `internal`). Calls are synchronous: the agent calls one export at a time.

import { counterAdd, gaugeSet, httpSend, log as hostLog, resolve as hostResolve } from 'culvert:connector/host@0.1.0';

import { ConnectorError, ErrorKind, toWitError } from './errors.js';
import { parseConfig } from './config.js';
import { asBytes, compare, toHex } from './position.js';
import { TableRows, changesOf, decodeTable } from './arrow.js';

export { ConnectorError, ErrorKind } from './errors.js';
export { parseConfig, validate } from './config.js';
export * as position from './position.js';
export { selects } from './selection.js';
export { stringify, toBase64, fromBase64 } from './json.js';
export { TableRows, COLUMN_TYPES, CHANGE_COLUMNS, decodeTable, changesOf } from './arrow.js';

/** Structured logs attributed to this connector instance by the agent. */
export const log = Object.freeze({
  trace: (message) => hostLog('trace', String(message)),
  debug: (message) => hostLog('debug', String(message)),
  info: (message) => hostLog('info', String(message)),
  warn: (message) => hostLog('warn', String(message)),
  error: (message) => hostLog('error', String(message)),
});

/** Add `value` (default 1) to a counter metric of this connector instance. */
export function counter(name, value = 1) {
  counterAdd(String(name), BigInt(value));
}

/** Set a gauge metric of this connector instance. */
export function gauge(name, value) {
  gaugeSet(String(name), Number(value));
}

/** Resolve a host name named in the configuration to IP addresses (throws a `connection` error if refused). */
export function resolve(name) {
  try {
    return hostResolve(String(name));
  } catch (e) {
    throw ConnectorError.connection(`cannot resolve ${name}: ${reason(e)}`);
  }
}

function reason(e) {
  if (e && typeof e === 'object' && 'payload' in e) return String(e.payload);
  if (e instanceof Error) return e.message;
  return String(e);
}

/** A URL without its query string, so signatures and tokens stay out of messages. */
export function redactUrl(url) {
  const s = String(url);
  const q = s.search(/[?#]/);
  return q < 0 ? s : `${s.slice(0, q)}?...`;
}

/** `text` with the query string of every URL in it replaced by `?...`. */
export function redactUrls(text) {
  return String(text).replace(/(\bhttps?:\/\/[^\s?#()]*)[?#][^\s()]*/g, '$1?...');
}

const utf8 = new TextEncoder();
const textDecoder = new TextDecoder();

/** The answer to {@link http}. */
export class HttpResponse {
  constructor(res) {
    /** HTTP status code. */
    this.status = res.status;
    /** Header pairs as received. */
    this.headers = res.headers;
    /** Body bytes. */
    this.body = res.body;
  }

  /** Whether the status is 2xx. */
  get ok() {
    return this.status >= 200 && this.status < 300;
  }

  /** The first value of a header (case-insensitive), or null. */
  header(name) {
    const lower = name.toLowerCase();
    const hit = this.headers.find(([k]) => k.toLowerCase() === lower);
    return hit ? hit[1] : null;
  }

  /** The body as UTF-8 text. */
  text() {
    return textDecoder.decode(this.body);
  }

  /** The body parsed as JSON. */
  json() {
    return JSON.parse(this.text());
  }
}

/**
 * An HTTP request made by the agent to an endpoint of the egress allow-list.
 * `headers` is an object or a list of [name, value] pairs; `body` a string, bytes, or an
 * object sent as JSON. HTTP error statuses are returned; a request that could not be made
 * (refused by the allow-list, connection failed, timeout) throws a `connection` error.
 */
export function http({ method = 'GET', url, headers = {}, body } = {}) {
  if (typeof url !== 'string' || url === '') throw new TypeError('http() needs a url');
  const pairs = Array.isArray(headers) ? headers.map(([k, v]) => [String(k), String(v)]) : Object.entries(headers).map(([k, v]) => [k, String(v)]);
  let bytes;
  if (body === undefined || body === null) bytes = new Uint8Array(0);
  else if (body instanceof Uint8Array) bytes = body;
  else if (typeof body === 'string') bytes = utf8.encode(body);
  else {
    bytes = utf8.encode(JSON.stringify(body));
    if (!pairs.some(([k]) => k.toLowerCase() === 'content-type')) pairs.push(['content-type', 'application/json']);
  }
  let res;
  try {
    res = httpSend({ method: method.toUpperCase(), url, headers: pairs, body: bytes });
  } catch (e) {
    // The agent's reason may quote the URL: keep its query (a SAS, a key) out of the message.
    throw ConnectorError.connection(`${method.toUpperCase()} ${redactUrl(url)} failed: ${redactUrls(reason(e))}`);
  }
  return new HttpResponse(res);
}

/** Run `fn`, turning anything thrown into the WIT error the component model expects. */
function guard(call, fn) {
  try {
    return fn();
  } catch (e) {
    const err = toWitError(e, call);
    if (err.kind === ErrorKind.INTERNAL && e instanceof Error && e.stack) {
      try {
        hostLog('debug', `${call}: ${e.stack}`);
      } catch {
        // Logging must never hide the original error.
      }
    }
    // componentize-js maps a thrown object's `payload` to the `err` of a result.
    throw { payload: err };
  }
}

function specText(spec) {
  const value = typeof spec === 'function' ? spec() : spec;
  return typeof value === 'string' ? value : JSON.stringify(value);
}

function specObject(spec) {
  const value = typeof spec === 'function' ? spec() : spec;
  return typeof value === 'string' ? JSON.parse(value) : value;
}

function normalizeChecks(results) {
  if (!results) return [];
  return results.map((r) => ({ name: String(r.name), ok: r.ok === true, message: r.ok ? String(r.message ?? '') : String(r.message || 'failed') }));
}

function runCheck(def, configText) {
  let config;
  try {
    config = parseConfig(configText, specObject(def.spec));
  } catch (e) {
    return [{ name: 'config', ok: false, message: e instanceof Error ? e.message : String(e) }];
  }
  const results = [{ name: 'config', ok: true, message: '' }];
  if (typeof def.check !== 'function') return results;
  try {
    return results.concat(normalizeChecks(def.check(config)));
  } catch (e) {
    const err = toWitError(e, 'check');
    return results.concat([{ name: err.kind === ErrorKind.CONFIG ? 'config' : 'check', ok: false, message: err.message }]);
  }
}

function toTableRows(t) {
  if (t instanceof TableRows) return t.finish();
  if (!t || !t.table || !(t.ipc instanceof Uint8Array)) {
    throw new TypeError('a batch table is a TableRows or {table, firstOfTable, rowCount, ipc}');
  }
  return { table: { namespace: t.table.namespace, name: t.table.name }, firstOfTable: t.firstOfTable === true, rowCount: t.rowCount >>> 0, ipc: t.ipc };
}

const BATCH_KINDS = new Set(['snapshot', 'changes', 'heartbeat']);

function toWitBatch(b, maxRows) {
  if (!BATCH_KINDS.has(b.kind)) throw new TypeError(`batch kind must be snapshot, changes or heartbeat, got ${JSON.stringify(b.kind)}`);
  if (b.position === undefined || b.position === null) throw new TypeError('a batch needs a position');
  const tables = (b.tables ?? []).map(toTableRows);
  if (b.kind === 'heartbeat' && tables.length > 0) throw new Error('a heartbeat batch only moves the position: it carries no tables');
  const rows = tables.reduce((n, t) => n + t.rowCount, 0);
  if (maxRows !== undefined && rows > maxRows) {
    throw new Error(`next returned ${rows} rows but the agent asked for at most ${maxRows} (max-rows)`);
  }
  return {
    kind: b.kind,
    position: asBytes(b.position),
    tables,
    lagBytes: BigInt(b.lagBytes ?? 0),
    continues: b.continues === true,
  };
}

function normalizeTableInfo(t) {
  return {
    table: { namespace: t.table.namespace, name: t.table.name },
    columns: (t.columns ?? []).map((c) => ({
      name: c.name,
      typeName: c.typeName ?? c.sourceType ?? c.type,
      nullable: c.nullable !== false,
      keyOrdinal: c.keyOrdinal ?? undefined,
      unsupportedReason: c.unsupportedReason ?? '',
    })),
    identifiable: t.identifiable !== false,
    estimatedRows: BigInt(t.estimatedRows ?? 0),
  };
}

/**
 * The `source-connector` export. `def` has:
 * - `spec`: the configuration's JSON Schema (object, or a function returning it);
 * - `check(config)` (optional): extra check results `[{name, ok, message}]`;
 * - `discover(config)`: `[{table: {namespace, name}, columns: [{name, typeName, nullable, keyOrdinal}], identifiable, estimatedRows}]`;
 * - `open({config, selection, resume})`: a reader `{next(maxRows), ack(position)}` where
 *   `next` returns null when nothing arrived, or `{kind, position, tables: [TableRows...], lagBytes?, continues?}`;
 *   `resume` is the position (Uint8Array) to continue after, or null;
 * - `resync({config, selection, tables})` (optional): a summary string.
 * `config` is the parsed configuration with the spec's defaults filled in.
 */
export function source(def) {
  const spec = () => specObject(def.spec);

  class Reader {
    #inner;
    #last;

    constructor(inner, resume) {
      this.#inner = inner;
      this.#last = resume;
    }

    static open(configText, selection, resume) {
      return guard('open', () => {
        const config = parseConfig(configText, spec());
        const after = resume === undefined || resume === null ? null : asBytes(resume);
        const inner = def.open({ config, selection: selection ?? [], resume: after });
        if (!inner || typeof inner.next !== 'function') throw new TypeError('open must return an object with a next(maxRows) method');
        return new Reader(inner, after);
      });
    }

    next(maxRows) {
      return guard('next', () => {
        const b = this.#inner.next(maxRows);
        if (b === null || b === undefined) return undefined;
        const batch = toWitBatch(b, maxRows);
        // Positions order the stream: the agent resumes after the last one applied.
        if (this.#last !== null) {
          const order = compare(batch.position, this.#last);
          if (order < 0 || (order === 0 && batch.kind !== 'heartbeat')) {
            throw new Error(`next returned position ${toHex(batch.position)}, not after the previous ${toHex(this.#last)}; positions must increase with every batch that carries data`);
          }
        }
        this.#last = batch.position;
        return batch;
      });
    }

    ack(position) {
      return guard('ack', () => {
        if (typeof this.#inner.ack === 'function') this.#inner.ack(position);
      });
    }
  }

  return {
    spec: () => specText(def.spec),
    check: (configText) => runCheck(def, configText),
    discover: (configText) =>
      guard('discover', () => {
        const config = parseConfig(configText, spec());
        return (def.discover(config) ?? []).map(normalizeTableInfo);
      }),
    resync: (configText, selection, tables) =>
      guard('resync', () => {
        const config = parseConfig(configText, spec());
        if (typeof def.resync !== 'function') {
          throw ConnectorError.unsupported('this connector cannot resync: remove its committed position at the destination to copy everything again');
        }
        return String(def.resync({ config, selection, tables }) ?? '');
      }),
    Reader,
  };
}

/** One table of a batch handed to a destination, decoded on demand. */
export class BatchTable {
  constructor(t, kind) {
    /** `{namespace, name}`. */
    this.table = t.table;
    /** `namespace.name`. */
    this.qualifiedName = `${t.table.namespace}.${t.table.name}`;
    /** Whether the destination must replace what it held for this table (first snapshot batch). */
    this.firstOfTable = t.firstOfTable;
    /** Rows in the IPC data. */
    this.rowCount = t.rowCount;
    /** Arrow IPC stream bytes. */
    this.ipc = t.ipc;
    this.kind = kind;
    this.decoded = null;
  }

  /** The decoded table (see decodeTable); cached per options of the first call. */
  decode(options) {
    if (!this.decoded) this.decoded = decodeTable(this, options);
    return this.decoded;
  }

  /** Row objects (with `__culvert_*` columns in a changes batch). */
  rows(options) {
    return this.decode(options).rows;
  }

  /** One entry per row change, before-images folded in (see changesOf). */
  changes(options) {
    return changesOf(this.decode(options));
  }
}

/** A batch as a destination's `apply` receives it. */
export class Batch {
  constructor(b) {
    /** `snapshot`, `changes` or `heartbeat`. */
    this.kind = b.kind;
    /** Position bytes (Uint8Array). */
    this.position = b.position;
    /** Position as lower-case hex. */
    this.positionHex = toHex(b.position);
    /** Tables with their rows. */
    this.tables = b.tables.map((t) => new BatchTable(t, b.kind));
    /** Source lag in bytes (bigint). */
    this.lagBytes = b.lagBytes;
    /** The batch ends inside a source transaction the next batch continues. */
    this.continues = b.continues;
  }
}

/**
 * The `destination-connector` export. `def` has:
 * - `spec`: the configuration's JSON Schema (object, or a function returning it);
 * - `check(config)` (optional): extra check results `[{name, ok, message}]`;
 * - `open({config, pipeline})`: a writer `{committed(), apply(batch)}` where `committed`
 *   returns the last committed position (bytes, bigint or number) or null, and `apply`
 *   makes a {@link Batch} durable with its position (returning nothing or the position).
 */
export function destination(def) {
  const spec = () => specObject(def.spec);

  class Writer {
    #inner;

    constructor(inner) {
      this.#inner = inner;
    }

    static open(configText, pipeline) {
      return guard('open', () => {
        const config = parseConfig(configText, spec());
        const inner = def.open({ config, pipeline });
        if (!inner || typeof inner.apply !== 'function' || typeof inner.committed !== 'function') {
          throw new TypeError('open must return an object with committed() and apply(batch) methods');
        }
        return new Writer(inner);
      });
    }

    committed() {
      return guard('committed', () => {
        const p = this.#inner.committed();
        return p === null || p === undefined ? undefined : asBytes(p);
      });
    }

    apply(batch) {
      return guard('apply', () => {
        const p = this.#inner.apply(new Batch(batch));
        return p === null || p === undefined ? batch.position : asBytes(p);
      });
    }
  }

  return {
    spec: () => specText(def.spec),
    check: (configText) => runCheck(def, configText),
    Writer,
  };
}
