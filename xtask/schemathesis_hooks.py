"""Schemathesis hooks for Fidelis: NDJSON bodies (the journal batch endpoint).

Loaded by `cargo xtask test` through SCHEMATHESIS_HOOKS.
"""

import json

import schemathesis


@schemathesis.serializer("application/x-ndjson")
def ndjson_serializer(ctx, value):
    """A batch request: one JSON document per line."""
    items = value if isinstance(value, list) else [value]
    return "".join(json.dumps(item) + "\n" for item in items).encode("utf-8")


@schemathesis.deserializer("application/x-ndjson")
def ndjson_deserializer(ctx, response):
    """A batch response: one JSON result per line, validated as an array."""
    text = response.content.decode(response.encoding or "utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]
