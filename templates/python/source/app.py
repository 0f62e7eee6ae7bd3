"""`{{name}}`: a Culvert source connector.

As generated it produces a deterministic table `demo.items` (`rows` rows, then nothing
more), which is enough to run the conformance kit and a pipeline end to end. Replace
`fetch_rows` and the table in `ITEMS` with reads from your own system.

Import everything at the top of a module: the component is a snapshot taken after
importing `app`, and it has no filesystem to import more from while it runs.
"""

from culvert_connector import (
    Batch,
    Column,
    Config,
    ConnectorError,
    Int,
    Reader,
    Source,
    Table,
    decode_u64,
    encode_u64,
    export_source,
)

CONFIG = Config(
    Int("rows", "Rows in the snapshot of `demo.items`.", minimum=0),
    Int("batch_rows", "Most rows in one batch (the agent may ask for fewer).",
        default=1000, minimum=1),
    title="{{name}}",
)

# The one table this connector produces.
ITEMS = Table("demo", "items", [
    Column.bigint("id").primary_key(),
    Column.text("name"),
    Column.double("amount"),
])


def fetch_rows(first, last):
    """Rows `first..=last` of `demo.items`: the place to read from your own system."""
    return [(i, "item %d" % i, i * 1.25) for i in range(first, last + 1)]


class {{name_pascal}}(Source):
    """Spec, check and discover; `open` starts a reader."""

    config = CONFIG

    def discover(self, cfg):
        return [ITEMS.info(estimated_rows=cfg.rows)]

    def open(self, cfg, selection, resume):
        return {{name_pascal}}Reader(cfg, selection, resume)


class {{name_pascal}}Reader(Reader):
    """Streams `demo.items`. The position is the number of rows delivered so far
    (big-endian u64), so resuming after position `p` continues with row `p + 1`."""

    def __init__(self, cfg, selection, resume):
        delivered = 0 if resume is None else decode_u64(resume)
        if delivered > cfg.rows:
            raise ConnectorError(
                "state",
                "the pipeline resumes after row %d but `rows` is %d; raise `rows` or reset "
                "the pipeline" % (delivered, cfg.rows))
        self.cfg = cfg
        self.selected = ITEMS.is_selected(selection)
        self.next_id = delivered + 1

    def next(self, max_rows):
        if not self.selected or self.next_id > self.cfg.rows:
            # Everything was delivered: an idle source answers "nothing new".
            return None
        limit = max(1, min(self.cfg.batch_rows, max_rows))
        last = min(self.cfg.rows, self.next_id + limit - 1)
        rows = ITEMS.rows(first_of_table=self.next_id == 1)
        rows.extend(fetch_rows(self.next_id, last))
        self.next_id = last + 1
        return Batch.snapshot(encode_u64(last), [rows.finish()])


# The export componentize-py looks for (the `source-connector` interface).
SourceConnector = export_source({{name_pascal}})
