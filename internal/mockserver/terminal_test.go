package mockserver

import (
	"errors"
	"strings"
	"testing"

	"github.com/tether-agent/tether/internal/wire"
)

func TestCountUntil(t *testing.T) {
	big := strings.Repeat("0123456789abcdef", 1<<12) // 64 KiB per frame
	tests := []struct {
		name   string
		frames []string
		marker string
		want   int64
		rest   string // what Expect sees next
	}{
		{"marker in one frame", []string{"abcMARKdef"}, "MARK", 7, "def"},
		{"marker split across frames", []string{"abcMA", "R", "Kdef"}, "MARK", 7, "def"},
		{"marker after bulk", []string{big, big, big + "MARK", "tail"}, "MARK", 3*int64(len(big)) + 4, "tail"},
		{"partial markers before the real one", []string{"MAR", "MAMARK", "!"}, "MARK", 9, "!"},
		{"marker first", []string{"MARKx"}, "MARK", 4, "x"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			term, fd := openTestTerminal(t)
			for _, f := range tc.frames {
				if err := fd.send(shellMsg(wire.ShellData, term.SID(), wire.StatusNormal, f)); err != nil {
					t.Fatal(err)
				}
			}
			// The end of the rest, so that Expect has something to wait for.
			if err := fd.send(shellMsg(wire.ShellData, term.SID(), wire.StatusNormal, "|END")); err != nil {
				t.Fatal(err)
			}
			n, err := term.CountUntil(testCtx(t), tc.marker)
			if err != nil || n != tc.want {
				t.Fatalf("CountUntil = %d, %v; want %d", n, err, tc.want)
			}
			if len(term.out) >= len(big) {
				t.Errorf("CountUntil kept %d bytes buffered", len(term.out))
			}
			if rest, err := term.Expect(testCtx(t), "|END"); err != nil || rest != tc.rest+"|END" {
				t.Errorf("after CountUntil, Expect = %q, %v; want %q", rest, err, tc.rest+"|END")
			}
		})
	}

	t.Run("stopped first", func(t *testing.T) {
		term, fd := openTestTerminal(t)
		if err := fd.send(shellMsg(wire.ShellData, term.SID(), wire.StatusNormal, "partial MA")); err != nil {
			t.Fatal(err)
		}
		if err := fd.send(shellMsg(wire.ShellStop, term.SID(), wire.StatusNormal, "")); err != nil {
			t.Fatal(err)
		}
		n, err := term.CountUntil(testCtx(t), "MARK")
		var se *StoppedError
		if !errors.As(err, &se) || n != int64(len("partial MA")) {
			t.Fatalf("CountUntil = %d, %v; want %d and a *StoppedError", n, err, len("partial MA"))
		}
	})
}

// openTestTerminal opens a terminal to a fake device.
func openTestTerminal(t *testing.T) (*Terminal, *fakeDevice) {
	t.Helper()
	s, url := startServer(t, Options{})
	fd := startFakeDevice(t, url, s.IssueDeviceToken("dev-count"))
	if _, err := s.WaitDevice(testCtx(t), "dev-count"); err != nil {
		t.Fatal(err)
	}
	term, err := OpenTerminal(testCtx(t), url, login(t, url), "dev-count", 80, 24)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { term.Close() })
	return term, fd
}
