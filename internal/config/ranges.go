package config

import (
	"reflect"
	"strconv"
	"strings"
	"time"
)

// bounds is the documented range of one numeric key, both ends included.
// Durations are held as nanoseconds.
type bounds struct {
	min, max int64
}

func counts(lo, hi int64) bounds            { return bounds{lo, hi} }
func durations(lo, hi time.Duration) bounds { return bounds{int64(lo), int64(hi)} }

// ranges bounds every numeric key of the configuration, by its path as
// docs/CONFIG.md writes it. Validate checks each value (after defaults) in
// one walk over the Config, so a new integer or duration key cannot slip
// through unchecked: TestRangesDocumented fails for a numeric key without a
// range here, and keeps CONFIG.md stating the same ranges.
//
// The upper ends keep values where Ferry can act on them: memory that one
// setting reserves stays in the gigabytes at most (a huge partition count
// or queue length exhausts memory at start rather than failing validation),
// numbers handed to grpc-go or franz-go as 32-bit values cannot wrap, and
// durations stay within what a person would mean.
var ranges = map[string]bounds{
	"clusters[].dial_timeout":                      durations(time.Millisecond, 5*time.Minute),
	"clusters[].producer.linger":                   durations(0, time.Minute),
	"clusters[].producer.max_buffered_records":     counts(1, 10_000_000),
	"clusters[].producer.delivery_timeout":         durations(100*time.Millisecond, time.Hour),
	"clusters[].health_check.interval":             durations(100*time.Millisecond, time.Hour),
	"clusters[].health_check.unhealthy_after":      counts(1, 100),
	"clusters[].health_check.healthy_after":        counts(1, 100),
	"fetch.max_catch_up_readers":                   counts(1, 10_000),
	"fetch.catch_up_wait":                          durations(0, 10*time.Minute),
	"fetch.catch_up_window_bytes":                  counts(4096, 1<<36),
	"fetch.partition_refresh":                      durations(0, time.Hour),
	"fetch.cache.max_bytes":                        counts(4096, 1<<40),
	"fetch.cache.max_age":                          durations(0, 30*24*time.Hour),
	"embedded.port":                                counts(0, 65535),
	"embedded.partitions":                          counts(1, 1000),
	"listeners.grpc.max_recv_message_size":         counts(1, MaxMessageSizeLimit),
	"listeners.grpc.max_concurrent_streams":        counts(1, 1_000_000),
	"listeners.grpc.shutdown_timeout":              durations(0, time.Hour),
	"listeners.grpc.web.cors.max_age":              durations(0, 24*time.Hour),
	"listeners.http.cors.max_age":                  durations(0, 24*time.Hour),
	"shutdown.timeout":                             durations(0, 2*time.Hour),
	"listeners.http.max_request_body_size":         counts(1, MaxMessageSizeLimit),
	"routes[].produce.timeout":                     durations(0, 24*time.Hour),
	"routes[].fetch.message_id_field":              counts(1, 536870911),
	"routes[].fetch.max_buffered_per_subscriber":   counts(1, 1_000_000),
	"routes[].fetch.group.ack_id_field":            counts(1, 536870911),
	"routes[].fetch.group.ack_timeout":             durations(time.Millisecond, 24*time.Hour),
	"routes[].fetch.group.max_deliveries":          counts(0, 1000),
	"routes[].fetch.group.max_unacked_per_stream":  counts(1, 1_000_000),
	"backends[].concurrency":                       counts(1, 100_000),
	"backends[].max_pending_calls":                 counts(1, 1_000_000),
	"backends[].deadline":                          durations(time.Millisecond, 24*time.Hour),
	"backends[].retry.max_attempts":                counts(1, 1000),
	"backends[].retry.max_elapsed":                 durations(time.Millisecond, 24*time.Hour),
	"backends[].retry.initial_backoff":             durations(time.Millisecond, time.Hour),
	"backends[].retry.max_backoff":                 durations(time.Millisecond, time.Hour),
	"backends[].session_timeout":                   durations(time.Second, time.Hour),
	"backends[].commit_interval":                   durations(time.Millisecond, time.Hour),
	"backends[].drain_timeout":                     durations(time.Millisecond, time.Hour),
	"replies.lookback":                             durations(time.Second, 7*24*time.Hour),
	"replies.max_cached_bytes":                     counts(1, 1<<40),
	"auth.jwt.jwks_refresh":                        durations(time.Second, 24*time.Hour),
	"auth.jwt.leeway":                              durations(0, 10*time.Minute),
	"replies.max_buffered_per_call":                counts(1, 1_000_000),
	"kafka_api.produce.max_in_flight_per_stream":   counts(1, 1_000_000),
	"kafka_api.consume.long_poll_timeout":          durations(time.Millisecond, time.Hour),
	"kafka_api.consume.subscription_timeout":       durations(time.Second, 24*time.Hour),
	"kafka_api.consume.ack_timeout":                durations(time.Millisecond, 24*time.Hour),
	"kafka_api.consume.max_unacked_per_partition":  counts(1, 1_000_000),
	"kafka_api.consume.max_buffered_per_partition": counts(1, 1_000_000),
	"kafka_api.consume.max_deliveries":             counts(0, 1000),
	"kafka_api.consume.commit_interval":            durations(time.Millisecond, time.Hour),
	"kafka_api.consume.session_timeout":            durations(time.Second, time.Hour),
	"kafka_api.consume.max_group_members":          counts(1, 10_000),
	"kafka_api.consume.max_waiting_polls":          counts(1, 1_000_000),
	"tracing.sample_per_million":                   counts(0, 1_000_000),
	"sources[].idle_timeout":                       durations(0, 24*time.Hour),
	"sources[].keepalive.time":                     durations(0, 24*time.Hour),
	"sources[].keepalive.timeout":                  durations(0, time.Hour),
	"sources[].max_in_flight":                      counts(1, 1_000_000),
	"sources[].max_message_size":                   counts(1, MaxMessageSizeLimit),
	"sources[].cursor.increment":                   counts(0, 1_000_000),
	"sources[].reconnect.initial_backoff":          durations(time.Millisecond, time.Hour),
	"sources[].reconnect.max_backoff":              durations(time.Millisecond, 24*time.Hour),
	"sources[].reconnect.max_attempts":             counts(0, 1_000_000),
	"sources[].reconnect.reset_after":              durations(time.Millisecond, 24*time.Hour),
	"sources[].reconnect.reopen_delay":             durations(time.Millisecond, 24*time.Hour),
	"ingest.session_timeout":                       durations(time.Second, time.Hour),
	"ingest.drain_timeout":                         durations(time.Millisecond, time.Hour),
}

var durationType = reflect.TypeOf(time.Duration(0))

// isNumber reports whether values of t are checked against ranges.
func isNumber(t reflect.Type) bool {
	switch t.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64,
		reflect.Float32, reflect.Float64:
		return true
	}
	return false
}

// rangeText is a range as errors and CONFIG.md write it: "1 to 1000",
// "1ms to 5m".
func rangeText(b bounds, duration bool) string {
	if duration {
		return shortDuration(time.Duration(b.min)) + " to " + shortDuration(time.Duration(b.max))
	}
	return strconv.FormatInt(b.min, 10) + " to " + strconv.FormatInt(b.max, 10)
}

// shortDuration writes d as a person would: 5m rather than Go's 5m0s.
func shortDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// numbers walks v, the value at YAML path (docPath in CONFIG.md's
// notation), and checks every integer and duration it holds against
// ranges.
func (v *validator) numbers(val reflect.Value, path, docPath string) {
	switch val.Kind() {
	case reflect.Pointer:
		if !val.IsNil() {
			v.numbers(val.Elem(), path, docPath)
		}
	case reflect.Struct:
		t := val.Type()
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
			if name == "" || name == "-" || !f.IsExported() {
				continue
			}
			v.numbers(val.Field(i), join(path, name), join(docPath, name))
		}
	case reflect.Slice:
		for i := 0; i < val.Len(); i++ {
			v.numbers(val.Index(i), path+"["+strconv.Itoa(i)+"]", docPath+"[]")
		}
	default:
		if !isNumber(val.Type()) {
			return
		}
		// TestRangesDocumented fails for a numeric key without a range, so
		// one missing here is caught before it ships.
		if b, ok := ranges[docPath]; ok {
			v.inRange(path, val, b)
		}
	}
}

// inRange reports val at path when it lies outside b.
func (v *validator) inRange(path string, val reflect.Value, b bounds) {
	var n int64
	switch val.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		n = val.Int()
	default:
		// No numeric key is unsigned or a float today; TestRangeKinds
		// fails when one is added without a case here.
		return
	}
	if n >= b.min && n <= b.max {
		return
	}
	if val.Type() == durationType {
		v.errf(path, "%s is out of range: use %s", shortDuration(time.Duration(n)), rangeText(b, true))
		return
	}
	v.errf(path, "%d is out of range: use %s", n, rangeText(b, false))
}

// MaxMessageSizeLimit is the largest request message or body Ferry can be
// configured to accept: Kafka's own limits (message.max.bytes) are 32-bit,
// and a producer batch holds the message plus RecordOverhead.
const MaxMessageSizeLimit = 128 << 20

// DefaultMaxRecvMessageSize is listeners.grpc.max_recv_message_size's
// default, 960 KiB: with RecordOverhead it makes batches of 1 MiB, which
// Kafka's default message.max.bytes (1048588) and franz-go's kfake take.
const DefaultMaxRecvMessageSize = 1<<20 - RecordOverhead

// RecordOverhead is the room a producer batch keeps beside the largest
// request message for the record's key and headers and the batch's
// framing. Producers allow batches of listeners.grpc.max_recv_message_size
// plus this, so a message the gRPC listener accepts is never refused by the
// producer; with the defaults that is 1 MiB, within Kafka's default
// message.max.bytes (1048588).
const RecordOverhead = 64 << 10
