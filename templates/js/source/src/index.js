// {{name}}: a Culvert source connector.
//
// As generated it is a self-contained, deterministic source: one table `demo.items`
// (id int64 primary key, name utf8, amount float64) with a snapshot of `rows` rows, then
// nothing more. The position after a batch is the number of rows delivered so far as a
// big-endian u64, so a reader resumed after position p continues at row p + 1: no
// duplicates, no gaps. Replace `itemAt` and the table description with reads from your
// system; keep the position something the system can resume from.

import { ConnectorError, TableRows, log, position, selects, source } from 'culvert-connector-sdk';

const TABLE = { namespace: 'demo', name: 'items' };

/** Columns of demo.items, as TableRows writes them (`culvert.type` is the source type name). */
const COLUMNS = [
  { name: 'id', type: 'int64', sourceType: 'bigint', key: true },
  { name: 'name', type: 'utf8', sourceType: 'text' },
  { name: 'amount', type: 'float64', sourceType: 'double precision' },
];

/** JSON Schema of the configuration; the SDK validates every configuration against it. */
const SPEC = {
  title: '{{name}}',
  type: 'object',
  properties: {
    rows: {
      type: 'integer',
      minimum: 0,
      default: 1000,
      description: 'Rows in the snapshot of demo.items.',
    },
    batch_rows: {
      type: 'integer',
      minimum: 1,
      description: 'At most this many rows per batch (the agent may ask for fewer).',
    },
  },
};

/** Row `id` (1-based) of the generated table. */
function itemAt(id) {
  return { id: BigInt(id), name: `item-${id}`, amount: id * 1.25 };
}

/** Reads demo.items from just after `resume`. */
class ItemsReader {
  constructor(config, selection, resume) {
    this.total = config.rows;
    this.batchRows = config.batch_rows ?? Infinity;
    this.selected = selects(selection, TABLE);
    if (resume === null) {
      this.delivered = 0;
    } else if (resume.length !== 8) {
      throw ConnectorError.state(
        `the resume position has ${resume.length} bytes, {{name}} writes 8; the committed position belongs to another connector: use a new pipeline name`,
      );
    } else {
      this.delivered = Number(position.toU64(resume));
    }
    log.info(
      this.delivered < this.total
        ? `reading demo.items from row ${this.delivered + 1} of ${this.total}`
        : `demo.items is complete: all ${this.total} rows were delivered`,
    );
  }

  next(maxRows) {
    if (!this.selected || this.delivered >= this.total) return null;
    const first = this.delivered + 1;
    const n = Math.min(maxRows, this.batchRows, this.total - this.delivered);
    const rows = new TableRows(TABLE, COLUMNS, { firstOfTable: this.delivered === 0 });
    for (let id = first; id < first + n; id++) rows.push(itemAt(id));
    this.delivered += n;
    return { kind: 'snapshot', position: position.fromU64(this.delivered), tables: [rows] };
  }

  ack(_position) {
    // Nothing to release: the data is generated. A real source frees what is durable downstream.
  }
}

export const sourceConnector = source({
  spec: SPEC,

  check(config) {
    return [{ name: 'rows', ok: true, message: `demo.items will have ${config.rows} rows` }];
  },

  discover(config) {
    return [
      {
        table: TABLE,
        columns: COLUMNS.map((c, i) => ({ name: c.name, typeName: c.sourceType, nullable: i !== 0, keyOrdinal: c.key ? 1 : undefined })),
        identifiable: true,
        estimatedRows: config.rows,
      },
    ];
  },

  open({ config, selection, resume }) {
    return new ItemsReader(config, selection, resume);
  },
});
