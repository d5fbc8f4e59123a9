package portforward

import (
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
)

// Rule is one entry of PortForward.Allow: a destination a peer may reach.
// Its text form is [PROTO/]HOST:PORTS where PROTO is tcp or udp (absent:
// both), HOST an IP address, a CIDR prefix or a host name (IPv6 in
// brackets: "[::1]", "[fd00::/8]"), and PORTS a port, a range "N-M" or
// "*".
type Rule struct {
	Proto  string       // "", "tcp" or "udp"
	Prefix netip.Prefix // valid for address and CIDR rules
	Name   string       // lower-case host name for name rules
	Lo, Hi uint16
}

// ParseRule parses the text form of a rule.
func ParseRule(s string) (Rule, error) {
	var r Rule
	rest := strings.TrimSpace(s)
	if p, after, ok := strings.Cut(rest, "/"); ok && (p == ProtoTCP || p == ProtoUDP || p == "*") {
		if p != "*" {
			r.Proto = p
		}
		rest = after
	}
	host, ports, err := net.SplitHostPort(rest)
	if err != nil {
		return r, fmt.Errorf("%q: want [tcp/|udp/]HOST:PORTS: %w", s, err)
	}
	switch {
	case host == "":
		return r, fmt.Errorf("%q: empty host", s)
	case strings.Contains(host, "/"):
		pfx, err := netip.ParsePrefix(host)
		if err != nil {
			return r, fmt.Errorf("%q: %w", s, err)
		}
		r.Prefix = pfx.Masked()
	default:
		if ip, err := netip.ParseAddr(host); err == nil {
			r.Prefix = netip.PrefixFrom(ip.Unmap(), ip.Unmap().BitLen())
		} else {
			r.Name = strings.ToLower(strings.TrimSuffix(host, "."))
		}
	}
	r.Lo, r.Hi = 1, 65535
	if ports != "*" {
		lo, hi, isRange := strings.Cut(ports, "-")
		if !isRange {
			hi = lo
		}
		l, err1 := strconv.ParseUint(lo, 10, 16)
		h, err2 := strconv.ParseUint(hi, 10, 16)
		if err1 != nil || err2 != nil || l == 0 || h < l {
			return r, fmt.Errorf("%q: ports %q: want a port 1..65535, a range N-M or *", s, ports)
		}
		r.Lo, r.Hi = uint16(l), uint16(h)
	}
	return r, nil
}

// ParseAllow parses a whole allow list. A nil list stays nil: any
// destination, as upstream.
func ParseAllow(list []string) ([]Rule, error) {
	if list == nil {
		return nil, nil
	}
	out := make([]Rule, 0, len(list))
	for _, s := range list {
		r, err := ParseRule(s)
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, nil
}

func (r Rule) matchPort(proto string, port uint16) bool {
	return (r.Proto == "" || r.Proto == proto) && port >= r.Lo && port <= r.Hi
}

// acl decides which destinations are allowed; a nil *acl allows all.
type acl struct{ rules []Rule }

// allowsName says whether a rule names host itself (a name rule), which
// allows every address it resolves to.
func (a *acl) allowsName(proto, host string, port uint16) bool {
	if a == nil {
		return true
	}
	h := strings.ToLower(strings.TrimSuffix(host, "."))
	for _, r := range a.rules {
		if r.Name != "" && r.Name == h && r.matchPort(proto, port) {
			return true
		}
	}
	return false
}

// allowsAddr says whether an address rule covers ip.
func (a *acl) allowsAddr(proto string, ip netip.Addr, port uint16) bool {
	if a == nil {
		return true
	}
	ip = ip.Unmap()
	for _, r := range a.rules {
		if r.Name == "" && r.Prefix.Contains(ip) && r.matchPort(proto, port) {
			return true
		}
	}
	return false
}
