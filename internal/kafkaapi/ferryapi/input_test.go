package ferryapi

import (
	"bytes"
	"compress/gzip"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"

	kafkav1 "github.com/ferryproxy/ferry/api/ferry/kafka/v1"
	"github.com/ferryproxy/ferry/internal/config"
	"github.com/ferryproxy/ferry/internal/testkit"
)

// gzipped returns s compressed with gzip.
func gzipped(t testing.TB, s string) []byte {
	t.Helper()
	var b bytes.Buffer
	zw := gzip.NewWriter(&b)
	if _, err := io.WriteString(zw, s); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// postEncoded posts body with a Content-Encoding and returns the status and
// answer.
func (e *env) postEncoded(path, encoding string, body []byte) (int, string) {
	e.t.Helper()
	req, err := http.NewRequest(http.MethodPost, e.rest.URL+path, bytes.NewReader(body))
	if err != nil {
		e.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Content-Encoding", encoding)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	got, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(got)
}

// TestRESTGzipBodyLimit: the body limit (1 MiB here) holds for what a gzip
// body expands to; a gzip body within it is decoded; other encodings are
// refused.
func TestRESTGzipBodyLimit(t *testing.T) {
	e := newEnv(t)
	topic, group := kit.Topic(t, 1, nil), testkit.Name(t, "group")
	records := "/v1/clusters/default/topics/" + topic + "/records"

	bomb := gzipped(t, `{"valueText":"`+strings.Repeat("x", 64<<20)+`"}`) // 64 MiB in about 64 KiB
	code, got := e.postEncoded(records, "gzip", bomb)
	if code != http.StatusRequestEntityTooLarge || !strings.Contains(got, `"code":8`) || !strings.Contains(got, "decompressed") {
		t.Fatalf("a gzip body expanding past the limit: %d %s", code, got)
	}
	if code, got := e.postEncoded(records, "gzip", gzipped(t, `{"valueText":"zipped"}`)); code != http.StatusOK {
		t.Fatalf("a small gzip body: %d %s", code, got)
	}
	if code, got := e.postEncoded(records, "br", []byte(`{"valueText":"x"}`)); code != http.StatusUnsupportedMediaType || !strings.Contains(got, `"code":3`) {
		t.Fatalf("a br body: %d %s", code, got)
	}
	if code, got := e.postEncoded(records, "gzip", []byte(`{"valueText":"not gzip"}`)); code != http.StatusBadRequest || !strings.Contains(got, "gzip") {
		t.Fatalf("a body that is not gzip: %d %s", code, got)
	}
	var poll kafkav1.PollResponse
	e.restDo(http.MethodPost, "/v1/clusters/default/groups/"+group+"/topics/"+topic+"/poll", `{"maxMessages":10,"valueFormat":"VALUE_FORMAT_TEXT"}`, 200, &poll)
	if len(poll.GetMessages()) != 1 || poll.GetMessages()[0].GetValueText() != "zipped" {
		t.Fatalf("polled %v, want the one zipped record", poll.GetMessages())
	}
}

// TestRESTUnknownField: a field the request does not have is 400 naming
// it, and nothing is written (it used to be dropped: {"valueTxt":"x"}
// wrote a null value).
func TestRESTUnknownField(t *testing.T) {
	e := newEnv(t)
	topic, group := kit.Topic(t, 1, nil), testkit.Name(t, "group")
	e.restError(http.MethodPost, "/v1/clusters/default/topics/"+topic+"/records", `{"valueTxt":"x"}`, 400, 3, `"valueTxt"`)
	groupTopic := "/v1/clusters/default/groups/" + group + "/topics/" + topic
	e.restError(http.MethodPut, groupTopic+"/offsets", `{"offsets":{"partitions":[{"partition":0,"ofset":"1"}]}}`, 400, 3, `"ofset"`)
	var offs kafkav1.GetOffsetsResponse
	e.restDo(http.MethodGet, groupTopic+"/offsets", "", 200, &offs)
	if end := offs.GetPartitions()[0].GetEnd(); end != 0 {
		t.Fatalf("the topic has %d records, want none", end)
	}
}

// TestRESTBadTopicNames: a topic Kafka does not allow is 400 stating the
// rule on every path, and nothing is created.
func TestRESTBadTopicNames(t *testing.T) {
	e := newEnv(t)
	group := testkit.Name(t, "group")
	for _, topic := range []string{"a b", "caf\u00e9", "semi;colon", strings.Repeat("x", 250)} {
		tp := url.PathEscape(topic)
		groupTopic := "/v1/clusters/default/groups/" + group + "/topics/" + tp
		for _, r := range []struct{ method, path, body string }{
			{http.MethodPost, "/v1/clusters/default/topics/" + tp + "/records", `{"valueText":"x"}`},
			{http.MethodPost, groupTopic + "/poll", `{}`},
			{http.MethodPost, groupTopic + "/acks", `{"acks":[{"partition":0,"offset":"0"}]}`},
			{http.MethodGet, groupTopic + "/offsets", ""},
			{http.MethodPut, groupTopic + "/offsets", `{"position":"earliest"}`},
			{http.MethodGet, "/v1/clusters/default/topics/" + tp, ""},
			{http.MethodGet, groupTopic + "/messages", ""},
		} {
			e.restError(r.method, r.path, r.body, 400, 3, "[a-zA-Z0-9._-]")
		}
	}
	var list kafkav1.ListTopicsResponse
	e.restDo(http.MethodGet, "/v1/clusters/default/topics", "", 200, &list)
	for _, name := range list.GetTopics() {
		if strings.ContainsAny(name, " ;\u00e9") {
			t.Errorf("topic %q was created", name)
		}
	}
}

// TestRESTSetOffsetsOutOfRange: an offset past a partition's end is 400
// naming partition, offset and range.
func TestRESTSetOffsetsOutOfRange(t *testing.T) {
	e := newEnv(t)
	topic, group := kit.Topic(t, 1, nil), testkit.Name(t, "group")
	e.produce(testCtx(t), topic, 0, "v", 3)
	e.restError(http.MethodPut, "/v1/clusters/default/groups/"+group+"/topics/"+topic+"/offsets",
		`{"offsets":{"partitions":[{"partition":0,"offset":"100"}]}}`, 400, 3, "offset 100 of partition 0 is outside 0 to 3")
}

// TestRESTUnknownQueryParameter: a query parameter the request does not
// have is 400 naming it, as a body field is.
func TestRESTUnknownQueryParameter(t *testing.T) {
	e := newEnv(t)
	topic, group := kit.Topic(t, 1, nil), testkit.Name(t, "group")
	e.restError(http.MethodGet, "/v1/clusters/default/groups/"+group+"/topics/"+topic+"/offsets?bogus=1", "", 400, 3, "bogus")
}

// TestRESTTooManyGroupMembers: a poll that needs a group member beyond
// max_group_members is 429 with the JSON error naming the setting.
func TestRESTTooManyGroupMembers(t *testing.T) {
	e := newEnv(t, withConfig(func(c *config.KafkaAPI) { c.Consume.MaxGroupMembers = 1 }))
	topic := kit.Topic(t, 1, nil)
	poll := func(group string) string {
		return "/v1/clusters/default/groups/" + group + "/topics/" + topic + "/poll"
	}
	e.restDo(http.MethodPost, poll(testkit.Name(t, "a")), `{"timeout":"0s"}`, 200, nil)
	e.restError(http.MethodPost, poll(testkit.Name(t, "b")), `{"timeout":"0s"}`, 429, 8, "max_group_members")
}
