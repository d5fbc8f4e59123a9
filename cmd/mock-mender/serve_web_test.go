package main

import (
	"bufio"
	"io"
	"net/http"
	"net/http/cookiejar"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tether-agent/tether/internal/mockserver"
	"github.com/tether-agent/tether/internal/tstest/syncbuf"
)

// serve --login-link prints a second line: a link that logs a browser in
// once and lands on the console page.
func TestServeLoginLink(t *testing.T) {
	bin := buildBinary(t)
	tests := []struct {
		name    string
		email   string
		wantErr string
	}{
		{"known user", mockserver.DefaultUser, ""},
		{"unknown user", "nobody@tether.local", "--login-link: login link: no user"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cmd := exec.Command(bin, "serve", "--listen", "127.0.0.1:0", "--login-link", tc.email)
			stderr := &syncbuf.Buffer{}
			cmd.Stderr = stderr
			out, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			lines := make(chan string, 2)
			go func() {
				r := bufio.NewReader(out)
				for i := 0; i < 2; i++ {
					s, err := r.ReadString('\n')
					if err != nil {
						break
					}
					lines <- strings.TrimSpace(s)
				}
				close(lines)
				_, _ = io.Copy(io.Discard, r)
			}()
			if tc.wantErr != "" {
				err := cmd.Wait()
				if err == nil || !strings.Contains(stderr.String(), tc.wantErr) {
					t.Fatalf("exit %v, stderr %q", err, stderr.String())
				}
				return
			}
			defer stopServe(t, cmd, syscall.SIGTERM)
			var got []string
			timeout := time.After(10 * time.Second)
			for len(got) < 2 {
				select {
				case l, ok := <-lines:
					if !ok {
						t.Fatalf("serve printed only %q", got)
					}
					got = append(got, l)
				case <-timeout:
					t.Fatalf("serve printed only %q", got)
				}
			}
			base, link := got[0], got[1]
			if !strings.HasPrefix(link, base+mockserver.LoginLinkPath+"?code=") {
				t.Fatalf("link %q for base %q", link, base)
			}
			jar, _ := cookiejar.New(nil)
			c := &http.Client{Jar: jar, Transport: &http.Transport{DisableKeepAlives: true}}
			resp, err := c.Get(link)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK || resp.Request.URL.Path != "/" {
				t.Fatalf("link: %d at %s", resp.StatusCode, resp.Request.URL)
			}
			resp, err = c.Get(base + mockserver.DevicesPath)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("device list after the link: %d", resp.StatusCode)
			}
		})
	}
}

// serve --allowed-host adds names to the ones the server answers to; any
// other name is refused (DNS rebinding).
func TestServeAllowedHost(t *testing.T) {
	bin := buildBinary(t)
	cmd, base := startServe(t, bin, "--allowed-host", "mock.example, build-host")
	defer stopServe(t, cmd, syscall.SIGTERM)
	port := base[strings.LastIndex(base, ":")+1:]
	for _, tc := range []struct {
		host string
		want int
	}{
		{"mock.example:" + port, http.StatusOK},
		{"build-host", http.StatusOK},
		{"localhost:" + port, http.StatusOK},
		{"other.example:" + port, http.StatusMisdirectedRequest},
	} {
		req, err := http.NewRequest(http.MethodGet, base+"/", nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Host, req.Close = tc.host, true
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.want {
			t.Errorf("Host %s: %d, want %d", tc.host, resp.StatusCode, tc.want)
		}
	}
}
