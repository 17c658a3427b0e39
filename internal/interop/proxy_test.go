package interop_test

import (
	"context"
	"fmt"
	"reflect"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// direction is one way through Kafka: a front end the client calls and
// the back end that calls the echo server.
type direction struct {
	cc *grpc.ClientConn
	// trailers: whether the server's trailer reaches the client.
	trailers bool
	// errorStatus: whether the server's error status always reaches the
	// client; if not, the call either gets it or ends with
	// DEADLINE_EXCEEDED after replyTimeout.
	errorStatus bool
	// retryCalls is how many times, at most, the server sees a unary call
	// retried with the same idempotency-key (at least once).
	retryCalls int
}

// TestZillaFrontFerryBack: a gRPC client calls Zilla, which writes the
// requests to Kafka, where Ferry's back end calls the echo server and
// writes the replies Zilla answers from.
func TestZillaFrontFerryBack(t *testing.T) {
	s := need(t)
	// Zilla's front end turns reply records into messages and a status
	// and passes on no trailers. A retry with the same idempotency-key
	// is answered from the stored replies, but Zilla writes its request
	// again and Ferry's back end serves every request it reads: the server
	// sees the call twice.
	testDirection(t, direction{cc: s.zillaCC, trailers: false, errorStatus: true, retryCalls: 2}, "zf")
}

// TestFerryFrontZillaBack: a gRPC client calls Ferry, which writes the
// requests to Kafka, where Zilla's back end calls the echo server and
// writes the replies Ferry answers from.
func TestFerryFrontZillaBack(t *testing.T) {
	s := need(t)
	// Zilla's back end writes no trailers, and mostly no reply at all when
	// the server answers an error (seen: sometimes it does, a race inside
	// Zilla): Ferry's route timeout ends such a call.
	// Ferry's front end answers a retry from the stored replies without
	// writing the request again.
	testDirection(t, direction{cc: s.ferryCC, trailers: false, errorStatus: false, retryCalls: 1}, "ff")
}

func testDirection(t *testing.T, d direction, tag string) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var ten []string
	for i := 0; i < 10; i++ {
		ten = append(ten, fmt.Sprintf("%s-s %d", tag, i))
	}
	bin := string([]byte{0, 1, 2, 0xfe, 0xff})
	for _, tc := range []struct {
		method     string
		reqs, want []string
	}{
		{"UnaryEcho", []string{tag + "-hi"}, []string{tag + "-hi"}},
		{"ServerStreamingEcho", []string{tag + "-s"}, ten},
		{"ClientStreamingEcho", []string{"a", "b", "c"}, []string{"a,b,c"}},
		{"BidirectionalStreamingEcho", []string{"x", "y", "z"}, []string{"x", "y", "z"}},
	} {
		t.Run(tc.method, func(t *testing.T) {
			res := call(ctx, d.cc, tc.method, metadata.Pairs("x-trace", tag, "x-echo-bin", bin), tc.reqs...)
			if res.err != nil || !reflect.DeepEqual(res.msgs, tc.want) {
				t.Fatalf("%s(%q) = %q, %v; want %q", tc.method, tc.reqs, res.msgs, res.err, tc.want)
			}
			if got := res.header.Get("x-echo-server"); !reflect.DeepEqual(got, []string{serverName}) {
				t.Errorf("response header x-echo-server = %q, want [%s]", got, serverName)
			}
			if got := res.header.Get("x-echo-bin"); !reflect.DeepEqual(got, []string{bin}) {
				t.Errorf("binary response header x-echo-bin = %q, want [%q] (the request's, echoed)", got, bin)
			}
			got := res.trailer.Get("x-trailer")
			if d.trailers && !reflect.DeepEqual(got, []string{"done"}) {
				t.Errorf("trailer x-trailer = %q, want [done]", got)
			}
			if !d.trailers && len(got) != 0 {
				t.Errorf("trailer x-trailer = %q; this direction carried no trailers so far: update the test", got)
			}
		})
	}
	t.Run("ErrorStatus", func(t *testing.T) {
		start := time.Now()
		res := call(ctx, d.cc, "UnaryEcho", nil, "fail-"+tag)
		st := status.Convert(res.err)
		if d.errorStatus {
			if st.Code() != codes.PermissionDenied || st.Message() != "denied: fail-"+tag {
				t.Errorf("status = %v %q, want PermissionDenied %q", st.Code(), st.Message(), "denied: fail-"+tag)
			}
			return
		}
		// Zilla's back end mostly writes no reply when the server answers
		// an error; Ferry's front end ends the call at its route timeout.
		// When Zilla does write one, it must carry the server's status.
		if st.Code() == codes.PermissionDenied && st.Message() == "denied: fail-"+tag {
			t.Logf("Zilla's back end wrote the error reply this time")
			return
		}
		if took := time.Since(start); st.Code() != codes.DeadlineExceeded || took < replyTimeout {
			t.Errorf("status = %v %q after %s, want DeadlineExceeded after the route timeout %s (Zilla writes no error reply)",
				st.Code(), st.Message(), took, replyTimeout)
		}
	})
	t.Run("IdempotentRetry", func(t *testing.T) {
		msg := tag + "-once"
		md := metadata.Pairs("idempotency-key", fmt.Sprintf("%s-%d", msg, time.Now().UnixNano()))
		first := call(ctx, d.cc, "UnaryEcho", md, msg)
		second := call(ctx, d.cc, "UnaryEcho", md, msg)
		if first.err != nil || second.err != nil || !reflect.DeepEqual(first.msgs, []string{msg}) || !reflect.DeepEqual(second.msgs, first.msgs) {
			t.Fatalf("first = %q, %v; retry = %q, %v; want [%s] twice", first.msgs, first.err, second.msgs, second.err, msg)
		}
		// A request Zilla writes again is served after its retry was
		// answered from the stored replies: wait a moment for it.
		deadline := time.Now().Add(3 * time.Second)
		for env.server.calls(msg) < d.retryCalls && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		if n := env.server.calls(msg); n < 1 || n > d.retryCalls {
			t.Errorf("the server saw %d calls, want 1 to %d", n, d.retryCalls)
		}
	})
}
