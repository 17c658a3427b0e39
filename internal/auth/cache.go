package auth

import (
	"crypto/sha256"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Verified tokens are remembered so that a client sending the same token
// on every call pays for its signature check once: an RSA-2048 check costs
// more CPU than the rest of Ferry's work on a small unary call. An entry
// holds for the key set it was checked with — any reload or refresh of the
// set drops it, so a key removed from the set stops its tokens at once —
// and until the token's exp (plus leeway), at most maxCacheAge.
const (
	maxCachedTokens = 8192
	maxCacheAge     = 5 * time.Minute
)

// tokenCache maps the SHA-256 of a token (not the token: long tokens
// would make the bound on entries a weak bound on memory) to its identity.
type tokenCache struct {
	mu sync.RWMutex
	m  map[[sha256.Size]byte]cachedToken
}

type cachedToken struct {
	id    *Identity
	keys  *keySet // the key set the token was checked with
	until time.Time
}

// get returns the identity of a token checked with keys that is still
// valid at now.
func (c *tokenCache) get(sum [sha256.Size]byte, keys *keySet, now time.Time) *Identity {
	c.mu.RLock()
	e, ok := c.m[sum]
	c.mu.RUnlock()
	if ok && e.keys == keys && now.Before(e.until) {
		return e.id
	}
	return nil
}

// put remembers a token checked with keys at now, whose claims say when
// it expires. When the cache is full it starts again empty: a bound that
// costs nothing per call, and callers re-verify once.
func (c *tokenCache) put(sum [sha256.Size]byte, keys *keySet, id *Identity, claims jwt.MapClaims, leeway time.Duration, now time.Time) {
	until := now.Add(maxCacheAge)
	if exp, err := claims.GetExpirationTime(); err == nil && exp != nil && exp.Add(leeway).Before(until) {
		until = exp.Add(leeway)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil || len(c.m) >= maxCachedTokens {
		c.m = make(map[[sha256.Size]byte]cachedToken, 64)
	}
	c.m[sum] = cachedToken{id: id, keys: keys, until: until}
}
