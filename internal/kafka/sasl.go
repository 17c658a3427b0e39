package kafka

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"

	awssdk "github.com/aws/aws-sdk-go-v2/aws"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/twmb/franz-go/pkg/sasl"
	"github.com/twmb/franz-go/pkg/sasl/aws"
	"github.com/twmb/franz-go/pkg/sasl/oauth"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"

	"github.com/ferryproxy/ferry/internal/config"
)

// saslAuth is a cluster's SASL mechanism, with a check of what it
// authenticates with (a token file, AWS credentials) that needs no
// broker, so that Start can say what is missing before it dials.
type saslAuth struct {
	mech  sasl.Mechanism
	check func(context.Context) error
}

// saslMechanism turns a cluster's sasl section into a franz-go mechanism.
// It reads the files the section names; the logger gets the problems of
// later reads.
func saslMechanism(s config.ClusterSASL, logger *slog.Logger) (saslAuth, error) {
	switch s.Mechanism {
	case config.SASLPlain, config.SASLScramSHA256, config.SASLScramSHA512:
		pass, err := s.Secret()
		if err != nil {
			return saslAuth{}, fmt.Errorf("clusters[].sasl: %w", err)
		}
		a := saslAuth{check: func(context.Context) error { return nil }}
		switch s.Mechanism {
		case config.SASLPlain:
			a.mech = plain.Auth{User: s.Username, Pass: pass}.AsMechanism()
		case config.SASLScramSHA256:
			a.mech = scram.Auth{User: s.Username, Pass: pass}.AsSha256Mechanism()
		default:
			a.mech = scram.Auth{User: s.Username, Pass: pass}.AsSha512Mechanism()
		}
		return a, nil
	case config.SASLOAuthBearer:
		tok := s.Token
		read := func(context.Context) (string, error) { return tok, nil }
		if s.TokenFile != "" {
			read = (&tokenFile{name: s.TokenFile, logger: logger}).read
		}
		mech := oauth.Oauth(func(ctx context.Context) (oauth.Auth, error) {
			t, err := read(ctx)
			return oauth.Auth{Token: t, Extensions: s.Extensions}, err
		})
		return saslAuth{mech: mech, check: func(ctx context.Context) error {
			_, err := read(ctx)
			return err
		}}, nil
	case config.SASLAWSMSKIAM:
		creds, err := awsCredentials(s.AWS)
		if err != nil {
			return saslAuth{}, err
		}
		retrieve := func(ctx context.Context) (aws.Auth, error) {
			c, err := creds.Retrieve(ctx)
			if err != nil {
				return aws.Auth{}, fmt.Errorf("no AWS credentials for sasl AWS_MSK_IAM (set clusters[].sasl.aws, or give the AWS SDK its credentials: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, AWS_PROFILE, web identity, or an ECS or EC2 role): %w", err)
			}
			return aws.Auth{AccessKey: c.AccessKeyID, SecretKey: c.SecretAccessKey, SessionToken: c.SessionToken}, nil
		}
		return saslAuth{mech: aws.ManagedStreamingIAM(retrieve), check: func(ctx context.Context) error {
			_, err := retrieve(ctx)
			return err
		}}, nil
	}
	return saslAuth{}, fmt.Errorf("clusters[].sasl.mechanism: %q is not a SASL mechanism", s.Mechanism)
}

// awsCredentials returns the static credentials of c when they are set,
// and otherwise the AWS SDK's default chain: the environment, the shared
// config and credentials files, web identity (EKS), ECS and EC2 roles.
// The chain caches what it fetches and renews it before it expires.
func awsCredentials(c config.AWSCredentials) (awssdk.CredentialsProvider, error) {
	if c.AccessKeyID != "" {
		return awssdk.CredentialsProviderFunc(func(context.Context) (awssdk.Credentials, error) {
			return awssdk.Credentials{AccessKeyID: c.AccessKeyID, SecretAccessKey: c.SecretAccessKey, SessionToken: c.SessionToken, Source: "clusters[].sasl.aws"}, nil
		}), nil
	}
	// Loading reads the shared config files only; nothing is fetched
	// until the first authentication.
	cfg, err := awsconfig.LoadDefaultConfig(context.Background())
	if err != nil {
		return nil, fmt.Errorf("clusters[].sasl: loading the AWS SDK's configuration: %w", err)
	}
	if cfg.Credentials == nil {
		return nil, errors.New("clusters[].sasl: the AWS SDK's configuration has no credential provider")
	}
	return cfg.Credentials, nil
}

// tokenFile is an OAUTHBEARER token kept in a file that another process,
// such as a sidecar, renews. It is read at every authentication, which
// happens once per connection, so a new token is used from the next
// connection on.
type tokenFile struct {
	name   string
	logger *slog.Logger

	mu   sync.Mutex
	last string // the last token read, kept for when the file is being rewritten
}

// read returns the file's token. When the file cannot be read or is empty
// after a token was read before, that token is used and a warning logged:
// a renewing process may be between truncating and writing the file.
func (f *tokenFile) read(context.Context) (string, error) {
	tok, err := config.ReadToken(f.name)
	f.mu.Lock()
	defer f.mu.Unlock()
	switch {
	case err == nil:
		f.last = tok
		return tok, nil
	case f.last != "":
		f.logger.Warn("using the previous OAUTHBEARER token (clusters[].sasl.token_file)", "error", err)
		return f.last, nil
	}
	return "", fmt.Errorf("clusters[].sasl.token_file: %w", err)
}
