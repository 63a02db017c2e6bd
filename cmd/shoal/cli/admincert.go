package cli

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/shoal-dev/shoal/client"
	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
	"github.com/shoal-dev/shoal/trust"
)

// adminCertCmd is `shoal admin-cert`: admin client certificates are
// objects of the cluster, listed and revoked by name.
func (a *app) adminCertCmd() *cobra.Command {
	c := &cobra.Command{Use: "admin-cert", Short: "Create, list and revoke admin client certificates"}

	var ttl, out string
	create := &cobra.Command{Use: "create NAME", Short: "Create an admin certificate; the key is made here and never leaves this machine", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var ttlMs int64
			if ttl != "" {
				d, err := parseLongDuration("--ttl", ttl)
				if err != nil {
					return err
				}
				ttlMs = d.Milliseconds()
			}
			if out == "" {
				out = args[0]
			}
			if _, err := os.Stat(filepath.Join(out, "admin.key")); err == nil {
				return fmt.Errorf("--out %s already holds admin credentials; choose another directory", out)
			}
			keyPEM, csrPEM, err := trust.NewKeyAndCSR()
			if err != nil {
				return err
			}
			return a.withClient(cmd, func(ctx context.Context, ctl shoalv1.ControlClient) error {
				resp, err := ctl.CreateAdminCertificate(ctx, &shoalv1.CreateAdminCertificateRequest{Name: args[0], TtlMs: ttlMs, CsrPem: csrPEM})
				if err != nil {
					return err
				}
				creds := &trust.Creds{CACertPEM: resp.GetCaCertPem(), CertPEM: resp.GetCertPem(), KeyPEM: keyPEM}
				if err := trust.SaveCreds(out, "admin", creds); err != nil {
					return err
				}
				fmt.Fprintf(a.out, "Admin certificate %q (serial %s, expires %s) written to %s.\nUse it with: shoal --cert-dir %s --host <manager> node ls\n",
					resp.GetAdmin().GetName(), resp.GetAdmin().GetSerial(), resp.GetAdmin().GetNotAfter().AsTime().UTC().Format(time.RFC3339), out, out)
				return nil
			})
		}}
	create.Flags().StringVar(&ttl, "ttl", "", "lifetime, e.g. 720h or 90d (default: one year)")
	create.Flags().StringVar(&out, "out", "", "directory to write ca.crt, admin.crt and admin.key into (default: ./NAME)")

	var lf listFlags
	ls := &cobra.Command{Use: "ls", Aliases: []string{"list"}, Short: "List admin certificates, revoked ones too", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.withClient(cmd, func(ctx context.Context, ctl shoalv1.ControlClient) error {
				resp, err := ctl.ListAdminCertificates(ctx, &shoalv1.ListAdminCertificatesRequest{})
				if err != nil {
					return err
				}
				return a.printAdminCerts(resp.GetAdmins(), lf, time.Now())
			})
		}}
	lf.bind(ls, false)
	ls.Flags().BoolVarP(&lf.quiet, "quiet", "q", false, "print names only")

	var force bool
	revoke := &cobra.Command{Use: "revoke NAME", Short: "Revoke an admin certificate: every manager refuses it at once", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withClient(cmd, func(ctx context.Context, ctl shoalv1.ControlClient) error {
				if !force {
					list, err := ctl.ListAdminCertificates(ctx, &shoalv1.ListAdminCertificatesRequest{})
					if err != nil {
						return err
					}
					if err := revokeGuard(list.GetAdmins(), args[0], a.ownAdminSerial(), time.Now()); err != nil {
						return err
					}
				}
				resp, err := ctl.RevokeAdminCertificate(ctx, &shoalv1.RevokeAdminCertificateRequest{Name: args[0]})
				if err != nil {
					return err
				}
				fmt.Fprintf(a.out, "Admin certificate %q (serial %s) revoked.\n", resp.GetAdmin().GetName(), resp.GetAdmin().GetSerial())
				return nil
			})
		}}
	revoke.Flags().BoolVar(&force, "force", false, "revoke even the last usable admin certificate, or the one this command runs with")
	c.AddCommand(create, ls, revoke)
	return c
}

// ownAdminSerial is the serial of the admin certificate this CLI uses, ""
// if it uses none (a manager's node certificate) or cannot tell.
func (a *app) ownAdminSerial() string {
	creds, err := client.Credentials(client.Config{CertDir: a.certDir, DataDir: a.dataDir})
	if err != nil {
		return ""
	}
	id, err := creds.Identity()
	if err != nil || id.Role != trust.RoleAdmin {
		return ""
	}
	return id.Serial
}

// revokeGuard refuses, without --force, to revoke the last usable admin
// certificate (the cluster would be left with none: only a manager's node
// certificate could create another) or the one the command runs with.
func revokeGuard(admins []*shoalv1.AdminCertificate, name, own string, now time.Time) error {
	usable := 0
	var target *shoalv1.AdminCertificate
	for _, c := range admins {
		if c.GetRevoked() || (c.GetNotAfter() != nil && now.After(c.GetNotAfter().AsTime())) {
			continue
		}
		usable++
		if c.GetName() == name {
			target = c
		}
	}
	switch {
	case target == nil:
		return nil // the server says what is wrong with the name
	case usable == 1:
		return fmt.Errorf("%q is the last usable admin certificate; create another first, or pass --force", name)
	case own != "" && target.GetSerial() == own:
		return fmt.Errorf("%q is the admin certificate this command runs with; pass --force to revoke it anyway", name)
	}
	return nil
}

func (a *app) printAdminCerts(admins []*shoalv1.AdminCertificate, lf listFlags, now time.Time) error {
	switch {
	case lf.quiet:
		for _, c := range admins {
			fmt.Fprintln(a.out, c.GetName())
		}
		return nil
	case lf.format == "json":
		return printJSON(a.out, admins)
	case lf.format != "table":
		return fmt.Errorf("--format: want table or json, got %q", lf.format)
	}
	w := table(a.out)
	fmt.Fprintln(w, "NAME\tSERIAL\tCREATED\tEXPIRES\tSTATUS")
	for _, c := range admins {
		state := "active"
		switch {
		case c.GetRevoked():
			state = "revoked " + c.GetRevokedAt().AsTime().UTC().Format(time.RFC3339)
		case c.GetNotAfter() != nil && now.After(c.GetNotAfter().AsTime()):
			state = "expired"
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", c.GetName(), c.GetSerial(),
			c.GetCreatedAt().AsTime().UTC().Format(time.RFC3339), c.GetNotAfter().AsTime().UTC().Format(time.RFC3339), state)
	}
	return w.Flush()
}

// parseLongDuration reads Go durations plus whole days ("90d"), which
// certificate lifetimes are usually given in.
func parseLongDuration(flag, s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	if days, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.ParseInt(days, 10, 64)
		if err != nil || n <= 0 || n > 100*365 {
			return 0, fmt.Errorf("%s: invalid duration %q (use e.g. 90d, 720h, 20s)", flag, s)
		}
		return time.Duration(n) * 24 * time.Hour, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("%s: invalid duration %q (use e.g. 90d, 720h, 20s)", flag, s)
	}
	return d, nil
}

var errNoChange = errors.New("nothing to change: pass at least one of --cert-expiry, --max-replicas, --restart-grace")
