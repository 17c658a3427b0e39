package config

import (
	"strings"
	"testing"
	"time"
)

// groupYAML is a configuration with one group fetch route; group is the
// YAML of its group section, extra is appended to the fetch section.
func groupYAML(group, extra string) string {
	return `clusters: [{name: main}]
protos: [{files: [jobs.proto]}]
kafka_api:
  consume: {ack_timeout: 7s, max_deliveries: 3, dead_letter_topic: "{topic}.dlq"}
routes:
  - name: jobs
    when: [{method: example.Jobs/Take}]
    fetch:
      topic: jobs
      group: ` + group + `
` + extra
}

func TestFetchGroupDefaults(t *testing.T) {
	cfg, err := Parse("ferry.yaml", []byte(groupYAML("{id: workers}", "")))
	if err != nil {
		t.Fatal(err)
	}
	f := cfg.Routes[0].Fetch
	g := f.Group
	if g.Ack != GroupAckMethod || g.AckIDField != 1 || g.AckTimeout != 7*time.Second || *g.MaxDeliveries != 3 ||
		*g.DeadLetterTopic != "{topic}.dlq" || g.MaxUnackedPerStream != 100 {
		t.Fatalf("defaults: %+v", g)
	}
	c := g.Consume(f.Start)
	want := cfg.KafkaAPI.Consume
	if c != want {
		t.Fatalf("Consume() = %+v, want kafka_api.consume %+v", c, want)
	}

	cfg, err = Parse("ferry.yaml", []byte(groupYAML(`{id: workers, ack_timeout: 1s, max_deliveries: 0, dead_letter_topic: ""}`, "      start: latest\n")))
	if err != nil {
		t.Fatal(err)
	}
	f = cfg.Routes[0].Fetch
	c = f.Group.Consume(f.Start)
	if c.AckTimeout != time.Second || c.MaxDeliveries != 0 || c.DeadLetterTopic != "" || c.Start != "latest" || c.GroupInstanceID != "" {
		t.Fatalf("Consume() with the route's settings = %+v", c)
	}
}

func TestFetchGroupErrors(t *testing.T) {
	for _, tc := range []struct {
		group, extra string
		want         []string
	}{
		{"{ack: method}", "", []string{"ferry.yaml:10: routes[0].fetch.group.id: is required"}},
		{"{id: 'a b'}", "", []string{"routes[0].fetch.group.id: has a space"}},
		{"{id: w, ack: manual}", "", []string{`routes[0].fetch.group.ack: "manual" is not an ack mode`}},
		{"{id: w, ack_id_field: 19001}", "", []string{"routes[0].fetch.group.ack_id_field: 19001 is reserved by protobuf"}},
		{"{id: w, ack_id_field: -1}", "", []string{"routes[0].fetch.group.ack_id_field: -1 is out of range: use 1 to 536870911"}},
		{"{id: w, max_unacked_per_stream: -1}", "", []string{"routes[0].fetch.group.max_unacked_per_stream: -1 is out of range"}},
		{"{id: w, max_deliveries: 2000}", "", []string{"routes[0].fetch.group.max_deliveries: 2000 is out of range: use 0 to 1000"}},
		{"{id: w, dead_letter_topic: ''}", "", []string{"routes[0].fetch.group.max_deliveries: needs dead_letter_topic"}},
		{"{id: w, dead_letter_topic: '', max_deliveries: 0}", "", nil},
		{"{id: w, max_deliveries: 0}", "", []string{"routes[0].fetch.group.dead_letter_topic: is never used"}},
		{"{id: w, dead_letter_topic: 'dead letters'}", "", []string{`routes[0].fetch.group.dead_letter_topic: "dead letters" with {topic} and {group} replaced`}},
		{"{id: w}", "      start: 2026-01-02T15:04:05Z\n", []string{"routes[0].fetch.start: a group starts"}},
		{"{id: w}", "      filters: [{key: a}]\n", []string{"routes[0].fetch.group: a group shares the topic's records"}},
		{"{id: w}", "      prewarm: true\n", []string{"routes[0].fetch.prewarm: a group reads the topic as a consumer group"}},
	} {
		_, err := Parse("ferry.yaml", []byte(groupYAML(tc.group, tc.extra)))
		if len(tc.want) == 0 {
			if err != nil {
				t.Errorf("group %s: %v", tc.group, err)
			}
			continue
		}
		if err == nil {
			t.Errorf("group %s %s: no error, want %q", tc.group, tc.extra, tc.want)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("group %s %s: %v\nwant %q", tc.group, tc.extra, err, w)
			}
		}
	}
}
