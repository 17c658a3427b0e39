package pixy

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/ferryproxy/ferry/api/kafkapixy"
	"github.com/ferryproxy/ferry/internal/httpcode"
	"github.com/ferryproxy/ferry/internal/kafkaapi/reqbody"
)

// kafkaHeaderPrefix marks the HTTP headers that become record headers, in
// Go's canonical form (HTTP header names are case-insensitive).
const kafkaHeaderPrefix = "X-Kafka-"

// handler serves Kafka-Pixy's REST paths by calling the gRPC face's
// methods, so both faces share one translation to the engine.
type handler struct {
	srv     *Server
	maxBody int64
}

// route is one REST path and the methods it answers.
type route struct {
	method, path string
	serve        func(*handler, http.ResponseWriter, *http.Request)
}

// routes are Kafka-Pixy's REST paths; each is served as written and under
// /clusters/{cluster}.
var routes = []route{
	{http.MethodPost, "/topics/{topic}/messages", (*handler).produce},
	{http.MethodGet, "/topics/{topic}/messages", (*handler).consume},
	{http.MethodPost, "/topics/{topic}/acks", (*handler).ack},
	{http.MethodGet, "/topics/{topic}/offsets", (*handler).getOffsets},
	{http.MethodPost, "/topics/{topic}/offsets", (*handler).setOffsets},
	{http.MethodGet, "/topics/{topic}/consumers", (*handler).consumers},
	{http.MethodGet, "/topics", (*handler).listTopics},
	{http.MethodGet, "/topics/{topic}", (*handler).topicMetadata},
	{http.MethodGet, "/_ping", (*handler).ping},
}

// NewHandler returns Kafka-Pixy's REST API served by srv. Request bodies
// larger than maxBody bytes are refused with 413; zero or less means
// Kafka-Pixy's 1 MiB. Every error answer is JSON {"error": "<text>"},
// unknown paths and wrong methods included.
func NewHandler(srv *Server, maxBody int64) http.Handler {
	h := &handler{srv: srv, maxBody: maxBody}
	mux := http.NewServeMux()
	allowed := map[string][]string{}
	var paths []string
	for _, rt := range routes {
		serve := rt.serve
		fn := func(w http.ResponseWriter, r *http.Request) {
			if !h.decodeBody(w, r) {
				return
			}
			serve(h, w, r)
		}
		for _, p := range []string{rt.path, "/clusters/{cluster}" + rt.path} {
			mux.HandleFunc(rt.method+" "+p, fn)
			if allowed[p] == nil {
				paths = append(paths, p)
			}
			allowed[p] = append(allowed[p], rt.method)
		}
	}
	// A pattern without a method is less specific than one with, so these
	// catch only the methods a path does not serve; the mux's own answers
	// would be plain text.
	for _, p := range paths {
		allow := strings.Join(allowed[p], ", ")
		mux.HandleFunc(p, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Allow", allow)
			writeJSON(w, http.StatusMethodNotAllowed, errorRs{fmt.Sprintf("method %s not allowed on %s: use %s", r.Method, r.URL.Path, allow)})
		})
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusNotFound, errorRs{fmt.Sprintf("no such path %s", r.URL.Path)})
	})
	return mux
}

// decodeBody limits r's body to maxBody bytes. A compressed body
// (Content-Encoding: gzip) is decompressed first, within the same limit
// counted decompressed, so the handlers read the message itself. It
// answers and returns false when the body is refused.
func (h *handler) decodeBody(w http.ResponseWriter, r *http.Request) bool {
	if !reqbody.Encoded(r) {
		r.Body = http.MaxBytesReader(w, r.Body, h.maxBody)
		return true
	}
	body, err := reqbody.Read(r, h.maxBody)
	var tooLarge *reqbody.TooLargeError
	var unsupported *reqbody.UnsupportedEncodingError
	switch {
	case errors.As(err, &tooLarge):
		writeJSON(w, http.StatusRequestEntityTooLarge, errorRs{fmt.Sprintf("request body is larger than %d bytes, counted decompressed", tooLarge.Limit)})
		return false
	case errors.As(err, &unsupported):
		writeJSON(w, http.StatusUnsupportedMediaType, errorRs{unsupported.Error()})
		return false
	case err != nil:
		writeJSON(w, http.StatusBadRequest, errorRs{err.Error()})
		return false
	}
	reqbody.Replace(r, body)
	return true
}

// errorRs is every error answer.
type errorRs struct {
	Error string `json:"error"`
}

// writeJSON answers with v as JSON.
func writeJSON(w http.ResponseWriter, code int, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		code, body = http.StatusInternalServerError, []byte(`{"error":"encoding the answer failed"}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_, _ = w.Write(body)
}

// writeError answers with err, a gRPC status from the gRPC face, as JSON
// and the HTTP status httpStatus gives.
func writeError(w http.ResponseWriter, err error) {
	writeJSON(w, httpStatus(err), errorRs{status.Convert(err).Message()})
}

// badRequest answers 400, or 413 when reading the body hit the limit.
func badRequest(w http.ResponseWriter, err error) {
	var tooBig *http.MaxBytesError
	if errors.As(err, &tooBig) {
		writeJSON(w, http.StatusRequestEntityTooLarge, errorRs{fmt.Sprintf("request body is larger than %d bytes", tooBig.Limit)})
		return
	}
	writeJSON(w, http.StatusBadRequest, errorRs{err.Error()})
}

// httpStatus is the one place the Kafka-Pixy face turns an error into an
// HTTP status: Ferry's table (httpcode.FromCode, vanguard's mapping, which
// Ferry's own REST API answers too), except where Kafka-Pixy's REST API
// answered otherwise and its clients rely on it:
//   - the empty long poll is 408 Request Timeout, Kafka-Pixy's answer to a
//     consume request that found no message in time (only that error: any
//     other NOT_FOUND stays 404);
//   - FAILED_PRECONDITION is 409 Conflict, not 400: the request was fine
//     but the state moved, as when acknowledging a message of a partition
//     another instance owns now, which a client cannot fix by changing its
//     request (409, like ABORTED's, says so; 400 would blame the request).
func httpStatus(err error) int {
	if err == errLongPollTimeout {
		return http.StatusRequestTimeout
	}
	c := status.Code(err)
	if c == codes.FailedPrecondition {
		return http.StatusConflict
	}
	return httpcode.FromCode(c)
}

// flag reports whether a parameter is set. As in Kafka-Pixy, presence is
// what counts, whatever the value: "?sync", "?sync=" and even "?sync=false"
// are set. A Kafka-Pixy client that sent noAck=false got no acks, and must
// not have its messages acknowledged (lost on a crash) by Ferry.
func flag(params url.Values, name string) bool {
	_, ok := params[name]
	return ok
}

// group returns the group parameter; exactly one is expected unless
// optional.
func group(params url.Values, optional bool) (string, error) {
	gs := params["group"]
	switch {
	case len(gs) > 1:
		return "", fmt.Errorf("one group is expected, but %d were given", len(gs))
	case len(gs) == 0 || gs[0] == "":
		if optional {
			return "", nil
		}
		return "", errors.New("group is required")
	}
	return gs[0], nil
}

// partitionOffset reads a partition and an offset parameter, both required
// and neither negative.
func partitionOffset(params url.Values, partitionName, offsetName string) (int32, int64, error) {
	p, err := strconv.ParseInt(params.Get(partitionName), 10, 32)
	if err != nil || p < 0 {
		return 0, 0, fmt.Errorf("%s must be a partition number, not %q", partitionName, params.Get(partitionName))
	}
	o, err := strconv.ParseInt(params.Get(offsetName), 10, 64)
	if err != nil || o < 0 {
		return 0, 0, fmt.Errorf("%s must be an offset, not %q", offsetName, params.Get(offsetName))
	}
	return int32(p), o, nil
}

// produce serves POST /topics/{topic}/messages.
func (h *handler) produce(w http.ResponseWriter, r *http.Request) {
	msg, params, err := readMessage(r, h.maxBody)
	if err != nil {
		badRequest(w, err)
		return
	}
	headers, err := kafkaHeaders(r.Header)
	if err != nil {
		badRequest(w, err)
		return
	}
	rq := &kafkapixy.ProdRq{
		Cluster:   r.PathValue("cluster"),
		Topic:     r.PathValue("topic"),
		Message:   msg,
		AsyncMode: !flag(params, "sync"),
		Headers:   headers,
	}
	// No key parameter is no key; an empty one is the empty key.
	if keys, ok := params["key"]; ok && len(keys) > 0 {
		rq.KeyValue = []byte(keys[0])
	} else {
		rq.KeyUndefined = true
	}
	rs, err := h.srv.produce(r.Context(), rq)
	if err != nil {
		writeError(w, err)
		return
	}
	if rq.AsyncMode {
		writeJSON(w, http.StatusOK, struct{}{})
		return
	}
	writeJSON(w, http.StatusOK, produceRs{Partition: rs.Partition, Offset: rs.Offset})
}

type produceRs struct {
	Partition int32 `json:"partition"`
	Offset    int64 `json:"offset"`
}

// readMessage reads the message to produce as Kafka-Pixy did: the body for
// text and JSON, the form field msg for forms. It returns the parameters
// too: for a form they include its fields, as Kafka-Pixy's did.
func readMessage(r *http.Request, maxBody int64) ([]byte, url.Values, error) {
	ct := r.Header.Get("Content-Type")
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil && ct != "" {
		return nil, nil, fmt.Errorf("bad Content-Type %q: %w", ct, err)
	}
	switch {
	case mt == "text/plain" || mt == "application/json" ||
		strings.HasPrefix(mt, "application/") && strings.HasSuffix(mt, "+json"):
		msg, err := io.ReadAll(r.Body)
		if err != nil {
			return nil, nil, fmt.Errorf("reading the message: %w", err)
		}
		return msg, r.URL.Query(), nil
	case mt == "application/x-www-form-urlencoded":
		if err := r.ParseForm(); err != nil {
			return nil, nil, fmt.Errorf("reading the form: %w", err)
		}
		msgs, ok := r.Form["msg"]
		if !ok || len(msgs) == 0 {
			return nil, nil, errors.New("form field msg is required")
		}
		return []byte(msgs[0]), r.Form, nil
	case mt == "multipart/form-data":
		if err := r.ParseMultipartForm(maxBody); err != nil {
			return nil, nil, fmt.Errorf("reading the form: %w", err)
		}
		if msgs := r.MultipartForm.Value["msg"]; len(msgs) > 0 {
			return []byte(msgs[0]), r.Form, nil
		}
		if files := r.MultipartForm.File["msg"]; len(files) > 0 {
			f, err := files[0].Open()
			if err != nil {
				return nil, nil, fmt.Errorf("reading form field msg: %w", err)
			}
			defer f.Close()
			msg, err := io.ReadAll(f)
			if err != nil {
				return nil, nil, fmt.Errorf("reading form field msg: %w", err)
			}
			return msg, r.Form, nil
		}
		return nil, nil, errors.New("form field msg is required")
	}
	return nil, nil, fmt.Errorf("unsupported Content-Type %q: send the message as text/plain or JSON, or as form field msg", ct)
}

// kafkaHeaders turns X-Kafka-<Name> HTTP headers, whose values are base64,
// into record headers named <Name>, in name order. Go canonicalises header
// names (x-kafka-trace-id arrives as X-Kafka-Trace-Id), as Kafka-Pixy's
// server did too.
func kafkaHeaders(hdr http.Header) ([]*kafkapixy.RecordHeader, error) {
	var names []string
	for name := range hdr {
		if strings.HasPrefix(name, kafkaHeaderPrefix) && len(name) > len(kafkaHeaderPrefix) {
			names = append(names, name)
		}
	}
	sort.Strings(names)
	var out []*kafkapixy.RecordHeader
	for _, name := range names {
		for _, v := range hdr[name] {
			b, err := base64.StdEncoding.DecodeString(v)
			if err != nil {
				return nil, fmt.Errorf("header %s: the value must be base64: %w", name, err)
			}
			out = append(out, &kafkapixy.RecordHeader{Key: name[len(kafkaHeaderPrefix):], Value: b})
		}
	}
	return out, nil
}

// consume serves GET /topics/{topic}/messages.
func (h *handler) consume(w http.ResponseWriter, r *http.Request) {
	params := r.URL.Query()
	g, err := group(params, false)
	if err != nil {
		badRequest(w, err)
		return
	}
	a := ack{mode: ackAuto}
	_, hasPartition := params["ackPartition"]
	_, hasOffset := params["ackOffset"]
	switch {
	case flag(params, "noAck"):
		a.mode = ackNone
	case hasPartition && hasOffset:
		a.mode = ackExplicit
		if a.partition, a.offset, err = partitionOffset(params, "ackPartition", "ackOffset"); err != nil {
			badRequest(w, err)
			return
		}
	case hasPartition || hasOffset:
		badRequest(w, errors.New("ackPartition and ackOffset go together: give both or neither"))
		return
	}
	topic := r.PathValue("topic")
	msg, err := h.srv.consume(r.Context(), r.PathValue("cluster"), g, topic, a)
	if err != nil {
		writeError(w, err)
		return
	}
	rs := consumeRs{
		Key:       msg.Key,
		Value:     msg.Value,
		Partition: msg.Partition,
		Offset:    msg.Offset,
		Headers:   make([]consumeHeader, 0, len(msg.Headers)),
	}
	for _, hd := range msg.Headers {
		rs.Headers = append(rs.Headers, consumeHeader{Key: hd.Key, Value: hd.Value})
	}
	writeJSON(w, http.StatusOK, rs)
}

// consumeRs is a consumed message; byte slices are base64 in JSON and a nil
// key is null.
type consumeRs struct {
	Key       []byte          `json:"key"`
	Value     []byte          `json:"value"`
	Partition int32           `json:"partition"`
	Offset    int64           `json:"offset"`
	Headers   []consumeHeader `json:"headers"`
}

type consumeHeader struct {
	Key   string `json:"key"`
	Value []byte `json:"value"`
}

// ack serves POST /topics/{topic}/acks.
//
// Its parameters are read, as Kafka-Pixy read them, from the query and from
// a form body (curl -d group=g -d partition=0 -d offset=1).
func (h *handler) ack(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		badRequest(w, fmt.Errorf("reading the form: %w", err))
		return
	}
	params := r.Form
	g, err := group(params, false)
	if err != nil {
		badRequest(w, err)
		return
	}
	p, o, err := partitionOffset(params, "partition", "offset")
	if err != nil {
		badRequest(w, err)
		return
	}
	_, err = h.srv.Ack(r.Context(), &kafkapixy.AckRq{
		Cluster: r.PathValue("cluster"), Topic: r.PathValue("topic"), Group: g, Partition: p, Offset: o,
	})
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, struct{}{})
}

// partitionOffsetView is one partition in GET and POST
// /topics/{topic}/offsets; metadata and sparse_acks are left out when
// empty, as Kafka-Pixy did.
type partitionOffsetView struct {
	Partition  int32  `json:"partition"`
	Begin      int64  `json:"begin"`
	End        int64  `json:"end"`
	Count      int64  `json:"count"`
	Offset     int64  `json:"offset"`
	Lag        int64  `json:"lag"`
	Metadata   string `json:"metadata,omitempty"`
	SparseAcks string `json:"sparse_acks,omitempty"`
}

// getOffsets serves GET /topics/{topic}/offsets.
func (h *handler) getOffsets(w http.ResponseWriter, r *http.Request) {
	g, err := group(r.URL.Query(), false)
	if err != nil {
		badRequest(w, err)
		return
	}
	rs, err := h.srv.GetOffsets(r.Context(), &kafkapixy.GetOffsetsRq{
		Cluster: r.PathValue("cluster"), Topic: r.PathValue("topic"), Group: g,
	})
	if err != nil {
		writeError(w, err)
		return
	}
	views := make([]partitionOffsetView, 0, len(rs.GetOffsets()))
	for _, po := range rs.GetOffsets() {
		views = append(views, partitionOffsetView{
			Partition:  po.GetPartition(),
			Begin:      po.GetBegin(),
			End:        po.GetEnd(),
			Count:      po.GetCount(),
			Offset:     po.GetOffset(),
			Lag:        po.GetLag(),
			Metadata:   po.GetMetadata(),
			SparseAcks: po.GetSparseAcks(),
		})
	}
	writeJSON(w, http.StatusOK, views)
}

// setOffsets serves POST /topics/{topic}/offsets.
func (h *handler) setOffsets(w http.ResponseWriter, r *http.Request) {
	g, err := group(r.URL.Query(), false)
	if err != nil {
		badRequest(w, err)
		return
	}
	var views []partitionOffsetView
	// A misspelt field would otherwise be dropped: {"ofset": 5} would
	// move the partition to offset 0. The fields GET answers with are
	// known, so its answer can be sent back as it is.
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&views); err != nil {
		badRequest(w, fmt.Errorf("reading the offsets, a JSON array of {\"partition\",\"offset\",\"metadata\"}: %w", err))
		return
	}
	rq := &kafkapixy.SetOffsetsRq{Cluster: r.PathValue("cluster"), Topic: r.PathValue("topic"), Group: g}
	for _, v := range views {
		rq.Offsets = append(rq.Offsets, &kafkapixy.PartitionOffset{Partition: v.Partition, Offset: v.Offset, Metadata: v.Metadata})
	}
	if _, err := h.srv.SetOffsets(r.Context(), rq); err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, struct{}{})
}

// consumers serves GET /topics/{topic}/consumers.
func (h *handler) consumers(w http.ResponseWriter, r *http.Request) {
	g, err := group(r.URL.Query(), true)
	if err != nil {
		badRequest(w, err)
		return
	}
	rs, err := h.srv.ListConsumers(r.Context(), &kafkapixy.ListConsumersRq{
		Cluster: r.PathValue("cluster"), Topic: r.PathValue("topic"), Group: g,
	})
	if err != nil {
		writeError(w, err)
		return
	}
	out := make(map[string]map[string][]int32, len(rs.GetGroups()))
	for group, cg := range rs.GetGroups() {
		members := make(map[string][]int32, len(cg.GetConsumers()))
		for member, cp := range cg.GetConsumers() {
			members[member] = append([]int32{}, cp.GetPartitions()...)
		}
		out[group] = members
	}
	writeJSON(w, http.StatusOK, out)
}

// topicView is Kafka-Pixy's JSON for a topic.
type topicView struct {
	Config     *topicConfigView `json:"config,omitempty"`
	Partitions []partitionView  `json:"partitions,omitempty"`
}

type topicConfigView struct {
	Version int32             `json:"version"`
	Config  map[string]string `json:"config"`
}

type partitionView struct {
	Partition int32   `json:"partition"`
	Leader    int32   `json:"leader"`
	Replicas  []int32 `json:"replicas"`
	ISR       []int32 `json:"isr"`
}

func newTopicView(tm *kafkapixy.GetTopicMetadataRs, withConfig bool) topicView {
	var v topicView
	if withConfig {
		cfg := tm.GetConfig()
		if cfg == nil {
			cfg = map[string]string{}
		}
		v.Config = &topicConfigView{Version: tm.GetVersion(), Config: cfg}
	}
	for _, p := range tm.GetPartitions() {
		v.Partitions = append(v.Partitions, partitionView{
			Partition: p.GetPartition(),
			Leader:    p.GetLeader(),
			Replicas:  nonNil(p.GetReplicas()),
			ISR:       nonNil(p.GetIsr()),
		})
	}
	return v
}

// nonNil makes an empty list [] rather than null in JSON.
func nonNil(s []int32) []int32 {
	if s == nil {
		return []int32{}
	}
	return s
}

// listTopics serves GET /topics: the names, or with withPartitions or
// withConfig a map of name to topic.
func (h *handler) listTopics(w http.ResponseWriter, r *http.Request) {
	params := r.URL.Query()
	withPartitions, withConfig := flag(params, "withPartitions"), flag(params, "withConfig")
	cluster := r.PathValue("cluster")
	if !withPartitions && !withConfig {
		names, err := h.srv.svc.ListTopics(r.Context(), cluster, false)
		if err != nil {
			writeError(w, err)
			return
		}
		if names == nil {
			names = []string{}
		}
		writeJSON(w, http.StatusOK, names)
		return
	}
	topics, err := h.srv.listTopics(r.Context(), cluster, withPartitions, withConfig)
	if err != nil {
		writeError(w, err)
		return
	}
	out := make(map[string]topicView, len(topics))
	for name, tm := range topics {
		out[name] = newTopicView(tm, withConfig)
	}
	writeJSON(w, http.StatusOK, out)
}

// topicMetadata serves GET /topics/{topic}: always its configuration, as
// Kafka-Pixy did, and its partitions with withPartitions.
func (h *handler) topicMetadata(w http.ResponseWriter, r *http.Request) {
	tm, err := h.srv.GetTopicMetadata(r.Context(), &kafkapixy.GetTopicMetadataRq{
		Cluster:        r.PathValue("cluster"),
		Topic:          r.PathValue("topic"),
		WithPartitions: flag(r.URL.Query(), "withPartitions"),
	})
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, newTopicView(tm, true))
}

// ping serves GET /_ping, Kafka-Pixy's liveness check. Under
// /clusters/{cluster} it also checks that the cluster is configured.
func (h *handler) ping(w http.ResponseWriter, r *http.Request) {
	if c := r.PathValue("cluster"); c != "" {
		known := false
		for _, name := range h.srv.svc.Clusters() {
			known = known || name == c
		}
		if !known {
			writeJSON(w, http.StatusBadRequest, errorRs{fmt.Sprintf("unknown cluster %q", c)})
			return
		}
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	_, _ = io.WriteString(w, "pong")
}
