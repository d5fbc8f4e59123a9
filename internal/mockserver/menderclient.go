package mockserver

import (
	"context"
	"net/http"
	"net/url"

	"github.com/tether-agent/tether/internal/proto/menderclient"
	"github.com/tether-agent/tether/internal/wire"
)

// Mender client commands the management API triggers (docs/protocol.md
// §7, §8.2): the device's own message types, which the API's paths repeat.
const (
	CommandCheckUpdate   = menderclient.TypeCheckUpdate
	CommandSendInventory = menderclient.TypeSendInventory
)

// handleMenderCommand is POST .../devices/{id}/check-update and
// .../send-inventory: the device gets the proto 4 message with no sid and
// the user's id, and the caller 202 without waiting for the outcome, as
// from the real server.
func (s *Server) handleMenderCommand(cmd string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if !allowMethod(w, r, http.MethodPost) {
			return
		}
		c, ok := s.authenticateUser(w, r)
		if !ok {
			return
		}
		id := r.PathValue("id")
		dev, known := s.liveDevice(r.Context(), id)
		if dev == nil {
			msg := "device not connected"
			if !known {
				msg = "device not found"
			}
			writeError(w, http.StatusNotFound, msg)
			return
		}
		m := &wire.ProtoMsg{Header: wire.Header{Proto: wire.ProtoMenderClient, MsgType: cmd,
			Properties: map[string]interface{}{wire.PropUserID: c.Subject}}}
		if err := dev.Send(m); err != nil {
			writeError(w, http.StatusInternalServerError, "failed to send the command to the device: "+err.Error())
			return
		}
		dev.log.Info("mender client command sent", "command", cmd, "user_id", c.Subject)
		writeJSON(w, http.StatusAccepted, nil)
	}
}

// SendMenderCommand asks the server to make a device run a Mender client
// command (CommandCheckUpdate or CommandSendInventory).
func SendMenderCommand(ctx context.Context, baseURL, userJWT, deviceID, cmd string) error {
	_, _, err := do(ctx, http.MethodPost, apiURL(baseURL, DeviceConnectMgmtDir+url.PathEscape(deviceID)+"/"+cmd), bearer(userJWT))
	return err
}
