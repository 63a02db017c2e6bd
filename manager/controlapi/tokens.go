package controlapi

import (
	"context"
	"fmt"
	"regexp"
	"slices"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/shoal-dev/shoal/errdefs"
	"github.com/shoal-dev/shoal/manager/forward"
	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
	"github.com/shoal-dev/shoal/raftstore"
	"github.com/shoal-dev/shoal/specrules"
	"github.com/shoal-dev/shoal/trust"
)

// API tokens (`shoal token create|ls|revoke`) are bearer credentials for
// the HTTP/JSON API and programs. The cluster object lists them with the
// SHA-256 of their secret only; the token itself is in the create reply
// and nowhere else (never in a log: logs name the token's id).

const (
	// MaxAPITokens bounds the tokens the cluster object keeps (revoked
	// and expired ones are dropped first when a new one needs room).
	MaxAPITokens = 1000
	// MinTokenTTL and MaxTokenTTL bound ttl_ms (0: no expiry). A second
	// is short but harmless (a script's one-shot token; tests of expiry).
	MinTokenTTL = time.Second
	MaxTokenTTL = 10 * 365 * 24 * time.Hour
)

// tokenNameRE: names are what operators revoke by.
var tokenNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$`)

// CreateToken makes a token and records its hash. Names are unique among
// the tokens listed (revoked ones included until they are dropped).
func (s *Server) CreateToken(ctx context.Context, req *shoalv1.CreateTokenRequest) (*shoalv1.CreateTokenResponse, error) {
	name := req.GetName()
	if !tokenNameRE.MatchString(name) {
		return nil, errdefs.InvalidArgumentf("name: %q is not a valid token name (letters, digits, '_', '.', '-'; at most 63; starting with a letter or digit)", name)
	}
	if _, err := trust.ParseTokenRole(req.GetRole()); err != nil {
		return nil, errdefs.InvalidArgumentf("role: %v", err)
	}
	var ttl time.Duration
	if ms := req.GetTtlMs(); ms != 0 {
		ttl = time.Duration(ms) * time.Millisecond
		if ms < 0 || ttl < MinTokenTTL || ttl > MaxTokenTTL {
			return nil, errdefs.InvalidArgumentf("ttl_ms: %d is out of range (0 for no expiry, or %s to %s)", ms, MinTokenTTL, MaxTokenTTL)
		}
	}
	id, err := trust.NewTokenID()
	if err != nil {
		return nil, err
	}
	token, hash, err := trust.NewAPIToken(id)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	info := &shoalv1.ApiToken{Id: id, Name: name, Role: req.GetRole(), SecretHash: hash, CreatedAt: timestamppb.New(now)}
	if ttl > 0 {
		info.ExpiresAt = timestamppb.New(now.Add(ttl))
	}
	if caller, ok := forward.Identity(ctx); ok {
		info.CreatedBy = caller.String()
	}
	_, err = s.store.Update(ctx, func(tx raftstore.WriteTx) error {
		c, err := clusterOf(tx)
		if err != nil {
			return err
		}
		keep, err := keptTokens(c.GetApiTokens(), name, now)
		if err != nil {
			return err
		}
		c = proto.Clone(c).(*shoalv1.Cluster)
		c.ApiTokens = append(keep, info)
		return tx.Update(c)
	})
	if err != nil {
		return nil, err
	}
	s.log.Info("API token created", "token_id", id, "name", name, "role", req.GetRole(), "by", info.GetCreatedBy())
	return &shoalv1.CreateTokenResponse{Token: token, Info: redactToken(info)}, nil
}

// keptTokens returns the tokens to keep beside a new one named name: a
// name in use is refused; at the bound, dead tokens (revoked, expired)
// make room, oldest first, and live ones never do.
func keptTokens(tokens []*shoalv1.ApiToken, name string, now time.Time) ([]*shoalv1.ApiToken, error) {
	for _, t := range tokens {
		if t.GetName() == name {
			return nil, fmt.Errorf("API token %q (revoke it and choose another name): %w", name, raftstore.ErrExists)
		}
	}
	keep := tokens
	for len(keep) >= MaxAPITokens {
		dead := -1
		for i, t := range keep {
			if t.GetRevoked() || (t.GetExpiresAt() != nil && !now.Before(t.GetExpiresAt().AsTime())) {
				dead = i
				break
			}
		}
		if dead < 0 {
			return nil, errdefs.FailedPreconditionf("the cluster already has %d API tokens, the most it keeps: revoke some first", len(keep))
		}
		keep = append(keep[:dead:dead], keep[dead+1:]...)
	}
	return append([]*shoalv1.ApiToken(nil), keep...), nil
}

// ListTokens lists the tokens (revoked ones too), without their hashes.
func (s *Server) ListTokens(ctx context.Context, _ *shoalv1.ListTokensRequest) (*shoalv1.ListTokensResponse, error) {
	r, err := s.read(ctx)
	if err != nil {
		return nil, err
	}
	c, err := clusterOf(r)
	if err != nil {
		return nil, err
	}
	resp := &shoalv1.ListTokensResponse{}
	for _, t := range c.GetApiTokens() {
		resp.Tokens = append(resp.Tokens, redactToken(t))
	}
	return resp, nil
}

// RevokeToken revokes the token named (or with the id) ref. Every manager
// refuses it from the moment the change reaches its store; streams opened
// with it end at their next recheck.
func (s *Server) RevokeToken(ctx context.Context, req *shoalv1.RevokeTokenRequest) (*shoalv1.RevokeTokenResponse, error) {
	ref := req.GetRef()
	if ref == "" {
		return nil, errdefs.InvalidArgumentf("ref: required (the token's name or id)")
	}
	var out *shoalv1.ApiToken
	_, err := s.store.Update(ctx, func(tx raftstore.WriteTx) error {
		c, err := clusterOf(tx)
		if err != nil {
			return err
		}
		c = proto.Clone(c).(*shoalv1.Cluster)
		for _, t := range c.GetApiTokens() {
			if t.GetName() == ref || t.GetId() == ref {
				if t.GetRevoked() {
					return errdefs.FailedPreconditionf("API token %q (%s) is already revoked", t.GetName(), t.GetId())
				}
				t.Revoked = true
				out = t
				return tx.Update(c)
			}
		}
		return notFound("API token", ref)
	})
	if err != nil {
		return nil, err
	}
	s.log.Info("API token revoked", "token_id", out.GetId(), "name", out.GetName())
	return &shoalv1.RevokeTokenResponse{Info: redactToken(out)}, nil
}

// redactToken returns t without its secret's hash.
func redactToken(t *shoalv1.ApiToken) *shoalv1.ApiToken {
	out := proto.Clone(t).(*shoalv1.ApiToken)
	out.SecretHash = nil
	return out
}

// callerBelowAdmin reports whether the caller authenticated with an API
// token weaker than admin: such callers see no join tokens and may not
// change a node's role (their method rows allow the rest).
func callerBelowAdmin(ctx context.Context) bool {
	id, ok := forward.Identity(ctx)
	if !ok {
		return false
	}
	r := trust.TokenRoleOf(id)
	return r != 0 && r < trust.TokenAdmin
}

// checkHostAccess refuses a viewer or operator token a service spec that
// reaches the node itself: a bind mount of a host path or an added
// capability gives the tasks root on every node, and a manager node's
// disk holds the cluster CA key, so an operator token could make itself
// an admin certificate. What the current spec (cur, nil on create)
// already has, set by an admin, an update may keep.
func checkHostAccess(ctx context.Context, spec, cur *shoalv1.ServiceSpec) error {
	if !callerBelowAdmin(ctx) {
		return nil
	}
	c, old := spec.GetTask().GetContainer(), cur.GetTask().GetContainer()
	var p specrules.Problems
	for i, m := range c.GetMounts() {
		if m.GetType() != "bind" {
			continue
		}
		if !slices.ContainsFunc(old.GetMounts(), func(o *shoalv1.Mount) bool { return proto.Equal(o, m) }) {
			p.Add(fmt.Sprintf("spec.task.container.mounts[%d].source", i), "a bind mount of a host path needs an admin token")
		}
	}
	for i, cp := range c.GetCapAdd() {
		if !slices.Contains(old.GetCapAdd(), cp) {
			p.Add(fmt.Sprintf("spec.task.container.cap_add[%d]", i), "adding a capability (%q) needs an admin token", cp)
		}
	}
	if len(p) > 0 {
		return errdefs.PermissionDeniedf("%w", p)
	}
	return nil
}
