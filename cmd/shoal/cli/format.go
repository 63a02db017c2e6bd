package cli

import (
	"context"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// listFlags are the flags every ls command takes.
type listFlags struct {
	format  string
	quiet   bool
	filters []string
}

func (l *listFlags) bind(c *cobra.Command, withQuiet bool) {
	c.Flags().StringVar(&l.format, "format", "table", "output format: table or json")
	if withQuiet {
		c.Flags().BoolVarP(&l.quiet, "quiet", "q", false, "print ids only")
		c.Flags().StringArrayVarP(&l.filters, "filter", "f", nil, "filter key=value (repeatable)")
	}
}

func (l *listFlags) check() error {
	if l.format != "table" && l.format != "json" {
		return fmt.Errorf("--format: want table or json, got %q", l.format)
	}
	return nil
}

func (l *listFlags) filterMap() (map[string]string, error) {
	m := map[string]string{}
	for _, f := range l.filters {
		k, v, ok := strings.Cut(f, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("--filter: %q must be key=value", f)
		}
		m[k] = v
	}
	return m, nil
}

var jsonOpts = protojson.MarshalOptions{Multiline: true, Indent: "  ", UseProtoNames: true}

// printJSON prints messages as one JSON array.
func printJSON[T proto.Message](w io.Writer, msgs []T) error {
	fmt.Fprint(w, "[")
	for i, m := range msgs {
		b, err := jsonOpts.Marshal(m)
		if err != nil {
			return err
		}
		if i > 0 {
			fmt.Fprint(w, ",")
		}
		fmt.Fprintf(w, "\n%s", b)
	}
	if len(msgs) > 0 {
		fmt.Fprintln(w)
	}
	fmt.Fprintln(w, "]")
	return nil
}

func table(w io.Writer) *tabwriter.Writer {
	return tabwriter.NewWriter(w, 0, 4, 3, ' ', 0)
}

// enumShort turns "TASK_STATE_RUNNING" into "running".
func enumShort(name, prefix string) string {
	return strings.ToLower(strings.TrimPrefix(name, prefix))
}

func titled(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}

// ago renders a timestamp as "3 seconds ago".
func ago(ts *timestamppb.Timestamp, now time.Time) string {
	if ts == nil {
		return ""
	}
	if ts.GetSeconds() <= 0 {
		// Reproducible images carry the epoch as their creation time.
		return "-"
	}
	d := now.Sub(ts.AsTime())
	switch {
	case d < time.Second:
		return "less than a second ago"
	case d < time.Minute:
		return plural(int(d.Seconds()), "second") + " ago"
	case d < time.Hour:
		return plural(int(d.Minutes()), "minute") + " ago"
	case d < 48*time.Hour:
		return plural(int(d.Hours()), "hour") + " ago"
	}
	return plural(int(d.Hours()/24), "day") + " ago"
}

func plural(n int, unit string) string {
	if n == 1 {
		return "1 " + unit
	}
	return fmt.Sprintf("%d %ss", n, unit)
}

func shortID(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}

// inspectCommand is `KIND inspect REF...`: each object in full, as one JSON
// array. --format is accepted like on ls, but inspect always prints JSON.
func inspectCommand[T proto.Message](a *app, use, short string, get func(ctx context.Context, ctl shoalv1.ControlClient, ref string) (T, error)) *cobra.Command {
	var lf listFlags
	cmd := &cobra.Command{Use: use, Short: short, Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := lf.check(); err != nil {
				return err
			}
			return a.withClient(cmd, func(ctx context.Context, ctl shoalv1.ControlClient) error {
				out := make([]T, 0, len(args))
				for _, ref := range args {
					obj, err := get(ctx, ctl, ref)
					if err != nil {
						return err
					}
					out = append(out, obj)
				}
				return printJSON(a.out, out)
			})
		}}
	lf.bind(cmd, false)
	return cmd
}
