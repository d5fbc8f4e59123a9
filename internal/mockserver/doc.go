// Package mockserver is a mock Mender server for tests, demos and
// benchmarks of the device daemon, plus the user-side client that talks to
// it. It behaves like the real server as docs/protocol.md (§1, §8)
// describes; cmd/mock-mender wraps it in a program.
//
// # Server
//
// New(Options) builds a server; Start(addr) serves it on a listener (or mount
// Handler() in an httptest.Server); Close() ends every websocket and waits
// for all of its goroutines. Options sets users, the signing key (reuse it
// across restarts to keep tokens valid), ping periods, the read timeout,
// the session byte limit, token lifetime and Strict decoding. A device
// whose handshake answer (101) is on its way already counts as known and
// connected, so a client never sees the server lag behind its own view.
// Endpoints:
//
//   - POST /api/devices/v1/authentication/auth_requests: AuthRequest JSON
//     signed in the X-MEN-Signature header (RSA PKCS #1 v1.5 SHA-256 or
//     Ed25519). Devices are auto-accepted: 200, application/jwt, the device
//     JWT. 400 for a bad body or key, 401 for a bad signature. The device id
//     is DeviceID(id_data): stable across restarts.
//   - GET /api/devices/v1/deviceconnect/connect: the device websocket. Token
//     from "Authorization: Bearer" or the JWT cookie; 401 for a bad, expired
//     or revoked token, 400 for a non-device token. A new connection of a
//     device replaces its old one, which is dropped without a close frame
//     (1006). The server pings every DevicePingInterval (payload "60";
//     postponed by every write to the device), answers pings, and drops
//     the device after ReadTimeout without any frame. A device frame above
//     DeviceFrameLimit (1 MiB, NATS's payload limit) ends the link (1011).
//   - POST /api/management/v1/useradm/auth/login (Basic auth): user JWT.
//   - GET /api/management/v2/devauth/devices: [{"id","status":"accepted",
//     "identity_data",...}], paged by page/per_page.
//   - GET /api/management/v1/deviceconnect/devices/{id}:
//     {"device_id","status":"connected"|"disconnected"}.
//   - GET /api/management/v1/deviceconnect/devices/{id}/connect: the user
//     websocket (401 bad token, 404 unknown device, 409 device not
//     connected), relayed as in the real server: a fresh UUID sid per user
//     connection is written into every user message and user_id added;
//     device messages go to the user connection named by their sid and are
//     dropped when there is none. When the user leaves without a `stop`
//     of its own the device hears nothing (PROTOCOL.md 2.9.1). When a user
//     connection has received SessionByteLimit bytes of shell output, the
//     next output message is not forwarded: the device gets stop "session
//     byte limit exceeded" and the user a 1008 close. When the device link
//     drops, every user socket of it is closed (1011) and nobody gets a
//     stop; at server shutdown users with a running shell get stop
//     "device disconnected" and a 1001 close.
//   - GET /: the web console (web.go, sources in web/): log in, device
//     list, xterm.js terminals over the user websocket, a file panel for
//     the file-transfer REST calls. Login also sets the user JWT as an
//     HttpOnly, SameSite=Strict "JWT" cookie, which every management
//     endpoint accepts; POST /api/management/v1/useradm/auth/logout drops
//     it and ends the token on the server. LoginLink makes a one-time
//     /ui/login?code= link that sets it; the page never carries a password.
//   - Every request (page, REST, websocket) must name an IP literal,
//     localhost or one of Options.AllowedHosts as its Host (421 otherwise,
//     against DNS rebinding), and one with an Origin header must come from
//     the server's own origin (403 otherwise); clients without one are let
//     through.
//   - POST /api/management/v1/deviceconnect/devices/{id}/check-update and
//     .../send-inventory: the device gets the proto 4 message with no sid
//     and the user's user_id; 202 (404 for a device not connected).
//   - Errors everywhere are JSON {"error": "..."}.
//
// For fleet benches: Options.ConnectLimit answers device connects above a
// rate with 503 "server is starting up" (the real server's pending
// change; Retry-After only when set), Options.OnConnect hears of every
// device-endpoint request and its answer, CloseDevices drops every device
// socket at once (1011) and the server stays up.
//
// Options.Lenient is a forgiving server instead of the real one: user
// sessions of a dropped device wait (up to ReadTimeout) for its next
// connection and are relayed over it with the same sid, else they get
// "device disconnected" and 1001; a replaced connection gets a 1011 close
// frame; a user leaving after a shell `new` without a `stop` makes the
// device get stop, status 2, "user disconnected"; no frame limit; no
// byte-limit cut unless SessionByteLimit is set.
//
// Every JWT is HS256 with sub, iss "Mender", iat, exp, jti and
// mender.device or mender.user. RevokeDeviceTokens invalidates a device's
// tokens issued so far (the live connection stays; Device.Close drops it).
//
// Device frames are decoded with wire.Unmarshal; undecodable ones are
// counted (tests read Device.malformedCount) and skipped, unless Options.Strict, which ends
// the connection like the real server. Undecodable user frames end the user
// session, as in the real server.
//
// A device's read loop writes relayed messages straight to the user socket
// (10 s write deadline): a user that does not read back-pressures that
// device; after 10 s the user is dropped.
//
// # Observing and driving devices
//
// WaitDevice / WaitReconnect return the live *Device, which can Send or
// SendRaw any frame, Subscribe to every decoded frame it sends (buffered;
// a subscriber that falls SubscriptionBuffer frames behind is cut off, its
// channel closed) and Close the connection. DeviceConnects reports what
// the server knows.
//
// # User side
//
// Login, ListDevices and DeviceStatus call the management API. Dial opens
// the management websocket; OpenTerminal also starts a shell like
// mender-cli and returns a *Terminal (or a *ShellError carrying the
// device's refusal text exactly). A Terminal answers shell pings with
// pongs unless WithoutAutoPong is given, and offers Write, Resize, Stop,
// Send, Messages, Expect, WaitStop, Output, Err and Close. Messages,
// Expect and WaitStop consume one stream: Expect keeps output after its
// match for the next call; use either the channel or the helpers. Errors
// from HTTP calls (including a refused websocket handshake) wrap an
// *HTTPError with the status code; Err() of an ended Terminal is the
// *websocket.CloseError with the server's close code.
//
// OpenPortForward does mender-cli's port-forward handshake; its ServeTCP
// and ServeUDP forward local sockets to the device's side as mender-cli
// does. SendMenderCommand calls the check-update / send-inventory API.
package mockserver
