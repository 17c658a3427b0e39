package config

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Source is the gRPC → Kafka ingestion capability: Ferry opens a
// server-streaming call (or polls a unary one) on a gRPC server and writes
// every response to a topic, reading from the stream only as fast as Kafka
// acknowledges the records. With a cursor it resumes where the topic ends
// after a restart, a reconnect or a move to another Ferry instance.
type Source struct {
	// Name identifies the source: in the ferry-source header of its
	// records, in metrics and logs, and in the name of its coordination
	// topic. Letters, digits, '.', '_' and '-'.
	Name string `yaml:"name"`
	// Cluster names the Kafka cluster. Default: the first cluster.
	Cluster string `yaml:"cluster"`
	// Topic is where the records go.
	Topic string `yaml:"topic"`
	// Target is the gRPC server's address, in grpc-go's target syntax.
	Target string `yaml:"target"`
	// TLS secures the connection to the server. Off: plaintext.
	TLS ClientTLS `yaml:"tls"`
	// Metadata is static gRPC metadata sent with the call, such as an API
	// key. Values are never logged.
	Metadata map[string]string `yaml:"metadata"`
	// Method is the server-streaming (or unary) method to call, as
	// "package.Service/Method".
	Method string `yaml:"method"`
	// Request is the request message, written as JSON (protojson) or as a
	// YAML mapping of the same shape. Default: the empty message.
	Request JSONText `yaml:"request"`
	// Value is how a response becomes a record value.
	Value SourceValue `yaml:"value"`
	// Key is the record key, a template of response fields such as
	// "{symbol}" or "{order.region}-{order.id}". Empty: no key.
	Key string `yaml:"key"`
	// Headers are extra record headers, each a template of response fields.
	Headers Headers `yaml:"headers"`
	// MetadataHeaders writes the stream's response header metadata on
	// every record, as headers named meta:<key>.
	MetadataHeaders bool `yaml:"metadata_headers"`
	// TimestampField names a response field that is the record's
	// timestamp: a google.protobuf.Timestamp, or an integer of
	// milliseconds since the epoch. Empty: the time Ferry read it.
	TimestampField string `yaml:"timestamp_field"`
	// Cursor makes the source resume where it stopped.
	Cursor SourceCursor `yaml:"cursor"`
	// Reconnect is how the source opens the call again after it ended.
	Reconnect SourceReconnect `yaml:"reconnect"`
	// IdleTimeout ends a call that delivered nothing for this long, and
	// opens it again. 0: no limit.
	IdleTimeout time.Duration `yaml:"idle_timeout"`
	// Keepalive pings the server on an idle connection. Off by default:
	// servers refuse pings more often than every 5 minutes unless their
	// keepalive policy allows them.
	Keepalive SourceKeepalive `yaml:"keepalive"`
	// MaxInFlight bounds the records read from the stream and not yet
	// acknowledged by Kafka; past it Ferry stops reading, and gRPC's flow
	// control holds the server back. It also bounds the records written
	// twice after a crash.
	MaxInFlight int `yaml:"max_in_flight"`
	// MaxMessageSize bounds one response, in bytes.
	MaxMessageSize int `yaml:"max_message_size"`
}

// SourceValue is how a response becomes a record value.
type SourceValue struct {
	// Format is protobuf (the response's bytes as the server sent them) or
	// json (protojson).
	Format string `yaml:"format"`
	// UseProtoNames writes JSON field names as in the .proto
	// (snake_case) rather than lowerCamelCase.
	UseProtoNames bool `yaml:"use_proto_names"`
	// EmitDefaults writes fields that hold their default value too.
	EmitDefaults bool `yaml:"emit_defaults"`
}

// SourceCursor names the response field that tells where the stream is,
// and the request field that asks the server to go on from there.
type SourceCursor struct {
	// Field is the response field path, e.g. seq or position.token: an
	// integer, a string, bytes or a google.protobuf.Timestamp.
	Field string `yaml:"field"`
	// RequestField is the request field the cursor goes back into when
	// the call is opened again. Default: the same path as Field.
	RequestField string `yaml:"request_field"`
	// Increment is added to an integer cursor before it goes into the
	// request: 1 when the server's start is the first value it sends
	// (no record is written twice), 0 when it sends the value after it.
	Increment int64 `yaml:"increment"`
}

// Enabled reports whether the source has a cursor.
func (c SourceCursor) Enabled() bool { return c.Field != "" }

// SourceReconnect is the backoff between calls: exponential with full
// jitter, the attempt count reset once a call stayed healthy.
type SourceReconnect struct {
	// InitialBackoff is the largest wait before the first reconnect; each
	// later wait may be twice as long, up to MaxBackoff.
	InitialBackoff time.Duration `yaml:"initial_backoff"`
	// MaxBackoff caps the wait between attempts.
	MaxBackoff time.Duration `yaml:"max_backoff"`
	// MaxAttempts stops the source after this many failed calls in a row.
	// 0: never stop.
	MaxAttempts int `yaml:"max_attempts"`
	// ResetAfter is how long a call must run to count as healthy, which
	// resets the attempt count.
	ResetAfter time.Duration `yaml:"reset_after"`
	// ReopenDelay is the wait before opening a call again after the server
	// ended it with OK: the polling interval of a unary method.
	ReopenDelay time.Duration `yaml:"reopen_delay"`
	// StopOn are the gRPC codes that stop the source rather than retry.
	StopOn []string `yaml:"stop_on"`
}

// SourceKeepalive configures gRPC keepalive pings to the server.
type SourceKeepalive struct {
	// Time is the idle time after which Ferry pings. 0: no pings.
	Time time.Duration `yaml:"time"`
	// Timeout is how long a ping may go unanswered before the connection
	// is closed.
	Timeout time.Duration `yaml:"timeout"`
}

// Ingest configures how the sources of several Ferry instances share the
// work: every instance joins one Kafka consumer group, and each source runs
// on the member that owns its coordination topic.
type Ingest struct {
	// Cluster is the Kafka cluster of the group. Default: the first one.
	Cluster string `yaml:"cluster"`
	// GroupID is the consumer group. Every instance that runs the same
	// sources uses the same one.
	GroupID string `yaml:"group_id"`
	// TopicPrefix starts the name of each source's coordination topic,
	// which Ferry creates with one partition and writes nothing to.
	TopicPrefix string `yaml:"topic_prefix"`
	// SessionTimeout is how long an instance that stopped without leaving
	// keeps its sources: the longest a crashed instance's sources stay
	// down.
	SessionTimeout time.Duration `yaml:"session_timeout"`
	// DrainTimeout bounds how long a source that stops (shutdown, moved to
	// another instance) waits for Kafka to acknowledge its records.
	DrainTimeout time.Duration `yaml:"drain_timeout"`
}

// JSONText is JSON written in the configuration as a string, or as YAML
// that is turned into JSON.
type JSONText string

// UnmarshalYAML takes a string as JSON text and anything else as a YAML
// value to write as JSON.
func (j *JSONText) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode && n.Tag == "!!str" {
		*j = JSONText(n.Value)
		return nil
	}
	var v any
	if err := n.Decode(&v); err != nil {
		return err
	}
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("line %d: cannot be written as JSON: %v", n.Line, err)
	}
	*j = JSONText(b)
	return nil
}

// permanentCodes are the gRPC codes that stop a source by default: the
// server will answer the same again, however often it is asked.
var permanentCodes = []string{"UNIMPLEMENTED", "INVALID_ARGUMENT", "PERMISSION_DENIED"}

// grpcCodes are the names of gRPC's codes, as grpc-go writes them upper
// case (OK is not an error).
var grpcCodes = map[string]bool{
	"CANCELED": true, "UNKNOWN": true, "INVALID_ARGUMENT": true, "DEADLINE_EXCEEDED": true,
	"NOT_FOUND": true, "ALREADY_EXISTS": true, "PERMISSION_DENIED": true, "RESOURCE_EXHAUSTED": true,
	"FAILED_PRECONDITION": true, "ABORTED": true, "OUT_OF_RANGE": true, "UNIMPLEMENTED": true,
	"INTERNAL": true, "UNAVAILABLE": true, "DATA_LOSS": true, "UNAUTHENTICATED": true,
}

// applySourceDefaults fills each source's unset keys and the ingest
// section's.
func (c *Config) applySourceDefaults() {
	setDefault(&c.Ingest.Cluster, c.Clusters[0].Name)
	setDefault(&c.Ingest.GroupID, "ferry-ingest")
	setDefault(&c.Ingest.TopicPrefix, "ferry-ingest-")
	if c.Ingest.SessionTimeout == 0 {
		c.Ingest.SessionTimeout = 10 * time.Second
	}
	if c.Ingest.DrainTimeout == 0 {
		c.Ingest.DrainTimeout = 10 * time.Second
	}
	for i := range c.Sources {
		s := &c.Sources[i]
		setDefault(&s.Cluster, c.Clusters[0].Name)
		setDefault(&s.Value.Format, "protobuf")
		if s.Request == "" {
			s.Request = "{}"
		}
		if s.Cursor.Field != "" {
			setDefault(&s.Cursor.RequestField, s.Cursor.Field)
		}
		r := &s.Reconnect
		if r.InitialBackoff == 0 {
			r.InitialBackoff = 500 * time.Millisecond
		}
		if r.MaxBackoff == 0 {
			r.MaxBackoff = 30 * time.Second
		}
		if r.ResetAfter == 0 {
			r.ResetAfter = 30 * time.Second
		}
		if r.ReopenDelay == 0 {
			r.ReopenDelay = time.Second
		}
		if r.StopOn == nil {
			r.StopOn = append([]string(nil), permanentCodes...)
		}
		if s.Keepalive.Time > 0 && s.Keepalive.Timeout == 0 {
			s.Keepalive.Timeout = 20 * time.Second
		}
		if s.MaxInFlight == 0 {
			s.MaxInFlight = 1000
		}
		if s.MaxMessageSize == 0 {
			s.MaxMessageSize = DefaultMaxRecvMessageSize
		}
		s.TLS.resolve(filepath.Dir(c.file))
	}
}

// sources checks what can be checked of the sources without their protos;
// the methods, requests and field paths are checked against the loaded
// protos by the ingest package.
func (v *validator) sources() {
	names := map[string]bool{}
	if _, ok := v.cfg.Cluster(v.cfg.Ingest.Cluster); !ok && len(v.cfg.Sources) > 0 {
		v.errf("ingest.cluster", "no cluster is named %q: define it under clusters", v.cfg.Ingest.Cluster)
	}
	if v.cfg.Ingest.GroupID == "" {
		v.errf("ingest.group_id", "is required")
	}
	for i, s := range v.cfg.Sources {
		p := fmt.Sprintf("sources[%d]", i)
		switch {
		case s.Name == "":
			v.errf(p+".name", "is required: it names the source in headers, metrics and its coordination topic")
		case names[s.Name]:
			v.errf(p+".name", "source name %q is used twice: keep names unique", s.Name)
		default:
			if err := CheckTopic(v.cfg.Ingest.TopicPrefix + s.Name); err != nil {
				v.errf(p+".name", "%q with ingest.topic_prefix %q names the source's coordination topic: %v", s.Name, v.cfg.Ingest.TopicPrefix, err)
			}
		}
		names[s.Name] = true
		if _, ok := v.cfg.Cluster(s.Cluster); !ok {
			v.errf(p+".cluster", "no cluster is named %q: define it under clusters", s.Cluster)
		}
		if err := CheckTopic(s.Topic); err != nil {
			v.errf(p+".topic", "%v", err)
		}
		if s.Target == "" {
			v.errf(p+".target", "is required: the gRPC server's address, e.g. 127.0.0.1:50061")
		}
		if s.Method == "" {
			v.errf(p+".method", "is required: the method to call, as package.Service/Method")
		} else if err := CheckMethodPattern(s.Method); err != nil || strings.HasSuffix(s.Method, "/*") {
			v.errf(p+".method", "%q is not package.Service/Method: name one method", s.Method)
		}
		switch s.Value.Format {
		case "protobuf":
			if s.Value.UseProtoNames || s.Value.EmitDefaults {
				v.errf(p+".value.format", "is protobuf, so use_proto_names and emit_defaults are never used: set format: json")
			}
		case "json":
		default:
			v.errf(p+".value.format", "%q is not a value format: use protobuf or json", s.Value.Format)
		}
		if !s.Cursor.Enabled() && (s.Cursor.RequestField != "" || s.Cursor.Increment != 0) {
			v.errf(p+".cursor.field", "is required when the cursor has request_field or increment: name the response field that tells where the stream is")
		}
		for _, h := range s.Headers {
			if strings.HasPrefix(h.Name, "ferry-") {
				v.errf(p+".headers."+h.Name, "headers starting with ferry- are Ferry's own: choose another name")
			}
		}
		r := s.Reconnect
		if r.MaxBackoff < r.InitialBackoff {
			v.errf(p+".reconnect.max_backoff", "is shorter than initial_backoff (%s)", r.InitialBackoff)
		}
		for j, c := range r.StopOn {
			if !grpcCodes[c] {
				v.errf(fmt.Sprintf("%s.reconnect.stop_on[%d]", p, j), "%q is not a gRPC code: use names such as UNIMPLEMENTED or INVALID_ARGUMENT", c)
			}
		}
		if s.Keepalive.Time == 0 && s.Keepalive.Timeout != 0 {
			v.errf(p+".keepalive.timeout", "is never used without keepalive.time")
		}
		if m := v.cfg.Listeners.GRPC.MaxRecvMessageSize; s.MaxMessageSize > m {
			v.errf(p+".max_message_size", "%d is more than listeners.grpc.max_recv_message_size (%d), which bounds the records Ferry's producers write: raise that too", s.MaxMessageSize, m)
		}
		v.clientTLS(p+".tls", s.TLS)
		v.metadata(p+".metadata", s.Metadata, nil)
	}
}
