package mockserver

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"embed"
	"encoding/hex"
	"fmt"
	"html/template"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/tether-agent/tether/internal/logging"
)

// Paths of the web console and of the session calls it makes.
const (
	ConsolePath   = "/"
	ConsoleAssets = "/ui/"
	// LoginLinkPath takes a one-time code from LoginLink and logs the
	// browser in.
	LoginLinkPath = "/ui/login"
	LogoutPath    = "/api/management/v1/useradm/auth/logout"
	// JWTCookie carries the user JWT of a browser session, as in the
	// Mender UI.
	JWTCookie = "JWT"
	// LoginLinkLifetime is how long a one-time login link stays valid.
	LoginLinkLifetime = 15 * time.Minute
)

// The bundle is built from web/src by `make web` (esbuild); a test checks
// that it matches its sources.
//
//go:embed web/index.html web/dist/console.js web/dist/console.css
var consoleFiles embed.FS

var consoleIndex = template.Must(template.ParseFS(consoleFiles, "web/index.html"))

// consoleAsset is a file of the bundle with its validator.
type consoleAsset struct {
	body        []byte
	contentType string
	etag        string
}

// console is the web console's state: its files and the one-time login
// codes.
type console struct {
	assets map[string]consoleAsset

	mu    sync.Mutex
	codes map[string]loginCode
}

type loginCode struct {
	email   string
	expires time.Time
}

func newConsole() *console {
	c := &console{assets: make(map[string]consoleAsset), codes: make(map[string]loginCode)}
	for name, typ := range map[string]string{
		"console.js":  "text/javascript; charset=utf-8",
		"console.css": "text/css; charset=utf-8",
	} {
		b, err := consoleFiles.ReadFile("web/dist/" + name)
		if err != nil {
			// The files are embedded at build time: a missing one is a
			// broken build, not a runtime condition.
			panic(fmt.Sprintf("console bundle: %v", err))
		}
		sum := sha256.Sum256(b)
		c.assets[name] = consoleAsset{body: b, contentType: typ, etag: `"` + hex.EncodeToString(sum[:8]) + `"`}
	}
	return c
}

func (s *Server) registerConsole(mux *http.ServeMux) {
	mux.HandleFunc("GET "+ConsolePath+"{$}", s.handleConsoleIndex)
	mux.HandleFunc("GET "+ConsoleAssets+"{name}", s.handleConsoleAsset)
	mux.HandleFunc("GET "+LoginLinkPath, s.handleLoginLink)
	mux.HandleFunc(LogoutPath, s.handleLogout)
}

// consoleHeaders keep the page to its own origin.
func consoleHeaders(w http.ResponseWriter) {
	h := w.Header()
	// xterm.js writes <style> elements of its own, hence 'unsafe-inline'
	// for styles only.
	h.Set("Content-Security-Policy", "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
}

func (s *Server) handleConsoleIndex(w http.ResponseWriter, _ *http.Request) {
	// The demo user's e-mail is filled in, never a password: whoever
	// loads the page must know it, or come through a one-time login link
	// (LoginLink, printed by `make demo`), which logs in by itself.
	var demo struct{ Email string }
	if _, ok := s.users[DefaultUser]; ok {
		demo.Email = DefaultUser
	}
	var buf bytes.Buffer
	if err := consoleIndex.Execute(&buf, demo); err != nil {
		s.log.Error("render console page", "err", err)
		writeError(w, http.StatusInternalServerError, "cannot render the console page")
		return
	}
	consoleHeaders(w)
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	_, _ = w.Write(buf.Bytes())
}

func (s *Server) handleConsoleAsset(w http.ResponseWriter, r *http.Request) {
	a, ok := s.console.assets[r.PathValue("name")]
	if !ok {
		writeError(w, http.StatusNotFound, "not found: "+r.URL.Path)
		return
	}
	consoleHeaders(w)
	w.Header().Set("Content-Type", a.contentType)
	w.Header().Set("Cache-Control", "no-cache")
	w.Header().Set("ETag", a.etag)
	http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(a.body))
}

// setJWTCookie hands a browser its session. HttpOnly keeps the token away
// from scripts; SameSite=Strict keeps other sites from riding on it.
func (s *Server) setJWTCookie(w http.ResponseWriter, r *http.Request, tok string) {
	http.SetCookie(w, &http.Cookie{
		Name:     JWTCookie,
		Value:    tok,
		Path:     "/",
		MaxAge:   int(s.opts.TokenLifetime / time.Second),
		HttpOnly: true,
		Secure:   r.TLS != nil,
		SameSite: http.SameSiteStrictMode,
	})
}

// handleLogout ends the session's token on the server, not only in the
// browser: a copy of it (taken before, or still in another tab) is
// refused from now on.
func (s *Server) handleLogout(w http.ResponseWriter, r *http.Request) {
	if !allowMethod(w, r, http.MethodPost) {
		return
	}
	if tok, err := bearerToken(r); err == nil {
		if c, err := verifyToken(s.key, tok, time.Now()); err == nil && c.User {
			s.logOut(c)
			s.log.Info("user logged out", "token_sha256", tokenFingerprint(tok))
		}
	}
	http.SetCookie(w, &http.Cookie{Name: JWTCookie, Value: "", Path: "/", MaxAge: -1,
		HttpOnly: true, Secure: r.TLS != nil, SameSite: http.SameSiteStrictMode})
	w.WriteHeader(http.StatusNoContent)
}

// LoginLink returns the path and query of a link that logs a browser in as
// email once, within LoginLinkLifetime; append it to the base URL.
func (s *Server) LoginLink(email string) (string, error) {
	if _, ok := s.users[email]; !ok {
		return "", fmt.Errorf("login link: no user %q", email)
	}
	var b [24]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("login link: %w", err)
	}
	code := hex.EncodeToString(b[:])
	now := time.Now()
	s.console.mu.Lock()
	for c, lc := range s.console.codes {
		if now.After(lc.expires) {
			delete(s.console.codes, c)
		}
	}
	s.console.codes[code] = loginCode{email: email, expires: now.Add(LoginLinkLifetime)}
	s.console.mu.Unlock()
	return LoginLinkPath + "?code=" + url.QueryEscape(code), nil
}

func (s *Server) handleLoginLink(w http.ResponseWriter, r *http.Request) {
	code := r.URL.Query().Get("code")
	var email string
	s.console.mu.Lock()
	for c, lc := range s.console.codes {
		// Compared in constant time; the table holds a handful of codes.
		if subtle.ConstantTimeCompare([]byte(c), []byte(code)) == 1 {
			delete(s.console.codes, c)
			if time.Now().Before(lc.expires) {
				email = lc.email
			}
			break
		}
	}
	s.console.mu.Unlock()
	if email == "" {
		s.log.Info("login link refused: unknown, used or expired code")
		consoleHeaders(w)
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.WriteHeader(http.StatusUnauthorized)
		fmt.Fprintln(w, "This login link is unknown, used or expired. Log in with e-mail and password at / instead.")
		return
	}
	s.mu.Lock()
	tok := s.issueLocked(UserID(email), false)
	s.mu.Unlock()
	s.log.Info("user logged in with a login link", "email", email, "token_sha256", tokenFingerprint(tok))
	s.setJWTCookie(w, r, tok)
	http.Redirect(w, r, ConsolePath, http.StatusSeeOther)
}

// logOut ends a user token until its expiry.
func (s *Server) logOut(c claims) {
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	for jti, exp := range s.loggedOut {
		if now.After(exp) {
			delete(s.loggedOut, jti)
		}
	}
	s.loggedOut[c.ID] = time.Unix(c.ExpiresAt, 0)
}

func (s *Server) isLoggedOut(jti string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.loggedOut[jti]
	return ok
}

// allowedHosts normalizes the extra host names of Options.AllowedHosts.
func allowedHosts(names []string) map[string]bool {
	m := map[string]bool{"localhost": true}
	for _, n := range names {
		if n = normalHost(n); n != "" {
			m[n] = true
		}
	}
	return m
}

// normalHost is the name of a Host header or an allowed name without its
// port and brackets, lower case, without a trailing dot.
func normalHost(h string) string {
	if name, _, err := net.SplitHostPort(h); err == nil {
		h = name
	}
	h = strings.TrimSuffix(strings.TrimPrefix(h, "["), "]")
	return strings.TrimSuffix(strings.ToLower(h), ".")
}

// hostAllowed pins the names the server answers to. DNS rebinding gives
// an attacker's page the server's address under the attacker's name, and
// with it the page's own origin: the browser then sends that name as
// Host, and nothing else tells the request apart. An IP literal or
// localhost cannot be an attacker's name; other names must be given. The
// port is not checked: only the name can be rebound, and a forwarded or
// mapped port is still this server.
func (s *Server) hostAllowed(host string) bool {
	if host == "" {
		return true // HTTP/1.0 without Host: no browser sends that
	}
	h := normalHost(host)
	if _, err := netip.ParseAddr(h); err == nil {
		return true
	}
	return s.hosts[h]
}

// sameOrigin reports whether a request's Origin is the server itself as
// the request names it.
func sameOrigin(origin string, r *http.Request) bool {
	u, err := url.Parse(origin)
	return err == nil && u.Host != "" && strings.EqualFold(u.Host, r.Host)
}

// guard refuses, before any handler runs, a request that names another
// host (421) and a browser request from another origin (403). The second
// covers every call a page can make with the session cookie, REST as well
// as websockets; programs (devices, mender-cli, the Go client) send no
// Origin.
func (s *Server) guard(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !s.hostAllowed(r.Host) {
			s.log.Warn("request for a host name this server does not serve refused", "host", logging.Clip(r.Host), "path", logging.Clip(r.URL.Path))
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			w.WriteHeader(http.StatusMisdirectedRequest)
			fmt.Fprintf(w, "421 Misdirected Request: this mock server does not answer to the host name %q.\n"+
				"It answers to IP addresses, localhost and the names given with --allowed-host; a name it does not\n"+
				"know may be a web page pointing its own name at this server (DNS rebinding).\n", logging.Clip(normalHost(r.Host)))
			return
		}
		if origin := r.Header.Get("Origin"); origin != "" && !sameOrigin(origin, r) {
			s.log.Warn("request from another origin refused", "origin", logging.Clip(origin), "host", logging.Clip(r.Host), "path", logging.Clip(r.URL.Path))
			writeError(w, http.StatusForbidden, "Forbidden: a request from the page of another origin ("+logging.Clip(origin)+")")
			return
		}
		// A browser sends no Origin on a no-cors GET (an <img>, a fetch
		// in no-cors mode), and SameSite=Strict still sends the cookie
		// from another port of the same host (the same site). Its
		// Sec-Fetch-Site says where the request comes from; navigations
		// (a link, the address bar) stay allowed.
		if site := r.Header.Get("Sec-Fetch-Site"); (site == "cross-site" || site == "same-site") && r.Header.Get("Sec-Fetch-Mode") != "navigate" {
			s.log.Warn("request from another site's page refused", "sec_fetch_site", site, "host", logging.Clip(r.Host), "path", logging.Clip(r.URL.Path))
			writeError(w, http.StatusForbidden, "Forbidden: a request from the page of another site")
			return
		}
		next.ServeHTTP(w, r)
	})
}

// checkOrigin admits websocket upgrades from pages of this server only.
// Programs (devices, mender-cli, the Go client) send no Origin and are
// let through; a browser always sends one, so another site's page cannot
// open a terminal with the user's cookie.
func (s *Server) checkOrigin(r *http.Request) bool {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return true
	}
	u, err := url.Parse(origin)
	if err == nil && u.Host != "" && strings.EqualFold(u.Host, r.Host) {
		return true
	}
	s.log.Warn("websocket upgrade from another origin refused", "origin", origin, "host", r.Host, "path", r.URL.Path)
	return false
}
