// Package auth is who may call Ferry, and what they may do: identities
// from JWT bearer tokens and verified client certificates, taken once per
// call at the edge (Authenticator, an edge.Interceptor), and the allow
// rules that routes (Allow) and the Kafka API (APIPolicy) check against
// the identity the call's context carries.
package auth

import (
	"context"
	"crypto/x509"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/ferryproxy/ferry/internal/config"
	"github.com/ferryproxy/ferry/internal/edge"
)

// Identity is who a call comes from, once authenticated. Identities are
// shared between calls (a verified token's is cached): never change one.
type Identity struct {
	// Name is the identity: a JWT's identity claim, or a client certificate's name.
	Name string
	// Roles are the roles the caller holds: a JWT's roles claim; none for a certificate.
	Roles []string
	// Source says how the caller was authenticated: "jwt" or "certificate".
	Source string
}

type identityKey struct{}

// NewContext returns ctx carrying id.
func NewContext(ctx context.Context, id *Identity) context.Context {
	return context.WithValue(ctx, identityKey{}, id)
}

// FromContext returns the identity of the call ctx belongs to, nil for an
// anonymous call or when Ferry authenticates no one.
func FromContext(ctx context.Context) *Identity {
	id, _ := ctx.Value(identityKey{}).(*Identity)
	return id
}

// TokenVerifier checks a bearer token and returns whom it names; its
// errors are short reasons that may be shown to the caller. *JWT is one.
type TokenVerifier interface {
	Verify(ctx context.Context, token string) (*Identity, error)
}

// Authenticator takes the identity of every inbound call: from a bearer
// token in the authorization metadata entry or HTTP header when one is
// sent, else from a client certificate the listener verified. It refuses
// bad credentials, and calls without any unless anonymous calls are
// allowed, with UNAUTHENTICATED (HTTP 401) and a reason that quotes no
// credential.
type Authenticator struct {
	tokens    TokenVerifier // nil: bearer tokens are not accepted
	certName  string        // the certificate name that is the identity; "": none
	anonymous bool
}

// NewAuthenticator returns the authenticator of cfg; tokens verifies bearer
// tokens when cfg.JWT is enabled.
func NewAuthenticator(cfg config.Auth, tokens TokenVerifier) *Authenticator {
	return &Authenticator{tokens: tokens, certName: cfg.ClientCertificates.Identity, anonymous: cfg.Anonymous}
}

// exempt reports whether a call needs no credentials: health checks, which
// orchestrators make without any.
func exempt(c *edge.Call) bool {
	switch {
	case c.Face == edge.BackendOut:
		return true
	case c.Face == edge.GRPC:
		return strings.HasPrefix(c.Method, "/grpc.health.v1.Health/")
	case c.Face == edge.PixyREST:
		return c.Path == "/_ping"
	}
	return false
}

// Interceptor returns the authenticator as an edge interceptor.
func (a *Authenticator) Interceptor() edge.Interceptor {
	return edge.Interceptor{Begin: a.begin}
}

func (a *Authenticator) begin(ctx context.Context, c *edge.Call) (context.Context, error) {
	if exempt(c) {
		return nil, nil
	}
	id, err := a.identify(ctx, c)
	if err != nil {
		return nil, err
	}
	if id == nil {
		if a.anonymous {
			return nil, nil
		}
		return nil, status.Error(codes.Unauthenticated, a.howTo())
	}
	c.SetIdentity(id.Name)
	return NewContext(ctx, id), nil
}

// identify returns the call's identity, nil when it brings no credentials.
func (a *Authenticator) identify(ctx context.Context, c *edge.Call) (*Identity, error) {
	if a.tokens != nil {
		if h := c.Header("authorization"); h != "" {
			scheme, token, ok := strings.Cut(strings.TrimSpace(h), " ")
			if !ok || !strings.EqualFold(scheme, "bearer") || strings.TrimSpace(token) == "" {
				return nil, status.Error(codes.Unauthenticated, "the authorization credentials are not a bearer token: send \"authorization: Bearer <JWT>\"")
			}
			id, err := a.tokens.Verify(ctx, strings.TrimSpace(token))
			if err != nil {
				return nil, status.Errorf(codes.Unauthenticated, "bearer token refused: %v", err)
			}
			return id, nil
		}
	}
	if a.certName != "" && c.TLS != nil && len(c.TLS.VerifiedChains) > 0 && len(c.TLS.VerifiedChains[0]) > 0 {
		name := certName(c.TLS.VerifiedChains[0][0], a.certName)
		if name == "" {
			return nil, status.Errorf(codes.Unauthenticated, "the client certificate has no %s to take the identity from", a.certName)
		}
		return &Identity{Name: name, Source: "certificate"}, nil
	}
	return nil, nil
}

// howTo tells a caller without credentials what to send.
func (a *Authenticator) howTo() string {
	switch {
	case a.tokens != nil && a.certName != "":
		return "no credentials: send \"authorization: Bearer <JWT>\" or a client certificate"
	case a.tokens != nil:
		return "no credentials: send \"authorization: Bearer <JWT>\""
	default:
		return "no credentials: connect with a client certificate"
	}
}

// certName returns the name field of a verified client certificate.
func certName(cert *x509.Certificate, field string) string {
	switch field {
	case config.CertCommonName:
		return cert.Subject.CommonName
	case config.CertSubject:
		return cert.Subject.String()
	case config.CertDNSName:
		if len(cert.DNSNames) > 0 {
			return cert.DNSNames[0]
		}
	case config.CertEmail:
		if len(cert.EmailAddresses) > 0 {
			return cert.EmailAddresses[0]
		}
	case config.CertURI:
		if len(cert.URIs) > 0 {
			return cert.URIs[0].String()
		}
	}
	return ""
}
