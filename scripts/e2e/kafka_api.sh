#!/usr/bin/env bash
# End-to-end check of the README's "Kafka for clients without a Kafka
# library" example with outside clients: a Python client compiled from
# Kafka-Pixy's proto calls Ferry's KafkaPixy gRPC service
# (scripts/e2e/pixy_client.py), curl calls Kafka-Pixy's REST paths and
# Ferry's /v1 REST paths, and Debian's kcat reads what they all wrote to
# Kafka.
#
#   bash scripts/e2e/kafka_api.sh
#
# Installs what it needs (kcat from Debian if missing; grpcio and grpcio-tools
# in a throwaway venv), builds Ferry, serves examples/kafka-api/ferry.yaml on
# the embedded broker (gRPC 127.0.0.1:7151, HTTP 127.0.0.1:7152, Kafka
# 127.0.0.1:9092), runs the checks on topics and groups named for this run,
# stops Ferry with SIGTERM and removes everything it made.
#
# Prints one line per check, "ok NAME" or "FAIL NAME: WHY"; the last line it
# prints is always "N passed, M failed" for the whole run, and it exits
# non-zero if anything failed. Progress and diagnostics go to stderr.
#
# What it shares with run.sh (counters, cleanup, prerequisites, building,
# starting and stopping Ferry) is in scripts/e2e/lib.sh.
set -euo pipefail

GRPC_PORT=7151
HTTP_PORT=7152
KAFKA_PORT=9092
HOST=127.0.0.1
PARTITIONS=3       # examples/kafka-api/ferry.yaml: embedded.partitions
LONG_POLL=3        # seconds; Ferry's default long-poll timeout
START_TIMEOUT=30   # seconds for Ferry to accept gRPC and HTTP connections
STOP_TIMEOUT=15    # seconds for Ferry to exit after SIGTERM
SETTLE=8           # seconds for commits (every 500 ms) to show in offsets
GRPCIO_VERSION=1.85.1

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PORTS=("$GRPC_PORT" "$HTTP_PORT" "$KAFKA_PORT")
# Sets up the counters and the exit trap, and changes to the repository root.
# shellcheck source=lib.sh
source "$SCRIPT_DIR/lib.sh"

# Names for this run, so that nothing a previous run left counts.
RUN="$(date +%s)-$$"
T_PIXY="e2e-pixy-grpc-$RUN"   # written by pixy_client.py
T_REST="e2e-pixy-rest-$RUN"   # Kafka-Pixy's REST paths
T_FERRY="e2e-ferry-rest-$RUN" # Ferry's /v1 REST paths
T_EMPTY="e2e-empty-$RUN"      # created by kcat, never written
G="e2e-$RUN"

BASE="http://$HOST:$HTTP_PORT"
V1="$BASE/v1/clusters/default"

# --- HTTP and JSON helpers ----------------------------------------------------

# http OUT [curl args...]: runs curl, writes the body to OUT and sets CODE to
# the HTTP status ("curl-exit-N" when curl failed) and TOOK to the seconds
# the request took.
CODE=""
TOOK=""
http() {
  local out=$1 t0=$EPOCHREALTIME
  shift
  CODE=$(curl -s --max-time 20 -o "$out" -w '%{http_code}' "$@") || CODE="curl-exit-$?"
  TOOK=$("$PY" -c 'import sys; print("%.2f" % (float(sys.argv[2]) - float(sys.argv[1])))' "$t0" "$EPOCHREALTIME")
}

# jcheck NAME FILE CODE WANT_CODE SNIPPET [ARGS...]: passes NAME if CODE is
# WANT_CODE and the Python SNIPPET, run on FILE, leaves `why` empty. The
# snippet sees d (FILE's JSON, or None), raw (FILE's text), a (ARGS), b64e
# and b64d (base64 of and from text), i (int of a protojson int64, which is
# a string), key(m) (a message's key as text, "<none>" when unset) and
# ensure(cond, why).
jcheck() {
  local name=$1 file=$2 code=$3 want=$4 snippet=$5 why
  shift 5
  if [[ "$code" != "$want" ]]; then
    fail "$name" "HTTP $code, want $want: $(head -c 300 "$file" 2>/dev/null | tr '\n' ' ')"
    return 0
  fi
  why=$("$PY" "$tmp/jcheck.py" check "$file" "$snippet" "$@" 2>&1) || why="the check crashed: $why"
  if [[ -n "$why" ]]; then
    fail "$name" "$why"
  else
    pass "$name"
  fi
}

# jval FILE EXPR [ARGS...]: prints EXPR evaluated on FILE's JSON (as
# jcheck's snippet sees it), or nothing if it fails.
jval() {
  local file=$1 expr=$2
  shift 2
  "$PY" "$tmp/jcheck.py" value "$file" "$expr" "$@" 2>/dev/null || true
}

write_jcheck() {
  cat >"$1" <<'EOF'
import base64, json, sys

mode, path, code = sys.argv[1], sys.argv[2], sys.argv[3]
a = sys.argv[4:]
raw = open(path, encoding="utf-8", errors="surrogateescape").read()
try:
    d = json.loads(raw)
except ValueError:
    d = None

def b64e(s):
    return base64.b64encode(s.encode()).decode()

def b64d(s):
    return None if s is None else base64.b64decode(s).decode("utf-8", "replace")

def key(m):
    return "<none>" if m.get("key") is None else b64d(m["key"])

def i(v):
    return int(v) if v is not None else 0

class Why(Exception):
    pass

def ensure(cond, why):
    if not cond:
        raise Why(why)

if mode == "value":
    print(eval(code))
    sys.exit(0)
env = dict(globals())
env["why"] = None
try:
    exec(code, env)
    why = env["why"]
except Why as e:
    why = str(e)
except Exception as e:
    why = "%s: %s; the answer was %s" % (type(e).__name__, e, raw[:300])
if why:
    print(str(why).replace("\n", " "))
EOF
}

# expect TOPIC KEY VALUE: a record kcat should find.
expect() { printf '%s|%s|%s\n' "$1" "$2" "$3" >>"$tmp/expected.txt"; }

# --- prerequisites ----------------------------------------------------------

check_prerequisites
PY=$PY_SYS

# 1. kcat and curl
need_command kcat
need_command curl

make_tmp ferry-e2e-kafka
: >"$tmp/expected.txt"

# 2. grpcio in a venv (pixy_client.py compiles kafkapixy.proto with it)
make_venv
write_jcheck "$tmp/jcheck.py"

# 3. Build and start Ferry on the embedded broker.
build_ferry
start_ferry examples/kafka-api/ferry.yaml "$GRPC_PORT" "$HTTP_PORT"
accepts "$KAFKA_PORT" || die "ferry starts" "Ferry is up but the embedded broker on $HOST:$KAFKA_PORT does not accept connections"
pass "ferry starts"

# 4. An empty topic for the long polls: the embedded broker creates a topic
# a metadata request names.
kcat_rc=0
timeout 30 kcat -b "$HOST:$KAFKA_PORT" -L -t "$T_EMPTY" </dev/null >"$tmp/meta.txt" 2>"$tmp/kcat.err" || kcat_rc=$?
if ((kcat_rc == 0)) && grep -q "topic \"$T_EMPTY\" with $PARTITIONS partitions" "$tmp/meta.txt"; then
  pass "kcat creates an empty topic"
else
  fail "kcat creates an empty topic" "kcat -L exited with status $kcat_rc: $(cat "$tmp/meta.txt" "$tmp/kcat.err" | tr '\n' ' ' | head -c 400)"
fi

# 5. Kafka-Pixy's gRPC service, from Kafka-Pixy's proto.
log "running pixy_client.py"
client_rc=0
timeout 180 "$PY" "$SCRIPT_DIR/pixy_client.py" --proto api/kafkapixy/kafkapixy.proto \
  --out "$tmp/stubs" --target "$HOST:$GRPC_PORT" --topic "$T_PIXY" --empty-topic "$T_EMPTY" \
  --group "$G-pixy-grpc" --counts "$tmp/counts.json" --expect "$tmp/expected.txt" </dev/null >"$tmp/client.out" || client_rc=$?
grep -v ' passed, .* failed$' "$tmp/client.out" || true
add_counts pixy_client.py "$client_rc" "$tmp/counts.json"

# 6. Kafka-Pixy's REST paths.
log "checking Kafka-Pixy's REST paths"
B="$tmp/body"
GR="$G-pixy-rest"

http "$B" -X POST "$BASE/topics/$T_REST/messages?sync&key=rest-k1" -H 'Content-Type: text/plain' --data-binary 'rest-sync-1'
expect "$T_REST" rest-k1 rest-sync-1
jcheck "pixy REST produce sync" "$B" "$CODE" 200 '
ensure(set(d) == {"partition", "offset"}, "answer %r, want {partition, offset}" % d)
ensure(0 <= d["partition"] < 3 and d["offset"] >= 0, "answer %r, want a partition of 0..2 and an offset >= 0" % d)'

http "$B" -X POST "$BASE/topics/$T_REST/messages?key=rest-k2&sync=true" -H 'Content-Type: text/plain' \
  -H "X-Kafka-Trace-Id: $(printf 'rest-trace-2' | base64)" --data-binary 'rest-headers-2'
expect "$T_REST" rest-k2 rest-headers-2
jcheck "pixy REST produce with X-Kafka- headers" "$B" "$CODE" 200 '
ensure(0 <= d.get("partition", -1) < 3 and d.get("offset", -1) >= 0, "answer %r" % d)'

http "$B" -X POST "$BASE/clusters/default/topics/$T_REST/messages" -H 'Content-Type: application/json' \
  --data-binary '{"n":3}'
expect "$T_REST" "" '{"n":3}'
jcheck "pixy REST produce async, no key, JSON body (/clusters/default)" "$B" "$CODE" 200 '
ensure(d == {}, "answer %r, want {}" % d)'

# Consume: noAck, then ack it with the next GET, then noAck and the acks path.
: >"$tmp/rest_msgs.json"
http "$tmp/m1.json" "$BASE/topics/$T_REST/messages?group=$GR&noAck"
jcheck "pixy REST GET messages noAck" "$tmp/m1.json" "$CODE" 200 '
ensure(set(d) >= {"key", "value", "partition", "offset", "headers"}, "answer %r lacks fields" % d)
ensure(b64d(d["value"]) in ("rest-sync-1", "rest-headers-2", "{\"n\":3}"), "value %r (%r) was not produced" % (d["value"], b64d(d["value"])))'
p1=$(jval "$tmp/m1.json" 'd["partition"]')
o1=$(jval "$tmp/m1.json" 'd["offset"]')
http "$tmp/m2.json" "$BASE/topics/$T_REST/messages?group=$GR&ackPartition=${p1:-0}&ackOffset=${o1:-0}"
jcheck "pixy REST GET messages ackPartition/ackOffset" "$tmp/m2.json" "$CODE" 200 '
m1 = json.load(open(a[0]))
ensure((d["partition"], d["offset"]) != (m1["partition"], m1["offset"]), "got the acknowledged message again: %r" % d)' "$tmp/m1.json"
http "$tmp/m3.json" "$BASE/topics/$T_REST/messages?group=$GR&noAck=true"
jcheck "pixy REST GET messages (all records, keys, values, headers)" "$tmp/m3.json" "$CODE" 200 '
ms = [json.load(open(f)) for f in a]
got = sorted((key(m), b64d(m["value"]), [(h["key"], b64d(h["value"])) for h in m["headers"]]) for m in ms)
want = sorted([("rest-k1", "rest-sync-1", []), ("rest-k2", "rest-headers-2", [("Trace-Id", "rest-trace-2")]), ("<none>", "{\"n\":3}", [])])
ensure(got == want, "got %r, want %r" % (got, want))' "$tmp/m1.json" "$tmp/m2.json" "$tmp/m3.json"

ack_fail=""
for m in m2 m3; do
  p=$(jval "$tmp/$m.json" 'd["partition"]')
  o=$(jval "$tmp/$m.json" 'd["offset"]')
  http "$B" -X POST "$BASE/topics/$T_REST/acks?group=$GR&partition=${p:-x}&offset=${o:-x}"
  if [[ "$CODE" != 200 || "$(jval "$B" 'd == {}')" != True ]]; then
    ack_fail+=" $m ($p/$o): HTTP $CODE $(head -c 200 "$B")"
  fi
done
if [[ -z "$ack_fail" ]]; then pass "pixy REST POST acks"; else fail "pixy REST POST acks" "$ack_fail"; fi

offsets_snippet='
ensure(isinstance(d, list) and sorted(p["partition"] for p in d) == [0, 1, 2], "partitions of %r, want 0..2" % d)
ensure(sum(p["count"] for p in d) == 3, "counts add up to %d, want 3" % sum(p["count"] for p in d))
for p in d:
    ensure(p["count"] == p["end"] - p["begin"], "partition %r: count is not end - begin" % p)
    ensure(p["lag"] == 0 and (p["offset"] == p["end"] or p["end"] == 0 and p["offset"] == -1),
           "partition %r: not all acknowledged (offset should be end, lag 0)" % p)
    ensure(not p.get("sparse_acks"), "partition %r: sparse acks with everything acknowledged" % p)'
deadline=$((SECONDS + SETTLE))
while :; do
  http "$B" "$BASE/topics/$T_REST/offsets?group=$GR"
  why=$("$PY" "$tmp/jcheck.py" check "$B" "$offsets_snippet" 2>&1) || true
  [[ "$CODE" == 200 && -z "$why" ]] && break
  ((SECONDS < deadline)) || break
  sleep 0.25
done
jcheck "pixy REST GET offsets" "$B" "$CODE" 200 "$offsets_snippet"

http "$B" "$BASE/topics/$T_REST/messages?group=$GR"
jcheck "pixy REST GET messages with everything consumed is 408 after the long poll" "$B" "$CODE" 408 '
ensure(d == {"error": "long polling timeout"}, "answer %r" % d)
ensure(float(a[0]) >= float(a[1]) - 0.5, "answered after %ss, want about %ss" % (a[0], a[1]))' "$TOOK" "$LONG_POLL"
http "$B" "$BASE/topics/$T_EMPTY/messages?group=$GR-empty"
jcheck "pixy REST GET messages on an empty topic is 408 after the long poll" "$B" "$CODE" 408 '
ensure(d == {"error": "long polling timeout"}, "answer %r" % d)
ensure(float(a[1]) - 0.5 <= float(a[0]) <= float(a[1]) + 3, "answered after %ss, want about %ss" % (a[0], a[1]))' "$TOOK" "$LONG_POLL"

http "$B" "$BASE/topics"
jcheck "pixy REST GET topics" "$B" "$CODE" 200 '
ensure(isinstance(d, list) and set(a) <= set(d), "%r lacks some of %r" % (d, a))' "$T_REST" "$T_PIXY" "$T_EMPTY"
http "$B" "$BASE/topics/$T_REST?withPartitions"
jcheck "pixy REST GET topic withPartitions" "$B" "$CODE" 200 '
ensure(sorted(p["partition"] for p in d["partitions"]) == [0, 1, 2], "partitions %r" % d.get("partitions"))
ensure(d["config"]["version"] == 1, "config %r, want version 1" % d.get("config"))'
http "$B" "$BASE/topics/$T_REST/consumers?group=$GR"
jcheck "pixy REST GET consumers" "$B" "$CODE" 200 '
ensure(list(d) == [a[0]], "groups %r, want [%r]" % (list(d), a[0]))
ensure(sorted(p for ps in d[a[0]].values() for p in ps) == [0, 1, 2], "members %r, want partitions 0..2" % d[a[0]])' "$GR"
http "$B" "$BASE/_ping"
jcheck "pixy REST GET _ping" "$B" "$CODE" 200 'ensure(raw == "pong", "body %r, want pong" % raw)'
http "$B" "$BASE/topics/$T_REST/messages"
jcheck "pixy REST GET messages without group is 400" "$B" "$CODE" 400 '
ensure(set(d) == {"error"} and "group" in d["error"], "answer %r, want {\"error\": ...group...}" % d)'
http "$B" "$BASE/clusters/nope/topics/$T_REST/messages?group=$GR"
jcheck "pixy REST unknown cluster is 400" "$B" "$CODE" 400 '
ensure(set(d) == {"error"} and "nope" in d["error"], "answer %r, want {\"error\": ...nope...}" % d)'

# 7. Ferry's REST paths (/v1/...).
log "checking Ferry's REST paths"
GF="$G-ferry-rest"

http "$B" -X POST "$V1/topics/$T_FERRY/records" -H 'Content-Type: application/json' \
  -d "{\"key\":\"$(printf 'ferry-k1' | base64)\",\"valueText\":\"ferry-text-1\"}"
expect "$T_FERRY" ferry-k1 ferry-text-1
jcheck "ferry REST produce valueText" "$B" "$CODE" 200 '
ensure(0 <= d["partition"] < 3 and i(d["offset"]) >= 0 and d.get("timestamp"), "answer %r" % d)'
http "$B" -X POST "$V1/topics/$T_FERRY/records" -H 'Content-Type: application/json' \
  -d "{\"key\":\"$(printf 'order-1' | base64)\",\"valueJson\":{\"item\":\"book\",\"qty\":2},\"headers\":[{\"key\":\"source\",\"value\":\"$(printf 'e2e' | base64)\"}]}"
expect "$T_FERRY" order-1 '{"item":"book","qty":2}'
jcheck "ferry REST produce valueJson with headers" "$B" "$CODE" 200 '
ensure(0 <= d["partition"] < 3 and i(d["offset"]) >= 0, "answer %r" % d)'
http "$B" -X POST "$V1/topics/$T_FERRY/records" -H 'Content-Type: application/json' \
  -d '{"valueText":"ferry-async-3","async":true}'
expect "$T_FERRY" "" ferry-async-3
jcheck "ferry REST produce async" "$B" "$CODE" 200 '
ensure(d["partition"] == -1 and i(d["offset"]) == -1, "answer %r, want partition and offset -1" % d)'

ferry_snippet='
ms = [m for f in a for m in json.load(open(f))["messages"]]
got = sorted((key(m), m.get("valueText"), [(h["key"], b64d(h["value"])) for h in m.get("headers", [])]) for m in ms)
want = sorted([("ferry-k1", "ferry-text-1", []), ("order-1", "{\"item\":\"book\",\"qty\":2}", [("source", "e2e")]), ("<none>", "ferry-async-3", [])])
ensure(got == want, "got %r, want %r" % (got, want))
ensure(all(m["topic"] == "'"$T_FERRY"'" and m.get("deliveries") == 1 for m in ms), "messages %r" % ms)'
polls=()
for n in 1 2 3 4 5; do
  http "$tmp/poll$n.json" -X POST "$V1/groups/$GF/topics/$T_FERRY/poll" -H 'Content-Type: application/json' \
    -d '{"maxMessages":10,"valueFormat":"VALUE_FORMAT_TEXT","timeout":"5s"}'
  [[ "$CODE" == 200 ]] || break
  polls+=("$tmp/poll$n.json")
  why=$("$PY" "$tmp/jcheck.py" check "$B" "$ferry_snippet" "${polls[@]}" 2>&1) || true
  [[ -z "$why" ]] && break
done
jcheck "ferry REST poll" "$tmp/poll$n.json" "$CODE" 200 "$ferry_snippet" "${polls[@]}"

acks=$(jval "$B" 'json.dumps({"acks": [{"partition": m["partition"], "offset": m["offset"]} for f in a for m in json.load(open(f))["messages"]]})' "${polls[@]}")
[[ -n "$acks" ]] || acks='{"acks":[]}'
http "$B" -X POST "$V1/groups/$GF/topics/$T_FERRY/acks" -H 'Content-Type: application/json' -d "$acks"
jcheck "ferry REST acks" "$B" "$CODE" 200 'ensure(d == {}, "answer %r, want {}" % d)'

offsets_snippet='
ps = d["partitions"]
ensure(sorted(p["partition"] for p in ps) == [0, 1, 2], "partitions %r, want 0..2" % ps)
ensure(sum(i(p["end"]) - i(p["begin"]) for p in ps) == 3, "%r: end - begin adds up to %d, want 3" % (ps, sum(i(p["end"]) - i(p["begin"]) for p in ps)))
for p in ps:
    ensure(i(p["lag"]) == 0 and (i(p["committed"]) == i(p["end"]) or i(p["end"]) == 0 and i(p["committed"]) == -1),
           "partition %r: not all acknowledged (committed should be end, lag 0)" % p)
    ensure(not p.get("sparseAcks"), "partition %r: sparse acks with everything acknowledged" % p)'
deadline=$((SECONDS + SETTLE))
while :; do
  http "$B" "$V1/groups/$GF/topics/$T_FERRY/offsets"
  why=$("$PY" "$tmp/jcheck.py" check "$B" "$offsets_snippet" 2>&1) || true
  [[ "$CODE" == 200 && -z "$why" ]] && break
  ((SECONDS < deadline)) || break
  sleep 0.25
done
jcheck "ferry REST GET offsets" "$B" "$CODE" 200 "$offsets_snippet"

http "$B" "$V1/topics/$T_FERRY"
jcheck "ferry REST GET topic" "$B" "$CODE" 200 '
ensure(d["topic"] == a[0], "topic %r, want %r" % (d.get("topic"), a[0]))
ensure(sorted(p["partition"] for p in d["partitions"]) == [0, 1, 2], "partitions %r" % d["partitions"])
ensure(any(c["name"] == "cleanup.policy" for c in d["configs"]), "no cleanup.policy among the configs %r" % d["configs"])' "$T_FERRY"
http "$B" "$V1/topics"
jcheck "ferry REST GET topics" "$B" "$CODE" 200 '
ensure(set(a) <= set(d["topics"]), "%r lacks some of %r" % (d["topics"], a))' "$T_FERRY" "$T_REST" "$T_PIXY"
http "$B" "$V1/groups/$GF"
jcheck "ferry REST GET group" "$B" "$CODE" 200 '
ensure(d["group"] == a[0] and d["members"], "answer %r" % d)
ps = sorted(p for m in d["members"] for p in m.get("assignments", {}).get(a[1], {}).get("partitions", []))
ensure(ps == [0, 1, 2], "members %r, want %s assigned partitions 0..2" % (d["members"], a[1]))' "$GF" "$T_FERRY"
http "$B" -X POST "$V1/groups/$GF/topics/$T_FERRY/poll" -H 'Content-Type: application/json' -d '{"timeout":"1s"}'
jcheck "ferry REST poll with everything consumed is an empty answer" "$B" "$CODE" 200 '
ensure(not d.get("messages"), "answer %r, want no messages" % d)
ensure(float(a[0]) >= 0.5, "answered after %ss, want about 1s" % a[0])' "$TOOK"
http "$B" -X POST "$BASE/v1/clusters/nope/topics/$T_FERRY/records" -H 'Content-Type: application/json' -d '{"valueText":"never"}'
jcheck "ferry REST unknown cluster is 400" "$B" "$CODE" 400 '
ensure(d["code"] == 3 and "nope" in d["message"], "answer %r, want code 3 naming the cluster" % d)'

# Subscribe: an endless response; curl stops it after 3 s (exit status 28).
sub_rc=0
curl -sN --max-time 3 -D "$tmp/sub.hdr" -o "$tmp/sub.ndjson" \
  "$V1/groups/$GF-ndjson/topics/$T_FERRY/messages?autoAck=true&valueFormat=VALUE_FORMAT_TEXT" || sub_rc=$?
jcheck "ferry REST Subscribe NDJSON" "$tmp/sub.ndjson" "$sub_rc" 28 '
ensure("application/x-ndjson" in open(a[0]).read().lower(), "headers %r, want Content-Type application/x-ndjson" % open(a[0]).read())
ms = [json.loads(l) for l in raw.splitlines() if l.strip()]
got = sorted((key(m), m.get("valueText")) for m in ms)
want = sorted([("ferry-k1", "ferry-text-1"), ("order-1", "{\"item\":\"book\",\"qty\":2}"), ("<none>", "ferry-async-3")])
ensure(got == want, "got %r, want %r" % (got, want))' "$tmp/sub.hdr"
sub_rc=0
curl -sN --max-time 3 -D "$tmp/sub.hdr" -o "$tmp/sub.sse" \
  "$V1/groups/$GF-sse/topics/$T_FERRY/messages?format=sse&valueFormat=VALUE_FORMAT_JSON" || sub_rc=$?
jcheck "ferry REST Subscribe SSE with JSON values" "$tmp/sub.sse" "$sub_rc" 28 '
ensure("text/event-stream" in open(a[0]).read().lower(), "headers %r, want Content-Type text/event-stream" % open(a[0]).read())
events = [e for e in raw.split("\n\n") if e.strip()]
got = []
for e in events:
    fields = dict(l.split(": ", 1) for l in e.splitlines())
    m = json.loads(fields["data"])
    ensure(fields.get("id") == "%d-%s" % (m["partition"], m["offset"]), "event id %r for %d/%s" % (fields.get("id"), m["partition"], m["offset"]))
    got.append(m.get("valueJson"))
want = [{"item": "book", "qty": 2}]
ensure([g for g in got if isinstance(g, dict)] == want and len(got) == 3, "values %r, want 3 with one JSON object %r" % (got, want))' "$tmp/sub.hdr"

# 8. The records, as kcat reads them.
log "reading the topics with kcat"
: >"$tmp/records.txt"
kcat_fail=""
for t in "$T_PIXY" "$T_REST" "$T_FERRY" "$T_EMPTY"; do
  kcat_rc=0
  timeout 30 kcat -b "$HOST:$KAFKA_PORT" -C -t "$t" -e -q -f '%t|%k|%s\n' \
    </dev/null >>"$tmp/records.txt" 2>"$tmp/kcat.err" || kcat_rc=$?
  if ((kcat_rc != 0)); then
    kcat_fail+=" $t: kcat exited with status $kcat_rc: $(tr '\n' ' ' <"$tmp/kcat.err")"
  fi
  kcat_rc=0
  timeout 30 kcat -b "$HOST:$KAFKA_PORT" -C -t "$t" -e -q -f '%t|%k|%h\n' \
    </dev/null >>"$tmp/headers.txt" 2>"$tmp/kcat.err" || kcat_rc=$?
  if ((kcat_rc != 0)); then
    kcat_fail+=" $t: kcat exited with status $kcat_rc: $(tr '\n' ' ' <"$tmp/kcat.err")"
  fi
done
if [[ -n "$kcat_fail" ]]; then
  fail "kcat reads the topics" "$kcat_fail"
else
  pass "kcat reads the topics"
  jcheck "kcat sees every record with its key and value" "$tmp/records.txt" 0 0 '
got = sorted(l for l in raw.splitlines() if l)
want = sorted(l for l in open(a[0]).read().splitlines() if l)
missing = [l for l in want if l not in got]
extra = [l for l in got if l not in want]
ensure(want and not missing and not extra and len(got) == len(want),
       "missing %r, unexpected %r (%d read, %d expected)" % (missing, extra, len(got), len(want)))' "$tmp/expected.txt"
  jcheck "kcat sees the record headers" "$tmp/headers.txt" 0 0 '
want = ["%s|pixy-k4|trace-id=abc,tenant=t1" % a[0], "%s|rest-k2|Trace-Id=rest-trace-2" % a[1], "%s|order-1|source=e2e" % a[2]]
lines = raw.splitlines()
missing = [w for w in want if w not in lines]
ensure(not missing, "no lines %r among %r" % (missing, lines))' "$T_PIXY" "$T_REST" "$T_FERRY"
fi

# 9. Stop Ferry: SIGTERM, bounded wait, exit status 0, ports released.
check_ferry_stops
