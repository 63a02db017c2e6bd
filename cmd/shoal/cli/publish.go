package cli

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// parsePublish reads docker's two --publish forms:
//
//	published=P,target=T[,protocol=tcp|udp][,mode=ingress|host][,name=N]
//	P:T[/tcp|/udp]
//
// The long form also takes docker's spellings src/source and dst/destination.
func parsePublish(flag, v string) (*shoalv1.PortConfig, error) {
	out := &shoalv1.PortConfig{}
	num := func(what, s string) (uint32, error) {
		n, err := strconv.ParseUint(s, 10, 16)
		if err != nil || n == 0 {
			return 0, fmt.Errorf("%s: %q: %s port %q must be 1-65535", flag, v, what, s)
		}
		return uint32(n), nil
	}
	var err error
	if !strings.Contains(v, "=") {
		ports, proto, _ := strings.Cut(v, "/")
		pub, tgt, ok := strings.Cut(ports, ":")
		if !ok {
			return nil, fmt.Errorf("%s: %q: want PUBLISHED:TARGET[/udp] or published=P,target=T[,protocol=udp][,mode=host]", flag, v)
		}
		if out.PublishedPort, err = num("published", pub); err != nil {
			return nil, err
		}
		if out.TargetPort, err = num("target", tgt); err != nil {
			return nil, err
		}
		out.Protocol = proto
	} else {
		for _, part := range strings.Split(v, ",") {
			k, val, ok := strings.Cut(part, "=")
			if !ok {
				return nil, fmt.Errorf("%s: %q: %q must be KEY=VALUE", flag, v, part)
			}
			switch k {
			case "published", "src", "source":
				out.PublishedPort, err = num("published", val)
			case "target", "dst", "destination":
				out.TargetPort, err = num("target", val)
			case "protocol":
				out.Protocol = val
			case "mode":
				out.PublishMode = val
			case "name":
				out.Name = val
			default:
				return nil, fmt.Errorf("%s: %q: unknown key %q (published, target, protocol, mode, name)", flag, v, k)
			}
			if err != nil {
				return nil, err
			}
		}
		if out.TargetPort == 0 {
			return nil, fmt.Errorf("%s: %q: target= is required", flag, v)
		}
		if out.PublishedPort == 0 {
			return nil, fmt.Errorf("%s: %q: published= is required", flag, v)
		}
	}
	switch out.Protocol {
	case "", "tcp", "udp":
	default:
		return nil, fmt.Errorf("%s: %q: protocol must be tcp or udp, got %q", flag, v, out.Protocol)
	}
	switch out.PublishMode {
	case "", "ingress", "host":
	default:
		return nil, fmt.Errorf("%s: %q: mode must be ingress or host, got %q", flag, v, out.PublishMode)
	}
	return out, nil
}

// portKey is "P/proto" with tcp filled in.
func portKey(p *shoalv1.PortConfig) string {
	proto := p.GetProtocol()
	if proto == "" {
		proto = "tcp"
	}
	return fmt.Sprintf("%d/%s", p.GetPublishedPort(), proto)
}

// applyPublish writes --publish (replaces the list), --publish-rm
// (P or P/udp) and --publish-add (adds, or replaces the same P/proto).
func (f *specFlags) applyPublish(set func(string) bool, spec *shoalv1.ServiceSpec) error {
	if !set("publish") && !set("publish-rm") && !set("publish-add") {
		return nil
	}
	if spec.Endpoint == nil {
		spec.Endpoint = &shoalv1.EndpointSpec{}
	}
	ep := spec.Endpoint
	if set("publish") {
		ep.Ports = nil
		for _, v := range f.publish {
			p, err := parsePublish("--publish", v)
			if err != nil {
				return err
			}
			ep.Ports = append(ep.Ports, p)
		}
	}
	for _, v := range f.publishRm {
		key := v
		if !strings.Contains(key, "/") {
			key += "/tcp"
		}
		before := len(ep.Ports)
		ep.Ports = slices.DeleteFunc(ep.Ports, func(p *shoalv1.PortConfig) bool { return portKey(p) == key })
		if len(ep.Ports) == before {
			return fmt.Errorf("--publish-rm: the service does not publish %s", key)
		}
	}
	for _, v := range f.publishAdd {
		p, err := parsePublish("--publish-add", v)
		if err != nil {
			return err
		}
		ep.Ports = slices.DeleteFunc(ep.Ports, func(o *shoalv1.PortConfig) bool { return portKey(o) == portKey(p) })
		ep.Ports = append(ep.Ports, p)
	}
	return nil
}

// portsColumn shows published ports as docker does: "*:8080->80/tcp",
// host mode as "8080->80/tcp (host)".
func portsColumn(ps []*shoalv1.PortConfig) string {
	var out []string
	for _, p := range ps {
		proto := p.GetProtocol()
		if proto == "" {
			proto = "tcp"
		}
		if p.GetPublishMode() == "host" {
			out = append(out, fmt.Sprintf("%d->%d/%s (host)", p.GetPublishedPort(), p.GetTargetPort(), proto))
		} else {
			out = append(out, fmt.Sprintf("*:%d->%d/%s", p.GetPublishedPort(), p.GetTargetPort(), proto))
		}
	}
	return strings.Join(out, ", ")
}
