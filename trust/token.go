package trust

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base32"
	"errors"
	"fmt"
	"strings"
)

// Join tokens look like SHOAL-1-<ca digest>-<secret>: the digest (hex SHA-256
// of the CA certificate's DER) lets a joining node pin the CA before it trusts
// any manager; the secret is what the managers check.
const (
	tokenPrefix  = "SHOAL"
	tokenVersion = "1"
	digestLen    = 64 // hex SHA-256
	// secretLen base32 characters carry 130 bits, of which the 128 from
	// secretBytes are random.
	secretLen   = 26
	secretBytes = 16
)

// ErrMalformedToken is wrapped by ParseJoinToken's errors for tokens that do
// not have the token shape.
var ErrMalformedToken = errors.New("join token is malformed: want SHOAL-1-<ca digest>-<secret>")

// secretEncoding is lower-case so tokens survive being typed and are easy to
// tell apart from the upper-case prefix.
var secretEncoding = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// NewJoinToken makes a token pinning the CA with the given digest and a new
// random secret.
func NewJoinToken(caDigest string) (string, error) {
	if !isHexDigest(caDigest) {
		return "", fmt.Errorf("new join token: the CA digest must be %d lower-case hex characters", digestLen)
	}
	b := make([]byte, secretBytes)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("new join token: reading random bytes: %w", err)
	}
	return strings.Join([]string{tokenPrefix, tokenVersion, caDigest, secretEncoding.EncodeToString(b)}, "-"), nil
}

// ParseJoinToken splits a token into the CA digest it pins and its secret.
// Surrounding white space (a pasted newline) is ignored. Errors never quote
// the secret.
func ParseJoinToken(tok string) (digest, secret string, err error) {
	parts := strings.Split(strings.TrimSpace(tok), "-")
	if len(parts) != 4 || parts[0] != tokenPrefix {
		return "", "", ErrMalformedToken
	}
	if parts[1] != tokenVersion {
		return "", "", fmt.Errorf("join token version %q is not supported (want %s); was it made by a newer shoal?", parts[1], tokenVersion)
	}
	digest, secret = parts[2], parts[3]
	if !isHexDigest(digest) {
		return "", "", fmt.Errorf("%w (the CA digest must be %d lower-case hex characters)", ErrMalformedToken, digestLen)
	}
	if len(secret) != secretLen || strings.Trim(secret, "abcdefghijklmnopqrstuvwxyz234567") != "" {
		return "", "", fmt.Errorf("%w (the secret must be %d characters of a-z and 2-7)", ErrMalformedToken, secretLen)
	}
	return digest, secret, nil
}

// TokenEqual compares two tokens in time independent of where they differ,
// so that a caller probing tokens learns nothing from response times.
func TokenEqual(a, b string) bool {
	return subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1
}

func isHexDigest(s string) bool {
	if len(s) != digestLen {
		return false
	}
	for _, r := range s {
		if (r < '0' || r > '9') && (r < 'a' || r > 'f') {
			return false
		}
	}
	return true
}
