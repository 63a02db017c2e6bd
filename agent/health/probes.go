package health

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"

	"github.com/shoal-dev/shoal/netnsrun"
)

// Execer runs a command inside a running container (its namespaces,
// cgroup, user and environment) and returns its exit code and combined
// output (at least the first MaxOutput bytes). When ctx ends it kills the
// command and what it started and returns ctx's error.
type Execer interface {
	Exec(ctx context.Context, id string, args []string) (code int, output []byte, err error)
}

// ExecProbe runs Args in task ID's container: exit code 0 is healthy.
type ExecProbe struct {
	Execer Execer
	ID     string
	Args   []string
}

// Probe implements Prober.
func (p ExecProbe) Probe(ctx context.Context) Result {
	code, out, err := p.Execer.Exec(ctx, p.ID, p.Args)
	if err != nil {
		if ctx.Err() != nil {
			return Result{Output: string(out)}
		}
		return Result{Output: fmt.Sprintf("exec: %v", err)}
	}
	if code != 0 {
		s := string(out)
		if s == "" {
			s = fmt.Sprintf("exit code %d", code)
		}
		return Result{Output: s}
	}
	return Result{OK: true, Output: string(out)}
}

// DialInNS connects to addr over TCP from inside the network namespace at
// nsPath ("" is the caller's). The socket is made there, so it stays
// there whichever thread uses it afterwards.
func DialInNS(ctx context.Context, nsPath, addr string) (net.Conn, error) {
	var c net.Conn
	err := netnsrun.RunPath(nsPath, func() error {
		var d net.Dialer
		var err error
		c, err = d.DialContext(ctx, "tcp", addr)
		return err
	})
	return c, err
}

func loopback(port uint32) string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(int(port))) }

// TCPProbe connects to 127.0.0.1:Port inside the task's namespace.
type TCPProbe struct {
	NetNS string
	Port  uint32
}

// Probe implements Prober.
func (p TCPProbe) Probe(ctx context.Context) Result {
	c, err := DialInNS(ctx, p.NetNS, loopback(p.Port))
	if err != nil {
		return Result{Output: err.Error()}
	}
	c.Close()
	return Result{OK: true, Output: "connected to " + loopback(p.Port)}
}

// HTTPProbe GETs http://127.0.0.1:Port/Path inside the task's namespace:
// 2xx and 3xx are healthy (redirects are not followed).
type HTTPProbe struct {
	NetNS string
	Port  uint32
	Path  string
}

// Probe implements Prober.
func (p HTTPProbe) Probe(ctx context.Context) Result {
	path := p.Path
	if path == "" || path[0] != '/' {
		path = "/" + path
	}
	url := "http://" + loopback(p.Port) + path
	tr := &http.Transport{
		DisableKeepAlives: true,
		Proxy:             nil, // never a proxy from the agent's environment
		DialContext: func(ctx context.Context, _, addr string) (net.Conn, error) {
			return DialInNS(ctx, p.NetNS, addr)
		},
	}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, CheckRedirect: func(*http.Request, []*http.Request) error {
		return http.ErrUseLastResponse
	}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return Result{Output: err.Error()}
	}
	req.Header.Set("User-Agent", "shoal-healthcheck")
	resp, err := client.Do(req)
	if err != nil {
		return Result{Output: err.Error()}
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, MaxOutput))
	out := fmt.Sprintf("GET %s: %s", path, resp.Status)
	if len(body) > 0 {
		out += "\n" + string(body)
	}
	return Result{OK: resp.StatusCode >= 200 && resp.StatusCode < 400, Output: out}
}

// ProberFor returns the probe of c for task id whose container's network
// namespace is at netNS.
func ProberFor(c Check, id, netNS string, ex Execer) (Prober, error) {
	switch c.Kind {
	case KindExec:
		if ex == nil {
			return nil, fmt.Errorf("this runtime cannot run exec health checks")
		}
		return ExecProbe{Execer: ex, ID: id, Args: c.Command}, nil
	case KindHTTP:
		return HTTPProbe{NetNS: netNS, Port: c.Port, Path: c.Path}, nil
	case KindTCP:
		return TCPProbe{NetNS: netNS, Port: c.Port}, nil
	}
	return nil, fmt.Errorf("unknown health check kind %q", c.Kind)
}
