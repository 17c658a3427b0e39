package config

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestBadConfigs(t *testing.T) {
	cases := map[string][]string{
		"unknown-key.bad.yaml": {`unknown-key.bad.yaml:8: routes[0].produce.reply_too: unknown key "reply_too": did you mean "reply_to"?`},
		"unknown-top.bad.yaml": {`unknown-top.bad.yaml:1: listener: unknown key "listener": did you mean "listeners"?`},
		"bad-method.bad.yaml":  {`bad-method.bad.yaml:5: routes[0].when[0].method: "/grpc.examples.echo.Echo/UnaryEcho" is not a method`},
		"bad-topic.bad.yaml":   {`bad-topic.bad.yaml:7: routes[0].produce.topic: topic "bad topic!" has ' '`},
		"bad-acks.bad.yaml":    {`bad-acks.bad.yaml:8: routes[0].produce.acks: "all" is not an acks mode: use none, leader_only or in_sync_replicas`},
		"bad-format.bad.yaml": {
			`bad-format.bad.yaml:8: routes[0].produce.format: "avro" is not a value format: use protobuf or json`,
			`bad-format.bad.yaml:10: routes[0].produce.json.field_names: "snake" is not a field naming: use json`,
			`bad-format.bad.yaml:15: routes[1].fetch.format: "xml" is not a value format`,
			`bad-format.bad.yaml:19: backends[0].format: "Json" is not a value format`,
		},
		"shutdown.bad.yaml":    {`shutdown.bad.yaml:7: shutdown.timeout: 30s does not exceed listeners.grpc.shutdown_timeout (30s), which it includes: leave time after it to flush, commit and leave the groups`},
		"bad-cluster.bad.yaml": {`bad-cluster.bad.yaml:3: clusters[0].brokers[0]: "localhost" is not host:port`, `bad-cluster.bad.yaml:10: routes[0].produce.cluster: no cluster is named "other"`},
		"kafka-api-dlq.bad.yaml": {
			`kafka-api-dlq.bad.yaml:4: kafka_api.consume.max_deliveries: needs kafka_api.consume.dead_letter_topic`,
			`kafka-api-dlq.bad.yaml:5: kafka_api.consume.start: "oldest" is not a position: use earliest or latest`,
		},
		"kafka-api-members.bad.yaml": {
			`kafka-api-members.bad.yaml:4: kafka_api.consume.max_group_members: 0 is out of range: use 1 to 10000`,
		},
		"kafka-api-dlq-name.bad.yaml": {
			`kafka-api-dlq-name.bad.yaml:5: kafka_api.consume.dead_letter_topic: "dead letters/{topic}" is not a Kafka topic name`,
		},
		"no-routes.bad.yaml":    {`no-routes.bad.yaml: routes: no routes, no backends, no sources and no kafka_api`},
		"bad-duration.bad.yaml": {`bad-duration.bad.yaml:8: routes[0].produce.timeout: cannot unmarshal !!str ` + "`soon`" + ` into time.Duration`},
		"ranges.bad.yaml": {
			`ranges.bad.yaml:3: clusters[0].dial_timeout: -1s is out of range: use 1ms to 5m`,
			`ranges.bad.yaml:5: clusters[0].producer.max_buffered_records: 20000000 is out of range: use 1 to 10000000`,
			`ranges.bad.yaml:7: embedded.partitions: 2000000000 is out of range: use 1 to 1000`,
			`ranges.bad.yaml:10: listeners.grpc.max_concurrent_streams: 4294967297 is out of range: use 1 to 1000000`,
			`ranges.bad.yaml:11: listeners.grpc.max_recv_message_size: 268435456 is out of range: use 1 to 134217728`,
			`ranges.bad.yaml:19: routes[0].fetch.message_id_field: 19500 is reserved by protobuf: use a field number outside 19000 to 19999`,
			`ranges.bad.yaml:20: routes[0].fetch.max_buffered_per_subscriber: -5 is out of range: use 1 to 1000000`,
			`ranges.bad.yaml:24: backends[0].session_timeout: 2h is out of range: use 1s to 1h`,
			`ranges.bad.yaml:26: backends[0].retry.max_attempts: 100000 is out of range: use 1 to 1000`,
			`ranges.bad.yaml:28: replies.lookback: 720h is out of range: use 1s to 168h`,
			`ranges.bad.yaml:31: kafka_api.consume.max_deliveries: -1 is out of range: use 0 to 1000`,
		},
		// Numbers too large for the field's Go type fail decoding, named by
		// their key rather than wrapped around into range.
		"overflow.bad.yaml":               {"overflow.bad.yaml:3: listeners.grpc.max_concurrent_streams: cannot unmarshal !!float `9999999...` into int"},
		"duration-overflow.bad.yaml":      {"duration-overflow.bad.yaml:8: routes[0].produce.timeout: cannot unmarshal !!str `9999999...` into time.Duration"},
		"missing-env.bad.yaml":            {`missing-env.bad.yaml:3: environment variable FERRY_TEST_UNSET_VARIABLE is not set`},
		"no-capability.bad.yaml":          {`no-capability.bad.yaml:4: routes[0]: has no capability: add produce or fetch`},
		"dup-cluster.bad.yaml":            {`dup-cluster.bad.yaml:3: clusters[1].name: cluster "a" is defined twice`},
		"reply-headers-conflict.bad.yaml": {`reply-headers-conflict.bad.yaml:14: routes[1].produce.header_names: reply topic "r" is also read by routes[0].produce`},
		"uppercase-metadata.bad.yaml":     {`uppercase-metadata.bad.yaml:6: routes[0].when[0].metadata.Tenant: gRPC metadata keys are lower case: write "tenant"`},
		"bad-yaml.bad.yaml":               {`bad-yaml.bad.yaml:2: did not find expected node content`},
		"bad-address.bad.yaml":            {`bad-address.bad.yaml:3: listeners.grpc.address: "localhost" is not host:port`},
	}
	files, err := filepath.Glob("testdata/*.bad.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(files) != len(cases) {
		t.Errorf("%d bad configs in testdata but %d cases: give every file its expected error", len(files), len(cases))
	}
	for _, f := range files {
		want, ok := cases[filepath.Base(f)]
		if !ok {
			t.Errorf("%s has no expected error", f)
			continue
		}
		t.Run(filepath.Base(f), func(t *testing.T) {
			_, err := Load(f)
			if err == nil {
				t.Fatalf("loaded without error; want %q", want)
			}
			var es Errors
			if !errors.As(err, &es) {
				t.Fatalf("error is %T, want config.Errors", err)
			}
			got := err.Error()
			for _, w := range want {
				if !strings.Contains(got, w) {
					t.Errorf("error\n%s\ndoes not contain\n%s", got, w)
				}
			}
			if len(es) != len(want) {
				t.Errorf("got %d errors, want %d:\n%s", len(es), len(want), got)
			}
		})
	}
}

func TestGoodConfig(t *testing.T) {
	t.Setenv("FERRY_TEST_UNSET_VARIABLE", "")
	cfg, err := Load("testdata/good-full.good.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := cfg.Clusters[0].Brokers, []string{"127.0.0.1:9092", "127.0.0.1:9093", "127.0.0.1:9094"}; !reflect.DeepEqual(got, want) {
		t.Errorf("brokers = %v, want %v", got, want)
	}
	p := cfg.Routes[0].Produce
	if got, want := p.Overrides, (Headers{{"zilla:identity", "test"}, {"b", "2"}}); !reflect.DeepEqual(got, want) {
		t.Errorf("overrides = %v, want %v (in file order)", got, want)
	}
	if p.Timeout != 5*time.Second || *p.OneWayAck || p.HeaderNames.MetaPrefix != "m:" || p.Acks != "leader_only" {
		t.Errorf("produce route decoded wrong: %+v", p)
	}
	for _, cl := range cfg.Clusters {
		if cl.Producer.BatchMaxBytes != 1048576+65536 {
			t.Errorf("cluster %s: batch limit %d for messages of 1048576, want 1114112", cl.Name, cl.Producer.BatchMaxBytes)
		}
	}
	if cfg.Replies.MaxBufferedPerCall != 16 || cfg.Embedded.Partitions != 3 || cfg.Log.Format != "json" {
		t.Errorf("decoded wrong: %+v", cfg)
	}
}

func TestDefaults(t *testing.T) {
	cfg, err := Parse("mem.yaml", []byte("protos: [{files: [a.proto]}]\nroutes: [{when: [{method: a.B/*}], produce: {topic: t, reply_to: r}}]\n"))
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Clusters) != 1 || cfg.Clusters[0].Name != "default" || len(cfg.Clusters[0].Brokers) != 0 {
		t.Errorf("default cluster = %+v, want one embedded cluster named default", cfg.Clusters)
	}
	p := cfg.Routes[0].Produce
	if p.Cluster != "default" || p.Acks != "in_sync_replicas" || !*p.OneWayAck || p.HeaderNames != DefaultHeaderNames() {
		t.Errorf("produce defaults = %+v", p)
	}
	// The producers' batch limit follows the request size limit, with
	// room for key and headers: 1 MiB, Kafka's default message.max.bytes
	// less its 12-byte log overhead.
	if got := cfg.Clusters[0].Producer.BatchMaxBytes; got != 1<<20 || cfg.Listeners.GRPC.MaxRecvMessageSize != 1<<20-64<<10 {
		t.Errorf("batch limit %d for messages of %d; want 1048576 for 983040", got, cfg.Listeners.GRPC.MaxRecvMessageSize)
	}
	if cfg.Routes[0].Name != "route-0" {
		t.Errorf("route name = %q", cfg.Routes[0].Name)
	}
}

// TestRangeEdges checks that each end of a range is accepted and the
// number beyond it refused, and that a 64-bit value that would wrap to a
// small 32-bit one (4294967297 is 1 as a uint32) is refused rather than
// passed on.
func TestRangeEdges(t *testing.T) {
	base := "protos: [{files: [a.proto]}]\nroutes: [{when: [{method: a.B/*}], produce: {topic: t}}]\n"
	for _, c := range []struct {
		yaml string
		want string // empty: valid
	}{
		{"embedded: {partitions: 1}", ""},
		{"embedded: {partitions: 1000}", ""},
		{"embedded: {partitions: 1001}", "embedded.partitions: 1001 is out of range: use 1 to 1000"},
		{"listeners: {grpc: {max_concurrent_streams: 1000000}}", ""},
		{"listeners: {grpc: {max_concurrent_streams: 4294967297}}", "listeners.grpc.max_concurrent_streams: 4294967297 is out of range: use 1 to 1000000"},
		{"listeners: {grpc: {max_concurrent_streams: 0}}", "listeners.grpc.max_concurrent_streams: 0 is out of range: use 1 to 1000000"},
		{"listeners: {grpc: {shutdown_timeout: 0s}}", ""},
		{"listeners: {grpc: {shutdown_timeout: 1h0m0.000000001s}}", "listeners.grpc.shutdown_timeout: 1h0m0.000000001s is out of range: use 0s to 1h"},
		{"replies: {max_cached_bytes: 1099511627777}", "replies.max_cached_bytes: 1099511627777 is out of range: use 1 to 1099511627776"},
	} {
		_, err := Parse("mem.yaml", []byte(c.yaml+"\n"+base))
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%s: %v", c.yaml, err)
		case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
			t.Errorf("%s: error %v, want %q", c.yaml, err, c.want)
		}
	}
}

func TestEnvExpansion(t *testing.T) {
	t.Setenv("FERRY_T_PORT", "7000")
	t.Setenv("FERRY_T_EMPTY", "")
	look := func(k string) (string, bool) { return os.LookupEnv(k) }
	for in, want := range map[string]string{
		"${FERRY_T_PORT}":            "7000",
		"a${FERRY_T_PORT}b":          "a7000b",
		"$${FERRY_T_PORT}":           "${FERRY_T_PORT}",
		"${FERRY_T_NOPE:-x:1}":       "x:1",
		"${FERRY_T_EMPTY:-fallback}": "fallback",
		"${FERRY_T_EMPTY}":           "",
		"price $5":                   "price $5",
	} {
		got, err := expand(in, look)
		if err != nil || got != want {
			t.Errorf("expand(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"${FERRY_T_NOPE}", "${", "${1X}", "${A-B}"} {
		if _, err := expand(in, look); err == nil {
			t.Errorf("expand(%q) did not fail", in)
		}
	}
	// An expanded plain scalar is typed from its new text.
	cfg, err := Parse("env.yaml", []byte("embedded:\n  port: ${FERRY_T_PORT}\nprotos: [{files: [a.proto]}]\nroutes: [{when: [{method: a.B/*}], produce: {topic: t}}]\n"))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Embedded.Port != 7000 {
		t.Errorf("port = %d, want 7000", cfg.Embedded.Port)
	}
}

func FuzzParse(f *testing.F) {
	files, _ := filepath.Glob("testdata/*.yaml")
	for _, fn := range files {
		b, err := os.ReadFile(fn)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		cfg, err := Parse("fuzz.yaml", b)
		if err == nil && cfg == nil {
			t.Fatal("nil config without error")
		}
		if err != nil {
			var es Errors
			if !errors.As(err, &es) || len(es) == 0 {
				t.Fatalf("error %v is not a non-empty config.Errors", err)
			}
		}
	})
}
