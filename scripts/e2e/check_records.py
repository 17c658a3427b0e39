#!/usr/bin/env python3
"""Checks the records the echo example left on its Kafka topic, as kcat read them.

Usage: check_records.py RECORDS COUNTS

RECORDS is the output of
  kcat -b 127.0.0.1:9092 -C -t echo-messages -e -q -f '%k|%h|%S\n'
one record a line: key, headers ("name=value,name=value"; kcat's own layout)
and the value's length, -1 for a null value.

COUNTS is the JSON that echo_client.py --counts wrote; its calls_written is
the number of calls that should each have ended with one null record.

Prints one line per check, "ok kcat NAME" or "FAIL kcat NAME: WHY", and exits
1 if any check failed.
"""

import json
import sys

SERVICE = "grpc.examples.echo.Echo"
TOPIC = "echo-messages"


def parse(line):
    """Returns (key, [(name, value)], value_length) of one kcat line."""
    key, rest = line.split("|", 1)
    headers_text, length = rest.rsplit("|", 1)
    headers = []
    if headers_text:
        for h in headers_text.split(","):
            name, _, value = h.partition("=")
            headers.append((name, value))
    return key, headers, int(length)


def main():
    records_path, counts_path = sys.argv[1], sys.argv[2]
    with open(counts_path) as f:
        counts = json.load(f)
    with open(records_path) as f:
        lines = [l.rstrip("\n") for l in f if l.strip()]

    results = []

    def check(name, why):
        results.append((name, why))

    records = []
    bad = []
    for l in lines:
        try:
            records.append(parse(l))
        except ValueError:
            bad.append(l)
    if bad or not records:
        check("records read",
              "%d records, %d unparsable lines (first: %r)"
              % (len(records), len(bad), bad[:1]))
    else:
        check("records read", None)
        print("kcat: %d records on %s" % (len(records), TOPIC), file=sys.stderr)

    # A request record of the UnaryEcho call made with x-user metadata.
    want = {
        "zilla:service": SERVICE,
        "zilla:method": "UnaryEcho",
        "zilla:reply-to": TOPIC,
        "meta:x-user": "ann",
    }
    found = False
    for key, headers, _ in records:
        h = dict(headers)
        if all(h.get(k) == v for k, v in want.items()) \
                and h.get("zilla:correlation-id") == key and key:
            found = True
            break
    check("UnaryEcho record headers",
          None if found else
          "no record with headers %s and zilla:correlation-id equal to its key"
          % ", ".join("%s=%s" % kv for kv in want.items()))

    nulls = sum(1 for _, _, n in records if n == -1)
    want_nulls = counts["calls_written"]
    check("null records",
          None if nulls == want_nulls else
          "%d null-value records, want %d (one per call made with a reply "
          "route, idempotent retries excluded)" % (nulls, want_nulls))

    nope = [k for k, headers, _ in records if ("zilla:method", "Nope") in headers]
    check("unknown method wrote nothing",
          None if not nope else "%d records of method Nope" % len(nope))

    failed = 0
    for name, why in results:
        if why:
            failed += 1
            print("FAIL kcat %s: %s" % (name, why), flush=True)
        else:
            print("ok kcat %s" % name, flush=True)
    if failed:
        print("kcat records were:", file=sys.stderr)
        for l in lines:
            print("  " + l, file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
