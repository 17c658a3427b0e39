package config

import (
	"fmt"
	"net"
	"reflect"
	"strconv"
	"strings"
	"time"
)

// Validate checks the decoded configuration as a whole and returns every
// problem it finds, each located in the file.
func (c *Config) Validate() Errors {
	v := &validator{cfg: c}
	v.clusters()
	v.embeddedSecurity()
	v.listeners()
	v.admin()
	v.protos()
	v.routes()
	v.backends()
	v.sources()
	v.kafkaAPI()
	v.auth()
	v.tracing()
	v.numbers(reflect.ValueOf(c).Elem(), "", "")
	if t, g := c.Shutdown.Timeout, c.Listeners.GRPC.ShutdownTimeout; t > 0 && t <= g {
		v.errf("shutdown.timeout", "%s does not exceed listeners.grpc.shutdown_timeout (%s), which it includes: leave time after it to flush, commit and leave the groups", t, g)
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		v.errf("log.level", "%q is not a level: use debug, info, warn or error", c.Log.Level)
	}
	switch c.Log.Format {
	case "text", "json":
	default:
		v.errf("log.format", "%q is not a format: use text or json", c.Log.Format)
	}
	return v.errs.sorted()
}

// Errorf returns an error located at the YAML path, for checks made outside
// this package (for example a route naming a method no proto defines).
func (c *Config) Errorf(path, format string, args ...any) *Error {
	return &Error{File: c.file, Line: c.lineOf(path), Path: path, Msg: fmt.Sprintf(format, args...)}
}

// lineOf returns the line of path, or of its nearest written ancestor when
// the key itself was left to its default.
func (c *Config) lineOf(path string) int {
	for p := path; p != ""; {
		if l, ok := c.lines[p]; ok {
			return l
		}
		i := strings.LastIndexAny(p, ".[")
		if i < 0 {
			break
		}
		p = p[:i]
	}
	return 0
}

type validator struct {
	cfg  *Config
	errs Errors
	// replyHeaders remembers, per cluster and reply topic, the header
	// names the first produce route reads replies with: one shared reader
	// serves them all.
	replyHeaders map[[2]string]replyReader
}

func (v *validator) errf(path, format string, args ...any) {
	v.errs = append(v.errs, v.cfg.Errorf(path, format, args...))
}

func (v *validator) clusters() {
	seen := map[string]bool{}
	for i, cl := range v.cfg.Clusters {
		p := fmt.Sprintf("clusters[%d]", i)
		switch {
		case cl.Name == "":
			v.errf(p+".name", "is required: routes address clusters by name")
		case seen[cl.Name]:
			v.errf(p+".name", "cluster %q is defined twice: give each cluster its own name", cl.Name)
		}
		seen[cl.Name] = true
		for j, b := range cl.Brokers {
			if err := checkHostPort(b); err != nil {
				v.errf(fmt.Sprintf("%s.brokers[%d]", p, j), "%v", err)
			}
		}
		switch cl.Producer.Compression {
		case "none", "gzip", "snappy", "lz4", "zstd":
		default:
			v.errf(p+".producer.compression", "%q is not a codec: use none, gzip, snappy, lz4 or zstd", cl.Producer.Compression)
		}
		v.clusterSecurity(p, cl)
	}
}

func (v *validator) listeners() {
	g := v.cfg.Listeners.GRPC
	if err := checkHostPort(g.Address); err != nil {
		v.errf("listeners.grpc.address", "%v", err)
	}
	h := v.cfg.Listeners.HTTP
	if h.Address != "" {
		if err := checkHostPort(h.Address); err != nil {
			v.errf("listeners.http.address", "%v", err)
		}
	}
	v.listenerTLS("listeners.grpc.tls", g.TLS)
	v.web()
	v.listenerTLS("listeners.http.tls", h.TLS)
}

func (v *validator) kafkaAPI() {
	k := v.cfg.KafkaAPI
	switch k.Produce.Acks {
	case "none", "leader_only", "in_sync_replicas":
	default:
		v.errf("kafka_api.produce.acks", "%q is not an acks mode: use none, leader_only or in_sync_replicas", k.Produce.Acks)
	}
	c := k.Consume
	switch c.Start {
	case "earliest", "latest":
	default:
		v.errf("kafka_api.consume.start", "%q is not a position: use earliest or latest", c.Start)
	}
	switch {
	case c.MaxDeliveries > 0 && c.DeadLetterTopic == "":
		v.errf("kafka_api.consume.max_deliveries", "needs kafka_api.consume.dead_letter_topic, where messages go after %d deliveries", c.MaxDeliveries)
	case c.MaxDeliveries == 0 && c.DeadLetterTopic != "":
		v.errf("kafka_api.consume.dead_letter_topic", "is never used: set kafka_api.consume.max_deliveries too")
	}
	if c.GroupInstanceID != "" {
		// The topic is appended to it: leave room for a topic's hash.
		if err := CheckGroupInstanceID(c.GroupInstanceID, 200); err != nil {
			v.errf("kafka_api.consume.group_instance_id", "%v", err)
		}
	}
	if t := strings.NewReplacer("{topic}", "t", "{group}", "g").Replace(c.DeadLetterTopic); t != "" && !validTopic(t) {
		v.errf("kafka_api.consume.dead_letter_topic", "%q is not a Kafka topic name: use letters, digits, '.', '_' and '-', with {topic} and {group} for the message's topic and group", c.DeadLetterTopic)
	}
}

// validTopic reports whether name is a legal Kafka topic name.
func validTopic(name string) bool {
	if len(name) > 249 || name == "." || name == ".." {
		return false
	}
	for _, r := range name {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-') {
			return false
		}
	}
	return true
}

func (v *validator) protos() {
	if len(v.cfg.Protos) == 0 && len(v.cfg.Routes)+len(v.cfg.Sources) > 0 {
		v.errf("protos", "no proto sources: list the .proto files or descriptor sets that define the routed services and the sources' methods")
	}
	for i, s := range v.cfg.Protos {
		p := fmt.Sprintf("protos[%d]", i)
		switch {
		case len(s.Files) == 0 && s.DescriptorSet == "":
			v.errf(p, "give either files (with import_paths) or descriptor_set")
		case len(s.Files) > 0 && s.DescriptorSet != "":
			v.errf(p, "give either files or descriptor_set, not both: use two entries")
		case s.DescriptorSet != "" && len(s.ImportPaths) > 0:
			v.errf(p+".import_paths", "only applies to files, not to descriptor_set")
		}
	}
}

func (v *validator) routes() {
	if len(v.cfg.Routes) == 0 && len(v.cfg.Backends) == 0 && len(v.cfg.Sources) == 0 && !v.cfg.KafkaAPI.Enabled && !v.cfg.KafkaAPI.Pixy {
		v.errf("routes", "no routes, no backends, no sources and no kafka_api: add at least one so Ferry has something to do")
	}
	names := map[string]bool{}
	v.replyHeaders = map[[2]string]replyReader{}
	for i, r := range v.cfg.Routes {
		p := fmt.Sprintf("routes[%d]", i)
		if names[r.Name] {
			v.errf(p+".name", "route name %q is used twice: names label metrics and logs, keep them unique", r.Name)
		}
		names[r.Name] = true
		if len(r.When) == 0 {
			v.errf(p+".when", "is required: list at least one condition such as {method: pkg.Service/*}")
		}
		for j, w := range r.When {
			wp := fmt.Sprintf("%s.when[%d]", p, j)
			if err := CheckMethodPattern(w.Method); err != nil {
				v.errf(wp+".method", "%v", err)
			}
			for k := range w.Metadata {
				if k != strings.ToLower(k) {
					v.errf(wp+".metadata."+k, "gRPC metadata keys are lower case: write %q", strings.ToLower(k))
				}
			}
		}
		var kinds []string
		for _, k := range routeKinds {
			if k.set(&r) {
				kinds = append(kinds, k.key)
			}
		}
		switch len(kinds) {
		case 0:
			v.errf(p, "has no capability: add %s", orList(routeKindKeys()))
		case 1:
			k := routeKindOf(&r)
			k.validate(v, p+"."+k.key, &r)
		case 2:
			v.errf(p, "has both %s and %s: a route has one capability, split it in two routes", kinds[0], kinds[1])
		default:
			v.errf(p, "has %s: a route has one capability, split it in one route each", strings.Join(kinds, ", "))
		}
	}
}

// replyReader is the first route that reads a reply topic, at path.
type replyReader struct {
	path  string
	names HeaderNames
}

func (v *validator) produce(p string, r *ProduceRoute) {
	if _, ok := v.cfg.Cluster(r.Cluster); !ok {
		v.errf(p+".cluster", "no cluster is named %q: define it under clusters", r.Cluster)
	}
	if err := CheckTopic(r.Topic); err != nil {
		v.errf(p+".topic", "%v", err)
	}
	if r.ReplyTo != "" {
		if err := CheckTopic(r.ReplyTo); err != nil {
			v.errf(p+".reply_to", "%v", err)
		}
		key := [2]string{r.Cluster, r.ReplyTo}
		prev, ok := v.replyHeaders[key]
		hn := r.HeaderNames
		if ok && (prev.names.CorrelationID != hn.CorrelationID || prev.names.Status != hn.Status ||
			prev.names.Message != hn.Message || prev.names.MetaPrefix != hn.MetaPrefix) {
			v.errf(p+".header_names", "reply topic %q is also read by %s with other reply header names: one reader serves a reply topic, so use the same correlation_id, status, message and meta_prefix names", r.ReplyTo, prev.path)
		} else if !ok {
			v.replyHeaders[key] = replyReader{p, hn}
		}
	}
	switch r.Acks {
	case "none", "leader_only", "in_sync_replicas":
	default:
		v.errf(p+".acks", "%q is not an acks mode: use none, leader_only or in_sync_replicas", r.Acks)
	}
	v.headerNames(p+".header_names", r.HeaderNames)
	v.valueFormat(p, r.Format, &r.JSON)
	for i, o := range r.Overrides {
		if o.Name == "" {
			v.errf(fmt.Sprintf("%s.overrides", p), "override %d has an empty header name", i)
		}
	}
	if r.KeyFromRequest != "" && (r.Key != "" || r.KeyFromIdentity) {
		v.errf(p+".key_from_request", "give one of key, key_from_identity and key_from_request")
	}
	for _, h := range r.HeadersFromRequest {
		if h.Name == "" {
			v.errf(p+".headers_from_request", "a header has an empty name")
		}
	}
}

// valueFormat checks the format of record values at p and, where it has
// them, its JSON options.
func (v *validator) valueFormat(p, format string, o *JSONOptions) {
	switch format {
	case FormatProtobuf, FormatJSON:
	default:
		v.errf(p+".format", "%q is not a value format: use protobuf or json", format)
	}
	if o == nil {
		return
	}
	switch o.FieldNames {
	case "json", "proto":
	default:
		v.errf(p+".json.field_names", "%q is not a field naming: use json (lowerCamelCase, protojson's default) or proto (the .proto names)", o.FieldNames)
	}
}

// headerNames checks that the record layout's header names are distinct and
// none would be read as metadata.
func (v *validator) headerNames(p string, hn HeaderNames) {
	seen := map[string]string{}
	for _, h := range []struct{ key, val string }{
		{"service", hn.Service}, {"method", hn.Method}, {"reply_to", hn.ReplyTo},
		{"correlation_id", hn.CorrelationID}, {"status", hn.Status}, {"message", hn.Message},
	} {
		if other, dup := seen[h.val]; dup {
			v.errf(p+"."+h.key, "%q is also the %s header: each header needs its own name", h.val, other)
		}
		seen[h.val] = h.key
		if strings.HasPrefix(h.val, hn.MetaPrefix) {
			v.errf(p+"."+h.key, "%q starts with the meta prefix %q and would be read as metadata", h.val, hn.MetaPrefix)
		}
	}
	if hn.MetaPrefix == "" {
		v.errf(p+".meta_prefix", "must not be empty")
	}
}

func (v *validator) fetch(p string, f *FetchRoute) {
	if _, ok := v.cfg.Cluster(f.Cluster); !ok {
		v.errf(p+".cluster", "no cluster is named %q: define it under clusters", f.Cluster)
	}
	if err := CheckTopic(f.Topic); err != nil {
		v.errf(p+".topic", "%v", err)
	}
	switch f.Start {
	case "earliest", "latest":
	default:
		if _, err := time.Parse(time.RFC3339, f.Start); err != nil {
			v.errf(p+".start", "%q is not earliest, latest or an RFC 3339 timestamp such as 2026-01-02T15:04:05Z", f.Start)
		}
	}
	// The range check covers 1 to 536870911; protobuf reserves a block
	// inside it for its own implementation.
	if f.MessageIDField >= 19000 && f.MessageIDField <= 19999 {
		v.errf(p+".message_id_field", "%d is reserved by protobuf: use a field number outside 19000 to 19999", f.MessageIDField)
	}
	v.valueFormat(p, f.Format, nil)
	if f.LastMessageIDMetadata != strings.ToLower(f.LastMessageIDMetadata) || strings.HasSuffix(f.LastMessageIDMetadata, "-bin") {
		v.errf(p+".last_message_id_metadata", "must be a lower-case metadata key without -bin (the -bin form is accepted as well)")
	}
	for i, fl := range f.Filters {
		fp := fmt.Sprintf("%s.filters[%d]", p, i)
		if fl.Key != "" && fl.KeyFromMetadata != "" {
			v.errf(fp, "give key or key_from_metadata, not both")
		}
		if fl.KeyFromRequest != "" && (fl.Key != "" || fl.KeyFromMetadata != "" || fl.KeyFromIdentity) {
			v.errf(fp+".key_from_request", "give one of key, key_from_metadata, key_from_identity and key_from_request")
		}
		if fl.Key == "" && fl.KeyFromMetadata == "" && !fl.KeyFromIdentity && fl.KeyFromRequest == "" && len(fl.Headers) == 0 &&
			len(fl.HeadersFromMetadata) == 0 && len(fl.HeadersFromIdentity) == 0 && len(fl.HeadersFromRequest) == 0 {
			v.errf(fp, "is empty and would match every record: give key, key_from_metadata, key_from_identity, key_from_request, headers, headers_from_metadata, headers_from_identity or headers_from_request")
		}
		for h, md := range fl.HeadersFromMetadata {
			if md != strings.ToLower(md) {
				v.errf(fp+".headers_from_metadata."+h, "gRPC metadata keys are lower case: write %q", strings.ToLower(md))
			}
		}
		if fl.KeyFromMetadata != strings.ToLower(fl.KeyFromMetadata) {
			v.errf(fp+".key_from_metadata", "gRPC metadata keys are lower case: write %q", strings.ToLower(fl.KeyFromMetadata))
		}
	}
}

func (v *validator) backends() {
	names := map[string]bool{}
	// members maps a group and an instance id to the back end using them.
	members := map[[2]string]string{}
	for i, b := range v.cfg.Backends {
		p := fmt.Sprintf("backends[%d]", i)
		if names[b.Name] {
			v.errf(p+".name", "backend name %q is used twice: keep names unique", b.Name)
		}
		names[b.Name] = true
		if _, ok := v.cfg.Cluster(b.Cluster); !ok {
			v.errf(p+".cluster", "no cluster is named %q: define it under clusters", b.Cluster)
		}
		if err := CheckTopic(b.Topic); err != nil {
			v.errf(p+".topic", "%v", err)
		}
		if b.ReplyTo != "" {
			if err := CheckTopic(b.ReplyTo); err != nil {
				v.errf(p+".reply_to", "%v", err)
			}
		}
		for j, w := range b.When {
			if w.Method == "" {
				continue
			}
			if err := CheckMethodPattern(w.Method); err != nil {
				v.errf(fmt.Sprintf("%s.when[%d].method", p, j), "%v", err)
			}
		}
		if b.Target == "" {
			v.errf(p+".target", "is required: the gRPC server's address, e.g. 127.0.0.1:50051")
		}
		if b.GroupInstanceID != "" {
			if err := CheckGroupInstanceID(b.GroupInstanceID, 249); err != nil {
				v.errf(p+".group_instance_id", "%v", err)
			}
			key := [2]string{b.GroupID, b.GroupInstanceID}
			if other, dup := members[key]; dup {
				v.errf(p+".group_instance_id", "%q is also the instance id of %s in group %q: two members with one id fence each other, give each its own", b.GroupInstanceID, other, b.GroupID)
			}
			members[key] = p
		}
		switch b.Start {
		case "earliest", "latest":
		default:
			v.errf(p+".start", "%q is not a start position: use earliest or latest", b.Start)
		}
		if b.Retry.MaxBackoff < b.Retry.InitialBackoff {
			v.errf(p+".retry.max_backoff", "is shorter than initial_backoff (%s)", b.Retry.InitialBackoff)
		}
		v.headerNames(p+".header_names", b.HeaderNames)
		v.valueFormat(p, b.Format, &b.JSON)
		v.backendSecurity(p, b)
	}
}

// CheckMethodPattern checks a route's "package.Service/Method" or
// "package.Service/*".
func CheckMethodPattern(m string) error {
	svc, meth, ok := strings.Cut(m, "/")
	switch {
	case m == "":
		return fmt.Errorf("is required: write package.Service/Method or package.Service/*")
	case !ok || svc == "" || meth == "" || strings.Contains(meth, "/"):
		return fmt.Errorf("%q is not a method: write package.Service/Method or package.Service/*", m)
	case strings.HasPrefix(m, "/"):
		return fmt.Errorf("%q: leave out the leading /", m)
	case meth != "*" && strings.Contains(meth, "*"):
		return fmt.Errorf("%q: * stands only for the whole method name", m)
	case strings.Contains(svc, "*"):
		return fmt.Errorf("%q: the service name must be written out", m)
	}
	return nil
}

// CheckGroupInstanceID checks a consumer group instance id by Kafka's rule
// for it (that of topic names), at most max characters long.
func CheckGroupInstanceID(id string, max int) error {
	switch {
	case id == "." || id == "..":
		return fmt.Errorf("%q is not a valid group instance id", id)
	case len(id) > max:
		return fmt.Errorf("group instance id is %d characters long: at most %d are allowed here", len(id), max)
	}
	for _, r := range id {
		if !(r == '.' || r == '_' || r == '-' || (r >= 'a' && r <= 'z') || (r >= 'A' && r <= 'Z') || (r >= '0' && r <= '9')) {
			return fmt.Errorf("group instance id %q has %q: Kafka allows only letters, digits, '.', '_' and '-'", id, r)
		}
	}
	return nil
}

// CheckTopic checks a Kafka topic name as the broker would.
func CheckTopic(t string) error {
	switch {
	case t == "":
		return fmt.Errorf("is required: name a Kafka topic")
	case t == "." || t == "..":
		return fmt.Errorf("%q is not a valid topic name", t)
	case len(t) > 249:
		return fmt.Errorf("topic name is %d characters long: Kafka allows at most 249", len(t))
	}
	for _, r := range t {
		if !(r == '.' || r == '_' || r == '-' || (r >= 'a' && r <= 'z') || (r >= 'A' && r <= 'Z') || (r >= '0' && r <= '9')) {
			return fmt.Errorf("topic %q has %q: Kafka allows only letters, digits, '.', '_' and '-'", t, r)
		}
	}
	return nil
}

func checkHostPort(addr string) error {
	// An empty host means every interface, which is allowed.
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%q is not host:port", addr)
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 0 || n > 65535 {
		return fmt.Errorf("%q: port %q is not a number from 0 to 65535", addr, port)
	}
	return nil
}
