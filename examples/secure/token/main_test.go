package main

import (
	"bytes"
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/ferryproxy/ferry/internal/auth"
)

// TestTokenVerifies signs tokens as the README shows and verifies them against the example's
// public key set.
func TestTokenVerifies(t *testing.T) {
	v, err := auth.NewJWT(context.Background(), auth.JWTOptions{
		JWKSFile: "../jwks.json",
		Issuer:   "https://idp.example",
		Audience: "ferry",
	})
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()

	sign := func(args ...string) string {
		t.Helper()
		var out bytes.Buffer
		if err := run(args, &out); err != nil {
			t.Fatalf("token %v: %v", args, err)
		}
		return strings.TrimSpace(out.String())
	}

	// The default key is found next to the program (the test runs in its directory).
	id, err := v.Verify(context.Background(), sign("-sub", "alice", "-aud", "ferry", "-roles", "echo,admin", "-iss", "https://idp.example"))
	if err != nil {
		t.Fatal(err)
	}
	if id.Name != "alice" || !slices.Equal(id.Roles, []string{"echo", "admin"}) || id.Source != "jwt" {
		t.Fatalf("identity %+v", id)
	}

	expired := sign("-key", "../jwt-private.pem", "-sub", "bob", "-iss", "https://idp.example", "-exp", "-1h")
	if _, err := v.Verify(context.Background(), expired); err != auth.ErrTokenExpired {
		t.Fatalf("expired token: %v, want %v", err, auth.ErrTokenExpired)
	}
	if _, err := v.Verify(context.Background(), sign("-sub", "carol", "-aud", "other", "-iss", "https://idp.example")); err != auth.ErrWrongAudience {
		t.Fatalf("other audience: %v, want %v", err, auth.ErrWrongAudience)
	}
}

func TestTokenErrors(t *testing.T) {
	for _, args := range [][]string{
		{"-key", "nope.pem"},
		{"-key", "main.go"},
		{"extra"},
	} {
		if err := run(args, &bytes.Buffer{}); err == nil {
			t.Errorf("token %v: no error", args)
		}
	}
}
