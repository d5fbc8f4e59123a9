package session

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/tether-agent/tether/internal/proto"
	"github.com/tether-agent/tether/internal/tstest/testclock"
)

// handing is a peerSession that can be handed over.
type handing struct{ peerSession }

func (s *handing) HandOver() any {
	s.lease.Done()
	return "state"
}

// A session from a previous run comes back detached, its clocks going on
// from the record: the detached timeout with what was left of it, the
// idle timeout likewise, the absolute one from its creation.
func TestRestoreClocks(t *testing.T) {
	tests := []struct {
		name     string
		restored func(now time.Time) proto.Restored
		after    time.Duration
		want     string
	}{
		{"detached left", func(now time.Time) proto.Restored {
			return proto.Restored{Created: now, DetachedLeft: 20 * time.Second}
		}, 20 * time.Second, proto.ReasonDetachedExpired},
		{"idle left", func(now time.Time) proto.Restored {
			return proto.Restored{Created: now, IdleLeft: 30 * time.Second}
		}, 30 * time.Second, proto.ReasonIdleExpired},
		{"absolute from creation", func(now time.Time) proto.Restored {
			return proto.Restored{Created: now.Add(-59 * time.Minute)}
		}, time.Minute, proto.ReasonAbsoluteExpired},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := testclock.New(time.Unix(1000, 0))
			r, _, m := reattachRouter(Options{DetachedTimeout: 2 * time.Minute, IdleTimeout: 3 * time.Minute,
				AbsoluteTimeout: time.Hour, Now: c.Now})
			m.Up(nil)
			rs := tt.restored(c.Now())
			rs.SessionID, rs.UserID = "old", "u"
			var s *peerSession
			if err := r.Restore(rs, func(l proto.Lease) proto.AdmittedSession { s = &peerSession{lease: l}; return s }); err != nil {
				t.Fatal(err)
			}
			if got := r.Sessions(); len(got) != 1 || !got[0].Detached || got[0].UserID != "u" {
				t.Fatalf("sessions %+v, want one detached of u", got)
			}
			s.get(func() {
				if len(s.detaches) != 1 || !s.detaches[0] {
					t.Fatalf("detaches %v, want one that discards", s.detaches)
				}
			})
			if next := r.sweep(); next != tt.after {
				t.Fatalf("next due in %v, want %v", next, tt.after)
			}
			c.Add(tt.after - time.Millisecond)
			r.sweep()
			s.get(func() {
				if s.stopped != "" {
					t.Fatalf("stopped early: %s", s.stopped)
				}
			})
			c.Add(time.Millisecond)
			r.sweep()
			s.get(func() {
				if s.stopped != tt.want {
					t.Fatalf("stopped %q, want %q", s.stopped, tt.want)
				}
			})
		})
	}
}

// The restored session goes to its own user's next terminal, never to
// another user's.
func TestRestoredGoesToItsUser(t *testing.T) {
	r, f, m := reattachRouter(Options{DetachedTimeout: time.Minute, MaxTotal: 4})
	m.Up(nil)
	var s *peerSession
	if err := r.Restore(proto.Restored{SessionID: "old", UserID: "alice", Created: time.Now()},
		func(l proto.Lease) proto.AdmittedSession { s = &peerSession{lease: l}; return s }); err != nil {
		t.Fatal(err)
	}
	if res := f.open(t, r, "b1", "bob"); res.err != nil || res.reattached {
		t.Fatalf("bob's terminal: %+v, want a fresh shell", res)
	}
	res := f.open(t, r, "a1", "alice")
	if res.err != nil || !res.reattached || res.s != proto.AdmittedSession(s) {
		t.Fatalf("alice's terminal: %+v, want the restored session", res)
	}
	if err := r.Restore(proto.Restored{SessionID: "a1", UserID: "alice"}, func(l proto.Lease) proto.AdmittedSession {
		return &peerSession{lease: l}
	}); !errors.Is(err, proto.ErrExists) {
		t.Fatalf("restoring over a live sid: %v", err)
	}
}

// HandOver hands every session that can go on over with what is left of
// its clocks, and stops the others.
func TestHandOverClocks(t *testing.T) {
	c := testclock.New(time.Unix(1000, 0))
	r, _, m := reattachRouter(Options{DetachedTimeout: 2 * time.Minute, IdleTimeout: 3 * time.Minute,
		AbsoluteTimeout: time.Hour, Now: c.Now})
	m.Up(nil)
	var kept *handing
	var plain *peerSession
	if err := r.Restore(proto.Restored{SessionID: "k", UserID: "u", Created: c.Now(), DetachedLeft: time.Minute},
		func(l proto.Lease) proto.AdmittedSession { kept = &handing{peerSession{lease: l}}; return kept }); err != nil {
		t.Fatal(err)
	}
	if err := r.Restore(proto.Restored{SessionID: "p", UserID: "v", Created: c.Now()},
		func(l proto.Lease) proto.AdmittedSession { plain = &peerSession{lease: l}; return plain }); err != nil {
		t.Fatal(err)
	}
	c.Add(10 * time.Second)
	hs := r.HandOver(context.Background(), time.Millisecond)
	if len(hs) != 1 {
		t.Fatalf("handed over %+v, want one", hs)
	}
	h := hs[0]
	if h.SessionID != "k" || h.UserID != "u" || !h.Detached || h.State == nil {
		t.Fatalf("handed over %+v", h)
	}
	if h.IdleLeft != 3*time.Minute-10*time.Second || h.AbsoluteLeft != time.Hour-10*time.Second || h.DetachedLeft != 50*time.Second {
		t.Fatalf("clocks idle %v absolute %v detached %v", h.IdleLeft, h.AbsoluteLeft, h.DetachedLeft)
	}
	plain.get(func() {
		if plain.stopped != proto.ReasonShutdown {
			t.Fatalf("the session that cannot be handed over: stopped %q", plain.stopped)
		}
	})
	if err := r.Restore(proto.Restored{SessionID: "late", UserID: "u"}, func(l proto.Lease) proto.AdmittedSession {
		return &peerSession{lease: l}
	}); !errors.Is(err, proto.ErrClosed) {
		t.Fatalf("restore after the hand-over: %v", err)
	}
}
