package auth

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/MicahParks/jwkset"
	"github.com/MicahParks/keyfunc/v3"
	"github.com/golang-jwt/jwt/v5"
	"golang.org/x/time/rate"

	"github.com/ferryproxy/ferry/internal/config"
)

// The reasons Verify gives for refusing a token. Each is short and safe to show the caller: none
// carries the token, a claim value or key material.
var (
	// ErrTokenExpired is returned for a token whose exp has passed, leeway included.
	ErrTokenExpired = errors.New("token expired")
	// ErrTokenNotYetValid is returned for a token whose nbf or iat is in the future, leeway
	// included.
	ErrTokenNotYetValid = errors.New("token not yet valid")
	// ErrWrongAudience is returned when JWTOptions.Audience is set and the token's aud lacks it.
	ErrWrongAudience = errors.New("wrong audience")
	// ErrWrongIssuer is returned when JWTOptions.Issuer is set and the token's iss differs.
	ErrWrongIssuer = errors.New("wrong issuer")
	// ErrBadSignature is returned when the signature does not verify with the key the token names.
	ErrBadSignature = errors.New("bad signature")
	// ErrUnknownKeyID is returned when the token's kid is in no key set Ferry could load.
	ErrUnknownKeyID = errors.New("unknown key id")
	// ErrMalformedToken is returned for anything that is not a well-formed JWT, the empty token
	// included.
	ErrMalformedToken = errors.New("malformed token")
	// ErrAlgorithmNotAllowed is returned for a token signed with anything but an asymmetric
	// algorithm: none and the HMAC family are always refused.
	ErrAlgorithmNotAllowed = errors.New("algorithm not allowed")
	// ErrNoIdentityClaim is returned when the identity claim is missing, empty or not a string.
	ErrNoIdentityClaim = errors.New("no identity claim")
)

// JWT defaults.
const (
	defaultJWKSRefresh   = 5 * time.Minute
	defaultJWTLeeway     = 30 * time.Second
	defaultIdentityClaim = "sub"
	defaultRolesClaim    = "roles"
	defaultJWKSTimeout   = 10 * time.Second

	// maxTokenBytes bounds the work one call can ask for; real tokens, even with many groups,
	// are a few kilobytes.
	maxTokenBytes = 64 << 10
)

// allowedAlgorithms are the JWS algorithms Ferry verifies: asymmetric ones only, so a public
// key can never be used as an HMAC secret and an unsigned token never passes.
var allowedAlgorithms = map[string]bool{
	"RS256": true, "RS384": true, "RS512": true,
	"PS256": true, "PS384": true, "PS512": true,
	"ES256": true, "ES384": true, "ES512": true,
	"EdDSA": true,
}

// JWTOptions configure a JWT verifier. Exactly one of JWKSFile and JWKSURL is set.
type JWTOptions struct {
	// JWKSFile is a JWKS file. It is re-read when its modification time or size changes, checked
	// at most once a second and whenever a token names an unknown key id.
	JWKSFile string
	// JWKSURL is an https JWKS URL (http only for localhost and 127.0.0.1). It is fetched at
	// start, every Refresh, and when a token names an unknown key id (at most once every ten
	// seconds). A failed fetch keeps the last good key set.
	JWKSURL string
	// Refresh is how often JWKSURL is fetched again; zero means five minutes.
	Refresh time.Duration
	// Issuer, when set, is the iss every token must carry.
	Issuer string
	// Audience, when set, must be one of the token's aud values.
	Audience string
	// Leeway is the clock skew allowed on exp, nbf and iat; zero means thirty seconds.
	Leeway time.Duration
	// IdentityClaim names the claim holding the caller's name; zero means "sub". A dotted path
	// ("user.email") reaches into nested claims; a claim whose own name contains dots is found
	// first.
	IdentityClaim string
	// RolesClaim names the claim holding the caller's roles, an array of strings or a
	// space-separated string like "scope"; zero means "roles". Dotted paths work as for
	// IdentityClaim. A token without it has no roles.
	RolesClaim string
	// HTTPClient fetches JWKSURL; nil means a client with a ten-second timeout.
	HTTPClient *http.Client
	// Logger receives failed reloads of the key set; nil discards them.
	Logger *slog.Logger
}

// JWT verifies bearer tokens against a JWKS and turns them into identities. It is safe for
// concurrent use. The key set in use is swapped atomically when it is reloaded, so Verify never
// waits for a reload it did not ask for.
type JWT struct {
	file          string
	url           string
	client        *http.Client
	ownClient     bool
	identityClaim string
	rolesClaim    string
	logger        *slog.Logger
	parser        *jwt.Parser
	audience      string
	leeway        time.Duration
	verified      tokenCache

	// keys is the key set in use; it is never nil after NewJWT returns.
	keys atomic.Pointer[keySet]
	// reloadMu serializes reloads, so a burst of unknown key ids costs one reload.
	reloadMu sync.Mutex
	// badStamp is the file state whose reload failed last, so a broken file is reported once;
	// guarded by reloadMu.
	badStamp fileStamp
	// nextFileCheck is when, in Unix nanoseconds, the file may be checked for changes again.
	nextFileCheck atomic.Int64
	// unknownKID limits the URL fetches that unknown key ids cause.
	unknownKID *rate.Limiter

	// ctx lives until Close; URL fetches use it.
	ctx       context.Context
	cancel    context.CancelFunc
	done      chan struct{}
	closeOnce sync.Once
}

// NewJWT returns a verifier with its key set loaded. It fails when the options are invalid or
// the key set cannot be loaded: a missing or unparsable file, an unreachable URL, or a set with
// no RSA, EC or Ed25519 key. With JWKSURL it starts a goroutine that refreshes the set until
// Close.
func NewJWT(ctx context.Context, opts JWTOptions) (*JWT, error) {
	// A client of Ferry's own has its idle connections closed by Close.
	ownClient := opts.HTTPClient == nil
	if err := opts.setDefaults(); err != nil {
		return nil, err
	}
	v := &JWT{
		file:          opts.JWKSFile,
		url:           opts.JWKSURL,
		client:        opts.HTTPClient,
		ownClient:     ownClient,
		identityClaim: opts.IdentityClaim,
		rolesClaim:    opts.RolesClaim,
		logger:        opts.Logger,
		audience:      opts.Audience,
		leeway:        opts.Leeway,
		unknownKID:    rate.NewLimiter(rate.Every(unknownKIDInterval), 1),
		done:          make(chan struct{}),
	}
	v.ctx, v.cancel = context.WithCancel(context.WithoutCancel(ctx))
	parserOpts := []jwt.ParserOption{jwt.WithLeeway(opts.Leeway), jwt.WithIssuedAt()}
	if opts.Issuer != "" {
		parserOpts = append(parserOpts, jwt.WithIssuer(opts.Issuer))
	}
	if opts.Audience != "" {
		parserOpts = append(parserOpts, jwt.WithAudience(opts.Audience))
	}
	v.parser = jwt.NewParser(parserOpts...)

	keys, err := v.load(ctx)
	if err != nil {
		v.cancel()
		if v.ownClient {
			v.client.CloseIdleConnections()
		}
		return nil, err
	}
	v.keys.Store(keys)
	v.nextFileCheck.Store(time.Now().Add(fileCheckInterval).UnixNano())

	if v.url == "" {
		close(v.done)
		return v, nil
	}
	go v.refreshLoop(opts.Refresh)
	return v, nil
}

// setDefaults fills in the zero options and checks the rest.
func (o *JWTOptions) setDefaults() error {
	switch {
	case o.JWKSFile == "" && o.JWKSURL == "":
		return errors.New("jwt: a JWKS file or a JWKS URL is required")
	case o.JWKSFile != "" && o.JWKSURL != "":
		return errors.New("jwt: set a JWKS file or a JWKS URL, not both")
	}
	if o.JWKSURL != "" {
		if err := config.CheckJWKSURL(o.JWKSURL); err != nil {
			return fmt.Errorf("jwt: JWKS URL %w", err)
		}
	}
	if o.Refresh < 0 {
		return fmt.Errorf("jwt: JWKS refresh %v is negative", o.Refresh)
	}
	if o.Refresh == 0 {
		o.Refresh = defaultJWKSRefresh
	}
	if o.Leeway < 0 {
		return fmt.Errorf("jwt: leeway %v is negative", o.Leeway)
	}
	if o.Leeway == 0 {
		o.Leeway = defaultJWTLeeway
	}
	if o.IdentityClaim == "" {
		o.IdentityClaim = defaultIdentityClaim
	}
	if o.RolesClaim == "" {
		o.RolesClaim = defaultRolesClaim
	}
	if o.HTTPClient == nil {
		o.HTTPClient = &http.Client{
			Timeout:   defaultJWKSTimeout,
			Transport: http.DefaultTransport.(*http.Transport).Clone(),
		}
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return nil
}

// Verify checks a bearer token (without "Bearer ") and returns the identity it carries. Its
// errors are the Err* reasons of this package, safe to show the caller.
func (v *JWT) Verify(ctx context.Context, token string) (*Identity, error) {
	if token == "" || len(token) > maxTokenBytes {
		return nil, ErrMalformedToken
	}
	if v.file != "" {
		v.checkFile(false)
	}
	keys := v.keys.Load()
	sum, now := sha256.Sum256([]byte(token)), time.Now()
	if id := v.verified.get(sum, keys, now); id != nil {
		return id, nil
	}
	claims := jwt.MapClaims{}
	t, err := v.parser.ParseWithClaims(token, claims, keys.lookup(ctx))
	if errors.Is(err, jwkset.ErrKeyNotFound) && v.refreshForUnknownKID(keys) {
		keys = v.keys.Load()
		claims = jwt.MapClaims{}
		t, err = v.parser.ParseWithClaims(token, claims, keys.lookup(ctx))
	}
	if err != nil {
		return nil, v.reason(t, claims, err)
	}
	name, ok := lookupClaim(claims, v.identityClaim)
	s, isString := name.(string)
	if !ok || !isString || s == "" {
		return nil, ErrNoIdentityClaim
	}
	id := &Identity{Name: s, Source: "jwt"}
	if roles, ok := lookupClaim(claims, v.rolesClaim); ok {
		id.Roles = rolesOf(roles)
	}
	v.verified.put(sum, keys, id, claims, v.leeway, now)
	return id, nil
}

// Close stops refreshing the key set and waits for the refreshing goroutine to end. It is
// idempotent.
func (v *JWT) Close() error {
	v.closeOnce.Do(func() {
		v.cancel()
		<-v.done
		if v.ownClient {
			v.client.CloseIdleConnections()
		}
	})
	return nil
}

// errAlgorithm and errKeyID are what the key lookup returns for the two refusals golang-jwt
// cannot tell apart on its own.
var (
	errAlgorithm = errors.New("algorithm not allowed")
	errKeyID     = errors.New("kid is not a string")
)

// lookup returns the key lookup for one parse: the algorithm is checked before any key is
// looked up, then keyfunc finds the key by kid (or offers every key when the token has none).
func (s *keySet) lookup(ctx context.Context) jwt.Keyfunc {
	byKID := s.keys.KeyfuncCtx(ctx)
	return func(t *jwt.Token) (any, error) {
		if alg, _ := t.Header["alg"].(string); !allowedAlgorithms[alg] || t.Method.Alg() != alg {
			return nil, errAlgorithm
		}
		if kid, ok := t.Header["kid"]; ok {
			if _, ok := kid.(string); !ok {
				return nil, errKeyID
			}
		}
		return byKID(t)
	}
}

// reason turns golang-jwt's and keyfunc's errors into the short reasons Verify gives. The order
// matters: a token that fails several checks gets the first reason that applies.
func (v *JWT) reason(t *jwt.Token, claims jwt.MapClaims, err error) error {
	switch {
	case t == nil, errors.Is(err, jwt.ErrTokenMalformed), errors.Is(err, errKeyID), errors.Is(err, jwt.ErrInvalidType):
		return ErrMalformedToken
	case errors.Is(err, errAlgorithm):
		return ErrAlgorithmNotAllowed
	case errors.Is(err, jwkset.ErrKeyNotFound):
		return ErrUnknownKeyID
	case errors.Is(err, keyfunc.ErrKeyfunc):
		// The key set names another algorithm for this key id.
		return ErrAlgorithmNotAllowed
	case errors.Is(err, jwt.ErrTokenUnverifiable):
		// golang-jwt knows no such algorithm, or the header names none.
		if alg, ok := t.Header["alg"].(string); ok && alg != "" {
			return ErrAlgorithmNotAllowed
		}
		return ErrMalformedToken
	case errors.Is(err, jwt.ErrTokenSignatureInvalid):
		return ErrBadSignature
	case errors.Is(err, jwt.ErrTokenExpired):
		return ErrTokenExpired
	case errors.Is(err, jwt.ErrTokenNotValidYet), errors.Is(err, jwt.ErrTokenUsedBeforeIssued):
		return ErrTokenNotYetValid
	case errors.Is(err, jwt.ErrTokenInvalidAudience):
		return ErrWrongAudience
	case errors.Is(err, jwt.ErrTokenInvalidIssuer):
		return ErrWrongIssuer
	case errors.Is(err, jwt.ErrTokenRequiredClaimMissing):
		// The only required claims are aud and iss, each when configured.
		if aud, _ := claims.GetAudience(); v.audience != "" && len(aud) == 0 {
			return ErrWrongAudience
		}
		return ErrWrongIssuer
	default:
		return ErrMalformedToken
	}
}

// lookupClaim finds a claim by its name, or else by a dotted path through nested objects.
func lookupClaim(claims jwt.MapClaims, name string) (any, bool) {
	if c, ok := claims[name]; ok {
		return c, true
	}
	var cur any = map[string]any(claims)
	for part := range strings.SplitSeq(name, ".") {
		m, ok := cur.(map[string]any)
		if !ok {
			return nil, false
		}
		if cur, ok = m[part]; !ok {
			return nil, false
		}
	}
	return cur, true
}

// rolesOf reads a roles claim: an array of strings, or one space-separated string. Anything
// else, and any element that is not a string, grants nothing.
func rolesOf(c any) []string {
	switch c := c.(type) {
	case string:
		if f := strings.Fields(c); len(f) > 0 {
			return f
		}
	case []any:
		var roles []string
		for _, r := range c {
			if s, ok := r.(string); ok && s != "" {
				roles = append(roles, s)
			}
		}
		return roles
	}
	return nil
}
