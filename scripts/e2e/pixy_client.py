#!/usr/bin/env python3
"""End-to-end checks of Ferry's Kafka-Pixy gRPC service (examples/kafka-api)
with a client built from Kafka-Pixy's proto definitions and grpcio.

Usage: pixy_client.py --proto FILE --out DIR --topic T --empty-topic E
                      --group G [--target 127.0.0.1:7151] [--counts FILE]
                      [--expect FILE]

FILE is api/kafkapixy/kafkapixy.proto; it is compiled with
`grpc_tools.protoc` into DIR, and the checks call the generated
KafkaPixyStub. T must be a topic nobody else writes to (it is created by the
first produce); E an existing topic with no records; G a consumer group
nobody else uses.

Prints one line per check, "ok NAME" or "FAIL NAME: WHY", then exactly one
line "N passed, M failed", and exits 1 if M > 0 (2 on a usage error).

With --counts FILE it writes {"passed": N, "failed": M} for
scripts/e2e/kafka_api.sh. With --expect FILE it appends one line
"topic|key|value" per record it wrote to Kafka (key empty when there is
none), for the script's kcat check.
"""

import argparse
import json
import os
import sys
import time
import traceback

DEADLINE = 10.0       # seconds, per call that should not wait
LONG_POLL = 3.0       # Ferry's long-poll timeout in the example (the default)
POLL_DEADLINE = 15.0  # seconds, per ConsumeNAck, which may long-poll
SETTLE = 8.0          # seconds for commits (every 500 ms) to show in GetOffsets
PARTITIONS = 3        # examples/kafka-api/ferry.yaml: embedded.partitions


def compile_proto(proto, out):
    from grpc_tools import protoc
    import importlib.resources
    os.makedirs(out, exist_ok=True)
    include = str(importlib.resources.files("grpc_tools") / "_proto")
    rc = protoc.main([
        "grpc_tools.protoc",
        "-I", os.path.dirname(os.path.abspath(proto)),
        "-I", include,
        "--python_out=" + out,
        "--grpc_python_out=" + out,
        os.path.abspath(proto),
    ])
    if rc != 0:
        raise RuntimeError("grpc_tools.protoc exited with %d" % rc)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--proto", required=True, help="api/kafkapixy/kafkapixy.proto")
    ap.add_argument("--out", required=True, help="directory for the generated stubs")
    ap.add_argument("--topic", required=True)
    ap.add_argument("--empty-topic", required=True)
    ap.add_argument("--group", required=True)
    ap.add_argument("--target", default="127.0.0.1:7151")
    ap.add_argument("--counts", help="write a JSON summary here")
    ap.add_argument("--expect", help="append the records written here")
    args = ap.parse_args()

    passed = 0
    failed = 0

    def report(name, why):
        nonlocal passed, failed
        if why:
            failed += 1
            print("FAIL %s: %s" % (name, why), flush=True)
        else:
            passed += 1
            print("ok %s" % name, flush=True)

    def finish():
        print("%d passed, %d failed" % (passed, failed), flush=True)
        if args.counts:
            with open(args.counts, "w") as f:
                json.dump({"passed": passed, "failed": failed}, f)
        return 1 if failed else 0

    try:
        compile_proto(args.proto, args.out)
        sys.path.insert(0, args.out)
        import grpc  # noqa: E402
        import kafkapixy_pb2 as pb  # noqa: E402
        import kafkapixy_pb2_grpc as pb_grpc  # noqa: E402
    except Exception as e:
        traceback.print_exc(file=sys.stderr)
        report("pixy stubs from kafkapixy.proto", "%s: %s" % (type(e).__name__, e))
        return finish()
    report("pixy stubs from kafkapixy.proto", None)

    def check(name, fn):
        try:
            why = fn()
        except grpc.RpcError as e:
            why = "RPC failed: %s: %s" % (e.code(), e.details())
        except Exception as e:  # a broken check is a failed check
            why = "%s: %s" % (type(e).__name__, e)
            traceback.print_exc(file=sys.stderr)
        report(name, why)
        return not why

    def expect_code(fn, code, text=None):
        """Calls fn; returns why it did not fail with code (and text)."""
        try:
            r = fn()
        except grpc.RpcError as e:
            if e.code() != code:
                return "status %s (%r), want %s" % (e.code(), e.details(), code)
            if text and text not in (e.details() or ""):
                return "details %r do not mention %r" % (e.details(), text)
            return None
        return "succeeded with %r, want %s" % (r, code)

    topic, group = args.topic, args.group
    # What was written, by value: (key or None, [(header, value)]).
    written = {}

    def expect_record(key, value):
        if args.expect:
            with open(args.expect, "a") as f:
                f.write("%s|%s|%s\n" % (topic, "" if key is None else key.decode(), value.decode()))

    with grpc.insecure_channel(args.target) as channel:
        try:
            grpc.channel_ready_future(channel).result(timeout=DEADLINE)
        except grpc.FutureTimeoutError:
            report("pixy connect", "channel to %s not ready within %ss" % (args.target, DEADLINE))
            return finish()
        stub = pb_grpc.KafkaPixyStub(channel)

        # --- Produce --------------------------------------------------------

        def produce(name, key, value, headers=(), async_mode=False, cluster=""):
            rq = pb.ProdRq(cluster=cluster, topic=topic, message=value, async_mode=async_mode,
                           headers=[pb.RecordHeader(key=k, value=v) for k, v in headers])
            if key is None:
                rq.key_undefined = True
            else:
                rq.key_value = key
            r = stub.Produce(rq, timeout=DEADLINE)
            written[value] = (key, list(headers))
            expect_record(key, value)
            if async_mode:
                if (r.partition, r.offset) != (-1, -1):
                    return "partition/offset %d/%d, want -1/-1" % (r.partition, r.offset)
                return None
            if not 0 <= r.partition < PARTITIONS or r.offset < 0:
                return "partition/offset %d/%d, want a partition of 0..%d and an offset >= 0" % (
                    r.partition, r.offset, PARTITIONS - 1)
            return None

        check("pixy Produce sync", lambda: produce("sync", b"pixy-k1", b"pixy-sync-1"))
        check("pixy Produce async_mode", lambda: produce("async", b"pixy-k2", b"pixy-async-2", async_mode=True))
        check("pixy Produce key_undefined", lambda: produce("nokey", None, b"pixy-nokey-3"))
        check("pixy Produce headers (cluster default)", lambda: produce(
            "headers", b"pixy-k4", b"pixy-headers-4",
            headers=[("trace-id", b"abc"), ("tenant", b"t1")], cluster="default"))
        n_written = len(written)

        # --- ConsumeNAck and Ack --------------------------------------------

        got = {}     # (partition, offset) -> ConsRs
        order = []   # (partition, offset) in delivery order
        acked = set()

        def matches(m):
            """Why m is not one of the records written, or None."""
            if m.message not in written:
                return "message %r at %d/%d was never produced here" % (m.message, m.partition, m.offset)
            key, headers = written[m.message]
            if key is None:
                if not m.key_undefined:
                    return "%r: key %r, want key_undefined" % (m.message, m.key_value)
            elif m.key_undefined or m.key_value != key:
                return "%r: key %r (undefined=%s), want %r" % (m.message, m.key_value, m.key_undefined, key)
            hs = [(h.key, h.value) for h in m.headers]
            if hs != headers:
                return "%r: headers %r, want %r" % (m.message, hs, headers)
            return None

        def take(m):
            po = (m.partition, m.offset)
            if po in got:
                return "%d/%d delivered twice" % po
            got[po] = m
            order.append(po)
            return matches(m)

        def consume_no_ack():
            m = stub.ConsumeNAck(pb.ConsNAckRq(topic=topic, group=group, no_ack=True), timeout=POLL_DEADLINE)
            return take(m)

        check("pixy ConsumeNAck no_ack", consume_no_ack)

        # Ack the previous message on the next poll. A request whose ack fields
        # are both zero acknowledges nothing (docs/KAFKA-API.md), so a message
        # at partition 0 offset 0 cannot be acknowledged this way: take one
        # more first.
        piggy = {}

        def consume_ack_previous():
            if not order:
                return "no earlier message to acknowledge"
            if order[-1] == (0, 0):
                why = consume_no_ack()
                if why:
                    return why
            p, o = order[-1]
            m = stub.ConsumeNAck(pb.ConsNAckRq(topic=topic, group=group, ack_partition=p, ack_offset=o),
                                 timeout=POLL_DEADLINE)
            acked.add((p, o))
            piggy["po"] = (p, o)
            return take(m)

        check("pixy ConsumeNAck ack_partition/ack_offset", consume_ack_previous)

        def consume_rest():
            for _ in range(2 * n_written):
                if len(got) >= n_written:
                    break
                why = consume_no_ack()
                if why:
                    return why
            values = sorted(m.message for m in got.values())
            if values != sorted(written):
                return "consumed %r, want %r" % (values, sorted(written))
            return None

        check("pixy ConsumeNAck gets every record (keys, headers)", consume_rest)

        # One message is kept unacknowledged for a while: preferably one with
        # records after it in its partition, so the others' acks are sparse.
        ends = {}
        for p, o in got:
            ends[p] = max(ends.get(p, 0), o + 1)
        candidates = sorted((po for po in got if po not in acked), key=lambda po: (po[1] + 1 >= ends[po[0]], po))
        held = candidates[0] if candidates else None

        def ack_rpc():
            if held is None:
                return "nothing left to acknowledge"
            for p, o in sorted(got):
                if (p, o) in acked or (p, o) == held:
                    continue
                stub.Ack(pb.AckRq(topic=topic, group=group, partition=p, offset=o), timeout=DEADLINE)
                acked.add((p, o))
            return None

        check("pixy Ack", ack_rpc)

        def get_offsets_until(want):
            """Polls GetOffsets until want(offsets) is None; returns the last why."""
            deadline = time.monotonic() + SETTLE
            while True:
                rs = stub.GetOffsets(pb.GetOffsetsRq(topic=topic, group=group), timeout=DEADLINE)
                why = want({po.partition: po for po in rs.offsets})
                if not why or time.monotonic() > deadline:
                    return why
                time.sleep(0.25)

        def offsets_want(unacked):
            def want(offs):
                if sorted(offs) != list(range(PARTITIONS)):
                    return "partitions %r, want 0..%d" % (sorted(offs), PARTITIONS - 1)
                total = 0
                for p, po in sorted(offs.items()):
                    end = ends.get(p, 0)
                    total += po.count
                    if (po.begin, po.end, po.count) != (0, end, end):
                        return "partition %d: begin/end/count %d/%d/%d, want 0/%d/%d" % (
                            p, po.begin, po.end, po.count, end, end)
                    if unacked is not None and unacked[0] == p:
                        # Kafka-Pixy shows sparse acks relative to the committed offset.
                        want_off, want_sparse = unacked[1], (
                            "" if unacked[1] + 1 == end else "1-%d" % (end - unacked[1]))
                    else:
                        want_off, want_sparse = end, ""
                    ok_off = po.offset == want_off or (end == 0 and po.offset == -1)
                    if not ok_off or po.sparse_acks != want_sparse or po.lag != end - max(po.offset, 0):
                        return ("partition %d: offset %d, sparse_acks %r, lag %d; want offset %d, "
                                "sparse_acks %r, lag %d (end %d)" % (
                                    p, po.offset, po.sparse_acks, po.lag, want_off, want_sparse,
                                    end - want_off, end))
                if total != n_written:
                    return "counts add up to %d, want %d" % (total, n_written)
                return None
            return want

        check("pixy GetOffsets with one message unacknowledged (sparse acks)",
              lambda: get_offsets_until(offsets_want(held)) if held else "no message held back")

        def ack_held():
            if held is None:
                return "no message held back"
            stub.Ack(pb.AckRq(topic=topic, group=group, partition=held[0], offset=held[1]), timeout=DEADLINE)
            acked.add(held)
            return None

        check("pixy Ack the last one", ack_held)
        check("pixy GetOffsets after acks", lambda: get_offsets_until(offsets_want(None)))

        check("pixy Ack of an offset never delivered is INVALID_ARGUMENT", lambda: expect_code(
            lambda: stub.Ack(pb.AckRq(topic=topic, group=group, partition=0, offset=1000), timeout=DEADLINE),
            grpc.StatusCode.INVALID_ARGUMENT))

        # --- Admin ----------------------------------------------------------

        def list_topics():
            rs = stub.ListTopics(pb.ListTopicRq(with_partitions=True), timeout=DEADLINE)
            if topic not in rs.topics:
                return "%s not in %r" % (topic, sorted(rs.topics))
            ps = sorted(p.partition for p in rs.topics[topic].partitions)
            if ps != list(range(PARTITIONS)):
                return "%s has partitions %r, want 0..%d" % (topic, ps, PARTITIONS - 1)
            return None

        check("pixy ListTopics", list_topics)

        def topic_metadata():
            rs = stub.GetTopicMetadata(pb.GetTopicMetadataRq(topic=topic, with_partitions=True), timeout=DEADLINE)
            ps = sorted(p.partition for p in rs.partitions)
            if ps != list(range(PARTITIONS)):
                return "partitions %r, want 0..%d" % (ps, PARTITIONS - 1)
            if any(not p.replicas or p.leader not in p.replicas for p in rs.partitions):
                return "partitions without a leader among their replicas: %r" % (rs.partitions,)
            if rs.version != 1:
                return "version %d, want 1" % rs.version
            return None

        check("pixy GetTopicMetadata with_partitions", topic_metadata)
        check("pixy GetTopicMetadata of an unknown topic is NOT_FOUND", lambda: expect_code(
            lambda: stub.GetTopicMetadata(pb.GetTopicMetadataRq(topic=topic + "-nope"), timeout=DEADLINE),
            grpc.StatusCode.NOT_FOUND, topic + "-nope"))

        def list_consumers():
            rs = stub.ListConsumers(pb.ListConsumersRq(topic=topic, group=group), timeout=DEADLINE)
            if group not in rs.groups:
                return "group %s not in %r" % (group, sorted(rs.groups))
            members = rs.groups[group].consumers
            ps = sorted(p for c in members.values() for p in c.partitions)
            if not members or ps != list(range(PARTITIONS)):
                return "members %r own partitions %r, want 0..%d" % (
                    sorted(members), ps, PARTITIONS - 1)
            return None

        check("pixy ListConsumers", list_consumers)

        # --- Long polls -----------------------------------------------------

        def long_poll(t, g):
            t0 = time.monotonic()
            why = expect_code(lambda: stub.ConsumeNAck(pb.ConsNAckRq(topic=t, group=g, no_ack=True),
                                                       timeout=POLL_DEADLINE),
                              grpc.StatusCode.NOT_FOUND, "long polling timeout")
            took = time.monotonic() - t0
            if why:
                return why
            if not LONG_POLL - 0.5 <= took <= LONG_POLL + 3:
                return "answered after %.1fs, want about %.0fs (the long-poll timeout)" % (took, LONG_POLL)
            return None

        check("pixy ConsumeNAck on an empty topic is NOT_FOUND after the long poll",
              lambda: long_poll(args.empty_topic, group + "-empty"))
        check("pixy ConsumeNAck with everything consumed is NOT_FOUND after the long poll",
              lambda: long_poll(topic, group))

        # --- SetOffsets -----------------------------------------------------

        # Rewind the partition with the most records to its start, with
        # commit metadata "BB" (Kafka-Pixy's sparse-ack encoding of an ack
        # at start+1): the group reads the partition again from offset 0
        # and the ack shows as sparse_acks "1-2".
        busiest = max(sorted(ends), key=lambda p: ends[p]) if ends else 0

        def set_offsets():
            stub.SetOffsets(pb.SetOffsetsRq(topic=topic, group=group, offsets=[
                pb.PartitionOffset(partition=busiest, offset=0, metadata="BB")]), timeout=DEADLINE)

            def want(offs):
                po = offs.get(busiest)
                if po is None or po.offset != 0 or po.sparse_acks != "1-2" or po.metadata != "BB":
                    return "partition %d after SetOffsets: %r; want offset 0, metadata 'BB', sparse_acks '1-2'" % (
                        busiest, po)
                return None
            return get_offsets_until(want)

        check("pixy SetOffsets", set_offsets)

        def consume_after_set_offsets():
            m = stub.ConsumeNAck(pb.ConsNAckRq(topic=topic, group=group, no_ack=True), timeout=POLL_DEADLINE)
            if (m.partition, m.offset) != (busiest, 0):
                return "got %d/%d, want %d/0 (the rewound partition's start)" % (m.partition, m.offset, busiest)
            want = got.get((busiest, 0))
            if want is not None and m.message != want.message:
                return "message %r, want %r" % (m.message, want.message)
            return matches(m)

        check("pixy ConsumeNAck after SetOffsets", consume_after_set_offsets)

        # --- Errors ---------------------------------------------------------

        check("pixy Produce to an unknown cluster is INVALID_ARGUMENT", lambda: expect_code(
            lambda: stub.Produce(pb.ProdRq(cluster="nope", topic=topic, message=b"never"), timeout=DEADLINE),
            grpc.StatusCode.INVALID_ARGUMENT, "nope"))
        check("pixy ConsumeNAck on an unknown cluster is INVALID_ARGUMENT", lambda: expect_code(
            lambda: stub.ConsumeNAck(pb.ConsNAckRq(cluster="nope", topic=topic, group=group, no_ack=True),
                                     timeout=POLL_DEADLINE),
            grpc.StatusCode.INVALID_ARGUMENT, "nope"))
        check("pixy ConsumeNAck without a group is INVALID_ARGUMENT", lambda: expect_code(
            lambda: stub.ConsumeNAck(pb.ConsNAckRq(topic=topic, no_ack=True), timeout=POLL_DEADLINE),
            grpc.StatusCode.INVALID_ARGUMENT, "group"))

    return finish()


if __name__ == "__main__":
    sys.exit(main())
