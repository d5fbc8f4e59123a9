package mockserver

import (
	"encoding/json"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

func TestConsoleFiles(t *testing.T) {
	_, base := startServer(t, Options{})
	tests := []struct {
		name, path string
		status     int
		ctype      string
		contains   string
	}{
		{"page", "/", http.StatusOK, "text/html", `value="` + DefaultUser + `"`},
		{"page has an empty password field", "/", http.StatusOK, "text/html", `<input id="password" name="password" type="password" required`},
		{"script", "/ui/console.js", http.StatusOK, "text/javascript", "tetherConsole"},
		{"style", "/ui/console.css", http.StatusOK, "text/css", ".xterm"},
		{"unknown asset", "/ui/nope.js", http.StatusNotFound, "application/json", `"error"`},
		{"unknown path", "/nope", http.StatusNotFound, "application/json", `"error"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			status, ctype, body := httpDo(t, http.MethodGet, base+tc.path, nil, nil)
			if status != tc.status || !strings.HasPrefix(ctype, tc.ctype) || !strings.Contains(body, tc.contains) {
				t.Fatalf("GET %s: %d %s, body has %q: %v", tc.path, status, ctype, tc.contains, strings.Contains(body, tc.contains))
			}
		})
	}
	// No password is put into the page, the well-known default included:
	// only a one-time login link logs a browser in without one.
	for _, pw := range []string{DefaultPassword, "s3cret"} {
		_, base2 := startServer(t, Options{Users: map[string]string{DefaultUser: pw}})
		if _, _, body := httpDo(t, http.MethodGet, base2+"/", nil, nil); strings.Contains(body, `value="`+pw+`"`) || !strings.Contains(body, DefaultUser) {
			t.Fatalf("page of a server with password %q shows it, or lacks the user", pw)
		}
	}
	// Unchanged assets are not sent again.
	resp, err := http.Get(base + "/ui/console.js")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	etag := resp.Header.Get("ETag")
	if etag == "" {
		t.Fatal("no ETag on the bundle")
	}
	if st, _, _ := httpDo(t, http.MethodGet, base+"/ui/console.js", nil, http.Header{"If-None-Match": {etag}}); st != http.StatusNotModified {
		t.Fatalf("revalidation: %d, want 304", st)
	}
}

// cookieClient is a browser-like client: it keeps the cookies it is given.
func cookieClient(t *testing.T) *http.Client {
	t.Helper()
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	return &http.Client{Jar: jar, Transport: &http.Transport{DisableKeepAlives: true}}
}

func TestLoginCookie(t *testing.T) {
	s, base := startServer(t, Options{TokenLifetime: time.Hour})
	startFakeDevice(t, base, s.IssueDeviceToken("dev-a"))
	c := cookieClient(t)
	req, _ := http.NewRequest(http.MethodPost, base+LoginPath, nil)
	req.SetBasicAuth(DefaultUser, DefaultPassword)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	var jwt *http.Cookie
	for _, ck := range resp.Cookies() {
		if ck.Name == JWTCookie {
			jwt = ck
		}
	}
	if jwt == nil || jwt.Value == "" || !jwt.HttpOnly || jwt.SameSite != http.SameSiteStrictMode || jwt.Path != "/" || jwt.MaxAge != 3600 {
		t.Fatalf("login cookie %+v", jwt)
	}
	// Every management call takes the cookie alone.
	for _, path := range []string{DevicesPath, DeviceConnectMgmtDir + "dev-a"} {
		resp, err := c.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("GET %s with the cookie: %d", path, resp.StatusCode)
		}
	}
	// Logging out drops it.
	resp, err = c.Post(base+LogoutPath, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	u, _ := url.Parse(base)
	if resp.StatusCode != http.StatusNoContent || len(c.Jar.Cookies(u)) != 0 {
		t.Fatalf("logout: %d, cookies left %v", resp.StatusCode, c.Jar.Cookies(u))
	}
	resp, err = c.Get(base + DevicesPath)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("after logout: %d", resp.StatusCode)
	}
}

func TestLoginLink(t *testing.T) {
	s, base := startServer(t, Options{})
	if _, err := s.LoginLink("nobody@tether.local"); err == nil {
		t.Fatal("login link for an unknown user")
	}
	link, err := s.LoginLink(DefaultUser)
	if err != nil {
		t.Fatal(err)
	}
	c := cookieClient(t)
	tests := []struct {
		name   string
		path   string
		status int
		cookie bool
	}{
		{"first use logs in and lands on the page", link, http.StatusOK, true},
		{"second use is refused", link, http.StatusUnauthorized, false},
		{"made-up code", LoginLinkPath + "?code=00", http.StatusUnauthorized, false},
		{"no code", LoginLinkPath, http.StatusUnauthorized, false},
	}
	u, _ := url.Parse(base)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c.Jar, _ = cookiejar.New(nil)
			resp, err := c.Get(base + tc.path)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tc.status || (len(c.Jar.Cookies(u)) > 0) != tc.cookie {
				t.Fatalf("%d, cookies %v", resp.StatusCode, c.Jar.Cookies(u))
			}
			if tc.cookie && resp.Request.URL.Path != ConsolePath {
				t.Fatalf("landed on %s", resp.Request.URL)
			}
		})
	}
}

func TestWebsocketOrigin(t *testing.T) {
	s, base := startServer(t, Options{})
	devTok := s.IssueDeviceToken("dev-a")
	startFakeDevice(t, base, devTok)
	userTok := login(t, base)
	host := strings.TrimPrefix(base, "http://")
	tests := []struct {
		name   string
		path   string
		cookie string
		origin string
		want   int
	}{
		{"user without Origin", DeviceConnectMgmtDir + "dev-a/connect", userTok, "", http.StatusSwitchingProtocols},
		{"user from the console's origin", DeviceConnectMgmtDir + "dev-a/connect", userTok, "http://" + host, http.StatusSwitchingProtocols},
		{"user from another site", DeviceConnectMgmtDir + "dev-a/connect", userTok, "http://evil.example", http.StatusForbidden},
		{"user from another port", DeviceConnectMgmtDir + "dev-a/connect", userTok, "http://127.0.0.1:1", http.StatusForbidden},
		{"user from an opaque origin", DeviceConnectMgmtDir + "dev-a/connect", userTok, "null", http.StatusForbidden},
		{"device from another site", DeviceConnectPath, s.IssueDeviceToken("dev-b"), "http://evil.example", http.StatusForbidden},
		{"device without Origin", DeviceConnectPath, s.IssueDeviceToken("dev-c"), "", http.StatusSwitchingProtocols},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			hdr := http.Header{"Cookie": {JWTCookie + "=" + tc.cookie}}
			if tc.origin != "" {
				hdr.Set("Origin", tc.origin)
			}
			conn, resp, err := websocket.DefaultDialer.DialContext(testCtx(t), wsURL(base, tc.path), hdr)
			if conn != nil {
				conn.Close()
			}
			if resp == nil || resp.StatusCode != tc.want {
				t.Fatalf("response %v (err %v), want %d", resp, err, tc.want)
			}
		})
	}
}

// The console's "last seen" is the status's updated_ts: it moves when the
// device's websocket goes down.
func TestDeviceStatusUpdatedAtDisconnect(t *testing.T) {
	s, base := startServer(t, Options{})
	fd := startFakeDevice(t, base, s.IssueDeviceToken("dev-a"))
	ctx := testCtx(t)
	d, err := s.WaitDevice(ctx, "dev-a")
	if err != nil {
		t.Fatal(err)
	}
	userTok := login(t, base)
	before, err := DeviceStatus(ctx, base, userTok, "dev-a")
	if err != nil {
		t.Fatal(err)
	}
	dropped := time.Now()
	fd.close()
	<-d.Done()
	var st struct {
		Status    string    `json:"status"`
		UpdatedTS time.Time `json:"updated_ts"`
	}
	status, _, body := httpDo(t, http.MethodGet, base+DeviceConnectMgmtDir+"dev-a", nil, http.Header{"Authorization": {"Bearer " + userTok}})
	if err := json.Unmarshal([]byte(body), &st); err != nil || status != http.StatusOK {
		t.Fatalf("%d %s: %v", status, body, err)
	}
	if st.Status != "disconnected" || st.UpdatedTS.Before(dropped) {
		t.Fatalf("after the drop at %v: %+v (connected status was %+v)", dropped, st, before)
	}
}
