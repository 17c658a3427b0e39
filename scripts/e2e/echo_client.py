#!/usr/bin/env python3
"""End-to-end checks of Ferry's echo example (examples/echo) with grpcio.

Usage: echo_client.py --stubs DIR [--target 127.0.0.1:7151] [--counts FILE]

DIR holds echo_pb2.py and echo_pb2_grpc.py, generated from
examples/echo/echo.proto with `python -m grpc_tools.protoc`.

Prints one line per check, "ok NAME" or "FAIL NAME: WHY", then exactly one
line "N passed, M failed", and exits 1 if M > 0 (2 on a usage error).

With --counts FILE it also writes a JSON object for scripts/e2e/run.sh:
  passed, failed       the counts printed above
  calls_written        calls made on a route with a reply topic that are
                       expected to have written records to Kafka (each ends
                       with one null record)
  idempotent_retries   calls made with an idempotency-key already used, which
                       the README says are answered from the reply topic
                       without writing the request again
"""

import argparse
import json
import sys
import traceback

DEADLINE = 10.0  # seconds, per call
UNKNOWN_METHOD = "/grpc.examples.echo.Echo/Nope"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--stubs", required=True, help="directory with echo_pb2*.py")
    ap.add_argument("--target", default="127.0.0.1:7151")
    ap.add_argument("--counts", help="write a JSON summary here")
    args = ap.parse_args()

    sys.path.insert(0, args.stubs)
    import grpc  # noqa: E402
    import echo_pb2  # noqa: E402
    import echo_pb2_grpc  # noqa: E402

    passed = 0
    failed = 0
    calls_written = 0
    idempotent_retries = 0

    def check(name, fn):
        nonlocal passed, failed
        try:
            why = fn()
        except grpc.RpcError as e:
            why = "RPC failed: %s: %s" % (e.code(), e.details())
        except Exception as e:  # a broken check is a failed check
            why = "%s: %s" % (type(e).__name__, e)
            traceback.print_exc(file=sys.stderr)
        if why:
            failed += 1
            print("FAIL %s: %s" % (name, why), flush=True)
        else:
            passed += 1
            print("ok %s" % name, flush=True)

    def req(msg):
        return echo_pb2.EchoRequest(message=msg)

    with grpc.insecure_channel(args.target) as channel:
        try:
            grpc.channel_ready_future(channel).result(timeout=DEADLINE)
        except grpc.FutureTimeoutError:
            print("FAIL connect: channel to %s not ready within %ss"
                  % (args.target, DEADLINE), flush=True)
            print("0 passed, 1 failed", flush=True)
            write_counts(args.counts, 0, 1, 0, 0)
            return 1

        stub = echo_pb2_grpc.EchoStub(channel)

        def unary():
            nonlocal calls_written
            calls_written += 1
            r = stub.UnaryEcho(req("Hello World"), timeout=DEADLINE)
            if r.message != "Hello World":
                return "message %r, want 'Hello World'" % r.message
            return None

        def server_streaming():
            nonlocal calls_written
            calls_written += 1
            got = [r.message for r in
                   stub.ServerStreamingEcho(req("Hello"), timeout=DEADLINE)]
            if got != ["Hello"]:
                return "messages %r, want ['Hello']" % got
            return None

        def client_streaming():
            nonlocal calls_written
            calls_written += 1
            r = stub.ClientStreamingEcho(iter([req("one")]), timeout=DEADLINE)
            if r.message != "one":
                return "message %r, want 'one'" % r.message
            return None

        def bidi():
            nonlocal calls_written
            calls_written += 1
            want = ["a", "b", "c"]
            got = [r.message for r in stub.BidirectionalStreamingEcho(
                iter([req(m) for m in want]), timeout=DEADLINE)]
            if got != want:
                return "messages %r, want %r" % (got, want)
            return None

        md = (("x-user", "ann"), ("idempotency-key", "e2e-key-1"))
        first = {}

        def unary_metadata():
            nonlocal calls_written
            calls_written += 1
            r = stub.UnaryEcho(req("Hello Ann"), timeout=DEADLINE, metadata=md)
            first["message"] = r.message
            if r.message != "Hello Ann":
                return "message %r, want 'Hello Ann'" % r.message
            return None

        def unary_idempotent_retry():
            nonlocal idempotent_retries
            if "message" not in first:
                return "the first call with this idempotency-key failed"
            idempotent_retries += 1
            r = stub.UnaryEcho(req("Hello Ann"), timeout=DEADLINE, metadata=md)
            if r.message != first["message"]:
                return "message %r, want the first call's %r" % (
                    r.message, first["message"])
            return None

        def unknown_method():
            call = channel.unary_unary(
                UNKNOWN_METHOD,
                request_serializer=lambda b: b,
                response_deserializer=lambda b: b,
            )
            try:
                r = call(b"", timeout=DEADLINE)
            except grpc.RpcError as e:
                if e.code() != grpc.StatusCode.UNIMPLEMENTED:
                    return "status %s (%r), want UNIMPLEMENTED" % (
                        e.code(), e.details())
                if UNKNOWN_METHOD not in (e.details() or ""):
                    return "details %r do not mention %s" % (
                        e.details(), UNKNOWN_METHOD)
                return None
            return "succeeded with %r, want UNIMPLEMENTED" % (r,)

        check("UnaryEcho", unary)
        check("ServerStreamingEcho", server_streaming)
        check("ClientStreamingEcho", client_streaming)
        check("BidirectionalStreamingEcho", bidi)
        check("UnaryEcho with metadata", unary_metadata)
        check("UnaryEcho idempotent retry", unary_idempotent_retry)
        check("unknown method", unknown_method)

    print("%d passed, %d failed" % (passed, failed), flush=True)
    write_counts(args.counts, passed, failed, calls_written, idempotent_retries)
    return 1 if failed else 0


def write_counts(path, passed, failed, calls_written, idempotent_retries):
    if not path:
        return
    with open(path, "w") as f:
        json.dump({
            "passed": passed,
            "failed": failed,
            "calls_written": calls_written,
            "idempotent_retries": idempotent_retries,
        }, f)


if __name__ == "__main__":
    sys.exit(main())
