package itest

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tether-agent/tether/internal/mockserver"
	"github.com/tether-agent/tether/internal/tstest/dbustest"
	"github.com/tether-agent/tether/internal/wire"
)

// A server that floods sid-less Mender client commands, the way it sends
// real ones, buys neither memory nor goroutines nor journal: requests join
// the pending answer of their command (PROTOCOL.md 2.8).
func TestMenderClientFlood(t *testing.T) {
	const (
		n       = 100_000
		limitKB = 64 << 10
		maxLog  = 8 << 10
		maxGo   = 20 // goroutines more than before the flood
	)
	dir := t.TempDir()
	release := filepath.Join(dir, "release")
	slow := fakeMender(t, `while [ ! -e `+release+` ]; do sleep 0.05; done`)
	absent := []string{filepath.Join(dir, "absent-1"), filepath.Join(dir, "absent-2")}
	tests := []struct {
		name     string
		binaries []string
		// stall: the server reads nothing from the device during the
		// flood, so no answer can leave.
		stall bool
	}{
		{"while the client command runs", []string{slow}, false},
		{"no client binary", absent, false},
		{"no client binary, the server reads nothing", absent, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_ = os.Remove(release)
			var p *proxy
			e := newEnvWith(t, map[string]interface{}{
				"MenderClient": map[string]interface{}{"Binaries": tt.binaries, "Timeout": "1m"},
				"Link":         map[string]interface{}{"WriteTimeout": "90s", "ReadTimeout": "120s"},
			}, func(e *env) {
				e.bin = plainTether(t)
				behindProxy(t, &p, 0)(e)
			})
			d := e.waitDevice()
			e.sync(d)
			pid := e.daemon.Process.Pid
			g0, hwm0, log0 := e.goroutines(), procStatusKB(t, pid, "VmHWM"), len(e.log.String())
			// As the server sends them: no sid, a user id.
			f := frame(t, int(wire.ProtoMenderClient), "check-update", "", map[string]interface{}{
				wire.PropUserID: mockserver.UserID(adminEmail)}, nil)
			if tt.stall {
				p.Stall()
			}
			for i := 0; i < n; i++ {
				e.sendRaw(d, f)
			}
			if tt.stall {
				// Nothing comes back to sync on: give the daemon time to
				// take what is still in the socket buffers.
				time.Sleep(3 * time.Second)
			} else {
				e.sync(d)
			}
			g1, hwm1, rss := e.goroutines(), procStatusKB(t, pid, "VmHWM"), procStatusKB(t, pid, "VmRSS")
			if tt.stall {
				p.Resume()
				e.sync(d)
			}
			grown := len(e.log.String()) - log0
			t.Logf("%d requests of %d bytes: high-water %d kB before, %d kB after; resident %d kB; goroutines %d before, %d after; log grew by %d bytes",
				n, len(f), hwm0, hwm1, rss, g0, g1, grown)
			if hwm1 > limitKB {
				t.Errorf("daemon high-water mark %d kB, want under %d kB", hwm1, limitKB)
			}
			if g1-g0 > maxGo {
				t.Errorf("goroutines %d before the flood, %d after", g0, g1)
			}
			if grown > maxLog {
				t.Errorf("log grew by %d bytes, want at most %d; the end of it:\n%s", grown, maxLog, tail(e.log.String(), 2000))
			}
			if err := os.WriteFile(release, nil, 0o600); err != nil {
				t.Fatal(err)
			}
			eventually(t, 60*time.Second, "the goroutines of the answers gone", func() bool { return e.goroutines() <= g0+2 })
			// Still serving, and the command still answers.
			e.run(e.open(adminEmail), "echo alive")
			r := e.raw()
			st, body := r.mcReply("check-update")
			if want := int64(1); len(tt.binaries) == 2 {
				want = 2
				if st != want || !strings.HasPrefix(body, "Cannot find Mender client binary") {
					t.Fatalf("check-update after the flood: status %d %q", st, body)
				}
			} else if st != want {
				t.Fatalf("check-update after the flood: status %d %q", st, body)
			}
		})
	}
}

// The Mender client runs as root with an environment of its own: PATH and
// the daemon's TZ and LANG, not the daemon's token, NOTIFY_SOCKET or
// anything else its parent set.
func TestMenderClientEnvironment(t *testing.T) {
	sock := filepath.Join(dbustest.ShortTempDir(t), "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	dump := filepath.Join(t.TempDir(), "env")
	bin := fakeMender(t, `tr '\0' '\n' < /proc/$$/environ > `+dump+`.tmp && mv `+dump+`.tmp `+dump)
	e := newEnv(t, mcConfig(bin, "10s"), "NOTIFY_SOCKET="+sock, "TETHER_AUTH_TOKEN=secret-token-of-the-daemon",
		"TZ=Europe/Oslo", "LANG=C.UTF-8", "LD_PRELOAD=", "GOTRACEBACK=all")
	e.waitDevice()
	if err := mockserver.SendMenderCommand(e.ctx, e.url, e.jwt(adminEmail), e.deviceID, mockserver.CommandCheckUpdate); err != nil {
		t.Fatal(err)
	}
	var got []byte
	eventually(t, 10*time.Second, "the client command ran", func() bool {
		got, err = os.ReadFile(dump)
		return err == nil
	})
	want := "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\nTZ=Europe/Oslo\nLANG=C.UTF-8\n"
	if string(got) != want {
		t.Fatalf("the client command's environment:\n%s\nwant:\n%s", got, want)
	}
}
