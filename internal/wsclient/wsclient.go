// Package wsclient is the device's websocket client (RFC 6455): the
// opening handshake over a dialled connection (through an HTTP CONNECT or
// SOCKS5 proxy when the environment names one), TLS for wss, and masked
// frames out, unmasked frames in.
//
// It exists for size: a general client (gorilla/websocket's Dialer) links
// net/http's client side, its IDNA and Unicode tables and compress/flate,
// about 0.5 MB of a device binary that needs none of them. It imports
// neither net/http nor compress/*, and offers only what the link uses: no
// extensions, no subprotocols, messages written whole.
package wsclient

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha1" //nolint:gosec // RFC 6455 §4.2.2 specifies SHA-1 for Sec-WebSocket-Accept
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Dialer opens websocket connections.
type Dialer struct {
	// NetDial dials the server, or the proxy; nil means net.Dialer.
	NetDial func(ctx context.Context, network, addr string) (net.Conn, error)
	// Proxy says which proxy, if any, to reach the server's URL through
	// (ProxyFromEnvironment, say); nil means none.
	Proxy func(*url.URL) (*url.URL, error)
	// TLSConfig is for wss; its ServerName defaults to the URL's host.
	TLSConfig *tls.Config
	// HandshakeTimeout bounds dialling, proxy, TLS and websocket
	// handshakes together; 0 means only the context does.
	HandshakeTimeout time.Duration
	// ReadBufferSize and WriteBufferSize size the connection's buffers;
	// 0 means 4096. A message larger than the write buffer goes out in
	// several writes of one frame.
	ReadBufferSize, WriteBufferSize int
}

// Header holds HTTP header fields under their canonical keys
// ("Retry-After").
type Header map[string][]string

// Get returns the first value of key, in any case; "" if there is none.
func (h Header) Get(key string) string {
	if v := h[CanonicalKey(key)]; len(v) > 0 {
		return v[0]
	}
	return ""
}

// Set replaces the values of key.
func (h Header) Set(key, value string) { h[CanonicalKey(key)] = []string{value} }

// Add appends value to those of key.
func (h Header) Add(key, value string) {
	k := CanonicalKey(key)
	h[k] = append(h[k], value)
}

// CanonicalKey spells an HTTP header key as Go's net/http does: each
// dash-separated word capitalised ("content-type" is "Content-Type").
func CanonicalKey(key string) string {
	upper := true
	for i := 0; i < len(key); i++ {
		c := key[i]
		if upper && c >= 'a' && c <= 'z' || !upper && c >= 'A' && c <= 'Z' {
			return canonicalize(key)
		}
		upper = c == '-'
	}
	return key
}

func canonicalize(key string) string {
	b := []byte(key)
	upper := true
	for i, c := range b {
		switch {
		case upper && c >= 'a' && c <= 'z':
			b[i] = c - ('a' - 'A')
		case !upper && c >= 'A' && c <= 'Z':
			b[i] = c + ('a' - 'A')
		}
		upper = c == '-'
	}
	return string(b)
}

// maxErrorBody is how much of a refusal's body HandshakeError keeps.
const maxErrorBody = 512

// HandshakeError is a server's answer other than 101 Switching Protocols.
type HandshakeError struct {
	StatusCode int
	// Status is the status line after the protocol version:
	// "503 Service Unavailable".
	Status string
	Header Header
	// Body is the start of the answer's body, at most 512 bytes.
	Body []byte
}

func (e *HandshakeError) Error() string {
	return "websocket: the server answered the handshake with " + e.Status
}

// acceptGUID is RFC 6455's fixed suffix of the key in the accept hash.
const acceptGUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

func acceptKey(key string) string {
	h := sha1.Sum([]byte(key + acceptGUID)) //nolint:gosec // as RFC 6455 specifies
	return base64.StdEncoding.EncodeToString(h[:])
}

// Dial opens a websocket to rawURL (ws:// or wss://) sending header's
// fields with the handshake. A server that answers with anything but a
// valid 101 gives a *HandshakeError.
func (d *Dialer) Dial(ctx context.Context, rawURL string, header Header) (*Conn, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("websocket: %w", err)
	}
	var defaultPort string
	switch u.Scheme {
	case "ws":
		defaultPort = "80"
	case "wss":
		defaultPort = "443"
	default:
		return nil, fmt.Errorf("websocket: URL %q: scheme must be ws or wss", rawURL)
	}
	if u.Host == "" || u.Hostname() == "" {
		return nil, fmt.Errorf("websocket: URL %q has no host", rawURL)
	}
	if u.User != nil {
		return nil, fmt.Errorf("websocket: URL %q: credentials in the URL are not supported", u.Redacted())
	}
	port := u.Port()
	if port == "" {
		port = defaultPort
	}
	hostPort := net.JoinHostPort(u.Hostname(), port)
	req, key, err := request(u, header)
	if err != nil {
		return nil, err
	}

	if d.HandshakeTimeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, d.HandshakeTimeout)
		defer cancel()
	}
	netDial := d.NetDial
	if netDial == nil {
		netDial = (&net.Dialer{}).DialContext
	}
	var proxy *url.URL
	if d.Proxy != nil {
		if proxy, err = d.Proxy(u); err != nil {
			return nil, fmt.Errorf("websocket: proxy: %w", err)
		}
	}
	dialAddr := hostPort
	if proxy != nil {
		if dialAddr, err = proxyAddr(proxy); err != nil {
			return nil, err
		}
	}
	nc, err := netDial(ctx, "tcp", dialAddr)
	if err != nil {
		if proxy != nil {
			return nil, fmt.Errorf("websocket: dial proxy %s: %w", proxy.Redacted(), err)
		}
		return nil, fmt.Errorf("websocket: %w", err)
	}
	c, err := d.handshake(ctx, nc, u, hostPort, proxy, req, key)
	if err != nil {
		nc.Close()
		var he *HandshakeError
		if errors.As(err, &he) {
			return nil, err
		}
		// A deadline set to end the handshake surfaces as an i/o
		// timeout, possibly a moment before ctx's own timer: say which.
		cause := ctx.Err()
		if dl, ok := ctx.Deadline(); ok && cause == nil && !time.Now().Before(dl) {
			cause = context.DeadlineExceeded
		}
		if cause != nil {
			return nil, fmt.Errorf("websocket: handshake with %s: %w (%v)", hostPort, cause, err)
		}
		return nil, err
	}
	return c, nil
}

// handshake runs the proxy, TLS and websocket handshakes on nc, within
// ctx.
func (d *Dialer) handshake(ctx context.Context, nc net.Conn, u *url.URL, hostPort string, proxy *url.URL, req []byte, key string) (*Conn, error) {
	if dl, ok := ctx.Deadline(); ok {
		if err := nc.SetDeadline(dl); err != nil {
			return nil, err
		}
	}
	// Cancelling ctx ends a read or write blocked in the handshake.
	stop := context.AfterFunc(ctx, func() { _ = nc.SetDeadline(time.Unix(1, 0)) })
	defer stop()

	if proxy != nil {
		if err := connectVia(nc, proxy, hostPort); err != nil {
			return nil, err
		}
	}
	conn := nc
	if u.Scheme == "wss" {
		cfg := d.TLSConfig.Clone()
		if cfg == nil {
			cfg = &tls.Config{MinVersion: tls.VersionTLS12}
		}
		if cfg.ServerName == "" {
			cfg.ServerName = u.Hostname()
		}
		tc := tls.Client(nc, cfg)
		if err := tc.HandshakeContext(ctx); err != nil {
			return nil, fmt.Errorf("websocket: TLS handshake with %s: %w", hostPort, err)
		}
		conn = tc
	}
	if _, err := conn.Write(req); err != nil {
		return nil, fmt.Errorf("websocket: send handshake to %s: %w", hostPort, err)
	}
	br := bufio.NewReaderSize(conn, bufSize(d.ReadBufferSize))
	code, status, hdr, err := readHead(br)
	if err != nil {
		return nil, fmt.Errorf("websocket: handshake answer from %s: %w", hostPort, err)
	}
	if code != 101 {
		return nil, &HandshakeError{StatusCode: code, Status: status, Header: hdr, Body: readBody(br, hdr, maxErrorBody)}
	}
	if err := checkUpgrade(hdr, key); err != nil {
		return nil, fmt.Errorf("websocket: handshake answer from %s: %w", hostPort, err)
	}
	if !stop() {
		return nil, ctx.Err()
	}
	if err := nc.SetDeadline(time.Time{}); err != nil {
		return nil, err
	}
	var seed [32]byte
	if _, err := rand.Read(seed[:]); err != nil {
		return nil, fmt.Errorf("websocket: %w", err)
	}
	return newConn(conn, br, bufSize(d.WriteBufferSize), seed), nil
}

func bufSize(n int) int {
	if n <= 0 {
		return 4096
	}
	return max(n, 256)
}

// request is the handshake request and its Sec-WebSocket-Key.
func request(u *url.URL, header Header) ([]byte, string, error) {
	var nonce [16]byte
	if _, err := rand.Read(nonce[:]); err != nil {
		return nil, "", fmt.Errorf("websocket: %w", err)
	}
	key := base64.StdEncoding.EncodeToString(nonce[:])
	var b bytes.Buffer
	b.WriteString("GET " + u.RequestURI() + " HTTP/1.1\r\nHost: " + u.Host + "\r\n" +
		"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: " + key + "\r\n")
	for k, vs := range header {
		if !validKey(k) {
			return nil, "", fmt.Errorf("websocket: invalid header name %q", k)
		}
		switch CanonicalKey(k) {
		case "Host", "Upgrade", "Connection", "Sec-Websocket-Key", "Sec-Websocket-Version", "Sec-Websocket-Extensions":
			return nil, "", fmt.Errorf("websocket: header %s is the handshake's own", k)
		}
		for _, v := range vs {
			if strings.ContainsAny(v, "\r\n\x00") {
				return nil, "", fmt.Errorf("websocket: header %s: value has a line break", k)
			}
			b.WriteString(k + ": " + v + "\r\n")
		}
	}
	b.WriteString("\r\n")
	return b.Bytes(), key, nil
}

// validKey: an HTTP token (RFC 9110 §5.6.2).
func validKey(k string) bool {
	if k == "" {
		return false
	}
	for i := 0; i < len(k); i++ {
		c := k[i]
		if c <= ' ' || c >= 0x7f || strings.IndexByte(`"(),/:;<=>?@[\]{}`, c) >= 0 {
			return false
		}
	}
	return true
}

// checkUpgrade checks a 101's headers (RFC 6455 §4.1, the client's
// requirements 2-6).
func checkUpgrade(h Header, key string) error {
	if !hasToken(h["Upgrade"], "websocket") {
		return fmt.Errorf("101 without Upgrade: websocket (got %q)", h.Get("Upgrade"))
	}
	if !hasToken(h["Connection"], "upgrade") {
		return fmt.Errorf("101 without Connection: Upgrade (got %q)", h.Get("Connection"))
	}
	if got, want := h.Get("Sec-Websocket-Accept"), acceptKey(key); got != want {
		return fmt.Errorf("Sec-WebSocket-Accept %q does not match the key sent (want %q)", clip(got), want)
	}
	if ext := h.Get("Sec-Websocket-Extensions"); ext != "" {
		return fmt.Errorf("server chose extension %q, but none was offered", clip(ext))
	}
	if p := h.Get("Sec-Websocket-Protocol"); p != "" {
		return fmt.Errorf("server chose subprotocol %q, but none was offered", clip(p))
	}
	return nil
}

// hasToken: one of the comma-separated values is tok, in any case.
func hasToken(values []string, tok string) bool {
	for _, v := range values {
		for _, f := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(f), tok) {
				return true
			}
		}
	}
	return false
}

// clip shortens what a peer sent for an error message.
func clip(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}

// Limits on an answer's head: a server (or something posing as one)
// cannot make the device buffer more than this.
const (
	maxHeaderLines = 128
	maxHeaderBytes = 64 << 10
)

// readHead reads an HTTP/1.x status line and header fields.
func readHead(br *bufio.Reader) (code int, status string, h Header, err error) {
	line, err := readLine(br)
	if err != nil {
		return 0, "", nil, err
	}
	proto, rest, ok := strings.Cut(line, " ")
	if !ok || !strings.HasPrefix(proto, "HTTP/1.") {
		return 0, "", nil, fmt.Errorf("not an HTTP/1.x status line: %q", clip(line))
	}
	status = strings.TrimLeft(rest, " ")
	codeText, _, _ := strings.Cut(status, " ")
	code, err = strconv.Atoi(codeText)
	if err != nil || len(codeText) != 3 || code < 100 {
		return 0, "", nil, fmt.Errorf("bad status code in %q", clip(line))
	}
	h = Header{}
	total, last := len(line), ""
	for n := 0; ; n++ {
		line, err := readLine(br)
		if err != nil {
			return 0, "", nil, err
		}
		if line == "" {
			return code, status, h, nil
		}
		if total += len(line); total > maxHeaderBytes || n >= maxHeaderLines {
			return 0, "", nil, fmt.Errorf("header larger than %d bytes or %d lines", maxHeaderBytes, maxHeaderLines)
		}
		if line[0] == ' ' || line[0] == '\t' { // obsolete line folding
			if vs := h[last]; len(vs) > 0 {
				vs[len(vs)-1] += " " + strings.TrimSpace(line)
			}
			continue
		}
		k, v, ok := strings.Cut(line, ":")
		if !ok || !validKey(k) {
			return 0, "", nil, fmt.Errorf("malformed header line %q", clip(line))
		}
		last = CanonicalKey(k)
		h[last] = append(h[last], strings.Trim(v, " \t"))
	}
}

// readLine reads one line without its CRLF (or bare LF).
func readLine(br *bufio.Reader) (string, error) {
	b, err := br.ReadSlice('\n')
	if errors.Is(err, bufio.ErrBufferFull) {
		return "", errors.New("header line longer than the read buffer")
	}
	if err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return "", err
	}
	b = bytes.TrimSuffix(b[:len(b)-1], []byte{'\r'})
	return string(b), nil
}

// readBody reads up to limit bytes of a body framed by Content-Length,
// chunked transfer coding or the end of the connection; a body that
// cannot be read is cut where it stops.
func readBody(br *bufio.Reader, h Header, limit int) []byte {
	var out []byte
	switch {
	case hasToken(h["Transfer-Encoding"], "chunked"):
		for len(out) < limit {
			line, err := readLine(br)
			if err != nil {
				break
			}
			size, _, _ := strings.Cut(line, ";")
			n, err := strconv.ParseUint(strings.TrimSpace(size), 16, 32)
			if err != nil || n == 0 {
				break
			}
			chunk := make([]byte, min(int(n), limit-len(out)))
			k, _ := io.ReadFull(br, chunk)
			out = append(out, chunk[:k]...)
			if k < len(chunk) || uint64(k) < n {
				break
			}
			if _, err := readLine(br); err != nil {
				break
			}
		}
	case h.Get("Content-Length") != "":
		n, err := strconv.ParseInt(h.Get("Content-Length"), 10, 64)
		if err != nil || n <= 0 {
			return nil
		}
		out = make([]byte, min(n, int64(limit)))
		k, _ := io.ReadFull(br, out)
		out = out[:k]
	default:
		out, _ = io.ReadAll(io.LimitReader(br, int64(limit)))
	}
	return out
}
