// Command token prints a JWT signed with the secure example's throwaway key, for trying Ferry's
// JWT authentication by hand:
//
//	go run ./examples/secure/token -sub alice -aud ferry -roles echo [-iss X] [-exp 1h]
//
// A negative -exp prints a token that has already expired. The key is read from -key, by default
// examples/secure/jwt-private.pem from the repository root or the key next to this program; its
// public half is examples/secure/jwks.json.
package main

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// exampleKID is the key id of the example key in examples/secure/jwks.json.
const exampleKID = "ferry-example"

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "token:", err)
		os.Exit(2)
	}
}

// run parses args, signs the token and writes it with a newline to out.
func run(args []string, out io.Writer) error {
	fs := flag.NewFlagSet("token", flag.ContinueOnError)
	sub := fs.String("sub", "alice", "the subject (sub): the caller's identity")
	aud := fs.String("aud", "ferry", "the audience (aud); empty for none")
	roles := fs.String("roles", "", "comma-separated roles (the roles claim); empty for none")
	iss := fs.String("iss", "", "the issuer (iss); empty for none")
	exp := fs.Duration("exp", time.Hour, "lifetime from now; negative for an expired token")
	keyPath := fs.String("key", "", "PEM private key (PKCS #8); default: the example key")
	kid := fs.String("kid", exampleKID, "the key id (kid) in the token's header")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	path := *keyPath
	if path == "" {
		var err error
		if path, err = findExampleKey(); err != nil {
			return err
		}
	}
	key, method, err := readKey(path)
	if err != nil {
		return err
	}

	now := time.Now()
	claims := jwt.MapClaims{
		"sub": *sub,
		"iat": now.Unix(),
		"exp": now.Add(*exp).Unix(),
	}
	if *aud != "" {
		claims["aud"] = *aud
	}
	if *iss != "" {
		claims["iss"] = *iss
	}
	if *roles != "" {
		claims["roles"] = strings.Split(*roles, ",")
	}
	t := jwt.NewWithClaims(method, claims)
	t.Header["kid"] = *kid
	signed, err := t.SignedString(key)
	if err != nil {
		return fmt.Errorf("signing: %w", err)
	}
	_, err = fmt.Fprintln(out, signed)
	return err
}

// findExampleKey finds jwt-private.pem from the repository root, from this program's source
// directory or its parent, or next to the executable.
func findExampleKey() (string, error) {
	candidates := []string{
		filepath.Join("examples", "secure", "jwt-private.pem"),
		"jwt-private.pem",
		filepath.Join("..", "jwt-private.pem"),
	}
	if exe, err := os.Executable(); err == nil {
		candidates = append(candidates, filepath.Join(filepath.Dir(exe), "jwt-private.pem"))
	}
	for _, c := range candidates {
		if _, err := os.Stat(c); err == nil {
			return c, nil
		}
	}
	return "", errors.New("no example key found: run from the repository root or give -key")
}

// readKey reads a PKCS #8 PEM private key and picks the signing method that fits it.
func readKey(path string) (crypto.Signer, jwt.SigningMethod, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, fmt.Errorf("reading key: %w", err)
	}
	block, _ := pem.Decode(raw)
	if block == nil {
		return nil, nil, fmt.Errorf("reading key %s: no PEM block", path)
	}
	parsed, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, nil, fmt.Errorf("parsing key %s: %w", path, err)
	}
	switch k := parsed.(type) {
	case *rsa.PrivateKey:
		return k, jwt.SigningMethodRS256, nil
	case ed25519.PrivateKey:
		return k, jwt.SigningMethodEdDSA, nil
	case *ecdsa.PrivateKey:
		switch k.Curve {
		case elliptic.P256():
			return k, jwt.SigningMethodES256, nil
		case elliptic.P384():
			return k, jwt.SigningMethodES384, nil
		case elliptic.P521():
			return k, jwt.SigningMethodES512, nil
		}
	}
	return nil, nil, fmt.Errorf("key %s: not an RSA, P-256/384/521 or Ed25519 key", path)
}
