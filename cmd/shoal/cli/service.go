package cli

import (
	"context"
	"fmt"
	"maps"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/proto"

	"github.com/shoal-dev/shoal/client"
	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

func (a *app) serviceCmd() *cobra.Command {
	c := &cobra.Command{Use: "service", Short: "Manage services"}
	c.AddCommand(a.serviceCreate(), a.serviceLs(), a.serviceInspect(), a.servicePs(), a.serviceUpdate(), a.serviceScale(), a.serviceRm(), a.serviceRebalance(), a.serviceRollback())
	return c
}

type waitFlags struct {
	detach  bool
	wait    time.Duration
	monitor time.Duration
}

func (w *waitFlags) bind(c *cobra.Command) {
	c.Flags().BoolVarP(&w.detach, "detach", "d", false, "return at once instead of waiting for the tasks to converge")
	c.Flags().DurationVar(&w.wait, "wait-timeout", 2*time.Minute, "how long to wait for convergence")
	c.Flags().DurationVar(&w.monitor, "monitor", 5*time.Second, "converged only once the tasks have stayed running this long (0: as soon as they run)")
}

func (a *app) serviceCreate() *cobra.Command {
	var sf specFlags
	var wf waitFlags
	var name string
	var noResolve bool
	cmd := &cobra.Command{Use: "create --name NAME [flags] IMAGE [ARG...]", Short: "Create a service", Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if name == "" {
				return fmt.Errorf("--name: required")
			}
			cargs := args[1:]
			if len(cargs) > 0 && cargs[0] == "--" {
				// `IMAGE -- CMD ARG...`, as `task exec TASK -- CMD` is
				// written: flags stop at IMAGE, so the "--" reaches us; no
				// command is called "--".
				cargs = cargs[1:]
			}
			spec := &shoalv1.ServiceSpec{Name: name, Replicas: sf.replicas,
				Task: &shoalv1.TaskSpec{Container: &shoalv1.ContainerSpec{Image: args[0], Args: cargs}}}
			if err := sf.apply(cmd.Flags(), spec); err != nil {
				return err
			}
			if !noResolve {
				c := spec.Task.Container
				c.Image = a.pinImage(cmd.Context(), c.Image)
			}
			cl, err := a.dial(cmd.Context())
			if err != nil {
				return err
			}
			defer cl.Close()
			// Subscribe before the write so no task event is missed.
			ws, err := a.startWait(cmd.Context(), cl, wf)
			if err != nil {
				return err
			}
			ctx, cancel := a.call(cmd.Context())
			defer cancel()
			resp, err := cl.Control.CreateService(ctx, &shoalv1.CreateServiceRequest{Spec: spec})
			if err != nil {
				ws.stop()
				return err
			}
			fmt.Fprintln(a.out, resp.GetService().GetMeta().GetId())
			return ws.wait(cmd.Context(), resp.GetService())
		}}
	cmd.Flags().StringVar(&name, "name", "", "service name")
	cmd.Flags().BoolVar(&noResolve, "no-resolve-image", false, "do not pin the image to the digest its registry serves now")
	sf.bind(cmd.Flags(), false)
	wf.bind(cmd)
	cmd.Flags().SetInterspersed(false)
	return cmd
}

// mutateService reads a service, changes its spec and writes it with the
// version read, then waits for convergence.
func (a *app) mutateService(cmd *cobra.Command, ref string, wf waitFlags, change func(*shoalv1.ServiceSpec) error) error {
	return a.writeWaiting(cmd, wf, func(ctx context.Context, cl *client.Client) (string, *shoalv1.Service, error) {
		var resp *shoalv1.UpdateServiceResponse
		var name string
		err := retryConflict(func() error {
			cur, err := cl.Control.GetService(ctx, &shoalv1.GetServiceRequest{Ref: ref})
			if err != nil {
				return err
			}
			spec := proto.Clone(cur.GetService().GetSpec()).(*shoalv1.ServiceSpec)
			if err := change(spec); err != nil {
				return err
			}
			resp, err = cl.Control.UpdateService(ctx, &shoalv1.UpdateServiceRequest{ServiceId: cur.GetService().GetMeta().GetId(),
				Version: cur.GetService().GetMeta().GetVersion(), Spec: spec, View: updateView(wf)})
			name = spec.GetName() // a name cannot be changed: the one sent is the service's
			return err
		})
		return name, resp.GetService(), err
	})
}

// patchService sends req, a change of labels and replicas only, as one
// PatchService (atomic on the leader: no read, no version to conflict
// on), then waits for convergence. A manager that does not know
// PatchService (an earlier release) gets the read-modify-write of old:
// fallback.
func (a *app) patchService(cmd *cobra.Command, req *shoalv1.PatchServiceRequest, wf waitFlags, fallback func() error) error {
	err := a.writeWaiting(cmd, wf, func(ctx context.Context, cl *client.Client) (string, *shoalv1.Service, error) {
		// The whole reply: the name to print (and the wait) read its spec.
		resp, err := cl.Control.PatchService(ctx, req)
		return resp.GetService().GetSpec().GetName(), resp.GetService(), err
	})
	if client.IsUnimplemented(err) {
		return fallback()
	}
	return err
}

// writeWaiting dials, starts watching for convergence, makes one service
// write (write returns the service's name and the written service), prints
// the name and waits as wf says. A failed write is returned as is.
func (a *app) writeWaiting(cmd *cobra.Command, wf waitFlags, write func(context.Context, *client.Client) (string, *shoalv1.Service, error)) error {
	cl, err := a.dial(cmd.Context())
	if err != nil {
		return err
	}
	defer cl.Close()
	ctx, cancel := a.call(cmd.Context())
	defer cancel()
	ws, err := a.startWait(cmd.Context(), cl, wf)
	if err != nil {
		return err
	}
	name, svc, err := write(ctx, cl)
	if err != nil {
		ws.stop()
		return err
	}
	fmt.Fprintln(a.out, name)
	return ws.wait(cmd.Context(), svc)
}

// updateView is the reply an update asks for: a wait reads the whole
// service (its spec: mode, replicas, job), a detached update reads
// nothing of it but the name it sent.
func updateView(wf waitFlags) shoalv1.ServiceView {
	if wf.detach {
		return shoalv1.ServiceView_SERVICE_VIEW_BRIEF
	}
	return shoalv1.ServiceView_SERVICE_VIEW_FULL
}

func (a *app) serviceUpdate() *cobra.Command {
	var sf specFlags
	var wf waitFlags
	var noResolve bool
	cmd := &cobra.Command{Use: "update [flags] SERVICE", Short: "Change a service", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if cmd.Flags().Changed("image") && !noResolve {
				sf.image = a.pinImage(cmd.Context(), sf.image)
			}
			if len(sf.networkRm) > 0 {
				// The stored spec holds network ids: resolve the names.
				sf.networkRmIDs = map[string]string{}
				err := a.withClient(cmd, func(ctx context.Context, ctl shoalv1.ControlClient) error {
					for _, ref := range sf.networkRm {
						if r, err := ctl.GetNetwork(ctx, &shoalv1.GetNetworkRequest{Ref: ref}); err == nil {
							sf.networkRmIDs[ref] = r.GetNetwork().GetMeta().GetId()
						}
					}
					return nil
				})
				if err != nil {
					return err
				}
			}
			full := func() error {
				return a.mutateService(cmd, args[0], wf, func(s *shoalv1.ServiceSpec) error { return sf.apply(cmd.Flags(), s) })
			}
			req, ok, err := sf.patchOnly(cmd.Flags())
			if err != nil {
				return err
			}
			if !ok {
				return full()
			}
			req.ServiceId = args[0]
			return a.patchService(cmd, req, wf, full)
		}}
	sf.bind(cmd.Flags(), true)
	cmd.Flags().BoolVar(&noResolve, "no-resolve-image", false, "do not pin --image to the digest its registry serves now")
	wf.bind(cmd)
	return cmd
}

func (a *app) serviceScale() *cobra.Command {
	var wf waitFlags
	cmd := &cobra.Command{Use: "scale SERVICE=REPLICAS...", Short: "Change the replica count of services", Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			for _, arg := range args {
				ref, n, ok := strings.Cut(arg, "=")
				k, err := strconv.ParseInt(n, 10, 64)
				if !ok || ref == "" || err != nil {
					return fmt.Errorf("%q: want SERVICE=REPLICAS", arg)
				}
				err = a.patchService(cmd, &shoalv1.PatchServiceRequest{ServiceId: ref, Replicas: &k}, wf, func() error {
					return a.mutateService(cmd, ref, wf, func(s *shoalv1.ServiceSpec) error {
						if s.GetMode() != shoalv1.ServiceMode_SERVICE_MODE_REPLICATED {
							return fmt.Errorf("%s: only replicated services can be scaled", ref)
						}
						s.Replicas = k
						return nil
					})
				})
				if err != nil {
					return err
				}
			}
			return nil
		}}
	wf.bind(cmd)
	return cmd
}

// serviceRm: rmwait.go.

func (a *app) serviceLs() *cobra.Command {
	var lf listFlags
	cmd := &cobra.Command{Use: "ls", Short: "List services", Args: cobra.NoArgs, RunE: func(cmd *cobra.Command, _ []string) error {
		if err := lf.check(); err != nil {
			return err
		}
		filters, err := lf.filterMap()
		if err != nil {
			return err
		}
		return a.withClient(cmd, func(ctx context.Context, ctl shoalv1.ControlClient) error {
			resp, err := client.ListServices(ctx, ctl, &shoalv1.ListServicesRequest{Filters: filters})
			if err != nil {
				return err
			}
			switch {
			case lf.quiet:
				for _, s := range resp.GetServices() {
					fmt.Fprintln(a.out, s.GetMeta().GetId())
				}
				return nil
			case lf.format == "json":
				return printJSON(a.out, resp.GetServices())
			}
			w := table(a.out)
			fmt.Fprintln(w, "ID\tNAME\tMODE\tREPLICAS\tIMAGE\tPORTS\tUPDATE")
			for _, s := range resp.GetServices() {
				rc := resp.GetReplicas()[s.GetMeta().GetId()]
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", shortID(s.GetMeta().GetId()), s.GetSpec().GetName(),
					enumShort(s.GetSpec().GetMode().String(), "SERVICE_MODE_"), replicasColumn(s, rc),
					shortImage(s.GetSpec().GetTask().GetContainer().GetImage()), portsColumn(s.GetSpec().GetEndpoint().GetPorts()), updateColumn(s))
			}
			return w.Flush()
		})
	}}
	lf.bind(cmd, true)
	return cmd
}

func (a *app) serviceInspect() *cobra.Command {
	return inspectCommand(a, "inspect SERVICE...", "Show services in detail (JSON)",
		func(ctx context.Context, ctl shoalv1.ControlClient, ref string) (*shoalv1.Service, error) {
			r, err := ctl.GetService(ctx, &shoalv1.GetServiceRequest{Ref: ref})
			return r.GetService(), err
		})
}

func (a *app) servicePs() *cobra.Command {
	var lf listFlags
	cmd := &cobra.Command{Use: "ps SERVICE...", Short: "List services' tasks (one table)", Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			for _, ref := range args {
				if err := a.printJobSummary(cmd, ref, lf); err != nil {
					return err
				}
			}
			return a.listTasks(cmd, lf, args...)
		}}
	lf.bind(cmd, true)
	return cmd
}

func (a *app) taskCmd() *cobra.Command {
	c := &cobra.Command{Use: "task", Short: "Inspect tasks"}
	var lf listFlags
	ls := &cobra.Command{Use: "ls", Short: "List tasks", Args: cobra.NoArgs, RunE: func(cmd *cobra.Command, _ []string) error {
		return a.listTasks(cmd, lf)
	}}
	lf.bind(ls, true)
	inspect := inspectCommand(a, "inspect TASK...", "Show tasks in detail (JSON)",
		func(ctx context.Context, ctl shoalv1.ControlClient, ref string) (*shoalv1.Task, error) {
			r, err := ctl.GetTask(ctx, &shoalv1.GetTaskRequest{Ref: ref})
			return r.GetTask(), err
		})
	c.AddCommand(ls, inspect, a.taskExecCmd())
	return c
}

// shortImage drops the digest of a pinned image in tables (inspect and
// --format json show it whole): name:tag@sha256:abcd... → name:tag.
func shortImage(ref string) string {
	if before, _, ok := strings.Cut(ref, "@"); ok && strings.Contains(before, ":") && !strings.HasSuffix(before, "]") {
		if i := strings.LastIndex(before, ":"); i > strings.LastIndex(before, "/") {
			return before
		}
	}
	return ref
}

func taskName(t *shoalv1.Task) string {
	if t.GetSlot() > 0 {
		return fmt.Sprintf("%s.%d", t.GetServiceName(), t.GetSlot())
	}
	return t.GetServiceName() + "." + shortID(t.GetNodeId())
}

// listTasks prints the tasks the filters select; with services, those of
// each service (a task listed once), in one table.
func (a *app) listTasks(cmd *cobra.Command, lf listFlags, services ...string) error {
	if err := lf.check(); err != nil {
		return err
	}
	filters, err := lf.filterMap()
	if err != nil {
		return err
	}
	return a.withClient(cmd, func(ctx context.Context, ctl shoalv1.ControlClient) error {
		var tasks []*shoalv1.Task
		if len(services) == 0 {
			resp, err := client.ListTasks(ctx, ctl, &shoalv1.ListTasksRequest{Filters: filters})
			if err != nil {
				return err
			}
			tasks = resp.GetTasks()
		}
		seen := map[string]bool{}
		for _, svc := range services {
			f := maps.Clone(filters)
			f["service"] = svc
			resp, err := client.ListTasks(ctx, ctl, &shoalv1.ListTasksRequest{Filters: f})
			if err != nil {
				return fmt.Errorf("service %q: %w", svc, err)
			}
			for _, t := range resp.GetTasks() {
				if !seen[t.GetMeta().GetId()] {
					seen[t.GetMeta().GetId()] = true
					tasks = append(tasks, t)
				}
			}
		}
		sort.SliceStable(tasks, func(i, j int) bool {
			if tasks[i].GetServiceName() != tasks[j].GetServiceName() {
				return tasks[i].GetServiceName() < tasks[j].GetServiceName()
			}
			if tasks[i].GetSlot() != tasks[j].GetSlot() {
				return tasks[i].GetSlot() < tasks[j].GetSlot()
			}
			return tasks[i].GetStatus().GetTimestamp().AsTime().After(tasks[j].GetStatus().GetTimestamp().AsTime())
		})
		switch {
		case lf.quiet:
			for _, t := range tasks {
				fmt.Fprintln(a.out, t.GetMeta().GetId())
			}
			return nil
		case lf.format == "json":
			return printJSON(a.out, tasks)
		}
		names := map[string]string{}
		if nodes, err := client.ListNodes(ctx, ctl, &shoalv1.ListNodesRequest{}); err == nil {
			for _, n := range nodes.GetNodes() {
				names[n.GetMeta().GetId()] = nodeName(n)
			}
		}
		now := time.Now()
		w := table(a.out)
		fmt.Fprintln(w, "ID\tNAME\tIMAGE\tNODE\tDESIRED STATE\tCURRENT STATE\tHEALTH\tADDRESS\tERROR")
		for _, t := range tasks {
			st := t.GetStatus()
			cur := titled(enumShort(st.GetState().String(), "TASK_STATE_")) + " " + ago(st.GetTimestamp(), now)
			errText := st.GetErr()
			if errText == "" && st.GetState() == shoalv1.TaskState_TASK_STATE_PENDING {
				errText = st.GetMessage()
			}
			node := names[t.GetNodeId()]
			if node == "" {
				node = shortID(t.GetNodeId())
			}
			addr := "-"
			if as := st.GetAddresses(); len(as) > 0 && st.GetState() <= shoalv1.TaskState_TASK_STATE_RUNNING {
				addr = strings.Join(as, ",")
			} else if as := attachmentAddrs(t); len(as) > 0 && st.GetState() <= shoalv1.TaskState_TASK_STATE_RUNNING {
				addr = strings.Join(as, ",")
			}
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", shortID(t.GetMeta().GetId()), taskName(t),
				shortImage(t.GetSpec().GetContainer().GetImage()), node, shownDesired(t), cur, healthColumn(st), addr, errText)
		}
		return w.Flush()
	})
}

// shownDesired is the DESIRED STATE column of `service ps`. The store
// keeps desired_state RUNNING on a task that ended on its own (the
// orchestrator tells "ended by itself" from "stopped by us" by it, for
// the restart policy), but nothing will run that task again: like docker,
// the table shows an ended task as "Shutdown". --format json shows the
// stored value.
func shownDesired(t *shoalv1.Task) string {
	d := t.GetDesiredState()
	if t.GetStatus().GetState() >= shoalv1.TaskState_TASK_STATE_COMPLETE && d < shoalv1.TaskState_TASK_STATE_SHUTDOWN {
		d = shoalv1.TaskState_TASK_STATE_SHUTDOWN
	}
	return titled(enumShort(d.String(), "TASK_STATE_"))
}

// attachmentAddrs lists a task's network addresses (allocated by the
// managers, known before the agent reports any).
func attachmentAddrs(t *shoalv1.Task) []string {
	var out []string
	for _, n := range t.GetNetworks() {
		if n.GetAddress() != "" {
			out = append(out, n.GetAddress())
		}
	}
	return out
}
