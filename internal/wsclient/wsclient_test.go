package wsclient

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// gorillaServer is a websocket server of the other library: what it
// reads, it checked (masking, framing) independently of this package.
func gorillaServer(t testing.TB, up websocket.Upgrader, serve func(*websocket.Conn, *http.Request)) *httptest.Server {
	var wg sync.WaitGroup
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		wg.Add(1)
		defer wg.Done()
		defer c.Close()
		serve(c, r)
	}))
	t.Cleanup(func() { srv.Close(); wg.Wait() })
	return srv
}

// echo sends back every data message as it came, and reports the close
// frame it got.
func echo(closed chan<- *websocket.CloseError) func(*websocket.Conn, *http.Request) {
	return func(c *websocket.Conn, _ *http.Request) {
		for {
			typ, p, err := c.ReadMessage()
			if err != nil {
				var ce *websocket.CloseError
				if closed != nil && errors.As(err, &ce) {
					closed <- ce
				}
				return
			}
			if err := c.WriteMessage(typ, p); err != nil {
				return
			}
		}
	}
}

// TestEcho: messages of every length class survive a round trip through
// gorilla's server, which rejects unmasked or malformed client frames and
// fragments what exceeds its small write buffer (so the client also
// reassembles continuation frames).
func TestEcho(t *testing.T) {
	srv := gorillaServer(t, websocket.Upgrader{ReadBufferSize: 1024, WriteBufferSize: 1024}, echo(nil))
	srv.Start()
	c := dial(t, &Dialer{ReadBufferSize: 64 << 10, WriteBufferSize: 64 << 10}, wsURL(srv.URL), nil)
	for _, n := range []int{0, 1, 125, 126, 127, 65535, 65536, 1 << 20} {
		for _, typ := range []int{TextMessage, BinaryMessage} {
			t.Run(fmt.Sprintf("%d-bytes-type-%d", n, typ), func(t *testing.T) {
				want := pattern(n)
				if typ == TextMessage {
					want = bytes.Repeat([]byte("a"), n)
				}
				if err := c.WriteMessage(typ, want); err != nil {
					t.Fatal(err)
				}
				gotTyp, got, err := c.ReadMessage()
				if err != nil {
					t.Fatal(err)
				}
				if gotTyp != typ || !bytes.Equal(got, want) {
					t.Fatalf("echo: type %d, %d bytes; want type %d, %d bytes", gotTyp, len(got), typ, n)
				}
			})
		}
	}
}

// TestPartialReadsAndSkips: a message can be read in small pieces, and
// what a reader leaves unread is skipped by the next NextReader.
func TestPartialReadsAndSkips(t *testing.T) {
	srv := gorillaServer(t, websocket.Upgrader{WriteBufferSize: 1024}, func(c *websocket.Conn, _ *http.Request) {
		c.WriteMessage(websocket.BinaryMessage, pattern(5000))
		c.WriteMessage(websocket.BinaryMessage, pattern(3000))
		c.WriteMessage(websocket.TextMessage, []byte("last"))
		c.ReadMessage()
	})
	srv.Start()
	c := dial(t, &Dialer{}, wsURL(srv.URL), nil)
	_, r, err := c.NextReader()
	if err != nil {
		t.Fatal(err)
	}
	var got []byte
	buf := make([]byte, 7)
	for {
		n, err := r.Read(buf)
		got = append(got, buf[:n]...)
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if !bytes.Equal(got, pattern(5000)) {
		t.Fatalf("read in pieces: %d bytes, not the message", len(got))
	}
	if _, r, err = c.NextReader(); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(r, buf); err != nil { // 7 of 3000 bytes, the rest left unread
		t.Fatal(err)
	}
	typ, p, err := c.ReadMessage()
	if err != nil || typ != TextMessage || string(p) != "last" {
		t.Fatalf("after a half-read message: %d %q %v", typ, p, err)
	}
}

// TestPingPong: pings both ways reach the handlers with their payload,
// and the default ping handler answers with a pong.
func TestPingPong(t *testing.T) {
	serverPong := make(chan string, 1)
	srv := gorillaServer(t, websocket.Upgrader{}, func(c *websocket.Conn, _ *http.Request) {
		c.SetPongHandler(func(s string) error { serverPong <- s; return nil })
		c.WriteControl(websocket.PingMessage, []byte("from server"), time.Now().Add(time.Second))
		for {
			if _, _, err := c.ReadMessage(); err != nil {
				return
			}
		}
	})
	srv.Start()

	t.Run("default handler answers", func(t *testing.T) {
		c := dial(t, &Dialer{}, wsURL(srv.URL), nil)
		go c.NextReader() // runs the control frames; ends when c closes
		select {
		case s := <-serverPong:
			if s != "from server" {
				t.Fatalf("pong %q", s)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("no pong reached the server")
		}
		c.Close()
	})
	t.Run("handlers", func(t *testing.T) {
		c := dial(t, &Dialer{}, wsURL(srv.URL), nil)
		pings, pongs := make(chan string, 1), make(chan string, 1)
		c.SetPingHandler(func(b []byte) error { pings <- string(b); return nil })
		c.SetPongHandler(func(b []byte) error { pongs <- string(b); return nil })
		readDone := make(chan error, 1)
		go func() { _, _, err := c.NextReader(); readDone <- err }()
		if err := c.WriteControl(PingMessage, []byte("from client"), time.Now().Add(time.Second)); err != nil {
			t.Fatal(err)
		}
		for _, w := range []struct {
			ch   chan string
			want string
		}{{pings, "from server"}, {pongs, "from client"}} {
			select {
			case s := <-w.ch:
				if s != w.want {
					t.Fatalf("handler got %q, want %q", s, w.want)
				}
			case <-time.After(5 * time.Second):
				t.Fatalf("no %q reached its handler", w.want)
			}
		}
		select {
		case s := <-serverPong:
			t.Fatalf("the server got a pong %q: a ping handler replaces the default answer", s)
		default:
		}
		c.Close()
		<-readDone
	})
}

// TestClose: close frames both ways, and a connection that ends without
// one.
func TestClose(t *testing.T) {
	t.Run("server closes", func(t *testing.T) {
		echoed := make(chan *websocket.CloseError, 1)
		srv := gorillaServer(t, websocket.Upgrader{}, func(c *websocket.Conn, _ *http.Request) {
			c.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseGoingAway, "shutting down"), time.Now().Add(time.Second))
			_, _, err := c.ReadMessage()
			var ce *websocket.CloseError
			if errors.As(err, &ce) {
				echoed <- ce
			}
			close(echoed)
		})
		srv.Start()
		c := dial(t, &Dialer{}, wsURL(srv.URL), nil)
		_, _, err := c.NextReader()
		var ce *CloseError
		if !errors.As(err, &ce) || ce.Code != CloseGoingAway || ce.Text != "shutting down" {
			t.Fatalf("NextReader: %v, want close 1001", err)
		}
		if want := "websocket: close 1001 (going away): shutting down"; err.Error() != want {
			t.Errorf("error text %q, want %q", err, want)
		}
		if ce, ok := <-echoed; !ok || ce.Code != CloseGoingAway {
			t.Fatalf("the server got %v, want the close echoed", ce)
		}
		if _, _, err2 := c.NextReader(); err2 != err {
			t.Errorf("a second read: %v, want the same error", err2)
		}
		if err := c.WriteMessage(BinaryMessage, []byte("x")); !errors.Is(err, ErrCloseSent) {
			t.Errorf("write after the echo: %v, want ErrCloseSent", err)
		}
	})
	t.Run("client closes", func(t *testing.T) {
		got := make(chan *websocket.CloseError, 1)
		srv := gorillaServer(t, websocket.Upgrader{}, echo(got))
		srv.Start()
		c := dial(t, &Dialer{}, wsURL(srv.URL), nil)
		if err := c.WriteControl(CloseMessage, FormatCloseMessage(CloseNormalClosure, "bye"), time.Now().Add(time.Second)); err != nil {
			t.Fatal(err)
		}
		select {
		case ce := <-got:
			if ce.Code != CloseNormalClosure || ce.Text != "bye" {
				t.Fatalf("server got %v", ce)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("the server got no close")
		}
		_, _, err := c.NextReader() // gorilla echoes the close
		var ce *CloseError
		if !errors.As(err, &ce) || ce.Code != CloseNormalClosure {
			t.Fatalf("after closing: %v", err)
		}
		for _, err := range []error{
			c.WriteMessage(BinaryMessage, []byte("late")),
			c.WriteControl(PingMessage, nil, time.Now().Add(time.Second)),
			c.WriteControl(CloseMessage, nil, time.Now().Add(time.Second)),
		} {
			if !errors.Is(err, ErrCloseSent) {
				t.Errorf("write after close: %v, want ErrCloseSent", err)
			}
		}
	})
	t.Run("dropped without a close frame", func(t *testing.T) {
		srv := gorillaServer(t, websocket.Upgrader{}, func(c *websocket.Conn, _ *http.Request) {
			c.WriteMessage(websocket.BinaryMessage, []byte("then gone"))
		})
		srv.Start()
		c := dial(t, &Dialer{}, wsURL(srv.URL), nil)
		if _, p, err := c.ReadMessage(); err != nil || string(p) != "then gone" {
			t.Fatalf("first message: %q %v", p, err)
		}
		_, _, err := c.NextReader()
		var ce *CloseError
		if !errors.As(err, &ce) || ce.Code != CloseAbnormalClosure {
			t.Fatalf("after the drop: %v, want close 1006", err)
		}
	})
}

// TestHandshakeRefused: a refusal surfaces its status, headers and the
// start of its body, whether sized or chunked.
func TestHandshakeRefused(t *testing.T) {
	tests := []struct {
		name       string
		code       int
		retryAfter string
		body       string
		chunked    bool
		wantBody   string
	}{
		{"unauthorized", 401, "", "token expired\n", false, "token expired\n"},
		{"unavailable, chunked", 503, "30", "busy, come back later", true, "busy, come back later"},
		{"long body is cut", 429, "Fri, 31 Dec 2027 23:59:59 GMT", strings.Repeat("x", 2000), false, strings.Repeat("x", 512)},
		{"long chunked body is cut", 503, "", strings.Repeat("y", 2000), true, strings.Repeat("y", 512)},
		{"no body", 403, "", "", false, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var gotAuth string
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				gotAuth = r.Header.Get("Authorization")
				if tt.retryAfter != "" {
					w.Header().Set("Retry-After", tt.retryAfter)
				}
				w.WriteHeader(tt.code)
				if tt.chunked {
					w.(http.Flusher).Flush() // no Content-Length: chunked
					for i := 0; i < len(tt.body); i += 100 {
						io.WriteString(w, tt.body[i:min(i+100, len(tt.body))])
						w.(http.Flusher).Flush()
					}
					return
				}
				io.WriteString(w, tt.body)
			}))
			defer srv.Close()
			_, err := (&Dialer{}).Dial(context.Background(), wsURL(srv.URL)+"/x?y=1", Header{"Authorization": {"Bearer abc"}})
			var he *HandshakeError
			if !errors.As(err, &he) {
				t.Fatalf("Dial: %v, want a HandshakeError", err)
			}
			if he.StatusCode != tt.code || !strings.HasPrefix(he.Status, fmt.Sprint(tt.code)+" ") {
				t.Errorf("status %d %q, want %d", he.StatusCode, he.Status, tt.code)
			}
			if got := he.Header.Get("retry-after"); got != tt.retryAfter {
				t.Errorf("Retry-After %q, want %q", got, tt.retryAfter)
			}
			if string(he.Body) != tt.wantBody {
				t.Errorf("body %q, want %q", he.Body, tt.wantBody)
			}
			if gotAuth != "Bearer abc" {
				t.Errorf("the server got Authorization %q", gotAuth)
			}
			if !strings.Contains(err.Error(), he.Status) {
				t.Errorf("error %q does not say the status", err)
			}
		})
	}
}

// TestHandshakeChecked: a 101 that does not answer this handshake is
// refused.
func TestHandshakeChecked(t *testing.T) {
	tests := []struct {
		name, answer, want string
	}{
		{"wrong accept", "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n", "Sec-WebSocket-Accept"},
		{"no accept", "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n", "Sec-WebSocket-Accept"},
		{"no upgrade", "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n\r\n", "Upgrade: websocket"},
		{"not http", "SSH-2.0-OpenSSH_9.6\r\n", "status line"},
		{"endless header", "HTTP/1.1 101 Switching Protocols\r\n" + strings.Repeat("X-Filler: 0123456789\r\n", 200), "header larger"},
		{"cut short", "HTTP/1.1 101 Switching", "unexpected EOF"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ln := listen(t)
			serveConns(t, ln, func(c net.Conn) {
				if _, err := http.ReadRequest(bufio.NewReader(c)); err != nil {
					return
				}
				io.WriteString(c, tt.answer)
			})
			_, err := (&Dialer{}).Dial(context.Background(), "ws://"+ln.Addr().String()+"/", nil)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Dial: %v, want an error about %q", err, tt.want)
			}
		})
	}
}

// TestHandshakeRequest: what the server gets, and a fresh key each time.
func TestHandshakeRequest(t *testing.T) {
	reqs := make(chan *http.Request, 2)
	srv := gorillaServer(t, websocket.Upgrader{}, func(c *websocket.Conn, r *http.Request) {
		reqs <- r
		c.ReadMessage()
	})
	srv.Start()
	for i := 0; i < 2; i++ {
		c := dial(t, &Dialer{}, wsURL(srv.URL)+"/api/x?q=1", Header{"Authorization": {"Bearer t"}, "x-extra": {"1"}})
		c.Close()
	}
	r1, r2 := <-reqs, <-reqs
	if r1.URL.RequestURI() != "/api/x?q=1" || r1.Header.Get("Authorization") != "Bearer t" || r1.Header.Get("X-Extra") != "1" {
		t.Errorf("request %s %v", r1.URL, r1.Header)
	}
	if r1.Header.Get("Sec-WebSocket-Key") == r2.Header.Get("Sec-WebSocket-Key") {
		t.Error("two handshakes sent the same Sec-WebSocket-Key")
	}
	for _, h := range []Header{{"Bad Name": {"x"}}, {"X": {"a\r\nInjected: 1"}}, {"Upgrade": {"h2c"}}} {
		if _, err := (&Dialer{}).Dial(context.Background(), wsURL(srv.URL), h); err == nil {
			t.Errorf("Dial with header %v accepted", h)
		}
	}
	for _, u := range []string{"http://" + strings.TrimPrefix(srv.URL, "http://"), "ws://", "ws://u:p@" + strings.TrimPrefix(srv.URL, "http://")} {
		if _, err := (&Dialer{}).Dial(context.Background(), u, nil); err == nil {
			t.Errorf("Dial(%q) accepted", u)
		}
	}
}

// TestHandshakeTimeout: a server that accepts and never answers, and one
// whose dial the caller cancels, end the dial in time and leave nothing
// running (TestMain checks the goroutines).
func TestHandshakeTimeout(t *testing.T) {
	ln := listen(t)
	serveConns(t, ln, func(c net.Conn) { io.Copy(io.Discard, c) })
	url := "ws://" + ln.Addr().String() + "/"

	start := time.Now()
	_, err := (&Dialer{HandshakeTimeout: 200 * time.Millisecond}).Dial(context.Background(), url, nil)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Dial: %v, want the deadline", err)
	}
	if took := time.Since(start); took > 3*time.Second {
		t.Fatalf("the timeout took %v", took)
	}

	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(200*time.Millisecond, cancel)
	start = time.Now()
	_, err = (&Dialer{HandshakeTimeout: time.Minute}).Dial(ctx, url, nil)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Dial: %v, want cancelled", err)
	}
	if took := time.Since(start); took > 3*time.Second {
		t.Fatalf("the cancellation took %v", took)
	}
}

// TestTLS: wss with a test CA, the server name sent as SNI (also when
// the URL's host is a name that the dialler maps to loopback), and an
// unknown CA refused.
func TestTLS(t *testing.T) {
	sni := make(chan string, 4)
	srv := gorillaServer(t, websocket.Upgrader{}, echo(nil))
	srv.TLS = &tls.Config{GetConfigForClient: func(hi *tls.ClientHelloInfo) (*tls.Config, error) {
		sni <- hi.ServerName
		return nil, nil
	}}
	srv.StartTLS()
	pool := x509.NewCertPool()
	pool.AddCert(srv.Certificate())
	addr := srv.Listener.Addr().String()
	_, port, _ := net.SplitHostPort(addr)
	toServer := func(ctx context.Context, network, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, network, addr)
	}

	d := &Dialer{TLSConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}, NetDial: toServer}
	c := dial(t, d, "wss://example.com:"+port+"/", nil) // the test certificate names example.com
	if got := <-sni; got != "example.com" {
		t.Errorf("SNI %q, want example.com", got)
	}
	if _, ok := c.NetConn().(*tls.Conn); !ok {
		t.Errorf("NetConn is a %T, want the *tls.Conn", c.NetConn())
	}
	if err := c.WriteMessage(TextMessage, []byte("over tls")); err != nil {
		t.Fatal(err)
	}
	if _, p, err := c.ReadMessage(); err != nil || string(p) != "over tls" {
		t.Fatalf("echo over TLS: %q %v", p, err)
	}

	_, err := (&Dialer{TLSConfig: &tls.Config{MinVersion: tls.VersionTLS12}}).Dial(context.Background(), wsURL(srv.URL), nil)
	var ua x509.UnknownAuthorityError
	if !errors.As(err, &ua) {
		t.Fatalf("Dial without the CA: %v, want an unknown authority", err)
	}
	<-sni
}

// TestConcurrentWriters: the link writes data from one goroutine and
// pongs from another; every frame must arrive whole (the server rejects
// a torn one) and the race detector must stay quiet.
func TestConcurrentWriters(t *testing.T) {
	type result struct{ msgs, pongs int }
	done := make(chan result, 1)
	srv := gorillaServer(t, websocket.Upgrader{}, func(c *websocket.Conn, _ *http.Request) {
		var r result
		c.SetPongHandler(func(string) error { r.pongs++; return nil })
		for {
			_, p, err := c.ReadMessage()
			if err != nil {
				done <- r
				return
			}
			if !bytes.Equal(p, pattern(len(p))) {
				t.Errorf("message %d: torn", r.msgs)
			}
			r.msgs++
		}
	})
	srv.Start()
	c := dial(t, &Dialer{WriteBufferSize: 4096}, wsURL(srv.URL), nil)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		for i := 0; i < 200; i++ {
			if err := c.WriteMessage(BinaryMessage, pattern(1000+i*97)); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	go func() {
		defer wg.Done()
		for i := 0; i < 200; i++ {
			if err := c.WriteControl(PongMessage, []byte("p"), time.Now().Add(5*time.Second)); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	wg.Wait()
	c.WriteControl(CloseMessage, FormatCloseMessage(CloseNormalClosure, ""), time.Now().Add(time.Second))
	r := <-done
	if r.msgs != 200 || r.pongs != 200 {
		t.Fatalf("the server got %d messages and %d pongs, want 200 of each", r.msgs, r.pongs)
	}
}

// TestWriteControlDeadline: a control frame waits for a data write that
// holds the connection no longer than its deadline.
func TestWriteControlDeadline(t *testing.T) {
	ln := listen(t)
	release := make(chan struct{})
	serveConns(t, ln, func(c net.Conn) {
		br := bufio.NewReader(c)
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: "+
			acceptKey(req.Header.Get("Sec-WebSocket-Key"))+"\r\n\r\n")
		<-release // reads nothing: the client's big write blocks
		io.Copy(io.Discard, br)
	})
	c := dial(t, &Dialer{WriteBufferSize: 64 << 10}, "ws://"+ln.Addr().String()+"/", nil)
	released := false
	defer func() {
		if !released {
			close(release)
		}
	}()
	writing := make(chan error, 1)
	go func() { writing <- c.WriteMessage(BinaryMessage, make([]byte, 64<<20)) }()
	for len(c.wmu) == 0 { // until the write holds the connection
		time.Sleep(time.Millisecond)
	}
	start := time.Now()
	err := c.WriteControl(PingMessage, nil, time.Now().Add(200*time.Millisecond))
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("WriteControl behind a blocked write: %v, want a timeout", err)
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Fatalf("WriteControl took %v", took)
	}
	released = true
	close(release)
	if err := <-writing; err != nil {
		t.Fatalf("the big write: %v", err)
	}
}

// TestNoAllocations: writing a message and reading one into the caller's
// buffer allocate nothing, nor do the pings and pongs of the pacer; a
// 50 MiB transfer must make no garbage (itest's
// TestFileTransferGarbageBounded). The server is a raw one whose frames
// are ready before the count starts, as testing.AllocsPerRun counts the
// whole process.
func TestNoAllocations(t *testing.T) {
	const n, size = 200, 4096
	var stream []byte
	for i := 0; i < n+10; i++ {
		stream = append(stream, frame(0x80|BinaryMessage, pattern(size))...)
		stream = append(stream, frame(0x80|PongMessage, []byte("60"))...)
	}
	url := rawServer(t, func(c net.Conn, br *bufio.Reader) {
		read := make(chan struct{})
		go func() { io.Copy(io.Discard, br); close(read) }()
		c.Write(stream)
		<-read
	})
	c := dial(t, &Dialer{ReadBufferSize: 64 << 10, WriteBufferSize: 64 << 10}, url, nil)
	pongs := 0
	c.SetPongHandler(func([]byte) error { pongs++; return nil })
	msg, buf := pattern(size), make([]byte, size+1)
	if a := testing.AllocsPerRun(n, func() {
		if err := c.WriteMessage(BinaryMessage, msg); err != nil {
			t.Fatal(err)
		}
		if err := c.WriteControl(PingMessage, []byte("60"), time.Now().Add(time.Second)); err != nil {
			t.Fatal(err)
		}
	}); a != 0 {
		t.Errorf("writing: %v allocations per message", a)
	}
	if a := testing.AllocsPerRun(n, func() {
		_, r, err := c.NextReader()
		if err != nil {
			t.Fatal(err)
		}
		if k, err := io.ReadFull(r, buf); k != size || err != io.ErrUnexpectedEOF {
			t.Fatalf("read %d bytes, %v", k, err)
		}
	}); a != 0 {
		t.Errorf("reading: %v allocations per message", a)
	}
	if pongs < n {
		t.Errorf("%d pongs handled", pongs)
	}
}
