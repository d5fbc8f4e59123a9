package itest

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/tether-agent/tether/internal/mockserver"
	"github.com/tether-agent/tether/internal/wire"
)

// fakeMender writes an executable script standing in for mender-update.
func fakeMender(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "mender-update")
	if err := os.WriteFile(p, []byte("#!/bin/sh\n"+body+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

func mcConfig(binary, timeout string) map[string]interface{} {
	return map[string]interface{}{"MenderClient": map[string]interface{}{
		"Binaries": []string{filepath.Join(filepath.Dir(binary), "absent"), binary}, "Timeout": timeout}}
}

// mcReply sends a proto 4 message over a user connection (which gives it
// a sid, so the answer comes back) and returns the answer.
func (r *raw) mcReply(typ string) (int64, string) {
	r.e.t.Helper()
	r.send(wire.ProtoMenderClient, typ, "", nil)
	m := r.next(wire.ProtoMenderClient, typ)
	st, _ := m.Header.IntProp(wire.PropStatus)
	return st, string(m.Body)
}

func TestMenderClientCommands(t *testing.T) {
	rec := filepath.Join(t.TempDir(), "args")
	bin := fakeMender(t, `echo "$@" >> `+rec)
	e := newEnv(t, mcConfig(bin, "10s"))
	e.waitDevice()
	// The management API, as the UI uses it: 202 and no answer.
	for _, cmd := range []string{mockserver.CommandCheckUpdate, mockserver.CommandSendInventory} {
		if err := mockserver.SendMenderCommand(e.ctx, e.url, e.jwt(adminEmail), e.deviceID, cmd); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, 10*time.Second, "both commands run", func() bool {
		b, _ := os.ReadFile(rec)
		return string(b) == "check-update\nsend-inventory\n" || string(b) == "send-inventory\ncheck-update\n"
	})
	var he *mockserver.HTTPError
	if err := mockserver.SendMenderCommand(e.ctx, e.url, e.jwt(adminEmail), "no-such-device", "check-update"); !errors.As(err, &he) || he.StatusCode != 404 {
		t.Fatalf("unknown device: %v", err)
	}
	// With a sid the answers come back: status 1, and 2 for an unknown type.
	r := e.raw()
	if st, body := r.mcReply("check-update"); st != 1 || body != "" {
		t.Fatalf("check-update: status %d %q", st, body)
	}
	if st, body := r.mcReply("reboot"); st != 2 || body != "unknown message type" {
		t.Fatalf("unknown type: status %d %q", st, body)
	}
}

func TestMenderClientTimeout(t *testing.T) {
	bin := fakeMender(t, "exec sleep 1017")
	e := newEnv(t, mcConfig(bin, "500ms"))
	e.waitDevice()
	r := e.raw()
	t0 := time.Now()
	r.send(wire.ProtoMenderClient, "check-update", "", nil)
	// The read loop is not held up meanwhile.
	term := e.open(adminEmail)
	e.run(term, "true")
	m := r.next(wire.ProtoMenderClient, "check-update")
	st, _ := m.Header.IntProp(wire.PropStatus)
	if st != 2 || !strings.Contains(string(m.Body), "timed out after 500ms") {
		t.Fatalf("hanging command: status %d %q", st, m.Body)
	}
	if d := time.Since(t0); d > 5*time.Second {
		t.Fatalf("answer after %v", d)
	}
	eventually(t, 5*time.Second, "the hanging command gone", func() bool {
		_, z := e.children()
		return !processExists("sleep 1017") && len(z) == 0
	})
}

// Disabled protocols are out of accept and answered like unknown ones.
func TestProtocolsDisabled(t *testing.T) {
	e := newEnv(t, map[string]interface{}{
		"PortForward":  map[string]interface{}{"Disable": true},
		"MenderClient": map[string]interface{}{"Disable": true},
		"FileTransfer": map[string]interface{}{"Disable": true},
	})
	e.waitDevice()
	if _, err := mockserver.OpenPortForward(e.ctx, e.url, e.jwt(adminEmail), e.deviceID, nil); !errors.Is(err, mockserver.ErrPortForwardNotImplemented) {
		t.Fatalf("port forward on a device without it: %v", err)
	}
	term, err := mockserver.Dial(e.ctx, e.url, e.jwt(adminEmail), e.deviceID)
	if err != nil {
		t.Fatal(err)
	}
	defer term.Close()
	r := &raw{e: e, t: term}
	body, _ := msgpack.Marshal(&wire.OpenBody{Versions: []int{1}})
	r.send(wire.ProtoControl, wire.TypeOpen, "", body)
	var acc wire.AcceptBody
	if err := msgpack.Unmarshal(r.next(wire.ProtoControl, wire.TypeAccept).Body, &acc); err != nil {
		t.Fatal(err)
	}
	if len(acc.Protocols) != 1 || acc.Protocols[0] != wire.ProtoShell {
		t.Fatalf("accept lists %v", acc.Protocols)
	}
	r.send(wire.ProtoMenderClient, "check-update", "", nil)
	var eb wire.ErrorBody
	if err := msgpack.Unmarshal(r.next(wire.ProtoControl, wire.TypeError).Body, &eb); err != nil {
		t.Fatal(err)
	}
	if eb.Error != "no handler registered for protocol: 0x0004" {
		t.Fatalf("proto 4 when disabled: %q", eb.Error)
	}
}
