package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/tether-agent/tether/internal/tstest/slowpath"
	"github.com/tether-agent/tether/internal/wire"
)

// slowCase is one path of the slow-link figure.
type slowCase struct {
	rate  int // device→server bytes/s; 0 = unthrottled
	delay time.Duration
}

// slowLinkBench prints, for each path, the keystroke echo of one session
// while another floods (`yes`) through a relay that reads the device's side
// at a set rate, and the share of the link the flood gets. keys is the
// number of keystrokes per path.
func slowLinkBench(bin string, keys int) error {
	srv, err := startServer()
	if err != nil {
		return err
	}
	u, err := url.Parse(srv.url)
	if err != nil {
		return err
	}
	for _, c := range []slowCase{
		{100_000, 0}, {1_000_000, 0}, {0, 0},
		{100_000, 50 * time.Millisecond}, {1_000_000, 50 * time.Millisecond}, {0, 50 * time.Millisecond},
	} {
		if err := slowLinkCase(bin, srv, u.Host, c, keys); err != nil {
			return fmt.Errorf("slow link %s: %w", c.label(), err)
		}
	}
	return nil
}

func (c slowCase) label() string {
	r := "unthrottled"
	switch {
	case c.rate >= 1_000_000:
		r = fmt.Sprintf("%g MB/s", float64(c.rate)/1e6)
	case c.rate > 0:
		r = fmt.Sprintf("%d KB/s", c.rate/1000)
	}
	if c.delay > 0 {
		r += fmt.Sprintf(" +%s each way", c.delay)
	}
	return r
}

func slowLinkCase(bin string, srv *server, target string, sc slowCase, keys int) error {
	p, err := slowpath.Listen(target, slowpath.Options{Rate: sc.rate, Delay: sc.delay})
	if err != nil {
		return err
	}
	defer p.Close()
	d, err := launch(bin, "tetherbench-slow-", "bench-token\n", func(dir string) map[string]interface{} {
		extra := map[string]interface{}{
			"ShellArguments": []string{},
			"ServerURL":      p.URL(),
			"Sessions":       map[string]interface{}{"MaxPerUser": 4, "MaxTotal": 16, "StopGrace": "200ms"},
			"Metrics":        map[string]interface{}{"Listen": "unix:" + filepath.Join(dir, "metrics.sock")},
		}
		if lvl := os.Getenv("TETHERBENCH_LOG"); lvl != "" {
			extra["Log"] = map[string]interface{}{"Level": lvl}
		}
		// TETHERBENCH_LINK, e.g. {"CongestionControl":"cubic"} or
		// {"LatencyTarget":"0s"}, sets Link keys to compare.
		if js := os.Getenv("TETHERBENCH_LINK"); js != "" {
			var l map[string]interface{}
			if err := json.Unmarshal([]byte(js), &l); err == nil {
				extra["Link"] = l
			} else {
				fmt.Fprintln(os.Stderr, "TETHERBENCH_LINK:", err)
			}
		}
		return extra
	})
	if err != nil {
		return err
	}
	var c *devConn
	select {
	case c = <-srv.conns:
	case <-time.After(10 * time.Second):
		d.stop()
		return errors.New("daemon did not connect")
	}
	// The daemon stops before the server side closes, so that it does
	// not redial and leave a connection for the next path to pick up.
	defer func() {
		d.stop()
		c.ws.Close()
		for {
			select {
			case stale := <-srv.conns:
				stale.ws.Close()
			default:
				return
			}
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	b := &bench{c: c, ctx: ctx}
	if err := b.open("quiet", "stty -icanon; "); err != nil {
		return err
	}
	if err := b.open("flood", ""); err != nil {
		return err
	}

	// From here one consumer reads everything, as a browser would: the
	// flood's bytes are counted, the quiet session's echoes handed over.
	var flooded atomic.Int64
	echoes := make(chan []byte, 64)
	go func() {
		for m := range c.in {
			if m.Header.MsgType != wire.ShellData {
				continue
			}
			switch m.Header.SessionID {
			case "flood":
				flooded.Add(int64(len(m.Body)))
			case "quiet":
				select {
				case echoes <- m.Body:
				default:
				}
			}
		}
		close(echoes)
	}()
	if err := b.input("flood", "exec yes\n"); err != nil {
		return err
	}
	// Let the flood fill whatever the path holds before timing.
	time.Sleep(3 * time.Second)
	f0, t0 := flooded.Load(), time.Now()
	rtts := make([]time.Duration, 0, keys)
	for i := 0; i < keys; i++ {
		time.Sleep(200 * time.Millisecond)
		key := []byte{byte('a' + i%26)}
		sent := time.Now()
		if err := b.input("quiet", string(key)); err != nil {
			return err
		}
		deadline := time.NewTimer(60 * time.Second)
	wait:
		for {
			select {
			case body, ok := <-echoes:
				if !ok {
					deadline.Stop()
					return errors.New("device connection closed")
				}
				if bytes.Contains(body, key) {
					break wait
				}
			case <-deadline.C:
				return fmt.Errorf("no echo of key %d within 60 s", i)
			}
		}
		deadline.Stop()
		rtts = append(rtts, time.Since(sent))
	}
	el := time.Since(t0)
	tput := float64(flooded.Load()-f0) / el.Seconds()
	sortDur(rtts)
	share := fmt.Sprintf("flood %.2f MB/s", tput/1e6)
	if sc.rate > 0 {
		share = fmt.Sprintf("flood %.0f %% of the link", 100*tput/float64(sc.rate))
	}
	goal := ""
	if sc.rate == 100_000 {
		verdict := "met"
		if rtts[len(rtts)/2] > 500*time.Millisecond || rtts[len(rtts)*99/100] > time.Second {
			verdict = "missed"
		}
		goal = fmt.Sprintf("; target ≤ 500 ms / ≤ 1 s, flood ≥ 90 %%: %s", verdict)
	}
	row("  "+sc.label(), fmtDur(rtts[len(rtts)/2])+" / "+fmtDur(rtts[len(rtts)*99/100]), share+goal)
	if os.Getenv("TETHERBENCH_HIST") != "" {
		fmt.Fprintln(os.Stderr, sc.label(), rtts)
	}
	return nil
}

// slowLinkRows prints the slow-link figure under its heading.
func slowLinkRows(bin string, keys int) error {
	row(fmt.Sprintf("echo p50 / p99 beside `yes`, slow link (%d keys)", keys), "", "relay reads the device's side at a rate; default socket buffers")
	return slowLinkBench(bin, keys)
}
