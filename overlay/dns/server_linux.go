package dns

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"sync"
	"time"

	"github.com/shoal-dev/shoal/netnsrun"

	mdns "github.com/miekg/dns"
	"github.com/vishvananda/netlink"
)

// Address is where the server answers inside the task's namespace.
const Address = "127.0.0.11:53"

// TTL of cluster answers, in seconds: 0, so that no client caches an
// answer past the next view update.
const TTL = 0

// Forwarders says where names that are not cluster names go.
type Forwarders struct {
	// Servers are "host:port" (or bare IPs, port 53). Empty: the
	// nameservers of /etc/resolv.conf of the namespace Serve is called in.
	Servers []string
	// Timeout per upstream attempt; default 2 s.
	Timeout time.Duration
	// NetNSPath, if set, is the namespace the forwarded queries are sent
	// from; default: the namespace Serve was called in (the node's).
	NetNSPath string
}

// Server is the DNS server of one task namespace.
type Server struct {
	udp, tcp  *mdns.Server
	cancel    context.CancelFunc // ends the forwards in flight
	closeOnce sync.Once
	done      chan struct{}
	closeErr  error
}

// Serve opens UDP and TCP sockets on 127.0.0.11:53 inside the network
// namespace at netnsPath (bringing its loopback up if it is down) and
// answers on them from the caller's process, on its own goroutines:
// nothing runs inside the namespace but the sockets. taskNetworks are
// the ids of the networks the task is attached to: only their names are
// answered. It stops when ctx ends or Close is called.
func Serve(ctx context.Context, netnsPath string, taskNetworks []string, view *View, fwd Forwarders) (*Server, error) {
	return serveAt(ctx, netnsPath, Address, taskNetworks, view, fwd)
}

func serveAt(ctx context.Context, netnsPath, addr string, taskNetworks []string, view *View, fwd Forwarders) (*Server, error) {
	if view == nil {
		return nil, errors.New("dns: nil view")
	}
	if len(fwd.Servers) == 0 {
		if cfg, err := mdns.ClientConfigFromFile("/etc/resolv.conf"); err == nil {
			for _, s := range cfg.Servers {
				fwd.Servers = append(fwd.Servers, net.JoinHostPort(s, cfg.Port))
			}
		}
	}
	for i, s := range fwd.Servers {
		if _, _, err := net.SplitHostPort(s); err != nil {
			fwd.Servers[i] = net.JoinHostPort(s, "53")
		}
	}
	if fwd.Timeout <= 0 {
		fwd.Timeout = 2 * time.Second
	}
	var pc net.PacketConn
	var ln net.Listener
	err := inNetNS(netnsPath, func() error {
		if lo, err := netlink.LinkByName("lo"); err == nil && lo.Attrs().Flags&net.FlagUp == 0 {
			if err := netlink.LinkSetUp(lo); err != nil {
				return fmt.Errorf("bring lo up: %w", err)
			}
		}
		var err error
		if pc, err = net.ListenPacket("udp", addr); err != nil {
			return err
		}
		if ln, err = net.Listen("tcp", addr); err != nil {
			pc.Close()
			return err
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("dns: listen on %s in %s: %w", addr, netnsPath, err)
	}
	stop, cancelStop := context.WithCancel(context.Background())
	h := &handler{view: view, networks: append([]string(nil), taskNetworks...), fwd: fwd,
		inflight: make(chan struct{}, MaxForwards), stop: stop}
	s := &Server{
		cancel: cancelStop,
		udp:    &mdns.Server{PacketConn: pc, Handler: h, UDPSize: 65535},
		tcp:    &mdns.Server{Listener: ln, Handler: h},
		done:   make(chan struct{}),
	}
	started := make(chan struct{}, 2)
	s.udp.NotifyStartedFunc = func() { started <- struct{}{} }
	s.tcp.NotifyStartedFunc = func() { started <- struct{}{} }
	go s.udp.ActivateAndServe()
	go s.tcp.ActivateAndServe()
	<-started
	<-started
	go func() {
		select {
		case <-ctx.Done():
			s.Close()
		case <-s.done:
		}
	}()
	return s, nil
}

// Close stops the server and closes its sockets. Idempotent.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		close(s.done)
		s.cancel()
		s.closeErr = errors.Join(s.udp.Shutdown(), s.tcp.Shutdown())
	})
	return s.closeErr
}

// MaxForwards bounds the queries one task's server forwards at a time;
// beyond it a query is answered SERVFAIL at once. Each one in flight holds
// a goroutine and an upstream socket for up to the timeout per server, so
// without a bound a task flooding names to forward (to a slow or silent
// upstream) grows the agent's memory and sockets without limit.
const MaxForwards = 64

type handler struct {
	view     *View
	networks []string
	fwd      Forwarders
	inflight chan struct{}   // one token per forward in flight
	stop     context.Context // ends with the server: forwards give up
}

func (h *handler) ServeDNS(w mdns.ResponseWriter, req *mdns.Msg) {
	resp := h.answer(req)
	if _, udp := w.LocalAddr().(*net.UDPAddr); udp {
		size := mdns.MinMsgSize
		if o := req.IsEdns0(); o != nil && int(o.UDPSize()) > size {
			size = int(o.UDPSize())
		}
		resp.Truncate(size)
	}
	w.WriteMsg(resp)
}

func (h *handler) answer(req *mdns.Msg) *mdns.Msg {
	resp := new(mdns.Msg)
	if req.Opcode != mdns.OpcodeQuery || len(req.Question) != 1 {
		resp.SetRcode(req, mdns.RcodeNotImplemented)
		return resp
	}
	q := req.Question[0]
	ips, exists := h.view.Lookup(h.networks, q.Name)
	if !exists {
		if isClusterName(q.Name) {
			resp.SetRcode(req, mdns.RcodeNameError)
			resp.Authoritative = true
			return resp
		}
		if !h.view.Forwardable(h.networks) {
			resp.SetRcode(req, mdns.RcodeRefused) // internal: no egress
			return resp
		}
		return h.forward(req)
	}
	resp.SetReply(req)
	resp.Authoritative = true
	resp.RecursionAvailable = true
	if q.Qclass != mdns.ClassINET && q.Qclass != mdns.ClassANY {
		return resp
	}
	// Shuffle so that clients taking the first address spread (dnsrr).
	ips = append([]net.IP(nil), ips...)
	rand.Shuffle(len(ips), func(i, j int) { ips[i], ips[j] = ips[j], ips[i] })
	hdr := func(t uint16) mdns.RR_Header {
		return mdns.RR_Header{Name: q.Name, Rrtype: t, Class: mdns.ClassINET, Ttl: TTL}
	}
	for _, ip := range ips {
		if ip4 := ip.To4(); ip4 != nil {
			if q.Qtype == mdns.TypeA || q.Qtype == mdns.TypeANY {
				resp.Answer = append(resp.Answer, &mdns.A{Hdr: hdr(mdns.TypeA), A: ip4})
			}
		} else if q.Qtype == mdns.TypeAAAA || q.Qtype == mdns.TypeANY {
			resp.Answer = append(resp.Answer, &mdns.AAAA{Hdr: hdr(mdns.TypeAAAA), AAAA: ip})
		}
	}
	return resp // other types: NOERROR, no data
}

// isClusterName: single-label names and tasks.X are the cluster's own
// namespace; an unknown one is NXDOMAIN, never sent upstream.
func isClusterName(name string) bool {
	labels := mdns.SplitDomainName(name)
	return len(labels) == 1 || (len(labels) == 2 && labels[0] == "tasks")
}

func (h *handler) forward(req *mdns.Msg) *mdns.Msg {
	fail := new(mdns.Msg)
	fail.SetRcode(req, mdns.RcodeServerFailure)
	if len(h.fwd.Servers) == 0 {
		return fail
	}
	select {
	case h.inflight <- struct{}{}:
		defer func() { <-h.inflight }()
	default:
		return fail
	}
	for _, srv := range h.fwd.Servers {
		ctx, cancel := context.WithTimeout(h.stop, h.fwd.Timeout)
		resp, err := h.exchange(ctx, req, srv)
		cancel()
		if err == nil && resp != nil {
			resp.Id = req.Id
			return resp
		}
	}
	return fail
}

func (h *handler) exchange(ctx context.Context, req *mdns.Msg, srv string) (*mdns.Msg, error) {
	c := &mdns.Client{Net: "udp", Timeout: h.fwd.Timeout}
	try := func(network string) (*mdns.Msg, error) {
		c.Net = network
		var conn net.Conn
		dial := func() error {
			var d net.Dialer
			var err error
			conn, err = d.DialContext(ctx, network, srv)
			return err
		}
		var err error
		if h.fwd.NetNSPath == "" {
			err = dial()
		} else {
			err = inNetNS(h.fwd.NetNSPath, dial)
		}
		if err != nil {
			return nil, err
		}
		defer conn.Close()
		// The exchange reads until its deadline whatever ctx does:
		// closing the socket when ctx ends (the server closing) stops it.
		defer context.AfterFunc(ctx, func() { conn.Close() })()
		r, _, err := c.ExchangeWithConnContext(ctx, req, &mdns.Conn{Conn: conn})
		return r, err
	}
	r, err := try("udp")
	if err == nil && r.Truncated {
		return try("tcp")
	}
	return r, err
}

// inNetNS runs fn on a thread in the namespace at path (netnsrun.RunPath):
// sockets made by fn stay in that namespace whoever uses them later.
func inNetNS(path string, fn func() error) error { return netnsrun.RunPath(path, fn) }
