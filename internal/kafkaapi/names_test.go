package kafkaapi

import (
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/ferryproxy/ferry/internal/testkit"
)

// badTopics are names Kafka does not allow.
var badTopics = []string{
	"with space", "a/b", ".", "..", "caf\u00e9", "tab\there", "semi;colon", "", strings.Repeat("x", 250), "bad\xff",
}

// TestEngineRefusesBadTopicNames checks that every operation taking a topic
// refuses a name Kafka does not allow with INVALID_ARGUMENT naming Kafka's
// rule, and that nothing is created.
func TestEngineRefusesBadTopicNames(t *testing.T) {
	s := startEngine(t, engineConfig())
	ctx := testContext(t)
	group := testkit.Name(t, "group")
	at := time.Now()
	for _, topic := range badTopics {
		ops := map[string]func() error{
			"Produce": func() error {
				_, err := s.Produce(ctx, "", topic, Record{Value: []byte("x"), Partition: -1})
				return err
			},
			"Open": func() error {
				ss, err := s.Open(ctx, "", group, topic)
				if err == nil {
					ss.Close(true)
				}
				return err
			},
			"Ack":           func() error { return s.Ack(ctx, "", group, topic, 0, 0) },
			"GetOffsets":    func() error { _, err := s.GetOffsets(ctx, "", group, topic); return err },
			"SetOffsets":    func() error { _, err := s.SetOffsets(ctx, "", group, topic, []OffsetTarget{{}}); return err },
			"ResetOffsets":  func() error { _, err := s.ResetOffsets(ctx, "", group, topic, at, ""); return err },
			"DescribeTopic": func() error { _, err := s.DescribeTopic(ctx, "", topic, true); return err },
			"TopicConsumers": func() error {
				_, err := s.TopicConsumers(ctx, "", topic, "")
				return err
			},
		}
		for name, op := range ops {
			want := "[a-zA-Z0-9._-]"
			if topic == "" {
				want = "topic is required"
			}
			wantCode(t, name+" "+strings.ToValidUTF8(topic[:min(len(topic), 20)], "?"), op(), codes.InvalidArgument, want)
		}
	}
	topics, err := s.ListTopics(ctx, "", true)
	if err != nil {
		t.Fatal(err)
	}
	for _, topic := range badTopics {
		if slices.Contains(topics, topic) {
			t.Errorf("topic %q was created", topic)
		}
	}
	// The group is checked too, and an empty one is not a Kafka group.
	topic := kit.Topic(t, 1, nil)
	for name, err := range map[string]error{
		"Open":        func() error { _, err := s.Open(ctx, "", "", topic); return err }(),
		"GetOffsets":  func() error { _, err := s.GetOffsets(ctx, "", "", topic); return err }(),
		"Describe":    func() error { _, err := s.DescribeGroup(ctx, "", ""); return err }(),
		"ResetOffset": func() error { _, err := s.ResetOffsets(ctx, "", "", topic, at, ""); return err }(),
	} {
		wantCode(t, name, err, codes.InvalidArgument, "group is required")
	}
}

// TestEngineRefusesGroupMakingBadDeadLetterTopic: a group whose name makes
// the dead-letter topic illegal is refused when it would consume.
func TestEngineRefusesGroupMakingBadDeadLetterTopic(t *testing.T) {
	cfg := engineConfig()
	cfg.Consume.MaxDeliveries = 2
	cfg.Consume.DeadLetterTopic = "{topic}.{group}.dead"
	s := startEngine(t, cfg)
	topic := kit.Topic(t, 1, nil)
	_, err := s.Open(testContext(t), "", "my group", topic)
	wantCode(t, "Open", err, codes.InvalidArgument, `group "my group"`, "dead_letter_topic", "[a-zA-Z0-9._-]")
}

// legalTopic is Kafka's rule as a regular expression, the model
// FuzzCheckTopic compares CheckTopic with.
var legalTopic = regexp.MustCompile(`^[a-zA-Z0-9._-]{1,249}$`)

func FuzzCheckTopic(f *testing.F) {
	for _, s := range append(badTopics, "ok", "a.b_c-D9", strings.Repeat("y", 249)) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, topic string) {
		err := CheckTopic(topic)
		want := legalTopic.MatchString(topic) && topic != "." && topic != ".."
		if (err == nil) != want {
			t.Fatalf("CheckTopic(%q) = %v, want legal %v", topic, err, want)
		}
		if err != nil {
			st, _ := status.FromError(err)
			if st.Code() != codes.InvalidArgument || !strings.Contains(st.Message(), topicRule) {
				t.Fatalf("CheckTopic(%q) = %v: not INVALID_ARGUMENT with the rule", topic, err)
			}
		}
	})
}
