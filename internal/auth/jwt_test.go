package auth

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/MicahParks/jwkset"
	"github.com/golang-jwt/jwt/v5"
	"go.uber.org/goleak"
)

const (
	testIssuer   = "https://issuer.example"
	testAudience = "ferry"
)

// testKey is a signing key and the kid and alg its JWK carries.
type testKey struct {
	kid    string
	method jwt.SigningMethod
	priv   crypto.Signer
	// jwkALG is the alg written into the JWK; empty leaves it out.
	jwkALG jwkset.ALG
}

func newRSAKey(t testing.TB, kid string) testKey {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	return testKey{kid: kid, method: jwt.SigningMethodRS256, priv: k}
}

func newECKey(t testing.TB, kid string) testKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return testKey{kid: kid, method: jwt.SigningMethodES256, priv: k, jwkALG: jwkset.AlgES256}
}

func newEdKey(t testing.TB, kid string) testKey {
	t.Helper()
	_, k, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return testKey{kid: kid, method: jwt.SigningMethodEdDSA, priv: k}
}

// jwksJSON is the public JWKS of keys.
func jwksJSON(t testing.TB, keys ...testKey) []byte {
	t.Helper()
	var set jwkset.JWKSMarshal
	for _, k := range keys {
		jwk, err := jwkset.NewJWKFromKey(k.priv.Public(), jwkset.JWKOptions{
			Metadata: jwkset.JWKMetadataOptions{KID: k.kid, ALG: k.jwkALG},
		})
		if err != nil {
			t.Fatal(err)
		}
		set.Keys = append(set.Keys, jwk.Marshal())
	}
	raw, err := json.Marshal(set)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

func writeJWKS(t testing.TB, path string, keys ...testKey) {
	t.Helper()
	if err := os.WriteFile(path, jwksJSON(t, keys...), 0o600); err != nil {
		t.Fatal(err)
	}
}

// sign signs claims with k, naming k's kid; method overrides k's algorithm when not nil.
func sign(t testing.TB, k testKey, claims jwt.MapClaims, method jwt.SigningMethod) string {
	t.Helper()
	if method == nil {
		method = k.method
	}
	tok := jwt.NewWithClaims(method, claims)
	if k.kid != "" {
		tok.Header["kid"] = k.kid
	}
	s, err := tok.SignedString(k.priv)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// claims are valid claims for the test verifier, changed by the given pairs (a nil value
// removes the claim).
func claims(kv ...any) jwt.MapClaims {
	now := time.Now()
	c := jwt.MapClaims{
		"sub":   "alice",
		"iss":   testIssuer,
		"aud":   testAudience,
		"iat":   now.Unix(),
		"nbf":   now.Unix(),
		"exp":   now.Add(time.Hour).Unix(),
		"roles": []string{"echo", "admin"},
	}
	for i := 0; i < len(kv); i += 2 {
		if kv[i+1] == nil {
			delete(c, kv[i].(string))
		} else {
			c[kv[i].(string)] = kv[i+1]
		}
	}
	return c
}

// rawToken builds a token from a header and claims without signing, with sig as its signature.
func rawToken(t testing.TB, header, claims map[string]any, sig string) string {
	t.Helper()
	h, err := json.Marshal(header)
	if err != nil {
		t.Fatal(err)
	}
	c, err := json.Marshal(claims)
	if err != nil {
		t.Fatal(err)
	}
	enc := base64.RawURLEncoding.EncodeToString
	return enc(h) + "." + enc(c) + "." + sig
}

func newTestJWT(t testing.TB, opts JWTOptions) *JWT {
	t.Helper()
	v, err := NewJWT(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { v.Close() })
	return v
}

func TestJWTVerify(t *testing.T) {
	rsaKey, ecKey, edKey := newRSAKey(t, "rsa1"), newECKey(t, "ec1"), newEdKey(t, "ed1")
	path := filepath.Join(t.TempDir(), "jwks.json")
	writeJWKS(t, path, rsaKey, ecKey, edKey)
	v := newTestJWT(t, JWTOptions{JWKSFile: path, Issuer: testIssuer, Audience: testAudience})

	impostor := newRSAKey(t, "rsa1") // another key under a known kid
	stranger := newRSAKey(t, "nobody")
	noKID := rsaKey
	noKID.kid = ""
	now := time.Now()

	valid := sign(t, rsaKey, claims(), nil)
	parts := strings.Split(valid, ".")
	tampered := parts[0] + "." + base64.RawURLEncoding.EncodeToString([]byte(`{"sub":"mallory"}`)) + "." + parts[2]
	pub, err := x509.MarshalPKIXPublicKey(rsaKey.priv.Public())
	if err != nil {
		t.Fatal(err)
	}
	hmacWithPublicKey := jwt.NewWithClaims(jwt.SigningMethodHS256, claims())
	hmacWithPublicKey.Header["kid"] = "rsa1"
	hs256, err := hmacWithPublicKey.SignedString(pub)
	if err != nil {
		t.Fatal(err)
	}
	unsigned := jwt.NewWithClaims(jwt.SigningMethodNone, claims())
	unsigned.Header["kid"] = "rsa1"
	none, err := unsigned.SignedString(jwt.UnsafeAllowNoneSignatureType)
	if err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name  string
		token string
		want  *Identity
		err   error
	}{
		{"RS256, roles array", valid, &Identity{Name: "alice", Roles: []string{"echo", "admin"}, Source: "jwt"}, nil},
		{"PS256", sign(t, rsaKey, claims(), jwt.SigningMethodPS256), &Identity{Name: "alice", Roles: []string{"echo", "admin"}, Source: "jwt"}, nil},
		{"ES256, roles string", sign(t, ecKey, claims("roles", "read  write"), nil), &Identity{Name: "alice", Roles: []string{"read", "write"}, Source: "jwt"}, nil},
		{"EdDSA, no roles", sign(t, edKey, claims("roles", nil), nil), &Identity{Name: "alice", Source: "jwt"}, nil},
		{"no kid tries every key", sign(t, noKID, claims(), nil), &Identity{Name: "alice", Roles: []string{"echo", "admin"}, Source: "jwt"}, nil},
		{"audience among several", sign(t, rsaKey, claims("aud", []string{"other", testAudience}, "roles", nil), nil), &Identity{Name: "alice", Source: "jwt"}, nil},
		{"expired within leeway", sign(t, rsaKey, claims("exp", now.Add(-10*time.Second).Unix(), "roles", nil), nil), &Identity{Name: "alice", Source: "jwt"}, nil},
		{"nbf within leeway", sign(t, rsaKey, claims("nbf", now.Add(10*time.Second).Unix(), "roles", nil), nil), &Identity{Name: "alice", Source: "jwt"}, nil},
		{"no exp", sign(t, rsaKey, claims("exp", nil, "roles", nil), nil), &Identity{Name: "alice", Source: "jwt"}, nil},

		{"expired", sign(t, rsaKey, claims("exp", now.Add(-time.Hour).Unix()), nil), nil, ErrTokenExpired},
		{"not yet valid", sign(t, rsaKey, claims("nbf", now.Add(time.Hour).Unix()), nil), nil, ErrTokenNotYetValid},
		{"issued in the future", sign(t, rsaKey, claims("iat", now.Add(time.Hour).Unix()), nil), nil, ErrTokenNotYetValid},
		{"wrong audience", sign(t, rsaKey, claims("aud", "other"), nil), nil, ErrWrongAudience},
		{"no audience", sign(t, rsaKey, claims("aud", nil), nil), nil, ErrWrongAudience},
		{"wrong issuer", sign(t, rsaKey, claims("iss", "https://evil.example"), nil), nil, ErrWrongIssuer},
		{"no issuer", sign(t, rsaKey, claims("iss", nil), nil), nil, ErrWrongIssuer},
		{"bad signature, same kid", sign(t, impostor, claims(), nil), nil, ErrBadSignature},
		{"tampered claims", tampered, nil, ErrBadSignature},
		{"RS256 token naming an EC key", sign(t, testKey{kid: "ec1", method: jwt.SigningMethodRS256, priv: rsaKey.priv}, claims(), nil), nil, ErrAlgorithmNotAllowed},
		{"RS256 token naming an Ed25519 key", sign(t, testKey{kid: "ed1", method: jwt.SigningMethodRS256, priv: rsaKey.priv}, claims(), nil), nil, ErrAlgorithmNotAllowed},
		{"unknown key id", sign(t, stranger, claims(), nil), nil, ErrUnknownKeyID},
		{"alg none", none, nil, ErrAlgorithmNotAllowed},
		{"HS256 with the public key", hs256, nil, ErrAlgorithmNotAllowed},
		{"unknown algorithm", rawToken(t, map[string]any{"alg": "XY256", "kid": "rsa1"}, claims(), "c2ln"), nil, ErrAlgorithmNotAllowed},
		{"no algorithm", rawToken(t, map[string]any{"kid": "rsa1"}, claims(), "c2ln"), nil, ErrMalformedToken},
		{"kid not a string", rawToken(t, map[string]any{"alg": "RS256", "kid": 7}, claims(), "c2ln"), nil, ErrMalformedToken},
		{"empty", "", nil, ErrMalformedToken},
		{"one segment", "abc", nil, ErrMalformedToken},
		{"not base64", "a.b.c", nil, ErrMalformedToken},
		{"Bearer prefix", "Bearer " + valid, nil, ErrMalformedToken},
		{"too long", strings.Repeat("a", maxTokenBytes+1), nil, ErrMalformedToken},
		{"exp not a number", sign(t, rsaKey, claims("exp", "tomorrow"), nil), nil, ErrMalformedToken},
		{"no identity claim", sign(t, rsaKey, claims("sub", nil), nil), nil, ErrNoIdentityClaim},
		{"identity not a string", sign(t, rsaKey, claims("sub", 42), nil), nil, ErrNoIdentityClaim},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := v.Verify(context.Background(), tc.token)
			if !errors.Is(err, tc.err) || (err != nil && err != tc.err) {
				t.Fatalf("Verify: error %v, want %v", err, tc.err)
			}
			if tc.want != nil && (got == nil || got.Name != tc.want.Name || got.Source != tc.want.Source || !slices.Equal(got.Roles, tc.want.Roles)) {
				t.Fatalf("Verify: %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestJWTClaimPaths(t *testing.T) {
	k := newECKey(t, "ec1")
	path := filepath.Join(t.TempDir(), "jwks.json")
	writeJWKS(t, path, k)
	v := newTestJWT(t, JWTOptions{JWKSFile: path, IdentityClaim: "user.email", RolesClaim: "realm_access.roles"})

	got, err := v.Verify(context.Background(), sign(t, k, jwt.MapClaims{
		"user":         map[string]any{"email": "alice@example.com"},
		"realm_access": map[string]any{"roles": []any{"echo", 3, "admin"}},
	}, nil))
	if err != nil {
		t.Fatal(err)
	}
	if got.Name != "alice@example.com" || !slices.Equal(got.Roles, []string{"echo", "admin"}) {
		t.Fatalf("Verify: %+v", got)
	}

	// A claim whose own name has dots wins over the path.
	got, err = v.Verify(context.Background(), sign(t, k, jwt.MapClaims{"user.email": "bob"}, nil))
	if err != nil || got.Name != "bob" {
		t.Fatalf("Verify: %+v, %v", got, err)
	}
	if _, err := v.Verify(context.Background(), sign(t, k, jwt.MapClaims{"user": "carol"}, nil)); err != ErrNoIdentityClaim {
		t.Fatalf("Verify: %v, want %v", err, ErrNoIdentityClaim)
	}
}

func TestJWTFileRotation(t *testing.T) {
	old, rotated := newRSAKey(t, "old"), newECKey(t, "new")
	path := filepath.Join(t.TempDir(), "jwks.json")
	writeJWKS(t, path, old)
	v := newTestJWT(t, JWTOptions{JWKSFile: path})
	ctx := context.Background()
	if _, err := v.Verify(ctx, sign(t, old, claims(), nil)); err != nil {
		t.Fatal(err)
	}

	// An unknown kid makes Verify look at the file at once.
	writeJWKS(t, path, old, rotated)
	bump(t, path, time.Second)
	if _, err := v.Verify(ctx, sign(t, rotated, claims(), nil)); err != nil {
		t.Fatalf("new kid after rotation: %v", err)
	}

	// A broken file keeps the last good set.
	if err := os.WriteFile(path, []byte(`{"keys": [`), 0o600); err != nil {
		t.Fatal(err)
	}
	bump(t, path, 2*time.Second)
	v.nextFileCheck.Store(0)
	if _, err := v.Verify(ctx, sign(t, old, claims(), nil)); err != nil {
		t.Fatalf("after a broken file: %v", err)
	}

	// A removed key stops verifying once the file is checked again (at most a second later).
	writeJWKS(t, path, rotated)
	bump(t, path, 3*time.Second)
	v.nextFileCheck.Store(0)
	if _, err := v.Verify(ctx, sign(t, old, claims(), nil)); err != ErrUnknownKeyID {
		t.Fatalf("removed key: %v, want %v", err, ErrUnknownKeyID)
	}
	if _, err := v.Verify(ctx, sign(t, rotated, claims(), nil)); err != nil {
		t.Fatal(err)
	}
}

// bump moves path's modification time ahead, so a rewrite within the file system's time
// granularity still counts as a change.
func bump(t testing.TB, path string, by time.Duration) {
	t.Helper()
	at := time.Now().Add(by)
	if err := os.Chtimes(path, at, at); err != nil {
		t.Fatal(err)
	}
}

// jwksServer serves a JWKS that a test can change, or fail.
type jwksServer struct {
	*httptest.Server
	body     atomic.Pointer[[]byte]
	requests atomic.Int32
}

func newJWKSServer(t testing.TB, body []byte) *jwksServer {
	s := &jwksServer{}
	s.body.Store(&body)
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.requests.Add(1)
		w.Header().Set("Content-Type", "application/json")
		w.Write(*s.body.Load())
	}))
	t.Cleanup(s.Close)
	return s
}

func TestJWTURLRefresh(t *testing.T) {
	defer goleak.VerifyNone(t)
	first, added := newRSAKey(t, "first"), newEdKey(t, "added")
	srv := newJWKSServer(t, jwksJSON(t, first))
	v, err := NewJWT(context.Background(), JWTOptions{JWKSURL: srv.URL + "/jwks.json", Audience: testAudience})
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	ctx := context.Background()
	if _, err := v.Verify(ctx, sign(t, first, claims(), nil)); err != nil {
		t.Fatal(err)
	}

	// A key added on the server verifies after the unknown-kid refresh.
	srv.body.Store(ptr(jwksJSON(t, first, added)))
	if _, err := v.Verify(ctx, sign(t, added, claims(), nil)); err != nil {
		t.Fatalf("added key: %v", err)
	}
	// Further unknown kids are rate limited: no fetch.
	before := srv.requests.Load()
	if _, err := v.Verify(ctx, sign(t, newRSAKey(t, "stranger"), claims(), nil)); err != ErrUnknownKeyID {
		t.Fatalf("stranger: %v, want %v", err, ErrUnknownKeyID)
	}
	if n := srv.requests.Load(); n != before {
		t.Fatalf("%d fetches for a rate-limited unknown kid", n-before)
	}
	if err := v.Close(); err != nil {
		t.Fatal(err)
	}
	if err := v.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	srv.Close()
}

func TestJWTURLServerDown(t *testing.T) {
	defer goleak.VerifyNone(t)
	k := newECKey(t, "k")
	srv := newJWKSServer(t, jwksJSON(t, k))
	v, err := NewJWT(context.Background(), JWTOptions{JWKSURL: srv.URL, Refresh: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	deadline := time.Now().Add(5 * time.Second)
	for srv.requests.Load() < 3 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if srv.requests.Load() < 3 {
		t.Fatal("the key set was not refreshed")
	}

	srv.Close()
	time.Sleep(50 * time.Millisecond) // several failed refreshes
	// An unknown kid's refresh fails too.
	if _, err := v.Verify(context.Background(), sign(t, newECKey(t, "other"), claims(), nil)); err != ErrUnknownKeyID {
		t.Fatalf("unknown kid: %v", err)
	}
	if _, err := v.Verify(context.Background(), sign(t, k, claims(), nil)); err != nil {
		t.Fatalf("last good set: %v", err)
	}
	v.Close()
}

func ptr[T any](v T) *T { return &v }

func TestNewJWTErrors(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	hmacOnly := write("hmac.json", `{"keys":[{"kty":"oct","kid":"s","k":"c2VjcmV0LXNlY3JldC1zZWNyZXQ"}]}`)
	down := httptest.NewServer(http.NotFoundHandler())
	down.Close()
	notFound := httptest.NewServer(http.NotFoundHandler())
	defer notFound.Close()
	empty := newJWKSServer(t, []byte(`{"keys":[]}`))

	for _, tc := range []struct {
		name string
		opts JWTOptions
		want string
	}{
		{"no source", JWTOptions{}, "a JWKS file or a JWKS URL is required"},
		{"both", JWTOptions{JWKSFile: "a", JWKSURL: "https://b"}, "not both"},
		{"missing file", JWTOptions{JWKSFile: filepath.Join(dir, "nope.json")}, "no such file"},
		{"not JSON", JWTOptions{JWKSFile: write("bad.json", "keys:")}, "parsing JWKS file"},
		{"empty file set", JWTOptions{JWKSFile: write("empty.json", `{"keys":[]}`)}, "no RSA, EC or Ed25519 key"},
		{"HMAC keys only", JWTOptions{JWKSFile: hmacOnly}, "no RSA, EC or Ed25519 key"},
		{"plain http", JWTOptions{JWKSURL: "http://idp.example/jwks"}, "must use https"},
		{"no scheme", JWTOptions{JWKSURL: "idp.example/jwks"}, "must use https"},
		{"unreachable", JWTOptions{JWKSURL: down.URL}, "fetching JWKS from " + down.URL},
		{"404", JWTOptions{JWKSURL: notFound.URL}, "404"},
		{"empty URL set", JWTOptions{JWKSURL: empty.URL}, "no RSA, EC or Ed25519 key"},
		{"negative refresh", JWTOptions{JWKSURL: "https://idp.example", Refresh: -time.Second}, "refresh -1s is negative"},
		{"negative leeway", JWTOptions{JWKSFile: "a", Leeway: -time.Second}, "leeway -1s is negative"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v, err := NewJWT(context.Background(), tc.opts)
			if err == nil {
				v.Close()
				t.Fatal("NewJWT: no error")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("NewJWT: %v, want it to say %q", err, tc.want)
			}
		})
	}
}

func FuzzVerify(f *testing.F) {
	k := newECKey(f, "k")
	path := filepath.Join(f.TempDir(), "jwks.json")
	writeJWKS(f, path, k)
	v := newTestJWT(f, JWTOptions{JWKSFile: path, Audience: testAudience})
	valid := sign(f, k, claims(), nil)
	for _, s := range []string{valid, "", ".", "..", "a.b.c", valid + "x", strings.ToUpper(valid),
		rawToken(f, map[string]any{"alg": "none"}, claims(), ""),
		rawToken(f, map[string]any{"alg": "ES256", "kid": []any{1}}, map[string]any{"sub": map[string]any{}}, "AA")} {
		f.Add(s)
	}
	reasons := []error{ErrTokenExpired, ErrTokenNotYetValid, ErrWrongAudience, ErrWrongIssuer, ErrBadSignature,
		ErrUnknownKeyID, ErrMalformedToken, ErrAlgorithmNotAllowed, ErrNoIdentityClaim}
	f.Fuzz(func(t *testing.T, token string) {
		id, err := v.Verify(context.Background(), token)
		switch {
		case err == nil && (id == nil || id.Name == ""):
			t.Fatalf("Verify(%q): no error and no identity", token)
		case err != nil && !slices.Contains(reasons, err):
			t.Fatalf("Verify(%q): %v is not one of the reasons", token, err)
		}
	})
}

// TestJWTVerifiedCache checks that a token verified once is answered from
// the cache, and never past its expiry or a change of the key set.
func TestJWTVerifiedCache(t *testing.T) {
	k, other := newRSAKey(t, "k"), newECKey(t, "other")
	path := filepath.Join(t.TempDir(), "jwks.json")
	writeJWKS(t, path, k)
	v := newTestJWT(t, JWTOptions{JWKSFile: path, Leeway: time.Nanosecond})
	ctx := context.Background()
	tok := sign(t, k, claims(), nil)
	first, err := v.Verify(ctx, tok)
	if err != nil {
		t.Fatal(err)
	}
	if again, err := v.Verify(ctx, tok); err != nil || again != first {
		t.Fatalf("second check: %v %v; want the cached identity", again, err)
	}

	// A token expiring in a second is cached no longer than that.
	short := sign(t, k, claims("exp", time.Now().Add(time.Second).Unix()), nil)
	if _, err := v.Verify(ctx, short); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1100 * time.Millisecond)
	if _, err := v.Verify(ctx, short); err != ErrTokenExpired {
		t.Fatalf("a cached token past its exp: %v; want %v", err, ErrTokenExpired)
	}

	// The key leaving the set stops the cached token at once.
	writeJWKS(t, path, other)
	bump(t, path, time.Second)
	v.nextFileCheck.Store(0)
	if _, err := v.Verify(ctx, tok); err != ErrUnknownKeyID {
		t.Fatalf("a cached token whose key left the set: %v; want %v", err, ErrUnknownKeyID)
	}
}

func BenchmarkJWTVerify(b *testing.B) {
	k := newRSAKey(b, "k")
	path := filepath.Join(b.TempDir(), "jwks.json")
	writeJWKS(b, path, k)
	v := newTestJWT(b, JWTOptions{JWKSFile: path})
	ctx := context.Background()
	b.Run("cached", func(b *testing.B) {
		tok := sign(b, k, claims(), nil)
		for b.Loop() {
			if _, err := v.Verify(ctx, tok); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("uncached", func(b *testing.B) {
		tok := sign(b, k, claims(), nil)
		for b.Loop() {
			v.verified = tokenCache{}
			if _, err := v.Verify(ctx, tok); err != nil {
				b.Fatal(err)
			}
		}
	})
}
