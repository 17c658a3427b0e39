package pixy

import (
	"bytes"
	"compress/gzip"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

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

// TestRESTGzipBody: a gzip body is the message decompressed, and the body
// limit holds for what it expands to.
func TestRESTGzipBody(t *testing.T) {
	f := newFixture(t)
	topic, group := newTopic(t, nil), testkit.Name(t, "group")
	path := "/topics/" + topic + "/messages?sync"
	code, body := f.httpDo(t, http.MethodPost, path, "text/plain", bytes.NewReader(gzipped(t, strings.Repeat("x", 64<<20))), "Content-Encoding", "gzip")
	wantError(t, "a gzip body expanding past the limit", code, body, http.StatusRequestEntityTooLarge, "decompressed")
	code, body = f.httpDo(t, http.MethodPost, path, "text/plain", bytes.NewReader([]byte("x")), "Content-Encoding", "br")
	wantError(t, "a br body", code, body, http.StatusUnsupportedMediaType, "br")
	code, body = f.httpDo(t, http.MethodPost, path+"&key=k", "text/plain", bytes.NewReader(gzipped(t, "zipped")), "Content-Encoding", "gzip")
	if code != http.StatusOK {
		t.Fatalf("a small gzip body: %d %s", code, body)
	}
	m := f.restConsume(t, "/topics/"+topic+"/messages?group="+group)
	if m.Value == nil || *m.Value != b64("zipped") {
		t.Fatalf("consumed %v, want the decompressed message", m.Value)
	}
}

// TestRESTSetOffsetsStrict: a misspelt field in the offsets is 400 naming
// it (it would otherwise set offset 0), an offset past the end is 400
// naming partition, offset and range, and GET's answer can be sent back.
func TestRESTSetOffsetsStrict(t *testing.T) {
	f := newFixture(t)
	topic, group := newTopic(t, nil), testkit.Name(t, "group")
	produceTo(t, topic, 0, "a", "b", "c")
	path := "/topics/" + topic + "/offsets?group=" + group
	code, body := f.httpDo(t, http.MethodPost, path, "application/json", strings.NewReader(`[{"partition":0,"ofset":2}]`))
	wantError(t, "a misspelt field", code, body, http.StatusBadRequest, `"ofset"`)
	code, body = f.httpDo(t, http.MethodPost, path, "application/json", strings.NewReader(`[{"partition":0,"offset":100}]`))
	wantError(t, "past the end", code, body, http.StatusBadRequest, "offset 100 of partition 0 is outside 0 to 3")
	code, body = f.httpDo(t, http.MethodPost, path, "application/json", strings.NewReader(`[{"partition":0,"begin":0,"end":3,"count":3,"offset":2,"lag":1}]`))
	if code != http.StatusOK {
		t.Fatalf("GET's shape sent back: %d %s", code, body)
	}
}

// TestRESTBadTopicNames: a topic Kafka does not allow is 400 stating the
// rule on every path, and nothing is created.
func TestRESTBadTopicNames(t *testing.T) {
	f := newFixture(t)
	group := testkit.Name(t, "group")
	for _, topic := range []string{"a b", "caf\u00e9", "semi;colon", strings.Repeat("x", 250)} {
		tp := "/topics/" + url.PathEscape(topic)
		for _, r := range []struct{ method, path, ct, body string }{
			{http.MethodPost, tp + "/messages?sync", "text/plain", "x"},
			{http.MethodPost, tp + "/messages", "text/plain", "x"},
			{http.MethodGet, tp + "/messages?group=" + group, "", ""},
			{http.MethodPost, tp + "/acks?group=" + group + "&partition=0&offset=0", "", ""},
			{http.MethodGet, tp + "/offsets?group=" + group, "", ""},
			{http.MethodPost, tp + "/offsets?group=" + group, "application/json", `[{"partition":0,"offset":0}]`},
			{http.MethodGet, tp + "/consumers", "", ""},
			{http.MethodGet, tp, "", ""},
		} {
			var body io.Reader
			if r.body != "" {
				body = strings.NewReader(r.body)
			}
			code, got := f.httpDo(t, r.method, r.path, r.ct, body)
			wantError(t, r.method+" "+r.path[:min(len(r.path), 40)], code, got, http.StatusBadRequest, "[a-zA-Z0-9._-]")
		}
	}
	code, got := f.httpDo(t, http.MethodGet, "/topics", "", nil)
	if code != http.StatusOK || strings.ContainsAny(string(got), " ;\u00e9") {
		t.Fatalf("topics after the bad names: %d %s", code, got)
	}
}

// TestRESTTooManyGroupMembers: a poll that needs a group member beyond
// max_group_members is 429 naming the setting.
func TestRESTTooManyGroupMembers(t *testing.T) {
	f := newFixture(t, func(c *config.KafkaAPI) {
		c.Consume.MaxGroupMembers = 1
		c.Consume.LongPollTimeout = 10 * time.Millisecond
	})
	topic := newTopic(t, nil)
	code, body := f.httpDo(t, http.MethodGet, "/topics/"+topic+"/messages?group="+testkit.Name(t, "a"), "", nil)
	if code != http.StatusRequestTimeout {
		t.Fatalf("the first group: %d %s", code, body)
	}
	code, body = f.httpDo(t, http.MethodGet, "/topics/"+topic+"/messages?group="+testkit.Name(t, "b"), "", nil)
	wantError(t, "a second group", code, body, http.StatusTooManyRequests, "max_group_members")
}
