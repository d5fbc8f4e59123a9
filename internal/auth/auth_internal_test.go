package auth

import (
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"

	"github.com/godbus/dbus/v5"
)

func TestCredentialsNeverPrintTheToken(t *testing.T) {
	c := Credentials{Token: "SECRET-xyz", ServerURL: "https://a.example"}
	var b strings.Builder
	slog.New(slog.NewTextHandler(&b, nil)).Info("x", "c", c)
	for _, s := range []string{fmt.Sprint(c), fmt.Sprintf("%v %+v %s", c, c, c), b.String()} {
		if strings.Contains(s, "SECRET") {
			t.Errorf("token leaked: %s", s)
		}
		if !strings.Contains(s, "https://a.example") {
			t.Errorf("url missing: %s", s)
		}
	}
	if Fingerprint("") != "none" || Fingerprint("a") == Fingerprint("b") {
		t.Error("Fingerprint does not tell tokens apart")
	}
}

func TestAuthorized(t *testing.T) {
	tests := []struct {
		c    Credentials
		want bool
	}{
		{Credentials{"t", "u"}, true},
		{Credentials{"t", ""}, false},
		{Credentials{"", "u"}, false},
		{Credentials{}, false},
	}
	for _, tc := range tests {
		if got := tc.c.Authorized(); got != tc.want {
			t.Errorf("%v.Authorized() = %v, want %v", tc.c, got, tc.want)
		}
	}
}

func TestMailboxNewestWinsAndNoDuplicates(t *testing.T) {
	m := newMailbox()
	a, b := Credentials{"a", "u"}, Credentials{"b", "u"}
	if !m.put(Credentials{}) {
		t.Fatal("first (empty) value not delivered")
	}
	m.put(a)
	m.put(b) // replaces the unread a
	if got := <-m.ch; got != b {
		t.Fatalf("got %v, want the newest %v", got, b)
	}
	if m.put(b) {
		t.Fatal("duplicate delivered")
	}
	select {
	case c := <-m.ch:
		t.Fatalf("unexpected %v", c)
	default:
	}

	// Concurrent producers never block and the consumer ends with the
	// last value put.
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			for j := 0; j < 100; j++ {
				m.put(Credentials{Token: fmt.Sprint(i, j), ServerURL: "u"})
			}
		}(i)
	}
	wg.Wait()
	m.put(a)
	if got := <-m.ch; got != a {
		t.Fatalf("got %v, want %v", got, a)
	}
}

func TestSignalQueueKeepsOrderAndBounds(t *testing.T) {
	q := newSignalQueue()
	q.DeliverSignal("", "", &dbus.Signal{Name: "org.freedesktop.DBus.NameAcquired"})
	for i := 0; i < maxQueuedSignals+10; i++ {
		q.DeliverSignal("", "", &dbus.Signal{Name: SignalJwtTokenStateChange, Sequence: dbus.Sequence(i + 1)})
	}
	sigs, overflow := q.take()
	if !overflow || len(sigs) != maxQueuedSignals {
		t.Fatalf("got %d signals, overflow %v; want %d and true", len(sigs), overflow, maxQueuedSignals)
	}
	for i, s := range sigs {
		if want := dbus.Sequence(i + 11); s.Sequence != want {
			t.Fatalf("signal %d has sequence %d, want %d (oldest dropped, order kept)", i, s.Sequence, want)
		}
	}
	if sigs, overflow := q.take(); len(sigs) != 0 || overflow {
		t.Fatal("queue not emptied")
	}
	q.Terminate()
	q.DeliverSignal("", "", &dbus.Signal{Name: SignalJwtTokenStateChange})
	if sigs, _ := q.take(); len(sigs) != 0 {
		t.Fatal("signal queued after Terminate")
	}
}
