package mockserver

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/gorilla/websocket"
)

// hostDo sends a request to base naming host in its Host header, with
// the headers hdr, and returns the status and body.
func hostDo(t *testing.T, method, base, path, host string, hdr http.Header, basicAuth bool) (int, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(testCtx(t), method, base+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Close = true
	if host != "" {
		req.Host = host
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	if basicAuth {
		req.SetBasicAuth(DefaultUser, DefaultPassword)
	}
	// Redirects are not followed: the status is the server's answer to
	// this request.
	c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// wsStatus dials a websocket naming host and returns the response status.
func wsStatus(t *testing.T, base, path, host string, hdr http.Header) int {
	t.Helper()
	h := http.Header{}
	for k, v := range hdr {
		h[k] = v
	}
	if host != "" {
		h.Set("Host", host)
	}
	conn, resp, err := websocket.DefaultDialer.DialContext(testCtx(t), wsURL(base, path), h)
	if conn != nil {
		conn.Close()
	}
	if resp == nil {
		t.Fatalf("dial %s: %v", path, err)
	}
	return resp.StatusCode
}

// The server answers to its address, localhost and the names it is given,
// and to nothing else: the page, the REST calls and the websockets.
func TestForeignHostRefused(t *testing.T) {
	s, base := startServer(t, Options{AllowedHosts: []string{"Mock.Example"}})
	startFakeDevice(t, base, s.IssueDeviceToken("dev-a"))
	userTok := login(t, base)
	port := base[strings.LastIndex(base, ":")+1:]
	bearer := http.Header{"Authorization": {"Bearer " + userTok}}
	for _, tc := range []struct {
		host string
		ok   bool
	}{
		{"", true}, // the listen address itself
		{"127.0.0.1:" + port, true},
		{"127.0.0.1", true},
		{"[::1]:" + port, true},
		{"localhost:" + port, true},
		{"LOCALHOST.:" + port, true},
		{"mock.example:" + port, true},
		{"mock.example.:8443", true},
		{"rebind.attacker.example:" + port, false},
		{"localhost.attacker.example:" + port, false},
		{"127.0.0.1.nip.io:" + port, false},
		{"mock.example.attacker.example", false},
	} {
		t.Run(tc.host, func(t *testing.T) {
			want := func(okStatus int) int {
				if tc.ok {
					return okStatus
				}
				return http.StatusMisdirectedRequest
			}
			st, body := hostDo(t, http.MethodGet, base, "/", tc.host, nil, false)
			if st != want(http.StatusOK) {
				t.Fatalf("page: %d %q", st, body)
			}
			if !tc.ok && !strings.Contains(body, "--allowed-host") {
				t.Fatalf("the refusal does not say what to do: %q", body)
			}
			if st, body := hostDo(t, http.MethodPost, base, LoginPath, tc.host, nil, true); st != want(http.StatusOK) {
				t.Fatalf("login: %d %q", st, body)
			}
			if st, body := hostDo(t, http.MethodGet, base, DevicesPath, tc.host, bearer, false); st != want(http.StatusOK) {
				t.Fatalf("device list: %d %q", st, body)
			}
			if st := wsStatus(t, base, DeviceConnectMgmtDir+"dev-a/connect", tc.host, bearer); st != want(http.StatusSwitchingProtocols) {
				t.Fatalf("terminal websocket: %d", st)
			}
		})
	}
}

// DNS rebinding as a browser does it: the attacker's page, now served
// from the server's address under the attacker's name, asks with Host and
// Origin both that name. Nothing it tries gets through.
func TestDNSRebindingRefused(t *testing.T) {
	s, base := startServer(t, Options{})
	startFakeDevice(t, base, s.IssueDeviceToken("dev-a"))
	userTok := login(t, base)
	link, err := s.LoginLink(DefaultUser)
	if err != nil {
		t.Fatal(err)
	}
	port := base[strings.LastIndex(base, ":")+1:]
	host := "rebind.attacker.example:" + port
	origin := http.Header{"Origin": {"http://" + host}}
	if st, body := hostDo(t, http.MethodGet, base, "/", host, origin, false); st != http.StatusMisdirectedRequest || strings.Contains(body, DefaultPassword) {
		t.Fatalf("page: %d %q", st, body)
	}
	if st, _ := hostDo(t, http.MethodPost, base, LoginPath, host, origin, true); st != http.StatusMisdirectedRequest {
		t.Fatalf("default login: %d", st)
	}
	if st, _ := hostDo(t, http.MethodGet, base, link, host, origin, false); st != http.StatusMisdirectedRequest {
		t.Fatalf("login link: %d", st)
	}
	cookie := http.Header{"Origin": origin["Origin"], "Cookie": {JWTCookie + "=" + userTok}}
	if st, _ := hostDo(t, http.MethodPost, base, DeviceConnectMgmtDir+"dev-a/"+CommandCheckUpdate, host, cookie, false); st != http.StatusMisdirectedRequest {
		t.Fatalf("REST call with the cookie: %d", st)
	}
	if st := wsStatus(t, base, DeviceConnectMgmtDir+"dev-a/connect", host, cookie); st != http.StatusMisdirectedRequest {
		t.Fatalf("terminal websocket: %d", st)
	}
	// The link was not spent by the refused attempt.
	if st, _ := hostDo(t, http.MethodGet, base, link, "", nil, false); st != http.StatusSeeOther {
		t.Fatalf("the login link after the refused attempt: %d", st)
	}
}

// A page of another origin cannot ride on the session cookie, on REST
// calls as on websockets; the console's own origin and programs (no
// Origin) can.
func TestCrossOriginCookieRefused(t *testing.T) {
	s, base := startServer(t, Options{})
	startFakeDevice(t, base, s.IssueDeviceToken("dev-a"))
	userTok := login(t, base)
	self := "http://" + strings.TrimPrefix(base, "http://")
	for _, tc := range []struct {
		name, method, path string
		want               int
	}{
		{"device list", http.MethodGet, DevicesPath, http.StatusOK},
		{"device status", http.MethodGet, DeviceConnectMgmtDir + "dev-a", http.StatusOK},
		{"check-update", http.MethodPost, DeviceConnectMgmtDir + "dev-a/" + CommandCheckUpdate, http.StatusAccepted},
		{"logout", http.MethodPost, LogoutPath, http.StatusNoContent},
	} {
		for _, o := range []struct {
			origin string
			ok     bool
		}{
			{"http://evil.example", false},
			{"http://127.0.0.1:1", false},
			{"null", false},
			{self, true},
			{"", true},
		} {
			t.Run(tc.name+" from "+o.origin, func(t *testing.T) {
				hdr := http.Header{"Cookie": {JWTCookie + "=" + userTok}}
				if o.origin != "" {
					hdr.Set("Origin", o.origin)
				}
				if tc.path == LogoutPath {
					// Its own token: logout ends it.
					hdr.Set("Cookie", JWTCookie+"="+login(t, base))
				}
				want := tc.want
				if !o.ok {
					want = http.StatusForbidden
				}
				if st, body := hostDo(t, tc.method, base, tc.path, "", hdr, false); st != want {
					t.Fatalf("%d %q, want %d", st, body, want)
				}
			})
		}
	}
	// Without an Origin (a no-cors GET), the browser's Sec-Fetch-Site
	// tells another site's page; a navigation is let through.
	for _, tc := range []struct {
		site, mode string
		want       int
	}{
		{"same-site", "no-cors", http.StatusForbidden},
		{"cross-site", "cors", http.StatusForbidden},
		{"same-origin", "cors", http.StatusOK},
		{"none", "navigate", http.StatusOK},
		{"same-site", "navigate", http.StatusOK},
	} {
		hdr := http.Header{"Cookie": {JWTCookie + "=" + userTok}, "Sec-Fetch-Site": {tc.site}, "Sec-Fetch-Mode": {tc.mode}}
		if st, body := hostDo(t, http.MethodGet, base, DevicesPath, "", hdr, false); st != tc.want {
			t.Errorf("Sec-Fetch-Site %s, mode %s: %d %q, want %d", tc.site, tc.mode, st, body, tc.want)
		}
	}
	// Logging in from another origin is refused too.
	if st, _ := hostDo(t, http.MethodPost, base, LoginPath, "", http.Header{"Origin": {"http://evil.example"}}, true); st != http.StatusForbidden {
		t.Fatalf("login from another origin: %d", st)
	}
}

// Logout ends the token on the server: a copy of it is refused on REST
// calls and websockets; other sessions go on.
func TestLogoutRevokesToken(t *testing.T) {
	s, base := startServer(t, Options{})
	startFakeDevice(t, base, s.IssueDeviceToken("dev-a"))
	tok, other := login(t, base), login(t, base)
	bearer := func(tok string) http.Header { return http.Header{"Authorization": {"Bearer " + tok}} }
	if st, _ := hostDo(t, http.MethodGet, base, DevicesPath, "", bearer(tok), false); st != http.StatusOK {
		t.Fatalf("before logout: %d", st)
	}
	if st, _ := hostDo(t, http.MethodPost, base, LogoutPath, "", http.Header{"Cookie": {JWTCookie + "=" + tok}}, false); st != http.StatusNoContent {
		t.Fatalf("logout: %d", st)
	}
	if st, body := hostDo(t, http.MethodGet, base, DevicesPath, "", bearer(tok), false); st != http.StatusUnauthorized || !strings.Contains(body, "logout") {
		t.Fatalf("the logged-out token on REST: %d %q", st, body)
	}
	if st := wsStatus(t, base, DeviceConnectMgmtDir+"dev-a/connect", "", http.Header{"Cookie": {JWTCookie + "=" + tok}}); st != http.StatusUnauthorized {
		t.Fatalf("the logged-out token on the terminal websocket: %d", st)
	}
	if st, _ := hostDo(t, http.MethodGet, base, DevicesPath, "", bearer(other), false); st != http.StatusOK {
		t.Fatalf("another session after the logout: %d", st)
	}
}
