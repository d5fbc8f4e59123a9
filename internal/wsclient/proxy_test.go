package wsclient

import (
	"bufio"
	"context"
	"encoding/binary"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/gorilla/websocket"
)

func TestProxyFor(t *testing.T) {
	cfg := ProxyConfig{
		HTTPProxy:  "http://plain.proxy:3128",
		HTTPSProxy: "proxy.corp:8080", // no scheme: HTTP
		NoProxy:    "intranet.example, .internal, *.wild.example, 10.0.0.0/8, 192.168.1.7, [fd00::1]:443, ported.example:8443, ::2",
	}
	tests := []struct {
		url, want string
	}{
		{"wss://hosted.mender.io/x", "http://proxy.corp:8080"},
		{"ws://hosted.mender.io/x", "http://plain.proxy:3128"},
		{"wss://localhost/x", ""},
		{"wss://127.0.0.1:8443/x", ""},
		{"wss://[::1]/x", ""},
		{"wss://intranet.example/", ""},
		{"wss://INTRANET.example/", ""},
		{"wss://dev.intranet.example/", ""}, // subdomains of a bare name
		{"wss://xintranet.example/", "http://proxy.corp:8080"},
		{"wss://internal/", "http://proxy.corp:8080"}, // ".internal" only matches below it
		{"wss://a.internal/", ""},
		{"wss://wild.example/", "http://proxy.corp:8080"},
		{"wss://a.wild.example/", ""},
		{"wss://10.1.2.3/", ""},
		{"wss://11.1.2.3/", "http://proxy.corp:8080"},
		{"wss://192.168.1.7/", ""},
		{"wss://192.168.1.8/", "http://proxy.corp:8080"},
		{"wss://[fd00::1]/", ""},
		{"wss://[fd00::1]:8443/", "http://proxy.corp:8080"},
		{"wss://[::2]/", ""},
		{"wss://ported.example:8443/", ""},
		{"wss://ported.example/", "http://proxy.corp:8080"}, // port 443 is not 8443
	}
	for _, tt := range tests {
		u, _ := url.Parse(tt.url)
		got, err := cfg.ProxyFor(u)
		if err != nil {
			t.Errorf("%s: %v", tt.url, err)
			continue
		}
		gotS := ""
		if got != nil {
			gotS = got.String()
		}
		if gotS != tt.want {
			t.Errorf("%s: proxy %q, want %q", tt.url, gotS, tt.want)
		}
	}
	u, _ := url.Parse("wss://any.example/")
	for _, np := range []string{"*", " * ", "a.example,*"} {
		if got, _ := (ProxyConfig{HTTPSProxy: "p:1", NoProxy: np}).ProxyFor(u); got != nil {
			t.Errorf("NO_PROXY=%q: proxy %v", np, got)
		}
	}
	if got, _ := (ProxyConfig{HTTPProxy: "p:1"}).ProxyFor(u); got != nil {
		t.Errorf("wss with only an HTTP proxy: %v", got)
	}
}

// TestProxyFromEnvironment: the variable names, upper case first, as
// Go's net/http reads them.
func TestProxyFromEnvironment(t *testing.T) {
	for _, k := range []string{"HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "NO_PROXY", "no_proxy"} {
		t.Setenv(k, "")
	}
	t.Setenv("https_proxy", "http://lower:1")
	t.Setenv("HTTPS_PROXY", "http://upper:1")
	t.Setenv("http_proxy", "socks5://plain:1080")
	t.Setenv("no_proxy", "skip.example")
	for in, want := range map[string]string{
		"wss://a.example/":    "http://upper:1",
		"ws://a.example/":     "socks5://plain:1080",
		"wss://skip.example/": "",
	} {
		u, _ := url.Parse(in)
		got, err := ProxyFromEnvironment(u)
		if err != nil || (got == nil) != (want == "") || (got != nil && got.String() != want) {
			t.Errorf("%s: %v %v, want %q", in, got, err, want)
		}
	}
}

// connectProxy is an HTTP CONNECT proxy on loopback that sends every
// tunnel to target, whatever the host asked for, and records the
// requests; with auth set it wants those Basic credentials.
type connectProxy struct {
	addr    string
	auth    string // "user:pass" or ""
	target  string
	tunnels atomic.Int32
	mu      sync.Mutex
	asked   []string // CONNECT targets
}

func newConnectProxy(t *testing.T, target, auth string) *connectProxy {
	ln := listen(t)
	p := &connectProxy{addr: ln.Addr().String(), auth: auth, target: target}
	serveConns(t, ln, func(c net.Conn) {
		br := bufio.NewReader(c)
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		p.mu.Lock()
		p.asked = append(p.asked, req.Method+" "+req.Host)
		p.mu.Unlock()
		if req.Method != http.MethodConnect {
			io.WriteString(c, "HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n")
			return
		}
		if p.auth != "" {
			user, pass, ok := (&http.Request{Header: http.Header{"Authorization": req.Header["Proxy-Authorization"]}}).BasicAuth()
			if !ok || user+":"+pass != p.auth {
				io.WriteString(c, "HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm=\"test\"\r\nContent-Length: 0\r\n\r\n")
				return
			}
		}
		up, err := net.Dial("tcp", p.target)
		if err != nil {
			io.WriteString(c, "HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
			return
		}
		defer up.Close()
		p.tunnels.Add(1)
		io.WriteString(c, "HTTP/1.1 200 Connection established\r\n\r\n")
		pipe(c, br, up)
	})
	return p
}

// pipe copies both ways until either side ends.
func pipe(c net.Conn, br io.Reader, up net.Conn) {
	done := make(chan struct{}, 2)
	go func() { io.Copy(up, br); up.(*net.TCPConn).CloseWrite(); done <- struct{}{} }()
	go func() { io.Copy(c, up); c.(*net.TCPConn).CloseWrite(); done <- struct{}{} }()
	<-done
	<-done
}

// echoAddr starts a gorilla echo server; its address.
func echoAddr(t *testing.T) string {
	srv := gorillaServer(t, websocket.Upgrader{}, echo(nil))
	srv.Start()
	return srv.Listener.Addr().String()
}

// roundTrip checks that c carries a message both ways.
func roundTrip(t *testing.T, c *Conn) {
	t.Helper()
	if err := c.WriteMessage(TextMessage, []byte("through")); err != nil {
		t.Fatal(err)
	}
	if _, p, err := c.ReadMessage(); err != nil || string(p) != "through" {
		t.Fatalf("echo: %q %v", p, err)
	}
}

func TestHTTPConnectProxy(t *testing.T) {
	target := echoAddr(t)
	_, port, _ := net.SplitHostPort(target)
	tests := []struct {
		name, proxyAuth, urlUser string
		wantErr                  string
	}{
		{"no auth", "", "", ""},
		{"basic auth", "dev:s3cret", "dev:s3cret@", ""},
		{"wrong password", "dev:s3cret", "dev:guess@", "407 Proxy Authentication Required"},
		{"no credentials", "dev:s3cret", "", "407 Proxy Authentication Required"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := newConnectProxy(t, target, tt.proxyAuth)
			proxyURL, _ := url.Parse("http://" + tt.urlUser + p.addr)
			d := &Dialer{Proxy: func(*url.URL) (*url.URL, error) { return proxyURL, nil }}
			c, err := d.Dial(context.Background(), "ws://device.test:"+port+"/", nil)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Dial: %v, want %q", err, tt.wantErr)
				}
				if strings.Contains(err.Error(), "s3cret") || strings.Contains(err.Error(), "guess") {
					t.Errorf("the error shows the password: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			roundTrip(t, c)
			p.mu.Lock()
			defer p.mu.Unlock()
			if len(p.asked) != 1 || p.asked[0] != "CONNECT device.test:"+port {
				t.Errorf("the proxy was asked %q", p.asked)
			}
		})
	}
}

// TestProxyFromEnvironmentDials: HTTP_PROXY and NO_PROXY steer real
// dials: through the proxy, or straight to the server.
func TestProxyFromEnvironmentDials(t *testing.T) {
	target := echoAddr(t)
	_, port, _ := net.SplitHostPort(target)
	p := newConnectProxy(t, target, "")
	// The server's name is not loopback's (which never goes through a
	// proxy): the dialler maps it to the test server.
	var direct atomic.Int32
	d := &Dialer{Proxy: ProxyFromEnvironment, NetDial: func(ctx context.Context, network, addr string) (net.Conn, error) {
		if addr == "device.test:"+port {
			direct.Add(1)
			addr = target
		}
		return (&net.Dialer{}).DialContext(ctx, network, addr)
	}}
	for _, k := range []string{"http_proxy", "no_proxy"} {
		t.Setenv(k, "")
	}
	t.Setenv("HTTP_PROXY", "http://"+p.addr)
	for _, tt := range []struct {
		noProxy  string
		viaProxy bool
	}{{"", true}, {"other.test", true}, {"device.test", false}, {".test", false}, {"device.test:" + port, false}, {"device.test:1", true}, {"*", false}} {
		t.Setenv("NO_PROXY", tt.noProxy)
		tunnels, directs := p.tunnels.Load(), direct.Load()
		c := dial(t, d, "ws://device.test:"+port+"/", nil)
		roundTrip(t, c)
		c.Close()
		if via := p.tunnels.Load() > tunnels; via != tt.viaProxy || (direct.Load() > directs) == tt.viaProxy {
			t.Errorf("NO_PROXY=%q: through the proxy %v, want %v", tt.noProxy, via, tt.viaProxy)
		}
	}
}

// socksProxy is a SOCKS5 server (RFC 1928/1929) on loopback that sends
// every tunnel to target; with auth set it wants that user and password.
func socksProxy(t *testing.T, target, auth string) (addr string, asked chan string) {
	ln := listen(t)
	asked = make(chan string, 8)
	serveConns(t, ln, func(c net.Conn) {
		var b [2]byte
		if _, err := io.ReadFull(c, b[:]); err != nil || b[0] != 5 {
			return
		}
		methods := make([]byte, b[1])
		io.ReadFull(c, methods)
		want := byte(0)
		if auth != "" {
			want = 2
		}
		if !strings.ContainsRune(string(methods), rune(want)) {
			c.Write([]byte{5, 0xff})
			return
		}
		c.Write([]byte{5, want})
		if auth != "" {
			io.ReadFull(c, b[:])
			user := make([]byte, b[1])
			io.ReadFull(c, user)
			io.ReadFull(c, b[:1])
			pass := make([]byte, b[0])
			io.ReadFull(c, pass)
			if string(user)+":"+string(pass) != auth {
				c.Write([]byte{1, 1})
				return
			}
			c.Write([]byte{1, 0})
		}
		var req [4]byte
		io.ReadFull(c, req[:])
		var host string
		switch req[3] {
		case 1:
			ip := make([]byte, 4)
			io.ReadFull(c, ip)
			host = net.IP(ip).String()
		case 3:
			io.ReadFull(c, b[:1])
			name := make([]byte, b[0])
			io.ReadFull(c, name)
			host = string(name)
		}
		io.ReadFull(c, b[:])
		asked <- net.JoinHostPort(host, strconv.Itoa(int(binary.BigEndian.Uint16(b[:]))))
		up, err := net.Dial("tcp", target)
		if err != nil {
			c.Write([]byte{5, 5, 0, 1, 0, 0, 0, 0, 0, 0})
			return
		}
		defer up.Close()
		c.Write([]byte{5, 0, 0, 3, 4, 'b', 'n', 'd', '1', 0x12, 0x34}) // a bound name, which the client skips
		pipe(c, c, up)
	})
	return ln.Addr().String(), asked
}

func TestSOCKS5Proxy(t *testing.T) {
	target := echoAddr(t)
	_, port, _ := net.SplitHostPort(target)
	tests := []struct {
		name, auth, urlUser, host, wantErr string
	}{
		{"no auth, host name", "", "", "device.test", ""},
		{"no auth, address", "", "", "10.9.8.7", ""},
		{"password", "dev:s3cret", "dev:s3cret@", "device.test", ""},
		{"wrong password", "dev:s3cret", "dev:nope@", "device.test", "rejected"},
		{"password wanted, none given", "dev:s3cret", "", "device.test", "none of the offered"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			addr, asked := socksProxy(t, target, tt.auth)
			proxyURL, _ := url.Parse("socks5://" + tt.urlUser + addr)
			d := &Dialer{Proxy: func(*url.URL) (*url.URL, error) { return proxyURL, nil }}
			c, err := d.Dial(context.Background(), "ws://"+net.JoinHostPort(tt.host, port)+"/", nil)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Dial: %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			roundTrip(t, c)
			if got := <-asked; got != net.JoinHostPort(tt.host, port) {
				t.Errorf("the proxy was asked for %s", got)
			}
		})
	}
}

func TestUnsupportedProxy(t *testing.T) {
	for _, raw := range []string{"https://proxy.example:443", "socks4://proxy.example:1080", "ftp://x"} {
		proxyURL, _ := url.Parse(raw)
		d := &Dialer{Proxy: func(*url.URL) (*url.URL, error) { return proxyURL, nil }}
		_, err := d.Dial(context.Background(), "wss://device.test/", nil)
		if err == nil || !strings.Contains(err.Error(), "is not supported") {
			t.Errorf("proxy %s: %v, want not supported", raw, err)
		}
	}
}
