package itest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
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

// gcCycles counts the collections a daemon run with GODEBUG=gctrace=1
// has reported on stderr so far.
func gcCycles(log string) int {
	return len(gcTraceLine.FindAllStringIndex(log, -1))
}

var gcTraceLine = regexp.MustCompile(`(?m)^gc \d+ @`)

// A 50 MiB download, and a 50 MiB upload, each through a fresh plain
// daemon, make so little garbage that they trigger no collection: chunk
// frames and acks are encoded into reused buffers, chunk bodies decoded
// into reused ones and the messages themselves reused, props of a few
// known keys held without a map, queues, decoders and timers reused (it
// was 1.5 MB per MiB down and 1.4 MB per MiB up, then 40 kB and 216 kB;
// what is left is the websocket library's per-frame reader and writer).
// With no collection, RssAnon grows by what the transfer keeps and no
// more: upstream grows by 5 MB; a fresh daemon's first collection alone
// maps about a megabyte of the runtime's bookkeeping.
func TestFileTransferGarbageBounded(t *testing.T) {
	const (
		size         = 50 << 20
		maxAllocPerM = 32 << 10 // bytes allocated per MiB moved
		maxGrowthKB  = 1000     // peak RssAnon over the fresh daemon's, 1 MB
	)
	for _, dir := range []string{"download", "upload"} {
		t.Run(dir, func(t *testing.T) {
			tmp := ftDir(t)
			e := newEnvWith(t, map[string]interface{}{
				"Log": map[string]interface{}{"Journal": "off", "Level": "warn"},
			}, func(e *env) { e.bin = plainTether(t) }, "GODEBUG=gctrace=1")
			d := e.waitDevice()
			e.sync(d)
			jwt := e.jwt(adminEmail)
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			e.ctx = ctx

			want := sha256.New()
			io.Copy(want, io.LimitReader(&pattern{}, size))
			src := filepath.Join(tmp, "down.bin")
			if dir == "download" {
				f, err := os.Create(src)
				if err != nil {
					t.Fatal(err)
				}
				if _, err := io.Copy(f, io.LimitReader(&pattern{}, size)); err != nil {
					t.Fatal(err)
				}
				f.Close()
			}

			pid := e.daemon.Process.Pid
			// The allocation counter comes from a scrape, which
			// allocates by itself: it is read before the RSS baseline
			// and after the last RSS sample.
			allocs0 := e.metric("go_memstats_alloc_bytes_total")
			time.Sleep(300 * time.Millisecond) // let the scrape's garbage settle
			gc0 := gcCycles(e.log.String())
			base := rssAnonKB(pid)
			s := sampleRSS(pid)
			defer s.close()
			s.take()

			dst := filepath.Join(tmp, "up.bin")
			began := time.Now()
			if dir == "download" {
				h := sha256.New()
				if _, err := mockserver.DownloadFile(e.ctx, e.url, jwt, e.deviceID, src, h); err != nil {
					t.Fatalf("download: %v", err)
				}
				if !bytes.Equal(h.Sum(nil), want.Sum(nil)) {
					t.Fatal("the download differs from the file")
				}
			} else {
				if err := mockserver.UploadFile(e.ctx, e.url, jwt, e.deviceID, dst, "up.bin", io.LimitReader(&pattern{}, size), nil, nil); err != nil {
					t.Fatalf("upload: %v", err)
				}
			}
			peak := s.take()
			took := time.Since(began)
			time.Sleep(100 * time.Millisecond) // a collection's trace line is written at its end
			gcs := gcCycles(e.log.String()) - gc0
			allocs1 := e.metric("go_memstats_alloc_bytes_total")
			if dir == "upload" {
				got, err := os.ReadFile(dst)
				if err != nil {
					t.Fatal(err)
				}
				if sum := sha256.Sum256(got); !bytes.Equal(sum[:], want.Sum(nil)) {
					t.Fatal("the uploaded file differs from what was sent")
				}
			}

			perM := int((allocs1 - allocs0) / (size >> 20))
			t.Logf("%s of 50 MiB in %v: RssAnon %d kB before, peak %d kB (+%d); %d collections (%d before); allocated %d B/MiB",
				dir, took.Round(time.Millisecond), base, peak, peak-base, gcs, gc0, perM)
			if gcs != 0 {
				t.Errorf("the %s ran %d garbage collections, want none", dir, gcs)
			}
			if peak-base > maxGrowthKB {
				t.Errorf("the %s grew RssAnon by %d kB, want at most %d", dir, peak-base, maxGrowthKB)
			}
			if perM > maxAllocPerM {
				t.Errorf("the %s allocated %d bytes per MiB, want at most %d", dir, perM, maxAllocPerM)
			}
		})
	}
}
