"""Typed configuration: declare the fields once, get the JSON Schema `spec` and a parser
whose errors name the field and say how to fix it.

    CONFIG = Config(
        Int("rows", description="Rows in the snapshot.", minimum=0),
        Int("batch_rows", default=1000, minimum=1),
        Str("token", secret=True),
        Str("base_url", egress=True, url=True),
        title="my-source",
    )
    cfg = CONFIG.parse(text)     # raises ConnectorError("config", ...) when invalid
    cfg.rows, cfg["batch_rows"]

Unknown fields are accepted on purpose: the agent may add its own (for example `tables`).
"""

import json
import math
import re

from .errors import ConnectorError

__all__ = ["Config", "Values", "Int", "Float", "Str", "Bool", "StrList", "Json", "MISSING"]


class _Missing:
    def __repr__(self):
        return "MISSING"


#: Marks "no default": such a field is required unless `required=False` is given.
MISSING = _Missing()


def _fail(message):
    raise ConnectorError("config", message)


def _show(value):
    text = json.dumps(value)
    return text if len(text) <= 60 else text[:57] + "..."


class _Field:
    json_type = None
    what = "a value"

    def __init__(self, name, description="", default=MISSING, required=None, secret=False,
                 egress=False, **schema):
        self.name = name
        self.description = description
        self.default = default
        self.required = (default is MISSING) if required is None else required
        self.secret = secret
        self.egress = egress
        self.extra = schema

    def schema(self):
        """This field's JSON Schema."""
        s = {}
        if self.json_type:
            s["type"] = self.json_type
        if self.description:
            s["description"] = self.description
        if self.default is not MISSING and self.default is not None:
            s["default"] = self.default
        if self.secret:
            s["writeOnly"] = True
            s["x-culvert-secret"] = True
        if self.egress:
            s["x-culvert-egress"] = True
        s.update(self.extra)
        return s

    def parse(self, value):
        """The checked value; raise ConnectorError("config") naming the field."""
        return value

    def _wrong(self, value):
        _fail("field `%s` must be %s, not %s" % (self.name, self.what, _show(value)))


class Int(_Field):
    """An integer, optionally bounded by `minimum` / `maximum`."""

    json_type = "integer"
    what = "an integer"

    def __init__(self, name, description="", minimum=None, maximum=None, **kw):
        if minimum is not None:
            kw["minimum"] = minimum
        if maximum is not None:
            kw["maximum"] = maximum
        super().__init__(name, description, **kw)
        self.minimum = minimum
        self.maximum = maximum

    def parse(self, value):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            self._wrong(value)
        if self.minimum is not None and value < self.minimum:
            _fail("field `%s` must be at least %s, not %s" % (self.name, self.minimum, value))
        if self.maximum is not None and value > self.maximum:
            _fail("field `%s` must be at most %s, not %s" % (self.name, self.maximum, value))
        return value


class Float(_Field):
    """A number, optionally bounded by `minimum` / `maximum`."""

    json_type = "number"
    what = "a number"

    def __init__(self, name, description="", minimum=None, maximum=None, **kw):
        if minimum is not None:
            kw["minimum"] = minimum
        if maximum is not None:
            kw["maximum"] = maximum
        super().__init__(name, description, **kw)
        self.minimum = minimum
        self.maximum = maximum

    def parse(self, value):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            self._wrong(value)
        if self.minimum is not None and value < self.minimum:
            _fail("field `%s` must be at least %s, not %s" % (self.name, self.minimum, value))
        if self.maximum is not None and value > self.maximum:
            _fail("field `%s` must be at most %s, not %s" % (self.name, self.maximum, value))
        return float(value)


class Str(_Field):
    """A string. `secret=True` hides it (`writeOnly`, `x-culvert-secret`); `egress=True`
    lets the agent allow the host and port it names (`x-culvert-egress`); `url=True`
    requires an absolute http:// or https:// URL; `choices` restricts it to a list;
    `nonempty` (default True for required fields) refuses ""."""

    json_type = "string"
    what = "a string"

    def __init__(self, name, description="", choices=None, nonempty=None, url=False, **kw):
        if choices:
            kw["enum"] = list(choices)
        if url:
            kw.setdefault("format", "uri")
        super().__init__(name, description, **kw)
        self.url = url
        self.choices = list(choices) if choices else None
        self.nonempty = self.required if nonempty is None else nonempty
        if self.nonempty and "minLength" not in self.extra:
            self.extra["minLength"] = 1

    def parse(self, value):
        if not isinstance(value, str):
            self._wrong(value)
        if self.nonempty and not value:
            _fail("field `%s` must not be empty" % self.name)
        if self.choices and value not in self.choices:
            _fail("field `%s` must be one of %s, not %s"
                  % (self.name, ", ".join(_show(c) for c in self.choices), _show(value)))
        if self.url and value and not (value.startswith("http://") or value.startswith("https://")):
            _fail("field `%s` must be an absolute http:// or https:// URL, not %s"
                  % (self.name, _show(value)))
        return value


class Bool(_Field):
    """true or false."""

    json_type = "boolean"
    what = "true or false"

    def parse(self, value):
        if not isinstance(value, bool):
            self._wrong(value)
        return value


class StrList(_Field):
    """A list of strings, at least `min_items` long, without duplicates when `unique`."""

    json_type = "array"
    what = "a list of strings"

    def __init__(self, name, description="", min_items=None, unique=True, pattern=None, **kw):
        items = {"type": "string", "minLength": 1}
        if pattern:
            items["pattern"] = pattern
        kw.setdefault("items", items)
        if min_items is not None:
            kw["minItems"] = min_items
        if unique:
            kw["uniqueItems"] = True
        super().__init__(name, description, **kw)
        self.min_items = min_items
        self.unique = unique
        self.pattern = pattern

    def parse(self, value):
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            self._wrong(value)
        if self.min_items is not None and len(value) < self.min_items:
            _fail("field `%s` needs at least %d entr%s" % (
                self.name, self.min_items, "y" if self.min_items == 1 else "ies"))
        if self.unique and len(set(value)) != len(value):
            dup = sorted({v for v in value if value.count(v) > 1})
            _fail("field `%s` lists %s more than once" % (self.name, ", ".join(_show(d) for d in dup)))
        if self.pattern:
            for v in value:
                if not re.fullmatch(self.pattern, v):
                    _fail("field `%s`: %s does not match %s" % (self.name, _show(v), self.pattern))
        return list(value)


class Json(_Field):
    """Any JSON value, described by `schema` (a JSON Schema dict) and checked by `check`,
    a function that returns the value to use or raises ConnectorError."""

    what = "JSON"

    def __init__(self, name, description="", schema=None, check=None, **kw):
        kw.update(schema or {})
        super().__init__(name, description, **kw)
        self.check = check

    def parse(self, value):
        return self.check(value) if self.check else value


class Values(dict):
    """Parsed configuration: a dict whose keys are also attributes."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError("configuration has no field %r" % name) from None


class Config:
    """The declared fields of a connector's configuration."""

    def __init__(self, *fields, title=None, description=None):
        names = [f.name for f in fields]
        if len(set(names)) != len(names):
            raise ValueError("a configuration field is declared twice: %s" % names)
        self.fields = list(fields)
        self.title = title
        self.description = description

    def schema(self):
        """The JSON Schema (a dict)."""
        s = {"$schema": "http://json-schema.org/draft-07/schema#", "type": "object"}
        if self.title:
            s["title"] = self.title
        if self.description:
            s["description"] = self.description
        s["properties"] = {f.name: f.schema() for f in self.fields}
        required = [f.name for f in self.fields if f.required]
        if required:
            s["required"] = required
        return s

    def spec(self):
        """The JSON Schema as text: what `spec` returns."""
        return json.dumps(self.schema(), indent=2)

    def parse(self, text):
        """Parse JSON configuration text; ConnectorError("config") names what is wrong."""
        if isinstance(text, (bytes, bytearray)):
            text = bytes(text).decode("utf-8", "replace")
        if isinstance(text, dict):
            raw = text
        else:
            try:
                raw = json.loads(text)
            except ValueError as e:
                _fail("the configuration is not valid JSON (%s); write it as a JSON object" % e)
        if not isinstance(raw, dict):
            _fail("the configuration must be a JSON object with fields %s, not %s"
                  % (", ".join("`%s`" % f.name for f in self.fields), _show(raw)))
        values = Values()
        for f in self.fields:
            if f.name not in raw or raw[f.name] is None:
                if f.required:
                    hint = (": " + f.description) if f.description else ""
                    _fail("field `%s` is required%s" % (f.name, hint))
                values[f.name] = None if f.default is MISSING else f.default
                continue
            values[f.name] = f.parse(raw[f.name])
        return values
