package mockserver

import (
	"errors"
	"net/http"
	"testing"

	"github.com/tether-agent/tether/internal/wire"
)

func TestMenderCommandEndpoints(t *testing.T) {
	s, url := startServer(t, Options{})
	const id = "dev-mc"
	fd := startFakeDevice(t, url, s.IssueDeviceToken(id))
	if _, err := s.WaitDevice(testCtx(t), id); err != nil {
		t.Fatal(err)
	}
	tok := login(t, url)
	for _, cmd := range []string{CommandCheckUpdate, CommandSendInventory} {
		status, _, body := httpDo(t, http.MethodPost, url+DeviceConnectMgmtDir+id+"/"+cmd, nil, http.Header{"Authorization": {"Bearer " + tok}})
		if status != http.StatusAccepted || body != "null\n" {
			t.Fatalf("%s: %d %q", cmd, status, body)
		}
		m := fd.waitFor(t, cmd, func(m *wire.ProtoMsg) bool { return m.Header.Proto == wire.ProtoMenderClient })
		if m.Header.MsgType != cmd || m.Header.SessionID != "" || m.Header.StringProp(wire.PropUserID) != UserID(DefaultUser) {
			t.Fatalf("%s: device got %+v", cmd, m.Header)
		}
	}
	for _, tc := range []struct {
		method, device, token string
		want                  int
	}{
		{http.MethodGet, id, tok, http.StatusMethodNotAllowed},
		{http.MethodPost, "unknown", tok, http.StatusNotFound},
		{http.MethodPost, id, "bad", http.StatusUnauthorized},
	} {
		status, _, _ := httpDo(t, tc.method, url+DeviceConnectMgmtDir+tc.device+"/check-update", nil, http.Header{"Authorization": {"Bearer " + tc.token}})
		if status != tc.want {
			t.Errorf("%s %s: %d, want %d", tc.method, tc.device, status, tc.want)
		}
	}
	var he *HTTPError
	if err := SendMenderCommand(testCtx(t), url, tok, "unknown", CommandCheckUpdate); !errors.As(err, &he) || he.StatusCode != 404 {
		t.Fatalf("SendMenderCommand to an unknown device: %v", err)
	}
}
