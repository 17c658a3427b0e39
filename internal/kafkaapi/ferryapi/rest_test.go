package ferryapi

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	kafkav1 "github.com/ferryproxy/ferry/api/ferry/kafka/v1"
	"github.com/ferryproxy/ferry/internal/testkit"
)

// restDo sends a JSON request to the REST handler, checks the HTTP status
// and decodes the answer into out (when not nil). It returns the body.
func (e *env) restDo(method, path, body string, wantStatus int, out proto.Message) []byte {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, e.rest.URL+path, rd)
	if err != nil {
		e.t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatalf("%s %s: reading the answer: %v", method, path, err)
	}
	if resp.StatusCode != wantStatus {
		e.t.Fatalf("%s %s answered %d %s, want %d", method, path, resp.StatusCode, b, wantStatus)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		e.t.Fatalf("%s %s answered content type %q, want JSON", method, path, ct)
	}
	if out != nil {
		if err := protojson.Unmarshal(b, out); err != nil {
			e.t.Fatalf("%s %s: decoding %s: %v", method, path, b, err)
		}
	}
	return b
}

// restError checks that a request fails with a JSON google.rpc.Status of
// code whose message holds msg.
func (e *env) restError(method, path, body string, wantStatus, code int, msg string) {
	e.t.Helper()
	b := e.restDo(method, path, body, wantStatus, nil)
	var st struct {
		Code    *int            `json:"code"`
		Message string          `json:"message"`
		Details json.RawMessage `json:"details"`
	}
	if err := json.Unmarshal(b, &st); err != nil || st.Code == nil {
		e.t.Fatalf("%s %s: the error %s is not a JSON status: %v", method, path, b, err)
	}
	if *st.Code != code || !strings.Contains(st.Message, msg) || st.Details == nil {
		e.t.Fatalf("%s %s: got error %s, want code %d mentioning %q", method, path, b, code, msg)
	}
}

func TestREST(t *testing.T) {
	e := newEnv(t)
	topic, group := kit.Topic(t, 3, nil), testkit.Name(t, "group")
	records := "/v1/clusters/default/topics/" + topic + "/records"
	groupTopic := "/v1/clusters/default/groups/" + group + "/topics/" + topic

	var pr kafkav1.ProduceResponse
	ts := time.Now().Add(-5 * time.Second).Truncate(time.Millisecond).UTC()
	e.restDo(http.MethodPost, records, `{"key":"azE=","valueText":"hi","headers":[{"key":"h","value":"dg=="}],"partition":1,"timestamp":"`+ts.Format(time.RFC3339Nano)+`"}`, 200, &pr)
	if pr.GetPartition() != 1 || pr.GetOffset() != 0 || !pr.GetTimestamp().AsTime().Equal(ts) {
		t.Fatalf("produce answered %v", &pr)
	}
	e.restDo(http.MethodPost, records, `{"valueJson":{"a":[1,2],"b":"c"},"partition":1}`, 200, &pr)
	e.restDo(http.MethodPost, records, `{"valueBytes":"/w==","partition":1}`, 200, &pr)
	if pr.GetOffset() != 2 {
		t.Fatalf("the third record went to offset %d", pr.GetOffset())
	}
	var async kafkav1.ProduceResponse
	e.restDo(http.MethodPost, records, `{"valueText":"later","async":true,"partition":2}`, 200, &async)
	if async.GetPartition() != -1 || async.GetOffset() != -1 {
		t.Fatalf("async produce answered %v", &async)
	}
	e.restDo(http.MethodPost, records, `{"partition":2}`, 200, &pr) // a tombstone

	var msgs []*kafkav1.Message
	var raw strings.Builder
	for deadline := time.Now().Add(30 * time.Second); len(msgs) < 5 && time.Now().Before(deadline); {
		var resp kafkav1.PollResponse
		raw.Write(e.restDo(http.MethodPost, groupTopic+"/poll", `{"maxMessages":10,"timeout":"3s","valueFormat":"VALUE_FORMAT_JSON"}`, 200, &resp))
		msgs = append(msgs, resp.GetMessages()...)
	}
	if len(msgs) != 5 {
		t.Fatalf("polled %d messages, want 5", len(msgs))
	}
	// Each message shows its one value field and no other, even though
	// the REST face writes unpopulated fields: the tombstone none, the
	// JSON record valueJson, the rest (not JSON) valueBytes.
	for field, want := range map[string]int{`"valueJson"`: 1, `"valueBytes"`: 3, `"valueText"`: 0} {
		if got := strings.Count(raw.String(), field); got != want {
			t.Errorf("the poll answers hold %s %d times, want %d: %s", field, got, want, raw.String())
		}
	}
	slices.SortFunc(msgs, func(a, b *kafkav1.Message) int { return strings.Compare(key(a), key(b)) })
	if m := msgs[0]; string(m.GetKey()) != "k1" || string(m.GetValueBytes()) != "hi" || len(m.GetHeaders()) != 1 || string(m.Headers[0].GetValue()) != "v" {
		t.Errorf("the first record came back as %v", m)
	}
	if v := msgs[1].GetValueJson().GetStructValue().GetFields()["b"].GetStringValue(); v != "c" {
		t.Errorf("the JSON record came back as %v", msgs[1])
	}
	if string(msgs[2].GetValueBytes()) != "\xff" || msgs[3].GetPartition() != 2 {
		t.Errorf("the last records came back as %v, %v", msgs[2], msgs[3])
	}
	for _, want := range []string{`"valueJson":{"a":[1,2],"b":"c"}`, `"key":"azE="`, `"offset":"0"`} {
		if !strings.Contains(strings.ReplaceAll(raw.String(), " ", ""), want) {
			t.Errorf("the poll answers %s hold no %s", raw.String(), want)
		}
	}

	var acks []string
	for _, m := range msgs {
		acks = append(acks, fmt.Sprintf(`{"partition":%d,"offset":"%d"}`, m.GetPartition(), m.GetOffset()))
	}
	if b := e.restDo(http.MethodPost, groupTopic+"/acks", `{"acks":[`+strings.Join(acks, ",")+`]}`, 200, nil); strings.TrimSpace(string(b)) != "{}" {
		t.Errorf("ack answered %s", b)
	}
	e.waitCommitted(context.Background(), group, topic, 5)
	var offs kafkav1.GetOffsetsResponse
	e.restDo(http.MethodGet, groupTopic+"/offsets", "", 200, &offs)
	if len(offs.GetPartitions()) != 3 || offs.Partitions[1].GetEnd() != 3 || offs.Partitions[1].GetCommitted() != 3 || offs.Partitions[1].GetLag() != 0 {
		t.Errorf("offsets: %v", &offs)
	}
	var set kafkav1.SetOffsetsResponse
	e.restDo(http.MethodPut, groupTopic+"/offsets", `{"position":"earliest"}`, 200, &set)
	if len(set.GetPartitions()) != 3 || set.Partitions[1].GetOffset() != 0 {
		t.Errorf("set to earliest: %v", &set)
	}
	e.restDo(http.MethodPut, groupTopic+"/offsets", `{"offsets":{"partitions":[{"partition":1,"offset":"2"}]}}`, 200, &set)
	if len(set.GetPartitions()) != 1 || set.Partitions[0].GetOffset() != 2 {
		t.Errorf("set to offset 2: %v", &set)
	}
	e.restDo(http.MethodPut, groupTopic+"/offsets", `{"timestamp":"`+ts.Format(time.RFC3339Nano)+`"}`, 200, &set)
	if len(set.GetPartitions()) != 3 || set.Partitions[1].GetOffset() != 0 {
		t.Errorf("set to a time: %v", &set)
	}

	var clusters kafkav1.ListClustersResponse
	e.restDo(http.MethodGet, "/v1/clusters", "", 200, &clusters)
	if !slices.Equal(clusters.GetClusters(), []string{"default"}) {
		t.Errorf("clusters: %v", &clusters)
	}
	var topics kafkav1.ListTopicsResponse
	e.restDo(http.MethodGet, "/v1/clusters/default/topics?internal=true", "", 200, &topics)
	if !slices.Contains(topics.GetTopics(), topic) {
		t.Errorf("topics lack %s: %v", topic, &topics)
	}
	var td kafkav1.TopicDescription
	e.restDo(http.MethodGet, "/v1/clusters/default/topics/"+topic, "", 200, &td)
	if td.GetTopic() != topic || len(td.GetPartitions()) != 3 || len(td.GetConfigs()) == 0 {
		t.Errorf("topic: %v", &td)
	}
	var groups kafkav1.ListGroupsResponse
	e.restDo(http.MethodGet, "/v1/clusters/default/groups", "", 200, &groups)
	if !slices.Contains(groups.GetGroups(), group) {
		t.Errorf("groups lack %s: %v", group, &groups)
	}
	var gd kafkav1.GroupDescription
	e.restDo(http.MethodGet, "/v1/clusters/default/groups/"+group, "", 200, &gd)
	if gd.GetGroup() != group {
		t.Errorf("group: %v", &gd)
	}
}

func TestRESTErrors(t *testing.T) {
	e := newEnv(t)
	topic, group := kit.Topic(t, 3, nil), testkit.Name(t, "group")
	groupTopic := "/v1/clusters/default/groups/" + group + "/topics/" + topic
	for _, tc := range []struct {
		name, method, path, body string
		status, code             int
		msg                      string
	}{
		{"unknown cluster", http.MethodPost, "/v1/clusters/nope/topics/" + topic + "/records", `{"valueText":"x"}`, 400, 3, `unknown cluster "nope"`},
		{"bad partition", http.MethodPost, "/v1/clusters/default/topics/" + topic + "/records", `{"partition":99}`, 400, 3, "partition 99"},
		{"negative partition", http.MethodPost, "/v1/clusters/default/topics/" + topic + "/records", `{"partition":-1}`, 400, 3, "partition"},
		{"bad JSON", http.MethodPost, "/v1/clusters/default/topics/" + topic + "/records", `{"valueText":`, 400, 3, ""},
		{"two values", http.MethodPost, "/v1/clusters/default/topics/" + topic + "/records", `{"valueText":"x","valueBytes":"eA=="}`, 400, 3, "at most one of value_bytes"},
		{"unknown topic", http.MethodGet, "/v1/clusters/default/topics/" + topic + "-nope", "", 404, 5, ""},
		{"too many", http.MethodPost, groupTopic + "/poll", `{"maxMessages":5000}`, 400, 3, "max_messages"},
		{"no target", http.MethodPut, groupTopic + "/offsets", `{}`, 400, 3, "target"},
		{"not a member", http.MethodPost, groupTopic + "/acks", `{"acks":[{"partition":0,"offset":"0"}]}`, 400, 9, "not consuming"},
		{"unknown path", http.MethodGet, "/v1/nothing", "", 404, 5, ""},
		{"outside /v1", http.MethodGet, "/elsewhere", "", 404, 5, "/elsewhere"},
		// Only the REST bindings are served, not Connect or gRPC-Web.
		{"connect protocol", http.MethodPost, "/ferry.kafka.v1.Kafka/ListClusters", `{}`, 404, 5, ""},
		{"subscribe format", http.MethodGet, groupTopic + "/messages?format=xml", "", 400, 3, "format"},
		{"subscribe parameter", http.MethodGet, groupTopic + "/messages?bogus=1", "", 400, 3, "bogus"},
		{"subscribe path parameter", http.MethodGet, groupTopic + "/messages?topic=x", "", 400, 3, "path"},
		{"subscribe enum", http.MethodGet, groupTopic + "/messages?valueFormat=XML", "", 400, 3, "XML"},
		{"subscribe topic", http.MethodGet, "/v1/clusters/default/groups/" + group + "/topics/" + topic + "-nope/messages", "", 404, 5, "does not exist"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e.with(t).restError(tc.method, tc.path, tc.body, tc.status, tc.code, tc.msg)
		})
	}
}

// lineStream reads a streamed HTTP response line by line.
type lineStream struct {
	t      testing.TB
	resp   *http.Response
	cancel context.CancelFunc
	lines  chan string
	done   chan struct{}
}

func (e *env) subscribe(path string) *lineStream {
	e.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, e.rest.URL+path, nil)
	if err != nil {
		cancel()
		e.t.Fatal(err)
	}
	// The response starts once the group member is open, before any
	// message: a transcoder that buffers the stream would never answer.
	timer := time.AfterFunc(30*time.Second, cancel)
	resp, err := http.DefaultClient.Do(req)
	timer.Stop()
	if err != nil {
		cancel()
		e.t.Fatalf("GET %s: %v", path, err)
	}
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		cancel()
		e.t.Fatalf("GET %s answered %d %s", path, resp.StatusCode, b)
	}
	ls := &lineStream{t: e.t, resp: resp, cancel: cancel, lines: make(chan string, 1000), done: make(chan struct{})}
	go func() {
		defer close(ls.done)
		defer resp.Body.Close()
		rd := bufio.NewReader(resp.Body)
		for {
			line, err := rd.ReadString('\n')
			if err != nil {
				return
			}
			ls.lines <- strings.TrimSuffix(line, "\n")
		}
	}()
	e.t.Cleanup(ls.close)
	return ls
}

func (ls *lineStream) next(wait time.Duration) string {
	ls.t.Helper()
	select {
	case l := <-ls.lines:
		return l
	case <-time.After(wait):
		ls.t.Fatalf("no line within %v", wait)
	}
	return ""
}

func (ls *lineStream) none(d time.Duration) {
	ls.t.Helper()
	select {
	case l := <-ls.lines:
		ls.t.Fatalf("got line %q, want none", l)
	case <-time.After(d):
	}
}

func (ls *lineStream) close() {
	ls.cancel()
	<-ls.done
}

func decodeMessage(t *testing.T, js string) *kafkav1.Message {
	t.Helper()
	var m kafkav1.Message
	if err := protojson.Unmarshal([]byte(js), &m); err != nil {
		t.Fatalf("decoding message %s: %v", js, err)
	}
	return &m
}

func TestRESTSubscribeNDJSON(t *testing.T) {
	e := newEnv(t)
	topic, group := kit.Topic(t, 3, nil), testkit.Name(t, "group")
	groupTopic := "/v1/clusters/default/groups/" + group + "/topics/" + topic
	s := e.subscribe(groupTopic + "/messages?maxUnacked=2&valueFormat=VALUE_FORMAT_TEXT")
	if ct := s.resp.Header.Get("Content-Type"); ct != "application/x-ndjson" {
		t.Fatalf("content type %q", ct)
	}
	for i := range 5 {
		e.restDo(http.MethodPost, "/v1/clusters/default/topics/"+topic+"/records", fmt.Sprintf(`{"valueText":"m-%d"}`, i), 200, nil)
	}
	ack := func(m *kafkav1.Message) {
		e.restDo(http.MethodPost, groupTopic+"/acks", fmt.Sprintf(`{"acks":[{"partition":%d,"offset":"%d"}]}`, m.GetPartition(), m.GetOffset()), 200, nil)
	}
	seen := map[string]bool{}
	take := func() *kafkav1.Message {
		t.Helper()
		m := decodeMessage(t, s.next(20*time.Second))
		if seen[key(m)] || !strings.HasPrefix(m.GetValueText(), "m-") {
			t.Fatalf("unexpected message %v", m)
		}
		seen[key(m)] = true
		return m
	}
	a, b := take(), take()
	s.none(time.Second) // two unacknowledged: the bound
	ack(a)
	c := take()
	s.none(time.Second)
	ack(b)
	ack(c)
	d, f := take(), take()
	ack(d)
	ack(f)
	e.waitCommitted(context.Background(), group, topic, 5)
	s.none(500 * time.Millisecond)
}

func TestRESTSubscribeSSE(t *testing.T) {
	e := newEnv(t)
	topic, group := kit.Topic(t, 3, nil), testkit.Name(t, "group")
	for i := range 3 {
		e.restDo(http.MethodPost, "/v1/clusters/default/topics/"+topic+"/records", fmt.Sprintf(`{"valueJson":{"n":%d}}`, i), 200, nil)
	}
	s := e.subscribe("/v1/clusters/default/groups/" + group + "/topics/" + topic + "/messages?format=sse&auto_ack=true&value_format=2")
	if ct := s.resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("content type %q", ct)
	}
	seen := map[float64]bool{}
	for range 3 {
		id, data, blank := s.next(20*time.Second), s.next(time.Second), s.next(time.Second)
		if !strings.HasPrefix(id, "id: ") || !strings.HasPrefix(data, "data: ") || blank != "" {
			t.Fatalf("not an event: %q %q %q", id, data, blank)
		}
		m := decodeMessage(t, strings.TrimPrefix(data, "data: "))
		if strings.TrimPrefix(id, "id: ") != key(m) {
			t.Errorf("event id %q for message %s", id, key(m))
		}
		seen[m.GetValueJson().GetStructValue().GetFields()["n"].GetNumberValue()] = true
	}
	if len(seen) != 3 {
		t.Errorf("got values %v", seen)
	}
	e.waitCommitted(context.Background(), group, topic, 3)
}

// TestRESTSubscribeEndsWithError checks how a stream that fails after it
// started tells its client: a last NDJSON line or SSE event with the status.
func TestRESTSubscribeEndsWithError(t *testing.T) {
	for _, tc := range []struct{ format, prefix string }{
		{"ndjson", `{"error":{"code":14,`},
		{"sse", "event: error"},
	} {
		t.Run(tc.format, func(t *testing.T) {
			e := newEnv(t)
			topic, group := kit.Topic(t, 3, nil), testkit.Name(t, "group")
			e.restDo(http.MethodPost, "/v1/clusters/default/topics/"+topic+"/records", `{"valueText":"m"}`, 200, nil)
			s := e.subscribe("/v1/clusters/default/groups/" + group + "/topics/" + topic + "/messages?autoAck=true&format=" + tc.format)
			l := s.next(20 * time.Second)
			if tc.format == "sse" {
				l = s.next(time.Second) // after the id line
				s.next(time.Second)
			}
			if !strings.Contains(l, `"valueBytes":"bQ=="`) {
				t.Fatalf("got %q, want the message", l)
			}
			// Closing the service ends every group member: the stream fails
			// with UNAVAILABLE.
			e.svc.Close(context.Background())
			if l := s.next(10 * time.Second); !strings.HasPrefix(l, tc.prefix) {
				t.Fatalf("got %q, want %s", l, tc.prefix)
			}
			if tc.format == "sse" {
				if l := s.next(time.Second); !strings.HasPrefix(l, `data: {"code":14,`) {
					t.Fatalf("the error event's data is %q", l)
				}
			}
		})
	}
}

func TestNewRESTHandlerNeedsTheService(t *testing.T) {
	if _, err := NewRESTHandler(grpc.NewServer(), 1<<20); err == nil || !strings.Contains(err.Error(), "not registered") {
		t.Fatalf("NewRESTHandler on a server without the service: %v", err)
	}
}

// TestRESTBodyTooLarge checks that a body over the limit is 413 with the
// usual error JSON, with or without a Content-Length.
func TestRESTBodyTooLarge(t *testing.T) {
	e := newEnv(t)
	big := `{"valueText":"` + strings.Repeat("x", 2<<20) + `"}`
	for _, chunked := range []bool{false, true} {
		var body io.Reader = strings.NewReader(big)
		if chunked {
			body = io.MultiReader(body) // hides the length: sent chunked
		}
		req, err := http.NewRequest(http.MethodPost, e.rest.URL+"/v1/clusters/default/topics/t/records", body)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		got, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusRequestEntityTooLarge || !strings.Contains(string(got), `"code":8`) ||
			!strings.Contains(string(got), "max_request_body_size") {
			t.Errorf("chunked %v: %d %s", chunked, resp.StatusCode, got)
		}
	}
}
