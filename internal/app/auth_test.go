package app_test

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	kafkav1 "github.com/ferryproxy/ferry/api/ferry/kafka/v1"
	"github.com/ferryproxy/ferry/api/kafkapixy"
	"github.com/ferryproxy/ferry/internal/config"
	"github.com/ferryproxy/ferry/internal/testkit"
)

// issuer signs test tokens with a key whose set it writes to a JWKS file.
type issuer struct {
	key  *rsa.PrivateKey
	jwks string // the file
}

func newIssuer(t testing.TB, dir string) *issuer {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	b64 := base64.RawURLEncoding.EncodeToString
	set, _ := json.Marshal(map[string]any{"keys": []map[string]string{{
		"kty": "RSA", "kid": "test", "use": "sig", "alg": "RS256",
		"n": b64(key.N.Bytes()), "e": b64(big.NewInt(int64(key.E)).Bytes()),
	}}})
	path := filepath.Join(dir, "jwks.json")
	writeFile(t, path, string(set))
	return &issuer{key: key, jwks: path}
}

// token returns a token for sub with roles, for audience ferry, valid
// for an hour from now plus shift.
func (is *issuer) token(t testing.TB, sub string, roles []string, shift time.Duration) string {
	t.Helper()
	now := time.Now().Add(shift)
	tok := jwt.NewWithClaims(jwt.SigningMethodRS256, jwt.MapClaims{
		"sub": sub, "roles": roles, "aud": "ferry", "iss": "https://idp.test/",
		"iat": now.Unix(), "nbf": now.Unix(), "exp": now.Add(time.Hour).Unix(),
	})
	tok.Header["kid"] = "test"
	s, err := tok.SignedString(is.key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// bearerMD is metadata carrying the token.
func bearerMD(token string) metadata.MD { return metadata.Pairs("authorization", "Bearer "+token) }

// bearer returns ctx with the token as its authorization metadata.
func bearer(ctx context.Context, token string) context.Context {
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token)
}

const authYAML = `auth:
  jwt:
    jwks_file: %q
    issuer: https://idp.test/
    audience: ferry
`

// TestAuthRoutes checks identities and per-route rules on produce and
// fetch routes: who may call, the identity as record key and header, and
// each caller streamed only its own records.
func TestAuthRoutes(t *testing.T) {
	is := newIssuer(t, t.TempDir())
	topic := kit.Topic(t, 1, nil)
	feed := kit.Topic(t, 1, nil)
	a := startFerry(t, fmt.Sprintf(`
  - name: echo
    when:
      - method: grpc.examples.echo.Echo/UnaryEcho
    allow:
      - roles: [echo]
      - identities: ["svc-*"]
    produce:
      topic: %s
      key_from_identity: true
      identity_header: "meta:x-identity"
  - name: mine
    when:
      - method: example.FanoutService/FanoutServerStream
    fetch:
      topic: %s
      filters:
        - key_from_identity: true
`+authYAML, topic, feed, is.jwks))
	cc := dial(t, a)
	ctx := testkit.Context(t, 30*time.Second)
	const unary = "UnaryEcho"

	alice := is.token(t, "alice", []string{"echo"}, 0)
	// A metadata entry that would pass for the identity header, and a
	// bearer token, neither of which may reach Kafka.
	md := metadata.Pairs("x-identity", "mallory", "authorization", "Bearer "+alice)
	if r := call(ctx, cc, unary, md, "hi"); r.err != nil {
		t.Fatalf("alice: %v", r.err)
	}
	if r := call(ctx, cc, unary, bearerMD(is.token(t, "svc-billing", nil, 0)), "hi"); r.err != nil {
		t.Fatalf("svc-billing: %v", r.err)
	}
	recs := readTopic(t, topic, 2)
	for i, want := range []string{"alice", "svc-billing"} {
		r := recs[i]
		if string(r.Key) != want {
			t.Errorf("record %d key %q; want %q", i, r.Key, want)
		}
		var ids []string
		for _, h := range r.Headers {
			if h.Key == "meta:x-identity" {
				ids = append(ids, string(h.Value))
			}
			if h.Key == "meta:authorization" || strings.Contains(string(h.Value), "Bearer") {
				t.Errorf("record %d carries the caller's credentials in %s", i, h.Key)
			}
		}
		if !slices.Equal(ids, []string{want}) {
			t.Errorf("record %d meta:x-identity headers %q; want only %q", i, ids, want)
		}
	}

	for _, tc := range []struct {
		name string
		md   metadata.MD
		code codes.Code
		msg  string
	}{
		{"no token", nil, codes.Unauthenticated, "no credentials"},
		{"role missing", bearerMD(is.token(t, "bob", []string{"reader"}, 0)), codes.PermissionDenied, `route "echo" does not allow identity "bob"`},
		{"expired", bearerMD(is.token(t, "alice", []string{"echo"}, -2*time.Hour)), codes.Unauthenticated, "expired"},
		{"not yet valid", bearerMD(is.token(t, "alice", []string{"echo"}, time.Hour)), codes.Unauthenticated, "not yet valid"},
		{"other key", bearerMD(newIssuer(t, t.TempDir()).token(t, "alice", []string{"echo"}, 0)), codes.Unauthenticated, "signature"},
	} {
		r := call(ctx, cc, unary, tc.md, "hi")
		if status.Code(r.err) != tc.code || !strings.Contains(r.err.Error(), tc.msg) {
			t.Errorf("%s: %v; want %s with %q", tc.name, r.err, tc.code, tc.msg)
		}
	}
	if n := endOffset(t, topic); n != 2 {
		t.Errorf("%d records on the topic; the refused calls wrote some", n)
	}

	// Health needs no credentials.
	if _, err := healthpb.NewHealthClient(dialAddr(t, a.GRPCAddr())).Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
		t.Errorf("health without credentials: %v", err)
	}

	// The fetch route streams each caller the records keyed with its
	// identity.
	p := kit.Client(t)
	for _, k := range []string{"alice", "bob", "alice", "carol"} {
		produceMsgs(t, p, feed, k, nil, k)
	}
	for who, n := range map[string]int{"alice": 2, "bob": 1} {
		s := subscribe(t, cc, bearerMD(is.token(t, who, nil, 0)))
		for _, m := range msgs(s.take(t, n)) {
			if m != who {
				t.Errorf("%s got a record of %s", who, m)
			}
		}
		s.cancel()
	}
	s := subscribe(t, cc, nil)
	if _, err := s.next(); status.Code(err) != codes.Unauthenticated {
		t.Errorf("fetch without credentials: %v", err)
	}
	s.cancel()
}

// TestAuthKafkaAPI checks kafka_api.allow on all four faces: Ferry's and
// Kafka-Pixy's APIs, over gRPC and over REST.
func TestAuthKafkaAPI(t *testing.T) {
	is := newIssuer(t, t.TempDir())
	mine := kit.Topic(t, 1, nil)
	theirs := kit.Topic(t, 1, nil)
	group := "g-" + mine
	cfg, err := config.Parse(filepath.Join(t.TempDir(), "ferry.yaml"), []byte(kafkaAPIYAML(t, "")+fmt.Sprintf(`  allow:
    - identities: [alice]
      produce: [%q]
      consume: [%q]
      groups: ["g-*"]
`, mine, mine)+fmt.Sprintf(authYAML, is.jwks)))
	if err != nil {
		t.Fatal(err)
	}
	a := startConfig(t, cfg)
	cc := dialAddr(t, a.GRPCAddr())
	ctx := testkit.Context(t, 30*time.Second)
	alice := is.token(t, "alice", nil, 0)
	actx := bearer(ctx, alice)
	base := "http://" + a.HTTPAddr()

	denied := func(face string, err error) {
		t.Helper()
		if status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), theirs) {
			t.Errorf("%s: %v; want PERMISSION_DENIED naming the topic", face, err)
		}
	}
	// Ferry's gRPC face.
	ferry := kafkav1.NewKafkaClient(cc)
	if _, err := ferry.Produce(actx, &kafkav1.ProduceRequest{Topic: mine, ValueText: proto.String("1")}); err != nil {
		t.Fatalf("ferry gRPC produce: %v", err)
	}
	_, err = ferry.Produce(actx, &kafkav1.ProduceRequest{Topic: theirs, ValueText: proto.String("1")})
	denied("ferry gRPC produce", err)
	if _, err := ferry.Produce(ctx, &kafkav1.ProduceRequest{Topic: mine, ValueText: proto.String("1")}); status.Code(err) != codes.Unauthenticated {
		t.Errorf("ferry gRPC without a token: %v", err)
	}
	_, err = ferry.DescribeTopic(actx, &kafkav1.DescribeTopicRequest{Topic: theirs})
	denied("ferry gRPC describe", err)
	lt, err := ferry.ListTopics(actx, &kafkav1.ListTopicsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(lt.GetTopics(), mine) || slices.Contains(lt.GetTopics(), theirs) {
		t.Errorf("alice lists %v; want %s and not %s", lt.GetTopics(), mine, theirs)
	}

	// Kafka-Pixy's gRPC face.
	pixy := kafkapixy.NewKafkaPixyClient(cc)
	_, err = pixy.Produce(actx, &kafkapixy.ProdRq{Topic: theirs, Message: []byte("x")})
	denied("pixy gRPC produce", err)
	_, err = pixy.ConsumeNAck(actx, &kafkapixy.ConsNAckRq{Topic: theirs, Group: group, NoAck: true})
	denied("pixy gRPC consume", err)
	if _, err := pixy.ConsumeNAck(actx, &kafkapixy.ConsNAckRq{Topic: mine, Group: "other", NoAck: true}); status.Code(err) != codes.PermissionDenied {
		t.Errorf("pixy gRPC consume in a group not allowed: %v", err)
	}
	m, err := pixy.ConsumeNAck(actx, &kafkapixy.ConsNAckRq{Topic: mine, Group: group, NoAck: true})
	if err != nil || string(m.Message) != "1" {
		t.Fatalf("pixy gRPC consume: %v %v", m, err)
	}

	// The REST faces: 401 without a token, 403 for another's topic.
	rest := func(method, path, token, body string) (int, string) {
		t.Helper()
		req, _ := http.NewRequestWithContext(ctx, method, base+path, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	for _, tc := range []struct {
		face, method, path, token string
		want                      int
	}{
		{"ferry REST", "POST", "/v1/clusters/default/topics/" + mine + "/records", alice, 200},
		{"ferry REST", "POST", "/v1/clusters/default/topics/" + theirs + "/records", alice, 403},
		{"ferry REST", "POST", "/v1/clusters/default/topics/" + mine + "/records", "", 401},
		{"ferry REST", "POST", "/v1/clusters/default/topics/" + mine + "/records", "not-a-jwt", 401},
		{"pixy REST", "POST", "/topics/" + mine + "/messages?sync", alice, 200},
		{"pixy REST", "POST", "/topics/" + theirs + "/messages?sync", alice, 403},
		{"pixy REST", "POST", "/topics/" + mine + "/messages?sync", "", 401},
		{"pixy REST", "GET", "/topics/" + theirs + "/messages?group=" + group, alice, 403},
		{"pixy REST ping", "GET", "/_ping", "", 200},
	} {
		code, body := rest(tc.method, tc.path, tc.token, `{"valueJson": {"n": 1}}`)
		if code != tc.want {
			t.Errorf("%s %s %s: %d %s; want %d", tc.face, tc.method, tc.path, code, body, tc.want)
		}
		if code == 401 || code == 403 {
			var e map[string]any
			if json.Unmarshal([]byte(body), &e) != nil || (e["error"] == nil && e["message"] == nil) {
				t.Errorf("%s %s: %d with body %q; want a JSON error", tc.face, tc.path, code, body)
			}
		}
	}
}

// TestAuthClientCertificates checks identities taken from client
// certificates the gRPC listener verified (client_auth: request).
func TestAuthClientCertificates(t *testing.T) {
	ca := newTestCA(t)
	dir := t.TempDir()
	c, k, _ := ca.issue(t, x509.ExtKeyUsageServerAuth)
	writeFile(t, filepath.Join(dir, "server.pem"), string(c))
	writeFile(t, filepath.Join(dir, "server-key.pem"), string(k))
	writeFile(t, filepath.Join(dir, "ca.pem"), string(ca.PEM))
	topic := kit.Topic(t, 1, nil)
	y := fmt.Sprintf(`
clusters: [{name: default%s}]
listeners:
  grpc:
    address: 127.0.0.1:0
    shutdown_timeout: 2s
    tls: {cert_file: server.pem, key_file: server-key.pem, client_auth: request, client_ca_file: ca.pem}
protos:
  - files: [echo.proto]
    import_paths: [%q]
log:
  level: ${FERRY_TEST_LOG:-warn}
auth:
  client_certificates: {identity: common_name}
routes:
  - name: echo
    when: [{method: grpc.examples.echo.Echo/*}]
    allow: [{identities: [alice]}]
    produce: {topic: %s, key_from_identity: true}
`, kit.ClusterYAML(t), filepath.Join(root(t), "examples", "echo"), topic)
	path := filepath.Join(dir, "ferry.yaml")
	writeFile(t, path, y)
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	a := startConfig(t, cfg)
	ctx := testkit.Context(t, 30*time.Second)
	callAs := func(certs ...tls.Certificate) error {
		cc, err := grpc.NewClient(a.GRPCAddr(),
			grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: ca.Pool, Certificates: certs})),
			grpc.WithDefaultCallOptions(grpc.ForceCodecV2(rawCodec{})))
		if err != nil {
			t.Fatal(err)
		}
		defer cc.Close()
		return call(ctx, cc, "UnaryEcho", nil, "hi").err
	}
	named := func(cn string) tls.Certificate {
		c, k, _ := ca.IssueNamed(t, x509.ExtKeyUsageClientAuth, cn)
		cert, err := tls.X509KeyPair(c, k)
		if err != nil {
			t.Fatal(err)
		}
		return cert
	}
	if err := callAs(named("alice")); err != nil {
		t.Fatalf("alice's certificate: %v", err)
	}
	if err := callAs(named("bob")); status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), `identity "bob"`) {
		t.Errorf("bob's certificate: %v; want PERMISSION_DENIED naming bob", err)
	}
	if err := callAs(); status.Code(err) != codes.Unauthenticated {
		t.Errorf("no certificate: %v; want UNAUTHENTICATED", err)
	}
	if r := readTopic(t, topic, 1); string(r[0].Key) != "alice" || endOffset(t, topic) != 1 {
		t.Errorf("record key %q, %d records; want one keyed alice", r[0].Key, endOffset(t, topic))
	}

	// The same over the Connect protocol on the same port, on HTTP/2 (a
	// client offering h2 and http/1.1, as browsers do) and on HTTP/1.1.
	connectAs := func(h2 bool, certs ...tls.Certificate) int {
		tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.Pool, Certificates: certs}, ForceAttemptHTTP2: h2}
		if !h2 {
			tr.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
		}
		defer tr.CloseIdleConnections()
		res, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Post("https://"+a.GRPCAddr()+echoSvc+"UnaryEcho", "application/json", strings.NewReader(`{"message":"web"}`))
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if want := map[bool]int{true: 2, false: 1}[h2]; res.ProtoMajor != want {
			t.Errorf("HTTP/%d; want HTTP/%d", res.ProtoMajor, want)
		}
		return res.StatusCode
	}
	for _, h2 := range []bool{true, false} {
		if code := connectAs(h2, named("alice")); code != http.StatusOK {
			t.Errorf("Connect with alice's certificate (h2 %v): %d", h2, code)
		}
		if code := connectAs(h2, named("bob")); code != http.StatusForbidden {
			t.Errorf("Connect with bob's certificate (h2 %v): %d; want 403", h2, code)
		}
		if code := connectAs(h2); code != http.StatusUnauthorized {
			t.Errorf("Connect without a certificate (h2 %v): %d; want 401", h2, code)
		}
	}
	for _, r := range readTopic(t, topic, 3) {
		if string(r.Key) != "alice" {
			t.Errorf("record key %q; want alice", r.Key)
		}
	}
}
