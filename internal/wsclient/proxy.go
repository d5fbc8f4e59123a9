package wsclient

import (
	"bufio"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
)

// ProxyFromEnvironment picks the proxy for u the way Go's net/http does
// (golang.org/x/net/http/httpproxy), reading the environment on each
// call: HTTPS_PROXY (or https_proxy) for wss, HTTP_PROXY (or http_proxy)
// for ws, none for localhost, loopback addresses and what NO_PROXY (or
// no_proxy) lists. A proxy given without a scheme is an HTTP proxy.
func ProxyFromEnvironment(u *url.URL) (*url.URL, error) {
	return ProxyConfig{
		HTTPProxy:  getEnvAny("HTTP_PROXY", "http_proxy"),
		HTTPSProxy: getEnvAny("HTTPS_PROXY", "https_proxy"),
		NoProxy:    getEnvAny("NO_PROXY", "no_proxy"),
	}.ProxyFor(u)
}

func getEnvAny(names ...string) string {
	for _, n := range names {
		if v := os.Getenv(n); v != "" {
			return v
		}
	}
	return ""
}

// ProxyConfig is what ProxyFromEnvironment reads from the environment.
type ProxyConfig struct {
	HTTPProxy  string // for ws://
	HTTPSProxy string // for wss://
	// NoProxy is a comma-separated list of exceptions: "*" (every host),
	// a host name, which matches itself and its subdomains (a leading "."
	// or "*." matches only subdomains), an IP address or a CIDR range,
	// each optionally with :port.
	NoProxy string
}

// ProxyFor is the proxy for u, nil for none.
func (p ProxyConfig) ProxyFor(u *url.URL) (*url.URL, error) {
	raw, port := p.HTTPProxy, "80"
	switch u.Scheme {
	case "wss", "https":
		raw, port = p.HTTPSProxy, "443"
	case "ws", "http":
	default:
		return nil, nil
	}
	if raw == "" {
		return nil, nil
	}
	if u.Port() != "" {
		port = u.Port()
	}
	if !p.useProxy(strings.ToLower(u.Hostname()), port) {
		return nil, nil
	}
	return parseProxy(raw)
}

// parseProxy reads a proxy setting; "host:port" means an HTTP proxy.
func parseProxy(raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil || u.Scheme == "" || u.Host == "" {
		if u2, err2 := url.Parse("http://" + raw); err2 == nil {
			u, err = u2, nil
		}
	}
	if err != nil {
		return nil, fmt.Errorf("invalid proxy address %q: %w", raw, err)
	}
	return u, nil
}

// useProxy says whether host:port goes through the proxy.
func (p ProxyConfig) useProxy(host, port string) bool {
	if host == "localhost" {
		return false
	}
	ip := net.ParseIP(host)
	if ip != nil && ip.IsLoopback() {
		return false
	}
	for _, e := range strings.Split(p.NoProxy, ",") {
		e = strings.ToLower(strings.TrimSpace(e))
		if e == "" {
			continue
		}
		if e == "*" {
			return false
		}
		if _, cidr, err := net.ParseCIDR(e); err == nil {
			if ip != nil && cidr.Contains(ip) {
				return false
			}
			continue
		}
		eHost, ePort, err := net.SplitHostPort(e)
		if err != nil {
			eHost, ePort = e, ""
		} else if eHost == "" {
			continue // ":80": no host, a malformed entry
		}
		eHost = strings.TrimSuffix(strings.TrimPrefix(eHost, "["), "]")
		if ePort != "" && ePort != port {
			continue
		}
		if eIP := net.ParseIP(eHost); eIP != nil {
			if ip != nil && eIP.Equal(ip) {
				return false
			}
			continue
		}
		// "example.com" matches itself and its subdomains; ".example.com"
		// and "*.example.com" only the subdomains.
		eHost = strings.TrimPrefix(eHost, "*")
		if eHost == "" {
			continue
		}
		if eHost[0] == '.' {
			if strings.HasSuffix(host, eHost) {
				return false
			}
			continue
		}
		if host == eHost || strings.HasSuffix(host, "."+eHost) {
			return false
		}
	}
	return true
}

// proxyAddr is the host:port to dial for proxy.
func proxyAddr(proxy *url.URL) (string, error) {
	var port string
	switch proxy.Scheme {
	case "http":
		port = "80"
	case "socks5", "socks5h":
		port = "1080"
	default:
		return "", fmt.Errorf("websocket: proxy %s: scheme %q is not supported (http or socks5)", proxy.Redacted(), proxy.Scheme)
	}
	if proxy.Hostname() == "" {
		return "", fmt.Errorf("websocket: proxy %s has no host", proxy.Redacted())
	}
	if p := proxy.Port(); p != "" {
		port = p
	}
	return net.JoinHostPort(proxy.Hostname(), port), nil
}

// connectVia asks the proxy that nc leads to for a tunnel to target
// (host:port).
func connectVia(nc net.Conn, proxy *url.URL, target string) error {
	var err error
	if proxy.Scheme == "http" {
		err = connectHTTP(nc, proxy, target)
	} else {
		err = connectSOCKS5(nc, proxy, target)
	}
	if err != nil {
		return fmt.Errorf("websocket: proxy %s: %w", proxy.Redacted(), err)
	}
	return nil
}

// connectHTTP opens the tunnel with CONNECT (RFC 9110 §9.3.6), with the
// proxy URL's user and password as Basic credentials.
func connectHTTP(nc net.Conn, proxy *url.URL, target string) error {
	req := "CONNECT " + target + " HTTP/1.1\r\nHost: " + target + "\r\n"
	if proxy.User != nil {
		pass, _ := proxy.User.Password()
		cred := base64.StdEncoding.EncodeToString([]byte(proxy.User.Username() + ":" + pass))
		req += "Proxy-Authorization: Basic " + cred + "\r\n"
	}
	if _, err := io.WriteString(nc, req+"\r\n"); err != nil {
		return fmt.Errorf("send CONNECT: %w", err)
	}
	// The tunnel's first bytes come from the server, and only once the
	// client has spoken: anything buffered past the answer's head would
	// be a proxy's error.
	br := bufio.NewReaderSize(nc, 4096)
	code, status, _, err := readHead(br)
	if err != nil {
		return fmt.Errorf("CONNECT answer: %w", err)
	}
	if code/100 != 2 {
		return fmt.Errorf("CONNECT %s refused: %s", target, status)
	}
	if br.Buffered() > 0 {
		return fmt.Errorf("CONNECT %s: the proxy sent %d bytes after its answer", target, br.Buffered())
	}
	return nil
}

// SOCKS5 (RFC 1928, RFC 1929 for the password).
const (
	socksVersion    = 5
	socksNoAuth     = 0
	socksPassword   = 2
	socksNoMethod   = 0xff
	socksConnect    = 1
	socksIPv4       = 1
	socksDomain     = 3
	socksIPv6       = 4
	socksPassStatus = 1 // version of the RFC 1929 exchange
)

var socksReplies = [...]string{
	1: "general SOCKS server failure",
	2: "connection not allowed by ruleset",
	3: "network unreachable",
	4: "host unreachable",
	5: "connection refused",
	6: "TTL expired",
	7: "command not supported",
	8: "address type not supported",
}

// connectSOCKS5 opens the tunnel; the proxy resolves the host name, as
// Go's socks5 dialer has it.
func connectSOCKS5(nc net.Conn, proxy *url.URL, target string) error {
	host, portText, err := net.SplitHostPort(target)
	if err != nil {
		return err
	}
	port, err := strconv.ParseUint(portText, 10, 16)
	if err != nil {
		return fmt.Errorf("port %q: %w", portText, err)
	}
	hello := []byte{socksVersion, 1, socksNoAuth}
	if proxy.User != nil {
		hello = []byte{socksVersion, 2, socksNoAuth, socksPassword}
	}
	if _, err := nc.Write(hello); err != nil {
		return fmt.Errorf("socks5 greeting: %w", err)
	}
	var b [2]byte
	if _, err := io.ReadFull(nc, b[:]); err != nil {
		return fmt.Errorf("socks5 greeting: %w", err)
	}
	if b[0] != socksVersion {
		return fmt.Errorf("socks5: answer of version %d", b[0])
	}
	switch b[1] {
	case socksNoAuth:
	case socksPassword:
		if proxy.User == nil {
			return errors.New("socks5: the proxy asks for a password and the proxy URL has none")
		}
		user := proxy.User.Username()
		pass, _ := proxy.User.Password()
		if len(user) > 255 || len(pass) > 255 {
			return errors.New("socks5: user name or password longer than 255 bytes")
		}
		auth := append([]byte{socksPassStatus, byte(len(user))}, user...)
		auth = append(append(auth, byte(len(pass))), pass...)
		if _, err := nc.Write(auth); err != nil {
			return fmt.Errorf("socks5 authentication: %w", err)
		}
		if _, err := io.ReadFull(nc, b[:]); err != nil {
			return fmt.Errorf("socks5 authentication: %w", err)
		}
		if b[1] != 0 {
			return errors.New("socks5: user name or password rejected")
		}
	case socksNoMethod:
		return errors.New("socks5: the proxy accepts none of the offered authentication methods")
	default:
		return fmt.Errorf("socks5: the proxy chose authentication method %d, which was not offered", b[1])
	}

	req := []byte{socksVersion, socksConnect, 0}
	if ip := net.ParseIP(host); ip != nil {
		if ip4 := ip.To4(); ip4 != nil {
			req = append(append(req, socksIPv4), ip4...)
		} else {
			req = append(append(req, socksIPv6), ip.To16()...)
		}
	} else {
		if len(host) > 255 {
			return fmt.Errorf("socks5: host name %q longer than 255 bytes", clip(host))
		}
		req = append(append(req, socksDomain, byte(len(host))), host...)
	}
	req = binary.BigEndian.AppendUint16(req, uint16(port))
	if _, err := nc.Write(req); err != nil {
		return fmt.Errorf("socks5 connect: %w", err)
	}
	var head [4]byte
	if _, err := io.ReadFull(nc, head[:]); err != nil {
		return fmt.Errorf("socks5 connect: %w", err)
	}
	if head[0] != socksVersion {
		return fmt.Errorf("socks5: answer of version %d", head[0])
	}
	if rep := head[1]; rep != 0 {
		why := "reply " + strconv.Itoa(int(rep))
		if int(rep) < len(socksReplies) && socksReplies[rep] != "" {
			why = socksReplies[rep]
		}
		return fmt.Errorf("socks5 connect to %s: %s", target, why)
	}
	// The bound address, which the client does not need.
	var skip int
	switch head[3] {
	case socksIPv4:
		skip = 4 + 2
	case socksIPv6:
		skip = 16 + 2
	case socksDomain:
		if _, err := io.ReadFull(nc, b[:1]); err != nil {
			return fmt.Errorf("socks5 connect: %w", err)
		}
		skip = int(b[0]) + 2
	default:
		return fmt.Errorf("socks5: bound address of type %d", head[3])
	}
	if _, err := io.CopyN(io.Discard, nc, int64(skip)); err != nil {
		return fmt.Errorf("socks5 connect: %w", err)
	}
	return nil
}
