package config

import (
	"errors"
	"strings"
	"time"
)

// FetchGroup makes a fetch route stream as a member of a Kafka consumer
// group: each record goes to one caller of the route rather than to every
// caller, and is delivered again until acknowledged (at least once), to
// the dead-letter topic after max_deliveries. The group engine is the Kafka
// API's (kafka_api.consume), with the settings below in place of its own.
type FetchGroup struct {
	// ID is the consumer group id.
	ID string `yaml:"id"`
	// Ack is how a record counts as acknowledged: "method" when the caller
	// sends its message id to an ack method of the route (a unary method
	// its conditions name), "auto" once Ferry sent it on the caller's
	// stream. Default: method.
	Ack string `yaml:"ack"`
	// AckIDField is the field number of the message ids (bytes, repeated
	// or not) in the ack method's request. Default: 1.
	AckIDField int `yaml:"ack_id_field"`
	// AckTimeout is how long a record sent to a caller waits for its
	// acknowledgement before it is delivered again. Default:
	// kafka_api.consume.ack_timeout.
	AckTimeout time.Duration `yaml:"ack_timeout"`
	// MaxDeliveries is how often a record is delivered before it goes to
	// DeadLetterTopic; 0 delivers it until acknowledged. Default:
	// kafka_api.consume.max_deliveries.
	MaxDeliveries *int `yaml:"max_deliveries"`
	// DeadLetterTopic receives the records delivered MaxDeliveries times;
	// "{topic}" and "{group}" are replaced. Default:
	// kafka_api.consume.dead_letter_topic.
	DeadLetterTopic *string `yaml:"dead_letter_topic"`
	// MaxUnackedPerStream bounds the records sent on one call and not yet
	// acknowledged: the stream waits for acks beyond it. Default: 100.
	MaxUnackedPerStream int `yaml:"max_unacked_per_stream"`

	// consume is kafka_api.consume, which the unset keys take their
	// values from (set with the defaults).
	consume APIConsume
}

// Ack modes of a group fetch route.
const (
	GroupAckMethod = "method"
	GroupAckAuto   = "auto"
)

// fillGroup sets the unset keys of f's group, if it has one, from
// kafka_api.consume (consume) and Ferry's defaults.
func (f *FetchRoute) fillGroup(consume APIConsume) {
	g := f.Group
	if g == nil {
		return
	}
	g.consume = consume
	setDefault(&g.Ack, GroupAckMethod)
	if g.AckIDField == 0 {
		g.AckIDField = 1
	}
	if g.AckTimeout == 0 {
		g.AckTimeout = consume.AckTimeout
	}
	if g.MaxDeliveries == nil {
		n := consume.MaxDeliveries
		g.MaxDeliveries = &n
	}
	if g.DeadLetterTopic == nil {
		t := consume.DeadLetterTopic
		g.DeadLetterTopic = &t
	}
	if g.MaxUnackedPerStream == 0 {
		g.MaxUnackedPerStream = 100
	}
}

// Consume returns the consume configuration the route's group member runs
// with: kafka_api.consume with the group's own settings, starting where
// the route starts (fetch.start) when the group has no committed offsets.
// Its members are dynamic (no group_instance_id): a static id is one
// member per instance, which the Kafka API's member of the same group
// could fence.
func (g *FetchGroup) Consume(start string) APIConsume {
	c := g.consume
	c.Start = start
	c.AckTimeout = g.AckTimeout
	if g.MaxDeliveries != nil {
		c.MaxDeliveries = *g.MaxDeliveries
	}
	if g.DeadLetterTopic != nil {
		c.DeadLetterTopic = *g.DeadLetterTopic
	}
	c.GroupInstanceID = ""
	return c
}

// fetchGroup checks the group section of a fetch route, found at p (the
// route's fetch section).
func (v *validator) fetchGroup(p string, f *FetchRoute) {
	g := f.Group
	if g == nil {
		return
	}
	p += ".group"
	if len(f.Filters) > 0 {
		v.errf(p, "a group shares the topic's records among its callers, which filters cannot select per caller: remove filters or group")
	}
	if f.Prewarm {
		v.errf(strings.TrimSuffix(p, ".group")+".prewarm", "a group reads the topic as a consumer group, not through the topic's cache, which prewarm fills: remove prewarm or group")
	}
	switch f.Start {
	case "earliest", "latest":
	default:
		v.errf(strings.TrimSuffix(p, ".group")+".start", "a group starts where it has no committed offsets at earliest or latest, not at a time: use one of those")
	}
	if err := checkGroupID(g.ID); err != nil {
		v.errf(p+".id", "%v", err)
	}
	switch g.Ack {
	case GroupAckMethod, GroupAckAuto:
	default:
		v.errf(p+".ack", "%q is not an ack mode: use method (the caller acknowledges through an ack method of the route) or auto (a record sent counts as acknowledged)", g.Ack)
	}
	if g.AckIDField >= 19000 && g.AckIDField <= 19999 {
		v.errf(p+".ack_id_field", "%d is reserved by protobuf: use a field number outside 19000 to 19999", g.AckIDField)
	}
	deliveries, dlt := *g.MaxDeliveries, *g.DeadLetterTopic
	switch {
	case deliveries > 0 && dlt == "":
		v.errf(p+".max_deliveries", "needs dead_letter_topic (here or in kafka_api.consume), where records go after %d deliveries", deliveries)
	case deliveries == 0 && dlt != "":
		v.errf(p+".dead_letter_topic", "is never used: set max_deliveries too (here or in kafka_api.consume)")
	}
	if dlt != "" {
		if err := CheckTopic(strings.NewReplacer("{topic}", f.Topic, "{group}", g.ID).Replace(dlt)); err != nil {
			v.errf(p+".dead_letter_topic", "%q with {topic} and {group} replaced: %v", dlt, err)
		}
	}
}

// checkGroupID checks a consumer group id: Kafka takes any string, but
// Ferry keeps to printable ones that logs and metrics show as they are.
func checkGroupID(id string) error {
	switch {
	case id == "":
		return errors.New("is required: the consumer group id the route's callers share")
	case len(id) > 249:
		return errors.New("is longer than 249 characters")
	}
	for _, r := range id {
		if r < 0x21 || r == 0x7f {
			return errors.New("has a space or control character: use printable characters only")
		}
	}
	return nil
}
