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


def split_ndjson(text):
    """The documents of an NDJSON text. Lines end at "\\n" only: `str.splitlines` would also
    split at U+0085, U+2028 and U+2029, which JSON strings may hold unescaped."""
    return [json.loads(line) for line in text.split("\n") if line.strip()]


@schemathesis.deserializer("application/x-ndjson")
def ndjson_deserializer(ctx, response):
    """A batch response: one JSON result per line, validated as an array."""
    return split_ndjson(response.content.decode(response.encoding or "utf-8"))


if __name__ == "__main__":
    # A self-test, run by `cargo xtask test` before schemathesis.
    lines = [{"detail": "a\u2028b\u0085c\u2029d"}, {"ok": True}]
    text = "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines)
    assert split_ndjson(text) == lines, split_ndjson(text)
    assert split_ndjson("") == []
    print("schemathesis_hooks: NDJSON split ok")
