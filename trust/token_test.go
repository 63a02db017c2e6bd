package trust_test

import (
	"errors"
	"regexp"
	"strings"
	"testing"

	"github.com/shoal-dev/shoal/trust"
)

var tokenShape = regexp.MustCompile(`^SHOAL-1-[0-9a-f]{64}-[a-z2-7]{26}$`)

func TestJoinTokenRoundTrip(t *testing.T) {
	root := newRoot(t, "c")
	tok, err := trust.NewJoinToken(root.Digest())
	if err != nil {
		t.Fatal(err)
	}
	if !tokenShape.MatchString(tok) {
		t.Fatalf("token %q does not have the token shape", tok)
	}
	digest, secret, err := trust.ParseJoinToken(tok)
	if err != nil {
		t.Fatalf("ParseJoinToken: %v", err)
	}
	if digest != root.Digest() || !strings.HasSuffix(tok, "-"+secret) || len(secret) != 26 {
		t.Errorf("parsed %q, %q from %q", digest, secret, tok)
	}
	// A pasted token with its newline still parses.
	if d, _, err := trust.ParseJoinToken(" " + tok + "\n"); err != nil || d != digest {
		t.Errorf("ParseJoinToken with white space = %q, %v", d, err)
	}
	tok2, err := trust.NewJoinToken(root.Digest())
	if err != nil {
		t.Fatal(err)
	}
	if tok2 == tok {
		t.Error("two tokens are equal")
	}
}

func TestNewJoinTokenRejectsBadDigest(t *testing.T) {
	for _, d := range []string{"", "abc", strings.Repeat("A", 64), strings.Repeat("g", 64)} {
		if tok, err := trust.NewJoinToken(d); err == nil {
			t.Errorf("NewJoinToken(%q) = %q, want an error", d, tok)
		}
	}
}

func TestParseJoinTokenMalformed(t *testing.T) {
	digest := strings.Repeat("ab", 32)
	secret := "abcdefghijklmnopqrstuvwxyz"
	for _, tc := range []struct {
		name, tok string
		malformed bool // wraps ErrMalformedToken
		want      string
	}{
		{"empty", "", true, "want SHOAL-1-<ca digest>-<secret>"},
		{"prefix only", "SHOAL", true, ""},
		{"lower-case prefix", "shoal-1-" + digest + "-" + secret, true, ""},
		{"missing secret", "SHOAL-1-" + digest, true, ""},
		{"extra part", "SHOAL-1-" + digest + "-" + secret + "-x", true, ""},
		{"short digest", "SHOAL-1-abcd-" + secret, true, "CA digest"},
		{"upper-case digest", "SHOAL-1-" + strings.ToUpper(digest) + "-" + secret, true, "CA digest"},
		{"short secret", "SHOAL-1-" + digest + "-abc", true, "secret must be"},
		{"bad secret alphabet", "SHOAL-1-" + digest + "-" + strings.Repeat("0", 26), true, "secret must be"},
		{"unknown version", "SHOAL-2-" + digest + "-" + secret, false, `version "2"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := trust.ParseJoinToken(tc.tok)
			if err == nil {
				t.Fatalf("ParseJoinToken(%q) succeeded", tc.tok)
			}
			if errors.Is(err, trust.ErrMalformedToken) != tc.malformed {
				t.Errorf("errors.Is(%v, ErrMalformedToken) = %v", err, !tc.malformed)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not contain %q", err, tc.want)
			}
			if strings.Contains(err.Error(), secret) || strings.Contains(err.Error(), strings.Repeat("0", 26)) {
				t.Errorf("error %q quotes the secret", err)
			}
		})
	}
	if _, _, err := trust.ParseJoinToken("x"); err == nil || err.Error() != "join token is malformed: want SHOAL-1-<ca digest>-<secret>" {
		t.Errorf("malformed error = %v", err)
	}
}

func TestTokenEqual(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		want bool
	}{
		{"SHOAL-1-a-b", "SHOAL-1-a-b", true},
		{"SHOAL-1-a-b", "SHOAL-1-a-c", false},
		{"SHOAL-1-a-b", "SHOAL-1-a-bb", false},
		{"", "", true},
		{"", "x", false},
	} {
		if got := trust.TokenEqual(tc.a, tc.b); got != tc.want {
			t.Errorf("TokenEqual(%q, %q) = %v", tc.a, tc.b, got)
		}
	}
}
