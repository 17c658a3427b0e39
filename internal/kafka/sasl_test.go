package kafka

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/ferryproxy/ferry/internal/config"
)

// saslRecorder is an embedded broker that accepts any SASL mechanism, the
// ones kfake does not speak (OAUTHBEARER, AWS_MSK_IAM) among them, and
// records what each authentication sent. answer is the broker's reply to
// the client's first message.
type saslRecorder struct {
	seeds []string
	mu    sync.Mutex
	mechs []string
	auths [][]byte
}

func newSASLRecorder(t *testing.T, answer []byte) *saslRecorder {
	t.Helper()
	kf, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "sec"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(kf.Close)
	r := &saslRecorder{seeds: kf.ListenAddrs()}
	kf.ControlKey(int16(kmsg.SASLHandshake), func(req kmsg.Request) (kmsg.Response, error, bool) {
		kf.KeepControl()
		hs := req.(*kmsg.SASLHandshakeRequest)
		r.mu.Lock()
		r.mechs = append(r.mechs, hs.Mechanism)
		r.mu.Unlock()
		return hs.ResponseKind(), nil, true
	})
	kf.ControlKey(int16(kmsg.SASLAuthenticate), func(req kmsg.Request) (kmsg.Response, error, bool) {
		kf.KeepControl()
		auth := req.(*kmsg.SASLAuthenticateRequest)
		r.mu.Lock()
		r.auths = append(r.auths, bytes.Clone(auth.SASLAuthBytes))
		r.mu.Unlock()
		resp := auth.ResponseKind().(*kmsg.SASLAuthenticateResponse)
		resp.SASLAuthBytes = answer
		return resp, nil, true
	})
	return r
}

// last returns the mechanism and the bytes of the latest authentication.
func (r *saslRecorder) last(t *testing.T) (string, []byte) {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.auths) == 0 || len(r.mechs) == 0 {
		t.Fatal("no SASL authentication reached the broker")
	}
	return r.mechs[len(r.mechs)-1], r.auths[len(r.auths)-1]
}

// bearer returns the token of an OAUTHBEARER client's first message.
func bearer(t *testing.T, msg []byte) (token string, exts map[string]string) {
	t.Helper()
	// n,,\x01auth=Bearer <token>\x01key=value\x01…\x01
	parts := strings.Split(string(msg), "\x01")
	exts = map[string]string{}
	for _, p := range parts[1:] {
		if tok, ok := strings.CutPrefix(p, "auth=Bearer "); ok {
			token = tok
		} else if k, v, ok := strings.Cut(p, "="); ok {
			exts[k] = v
		}
	}
	if token == "" {
		t.Fatalf("no bearer token in %q", msg)
	}
	return token, exts
}

func TestOAuthBearerToken(t *testing.T) {
	r := newSASLRecorder(t, nil)
	var logs logBuffer
	c := securedCluster("oauth", r.seeds, config.ClientTLS{}, config.ClusterSASL{
		Mechanism: config.SASLOAuthBearer, Token: "eyJ.static", Extensions: map[string]string{"logicalCluster": "lkc-1"},
	}, &logs)
	roundTrip(t, c)
	mech, msg := r.last(t)
	tok, exts := bearer(t, msg)
	if mech != "OAUTHBEARER" || tok != "eyJ.static" || exts["logicalCluster"] != "lkc-1" {
		t.Errorf("authenticated with %s, token %q, extensions %v; want OAUTHBEARER, the token and the extension", mech, tok, exts)
	}
	if strings.Contains(logs.String(), "eyJ.static") {
		t.Error("the token is in the log")
	}
}

func TestOAuthBearerTokenFileRotates(t *testing.T) {
	r := newSASLRecorder(t, nil)
	file := filepath.Join(t.TempDir(), "token")
	write := func(tok string) {
		t.Helper()
		if err := os.WriteFile(file, []byte(tok+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("eyJ.first")
	var logs logBuffer
	c := securedCluster("oauth", r.seeds, config.ClientTLS{}, config.ClusterSASL{Mechanism: config.SASLOAuthBearer, TokenFile: file}, &logs)
	ctx := t.Context()
	if err := c.Start(ctx); err != nil {
		t.Fatalf("Start: %v", err)
	}
	defer c.Close(ctx)
	if _, msg := r.last(t); func() string { tok, _ := bearer(t, msg); return tok }() != "eyJ.first" {
		t.Fatalf("Start authenticated with %q, want the file's first token", msg)
	}

	// The token renewed on disk goes out on the next connection: the
	// producer's.
	write("eyJ.second")
	p, err := c.Producer(AcksLeaderOnly)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Ping(ctx); err != nil {
		t.Fatalf("Ping: %v", err)
	}
	if _, msg := r.last(t); func() string { tok, _ := bearer(t, msg); return tok }() != "eyJ.second" {
		t.Fatalf("the new connection authenticated with %q, want the renewed token", msg)
	}

	// While the file is being rewritten (empty), the last token stands in.
	write("")
	cl, err := c.NewPartitionReader("sec", map[int32]int64{0: 0}, 100*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if err := cl.Ping(ctx); err != nil {
		t.Fatalf("Ping with the token file empty: %v", err)
	}
	if _, msg := r.last(t); func() string { tok, _ := bearer(t, msg); return tok }() != "eyJ.second" {
		t.Fatalf("authenticated with %q, want the previous token", msg)
	}
	if !strings.Contains(logs.String(), "previous OAUTHBEARER token") {
		t.Errorf("no warning logged:\n%s", logs.String())
	}
	if strings.Contains(logs.String(), "eyJ.") {
		t.Errorf("a token is in the log:\n%s", logs.String())
	}
}

func TestOAuthBearerTokenFileMissing(t *testing.T) {
	r := newSASLRecorder(t, nil)
	var logs logBuffer
	msg := startFails(t, securedCluster("oauth", r.seeds, config.ClientTLS{}, config.ClusterSASL{
		Mechanism: config.SASLOAuthBearer, TokenFile: filepath.Join(t.TempDir(), "token"),
	}, &logs))
	if !strings.Contains(msg, `cluster "oauth": clusters[].sasl.token_file: reading the token file`) {
		t.Errorf("the error does not point at the token file: %s", msg)
	}
}

// clearAWSEnv leaves the AWS SDK no credentials to find: no environment,
// no shared files, no instance metadata.
func clearAWSEnv(t *testing.T) {
	t.Helper()
	for _, k := range []string{"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
		"AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_ROLE_ARN", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI"} {
		t.Setenv(k, "")
		os.Unsetenv(k)
	}
	dir := t.TempDir()
	t.Setenv("AWS_CONFIG_FILE", filepath.Join(dir, "config"))
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", filepath.Join(dir, "credentials"))
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	// The brokers' address names no region, as an MSK broker's does.
	t.Setenv("AWS_REGION", "eu-west-1")
}

// mskAnswer is what an MSK broker answers an accepted authentication.
var mskAnswer = []byte(`{"version":"2020_10_22","request-id":"ferry-test"}`)

// checkMSKAuth checks that msg, an AWS_MSK_IAM client's message, is
// signed with the access key id.
func checkMSKAuth(t *testing.T, mech string, msg []byte, keyID string) map[string]string {
	t.Helper()
	var m map[string]string
	if err := json.Unmarshal(msg, &m); err != nil {
		t.Fatalf("the AWS_MSK_IAM message is not JSON: %v", err)
	}
	if mech != "AWS_MSK_IAM" || !strings.HasPrefix(m["x-amz-credential"], keyID+"/") || !strings.Contains(m["x-amz-credential"], "/eu-west-1/kafka-cluster/") ||
		len(m["x-amz-signature"]) != 64 || m["action"] != "kafka-cluster:Connect" {
		t.Errorf("authenticated with %s and %v; want AWS_MSK_IAM, the access key id, the region and a signature", mech, m)
	}
	return m
}

func TestAWSMSKIAMStaticCredentials(t *testing.T) {
	clearAWSEnv(t)
	r := newSASLRecorder(t, mskAnswer)
	var logs logBuffer
	c := securedCluster("msk", r.seeds, config.ClientTLS{}, config.ClusterSASL{Mechanism: config.SASLAWSMSKIAM, AWS: config.AWSCredentials{
		AccessKeyID: "AKIAFERRYTEST", SecretAccessKey: "s3cret-access-key", SessionToken: "session-tok",
	}}, &logs)
	roundTrip(t, c)
	mech, msg := r.last(t)
	m := checkMSKAuth(t, mech, msg, "AKIAFERRYTEST")
	if m["x-amz-security-token"] != "session-tok" {
		t.Errorf("no session token in %v", m)
	}
	if bytes.Contains(msg, []byte("s3cret-access-key")) || strings.Contains(logs.String(), "s3cret-access-key") {
		t.Error("the secret access key was sent or logged")
	}
}

func TestAWSMSKIAMDefaultChain(t *testing.T) {
	clearAWSEnv(t)
	t.Setenv("AWS_ACCESS_KEY_ID", "AKIAFROMENV")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "s3cret-from-env")
	r := newSASLRecorder(t, mskAnswer)
	var logs logBuffer
	roundTrip(t, securedCluster("msk", r.seeds, config.ClientTLS{}, config.ClusterSASL{Mechanism: config.SASLAWSMSKIAM}, &logs))
	mech, msg := r.last(t)
	checkMSKAuth(t, mech, msg, "AKIAFROMENV")
	if strings.Contains(logs.String(), "s3cret-from-env") {
		t.Error("the secret access key was logged")
	}
}

func TestAWSMSKIAMNoCredentials(t *testing.T) {
	clearAWSEnv(t)
	r := newSASLRecorder(t, mskAnswer)
	var logs logBuffer
	msg := startFails(t, securedCluster("msk", r.seeds, config.ClientTLS{}, config.ClusterSASL{Mechanism: config.SASLAWSMSKIAM}, &logs))
	if !strings.Contains(msg, `cluster "msk": no AWS credentials for sasl AWS_MSK_IAM (set clusters[].sasl.aws`) {
		t.Errorf("the error does not say the credentials are missing: %s", msg)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.auths) != 0 {
		t.Error("Start authenticated without credentials")
	}
}

func TestSecurityHintByMechanism(t *testing.T) {
	for mech, want := range map[string]string{
		config.SASLOAuthBearer: "token expired, or not accepted by the brokers? clusters[].sasl.token",
		config.SASLAWSMSKIAM:   "kafka-cluster:Connect? clusters[].sasl.aws",
	} {
		c := NewCluster(config.Cluster{Name: "x", SASL: config.ClusterSASL{Mechanism: mech}}, nil, slog.New(slog.DiscardHandler))
		if got := c.securityHint(kerr.SaslAuthenticationFailed); !strings.Contains(got, want) {
			t.Errorf("%s: hint %q, want it to say %q", mech, got, want)
		}
	}
}
