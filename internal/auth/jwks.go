package auth

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"time"

	"github.com/MicahParks/jwkset"
	"github.com/MicahParks/keyfunc/v3"
)

// How often key sets are looked at again outside the refresh schedule.
const (
	// fileCheckInterval is how often Verify may stat the JWKS file for changes.
	fileCheckInterval = time.Second
	// unknownKIDInterval is how often a token naming an unknown key id may cause a fetch of the
	// JWKS URL, so a stream of made-up key ids cannot turn Ferry against the identity provider.
	unknownKIDInterval = 10 * time.Second
	// maxJWKSBytes bounds the JWKS file Ferry reads.
	maxJWKSBytes = 1 << 20
)

// keySet is one loaded JWKS. It is never changed once built: a reload builds another and swaps
// it in.
type keySet struct {
	keys keyfunc.Keyfunc
	// stamp is the file's state when it was read; zero for a URL.
	stamp fileStamp
}

// fileStamp is what tells that a JWKS file changed.
type fileStamp struct {
	modTime time.Time
	size    int64
}

func stampOf(fi os.FileInfo) fileStamp {
	return fileStamp{modTime: fi.ModTime(), size: fi.Size()}
}

func (s fileStamp) equal(o fileStamp) bool {
	return s.size == o.size && s.modTime.Equal(o.modTime)
}

// load reads the key set from the file or the URL.
func (v *JWT) load(ctx context.Context) (*keySet, error) {
	if v.file != "" {
		return loadJWKSFile(v.file)
	}
	return loadJWKSURL(ctx, v.url, v.client)
}

// loadJWKSFile reads and parses a JWKS file.
func loadJWKSFile(path string) (*keySet, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("jwt: reading JWKS file: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("jwt: reading JWKS file: %w", err)
	}
	raw, err := io.ReadAll(io.LimitReader(f, maxJWKSBytes+1))
	if err != nil {
		return nil, fmt.Errorf("jwt: reading JWKS file: %w", err)
	}
	if len(raw) > maxJWKSBytes {
		return nil, fmt.Errorf("jwt: JWKS file %s is larger than %d bytes", path, maxJWKSBytes)
	}
	keys, err := keyfunc.NewJWKSetJSON(raw)
	if err != nil {
		return nil, fmt.Errorf("jwt: parsing JWKS file %s: %w", path, err)
	}
	if err := checkUsable(keys); err != nil {
		return nil, fmt.Errorf("jwt: JWKS file %s: %w", path, err)
	}
	return &keySet{keys: keys, stamp: stampOf(fi)}, nil
}

// loadJWKSURL fetches and parses the JWKS at u once. jwkset's storage does the fetch; its own
// refresh goroutine is not used, because Close could not wait for it to end.
func loadJWKSURL(ctx context.Context, u string, client *http.Client) (*keySet, error) {
	redacted := u
	if pu, err := url.Parse(u); err == nil {
		redacted = pu.Redacted()
	}
	storage, err := jwkset.NewStorageFromHTTP(u, jwkset.HTTPClientStorageOptions{
		Client:      client,
		Ctx:         ctx,
		HTTPTimeout: defaultJWKSTimeout,
	})
	if err != nil {
		return nil, fmt.Errorf("jwt: fetching JWKS from %s: %w", redacted, err)
	}
	keys, err := keyfunc.New(keyfunc.Options{Ctx: ctx, Storage: storage})
	if err != nil {
		return nil, fmt.Errorf("jwt: JWKS from %s: %w", redacted, err)
	}
	if err := checkUsable(keys); err != nil {
		return nil, fmt.Errorf("jwt: JWKS from %s: %w", redacted, err)
	}
	return &keySet{keys: keys}, nil
}

// checkUsable refuses a key set that could verify nothing Ferry accepts: one with no RSA, EC or
// Ed25519 key (keys of other kinds, HMAC secrets among them, are simply never used).
func checkUsable(keys keyfunc.Keyfunc) error {
	all, err := keys.Storage().KeyReadAll(context.Background())
	if err != nil {
		return err
	}
	for _, k := range all {
		switch k.Key().(type) {
		case *rsa.PublicKey, *rsa.PrivateKey, *ecdsa.PublicKey, *ecdsa.PrivateKey,
			ed25519.PublicKey, ed25519.PrivateKey:
			return nil
		}
	}
	return errors.New("the key set has no RSA, EC or Ed25519 key")
}

// checkFile reloads the JWKS file when it changed on disk. Unless forced (for an unknown key
// id), it looks at most once every fileCheckInterval, and only one caller looks at a time. A file
// that fails to load leaves the last good key set in use and is reported once.
func (v *JWT) checkFile(force bool) {
	now := time.Now().UnixNano()
	next := v.nextFileCheck.Load()
	if !force && (now < next || !v.nextFileCheck.CompareAndSwap(next, now+int64(fileCheckInterval))) {
		return
	}
	fi, err := os.Stat(v.file)
	if err != nil || stampOf(fi).equal(v.keys.Load().stamp) {
		// A file that is briefly missing while it is replaced keeps the last good set.
		return
	}
	v.reloadMu.Lock()
	defer v.reloadMu.Unlock()
	if stampOf(fi).equal(v.keys.Load().stamp) {
		return
	}
	keys, err := loadJWKSFile(v.file)
	if err != nil {
		if stamp := stampOf(fi); !stamp.equal(v.badStamp) {
			v.badStamp = stamp
			v.logger.Warn("jwt: keeping the last good key set", "error", err)
		}
		return
	}
	v.keys.Store(keys)
	v.logger.Info("jwt: JWKS file reloaded", "file", v.file)
}

// refreshURL fetches the JWKS URL again and swaps the new set in; a failure keeps the last good
// set.
func (v *JWT) refreshURL(ctx context.Context) {
	v.reloadMu.Lock()
	defer v.reloadMu.Unlock()
	keys, err := loadJWKSURL(ctx, v.url, v.client)
	if err != nil {
		if ctx.Err() != nil {
			return // Closing: nothing went wrong with the key set.
		}
		v.logger.Warn("jwt: keeping the last good key set", "error", err)
		return
	}
	v.keys.Store(keys)
}

// refreshForUnknownKID looks for new keys after a token named a key id that used was without,
// and reports whether the key set changed since. A caller that may not fetch (the rate limit)
// still waits for a reload under way, so tokens arriving together with a rotated key all see
// it.
func (v *JWT) refreshForUnknownKID(used *keySet) bool {
	switch {
	case v.file != "":
		v.checkFile(true)
	case v.unknownKID.Allow():
		// The fetch is Ferry's, not the caller's: a caller that gives up does not waste the
		// fetch the rate limit allows.
		v.refreshURL(v.ctx)
	default:
		// An empty critical section: it waits for a reload under way, if any.
		v.reloadMu.Lock()
		v.reloadMu.Unlock()
	}
	return v.keys.Load() != used
}

// refreshLoop fetches the JWKS URL every interval until Close; it closes v.done on return.
func (v *JWT) refreshLoop(interval time.Duration) {
	ctx := v.ctx
	defer close(v.done)
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			v.refreshURL(ctx)
		}
	}
}
