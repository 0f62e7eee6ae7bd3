"""`{{name}}`: a Culvert destination connector.

As generated it writes one newline-delimited JSON blob per batch into an Azure Blob
Storage container, through the agent's HTTP client (the sandbox itself has no network
access), and keeps the committed position in a `_committed` blob next to the data.
Replace `describe_batch` and the blob layout with what your system needs.

Import everything at the top of a module: the component is a snapshot taken after
importing `app`, and it has no filesystem to import more from while it runs.
"""

import json

from culvert_connector import (
    Bool,
    Check,
    Config,
    ConnectorError,
    Destination,
    Str,
    Writer,
    export_destination,
    http,
)

# Blob service REST API version sent with every request.
API_VERSION = "2021-12-02"

CONFIG = Config(
    Str("container_url",
        "Container URL, for example http://127.0.0.1:10000/devstoreaccount1/mycontainer. "
        "The agent allows HTTP requests to its host and port.", egress=True, url=True),
    Str("sas",
        "Shared access signature (the query string, with or without the leading `?`) "
        "granting read, create and write on the container's blobs.", secret=True),
    Str("prefix", "Text put in front of every blob name, for example `culvert/`.", default=""),
    Bool("discard",
         "For benchmarks only: write nothing and keep the position in memory, so the "
         "boundary cost can be measured without storage. Never use it in a real pipeline.",
         default=False),
    title="{{name}}",
)


def load(text):
    """Parse and validate; errors name the field and say how to fix it."""
    cfg = CONFIG.parse(text)
    url = cfg.container_url.strip()
    if "?" in url or "#" in url:
        raise ConnectorError("config", "field `container_url` must not carry a query string; "
                                       "put the SAS in `sas`")
    rest = url.split("://", 1)[1].rstrip("/")
    if "/" not in rest:
        raise ConnectorError("config", "field `container_url` must name a container, like "
                                       "http://host:port/account/container; got `%s`" % url)
    cfg["container_url"] = url.rstrip("/")
    return cfg


_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~/")


def encode_path(name):
    """Blob names may hold any character; escape all but the unreserved ones and `/`."""
    return "".join(chr(b) if b in _UNRESERVED else "%%%02X" % b for b in name.encode("utf-8"))


class Container:
    """The blobs of one container, through the agent's `http-send`."""

    def __init__(self, cfg):
        self.cfg = cfg

    def url(self, name):
        sas = self.cfg.sas.strip().lstrip("?")
        path = encode_path(self.cfg.prefix + name)
        return "%s/%s?%s" % (self.cfg.container_url, path, sas) if sas else \
            "%s/%s" % (self.cfg.container_url, path)

    def get(self, name):
        return http("GET", self.url(name), [("x-ms-version", API_VERSION)])

    def put(self, name, content_type, body):
        response = http("PUT", self.url(name), [
            ("x-ms-version", API_VERSION),
            ("x-ms-blob-type", "BlockBlob"),
            ("content-type", content_type),
        ], body)
        self.ensure_ok(response)

    def ensure_ok(self, response):
        """The response on success; otherwise an error that says what to do about the
        usual storage failures (Blob Storage names them in `x-ms-error-code`)."""
        if response.ok:
            return response
        code = response.header("x-ms-error-code") or ""
        if code == "ContainerNotFound":
            raise ConnectorError("config", "container %s does not exist; create it or fix "
                                           "`container_url`" % self.cfg.container_url)
        try:
            response.raise_for_status()
        except ConnectorError as e:
            if code.startswith("Authentication") or code.startswith("Authorization"):
                raise ConnectorError("auth", "%s; check that `sas` is valid, not expired and "
                                             "grants read, create and write" % e.message) from None
            raise
        return response


class {{name_pascal}}(Destination):
    """Spec and check; `open` starts a writer."""

    config = CONFIG

    def parse_config(self, text):
        return load(text)

    def check(self, cfg):
        if cfg.discard:
            return [Check.passed("container")]
        container = Container(cfg)
        # A blob that does not exist: BlobNotFound when the container and SAS are fine,
        # ContainerNotFound or an authentication error otherwise.
        response = container.get(".culvert-check")
        if response.status == 404 and response.header("x-ms-error-code") == "BlobNotFound":
            return [Check.passed("container")]
        return [Check.run("container", container.ensure_ok, response)]

    def open(self, cfg, pipeline):
        return {{name_pascal}}Writer(cfg, pipeline)


class {{name_pascal}}Writer(Writer):
    """Writes `{prefix}{pipeline}/{hex(position)}.ndjson` per batch with rows, then
    records the position in `{prefix}{pipeline}/_committed`."""

    def __init__(self, cfg, pipeline):
        self.cfg = cfg
        self.pipeline = pipeline
        self.container = Container(cfg)
        # The committed position once known: None = not read yet, b"" = nothing committed.
        self.known = b"" if cfg.discard else None

    def committed(self):
        if self.known is None:
            response = self.container.get(self.pipeline + "/_committed")
            if response.status == 404 and response.header("x-ms-error-code") != "ContainerNotFound":
                self.known = b""
            else:
                text = self.container.ensure_ok(response).text.strip()
                try:
                    self.known = bytes.fromhex(text)
                except ValueError:
                    raise ConnectorError(
                        "state", "blob %s_committed holds %r, not a hex position; delete it to "
                        "start the pipeline over" % (self.pipeline + "/", text[:80])) from None
        return self.known or None

    def apply(self, batch):
        committed = self.committed()
        if committed is not None and batch.position <= committed:
            # Replayed after a restart: already stored.
            return batch.position
        if not self.cfg.discard:
            if batch.tables:
                self.container.put("%s/%s.ndjson" % (self.pipeline, batch.position.hex()),
                                   "application/x-ndjson", describe_batch(batch))
            self.container.put(self.pipeline + "/_committed", "text/plain",
                               batch.position.hex().encode())
        self.known = batch.position
        return batch.position


def describe_batch(batch):
    """One JSON line per table in the batch."""
    lines = []
    for t in batch.tables:
        lines.append(json.dumps({
            "table": str(t.table),
            "kind": batch.kind,
            "rows": t.row_count,
            "first_of_table": t.first_of_table,
        }, separators=(",", ":")))
    return ("\n".join(lines) + "\n").encode("utf-8")


# The export componentize-py looks for (the `destination-connector` interface).
DestinationConnector = export_destination({{name_pascal}})
