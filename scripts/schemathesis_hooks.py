"""Schemathesis hooks for metamesh's API fuzz run (scripts/api_fuzz.sh).

`POST /v1/import` takes JSON Lines (`application/x-ndjson`), which
schemathesis cannot serialise by itself: a generated string is sent as the
body as it is; any other generated value is sent as one JSON line.
"""

import json

import schemathesis


@schemathesis.serializer("application/x-ndjson")
def ndjson(ctx, value):
    if isinstance(value, bytes):
        return {"data": value}
    if isinstance(value, str):
        return {"data": value.encode("utf-8", "surrogatepass")}
    return {"data": (json.dumps(value) + "\n").encode()}
