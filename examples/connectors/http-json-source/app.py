"""`http-json-source`: replicates the resources of a paginated JSON API.

Each resource (`GET {base_url}/{resource}`) becomes the table `api.{resource}`. The API
answers `{"items": [...], "next_cursor": "..." | null}`, takes `limit`, `cursor` and
`updated_after`, and orders items by (`updated_at`, `id`) with a keyset cursor; items
carry `id` and `updated_at`. `test_server.py` is such an API.

Reading: a snapshot of every resource, page by page, then polling each resource for
items updated after the newest `updated_at` seen (sent as changes: `I` for items whose
`created_at` equals `updated_at`, else `U`, both upserts by `id`). Deletes are not
visible to this kind of API; soft deletes arrive as updates.

The position is a batch counter (8 bytes, big-endian: it orders positions) followed by
JSON: the resource being read, the phase, the page cursor, the round's `updated_after`
and the newest `updated_at` per resource. Resuming re-requests exactly the next page.
"""

import datetime as dt
import json

from culvert_connector import (
    Batch,
    Check,
    Column,
    Config,
    ConnectorError,
    Float,
    Int,
    Json,
    Reader,
    Source,
    Str,
    StrList,
    Table,
    encode_u64,
    export_source,
    host,
    split_u64,
)

NAMESPACE = "api"

# Column types a configuration may declare, with how a JSON value becomes a column value.
TYPES = {
    "bigint": Column.bigint,
    "double precision": Column.double,
    "text": Column.text,
    "boolean": Column.boolean,
    "timestamptz": Column.timestamptz,
    "jsonb": Column.jsonb,
}

# Resources without declared columns get these: the key, the change time, the whole item.
DEFAULT_COLUMNS = {"id": "text", "updated_at": "timestamptz", "item": "jsonb"}


def check_columns(value):
    """Validate the `columns` field: {resource: {column: type}}, `id` in each."""
    if not isinstance(value, dict):
        raise ConnectorError("config", "field `columns` must be an object mapping resource "
                                       "names to {column: type} objects")
    for resource, cols in value.items():
        if not isinstance(cols, dict) or not cols:
            raise ConnectorError("config", "field `columns.%s` must be a non-empty object of "
                                           "column: type" % resource)
        if "id" not in cols:
            raise ConnectorError("config", "field `columns.%s` must declare `id` (the primary "
                                           "key)" % resource)
        for name, type_name in cols.items():
            if type_name not in TYPES:
                raise ConnectorError(
                    "config", "field `columns.%s.%s`: type %s is not supported; use one of %s"
                    % (resource, name, json.dumps(type_name), ", ".join(sorted(TYPES))))
    return value


CONFIG = Config(
    Str("base_url", "API base URL, for example http://127.0.0.1:8765. The agent allows HTTP "
                    "requests to its host and port.", egress=True, url=True),
    Str("token", "Bearer token sent with every request.", secret=True),
    StrList("resources", "Resources to replicate; each becomes the table api.<name>.",
            min_items=1, pattern="[A-Za-z0-9_-]+"),
    Int("page_size", "Items requested per page (the agent may ask for fewer).",
        default=100, minimum=1, maximum=1000),
    Float("poll_seconds", "Seconds between polls for changes once caught up.",
          default=1.0, minimum=0, maximum=60),
    Json("columns", "Columns per resource, for example {\"orders\": {\"id\": \"bigint\", "
                    "\"amount\": \"double precision\", \"updated_at\": \"timestamptz\"}}. Types: "
                    + ", ".join(sorted(TYPES)) + ". `id` is the primary key. A resource not "
                    "listed gets id (text), updated_at (timestamptz) and item (jsonb, the "
                    "whole item).",
         schema={"type": "object", "additionalProperties": {
             "type": "object", "additionalProperties": {"type": "string", "enum": sorted(TYPES)}}},
         default=None, check=check_columns),
    title="http-json-source",
    description="Replicates the resources of a paginated JSON API.",
)


def load(text):
    """Parse the configuration; errors name the field."""
    cfg = CONFIG.parse(text)
    cfg["base_url"] = cfg.base_url.rstrip("/")
    unknown = sorted(set(cfg.columns or {}) - set(cfg.resources))
    if unknown:
        raise ConnectorError("config", "field `columns` describes %s, which `resources` does not "
                                       "list" % ", ".join(unknown))
    return cfg


def table_of(cfg, resource):
    """The table of one resource, from its declared columns or the defaults."""
    cols = (cfg.columns or {}).get(resource) or DEFAULT_COLUMNS
    columns = []
    for name, type_name in cols.items():
        c = TYPES[type_name](name)
        columns.append(c.primary_key() if name == "id" else c)
    return Table(NAMESPACE, resource, columns)


def parse_time(value):
    """An ISO 8601 time as an aware datetime (naive ones are UTC), or None."""
    if not isinstance(value, str):
        return None
    try:
        t = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return t if t.tzinfo else t.replace(tzinfo=dt.timezone.utc)


def convert(value, type_name):
    """A JSON value as a column value; raises ValueError when it does not fit."""
    if value is None:
        return None
    if type_name == "jsonb":
        return json.dumps(value, separators=(",", ":"), sort_keys=True)
    if type_name == "text":
        if isinstance(value, (dict, list)):
            raise ValueError("an object or list")
        return value if isinstance(value, str) else json.dumps(value)
    if type_name == "bigint":
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int) or not -2 ** 63 <= value < 2 ** 63:
            raise ValueError("not a 64-bit integer")
        return value
    if type_name == "double precision":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError("not a number")
        return float(value)
    if type_name == "boolean":
        if not isinstance(value, bool):
            raise ValueError("not true or false")
        return value
    if type_name == "timestamptz":
        t = parse_time(value)
        if t is None:
            raise ValueError("not an ISO 8601 time")
        return t
    raise ValueError("unknown type %s" % type_name)


class Api:
    """Requests to the API, with retries of 429 and 5xx answers and readable errors."""

    RETRIES = 3
    # Seconds before the first retry; each later one waits twice as long.
    FIRST_WAIT = 0.5

    def __init__(self, cfg):
        self.cfg = cfg

    def page(self, resource, limit, cursor=None, updated_after=None):
        """One page: (items, next_cursor)."""
        query = ["limit=%d" % limit]
        if cursor:
            query.append("cursor=" + quote(cursor))
        if updated_after:
            query.append("updated_after=" + quote(updated_after))
        url = "%s/%s?%s" % (self.cfg.base_url, quote(resource), "&".join(query))
        headers = [("authorization", "Bearer " + self.cfg.token), ("accept", "application/json")]
        wait = self.FIRST_WAIT
        for attempt in range(self.RETRIES + 1):
            response = host.http("GET", url, headers)
            if not (response.status == 429 or 500 <= response.status <= 599) or attempt == self.RETRIES:
                break
            delay = retry_after(response, wait)
            host.warn("GET %s/%s answered HTTP %d; retrying in %.1f s"
                      % (self.cfg.base_url, resource, response.status, delay))
            host.sleep(delay)
            wait *= 2
        self.raise_for(resource, response)
        body = response.json()
        if not (isinstance(body, dict) and isinstance(body.get("items"), list)
                and (body.get("next_cursor") is None or isinstance(body["next_cursor"], str))):
            raise ConnectorError(
                "internal", "GET %s/%s answered %s, not the expected {\"items\": [...], "
                "\"next_cursor\": \"...\" or null}; check that `base_url` points at the API"
                % (self.cfg.base_url, resource, response.text[:200]))
        return body["items"], body.get("next_cursor")

    def raise_for(self, resource, response):
        """Map an error status to an actionable ConnectorError."""
        if response.ok:
            return
        where = "%s/%s" % (self.cfg.base_url, resource)
        detail = response.text.strip()[:200] or "(no body)"
        s = response.status
        if s == 401:
            raise ConnectorError("auth", "the API at %s refused the token (HTTP 401: %s); check "
                                         "`token`" % (self.cfg.base_url, detail))
        if s == 403:
            raise ConnectorError("permission", "the token may not read %s (HTTP 403: %s); grant it "
                                               "read access or remove `%s` from `resources`"
                                 % (where, detail, resource))
        if s == 404:
            raise ConnectorError("config", "%s does not exist (HTTP 404: %s); check `base_url` and "
                                           "the names in `resources`" % (where, detail))
        if s == 429 or s >= 500:
            raise ConnectorError("connection", "%s kept answering HTTP %d after %d retries (%s); "
                                               "the agent tries again later"
                                 % (where, s, self.RETRIES, detail))
        raise ConnectorError("internal", "%s answered HTTP %d: %s" % (where, s, detail))


def retry_after(response, default):
    """Seconds to wait before retrying: the `Retry-After` header (capped) or `default`."""
    value = response.header("retry-after")
    try:
        return min(max(float(value), 0.0), 10.0)
    except (TypeError, ValueError):
        return default


_SAFE = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")


def quote(text):
    """Percent-encode a query value or path segment."""
    return "".join(chr(b) if b in _SAFE else "%%%02X" % b for b in text.encode("utf-8"))


class HttpJsonSource(Source):
    """Spec, check and discover; `open` starts a reader."""

    config = CONFIG

    def parse_config(self, text):
        return load(text)

    def check(self, cfg):
        api = Api(cfg)
        results = []
        for resource in cfg.resources:
            try:
                api.page(resource, 1)
            except ConnectorError as e:
                results.append(Check.failed("read " + resource, e.message))
                if e.kind in ("connection", "auth"):
                    break  # The other resources would fail the same way.
            else:
                results.append(Check.passed("read " + resource))
        return results

    def discover(self, cfg):
        return [table_of(cfg, r).info() for r in cfg.resources]

    def open(self, cfg, selection, resume):
        return HttpJsonReader(cfg, selection, resume)


SNAPSHOT, POLL = "snapshot", "poll"


class HttpJsonReader(Reader):
    """Snapshot every resource, then poll for changes; see the module docstring."""

    def __init__(self, cfg, selection, resume):
        self.cfg = cfg
        self.api = Api(cfg)
        self.idle_seconds = cfg.poll_seconds
        self.tables = [table_of(cfg, r) for r in cfg.resources]
        self.selected = [t.is_selected(selection) for t in self.tables]
        n = len(cfg.resources)
        # Where reading stands; all of it goes into every position.
        self.counter = 0
        self.phase = SNAPSHOT
        self.index = 0
        self.cursor = None
        self.round_after = None
        self.newest = [None] * n
        if resume is not None:
            self.restore(resume)

    def restore(self, position):
        self.counter, payload = split_u64(position)
        try:
            state = json.loads(payload.decode("utf-8"))
            resources = state["resources"]
            phase, index = state["phase"], state["index"]
            cursor, round_after, newest = state["cursor"], state["round_after"], state["newest"]
        except (ValueError, KeyError, TypeError):
            raise ConnectorError("state", "the stored position was not written by this connector; "
                                          "reset the pipeline's position") from None
        if resources != self.cfg.resources:
            raise ConnectorError(
                "state", "the pipeline's position was written for resources %s but `resources` now "
                "lists %s; restore the list, or reset the pipeline to copy everything again"
                % (json.dumps(resources), json.dumps(self.cfg.resources)))
        self.phase, self.index, self.cursor = phase, index, cursor
        self.round_after, self.newest = round_after, newest

    def position(self):
        self.counter += 1
        state = {
            "resources": self.cfg.resources,
            "phase": self.phase,
            "index": self.index,
            "cursor": self.cursor,
            "round_after": self.round_after,
            "newest": self.newest,
        }
        return encode_u64(self.counter) + json.dumps(state, separators=(",", ":")).encode("utf-8")

    def next(self, max_rows):
        limit = max(1, min(self.cfg.page_size, max_rows))
        if self.phase == SNAPSHOT:
            return self.snapshot_page(limit)
        # One round over the resources at most per call, so an idle poll stays short.
        for _ in range(len(self.tables)):
            batch = self.poll_page(limit)
            if batch is not None:
                return batch
        return None

    def snapshot_page(self, limit):
        i = self.index
        table = self.tables[i]
        resource = self.cfg.resources[i]
        first = self.cursor is None
        if self.selected[i]:
            items, next_cursor = self.api.page(resource, limit, self.cursor)
        else:
            items, next_cursor = [], None
        self.note_newest(i, items)
        if next_cursor:
            self.cursor = next_cursor
        else:
            self.cursor = None
            self.index += 1
            if self.index == len(self.tables):
                self.phase, self.index = POLL, 0
                self.round_after = self.newest[0]
        if not self.selected[i]:
            return Batch.heartbeat(self.position())
        if not items and not first:
            return Batch.heartbeat(self.position())
        rows = table.rows(first_of_table=first)
        for item in items:
            rows.append(self.row(table, resource, item))
        host.counter_add("items_read", len(items))
        return Batch.snapshot(self.position(), [rows.finish()])

    def poll_page(self, limit):
        i = self.index
        table = self.tables[i]
        resource = self.cfg.resources[i]
        items, next_cursor = [], None
        if self.selected[i]:
            items, next_cursor = self.api.page(resource, limit, self.cursor, self.round_after)
        self.note_newest(i, items)
        if next_cursor and items:
            self.cursor = next_cursor
        else:
            # The round over this resource is done: the next one starts at its newest change.
            self.cursor = None
            self.index = (i + 1) % len(self.tables)
            self.round_after = self.newest[self.index]
        if not items:
            return None
        lsn = self.counter + 1
        rows = table.changes()
        for seq, item in enumerate(items):
            op = "I" if item.get("created_at") is not None and \
                item.get("created_at") == item.get("updated_at") else "U"
            rows.change(op, lsn, seq, self.row(table, resource, item))
        host.counter_add("items_read", len(items))
        return Batch.changes(self.position(), [rows.finish()])

    def note_newest(self, i, items):
        newest = self.newest[i]
        newest_t = parse_time(newest)
        for item in items:
            t = parse_time(item.get("updated_at")) if isinstance(item, dict) else None
            if t is None:
                raise ConnectorError(
                    "unsupported", "an item of %s has no ISO 8601 `updated_at` (%s); the API must "
                    "give every item its last change time" % (self.cfg.resources[i], _show(item)))
            if newest_t is None or t > newest_t:
                newest, newest_t = item["updated_at"], t
        self.newest[i] = newest

    def row(self, table, resource, item):
        if item.get("id") is None:
            raise ConnectorError("unsupported", "an item of %s has no `id`: %s"
                                 % (resource, _show(item)))
        values = []
        for c in table.columns:
            if c.name == "item" and c.type_name == "jsonb" and "item" not in item:
                values.append(convert(item, "jsonb"))
                continue
            type_name = "timestamptz" if c.type_name == "timestamp with time zone" else c.type_name
            try:
                values.append(convert(item.get(c.name), type_name))
            except ValueError as e:
                raise ConnectorError(
                    "unsupported", "item %s of %s: field `%s` is %s (%s) but the column is %s; "
                    "declare another type in `columns`"
                    % (_show(item.get("id")), resource, c.name, _show(item.get(c.name)), e,
                       type_name)) from None
        return values


def _show(value):
    text = json.dumps(value)
    return text if len(text) <= 120 else text[:117] + "..."


# The export componentize-py looks for (the `source-connector` interface).
SourceConnector = export_source(HttpJsonSource)
