package pixy

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/ferryproxy/ferry/internal/config"
	"github.com/ferryproxy/ferry/internal/testkit"
)

// restMessage is GET /topics/{topic}/messages's answer.
type restMessage struct {
	Key       *string `json:"key"` // base64, null for no key
	Value     *string `json:"value"`
	Partition int32   `json:"partition"`
	Offset    int64   `json:"offset"`
	Headers   []struct {
		Key   string `json:"key"`
		Value string `json:"value"`
	} `json:"headers"`
}

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

// decodeJSON decodes body into v, failing t when it is not JSON.
func decodeJSON(t testing.TB, body []byte, v any) {
	t.Helper()
	if err := json.Unmarshal(body, v); err != nil {
		t.Fatalf("answer %q is not the JSON expected: %v", body, err)
	}
}

// wantError checks an error answer: the status and {"error": text}.
func wantError(t testing.TB, what string, code int, body []byte, wantCode int, contains string) {
	t.Helper()
	var e map[string]any
	if err := json.Unmarshal(body, &e); err != nil {
		t.Errorf("%s: answer %q is not JSON", what, body)
		return
	}
	msg, ok := e["error"].(string)
	if code != wantCode || !ok || len(e) != 1 || !strings.Contains(msg, contains) {
		t.Errorf("%s: %d %s, want %d {\"error\": \"...%s...\"}", what, code, body, wantCode, contains)
	}
}

// restConsume polls GET messages until a message comes, retrying 408s as a
// Kafka-Pixy client does.
func (f *fixture) restConsume(t testing.TB, path string) restMessage {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		code, body := f.httpDo(t, http.MethodGet, path, "", nil)
		if code == http.StatusOK {
			var m restMessage
			decodeJSON(t, body, &m)
			return m
		}
		if code != http.StatusRequestTimeout || time.Now().After(deadline) {
			t.Fatalf("GET %s: %d %s", path, code, body)
		}
	}
}

// TestRESTProduceConsume produces with every body kind and reads the
// messages back over REST.
func TestRESTProduceConsume(t *testing.T) {
	f := newFixture(t)
	topic := newTopic(t, nil)
	group := testkit.Name(t, "group")
	msgs := "/topics/" + topic + "/messages"

	// Sync, text/plain, keyed, with record headers.
	code, body := f.httpDo(t, http.MethodPost, msgs+"?key=k1&sync", "text/plain; charset=utf-8", strings.NewReader("m1"),
		"X-Kafka-Trace-Id", b64("t-1"), "x-kafka-empty", "")
	if code != http.StatusOK {
		t.Fatalf("sync produce: %d %s", code, body)
	}
	var prod map[string]int64
	decodeJSON(t, body, &prod)
	if len(prod) != 2 || prod["partition"] < 0 || prod["partition"] > 2 || prod["offset"] < 0 {
		t.Fatalf("sync produce answered %s, want {\"partition\",\"offset\"}", body)
	}
	// Async (no sync), JSON: {} at once.
	code, body = f.httpDo(t, http.MethodPost, msgs, "application/json", strings.NewReader(`{"m":2}`))
	if code != http.StatusOK || string(body) != "{}" {
		t.Fatalf("async produce: %d %s, want 200 {}", code, body)
	}
	// As in Kafka-Pixy, sync is read by its presence: sync=false is sync.
	code, body = f.httpDo(t, http.MethodPost, msgs+"?sync=false", "application/json", strings.NewReader(`{"m":6}`))
	if code != http.StatusOK || !strings.Contains(string(body), "offset") {
		t.Fatalf("produce?sync=false: %d %s, want the partition and offset", code, body)
	}
	// An empty key parameter is the empty key; a form carries msg.
	code, body = f.httpDo(t, http.MethodPost, msgs+"?key=&sync=1", "application/x-www-form-urlencoded",
		strings.NewReader(url.Values{"msg": {"m3"}}.Encode()))
	if code != http.StatusOK {
		t.Fatalf("form produce: %d %s", code, body)
	}
	// Multipart, with the key among the form's fields as Kafka-Pixy took it.
	var mp bytes.Buffer
	mw := multipart.NewWriter(&mp)
	_ = mw.WriteField("msg", "m4")
	_ = mw.WriteField("key", "k4")
	_ = mw.WriteField("sync", "")
	_ = mw.Close()
	code, body = f.httpDo(t, http.MethodPost, msgs, mw.FormDataContentType(), &mp)
	if code != http.StatusOK || !strings.Contains(string(body), "offset") {
		t.Fatalf("multipart produce: %d %s, want a sync answer", code, body)
	}
	// A +json type is JSON.
	code, body = f.httpDo(t, http.MethodPost, msgs+"?sync", "application/vnd.ferry+json", strings.NewReader(`"m5"`))
	if code != http.StatusOK {
		t.Fatalf("+json produce: %d %s", code, body)
	}

	got := map[string]restMessage{}
	for range 6 {
		m := f.restConsume(t, msgs+"?group="+group)
		if m.Value == nil {
			t.Fatalf("message without value: %+v", m)
		}
		v, _ := base64.StdEncoding.DecodeString(*m.Value)
		got[string(v)] = m
	}
	m1 := got["m1"]
	if m1.Key == nil || *m1.Key != b64("k1") || m1.Partition != int32(prod["partition"]) || m1.Offset != prod["offset"] {
		t.Errorf("m1 is %+v, want key k1 at %v", m1, prod)
	}
	if len(m1.Headers) != 2 || m1.Headers[0].Key != "Empty" || m1.Headers[0].Value != "" ||
		m1.Headers[1].Key != "Trace-Id" || m1.Headers[1].Value != b64("t-1") {
		t.Errorf("m1 headers %+v, want Empty=\"\" and Trace-Id=t-1", m1.Headers)
	}
	if m2, ok := got[`{"m":2}`]; !ok || m2.Key != nil || m2.Headers == nil {
		t.Errorf("the JSON message is %+v, want no key (null) and headers []", m2)
	}
	if m3, ok := got["m3"]; !ok || m3.Key == nil || *m3.Key != "" {
		t.Errorf("the form message is %+v, want the empty key \"\"", m3)
	}
	if m4, ok := got["m4"]; !ok || m4.Key == nil || *m4.Key != b64("k4") {
		t.Errorf("the multipart message is %+v, want key k4", m4)
	}
	if _, ok := got[`{"m":6}`]; !ok {
		t.Errorf("the sync=false message was not consumed: %v", got)
	}
	if _, ok := got[`"m5"`]; !ok {
		t.Errorf("the +json message was not consumed: %v", got)
	}

	// Every message was auto-acknowledged; the next poll is a 408.
	start := time.Now()
	code, body = f.httpDo(t, http.MethodGet, msgs+"?group="+group, "", nil)
	wantError(t, "empty poll", code, body, http.StatusRequestTimeout, "long polling timeout")
	if d := time.Since(start); d < testLongPoll*8/10 {
		t.Errorf("the empty poll answered after %v, want about %v", d, testLongPoll)
	}
}

// TestRESTAcks checks noAck, explicit acks and POST acks, with the
// committed offsets and sparse acks GET offsets shows.
func TestRESTAcks(t *testing.T) {
	f := newFixture(t)
	topic := newTopic(t, nil)
	group := testkit.Name(t, "group")
	produceTo(t, topic, 2, "a", "b", "c", "d")
	base := "/clusters/default/topics/" + topic

	m := f.restConsume(t, base+"/messages?group="+group+"&noAck")
	if m.Partition != 2 || m.Offset != 0 {
		t.Fatalf("first message %+v, want 2/0", m)
	}
	m = f.restConsume(t, base+"/messages?group="+group+"&noAck=true")
	if m.Offset != 1 {
		t.Fatalf("second message %+v, want offset 1", m)
	}
	// Acknowledge 1 while taking 2 (explicit ack 0 is allowed over REST).
	m = f.restConsume(t, base+"/messages?group="+group+"&ackPartition=2&ackOffset=1")
	if m.Offset != 2 {
		t.Fatalf("third message %+v, want offset 2", m)
	}
	code, body := f.httpDo(t, http.MethodPost, base+"/acks?group="+group+"&partition=2&offset=2", "", nil)
	if code != http.StatusOK || string(body) != "{}" {
		t.Fatalf("POST acks: %d %s", code, body)
	}

	// 0 is out, 1 and 2 acknowledged: committed 0, sparse 1-3.
	var row map[string]any
	deadline := time.Now().Add(15 * time.Second)
	for {
		code, body = f.httpDo(t, http.MethodGet, base+"/offsets?group="+group, "", nil)
		if code != http.StatusOK {
			t.Fatalf("GET offsets: %d %s", code, body)
		}
		var rows []map[string]any
		decodeJSON(t, body, &rows)
		for _, r := range rows {
			if r["partition"] == float64(2) {
				row = r
			}
		}
		if row != nil && row["offset"] == float64(0) && row["sparse_acks"] == "1-3" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("partition 2 offsets %v, want offset 0 sparse_acks 1-3", row)
		}
		time.Sleep(50 * time.Millisecond)
	}
	want := map[string]any{"partition": 2.0, "begin": 0.0, "end": 4.0, "count": 4.0, "offset": 0.0, "lag": 4.0,
		"metadata": "BC", "sparse_acks": "1-3"}
	for k, v := range want {
		if row[k] != v {
			t.Errorf("offsets %s = %v, want %v (row %v)", k, row[k], v, row)
		}
	}

	// Auto-ack takes 3; acknowledging 0 completes the partition.
	if m = f.restConsume(t, base+"/messages?group="+group); m.Offset != 3 {
		t.Fatalf("fourth message %+v, want offset 3", m)
	}
	// Parameters may come in a form body, as Kafka-Pixy read them.
	code, body = f.httpDo(t, http.MethodPost, base+"/acks", "application/x-www-form-urlencoded",
		strings.NewReader(url.Values{"group": {group}, "partition": {"2"}, "offset": {"0"}}.Encode()))
	if code != http.StatusOK || string(body) != "{}" {
		t.Fatalf("POST acks 0 as a form: %d %s", code, body)
	}
	f.waitOffset(t, topic, group, 2, 4, "")

	code, body = f.httpDo(t, http.MethodPost, base+"/acks?group="+testkit.Name(t, "other")+"&partition=2&offset=0", "", nil)
	wantError(t, "POST acks in a group not consumed here", code, body, http.StatusConflict, "")

	// Bad parameters.
	for _, tc := range []struct{ method, path, contains string }{
		{http.MethodGet, base + "/messages", "group"},
		{http.MethodGet, base + "/messages?group=a&group=b", "group"},
		{http.MethodGet, base + "/messages?group=" + group + "&ackPartition=2", "ackOffset"},
		{http.MethodGet, base + "/messages?group=" + group + "&ackOffset=2", "ackPartition"},
		{http.MethodGet, base + "/messages?group=" + group + "&ackPartition=x&ackOffset=1", "ackPartition"},
		{http.MethodGet, base + "/messages?group=" + group + "&ackPartition=1&ackOffset=-1", "ackOffset"},
		{http.MethodPost, base + "/acks?group=" + group + "&partition=2", "offset"},
		{http.MethodPost, base + "/acks?partition=2&offset=1", "group"},
		{http.MethodPost, base + "/acks?group=" + group + "&partition=2&offset=99", "99"},
		{http.MethodGet, base + "/offsets", "group"},
		{http.MethodGet, "/clusters/nope/topics/" + topic + "/messages?group=" + group, "nope"},
		{http.MethodPost, "/clusters/nope/topics/" + topic + "/messages?sync", "nope"},
		{http.MethodGet, "/clusters/nope/topics", "nope"},
	} {
		code, body := f.httpDo(t, tc.method, tc.path, "text/plain", strings.NewReader("x"))
		wantError(t, tc.method+" "+tc.path, code, body, http.StatusBadRequest, tc.contains)
	}
}

// TestRESTProduceErrors checks produce's refusals.
func TestRESTProduceErrors(t *testing.T) {
	f := newFixture(t)
	topic := newTopic(t, nil)
	msgs := "/topics/" + topic + "/messages?sync"
	for _, tc := range []struct {
		name, contentType, body string
		hdr                     []string
		contains                string
	}{
		{"bad base64 header", "text/plain", "x", []string{"X-Kafka-Foo", "not base64!"}, "X-Kafka-Foo"},
		{"no content type", "", "x", nil, "Content-Type"},
		{"unsupported content type", "application/octet-stream", "x", nil, "application/octet-stream"},
		{"form without msg", "application/x-www-form-urlencoded", "other=1", nil, "msg"},
	} {
		code, body := f.httpDo(t, http.MethodPost, msgs, tc.contentType, strings.NewReader(tc.body), tc.hdr...)
		wantError(t, tc.name, code, body, http.StatusBadRequest, tc.contains)
	}
}

// TestRESTTopics covers GET /topics in its three shapes, GET /topics/{t},
// consumers and the offsets POST.
func TestRESTTopics(t *testing.T) {
	f := newFixture(t)
	retention := "7200000"
	topic := newTopic(t, map[string]*string{"retention.ms": &retention})

	code, body := f.httpDo(t, http.MethodGet, "/topics", "", nil)
	var names []string
	decodeJSON(t, body, &names)
	if code != http.StatusOK || !slices.Contains(names, topic) {
		t.Errorf("GET /topics: %d, %s lacks %s", code, body, topic)
	}

	type view struct {
		Config *struct {
			Version int               `json:"version"`
			Config  map[string]string `json:"config"`
		} `json:"config"`
		Partitions []struct {
			Partition *int32  `json:"partition"`
			Leader    *int32  `json:"leader"`
			Replicas  []int32 `json:"replicas"`
			ISR       []int32 `json:"isr"`
		} `json:"partitions"`
	}
	check := func(what string, v view, withConfig, withPartitions bool) {
		t.Helper()
		if withConfig != (v.Config != nil) {
			t.Errorf("%s: config %v, want it %v", what, v.Config, withConfig)
		}
		if v.Config != nil && (v.Config.Version != 1 || len(v.Config.Config) != 1 || v.Config.Config["retention.ms"] != retention) {
			t.Errorf("%s: config %+v, want version 1 retention.ms only", what, *v.Config)
		}
		if !withPartitions {
			if v.Partitions != nil {
				t.Errorf("%s: partitions listed without withPartitions", what)
			}
			return
		}
		if len(v.Partitions) != 3 {
			t.Fatalf("%s: %d partitions, want 3", what, len(v.Partitions))
		}
		for i, p := range v.Partitions {
			if p.Partition == nil || *p.Partition != int32(i) || p.Leader == nil || *p.Leader < 0 || len(p.Replicas) != 1 || len(p.ISR) != 1 {
				t.Errorf("%s: partition %d is %+v", what, i, p)
			}
		}
	}
	for _, tc := range []struct {
		query                      string
		withConfig, withPartitions bool
	}{
		{"?withConfig", true, false},
		{"?withPartitions", false, true},
		{"?withPartitions=1&withConfig=true", true, true},
	} {
		code, body := f.httpDo(t, http.MethodGet, "/topics"+tc.query, "", nil)
		var all map[string]view
		decodeJSON(t, body, &all)
		v, ok := all[topic]
		if code != http.StatusOK || !ok {
			t.Fatalf("GET /topics%s: %d, lacks %s", tc.query, code, topic)
		}
		check("GET /topics"+tc.query, v, tc.withConfig, tc.withPartitions)
	}
	for _, tc := range []struct {
		path           string
		withPartitions bool
	}{
		{"/topics/" + topic, false},
		{"/clusters/default/topics/" + topic + "?withPartitions", true},
	} {
		code, body := f.httpDo(t, http.MethodGet, tc.path, "", nil)
		if code != http.StatusOK {
			t.Fatalf("GET %s: %d %s", tc.path, code, body)
		}
		var v view
		decodeJSON(t, body, &v)
		check("GET "+tc.path, v, true, tc.withPartitions)
	}
	code, body = f.httpDo(t, http.MethodGet, "/topics/"+testkit.Name(t, "missing"), "", nil)
	wantError(t, "unknown topic", code, body, http.StatusNotFound, "")
	code, body = f.httpDo(t, http.MethodGet, "/topics/"+testkit.Name(t, "missing")+"/messages?group=g", "", nil)
	wantError(t, "consuming an unknown topic", code, body, http.StatusNotFound, "")
	code, body = f.httpDo(t, http.MethodGet, "/topics/"+testkit.Name(t, "missing")+"/offsets?group=g", "", nil)
	wantError(t, "offsets of an unknown topic", code, body, http.StatusNotFound, "")

	// Consumers: one member of the group holding every partition.
	group := testkit.Name(t, "group")
	code, body = f.httpDo(t, http.MethodPost, "/topics/"+topic+"/offsets?group="+group, "application/json",
		strings.NewReader(`[{"partition":0,"offset":0},{"partition":1,"offset":0,"metadata":"BB"}]`))
	if code != http.StatusOK || string(body) != "{}" {
		t.Fatalf("POST offsets: %d %s", code, body)
	}
	code, body = f.httpDo(t, http.MethodGet, "/topics/"+topic+"/offsets?group="+group, "", nil)
	if code != http.StatusOK || !strings.Contains(string(body), `"metadata":"BB","sparse_acks":"1-2"`) {
		t.Errorf("GET offsets after POST: %d %s, want partition 1 with metadata BB, sparse_acks 1-2", code, body)
	}
	produceTo(t, topic, 0, "x")
	f.restConsume(t, "/topics/"+topic+"/messages?group="+group)
	deadline := time.Now().Add(30 * time.Second)
	for {
		code, body = f.httpDo(t, http.MethodGet, "/topics/"+topic+"/consumers", "", nil)
		var groups map[string]map[string][]int32
		decodeJSON(t, body, &groups)
		if code == http.StatusOK && len(groups[group]) == 1 {
			for member, ps := range groups[group] {
				slices.Sort(ps)
				if member == "" || !slices.Equal(ps, []int32{0, 1, 2}) {
					t.Errorf("member %q holds %v, want 0, 1, 2", member, ps)
				}
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET consumers: %d %s, want one member of %s", code, body, group)
		}
		time.Sleep(100 * time.Millisecond)
	}
	code, body = f.httpDo(t, http.MethodGet, "/topics/"+topic+"/consumers?group="+testkit.Name(t, "other"), "", nil)
	if code != http.StatusOK || string(body) != "{}" {
		t.Errorf("GET consumers of another group: %d %s, want {}", code, body)
	}
	code, body = f.httpDo(t, http.MethodPost, "/topics/"+topic+"/offsets?group="+group, "application/json", strings.NewReader(`{"partition":0}`))
	wantError(t, "POST offsets with an object", code, body, http.StatusBadRequest, "JSON array")
}

// TestRESTRouting checks the answers around the paths: ping, unknown paths,
// wrong methods, oversized bodies.
func TestRESTRouting(t *testing.T) {
	f := newFixture(t)
	code, body := f.httpDo(t, http.MethodGet, "/_ping", "", nil)
	if code != http.StatusOK || string(body) != "pong" {
		t.Errorf("GET /_ping: %d %q", code, body)
	}
	code, body = f.httpDo(t, http.MethodGet, "/clusters/default/_ping", "", nil)
	if code != http.StatusOK || string(body) != "pong" {
		t.Errorf("GET /clusters/default/_ping: %d %q", code, body)
	}
	code, body = f.httpDo(t, http.MethodGet, "/nope", "", nil)
	wantError(t, "unknown path", code, body, http.StatusNotFound, "/nope")
	code, body = f.httpDo(t, http.MethodGet, "/topics/t/messages/extra", "", nil)
	wantError(t, "unknown subpath", code, body, http.StatusNotFound, "")
	for _, tc := range []struct{ method, path, allow string }{
		{http.MethodDelete, "/topics/t/messages", "POST, GET"},
		{http.MethodPut, "/clusters/default/topics/t/offsets", "GET, POST"},
		{http.MethodPost, "/_ping", "GET"},
		{http.MethodPost, "/topics", "GET"},
	} {
		rq, _ := http.NewRequest(tc.method, f.url+tc.path, nil)
		rs, err := http.DefaultClient.Do(rq)
		if err != nil {
			t.Fatal(err)
		}
		var e map[string]string
		err = json.NewDecoder(rs.Body).Decode(&e)
		rs.Body.Close()
		if rs.StatusCode != http.StatusMethodNotAllowed || err != nil || e["error"] == "" || rs.Header.Get("Allow") != tc.allow {
			t.Errorf("%s %s: %d %v Allow %q, want 405 JSON Allow %q", tc.method, tc.path, rs.StatusCode, e, rs.Header.Get("Allow"), tc.allow)
		}
	}

	// A small limit, to check 413 on each way a body is read.
	small := httptest.NewServer(NewHandler(f.srv, 64))
	defer small.Close()
	big := strings.Repeat("x", 100)
	for _, tc := range []struct{ path, contentType, body string }{
		{"/topics/t/messages?sync", "text/plain", big},
		{"/topics/t/messages?sync", "application/x-www-form-urlencoded", "msg=" + big},
		{"/topics/t/offsets?group=g", "application/json", `[{"partition":0,"offset":0,"metadata":"` + big + `"}]`},
	} {
		code, body := httpDo(t, small.URL, http.MethodPost, tc.path, tc.contentType, strings.NewReader(tc.body))
		wantError(t, "oversized "+tc.contentType, code, body, http.StatusRequestEntityTooLarge, "64 bytes")
	}
	var mp bytes.Buffer
	mw := multipart.NewWriter(&mp)
	_ = mw.WriteField("msg", big)
	_ = mw.Close()
	code, body = httpDo(t, small.URL, http.MethodPost, "/topics/t/messages", mw.FormDataContentType(), &mp)
	wantError(t, "oversized multipart", code, body, http.StatusRequestEntityTooLarge, "64 bytes")
}

// TestRESTTooManyWaiting checks 429 beyond max_waiting_polls.
func TestRESTTooManyWaiting(t *testing.T) {
	f := newFixture(t, func(c *config.KafkaAPI) { c.Consume.MaxWaitingPolls = 1 })
	topic := newTopic(t, nil)
	group := testkit.Name(t, "group")
	produceTo(t, topic, 0, "x")
	path := "/topics/" + topic + "/messages?group=" + group
	f.restConsume(t, path)

	statuses := make([]int, 4)
	bodies := make([][]byte, 4)
	var wg sync.WaitGroup
	for i := range statuses {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rs, err := http.Get(f.url + path)
			if err != nil {
				t.Errorf("GET %s: %v", path, err)
				return
			}
			defer rs.Body.Close()
			statuses[i] = rs.StatusCode
			bodies[i], _ = io.ReadAll(rs.Body)
		}()
	}
	wg.Wait()
	var n429, n408 int
	for i, c := range statuses {
		switch c {
		case http.StatusTooManyRequests:
			n429++
			wantError(t, "429", c, bodies[i], http.StatusTooManyRequests, "too many")
		case http.StatusRequestTimeout:
			n408++
		default:
			t.Errorf("a poll answered %d %s", c, bodies[i])
		}
	}
	if n429 == 0 || n408 == 0 {
		t.Errorf("%d polls got 429 and %d got 408, want some of each", n429, n408)
	}
}

// TestHTTPStatus pins the gRPC code → HTTP status mapping.
func TestHTTPStatus(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want int
	}{
		{errLongPollTimeout, http.StatusRequestTimeout},
		{status.Error(codes.NotFound, "long polling timeout"), http.StatusNotFound}, // only the poll's own value is 408
		{status.Error(codes.InvalidArgument, ""), http.StatusBadRequest},
		{status.Error(codes.NotFound, ""), http.StatusNotFound},
		{status.Error(codes.ResourceExhausted, ""), http.StatusTooManyRequests},
		{status.Error(codes.Unavailable, ""), http.StatusServiceUnavailable},
		{status.Error(codes.DeadlineExceeded, ""), http.StatusGatewayTimeout},
		{status.Error(codes.FailedPrecondition, ""), http.StatusConflict},
		{status.Error(codes.PermissionDenied, ""), http.StatusForbidden},
		{status.Error(codes.Internal, ""), http.StatusInternalServerError},
		{status.Error(codes.Aborted, ""), http.StatusConflict},
		{status.Error(codes.OutOfRange, ""), http.StatusBadRequest},
		{status.Error(codes.Unauthenticated, ""), http.StatusUnauthorized},
		{status.Error(codes.Canceled, ""), 499}, // the client gave up: vanguard's and nginx's 499
		{errors.New("plain"), http.StatusInternalServerError},
	} {
		if got := httpStatus(tc.err); got != tc.want {
			t.Errorf("httpStatus(%v) = %d, want %d", tc.err, got, tc.want)
		}
	}
}

// TestFlag pins how boolean parameters read: by presence, as Kafka-Pixy
// read them, so an explicit false is set too.
func TestFlag(t *testing.T) {
	for q, want := range map[string]bool{
		"": false, "sync": true, "sync=": true, "sync=1": true, "sync=true": true, "sync=yes": true,
		"sync=0": true, "sync=false": true, "sync=FALSE": true, "other=1": false, "Sync": false,
	} {
		v, _ := url.ParseQuery(q)
		if got := flag(v, "sync"); got != want {
			t.Errorf("flag(%q) = %v, want %v", q, got, want)
		}
	}
}

// FuzzKafkaHeaders checks that any X-Kafka- header either decodes to the
// value it encodes or is refused, never mangled.
func FuzzKafkaHeaders(f *testing.F) {
	f.Add("Trace-Id", b64("x"))
	f.Add("A", "!!")
	f.Add("", "")
	f.Fuzz(func(t *testing.T, name, value string) {
		h := http.Header{}
		h.Add(kafkaHeaderPrefix+name, value)
		hs, err := kafkaHeaders(h)
		if err != nil {
			if _, derr := base64.StdEncoding.DecodeString(value); derr == nil {
				t.Fatalf("refused valid base64 %q: %v", value, err)
			}
			return
		}
		want, _ := base64.StdEncoding.DecodeString(value)
		canon := http.CanonicalHeaderKey(kafkaHeaderPrefix + name)
		if name == "" || canon == kafkaHeaderPrefix {
			if len(hs) != 0 {
				t.Fatalf("a nameless header became %v", hs)
			}
			return
		}
		if len(hs) != 1 || hs[0].GetKey() != canon[len(kafkaHeaderPrefix):] || !bytes.Equal(hs[0].GetValue(), want) {
			t.Fatalf("X-Kafka-%s: %q became %v", name, value, hs)
		}
	})
}

// TestRESTNoAckFalse checks that noAck=false is noAck, as in Kafka-Pixy:
// the message taken is not acknowledged and comes again after the ack
// timeout.
func TestRESTNoAckFalse(t *testing.T) {
	f := newFixture(t, func(c *config.KafkaAPI) { c.Consume.AckTimeout = time.Second })
	topic := newTopic(t, nil)
	group := testkit.Name(t, "group")
	produceTo(t, topic, 1, "a")
	path := "/topics/" + topic + "/messages?group=" + group + "&noAck=false"
	first := f.restConsume(t, path)
	deadline := time.Now().Add(15 * time.Second)
	for {
		code, body := f.httpDo(t, http.MethodGet, path, "", nil)
		if code == http.StatusOK {
			var again restMessage
			decodeJSON(t, body, &again)
			if again.Partition != first.Partition || again.Offset != first.Offset {
				t.Fatalf("redelivered %+v, want %+v again", again, first)
			}
			return
		}
		if code != http.StatusRequestTimeout || time.Now().After(deadline) {
			t.Fatalf("waiting for the unacknowledged message again: %d %s", code, body)
		}
	}
}
