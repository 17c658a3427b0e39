package app

import (
	"context"
	"fmt"

	"github.com/ferryproxy/ferry/internal/auth"
	"github.com/ferryproxy/ferry/internal/edge"
)

// authInterceptor returns the interceptor that authenticates every
// inbound call, or false when the configuration authenticates no one. A
// JWT key set is loaded first (a start-up error when it cannot be) and
// refreshed until Close.
func (a *App) authInterceptor(ctx context.Context) (edge.Interceptor, bool, error) {
	cfg := a.cfg.Auth
	if !cfg.Enabled() {
		return edge.Interceptor{}, false, nil
	}
	var tokens auth.TokenVerifier
	if j := cfg.JWT; j.Enabled() {
		v, err := auth.NewJWT(ctx, auth.JWTOptions{
			JWKSFile:      j.JWKSFile,
			JWKSURL:       j.JWKSURL,
			Refresh:       j.JWKSRefresh,
			Issuer:        j.Issuer,
			Audience:      j.Audience,
			Leeway:        j.Leeway,
			IdentityClaim: j.IdentityClaim,
			RolesClaim:    j.RolesClaim,
			Logger:        a.logger.With("component", "jwt"),
		})
		if err != nil {
			return edge.Interceptor{}, false, fmt.Errorf("auth.jwt: %w", err)
		}
		a.own("JWT key set", closeFunc(func(context.Context) error { return v.Close() }))
		tokens = v
	}
	if k := a.cfg.KafkaAPI; (k.Enabled || k.Pixy) && len(k.Allow) == 0 {
		a.logger.Warn("the Kafka API has no allow rules: every authenticated caller may produce to, consume from and administer every topic and group; list what each may do under kafka_api.allow")
	}
	return auth.NewAuthenticator(cfg, tokens).Interceptor(), true, nil
}
