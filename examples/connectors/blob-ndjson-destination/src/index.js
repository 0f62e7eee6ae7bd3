// blob-ndjson-destination: row changes as newline-delimited JSON files in Azure Blob Storage.
//
// Layout under `{prefix}{pipeline}/` (see README.md for how readers use it):
//   {ns.table}/{position}.ndjson     the table's rows of the batch at that position
//   {ns.table}/{position}.snapshot   marker: a snapshot of the table starts here, so files
//                                    of the table before this position are superseded
//   _committed                       hex position of the last complete batch
// Blob names depend only on the batch, so replaying a batch after a crash overwrites the
// same blobs; `_committed` is written last, and a batch at or before it is skipped.

import { ConnectorError, counter, destination, http, log, position, redactUrl, stringify } from 'culvert-connector-sdk';

/** Blob service REST API version sent with every request. */
const API_VERSION = '2021-12-02';
/** Attempts for a request that fails with 5xx or cannot be sent. */
const ATTEMPTS = 3;

const SPEC = {
  title: 'blob-ndjson-destination',
  description: 'Writes row changes as newline-delimited JSON blobs into an Azure Blob Storage container.',
  type: 'object',
  required: ['container_url', 'sas'],
  properties: {
    container_url: {
      type: 'string',
      pattern: '^https?://[^?#]+/[^/?#]+/?$',
      description: 'Container URL, for example https://ACCOUNT.blob.core.windows.net/CONTAINER or http://127.0.0.1:10000/devstoreaccount1/CONTAINER (Azurite).',
      'x-culvert-egress': true,
    },
    sas: {
      type: 'string',
      minLength: 1,
      description: 'Shared access signature (query string, leading ? optional) granting read (r), create (c) and write (w) on the container\'s blobs.',
      writeOnly: true,
      'x-culvert-secret': true,
    },
    prefix: {
      type: 'string',
      default: '',
      description: 'Text put in front of every blob name, for example `cdc/`.',
    },
  },
};

function sleepMs(ms) {
  // Calls are synchronous and have no timer to wait on: spin briefly between retries.
  const until = Date.now() + ms;
  while (Date.now() < until) {
    // waiting
  }
}

/** A container reached through the agent's `http-send`. */
export class Container {
  constructor(config) {
    this.base = config.container_url.replace(/\/+$/, '');
    this.sas = config.sas.trim().replace(/^\?/, '');
    this.prefix = config.prefix;
  }

  url(name) {
    const path = `${this.prefix}${name}`.split('/').map(encodeURIComponent).join('/');
    return `${this.base}/${path}?${this.sas}`;
  }

  /** Send with retries on 5xx and on requests that could not be made. */
  request(method, name, headers, body) {
    let last;
    for (let attempt = 1; attempt <= ATTEMPTS; attempt++) {
      try {
        const res = http({ method, url: this.url(name), headers: { 'x-ms-version': API_VERSION, ...headers }, body });
        if (res.status < 500) return res;
        last = res;
      } catch (e) {
        if (!(e instanceof ConnectorError) || e.kind !== 'connection') throw e;
        last = e;
      }
      if (attempt < ATTEMPTS) {
        log.debug(`${method} ${this.prefix}${name} failed (attempt ${attempt} of ${ATTEMPTS}), retrying`);
        sleepMs(100 * 4 ** (attempt - 1));
      }
    }
    if (last instanceof Error) throw last;
    return last;
  }

  /** The blob's text, or null when it does not exist. */
  get(name) {
    const res = this.request('GET', name, {});
    if (res.status === 404 && res.header('x-ms-error-code') === 'BlobNotFound') return null;
    return this.ensureOk(res, 'GET', name).text();
  }

  put(name, contentType, body) {
    const res = this.request('PUT', name, { 'x-ms-blob-type': 'BlockBlob', 'content-type': contentType }, body);
    this.ensureOk(res, 'PUT', name);
    counter('blobs_written');
  }

  /** The response on success; otherwise an error that says what to do about it. */
  ensureOk(res, method, name) {
    if (res.ok) return res;
    const code = res.header('x-ms-error-code') ?? '';
    const what = `${method} ${redactUrl(this.url(name))} answered ${res.status}${code ? ` ${code}` : ''}`;
    const needs = method === 'GET' ? 'read (r)' : 'write (w) or create (c)';
    if (code === 'ContainerNotFound') {
      throw ConnectorError.config(`container ${this.base} does not exist: create it (for example \`az storage container create\`) or fix \`container_url\``);
    }
    if (res.status === 404 && method === 'GET') {
      throw ConnectorError.config(`${what}: the storage account or container in \`container_url\` was not found; check the URL`);
    }
    if (code === 'AuthorizationPermissionMismatch' || code === 'AuthorizationResourceTypeMismatch' || code === 'AuthorizationServiceMismatch') {
      throw ConnectorError.permission(`${what}: the SAS lacks ${needs} permission on blobs; create a SAS with at least sp=rcw for the blob service (ss=b) and object resources (srt=o, or sco for an account SAS)`);
    }
    if (code === 'AuthenticationFailed') {
      throw ConnectorError.auth(`${what}: the SAS was refused (wrong signature, expired, or for another account); create a new SAS for this account and put it in \`sas\``);
    }
    if (res.status === 403) {
      throw ConnectorError.permission(`${what}: access denied; check that \`sas\` is valid, not expired, allows this client's IP and protocol, and grants read (r), create (c) and write (w)`);
    }
    if (res.status >= 500) {
      throw ConnectorError.connection(`${what} after ${ATTEMPTS} attempts: the storage service failed; the agent retries`);
    }
    throw ConnectorError.internal(`${what}: ${res.text().slice(0, 300)}`);
  }
}

/** The NDJSON lines of one table of a batch: one per row change. */
export function tableLines(table) {
  let out = '';
  for (const c of table.changes()) {
    const line = c.op === 'snapshot' ? { op: 'snapshot', row: c.row } : { op: c.op, lsn: c.lsn, seq: c.seq };
    if (c.op !== 'snapshot' && c.op !== 'T') line.row = c.row;
    if (c.before) line.before = c.before;
    if (c.unchanged) line.unchanged = c.unchanged;
    out += `${stringify(line)}\n`;
  }
  return out;
}

/** Applies batches as blobs under `{prefix}{pipeline}/`. */
class NdjsonWriter {
  constructor(config, pipeline) {
    this.container = new Container(config);
    this.pipeline = pipeline;
    // The last applied position: undefined until read from storage, null when none.
    this.applied = undefined;
  }

  committed() {
    if (this.applied === undefined) {
      const text = this.container.get(`${this.pipeline}/_committed`);
      if (text === null) {
        this.applied = null;
      } else {
        try {
          this.applied = position.fromHex(text);
        } catch {
          throw ConnectorError.state(`${this.container.prefix}${this.pipeline}/_committed does not hold a hex position; delete it to copy everything again`);
        }
      }
    }
    return this.applied;
  }

  apply(batch) {
    const committed = this.committed();
    if (committed !== null && position.compare(batch.position, committed) <= 0) {
      return batch.position;
    }
    const hex = batch.positionHex;
    let rows = 0;
    for (const table of batch.tables) {
      const dir = `${this.pipeline}/${table.qualifiedName}`;
      if (batch.kind === 'snapshot' && table.firstOfTable) {
        this.container.put(`${dir}/${hex}.snapshot`, 'application/json', stringify({ table: table.qualifiedName, snapshot_start: hex }));
      }
      if (table.rowCount > 0) {
        this.container.put(`${dir}/${hex}.ndjson`, 'application/x-ndjson', tableLines(table));
        rows += table.rowCount;
      }
    }
    // Inside a source transaction the pointer stays put: readers never see part of a
    // transaction, and a restart replays the transaction's batches onto the same blobs.
    if (!batch.continues) this.container.put(`${this.pipeline}/_committed`, 'text/plain', hex);
    if (rows > 0) counter('rows_written', rows);
    this.applied = batch.position;
    return batch.position;
  }
}

export const destinationConnector = destination({
  spec: SPEC,

  check(config) {
    const container = new Container(config);
    const results = [];
    try {
      container.get('.culvert-check');
      results.push({ name: 'container', ok: true, message: `container ${container.base} is readable` });
    } catch (e) {
      return [{ name: 'container', ok: false, message: e.message }];
    }
    try {
      container.put('.culvert-check', 'text/plain', 'written by the check of blob-ndjson-destination');
      results.push({ name: 'write', ok: true, message: 'the SAS can create and write blobs' });
    } catch (e) {
      results.push({ name: 'write', ok: false, message: e.message });
    }
    return results;
  },

  open({ config, pipeline }) {
    return new NdjsonWriter(config, pipeline);
  },
});
