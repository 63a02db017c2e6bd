package controlapi

import (
	"context"
	"time"

	"github.com/shoal-dev/shoal/errdefs"
	"github.com/shoal-dev/shoal/manager/gossipkeys"

	"google.golang.org/protobuf/proto"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
	"github.com/shoal-dev/shoal/raftstore"
)

// Bounds of the cluster settings (`shoal cluster update`). Zero always
// means "the default"; anything else must be in range, so that a typo
// cannot stop every node (a certificate lifetime of a millisecond) or
// disarm a safety limit.
const (
	MinHeartbeatPeriod = 100 * time.Millisecond
	MaxHeartbeatPeriod = time.Minute
	MaxDownAfterMissed = 100
	// A node renews at two thirds of its certificate's lifetime; below ten
	// seconds renewals would crowd out everything else.
	MinNodeCertExpiry = 10 * time.Second
	MaxNodeCertExpiry = 10 * 365 * 24 * time.Hour
	MaxMaxReplicas    = 1_000_000
	MinRestartGrace   = time.Second
	MaxRestartGrace   = 24 * time.Hour
)

// validateSettings checks every field of s, naming the field path.
func validateSettings(s *shoalv1.ClusterSettings) error {
	if s == nil {
		return errdefs.InvalidArgumentf("settings: required")
	}
	ms := func(field string, v int64, lo, hi time.Duration) error {
		if v == 0 {
			return nil
		}
		if d := time.Duration(v) * time.Millisecond; v < 0 || d < lo || d > hi {
			return errdefs.InvalidArgumentf("settings.%s: %d ms is out of range (0 for the default, or %s to %s)", field, v, lo, hi)
		}
		return nil
	}
	if err := ms("heartbeat_period_ms", s.GetHeartbeatPeriodMs(), MinHeartbeatPeriod, MaxHeartbeatPeriod); err != nil {
		return err
	}
	if v := s.GetNodeDownAfterMissed(); v < 0 || v > MaxDownAfterMissed {
		return errdefs.InvalidArgumentf("settings.node_down_after_missed: %d is out of range (0 for the default, or 1 to %d)", v, MaxDownAfterMissed)
	}
	if err := ms("node_cert_expiry_ms", s.GetNodeCertExpiryMs(), MinNodeCertExpiry, MaxNodeCertExpiry); err != nil {
		return err
	}
	if v := s.GetMaxReplicas(); v < 0 || v > MaxMaxReplicas {
		return errdefs.InvalidArgumentf("settings.max_replicas: %d is out of range (0 for the default, or 1 to %d)", v, MaxMaxReplicas)
	}
	if err := ms("restart_grace_ms", s.GetRestartGraceMs(), MinRestartGrace, MaxRestartGrace); err != nil {
		return err
	}
	if v := s.GetTaskHistoryLimit(); v < 0 || v > MaxTaskHistoryLimit {
		return errdefs.InvalidArgumentf("settings.task_history_limit: %d is out of range (0 for the default, 5, or 1 to %d)", v, MaxTaskHistoryLimit)
	}
	return validatePoolSettings(s)
}

// UpdateCluster replaces the cluster's settings. The version read must be
// given (optimistic concurrency) unless ignore_version is set. Node
// certificates pick up a new lifetime at their next renewal.
func (s *Server) UpdateCluster(ctx context.Context, req *shoalv1.UpdateClusterRequest) (*shoalv1.UpdateClusterResponse, error) {
	if err := validateSettings(req.GetSettings()); err != nil {
		return nil, err
	}
	if req.GetVersion() == 0 && !req.GetIgnoreVersion() {
		return nil, errdefs.InvalidArgumentf("version: required (the cluster's version as read), or set ignore_version")
	}
	var out *shoalv1.Cluster
	_, err := s.store.Update(ctx, func(tx raftstore.WriteTx) error {
		c, err := clusterOf(tx)
		if err != nil {
			return err
		}
		c = proto.Clone(c).(*shoalv1.Cluster)
		if !req.GetIgnoreVersion() {
			c.Meta.Version = req.GetVersion()
		}
		c.Settings = proto.Clone(req.GetSettings()).(*shoalv1.ClusterSettings)
		if req.GetRotateGossipKey() {
			keys, err := gossipkeys.Rotate(c.GetGossipKeys())
			if err != nil {
				return err
			}
			c.GossipKeys = keys
		}
		out = c
		return tx.Update(c)
	})
	if err != nil {
		return nil, err
	}
	st := out.GetSettings()
	s.log.Info("cluster settings updated", "node_cert_expiry_ms", st.GetNodeCertExpiryMs(), "max_replicas", st.GetMaxReplicas(),
		"restart_grace_ms", st.GetRestartGraceMs(), "task_history_limit", st.GetTaskHistoryLimit(), "heartbeat_period_ms", st.GetHeartbeatPeriodMs(), "node_down_after_missed", st.GetNodeDownAfterMissed(),
		"gossip_key_rotated", req.GetRotateGossipKey(), "gossip_keys", len(out.GetGossipKeys()))
	return &shoalv1.UpdateClusterResponse{Cluster: publicCluster(out)}, nil
}
