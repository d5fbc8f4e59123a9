package filetransfer

import (
	"os"
	"strings"
	"testing"
)

// The thread that does a file operation carries exactly the account's
// filesystem ids and supplementary groups, ids above 16 bits included
// (on 386 and 32-bit arm only the *32 system calls take them).
func TestIdentityOnItsThread(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("switching identities needs root; CI runs the tests as root")
	}
	tests := []struct {
		name string
		id   Identity
		want map[string]string // /proc/thread-self/status field → value
	}{
		{"nobody without groups", Identity{Name: "nobody", UID: 65534, GID: 65534},
			map[string]string{"Uid": "0\t0\t0\t65534", "Gid": "0\t0\t0\t65534", "Groups": ""}},
		{"ids and groups above 16 bits", Identity{Name: "wide", UID: 100000, GID: 100001, Groups: []uint32{70000, 5, 100002}},
			map[string]string{"Uid": "0\t0\t0\t100000", "Gid": "0\t0\t0\t100001", "Groups": "5 70000 100002"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var status string
			err := tt.id.do(func() error {
				b, err := os.ReadFile("/proc/thread-self/status")
				status = string(b)
				return err
			})
			if err != nil {
				t.Fatal(err)
			}
			for k, want := range tt.want {
				if got := statusField(status, k); got != want {
					t.Errorf("%s: %q, want %q", k, got, want)
				}
			}
			// Every other goroutine keeps root's rights, whatever thread
			// it runs on: the switched thread is never reused.
			for i := 0; i < 20; i++ {
				ch := make(chan string, 1)
				go func() {
					b, _ := os.ReadFile("/proc/thread-self/status")
					ch <- statusField(string(b), "Uid")
				}()
				if got := <-ch; got != "0\t0\t0\t0" {
					t.Fatalf("another goroutine runs with Uid %q", got)
				}
			}
		})
	}
}

func statusField(status, key string) string {
	for _, l := range strings.Split(status, "\n") {
		if v, ok := strings.CutPrefix(l, key+":"); ok {
			return strings.TrimSpace(v)
		}
	}
	return "<missing>"
}
