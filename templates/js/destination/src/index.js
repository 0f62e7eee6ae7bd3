// {{name}}: a Culvert destination connector.
//
// As generated it writes one newline-delimited JSON blob per batch into an Azure Blob
// Storage container through the agent's HTTP client (the connector itself has no network
// access), and keeps the committed position in a `_committed` blob next to the data:
//   {prefix}{pipeline}/{hex(position)}.ndjson   one line per table of the batch
//   {prefix}{pipeline}/_committed               hex(position) of the last applied batch
// Replace `describeBatch` and the blob layout with what your system needs; a batch's
// rows are at hand with `table.rows()` or `table.changes()`.

import { ConnectorError, http, log, position, redactUrl, stringify, destination } from 'culvert-connector-sdk';

/** Blob service REST API version sent with every request. */
const API_VERSION = '2021-12-02';

/** JSON Schema of the configuration; the SDK validates every configuration against it. */
const SPEC = {
  title: '{{name}}',
  type: 'object',
  properties: {
    container_url: {
      type: 'string',
      pattern: '^https?://[^?#]+/[^/?#]+/?$',
      description: 'Container URL, for example http://127.0.0.1:10000/devstoreaccount1/mycontainer. The agent allows HTTP to its host and port.',
      'x-culvert-egress': true,
    },
    sas: {
      type: 'string',
      minLength: 1,
      description: 'Shared access signature (the query string, with or without the leading ?) granting read, create and write on the container.',
      writeOnly: true,
      'x-culvert-secret': true,
    },
    prefix: { type: 'string', default: '', description: 'Text put in front of every blob name, for example culvert/.' },
    discard: {
      type: 'boolean',
      default: false,
      description: 'For benchmarks only: write nothing and keep the position in memory (lost when the connector restarts).',
    },
  },
  // Storage settings are needed unless the connector discards everything.
  if: { properties: { discard: { const: true } }, required: ['discard'] },
  else: { required: ['container_url', 'sas'] },
};

/** A container reached through the agent's `http-send`. */
class Container {
  constructor(config) {
    this.base = config.container_url.replace(/\/+$/, '');
    this.sas = config.sas.trim().replace(/^\?/, '');
    this.prefix = config.prefix;
  }

  url(name) {
    const path = encodeURI(`${this.prefix}${name}`).replace(/[?#]/g, encodeURIComponent);
    return this.sas ? `${this.base}/${path}?${this.sas}` : `${this.base}/${path}`;
  }

  /** The blob's text, or null when it does not exist. */
  get(name) {
    const res = http({ method: 'GET', url: this.url(name), headers: { 'x-ms-version': API_VERSION } });
    if (res.status === 404 && res.header('x-ms-error-code') !== 'ContainerNotFound') return null;
    return this.ensureOk(res, 'GET', name).text();
  }

  put(name, contentType, body) {
    const res = http({
      method: 'PUT',
      url: this.url(name),
      headers: { 'x-ms-version': API_VERSION, 'x-ms-blob-type': 'BlockBlob', 'content-type': contentType },
      body,
    });
    this.ensureOk(res, 'PUT', name);
  }

  /** The response on success; otherwise an error that says what to do about it. */
  ensureOk(res, method, name) {
    if (res.ok) return res;
    const code = res.header('x-ms-error-code') ?? '';
    const what = `${method} ${redactUrl(this.url(name))} answered ${res.status}${code ? ` ${code}` : ''}`;
    if (code === 'ContainerNotFound') {
      return raise(ConnectorError.config(`container ${this.base} does not exist; create it or fix \`container_url\``));
    }
    if (res.status === 403 || code.startsWith('Authentication') || code.startsWith('Authorization')) {
      return raise(ConnectorError.auth(`${what}; check that \`sas\` is valid, not expired and grants read (r), create (c) and write (w)`));
    }
    if (res.status >= 500) return raise(ConnectorError.connection(`${what}; the storage service failed, the agent retries`));
    return raise(ConnectorError.internal(`${what}: ${res.text().slice(0, 300)}`));
  }
}

function raise(e) {
  throw e;
}

/** One JSON line per table of the batch. */
function describeBatch(batch) {
  return batch.tables
    .map((t) => `${stringify({ table: t.qualifiedName, kind: batch.kind, rows: t.rowCount, first_of_table: t.firstOfTable })}\n`)
    .join('');
}

/** Writes a batch's blob, then records its position in `_committed`. */
class BlobWriter {
  constructor(config, pipeline) {
    this.discard = config.discard;
    this.container = this.discard ? null : new Container(config);
    this.pipeline = pipeline;
    // Undefined until read from storage; null when nothing was committed yet.
    this.committedPosition = this.discard ? null : undefined;
  }

  committed() {
    if (this.committedPosition === undefined) {
      const text = this.container.get(`${this.pipeline}/_committed`);
      this.committedPosition = text === null ? null : position.fromHex(text);
    }
    return this.committedPosition;
  }

  apply(batch) {
    const committed = this.committed();
    if (committed !== null && position.compare(batch.position, committed) <= 0) {
      // Replayed after a restart: already stored.
      return batch.position;
    }
    if (!this.discard) {
      if (batch.tables.length > 0) {
        this.container.put(`${this.pipeline}/${batch.positionHex}.ndjson`, 'application/x-ndjson', describeBatch(batch));
      }
      this.container.put(`${this.pipeline}/_committed`, 'text/plain', batch.positionHex);
    }
    this.committedPosition = batch.position;
    return batch.position;
  }
}

export const destinationConnector = destination({
  spec: SPEC,

  check(config) {
    if (config.discard) return [{ name: 'discard', ok: true, message: 'discard is set: nothing is written (benchmarks only)' }];
    const container = new Container(config);
    try {
      // A blob that does not exist: 404 BlobNotFound when the container and the SAS are fine.
      container.get('.culvert-check');
      return [{ name: 'container', ok: true, message: `container ${container.base} is reachable` }];
    } catch (e) {
      return [{ name: 'container', ok: false, message: e.message }];
    }
  },

  open({ config, pipeline }) {
    if (config.discard) log.warn('discard is set: batches are dropped and the position is kept in memory only');
    return new BlobWriter(config, pipeline);
  },
});
