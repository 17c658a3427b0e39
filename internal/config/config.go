// Package config defines Ferry's YAML configuration: its types, their
// defaults, strict decoding with ${ENV} expansion, and the single validation
// pass whose errors name the file, the line, the YAML path and what to do.
package config

import (
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Config is the whole of one Ferry configuration file.
type Config struct {
	// Clusters are the Kafka clusters Ferry talks to, addressed by name.
	Clusters []Cluster `yaml:"clusters"`
	// Embedded configures the in-process broker that serves every cluster
	// whose broker list is empty.
	Embedded Embedded `yaml:"embedded"`
	// Listeners are the network faces Ferry serves.
	Listeners Listeners `yaml:"listeners"`
	// Protos are the .proto files and descriptor sets that define the
	// services Ferry serves.
	Protos []ProtoSource `yaml:"protos"`
	// Routes map gRPC methods to Kafka topics; the first match wins.
	Routes []Route `yaml:"routes"`
	// Backends consume request topics in a consumer group and call gRPC
	// servers, writing their replies back to Kafka.
	Backends []Backend `yaml:"backends"`
	// Replies configures the shared readers of reply topics.
	Replies Replies `yaml:"replies"`
	// Fetch limits the resources of fetch routes.
	Fetch Fetch `yaml:"fetch"`
	// KafkaAPI is the generic Kafka API: Ferry's own and Kafka-Pixy's.
	KafkaAPI KafkaAPI `yaml:"kafka_api"`
	// Log configures Ferry's own logging.
	Log Log `yaml:"log"`
	// Auth authenticates callers (JWT bearer tokens, client certificates)
	// and makes their identity available to authorization rules.
	Auth Auth `yaml:"auth"`
	// Shutdown bounds how Ferry stops.
	Shutdown Shutdown `yaml:"shutdown"`
	// Tracing exports OpenTelemetry traces and carries them across Kafka.
	Tracing Tracing `yaml:"tracing"`
	// Metrics configures what Ferry measures for Prometheus.
	Metrics Metrics `yaml:"metrics"`
	// Sources ingest gRPC server streams into Kafka topics.
	Sources []Source `yaml:"sources"`
	// Ingest configures how several Ferry instances share the sources.
	Ingest Ingest `yaml:"ingest"`

	// file is the path the config was loaded from, used in error messages.
	file string
	// lines maps a YAML path such as "routes[0].produce.topic" to the line
	// it was written on, so validation errors can point at it.
	lines map[string]int
}

// File returns the path the configuration was loaded from.
func (c *Config) File() string { return c.file }

// Cluster is one Kafka cluster.
type Cluster struct {
	// Name addresses the cluster from routes.
	Name string `yaml:"name"`
	// Brokers are the seed brokers, host:port. An entry may hold several,
	// separated by commas; empty entries are dropped. When none remain, the
	// cluster is served by the embedded in-memory broker.
	Brokers []string `yaml:"brokers"`
	// ClientID is the Kafka client id Ferry presents.
	ClientID string `yaml:"client_id"`
	// DialTimeout bounds each connection attempt to a broker.
	DialTimeout time.Duration `yaml:"dial_timeout"`
	// Producer tunes the producer Ferry writes requests with.
	Producer Producer `yaml:"producer"`
	// HealthCheck is how Ferry finds out that the cluster is unreachable
	// and back.
	HealthCheck HealthCheck `yaml:"health_check"`
	// TLS encrypts the connections to the brokers.
	TLS ClientTLS `yaml:"tls"`
	// SASL authenticates Ferry to the brokers.
	SASL ClusterSASL `yaml:"sasl"`
}

// HealthCheck probes a cluster with a metadata request. The cluster counts
// as unreachable after UnhealthyAfter probes in a row failed, and as
// reachable again after HealthyAfter probes in a row answered.
type HealthCheck struct {
	// Interval is the pause between two probes.
	Interval time.Duration `yaml:"interval"`
	// UnhealthyAfter is how many failed probes in a row make the cluster
	// unreachable.
	UnhealthyAfter int `yaml:"unhealthy_after"`
	// HealthyAfter is how many answered probes in a row make it reachable
	// again.
	HealthyAfter int `yaml:"healthy_after"`
}

// Fetch limits the resources of fetch routes in one Ferry instance.
type Fetch struct {
	// MaxCatchUpReaders bounds the Kafka readers shared by the callers
	// behind their topic's cache (catch-up readers) at once, over every
	// fetch route.
	MaxCatchUpReaders int `yaml:"max_catch_up_readers"`
	// CatchUpWait is how long a caller behind the cache waits for a
	// catch-up reader to take it when all are taken, before it gets
	// RESOURCE_EXHAUSTED.
	CatchUpWait time.Duration `yaml:"catch_up_wait"`
	// CatchUpWindowBytes bounds what one catch-up reader keeps for its
	// callers: it reads at most half of it ahead of its fastest caller,
	// and a caller further behind than all of it loses its place.
	CatchUpWindowBytes int64 `yaml:"catch_up_window_bytes"`
	// PartitionRefresh is how often a fetched topic's reader looks for
	// partitions the topic gained, and reads them from their start. 0:
	// never (new partitions wait for a restart).
	PartitionRefresh time.Duration `yaml:"partition_refresh"`
	// Cache bounds the records each fetched topic keeps in memory.
	Cache FetchCache `yaml:"cache"`
}

// FetchCache bounds the cache of each fetched topic: the topic's most
// recent records, from which every caller whose position it holds is
// served without a Kafka reader of its own.
type FetchCache struct {
	// MaxBytes is the most memory one topic's cache holds: record values,
	// keys, headers and bookkeeping. The oldest records go first.
	MaxBytes int64 `yaml:"max_bytes"`
	// MaxAge drops records whose timestamp is older; 0: no age bound.
	MaxAge time.Duration `yaml:"max_age"`
}

// Producer tunes how records are batched and written.
type Producer struct {
	// Linger is how long the producer waits to fill a batch. Zero sends as
	// soon as the previous request to the broker returned, which is the
	// lowest latency and still batches under load.
	Linger time.Duration `yaml:"linger"`
	// MaxBufferedRecords bounds the records buffered in memory awaiting a
	// broker's acknowledgement; producing blocks beyond it (backpressure).
	MaxBufferedRecords int `yaml:"max_buffered_records"`
	// Compression is the batch compression: none, gzip, snappy, lz4 or zstd.
	Compression string `yaml:"compression"`
	// DeliveryTimeout bounds how long one record may take to be
	// acknowledged, retries included, before the call that wrote it fails.
	DeliveryTimeout time.Duration `yaml:"delivery_timeout"`
	// BatchMaxBytes is the largest record batch the producer writes. It is
	// not a key of its own: it follows listeners.grpc.max_recv_message_size
	// (plus RecordOverhead), so that every request message the gRPC
	// listener accepts fits one batch.
	BatchMaxBytes int32 `yaml:"-"`
}

// Embedded configures the in-process broker.
type Embedded struct {
	// Port the embedded broker listens on, on 127.0.0.1. Zero picks a free
	// port.
	Port int `yaml:"port"`
	// Partitions is the partition count of topics the embedded broker
	// creates on first use.
	Partitions int `yaml:"partitions"`
	// TLS makes the embedded broker speak TLS only.
	TLS EmbeddedTLS `yaml:"tls"`
	// SASL makes the embedded broker require SASL authentication.
	SASL EmbeddedSASL `yaml:"sasl"`
	// DataDir, when set, is the directory the embedded broker keeps its
	// topics, records and groups' offsets in, across restarts; relative
	// to the configuration file's directory. Empty keeps them in memory.
	DataDir string `yaml:"data_dir"`
}

// Shutdown bounds how Ferry stops on SIGTERM or SIGINT.
type Shutdown struct {
	// Timeout bounds the whole stop: the servers' graceful stop
	// (listeners.grpc.shutdown_timeout), then flushing the producers,
	// committing, leaving the groups and saving the embedded broker's
	// data. Ferry exits when it passes. Zero means
	// listeners.grpc.shutdown_timeout plus DefaultShutdownGrace.
	Timeout time.Duration `yaml:"timeout"`
}

// DefaultShutdownGrace is what a zero shutdown.timeout leaves, after the
// servers' graceful stop, to flush, commit and leave the groups.
const DefaultShutdownGrace = 10 * time.Second

// Bound returns the bound of the whole stop given the servers' graceful
// stop, as shutdown.timeout sets it or its default.
func (s Shutdown) Bound(graceful time.Duration) time.Duration {
	if s.Timeout > 0 {
		return s.Timeout
	}
	return graceful + DefaultShutdownGrace
}

// Listeners groups the network faces Ferry serves.
type Listeners struct {
	GRPC  GRPCListener  `yaml:"grpc"`
	HTTP  HTTPListener  `yaml:"http"`
	Admin AdminListener `yaml:"admin"`
}

// HTTPListener is the HTTP server of the REST APIs.
type HTTPListener struct {
	// Address is host:port to listen on. Empty serves no HTTP.
	Address string `yaml:"address"`
	// MaxRequestBodySize bounds one request body, in bytes.
	MaxRequestBodySize int64 `yaml:"max_request_body_size"`
	// TLS serves HTTPS instead of plaintext HTTP.
	TLS ListenerTLS `yaml:"tls"`
	// CORS lets pages of other origins call the REST APIs. Off unless
	// AllowedOrigins is set.
	CORS CORS `yaml:"cors"`
}

// GRPCListener is the gRPC server.
type GRPCListener struct {
	// Address is host:port to listen on.
	Address string `yaml:"address"`
	// Reflection enables the gRPC server reflection service.
	Reflection bool `yaml:"reflection"`
	// Health enables the grpc.health.v1 service.
	Health bool `yaml:"health"`
	// MaxRecvMessageSize bounds one request message, in bytes. A request
	// message becomes a Kafka record value, so it is Kafka's limit too: the
	// producers' batch limit follows it (see Producer.BatchMaxBytes).
	MaxRecvMessageSize int `yaml:"max_recv_message_size"`
	// MaxConcurrentStreams bounds the calls one client connection may have
	// open at once, and is advertised to clients (grpc-go clients assume 100
	// when a server advertises nothing).
	MaxConcurrentStreams int `yaml:"max_concurrent_streams"`
	// ShutdownTimeout bounds the graceful stop; calls still running after
	// it are cancelled.
	ShutdownTimeout time.Duration `yaml:"shutdown_timeout"`
	// TLS serves gRPC over TLS instead of plaintext.
	TLS ListenerTLS `yaml:"tls"`
	// Web serves gRPC-Web, Connect and REST on the same port.
	Web Web `yaml:"web"`
}

// ProtoSource is one source of service definitions: .proto files compiled
// at start-up, or a descriptor set written by `protoc -o` or `buf build`.
type ProtoSource struct {
	// Files are .proto files, relative to one of ImportPaths.
	Files []string `yaml:"files"`
	// ImportPaths are the directories imports are resolved in. Relative
	// paths are taken from the config file's directory. Default: the config
	// file's directory.
	ImportPaths []string `yaml:"import_paths"`
	// DescriptorSet is the path of a serialized FileDescriptorSet.
	DescriptorSet string `yaml:"descriptor_set"`
}

// Route maps matching gRPC calls to a capability.
type Route struct {
	// Name labels the route in logs and metrics. Default: "route-<index>".
	Name string `yaml:"name"`
	// When lists the conditions, ORed; the route matches a call when any
	// condition matches.
	When []Condition `yaml:"when"`
	// Produce writes requests to a topic and reads replies from another.
	Produce *ProduceRoute `yaml:"produce"`
	// Fetch streams a topic's records to every caller of a server-streaming
	// method whose request is google.protobuf.Empty.
	Fetch *FetchRoute `yaml:"fetch"`
	// Allow lists who may call the route: a caller matching any rule may.
	// None: every caller Ferry lets in (see auth).
	Allow []AllowRule `yaml:"allow"`
}

// FetchRoute is the Kafka topic → gRPC server stream capability.
type FetchRoute struct {
	// Cluster names the Kafka cluster. Default: the first cluster.
	Cluster string `yaml:"cluster"`
	// Topic is the topic streamed to callers.
	Topic string `yaml:"topic"`
	// Filters select the records a caller gets: ORed; inside one filter
	// the key and every header must match. None: every record.
	Filters []FetchFilter `yaml:"filters"`
	// Start is where a caller without a message id starts: earliest,
	// latest, or an RFC 3339 timestamp (the first record at or after it).
	Start string `yaml:"start"`
	// MessageIDField is the protobuf field number of the message id
	// appended to every response message.
	MessageIDField int `yaml:"message_id_field"`
	// LastMessageIDMetadata is the request metadata entry a resuming caller
	// sends its last message id in (base64url); "<name>-bin" is accepted too.
	LastMessageIDMetadata string `yaml:"last_message_id_metadata"`
	// MaxBufferedPerSubscriber bounds the records one caller takes from
	// its topic's cache at a time, to send at its own pace.
	MaxBufferedPerSubscriber int `yaml:"max_buffered_per_subscriber"`
	// MetaPrefix marks the record headers that become response headers.
	MetaPrefix string `yaml:"meta_prefix"`
	// Format is how the topic's record values are written: protobuf (the
	// method's output type, streamed as they are) or json (protojson of
	// it, parsed and sent as protobuf).
	Format string `yaml:"format"`
	// Group, when set, shares the records among the callers as a consumer group (see FetchGroup).
	Group *FetchGroup `yaml:"group"`
	// Prewarm starts the topic's reader when Ferry starts, rather than at
	// the first call, and fills its cache from the topic's earliest
	// record (or fetch.cache.max_age back) as far as fetch.cache.max_bytes
	// allows; the reader then runs with no caller.
	Prewarm bool `yaml:"prewarm"`
}

// FetchFilter selects records by key and headers. A value may come from
// the caller's metadata instead of the configuration.
type FetchFilter struct {
	// Key must equal the record key.
	Key string `yaml:"key"`
	// KeyFromMetadata names the request metadata entry whose value the
	// record key must equal.
	KeyFromMetadata string `yaml:"key_from_metadata"`
	// Headers must all be present with exactly these values.
	Headers map[string]string `yaml:"headers"`
	// HeadersFromMetadata maps a header name to the request metadata entry
	// whose value the header must have.
	HeadersFromMetadata map[string]string `yaml:"headers_from_metadata"`
	// KeyFromIdentity makes the record key equal the caller's identity
	// (see auth), so each caller gets only its own records.
	KeyFromIdentity bool `yaml:"key_from_identity"`
	// HeadersFromIdentity lists headers whose value must equal the
	// caller's identity.
	HeadersFromIdentity []string `yaml:"headers_from_identity"`
	// KeyFromRequest requires the key to be a template of fields of the
	// call's request message, such as "{symbol}": the method then takes a
	// message of its own rather than google.protobuf.Empty.
	KeyFromRequest string `yaml:"key_from_request"`
	// HeadersFromRequest requires each header to equal a template of
	// fields of the call's request message.
	HeadersFromRequest map[string]string `yaml:"headers_from_request"`
}

// Condition matches a call by method and metadata.
type Condition struct {
	// Method is "package.Service/Method" or "package.Service/*".
	Method string `yaml:"method"`
	// Metadata entries must all be present with exactly these values.
	Metadata map[string]string `yaml:"metadata"`
}

// ProduceRoute is the gRPC → Kafka request/reply capability.
type ProduceRoute struct {
	// Cluster names the Kafka cluster. Default: the first cluster.
	Cluster string `yaml:"cluster"`
	// Topic receives one record per request message.
	Topic string `yaml:"topic"`
	// ReplyTo is the topic replies are read from. Empty makes the route
	// one-way.
	ReplyTo string `yaml:"reply_to"`
	// Key is the record key. Default: the call's correlation id.
	Key string `yaml:"key"`
	// KeyFromIdentity makes the record key the caller's identity (see
	// auth) instead of Key.
	KeyFromIdentity bool `yaml:"key_from_identity"`
	// KeyFromRequest makes the record key a template of fields of the
	// call's first request message, such as "{order.customer_id}"; every
	// record of the call takes it, so a call stays in one partition.
	KeyFromRequest string `yaml:"key_from_request"`
	// HeadersFromRequest are headers written on every record of a call,
	// each a template of fields of its first request message.
	HeadersFromRequest Headers `yaml:"headers_from_request"`
	// Validate requires every request message to decode as the method's
	// input type and to pass the protovalidate (buf.validate) rules that
	// type and the messages in its fields carry: one that does not gets
	// INVALID_ARGUMENT and is not written.
	Validate bool `yaml:"validate"`
	// IdentityHeader names a header that carries the caller's identity on
	// every record. A request metadata entry that would be written under
	// the same name is dropped, so callers cannot forge it.
	IdentityHeader string `yaml:"identity_header"`
	// Acks is none, leader_only or in_sync_replicas.
	Acks string `yaml:"acks"`
	// Overrides are headers written first on every record, in order.
	Overrides Headers `yaml:"overrides"`
	// Timeout bounds the time a call with a reply topic goes without
	// progress — no reply read and no request message written; the call
	// then ends with DEADLINE_EXCEEDED. It is always finite, so a call
	// whose client set no deadline still ends when its answer never comes.
	Timeout time.Duration `yaml:"timeout"`
	// ForwardAuthorization copies the authorization metadata entry into a
	// meta: header. Off by default so credentials do not land in Kafka.
	ForwardAuthorization bool `yaml:"forward_authorization"`
	// OneWayAck, for one-way routes, answers only after Kafka acknowledged
	// every record of the call (true, the default) or as soon as the client
	// half-closed (false, Zilla's behaviour).
	OneWayAck *bool `yaml:"one_way_ack"`
	// HeaderNames renames the headers Ferry writes and reads.
	HeaderNames HeaderNames `yaml:"header_names"`
	// Format is how request and reply record values are written:
	// protobuf (the messages as the caller sent them) or json (protojson
	// of the method's input and output types).
	Format string `yaml:"format"`
	// JSON shapes the JSON that format json writes.
	JSON JSONOptions `yaml:"json"`
}

// Backend is the Kafka → gRPC capability: it reads requests from a topic in
// a consumer group, calls a gRPC server with them and writes the replies to
// each request's reply topic, committing a request only once its final
// reply is written (at least once).
type Backend struct {
	// Name labels the back end in logs and derives the default group id.
	Name string `yaml:"name"`
	// Cluster names the Kafka cluster. Default: the first cluster.
	Cluster string `yaml:"cluster"`
	// Topic is the request topic.
	Topic string `yaml:"topic"`
	// ReplyTo is where replies go when a request names no reply topic in
	// its reply-to header.
	ReplyTo string `yaml:"reply_to"`
	// When filters the requests this back end serves, ORed; empty serves
	// every request. Requests it does not serve are skipped (and committed).
	When []BackendCondition `yaml:"when"`
	// Target is the gRPC server's address, in grpc-go's target syntax
	// (host:port, dns:///host:port, unix:///path).
	Target string `yaml:"target"`
	// TLS secures the connection to the server: TLS, or mutual TLS with a
	// client certificate. Off: plaintext.
	TLS ClientTLS `yaml:"tls"`
	// Metadata is static gRPC metadata added to every call, such as an API
	// key from the environment. It replaces the request's entries of the
	// same keys; keys Ferry sets itself are refused. The values of keys
	// ending in -bin are written in base64. Values are never logged.
	Metadata map[string]string `yaml:"metadata"`
	// GroupID is the Kafka consumer group. Default: "ferry-backend-<name>".
	GroupID string `yaml:"group_id"`
	// GroupInstanceID makes this instance a static member of the group
	// (Kafka's group.instance.id), so that it takes its partitions back at
	// once when restarted after a crash. Each instance needs its own, e.g.
	// ${HOSTNAME}. Empty: a dynamic member.
	GroupInstanceID string `yaml:"group_instance_id"`
	// Start is where a group without committed offsets starts: earliest or
	// latest.
	Start string `yaml:"start"`
	// Concurrency bounds the gRPC calls in flight.
	Concurrency int `yaml:"concurrency"`
	// MaxPendingCalls bounds the calls read from Kafka but waiting for a
	// free slot; beyond it fetching pauses, so memory stays bounded.
	MaxPendingCalls int `yaml:"max_pending_calls"`
	// Deadline bounds one call, retries included.
	Deadline time.Duration `yaml:"deadline"`
	// Retry is the policy for calls the server answers UNAVAILABLE before
	// any response was written.
	Retry Retry `yaml:"retry"`
	// SessionTimeout is the consumer group session timeout: how long a
	// member that stopped without leaving keeps its partitions.
	SessionTimeout time.Duration `yaml:"session_timeout"`
	// CommitInterval is how often finished requests are committed.
	CommitInterval time.Duration `yaml:"commit_interval"`
	// DrainTimeout bounds how long calls of partitions being taken away
	// (rebalance, shutdown) may run on; calls still running then are
	// abandoned uncommitted, and the partition's next owner redoes them.
	DrainTimeout time.Duration `yaml:"drain_timeout"`
	// HeaderNames renames the headers Ferry reads and writes.
	HeaderNames HeaderNames `yaml:"header_names"`
	// Format is how request and reply record values are written:
	// protobuf or json (see ProduceRoute.Format).
	Format string `yaml:"format"`
	// JSON shapes the JSON that format json writes.
	JSON JSONOptions `yaml:"json"`
}

// BackendCondition selects requests by method, key and headers; every
// field given must match.
type BackendCondition struct {
	// Method is "package.Service/Method" or "package.Service/*".
	Method string `yaml:"method"`
	// Key, if set, must equal the record key.
	Key string `yaml:"key"`
	// Headers must all be present with exactly these values.
	Headers map[string]string `yaml:"headers"`
}

// Retry is an exponential backoff with full jitter, bounded by attempts and
// by time.
type Retry struct {
	// MaxAttempts bounds the attempts of one call, the first included.
	MaxAttempts int `yaml:"max_attempts"`
	// MaxElapsed bounds the time a call spends on attempts and the waits
	// between them, counted from its first attempt; the call's deadline
	// bounds it too. An attempt waits up to this long for a connection to
	// the server, so a restarting server costs one attempt.
	MaxElapsed time.Duration `yaml:"max_elapsed"`
	// InitialBackoff is the largest wait before the second attempt; each
	// later wait may be twice as long, up to MaxBackoff.
	InitialBackoff time.Duration `yaml:"initial_backoff"`
	// MaxBackoff caps the wait between attempts.
	MaxBackoff time.Duration `yaml:"max_backoff"`
}

// Replies configures the shared reply-topic readers.
type Replies struct {
	// Lookback is how far back a reply reader starts, and how long completed
	// replies are kept so that a retry with the same idempotency-key gets
	// them again instead of producing the request twice.
	Lookback time.Duration `yaml:"lookback"`
	// MaxCachedBytes bounds the memory of kept replies per reply topic; the
	// oldest are dropped first.
	MaxCachedBytes int64 `yaml:"max_cached_bytes"`
	// MaxBufferedPerCall bounds the replies queued for one call whose client
	// reads them too slowly; past it the call ends with RESOURCE_EXHAUSTED
	// rather than holding up the reader every other call shares.
	MaxBufferedPerCall int `yaml:"max_buffered_per_call"`
}

// KafkaAPI configures the generic Kafka API served beside the routes.
type KafkaAPI struct {
	// Enabled serves Ferry's ferry.kafka.v1.Kafka service on the gRPC
	// listener and its REST paths on the HTTP listener.
	Enabled bool `yaml:"enabled"`
	// Pixy also serves Kafka-Pixy's KafkaPixy gRPC service and REST paths.
	Pixy bool `yaml:"pixy"`
	// Produce tunes producing.
	Produce APIProduce `yaml:"produce"`
	// Consume tunes consuming in consumer groups.
	Consume APIConsume `yaml:"consume"`
	// Allow lists which callers may produce to, consume from and
	// administer which topics and groups. None: every caller Ferry lets
	// in may do everything.
	Allow []APIAllowRule `yaml:"allow"`
}

// APIProduce tunes the Kafka API's producing.
type APIProduce struct {
	// Acks is none, leader_only or in_sync_replicas.
	Acks string `yaml:"acks"`
	// MaxInFlightPerStream bounds the records of one ProduceStream that are
	// not yet acknowledged; the stream stops reading beyond it.
	MaxInFlightPerStream int `yaml:"max_in_flight_per_stream"`
}

// APIConsume tunes the Kafka API's consumer groups.
type APIConsume struct {
	// Start is where a group without committed offsets starts: earliest
	// or latest.
	Start string `yaml:"start"`
	// LongPollTimeout is how long a poll waits for a message by default.
	LongPollTimeout time.Duration `yaml:"long_poll_timeout"`
	// SubscriptionTimeout is how long a group member nobody consumes from
	// stays in its group before it leaves.
	SubscriptionTimeout time.Duration `yaml:"subscription_timeout"`
	// AckTimeout is how long a delivered message waits for its
	// acknowledgement before it is delivered again.
	AckTimeout time.Duration `yaml:"ack_timeout"`
	// MaxUnackedPerPartition bounds the delivered, unacknowledged messages
	// of one partition; the partition delivers nothing more until acks come.
	MaxUnackedPerPartition int `yaml:"max_unacked_per_partition"`
	// MaxBufferedPerPartition bounds the records read ahead per partition;
	// reading that partition pauses beyond it.
	MaxBufferedPerPartition int `yaml:"max_buffered_per_partition"`
	// MaxDeliveries is how often a message is delivered before it goes to
	// the dead-letter topic. Zero delivers it until acknowledged.
	MaxDeliveries int `yaml:"max_deliveries"`
	// DeadLetterTopic receives messages delivered MaxDeliveries times;
	// "{topic}" and "{group}" are replaced.
	DeadLetterTopic string `yaml:"dead_letter_topic"`
	// CommitInterval is how often acknowledged offsets are committed.
	CommitInterval time.Duration `yaml:"commit_interval"`
	// SessionTimeout is the consumer group session timeout.
	SessionTimeout time.Duration `yaml:"session_timeout"`
	// GroupInstanceID makes this instance's group members static, with
	// the id "<GroupInstanceID>.<topic>" in each group. Empty: dynamic
	// members.
	GroupInstanceID string `yaml:"group_instance_id"`
	// MaxWaitingPolls bounds the polls waiting at once for one group and
	// topic; more get RESOURCE_EXHAUSTED.
	MaxWaitingPolls int `yaml:"max_waiting_polls"`
	// MaxGroupMembers bounds the consumer group members (one per cluster,
	// group and topic in use, each a Kafka client with its connections)
	// this instance runs at once; a request needing one more gets
	// RESOURCE_EXHAUSTED.
	MaxGroupMembers int `yaml:"max_group_members"`
}

// Log configures logging.
type Log struct {
	// Level is debug, info, warn or error.
	Level string `yaml:"level"`
	// Format is text or json.
	Format string `yaml:"format"`
	// Access logs one line at info level for every call of every face as
	// it ends.
	Access bool `yaml:"access"`
}

// Default returns the configuration every file is decoded onto.
func Default() Config {
	return Config{
		Embedded: Embedded{Port: 9092, Partitions: 1},
		Tracing:  defaultTracing,
		Listeners: Listeners{GRPC: GRPCListener{
			Address:              "127.0.0.1:7151",
			Reflection:           true,
			Health:               true,
			MaxRecvMessageSize:   DefaultMaxRecvMessageSize,
			MaxConcurrentStreams: 1000,
			ShutdownTimeout:      10 * time.Second,
			TLS:                  defaultListenerTLS,
			Web:                  Web{Enabled: true},
		}, HTTP: HTTPListener{Address: "127.0.0.1:7152", MaxRequestBodySize: 1 << 20, TLS: defaultListenerTLS},
			Admin: AdminListener{Address: DefaultAdminAddress}},
		Metrics: Metrics{Enabled: true},
		KafkaAPI: KafkaAPI{
			Produce: APIProduce{Acks: "in_sync_replicas", MaxInFlightPerStream: 4096},
			Consume: APIConsume{
				Start:                   "earliest",
				LongPollTimeout:         3 * time.Second,
				SubscriptionTimeout:     15 * time.Second,
				AckTimeout:              5 * time.Minute,
				MaxUnackedPerPartition:  300,
				MaxBufferedPerPartition: 1000,
				CommitInterval:          500 * time.Millisecond,
				SessionTimeout:          45 * time.Second,
				MaxWaitingPolls:         10000,
				MaxGroupMembers:         100,
			},
		},
		Replies: Replies{Lookback: 5 * time.Minute, MaxCachedBytes: 64 << 20, MaxBufferedPerCall: 1024},
		Fetch: Fetch{MaxCatchUpReaders: 64, CatchUpWait: 30 * time.Second, CatchUpWindowBytes: 4 << 20, PartitionRefresh: 30 * time.Second,
			Cache: FetchCache{MaxBytes: 64 << 20}},
		Log: Log{Level: "info", Format: "text"},
	}
}

// applyDefaults fills what depends on other values or sits in slices, which
// decoding onto Default cannot reach.
func (c *Config) applyDefaults() {
	if len(c.Clusters) == 0 {
		c.Clusters = []Cluster{{Name: "default"}}
	}
	c.Listeners.GRPC.TLS.resolve(filepath.Dir(c.file))
	c.Listeners.HTTP.TLS.resolve(filepath.Dir(c.file))
	c.Embedded.TLS.resolve(filepath.Dir(c.file))
	if d := c.Embedded.DataDir; d != "" && !filepath.IsAbs(d) {
		c.Embedded.DataDir = filepath.Join(filepath.Dir(c.file), d)
	}
	for i := range c.Clusters {
		cl := &c.Clusters[i]
		// An entry may list several brokers separated by commas, and an
		// entry left empty by an unset ${VAR:-} is dropped, so one
		// environment variable can name all brokers or none.
		var brokers []string
		for _, b := range cl.Brokers {
			for _, s := range strings.Split(b, ",") {
				if s = strings.TrimSpace(s); s != "" {
					brokers = append(brokers, s)
				}
			}
		}
		cl.Brokers = brokers
		cl.TLS.resolve(filepath.Dir(c.file))
		cl.SASL.resolve(filepath.Dir(c.file))
		if cl.ClientID == "" {
			cl.ClientID = "ferry"
		}
		if cl.DialTimeout == 0 {
			cl.DialTimeout = 10 * time.Second
		}
		if cl.Producer.MaxBufferedRecords == 0 {
			cl.Producer.MaxBufferedRecords = 100_000
		}
		if cl.Producer.Compression == "" {
			cl.Producer.Compression = "none"
		}
		if cl.Producer.DeliveryTimeout == 0 {
			cl.Producer.DeliveryTimeout = 30 * time.Second
		}
		// Validation bounds the message size well below int32's range.
		cl.Producer.BatchMaxBytes = int32(min(c.Listeners.GRPC.MaxRecvMessageSize, MaxMessageSizeLimit) + RecordOverhead)
		if cl.HealthCheck.Interval == 0 {
			cl.HealthCheck.Interval = 5 * time.Second
		}
		if cl.HealthCheck.UnhealthyAfter == 0 {
			cl.HealthCheck.UnhealthyAfter = 3
		}
		if cl.HealthCheck.HealthyAfter == 0 {
			cl.HealthCheck.HealthyAfter = 2
		}
	}
	for i := range c.Routes {
		r := &c.Routes[i]
		if r.Name == "" {
			r.Name = "route-" + strconv.Itoa(i)
		}
		if f := r.Fetch; f != nil {
			setDefault(&f.Cluster, c.Clusters[0].Name)
			setDefault(&f.Start, "earliest")
			setDefault(&f.LastMessageIDMetadata, "last-message-id")
			setDefault(&f.MetaPrefix, DefaultHeaderNames().MetaPrefix)
			if f.MessageIDField == 0 {
				f.MessageIDField = 32767
			}
			if f.MaxBufferedPerSubscriber == 0 {
				f.MaxBufferedPerSubscriber = 256
			}
			setDefault(&f.Format, FormatProtobuf)
			f.fillGroup(c.KafkaAPI.Consume)
		}
		if p := r.Produce; p != nil {
			if p.Cluster == "" {
				p.Cluster = c.Clusters[0].Name
			}
			if p.Acks == "" {
				p.Acks = "in_sync_replicas"
			}
			if p.Timeout == 0 {
				p.Timeout = 60 * time.Second
			}
			if p.OneWayAck == nil {
				t := true
				p.OneWayAck = &t
			}
			p.HeaderNames.fill()
			setDefault(&p.Format, FormatProtobuf)
			setDefault(&p.JSON.FieldNames, "json")
		}
	}
	c.applyBackendDefaults()
	c.applySourceDefaults()
	c.applyAuthDefaults()
}

// applyBackendDefaults fills each back end's unset keys.
func (c *Config) applyBackendDefaults() {
	for i := range c.Backends {
		b := &c.Backends[i]
		if b.Name == "" {
			b.Name = "backend-" + strconv.Itoa(i)
		}
		setDefault(&b.Cluster, c.Clusters[0].Name)
		setDefault(&b.GroupID, "ferry-backend-"+b.Name)
		setDefault(&b.Start, "earliest")
		if b.Concurrency == 0 {
			b.Concurrency = 64
		}
		if b.MaxPendingCalls == 0 {
			b.MaxPendingCalls = 10_000
		}
		if b.Deadline == 0 {
			b.Deadline = 30 * time.Second
		}
		if b.Retry.MaxAttempts == 0 {
			b.Retry.MaxAttempts = 10
		}
		if b.Retry.InitialBackoff == 0 {
			b.Retry.InitialBackoff = 100 * time.Millisecond
		}
		if b.Retry.MaxBackoff == 0 {
			b.Retry.MaxBackoff = 5 * time.Second
		}
		if b.Retry.MaxElapsed == 0 {
			b.Retry.MaxElapsed = time.Minute
		}
		if b.SessionTimeout == 0 {
			b.SessionTimeout = 45 * time.Second
		}
		if b.CommitInterval == 0 {
			b.CommitInterval = time.Second
		}
		if b.DrainTimeout == 0 {
			b.DrainTimeout = 10 * time.Second
		}
		b.HeaderNames.fill()
		setDefault(&b.Format, FormatProtobuf)
		setDefault(&b.JSON.FieldNames, "json")
		b.TLS.resolve(filepath.Dir(c.file))
	}
}

func setDefault(s *string, def string) {
	if *s == "" {
		*s = def
	}
}

// Cluster returns the cluster with the given name.
func (c *Config) Cluster(name string) (Cluster, bool) {
	for _, cl := range c.Clusters {
		if cl.Name == name {
			return cl, true
		}
	}
	return Cluster{}, false
}
