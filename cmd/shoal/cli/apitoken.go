package cli

import (
	"context"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// joinTokenCmd is `shoal join-token show|rotate`, the clearer name of the
// join-token verbs now that `shoal token` also manages API tokens.
func (a *app) joinTokenCmd() *cobra.Command {
	c := &cobra.Command{Use: "join-token", Short: "Show or rotate join tokens"}
	c.AddCommand(a.joinTokenVerbs()...)
	return c
}

// tokenCmd is `shoal token`: API bearer tokens (create, ls, revoke) for
// the HTTP/JSON API, and the join-token verbs show and rotate kept from
// before (also `shoal join-token`).
func (a *app) tokenCmd() *cobra.Command {
	c := &cobra.Command{Use: "token", Short: "Manage API tokens (create, ls, revoke); show or rotate join tokens"}
	c.AddCommand(a.joinTokenVerbs()...)

	var role, ttl string
	create := &cobra.Command{Use: "create NAME --role viewer|operator|admin [--ttl D]", Short: "Create an API token (printed once; the cluster keeps its hash only)", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			req := &shoalv1.CreateTokenRequest{Name: args[0], Role: role}
			if ttl != "" {
				d, err := parseLongDuration("--ttl", ttl)
				if err != nil {
					return err
				}
				req.TtlMs = d.Milliseconds()
			}
			return a.withClient(cmd, func(ctx context.Context, ctl shoalv1.ControlClient) error {
				resp, err := ctl.CreateToken(ctx, req)
				if err != nil {
					return err
				}
				fmt.Fprintln(a.out, resp.GetToken())
				fmt.Fprintf(a.errOut, "API token %q (id %s, role %s) created; it is shown only now. Use it as: Authorization: Bearer <token>\n",
					resp.GetInfo().GetName(), resp.GetInfo().GetId(), resp.GetInfo().GetRole())
				return nil
			})
		}}
	create.Flags().StringVar(&role, "role", "", "viewer (read, watch, logs, stats), operator (also services, node availability, networks) or admin (everything)")
	create.Flags().StringVar(&ttl, "ttl", "", "lifetime, e.g. 720h or 90d (default: no expiry)")
	_ = create.MarkFlagRequired("role")

	var lf listFlags
	ls := &cobra.Command{Use: "ls", Aliases: []string{"list"}, Short: "List API tokens, revoked ones too", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.withClient(cmd, func(ctx context.Context, ctl shoalv1.ControlClient) error {
				resp, err := ctl.ListTokens(ctx, &shoalv1.ListTokensRequest{})
				if err != nil {
					return err
				}
				return a.printTokens(resp.GetTokens(), lf, time.Now())
			})
		}}
	lf.bind(ls, false)
	ls.Flags().BoolVarP(&lf.quiet, "quiet", "q", false, "print names only")

	revoke := &cobra.Command{Use: "revoke NAME|ID", Short: "Revoke an API token: every manager refuses it from its next call", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withClient(cmd, func(ctx context.Context, ctl shoalv1.ControlClient) error {
				resp, err := ctl.RevokeToken(ctx, &shoalv1.RevokeTokenRequest{Ref: args[0]})
				if err != nil {
					return err
				}
				fmt.Fprintf(a.out, "API token %q (id %s) revoked.\n", resp.GetInfo().GetName(), resp.GetInfo().GetId())
				return nil
			})
		}}
	c.AddCommand(create, ls, revoke)
	return c
}

func (a *app) printTokens(tokens []*shoalv1.ApiToken, lf listFlags, now time.Time) error {
	switch {
	case lf.quiet:
		for _, t := range tokens {
			fmt.Fprintln(a.out, t.GetName())
		}
		return nil
	case lf.format == "json":
		return printJSON(a.out, tokens)
	case lf.format != "table":
		return fmt.Errorf("--format: want table or json, got %q", lf.format)
	}
	w := table(a.out)
	fmt.Fprintln(w, "NAME\tID\tROLE\tCREATED\tEXPIRES\tSTATUS")
	for _, t := range tokens {
		exp, state := "never", "active"
		if t.GetExpiresAt() != nil {
			exp = t.GetExpiresAt().AsTime().UTC().Format(time.RFC3339)
			if !now.Before(t.GetExpiresAt().AsTime()) {
				state = "expired"
			}
		}
		if t.GetRevoked() {
			state = "revoked"
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\n", t.GetName(), t.GetId(), t.GetRole(),
			t.GetCreatedAt().AsTime().UTC().Format(time.RFC3339), exp, state)
	}
	return w.Flush()
}
