package auth

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"net/url"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/ferryproxy/ferry/internal/config"
	"github.com/ferryproxy/ferry/internal/edge"
)

// tokens is a TokenVerifier that knows a fixed set of tokens.
type tokens map[string]*Identity

func (t tokens) Verify(_ context.Context, token string) (*Identity, error) {
	if id, ok := t[token]; ok {
		return id, nil
	}
	return nil, errors.New("bad signature")
}

var alice = &Identity{Name: "alice", Roles: []string{"echo"}, Source: "jwt"}

// begin runs the authenticator on a call made with the given
// authorization value and TLS state.
func begin(t *testing.T, a *Authenticator, c *edge.Call) (*Identity, error) {
	t.Helper()
	ctx, err := a.begin(context.Background(), c)
	if err != nil {
		return nil, err
	}
	if ctx == nil {
		return nil, nil
	}
	return FromContext(ctx), nil
}

func grpcCall(method, authorization string, state *tls.ConnectionState) *edge.Call {
	c := edge.NewCall(edge.GRPC, method, func(k string) string {
		if k == "authorization" {
			return authorization
		}
		return ""
	})
	c.TLS = state
	return c
}

func verified(cert *x509.Certificate) *tls.ConnectionState {
	return &tls.ConnectionState{VerifiedChains: [][]*x509.Certificate{{cert}}}
}

func TestAuthenticator(t *testing.T) {
	cert := &x509.Certificate{
		Subject:        pkix.Name{CommonName: "orders", Organization: []string{"Shop"}},
		DNSNames:       []string{"orders.shop.internal"},
		EmailAddresses: []string{"orders@shop.example"},
		URIs:           []*url.URL{{Scheme: "spiffe", Host: "shop", Path: "/orders"}},
	}
	both := config.Auth{ClientCertificates: config.CertAuth{Identity: config.CertCommonName}}
	a := NewAuthenticator(both, tokens{"good": alice})
	const method = "/grpc.examples.echo.Echo/UnaryEcho"

	for _, tc := range []struct {
		name, authz string
		state       *tls.ConnectionState
		want        string // identity, or "" for a refusal
		wantMsg     string
	}{
		{"bearer token", "Bearer good", nil, "alice", ""},
		{"scheme in any case", "bearer good", nil, "alice", ""},
		{"token wins over certificate", "Bearer good", verified(cert), "alice", ""},
		{"certificate", "", verified(cert), "orders", ""},
		{"bad token, even with a certificate", "Bearer forged", verified(cert), "", "bearer token refused: bad signature"},
		{"not a bearer token", "Basic YWxpY2U6c2VjcmV0", nil, "", "not a bearer token"},
		{"empty bearer", "Bearer ", nil, "", "not a bearer token"},
		{"nothing", "", nil, "", "no credentials"},
		{"unverified certificate", "", &tls.ConnectionState{PeerCertificates: []*x509.Certificate{cert}}, "", "no credentials"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id, err := begin(t, a, grpcCall(method, tc.authz, tc.state))
			if tc.want != "" {
				if err != nil || id == nil || id.Name != tc.want {
					t.Fatalf("identity %+v, err %v; want %q", id, err, tc.want)
				}
				return
			}
			if status.Code(err) != codes.Unauthenticated || !strings.Contains(err.Error(), tc.wantMsg) {
				t.Fatalf("err %v; want UNAUTHENTICATED with %q", err, tc.wantMsg)
			}
			if strings.Contains(err.Error(), "YWxpY2U6c2VjcmV0") || strings.Contains(err.Error(), "forged") {
				t.Fatalf("the refusal quotes the credentials: %v", err)
			}
		})
	}

	t.Run("certificate names", func(t *testing.T) {
		for field, want := range map[string]string{
			config.CertCommonName: "orders",
			config.CertSubject:    "CN=orders,O=Shop",
			config.CertDNSName:    "orders.shop.internal",
			config.CertEmail:      "orders@shop.example",
			config.CertURI:        "spiffe://shop/orders",
		} {
			a := NewAuthenticator(config.Auth{ClientCertificates: config.CertAuth{Identity: field}}, nil)
			id, err := begin(t, a, grpcCall(method, "", verified(cert)))
			if err != nil || id == nil || id.Name != want || id.Source != "certificate" {
				t.Errorf("%s: identity %+v, err %v; want %q", field, id, err, want)
			}
		}
		a := NewAuthenticator(config.Auth{ClientCertificates: config.CertAuth{Identity: config.CertURI}}, nil)
		_, err := begin(t, a, grpcCall(method, "", verified(&x509.Certificate{Subject: pkix.Name{CommonName: "x"}})))
		if status.Code(err) != codes.Unauthenticated || !strings.Contains(err.Error(), "uri_san") {
			t.Errorf("certificate without the name: %v", err)
		}
	})

	t.Run("without JWT a token is not read", func(t *testing.T) {
		a := NewAuthenticator(both, nil)
		id, err := begin(t, a, grpcCall(method, "Bearer good", verified(cert)))
		if err != nil || id == nil || id.Name != "orders" {
			t.Fatalf("identity %+v, err %v; want the certificate's", id, err)
		}
	})

	t.Run("anonymous", func(t *testing.T) {
		a := NewAuthenticator(config.Auth{ClientCertificates: both.ClientCertificates, Anonymous: true}, tokens{"good": alice})
		id, err := begin(t, a, grpcCall(method, "", nil))
		if err != nil || id != nil {
			t.Fatalf("identity %+v, err %v; want an anonymous call", id, err)
		}
		if _, err := begin(t, a, grpcCall(method, "Bearer forged", nil)); status.Code(err) != codes.Unauthenticated {
			t.Fatalf("bad credentials are refused even when anonymous calls are allowed: %v", err)
		}
	})

	t.Run("exempt", func(t *testing.T) {
		for _, c := range []*edge.Call{
			grpcCall("/grpc.health.v1.Health/Check", "", nil),
			grpcCall("/grpc.health.v1.Health/Watch", "Bearer forged", nil),
			edge.NewCall(edge.BackendOut, "/x.Y/Z", nil),
		} {
			if id, err := begin(t, a, c); err != nil || id != nil {
				t.Errorf("%s %s: identity %+v, err %v; want no check", c.Face, c.Method, id, err)
			}
		}
		if _, err := begin(t, a, grpcCall("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo", "", nil)); status.Code(err) != codes.Unauthenticated {
			t.Errorf("reflection without credentials: %v; want UNAUTHENTICATED", err)
		}
	})
}

func ctxOf(id *Identity) context.Context {
	if id == nil {
		return context.Background()
	}
	return NewContext(context.Background(), id)
}

func TestAllow(t *testing.T) {
	bob := &Identity{Name: "bob", Roles: []string{"reader", "team-a"}}
	carol := &Identity{Name: "svc-carol"}
	a := NewAllow("echo", []config.AllowRule{
		{Identities: []string{"alice"}},
		{Roles: []string{"team-*"}},
		{Identities: []string{"svc-*"}, Roles: []string{"writer"}},
	})
	for _, tc := range []struct {
		id   *Identity
		want bool
	}{
		{alice, true}, {bob, true}, {carol, true},
		{&Identity{Name: "dave", Roles: []string{"reader"}}, false},
		{nil, false},
	} {
		err := a.Check(ctxOf(tc.id), "/grpc.examples.echo.Echo/UnaryEcho")
		if (err == nil) != tc.want {
			t.Errorf("%+v: %v; want allowed %v", tc.id, err, tc.want)
		}
		if err != nil && (status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), `route "echo"`)) {
			t.Errorf("refusal %v: want PERMISSION_DENIED naming the route", err)
		}
	}
	if err := NewAllow("open", nil).Check(ctxOf(nil), "/x.Y/Z"); err != nil {
		t.Errorf("a route without rules refused an anonymous caller: %v", err)
	}
}

func TestAPIPolicy(t *testing.T) {
	if NewAPIPolicy(nil) != nil {
		t.Fatal("no rules must give no policy")
	}
	p := NewAPIPolicy([]config.APIAllowRule{
		{Identities: []string{"alice"}, Produce: []string{"orders.*"}, Consume: []string{"orders.*"}, Groups: []string{"alice-*"}},
		{Roles: []string{"ops"}, Admin: []string{"*"}},
	})
	ops := &Identity{Name: "olga", Roles: []string{"ops"}}
	ctxA, ctxO, ctxN := ctxOf(alice), ctxOf(ops), ctxOf(nil)

	allowed := func(name string, err error, want bool) {
		t.Helper()
		if (err == nil) != want {
			t.Errorf("%s: %v; want allowed %v", name, err, want)
		}
		if err != nil && status.Code(err) != codes.PermissionDenied {
			t.Errorf("%s: %v; want PERMISSION_DENIED", name, err)
		}
	}
	allowed("alice produces to orders.eu", p.Produce(ctxA, "orders.eu"), true)
	allowed("alice produces to payments", p.Produce(ctxA, "payments"), false)
	allowed("ops produces", p.Produce(ctxO, "orders.eu"), false)
	allowed("anonymous produces", p.Produce(ctxN, "orders.eu"), false)
	allowed("alice consumes in her group", p.Consume(ctxA, "alice-1", "orders.eu"), true)
	allowed("alice consumes in another group", p.Consume(ctxA, "bob-1", "orders.eu"), false)
	allowed("alice's offsets", p.Offsets(ctxA, "alice-1", "orders.eu"), true)
	allowed("ops sets any offsets", p.Offsets(ctxO, "bob-1", "payments"), true)
	allowed("alice describes orders.eu", p.Describe(ctxA, "orders.eu"), true)
	allowed("alice describes payments", p.Describe(ctxA, "payments"), false)
	allowed("ops describes payments", p.Describe(ctxO, "payments"), true)

	err := p.Produce(ctxA, "payments")
	if !strings.Contains(err.Error(), `identity "alice"`) || !strings.Contains(err.Error(), `topic "payments"`) {
		t.Errorf("refusal %q: want the identity and the topic named", err)
	}
	var nilPolicy *APIPolicy
	allowed("nil policy", nilPolicy.Produce(ctxN, "x"), true)
}
