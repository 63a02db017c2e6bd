package trust

import shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"

// TokenPolicy is the least token role each method needs when the caller
// authenticates with an API token (certificates go by Policy instead):
//
//   - viewer: reads, watches, logs and stats — what a dashboard needs;
//   - operator: also services (create, update, patch, remove, rollback,
//     rebalance), node availability and labels (UpdateNode; a change of
//     the desired role still needs admin, checked by the handler), and
//     networks;
//   - admin: everything else (cluster settings and join tokens, admin
//     certificates, API tokens, node removal, exec).
//
// Methods without a row (Dispatcher, NodeCA, RaftMembership, AgentAPI) are
// refused to every token. The table test lists every method of Control,
// Logs and Ops, so a new method must be given a row here.
func TokenPolicy() map[string]TokenRole {
	return map[string]TokenRole{
		shoalv1.Control_GetCluster_FullMethodName:             TokenViewer,
		shoalv1.Control_RotateJoinToken_FullMethodName:        TokenAdmin,
		shoalv1.Control_UpdateCluster_FullMethodName:          TokenAdmin,
		shoalv1.Control_CreateAdminCertificate_FullMethodName: TokenAdmin,
		shoalv1.Control_ListAdminCertificates_FullMethodName:  TokenAdmin,
		shoalv1.Control_RevokeAdminCertificate_FullMethodName: TokenAdmin,
		shoalv1.Control_CreateToken_FullMethodName:            TokenAdmin,
		shoalv1.Control_ListTokens_FullMethodName:             TokenAdmin,
		shoalv1.Control_RevokeToken_FullMethodName:            TokenAdmin,
		shoalv1.Control_ListNodes_FullMethodName:              TokenViewer,
		shoalv1.Control_GetNode_FullMethodName:                TokenViewer,
		shoalv1.Control_UpdateNode_FullMethodName:             TokenOperator,
		shoalv1.Control_RemoveNode_FullMethodName:             TokenAdmin,
		shoalv1.Control_CreateService_FullMethodName:          TokenOperator,
		shoalv1.Control_GetService_FullMethodName:             TokenViewer,
		shoalv1.Control_ListServices_FullMethodName:           TokenViewer,
		shoalv1.Control_UpdateService_FullMethodName:          TokenOperator,
		shoalv1.Control_PatchService_FullMethodName:           TokenOperator,
		shoalv1.Control_RemoveService_FullMethodName:          TokenOperator,
		shoalv1.Control_RollbackService_FullMethodName:        TokenOperator,
		shoalv1.Control_RebalanceService_FullMethodName:       TokenOperator,
		shoalv1.Control_CreateNetwork_FullMethodName:          TokenOperator,
		shoalv1.Control_GetNetwork_FullMethodName:             TokenViewer,
		shoalv1.Control_ListNetworks_FullMethodName:           TokenViewer,
		shoalv1.Control_RemoveNetwork_FullMethodName:          TokenOperator,
		shoalv1.Control_PruneNetworks_FullMethodName:          TokenOperator,
		shoalv1.Control_ListTasks_FullMethodName:              TokenViewer,
		shoalv1.Control_GetTask_FullMethodName:                TokenViewer,
		shoalv1.Control_Watch_FullMethodName:                  TokenViewer,
		shoalv1.Logs_ServiceLogs_FullMethodName:               TokenViewer,
		shoalv1.Ops_TaskStats_FullMethodName:                  TokenViewer,
		shoalv1.Ops_TaskExec_FullMethodName:                   TokenAdmin,
	}
}
