package session

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/tether-agent/tether/internal/mux"
	"github.com/tether-agent/tether/internal/proto"
	"github.com/tether-agent/tether/internal/tstest/testclock"
	"github.com/tether-agent/tether/internal/wire"
)

// peerSession is an admitted session without a protocol behind it that
// records what the router tells it; its peer answers probes if told to.
type peerSession struct {
	lease proto.Lease

	mu       sync.Mutex
	stopped  string
	detaches []bool
	attached []string
	news     int
	handled  []string // message types
	probes   int
	answer   func() // runs (on its own goroutine) when probed
}

func (s *peerSession) Handle(m *wire.ProtoMsg) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.handled = append(s.handled, m.Header.MsgType)
}
func (s *peerSession) Stop(reason, _ string, _ time.Duration) {
	s.mu.Lock()
	first := s.stopped == ""
	if first {
		s.stopped = reason
	}
	s.mu.Unlock()
	if first {
		s.lease.Release()
		s.lease.Done()
	}
}
func (s *peerSession) Supervise(time.Duration) (time.Duration, bool) { return 0, false }
func (s *peerSession) Detach(discard bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.detaches = append(s.detaches, discard)
}
func (s *peerSession) Attach(sid string, m *wire.ProtoMsg) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.attached = append(s.attached, sid)
	if m != nil {
		s.news++
	}
}
func (s *peerSession) Probe() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.probes++
	if s.answer != nil {
		go s.answer()
	}
}

func (s *peerSession) get(f func()) { s.mu.Lock(); defer s.mu.Unlock(); f() }

// fakeTerminal is the Admitted protocol of these tests: a "new" admits a
// peerSession through the table.
type fakeTerminal struct {
	mu      sync.Mutex
	results map[string]chan admitResult
	made    map[string]*peerSession
	other   []string // types of messages for unknown sids
}

type admitResult struct {
	s          proto.AdmittedSession
	reattached bool
	err        error
}

func newFakeTerminal() *fakeTerminal {
	return &fakeTerminal{results: map[string]chan admitResult{}, made: map[string]*peerSession{}}
}

func (f *fakeTerminal) Number() uint16 { return wire.ProtoShell }
func (f *fakeTerminal) Handle(t proto.Table, m *wire.ProtoMsg) {
	sid := m.Header.SessionID
	if m.Header.MsgType != wire.ShellNew {
		f.mu.Lock()
		f.other = append(f.other, m.Header.MsgType)
		f.mu.Unlock()
		return
	}
	ch := make(chan admitResult, 1)
	f.mu.Lock()
	f.results[sid] = ch
	f.mu.Unlock()
	t.Admit(sid, m.Header.StringProp(wire.PropUserID), m, func(l proto.Lease) proto.AdmittedSession {
		s := &peerSession{lease: l}
		f.made[sid] = s // under the table's lock, before done
		return s
	}, func(s proto.AdmittedSession, reattached bool, err error) { ch <- admitResult{s, reattached, err} })
}

// open sends a "new" for sid of user and waits for the table's decision.
func (f *fakeTerminal) open(t *testing.T, r *Router, sid, user string, after ...*wire.ProtoMsg) admitResult {
	t.Helper()
	r.HandleMessage(&wire.ProtoMsg{Header: wire.Header{Proto: wire.ProtoShell, MsgType: wire.ShellNew, SessionID: sid,
		Properties: map[string]interface{}{wire.PropUserID: user}}})
	for _, m := range after {
		r.HandleMessage(m)
	}
	f.mu.Lock()
	ch := f.results[sid]
	f.mu.Unlock()
	select {
	case res := <-ch:
		return res
	case <-time.After(10 * time.Second):
		t.Fatalf("no decision on %s", sid)
	}
	return admitResult{}
}

func shellMsg(sid, typ string) *wire.ProtoMsg {
	return &wire.ProtoMsg{Header: wire.Header{Proto: wire.ProtoShell, MsgType: typ, SessionID: sid,
		Properties: map[string]interface{}{wire.PropUserID: "u"}}}
}

func reattachRouter(opts Options) (*Router, *fakeTerminal, *mux.Mux) {
	f := newFakeTerminal()
	m := mux.New(opts.Now)
	opts.Terminal = f
	if opts.MaxPerUser == 0 {
		opts.MaxPerUser = 1
	}
	if opts.MaxTotal == 0 {
		opts.MaxTotal = 4
	}
	if opts.ProbeGrace == 0 {
		opts.ProbeGrace = 50 * time.Millisecond
	}
	return New(opts, m), f, m
}

func sids(r *Router) []string {
	var out []string
	for _, s := range r.Sessions() {
		out = append(out, s.SessionID)
	}
	return out
}

// After a link drop, every shell is detached (its output still sent: a
// lenient server may have kept the user); the same user's next "new" gets
// it back under the new sid, another user gets a fresh one.
func TestLinkDropThenReattach(t *testing.T) {
	r, f, _ := reattachRouter(Options{DetachedTimeout: time.Minute, MaxTotal: 4})
	first := f.open(t, r, "a", "u")
	if first.err != nil || first.reattached {
		t.Fatalf("first new: %+v", first)
	}
	s := first.s.(*peerSession)
	r.LinkDown()
	s.get(func() {
		if len(s.detaches) != 1 || s.detaches[0] {
			t.Fatalf("detaches %v, want one that keeps sending", s.detaches)
		}
	})

	other := f.open(t, r, "x", "v")
	if other.err != nil || other.reattached || other.s == first.s {
		t.Fatalf("another user's new: %+v", other)
	}

	back := f.open(t, r, "b", "u")
	if back.err != nil || !back.reattached || back.s != first.s {
		t.Fatalf("same user's new: %+v, want the detached session", back)
	}
	s.get(func() {
		if len(s.attached) != 1 || s.attached[0] != "b" || s.news != 1 {
			t.Fatalf("attached %v (news %d), want b once", s.attached, s.news)
		}
	})
	// Re-keyed: the old sid is gone, the new one reaches the session.
	got := sids(r)
	if len(got) != 2 || (got[0] != "b" && got[1] != "b") || got[0] == "a" || got[1] == "a" {
		t.Fatalf("table %v, want b and x", got)
	}
	r.HandleMessage(shellMsg("b", wire.ShellData))
	r.HandleMessage(shellMsg("a", wire.ShellData))
	s.get(func() {
		if len(s.handled) != 1 {
			t.Fatalf("session handled %v, want only the message for b", s.handled)
		}
	})
	for _, info := range r.Sessions() {
		if info.Detached {
			t.Fatalf("%s still detached", info.SessionID)
		}
	}
}

// A "new" that the per-user limit would refuse first probes the user's
// session: a peer that answers keeps it (and the new is refused); a
// silent one is deemed gone, and its session handed over. Messages for
// the new sid that arrive during the probe reach the session afterwards,
// in order.
func TestProbeBeforeRefusing(t *testing.T) {
	tests := []struct {
		name    string
		answers bool
	}{
		{"peer answers", true},
		{"peer silent", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, f, _ := reattachRouter(Options{DetachedTimeout: time.Minute, ProbeGrace: time.Second})
			first := f.open(t, r, "a", "u")
			s := first.s.(*peerSession)
			if tt.answers {
				s.get(func() { s.answer = func() { r.HandleMessage(shellMsg("a", wire.ShellPong)) } })
			}
			start := time.Now()
			res := f.open(t, r, "b", "u", shellMsg("b", wire.ShellResize), shellMsg("b", wire.ShellData))
			took := time.Since(start)
			s.get(func() {
				if s.probes != 1 {
					t.Fatalf("%d probes, want 1", s.probes)
				}
			})
			if tt.answers {
				if !errors.Is(res.err, proto.ErrUserLimit) {
					t.Fatalf("new: %+v, want refused", res)
				}
				if took > 900*time.Millisecond {
					t.Fatalf("an answered probe held the new for %v", took)
				}
				// The refusal is told first, then the held messages are
				// delivered: wait for them.
				var other []string
				for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(time.Millisecond) {
					f.mu.Lock()
					other = append(other[:0], f.other...)
					f.mu.Unlock()
					if len(other) >= 2 || time.Now().After(deadline) {
						break
					}
				}
				if len(other) != 2 {
					t.Fatalf("messages for the refused sid went to %v, want the terminal's unknown-sid answer", other)
				}
				return
			}
			if res.err != nil || !res.reattached || res.s != first.s {
				t.Fatalf("new: %+v, want the silent session handed over", res)
			}
			if took < time.Second {
				t.Fatalf("decided after %v, before the grace", took)
			}
			// The decision is told first, then the held messages are
			// delivered: wait for them.
			deadline := time.Now().Add(5 * time.Second)
			for {
				n := 0
				s.get(func() { n = len(s.handled) })
				if n >= 2 || time.Now().After(deadline) {
					break
				}
				time.Sleep(time.Millisecond)
			}
			s.get(func() {
				if len(s.detaches) != 1 || !s.detaches[0] {
					t.Fatalf("detaches %v, want one that discards", s.detaches)
				}
				if len(s.handled) != 2 || s.handled[0] != wire.ShellResize || s.handled[1] != wire.ShellData {
					t.Fatalf("held messages %v, want resize then shell", s.handled)
				}
			})
		})
	}
}

// With Sessions.DetachedTimeout 0 nothing is kept: a session found gone by
// the probe ends, and the new one takes its place (as orphans did).
func TestProbeWithoutKeeping(t *testing.T) {
	r, f, _ := reattachRouter(Options{})
	first := f.open(t, r, "a", "u")
	res := f.open(t, r, "b", "u")
	if res.err != nil || res.reattached {
		t.Fatalf("new: %+v, want a fresh session", res)
	}
	s := first.s.(*peerSession)
	s.get(func() {
		if s.stopped != proto.ReasonEvicted {
			t.Fatalf("silent session stopped for %q, want evicted", s.stopped)
		}
	})
}

// A detached session ends after the detached timeout of link-up time (its
// user cannot come back while the link is down); its own peer answering
// before that gives it back its place.
func TestDetachedTimeout(t *testing.T) {
	for _, answered := range []bool{false, true} {
		c := testclock.New(time.Unix(0, 0))
		r, f, m := reattachRouter(Options{DetachedTimeout: time.Minute, ProbeGrace: time.Hour, Now: c.Now})
		s := f.open(t, r, "a", "u").s.(*peerSession)
		m.Up(nil)
		r.LinkDown()
		m.Down()
		c.Add(time.Hour)
		if next := r.sweep(); next != 0 {
			t.Fatalf("next due in %v while the link is down, want nothing", next)
		}
		s.get(func() {
			if s.stopped != "" {
				t.Fatalf("ended for %q while the link was down", s.stopped)
			}
		})
		m.Up(nil)
		if answered {
			r.HandleMessage(shellMsg("a", wire.ShellPong))
		}
		c.Add(59 * time.Second)
		if next := r.sweep(); !answered && next != time.Second {
			t.Fatalf("next due in %v, want the 1 s left", next)
		}
		c.Add(time.Second)
		r.sweep()
		want := proto.ReasonDetachedExpired
		if answered {
			want = ""
		}
		s.get(func() {
			if s.stopped != want {
				t.Fatalf("answered=%v: stopped %q, want %q", answered, s.stopped, want)
			}
			if answered && (len(s.attached) != 1 || s.attached[0] != "a" || s.news != 0) {
				t.Fatalf("attached %v, want the same sid resumed", s.attached)
			}
		})
	}
}

// After the reconnect, a session detached by the drop is probed once; no
// answer within the grace and its output is discarded from then on.
func TestLinkUpProbesDetached(t *testing.T) {
	c := testclock.New(time.Unix(0, 0))
	r, f, m := reattachRouter(Options{DetachedTimeout: time.Minute, ProbeGrace: 2 * time.Second, Now: c.Now})
	s := f.open(t, r, "a", "u").s.(*peerSession)
	r.LinkDown()
	r.sweep()
	s.get(func() {
		if s.probes != 0 {
			t.Fatal("probed while the link is down")
		}
	})
	m.Up(nil)
	if next := r.sweep(); next != 2*time.Second {
		t.Fatalf("next due in %v, want the grace", next)
	}
	c.Add(2 * time.Second)
	r.sweep()
	s.get(func() {
		if s.probes != 1 || len(s.detaches) != 2 || s.detaches[0] || !s.detaches[1] {
			t.Fatalf("probes %d, detaches %v; want one probe, then discard", s.probes, s.detaches)
		}
	})
}

// A flood of "new" for a user whose terminal stays silent holds at most
// pendingMax admissions (a goroutine each) waiting for the probe; the rest
// are decided at once, and every one gets its answer.
func TestPendingAdmissionsBounded(t *testing.T) {
	r, f, _ := reattachRouter(Options{DetachedTimeout: time.Minute, ProbeGrace: time.Second})
	f.open(t, r, "a", "u")
	const flood = 200
	for i := range flood {
		r.HandleMessage(&wire.ProtoMsg{Header: wire.Header{Proto: wire.ProtoShell, MsgType: wire.ShellNew,
			SessionID: fmt.Sprintf("flood-%d", i), Properties: map[string]interface{}{wire.PropUserID: "u"}}})
	}
	r.mu.Lock()
	pending := len(r.pending)
	r.mu.Unlock()
	if pending > 16 { // pendingMax, written out so that the test pins it
		t.Fatalf("%d admissions wait for a probe, want at most 16", pending)
	}
	for i := range flood {
		f.mu.Lock()
		ch := f.results[fmt.Sprintf("flood-%d", i)]
		f.mu.Unlock()
		select {
		case <-ch:
		case <-time.After(10 * time.Second):
			t.Fatalf("no decision on flood-%d", i)
		}
	}
}
