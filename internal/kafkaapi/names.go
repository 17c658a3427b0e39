package kafkaapi

import (
	"fmt"
	"unicode/utf8"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// maxTopicLen is Kafka's limit on a topic name's length.
const maxTopicLen = 249

// topicRule is Kafka's rule for topic names, as every refusal states it.
const topicRule = "Kafka topic names are 1 to 249 characters from [a-zA-Z0-9._-], and not \".\" or \"..\""

// CheckTopic refuses, with INVALID_ARGUMENT naming Kafka's rule, a topic
// name Kafka does not allow. Every operation that takes a topic checks it
// before anything reaches Kafka: the embedded broker would create such a
// topic, and a real one answers with errors that look retriable.
func CheckTopic(topic string) error {
	why := ""
	switch {
	case topic == "":
		why = "a topic is required"
	case topic == "." || topic == "..":
		why = fmt.Sprintf("topic %q is not allowed", topic)
	case len(topic) > maxTopicLen:
		return status.Errorf(codes.InvalidArgument, "the topic name is %d characters long: %s", len(topic), topicRule)
	default:
		// Bytes, not runes: anything outside ASCII is refused, and so
		// is a name that is not even UTF-8.
		for i := 0; i < len(topic); i++ {
			if !topicChar(topic[i]) {
				r, _ := utf8.DecodeRuneInString(topic[i:])
				why = fmt.Sprintf("topic %q has %q at byte %d", topic, r, i)
				break
			}
		}
	}
	if why == "" {
		return nil
	}
	return status.Errorf(codes.InvalidArgument, "%s: %s", why, topicRule)
}

// topicChar reports whether c may appear in a topic name.
func topicChar(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-'
}

// CheckGroup refuses a group name Kafka does not allow: an empty one (any
// other string is a valid group id).
func CheckGroup(group string) error {
	if group == "" {
		return status.Error(codes.InvalidArgument, "a group is required: Kafka group ids are not empty")
	}
	return nil
}

// checkTopicGroup checks the names every consuming call needs.
func checkTopicGroup(topic, group string) error {
	if err := CheckTopic(topic); err != nil {
		return err
	}
	return CheckGroup(group)
}
