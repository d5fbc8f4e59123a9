package itest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tether-agent/tether/internal/mockserver"
)

// rssAnonKB reads RssAnon of /proc/PID/status; -1 once the process is gone.
func rssAnonKB(pid int) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return -1
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "RssAnon:"); ok {
			n, _ := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
			return n
		}
	}
	return -1
}

// rssSampler records the peak RssAnon of a process, sampled every 20 ms:
// VmHWM counts file-backed pages too and cannot be reset between phases.
type rssSampler struct {
	pid  int
	mu   sync.Mutex
	peak int
	stop chan struct{}
	done chan struct{}
}

func sampleRSS(pid int) *rssSampler {
	s := &rssSampler{pid: pid, peak: rssAnonKB(pid), stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		t := time.NewTicker(20 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-s.stop:
				return
			case <-t.C:
			}
			n := rssAnonKB(pid)
			s.mu.Lock()
			s.peak = max(s.peak, n)
			s.mu.Unlock()
		}
	}()
	return s
}

// take returns the peak since the last take and starts the next phase
// from the current reading.
func (s *rssSampler) take() int {
	n := rssAnonKB(s.pid)
	s.mu.Lock()
	defer s.mu.Unlock()
	p := max(s.peak, n)
	s.peak = n
	return p
}

func (s *rssSampler) close() {
	close(s.stop)
	<-s.done
}

// A 50 MiB download and then a 50 MiB upload through a fresh plain
// daemon make little garbage: chunk frames are encoded into reused
// buffers, chunk bodies decoded into reused ones, queues, decoders and
// timers reused, so what a transfer allocates stays far below what it
// moves (it was 1.5 MB per MiB down and 1.4 MB per MiB up; now under
// 0.3 MB). The peak of RssAnon during each, over the fresh daemon's
// figure before the first transfer, is logged: upstream grows by 5 MB;
// about 1.1 MB of what remains is the runtime's metadata for its first
// collection, which a fresh daemon has not run yet.
func TestFileTransferGarbageBounded(t *testing.T) {
	const (
		size         = 50 << 20
		maxAllocPerM = 512 << 10 // bytes allocated per MiB moved, each way
	)
	dir := ftDir(t)
	e := newEnvWith(t, map[string]interface{}{
		"Log": map[string]interface{}{"Journal": "off", "Level": "warn"},
	}, func(e *env) { e.bin = plainTether(t) })
	d := e.waitDevice()
	e.sync(d)
	jwt := e.jwt(adminEmail)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	e.ctx = ctx

	src := filepath.Join(dir, "down.bin")
	f, err := os.Create(src)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(f, io.LimitReader(&pattern{}, size)); err != nil {
		t.Fatal(err)
	}
	f.Close()
	want := sha256.New()
	io.Copy(want, io.LimitReader(&pattern{}, size))

	pid := e.daemon.Process.Pid
	// The allocation counter comes from a scrape, which allocates and
	// grows the heap by itself: it is read before the RSS baseline and
	// after the last RSS sample.
	allocs0 := e.metric("go_memstats_alloc_bytes_total")
	time.Sleep(300 * time.Millisecond) // let the scrape's garbage settle
	base := rssAnonKB(pid)
	s := sampleRSS(pid)
	defer s.close()
	s.take()

	h := sha256.New()
	if _, err := mockserver.DownloadFile(e.ctx, e.url, jwt, e.deviceID, src, h); err != nil {
		t.Fatalf("download: %v", err)
	}
	if !bytes.Equal(h.Sum(nil), want.Sum(nil)) {
		t.Fatal("the download differs from the file")
	}
	down := s.take()
	allocs1 := e.metric("go_memstats_alloc_bytes_total")

	dst := filepath.Join(dir, "up.bin")
	if err := mockserver.UploadFile(e.ctx, e.url, jwt, e.deviceID, dst, "up.bin", io.LimitReader(&pattern{}, size), nil, nil); err != nil {
		t.Fatalf("upload: %v", err)
	}
	up := s.take()
	allocs2 := e.metric("go_memstats_alloc_bytes_total")
	got, err := os.ReadFile(dst)
	if err != nil {
		t.Fatal(err)
	}
	if sum := sha256.Sum256(got); !bytes.Equal(sum[:], want.Sum(nil)) {
		t.Fatal("the uploaded file differs from what was sent")
	}

	perM := func(a, b float64) int { return int((b - a) / (size >> 20)) }
	t.Logf("RssAnon %d kB before; peak %d kB (+%d) during the 50 MiB download, %d kB (+%d) during the upload; allocated %d B/MiB down, %d B/MiB up",
		base, down, down-base, up, up-base, perM(allocs0, allocs1), perM(allocs1, allocs2))
	if n := perM(allocs0, allocs1); n > maxAllocPerM {
		t.Errorf("the download allocated %d bytes per MiB, want at most %d", n, maxAllocPerM)
	}
	if n := perM(allocs1, allocs2); n > maxAllocPerM {
		t.Errorf("the upload allocated %d bytes per MiB, want at most %d", n, maxAllocPerM)
	}
}
