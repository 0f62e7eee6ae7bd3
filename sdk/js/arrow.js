// Arrow IPC stream writing (TableRows) and reading (decodeTable / changesOf) following
// Culvert's conventions, on top of the `apache-arrow` package.
//
// Written columns are built straight into Arrow buffers (typed arrays), so only the IPC
// framing goes through apache-arrow. Decoded values are plain JS values:
//   bool -> boolean; int8/16/32, uint8/16/32, float -> number; int64, uint64 -> bigint;
//   utf8 -> string; binary -> base64 string (options.binary: 'hex' | 'bytes' for others);
//   fixed-size binary 16 typed `uuid` -> canonical UUID string;
//   date -> 'YYYY-MM-DD'; time -> 'HH:MM:SS[.ffffff]';
//   timestamp -> ISO 8601 with the unit's fraction digits, ending in `Z` when the column
//   has a time zone (values are UTC) and without a suffix when it has none;
//   (options.temporal: 'raw' keeps the stored integers instead);
//   null -> null; other types -> apache-arrow's own value, via toJSON where it has one.

import {
  Binary,
  Bool,
  DateDay,
  Field,
  Float32,
  Float64,
  Int16,
  Int32,
  Int64,
  RecordBatch,
  RecordBatchReader,
  RecordBatchStreamWriter,
  Schema,
  Struct,
  TimestampMicrosecond,
  Type,
  Uint64,
  Utf8,
  makeData,
  makeVector,
} from 'apache-arrow';

import { fromBase64, toBase64 } from './json.js';

/** Field metadata key: the source's type name. */
export const META_TYPE = 'culvert.type';
/** Field metadata key: how the PostgreSQL connectors carry the value. */
export const META_KIND = 'culvert.kind';
/** Field metadata key: 1-based primary-key position. */
export const META_KEY = 'culvert.key';
/** Schema metadata key: JSON array of primary-key column names. */
export const META_PRIMARY_KEY = 'culvert.primary_key';
/** Schema metadata key: the table's namespace. */
export const META_NAMESPACE = 'culvert.namespace';
/** Schema metadata key: the table's name. */
export const META_TABLE = 'culvert.table';
/** Names of the leading columns of a changes batch. */
export const CHANGE_COLUMNS = Object.freeze(['__culvert_op', '__culvert_lsn', '__culvert_seq', '__culvert_unchanged']);

/** Column types TableRows can write, with the source type and PostgreSQL kind used when none is given. */
export const COLUMN_TYPES = Object.freeze({
  bool: { arrow: () => new Bool(), sourceType: 'boolean', kind: 'bool' },
  int16: { arrow: () => new Int16(), sourceType: 'smallint', kind: 'int2' },
  int32: { arrow: () => new Int32(), sourceType: 'integer', kind: 'int4' },
  int64: { arrow: () => new Int64(), sourceType: 'bigint', kind: 'int8' },
  uint64: { arrow: () => new Uint64(), sourceType: 'numeric(20,0)', kind: null },
  float32: { arrow: () => new Float32(), sourceType: 'real', kind: 'float4' },
  float64: { arrow: () => new Float64(), sourceType: 'double precision', kind: 'float8' },
  utf8: { arrow: () => new Utf8(), sourceType: 'text', kind: 'text' },
  binary: { arrow: () => new Binary(), sourceType: 'bytea', kind: 'bytea' },
  date32: { arrow: () => new DateDay(), sourceType: 'date', kind: 'date' },
  timestamp: { arrow: () => new TimestampMicrosecond(null), sourceType: 'timestamp without time zone', kind: 'timestamp' },
  timestamptz: { arrow: () => new TimestampMicrosecond('UTC'), sourceType: 'timestamp with time zone', kind: 'timestamptz' },
});

const OPS = new Set(['I', 'U', 'B', 'D', 'T']);
const I64_MIN = -(1n << 63n);
const I64_MAX = (1n << 63n) - 1n;
const U64_MAX = (1n << 64n) - 1n;
const encoder = new TextEncoder();

/**
 * Rows of one table for one batch, written as an Arrow IPC stream.
 *
 * `columns` are `{name, type, sourceType?, key?, nullable?}` with `type` one of
 * {@link COLUMN_TYPES}; `key: true` (or a 1-based ordinal) marks primary-key columns in
 * column order. Snapshot rows are added with `push`, changes (for a `changes` table, made
 * with `{changes: true}`) with `insert`, `update`, `delete`, `truncate` or `change`.
 */
export class TableRows {
  /**
   * @param {{namespace: string, name: string}} table
   * @param {Array<{name: string, type: string, sourceType?: string, key?: boolean|number, nullable?: boolean}>} columns
   * @param {{firstOfTable?: boolean, changes?: boolean}} [options]
   */
  constructor(table, columns, options = {}) {
    if (!table || typeof table.namespace !== 'string' || typeof table.name !== 'string') {
      throw new TypeError('TableRows needs a table as {namespace, name}');
    }
    if (!Array.isArray(columns) || columns.length === 0) {
      throw new TypeError(`TableRows ${table.namespace}.${table.name} needs at least one column`);
    }
    this.table = { namespace: table.namespace, name: table.name };
    this.firstOfTable = options.firstOfTable === true;
    this.isChanges = options.changes === true;
    this.rowCount = 0;
    const qualified = `${table.namespace}.${table.name}`;
    let nextKey = 1;
    this.columns = columns.map((c) => {
      const def = COLUMN_TYPES[c.type];
      if (!def) {
        throw new TypeError(`TableRows ${qualified}: column \`${c.name}\` has unknown type \`${c.type}\`; use one of ${Object.keys(COLUMN_TYPES).join(', ')}`);
      }
      if (c.name.startsWith('__culvert_')) {
        throw new TypeError(`TableRows ${qualified}: column names starting with __culvert_ are reserved`);
      }
      const key = typeof c.key === 'number' ? c.key : c.key ? nextKey++ : null;
      return {
        name: c.name,
        type: c.type,
        sourceType: c.sourceType ?? def.sourceType,
        kind: c.kind ?? def.kind,
        key,
        store: new ColumnStore(c.type, `${qualified}.${c.name}`),
      };
    });
    this.keyNames = this.columns.filter((c) => c.key !== null).sort((a, b) => a.key - b.key).map((c) => c.name);
    if (this.isChanges) {
      this.meta = {
        op: new ColumnStore('utf8', '__culvert_op'),
        lsn: new ColumnStore('uint64', '__culvert_lsn'),
        seq: new ColumnStore('uint64', '__culvert_seq'),
        unchanged: new ColumnStore('binary', '__culvert_unchanged'),
      };
    }
  }

  /** Add a snapshot row: an object keyed by column name, or an array in column order. */
  push(row) {
    if (this.isChanges) throw new TypeError('use insert/update/delete/truncate on a changes TableRows');
    this.#append(row);
    return this;
  }

  /** Add several snapshot rows. */
  pushAll(rows) {
    for (const row of rows) this.push(row);
    return this;
  }

  /** Add a change: `op` is I, U, B (before-image of the next U), D or T; `unchanged` names columns not sent. */
  change(op, row, { lsn, seq, unchanged } = {}) {
    if (!this.isChanges) throw new TypeError('TableRows was not made with {changes: true}');
    if (!OPS.has(op)) throw new TypeError(`change op must be one of I, U, B, D, T, got ${JSON.stringify(op)}`);
    if (lsn === undefined || seq === undefined) throw new TypeError('a change needs {lsn, seq}');
    this.meta.op.append('utf8', op);
    this.meta.lsn.append('uint64', lsn);
    this.meta.seq.append('uint64', seq);
    let bits = null;
    if (unchanged && unchanged.length > 0) {
      bits = new Uint8Array(Math.ceil(this.columns.length / 8));
      for (const name of unchanged) {
        const i = this.columns.findIndex((c) => c.name === name);
        if (i < 0) throw new TypeError(`unchanged column \`${name}\` is not a column of this table`);
        bits[i >> 3] |= 1 << (i & 7);
      }
    }
    this.meta.unchanged.append('binary', bits);
    this.#append(row ?? {});
    return this;
  }

  /** Add an inserted row. */
  insert(row, at) {
    return this.change('I', row, at);
  }

  /** Add an updated row; `at.before` (optional) is the old row, written as a `B` row first. */
  update(row, at) {
    if (at && at.before) this.change('B', at.before, { lsn: at.lsn, seq: at.seq });
    return this.change('U', row, at);
  }

  /** Add a deleted row (the key columns suffice). */
  delete(row, at) {
    return this.change('D', row, at);
  }

  /** Add a truncate of the table. */
  truncate(at) {
    return this.change('T', {}, at);
  }

  #append(row) {
    const arr = Array.isArray(row);
    for (let i = 0; i < this.columns.length; i++) {
      const c = this.columns[i];
      c.store.append(c.type, arr ? row[i] : row[c.name]);
    }
    this.rowCount++;
  }

  /** The Arrow schema these rows are written with. */
  schema() {
    const fields = [];
    if (this.isChanges) {
      fields.push(new Field('__culvert_op', new Utf8(), false));
      fields.push(new Field('__culvert_lsn', new Uint64(), false));
      fields.push(new Field('__culvert_seq', new Uint64(), false));
      fields.push(new Field('__culvert_unchanged', new Binary(), true));
    }
    for (const c of this.columns) {
      const meta = new Map([[META_TYPE, c.sourceType]]);
      if (c.kind) meta.set(META_KIND, c.kind);
      if (c.key !== null) meta.set(META_KEY, String(c.key));
      // Every column is nullable: change rows leave columns empty (deletes, unchanged values).
      fields.push(new Field(c.name, COLUMN_TYPES[c.type].arrow(), true, meta));
    }
    return new Schema(
      fields,
      new Map([
        [META_PRIMARY_KEY, JSON.stringify(this.keyNames)],
        [META_NAMESPACE, this.table.namespace],
        [META_TABLE, this.table.name],
      ]),
    );
  }

  /** The Arrow IPC stream bytes of the rows added so far. */
  toIPC() {
    const schema = this.schema();
    const stores = this.isChanges
      ? [this.meta.op, this.meta.lsn, this.meta.seq, this.meta.unchanged, ...this.columns.map((c) => c.store)]
      : this.columns.map((c) => c.store);
    const children = stores.map((s, i) => s.toData(schema.fields[i].type, this.rowCount));
    const data = makeData({ type: new Struct(schema.fields), length: this.rowCount, nullCount: 0, children });
    const batch = new RecordBatch(schema, data);
    return RecordBatchStreamWriter.writeAll([batch]).toUint8Array(true);
  }

  /** The WIT `table-rows` record: table, first-of-table, row-count and the IPC bytes. */
  finish() {
    return { table: { ...this.table }, firstOfTable: this.firstOfTable, rowCount: this.rowCount, ipc: this.toIPC() };
  }
}

/** Values of one column, kept as Arrow buffers while rows are added. */
class ColumnStore {
  constructor(type, label) {
    this.label = label;
    this.length = 0;
    this.nulls = 0;
    this.validity = new Uint8Array(64);
    switch (type) {
      case 'bool':
        this.values = new Uint8Array(64);
        break;
      case 'int16':
        this.values = new Int16Array(64);
        break;
      case 'int32':
      case 'date32':
        this.values = new Int32Array(64);
        break;
      case 'int64':
      case 'timestamp':
      case 'timestamptz':
        this.values = new BigInt64Array(64);
        break;
      case 'uint64':
        this.values = new BigUint64Array(64);
        break;
      case 'float32':
        this.values = new Float32Array(64);
        break;
      case 'float64':
        this.values = new Float64Array(64);
        break;
      case 'utf8':
      case 'binary':
        this.values = new Uint8Array(1024);
        this.offsets = new Int32Array(65);
        this.bytes = 0;
        break;
      default:
        throw new TypeError(`unknown column type ${type}`);
    }
  }

  #grow(n) {
    if (this.length + 1 >= this.validity.length * 8) this.validity = grown(this.validity, this.validity.length * 2);
    if (this.offsets) {
      if (this.length + 2 > this.offsets.length) this.offsets = grown(this.offsets, this.offsets.length * 2);
      if (this.bytes + n > this.values.length) this.values = grown(this.values, Math.max(this.values.length * 2, this.bytes + n));
    } else if (this.values instanceof Uint8Array) {
      if ((this.length >> 3) + 1 >= this.values.length) this.values = grown(this.values, this.values.length * 2);
    } else if (this.length >= this.values.length) {
      this.values = grown(this.values, this.values.length * 2);
    }
  }

  #bad(type, value) {
    let shown;
    try {
      shown = typeof value === 'bigint' ? `${value}n` : JSON.stringify(value);
    } catch {
      shown = String(value);
    }
    return new TypeError(`column \`${this.label}\` (${type}) cannot hold ${shown}`);
  }

  append(type, value) {
    if (value === null || value === undefined) {
      this.#grow(0);
      this.nulls++;
      if (this.offsets) this.offsets[this.length + 1] = this.bytes;
      this.length++;
      return;
    }
    let bytes = null;
    if (type === 'utf8') {
      if (typeof value === 'object') throw this.#bad(type, value);
      bytes = encoder.encode(String(value));
    } else if (type === 'binary') {
      if (value instanceof Uint8Array) bytes = value;
      else if (ArrayBuffer.isView(value)) bytes = new Uint8Array(value.buffer, value.byteOffset, value.byteLength);
      else if (value instanceof ArrayBuffer) bytes = new Uint8Array(value);
      else throw this.#bad(type, value);
    }
    this.#grow(bytes ? bytes.length : 0);
    const i = this.length;
    this.validity[i >> 3] |= 1 << (i & 7);
    switch (type) {
      case 'bool':
        if (typeof value !== 'boolean') throw this.#bad(type, value);
        if (value) this.values[i >> 3] |= 1 << (i & 7);
        break;
      case 'int16':
      case 'int32': {
        const limit = type === 'int16' ? 32768 : 2147483648;
        const n = typeof value === 'bigint' ? Number(value) : value;
        if (typeof n !== 'number' || !Number.isInteger(n) || n < -limit || n >= limit) throw this.#bad(type, value);
        this.values[i] = n;
        break;
      }
      case 'int64':
      case 'uint64': {
        const n = toBigInt(value);
        const ok = n !== null && (type === 'int64' ? n >= I64_MIN && n <= I64_MAX : n >= 0n && n <= U64_MAX);
        if (!ok) throw this.#bad(type, value);
        this.values[i] = n;
        break;
      }
      case 'float32':
      case 'float64':
        if (typeof value !== 'number' && typeof value !== 'bigint') throw this.#bad(type, value);
        this.values[i] = Number(value);
        break;
      case 'date32': {
        const d = toDays(value);
        if (d === null) throw this.#bad(type, value);
        this.values[i] = d;
        break;
      }
      case 'timestamp':
      case 'timestamptz': {
        const us = toMicros(value);
        if (us === null) throw this.#bad(type, value);
        this.values[i] = us;
        break;
      }
      default:
        this.values.set(bytes, this.bytes);
        this.bytes += bytes.length;
        this.offsets[i + 1] = this.bytes;
    }
    this.length++;
  }

  toData(arrowType, length) {
    if (this.length !== length) throw new Error(`column \`${this.label}\` has ${this.length} values for ${length} rows`);
    const nullBitmap = this.nulls > 0 ? this.validity.subarray(0, Math.ceil(length / 8)) : undefined;
    const props = { type: arrowType, length, nullCount: this.nulls, nullBitmap };
    if (this.offsets) {
      props.valueOffsets = this.offsets.subarray(0, length + 1);
      props.data = this.values.subarray(0, this.bytes);
    } else if (arrowType.typeId === Type.Bool) {
      props.data = this.values.subarray(0, Math.ceil(length / 8));
    } else {
      props.data = this.values.subarray(0, length);
    }
    return makeData(props);
  }
}

function grown(array, size) {
  const next = new array.constructor(size);
  next.set(array);
  return next;
}

function toBigInt(value) {
  if (typeof value === 'bigint') return value;
  if (typeof value === 'number' && Number.isSafeInteger(value)) return BigInt(value);
  if (typeof value === 'string' && /^-?\d+$/.test(value)) return BigInt(value);
  return null;
}

function toDays(value) {
  if (typeof value === 'number' && Number.isInteger(value)) return value;
  if (value instanceof Date && !Number.isNaN(value.getTime())) return Math.floor(value.getTime() / 86400000);
  if (typeof value === 'string' && /^\d{4}-\d{2}-\d{2}$/.test(value)) {
    const ms = Date.parse(`${value}T00:00:00Z`);
    return Number.isNaN(ms) ? null : ms / 86400000;
  }
  return null;
}

const ISO = /^(\d{4}-\d{2}-\d{2})[T ](\d{2}:\d{2}:\d{2})(?:\.(\d{1,9}))?(Z|[+-]\d{2}:?\d{2})?$/;

function toMicros(value) {
  if (typeof value === 'bigint') return value;
  if (typeof value === 'number' && Number.isSafeInteger(value)) return BigInt(value);
  if (value instanceof Date && !Number.isNaN(value.getTime())) return BigInt(value.getTime()) * 1000n;
  if (typeof value === 'string') {
    const m = ISO.exec(value.trim());
    if (!m) return null;
    const ms = Date.parse(`${m[1]}T${m[2]}${m[4] ? normalizeZone(m[4]) : 'Z'}`);
    if (Number.isNaN(ms)) return null;
    const frac = (m[3] ?? '').padEnd(6, '0').slice(0, 6);
    return BigInt(ms) * 1000n + BigInt(frac);
  }
  return null;
}

function normalizeZone(z) {
  return z === 'Z' || z.includes(':') ? z : `${z.slice(0, 3)}:${z.slice(3)}`;
}

/** A column of a decoded table. */
function describeField(f) {
  const key = f.metadata.get(META_KEY);
  return {
    name: f.name,
    arrowType: String(f.type),
    sourceType: f.metadata.get(META_TYPE) ?? null,
    key: key ? Number(key) : null,
  };
}

/**
 * Decode a table's Arrow IPC stream (a WIT `table-rows` record or its `ipc` bytes) into
 * `{table, firstOfTable, columns, primaryKey, isChanges, rows}`. `rows` are objects keyed
 * by column name, `__culvert_*` columns included for a changes table. See the top of this
 * file for how values are represented; `options.binary` is 'base64' (default), 'hex' or
 * 'bytes', `options.temporal` is 'iso' (default) or 'raw'.
 */
export function decodeTable(tableRows, options = {}) {
  const ipc = tableRows instanceof Uint8Array ? tableRows : tableRows.ipc;
  const reader = RecordBatchReader.from(ipc);
  const batches = reader.readAll();
  const schema = reader.schema ?? batches[0]?.schema;
  if (!schema) throw new Error('the Arrow IPC stream has no schema message');
  const fields = schema.fields;
  const names = fields.map((f) => f.name);
  const rows = [];
  for (const batch of batches) {
    const n = batch.numRows;
    const start = rows.length;
    for (let r = 0; r < n; r++) rows.push({});
    fields.forEach((f, j) => {
      const values = decodeColumn(batch.data.children[j], f, options);
      const name = names[j];
      for (let r = 0; r < n; r++) rows[start + r][name] = values[r];
    });
  }
  const pk = schema.metadata.get(META_PRIMARY_KEY);
  let primaryKey = [];
  try {
    primaryKey = pk ? JSON.parse(pk) : [];
  } catch {
    primaryKey = [];
  }
  return {
    table: tableRows instanceof Uint8Array ? null : tableRows.table,
    firstOfTable: tableRows instanceof Uint8Array ? false : tableRows.firstOfTable,
    columns: fields.filter((f) => !f.name.startsWith('__culvert_')).map(describeField),
    primaryKey,
    isChanges: names[0] === '__culvert_op',
    rows,
  };
}

/**
 * The row changes of a decoded table (from {@link decodeTable}), one entry per change:
 * `{op, lsn, seq, row, before?, unchanged?}`. A before-image (`B`) is folded into the
 * following `U` as `before`; `unchanged` lists columns left out of `row` because their
 * (large) value did not change. A snapshot table gives `{op: 'snapshot', lsn: null, seq: null, row}`.
 */
export function changesOf(decoded) {
  const tableCols = decoded.columns.map((c) => c.name);
  if (!decoded.isChanges) {
    return decoded.rows.map((row) => ({ op: 'snapshot', lsn: null, seq: null, row }));
  }
  const out = [];
  let before = null;
  for (const r of decoded.rows) {
    const op = r.__culvert_op;
    const bits = r.__culvert_unchanged;
    const unchangedBits = typeof bits === 'string' ? fromBase64(bits) : bits instanceof Uint8Array ? bits : null;
    const row = {};
    const unchanged = [];
    tableCols.forEach((name, i) => {
      if (unchangedBits && i >> 3 < unchangedBits.length && (unchangedBits[i >> 3] >> (i & 7)) & 1) unchanged.push(name);
      else row[name] = r[name];
    });
    if (op === 'B') {
      before = row;
      continue;
    }
    const entry = { op, lsn: r.__culvert_lsn, seq: r.__culvert_seq, row: op === 'T' ? null : row };
    if (op === 'U' && before) entry.before = before;
    if (unchanged.length > 0) entry.unchanged = unchanged;
    before = null;
    out.push(entry);
  }
  return out;
}

function isNull(data, i) {
  if (!data.nullBitmap || data.nullCount === 0 || data.nullBitmap.length === 0) return false;
  const idx = data.offset + i;
  return ((data.nullBitmap[idx >> 3] >> (idx & 7)) & 1) === 0;
}

function binaryOut(bytes, options) {
  switch (options.binary ?? 'base64') {
    case 'bytes':
      return bytes.slice();
    case 'hex': {
      let s = '';
      for (let i = 0; i < bytes.length; i++) s += (bytes[i] < 16 ? '0' : '') + bytes[i].toString(16);
      return s;
    }
    default:
      return toBase64(bytes);
  }
}

const UNIT_DIGITS = [0, 3, 6, 9];
const UNIT_PER_SECOND = [1n, 1000n, 1000000n, 1000000000n];

function pad(n, w) {
  return String(n).padStart(w, '0');
}

function formatDays(days) {
  const d = new Date(days * 86400000);
  if (Number.isNaN(d.getTime())) return String(days);
  return d.toISOString().slice(0, -14);
}

function formatTimestamp(raw, unit, zoned) {
  const per = UNIT_PER_SECOND[unit];
  const v = BigInt(raw);
  let secs = v / per;
  let frac = v % per;
  if (frac < 0n) {
    frac += per;
    secs -= 1n;
  }
  const d = new Date(Number(secs) * 1000);
  if (Number.isNaN(d.getTime())) return String(raw);
  const base = d.toISOString().slice(0, -5);
  const digits = UNIT_DIGITS[unit];
  return `${base}${digits ? `.${pad(frac, digits)}` : ''}${zoned ? 'Z' : ''}`;
}

function formatTime(raw, unit) {
  const per = UNIT_PER_SECOND[unit];
  const v = BigInt(raw);
  const secs = Number(v / per);
  const frac = v % per;
  const digits = UNIT_DIGITS[unit];
  const hms = `${pad(Math.floor(secs / 3600), 2)}:${pad(Math.floor(secs / 60) % 60, 2)}:${pad(secs % 60, 2)}`;
  return digits && frac !== 0n ? `${hms}.${pad(frac, digits)}` : hms;
}

function formatUuid(b) {
  let h = '';
  for (let i = 0; i < 16; i++) h += (b[i] < 16 ? '0' : '') + b[i].toString(16);
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

const decoder = new TextDecoder();

/** Values of one column chunk as JS values (see the top of this file). */
function decodeColumn(data, field, options) {
  const n = data.length;
  const out = new Array(n);
  const type = data.type;
  const raw = options.temporal === 'raw';
  const { values, valueOffsets } = data;
  switch (type.typeId) {
    case Type.Bool:
      for (let i = 0; i < n; i++) {
        const idx = data.offset + i;
        out[i] = isNull(data, i) ? null : ((values[idx >> 3] >> (idx & 7)) & 1) === 1;
      }
      return out;
    case Type.Int:
    case Type.Float:
      for (let i = 0; i < n; i++) out[i] = isNull(data, i) ? null : values[i];
      return out;
    case Type.Utf8:
    case Type.LargeUtf8:
      for (let i = 0; i < n; i++) {
        out[i] = isNull(data, i) ? null : decoder.decode(values.subarray(Number(valueOffsets[i]), Number(valueOffsets[i + 1])));
      }
      return out;
    case Type.Binary:
    case Type.LargeBinary:
      for (let i = 0; i < n; i++) {
        out[i] = isNull(data, i) ? null : binaryOut(values.subarray(Number(valueOffsets[i]), Number(valueOffsets[i + 1])), options);
      }
      return out;
    case Type.FixedSizeBinary: {
      const w = type.byteWidth;
      const uuid = w === 16 && field.metadata.get(META_TYPE) === 'uuid';
      for (let i = 0; i < n; i++) {
        if (isNull(data, i)) out[i] = null;
        else {
          const b = values.subarray(i * w, (i + 1) * w);
          out[i] = uuid ? formatUuid(b) : binaryOut(b, options);
        }
      }
      return out;
    }
    case Type.Date:
      for (let i = 0; i < n; i++) {
        if (isNull(data, i)) out[i] = null;
        else if (raw) out[i] = values[i];
        else out[i] = type.unit === 0 ? formatDays(values[i]) : formatDays(Math.floor(Number(values[i]) / 86400000));
      }
      return out;
    case Type.Timestamp:
      for (let i = 0; i < n; i++) {
        out[i] = isNull(data, i) ? null : raw ? values[i] : formatTimestamp(values[i], type.unit, type.timezone != null && type.timezone !== '');
      }
      return out;
    case Type.Time:
      for (let i = 0; i < n; i++) out[i] = isNull(data, i) ? null : raw ? values[i] : formatTime(values[i], type.unit);
      return out;
    default: {
      const vector = makeVector(data);
      for (let i = 0; i < n; i++) {
        const v = isNull(data, i) ? null : vector.get(i);
        out[i] = v && typeof v.toJSON === 'function' ? v.toJSON() : v;
      }
      return out;
    }
  }
}
