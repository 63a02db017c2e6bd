package trust

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"strings"
	"time"

	"google.golang.org/grpc/metadata"

	"github.com/shoal-dev/shoal/errdefs"
	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// API bearer tokens ("shoal_<id>_<secret>") are for programs and browsers
// that hold no client certificate. The cluster keeps only the SHA-256 of
// the secret (Cluster.api_tokens); the id, in clear in the token, finds
// the entry, and the hash is compared in constant time. A token acts with
// one of three token roles, checked per method against TokenPolicy.

// TokenPrefix starts every API token.
const TokenPrefix = "shoal_"

// tokenSecretBytes is the entropy of a token's secret.
const tokenSecretBytes = 32

// tokenIDBytes is the size of a token's id (hex in the token).
const tokenIDBytes = 8

// validTokenID reports whether id is what NewTokenID makes.
func validTokenID(id string) bool {
	if len(id) != 2*tokenIDBytes {
		return false
	}
	_, err := hex.DecodeString(id)
	return err == nil && strings.ToLower(id) == id
}

// The identity roles of a caller authenticated by an API token. They are
// never valid in a certificate's OU (Role.valid), so a certificate cannot
// claim them; they travel in forwarded calls like the certificate roles.
const (
	RoleViewerToken   Role = "viewer-token"
	RoleOperatorToken Role = "operator-token"
	RoleAdminToken    Role = "admin-token"
)

// TokenRole is the right of an API token: each includes the ones below.
type TokenRole int

// Token roles, weakest first.
const (
	TokenViewer TokenRole = iota + 1
	TokenOperator
	TokenAdmin
)

// String is the role's name as the API and CLI spell it.
func (r TokenRole) String() string {
	switch r {
	case TokenViewer:
		return "viewer"
	case TokenOperator:
		return "operator"
	case TokenAdmin:
		return "admin"
	}
	return fmt.Sprintf("TokenRole(%d)", int(r))
}

// ParseTokenRole reads "viewer", "operator" or "admin".
func ParseTokenRole(s string) (TokenRole, error) {
	switch s {
	case "viewer":
		return TokenViewer, nil
	case "operator":
		return TokenOperator, nil
	case "admin":
		return TokenAdmin, nil
	}
	return 0, fmt.Errorf("%q is not a token role (viewer, operator or admin)", s)
}

// Identity role of a token role, and back.
func (r TokenRole) identityRole() Role {
	switch r {
	case TokenViewer:
		return RoleViewerToken
	case TokenOperator:
		return RoleOperatorToken
	case TokenAdmin:
		return RoleAdminToken
	}
	return ""
}

// TokenRoleOf returns the token role an identity acts with, or 0 when the
// identity is not a token's (a certificate's).
func TokenRoleOf(id Identity) TokenRole {
	switch id.Role {
	case RoleViewerToken:
		return TokenViewer
	case RoleOperatorToken:
		return TokenOperator
	case RoleAdminToken:
		return TokenAdmin
	}
	return 0
}

// NewAPIToken makes a token for id: the bearer string (shown once) and
// the hash the cluster stores.
func NewAPIToken(id string) (token string, hash []byte, err error) {
	secret := make([]byte, tokenSecretBytes)
	if _, err := rand.Read(secret); err != nil {
		return "", nil, err
	}
	enc := base64.RawURLEncoding.EncodeToString(secret)
	sum := sha256.Sum256([]byte(enc))
	return TokenPrefix + id + "_" + enc, sum[:], nil
}

// NewTokenID returns a random token id (hex: no '_', which separates the
// token's parts).
func NewTokenID() (string, error) {
	b := make([]byte, tokenIDBytes)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return hex.EncodeToString(b), nil
}

// ParseAPIToken splits a bearer token into its id and secret. The error
// never repeats the token.
func ParseAPIToken(token string) (id, secret string, err error) {
	rest, ok := strings.CutPrefix(token, TokenPrefix)
	if !ok {
		return "", "", fmt.Errorf("malformed API token: it does not start with %q", TokenPrefix)
	}
	id, secret, ok = strings.Cut(rest, "_")
	if !ok || id == "" || secret == "" {
		return "", "", fmt.Errorf("malformed API token: expected %s<id>_<secret>", TokenPrefix)
	}
	// The id is checked before it is named in any error: a token pasted
	// without its id would otherwise have part of its secret (which may
	// hold '_') echoed as the id, and a huge one would fill the reply.
	if !validTokenID(id) {
		return "", "", fmt.Errorf("malformed API token: the id is not %d hex digits (expected %s<id>_<secret>)", 2*tokenIDBytes, TokenPrefix)
	}
	if len(secret) != base64.RawURLEncoding.EncodedLen(tokenSecretBytes) {
		return "", "", fmt.Errorf("malformed API token %q: the secret has the wrong length", id)
	}
	return id, secret, nil
}

// VerifyAPIToken checks a bearer token against the cluster's tokens at
// now and returns the identity it acts as. Every refusal is
// Unauthenticated, names the token by id only, and says why (unknown,
// wrong secret, revoked, expired).
func VerifyAPIToken(tokens []*shoalv1.ApiToken, clusterID, token string, now time.Time) (Identity, error) {
	id, secret, err := ParseAPIToken(token)
	if err != nil {
		return Identity{}, errdefs.Unauthenticatedf("%v", err)
	}
	for _, t := range tokens {
		if t.GetId() != id {
			continue
		}
		sum := sha256.Sum256([]byte(secret))
		if subtle.ConstantTimeCompare(sum[:], t.GetSecretHash()) != 1 {
			return Identity{}, errdefs.Unauthenticatedf("API token %q: wrong secret", id)
		}
		if t.GetRevoked() {
			return Identity{}, errdefs.Unauthenticatedf("API token %q (%s) has been revoked", id, t.GetName())
		}
		if exp := t.GetExpiresAt(); exp != nil && !now.Before(exp.AsTime()) {
			return Identity{}, errdefs.Unauthenticatedf("API token %q (%s) expired at %s", id, t.GetName(), exp.AsTime().UTC().Format(time.RFC3339))
		}
		role, err := ParseTokenRole(t.GetRole())
		if err != nil {
			return Identity{}, errdefs.Unauthenticatedf("API token %q: %v", id, err)
		}
		return Identity{NodeID: t.GetName(), ClusterID: clusterID, Role: role.identityRole(), Serial: id}, nil
	}
	return Identity{}, errdefs.Unauthenticatedf("API token %q is not known to this cluster", id)
}

// bearerToken returns the bearer token of a call's "authorization"
// metadata, if it carries one.
//
// It reads the one key (metadata.ValueFromIncomingContext) rather than a
// copy of all the call's metadata (FromIncomingContext), which was half of
// the authorizer's time on a call without a token.
func bearerToken(ctx context.Context) (string, bool) {
	for _, v := range metadata.ValueFromIncomingContext(ctx, "authorization") {
		scheme, tok, ok := strings.Cut(v, " ")
		if ok && strings.EqualFold(scheme, "bearer") {
			return strings.TrimSpace(tok), true
		}
	}
	return "", false
}
