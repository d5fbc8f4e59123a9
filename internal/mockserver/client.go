package mockserver

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
)

// maxResponse bounds what the client helpers read from the server.
const maxResponse = 4 << 20

// HTTPError is a non-success answer of the server.
type HTTPError struct {
	StatusCode int
	// Message is the "error" field of a JSON error body, or the body.
	Message string
}

func (e *HTTPError) Error() string {
	return fmt.Sprintf("HTTP %d: %s", e.StatusCode, e.Message)
}

// newHTTPError reads the body of a failed response.
func newHTTPError(resp *http.Response) *HTTPError {
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	e := &HTTPError{StatusCode: resp.StatusCode, Message: strings.TrimSpace(string(body))}
	var je struct {
		Error string `json:"error"`
	}
	if json.Unmarshal(body, &je) == nil && je.Error != "" {
		e.Message = je.Error
	}
	return e
}

// do runs one request on its own connection (Close: true), so that helpers
// used from tests leave no idle keep-alive goroutines behind.
func do(ctx context.Context, method, rawURL string, prepare func(*http.Request)) ([]byte, *http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, rawURL, nil)
	if err != nil {
		return nil, nil, fmt.Errorf("build %s %s: %w", method, rawURL, err)
	}
	req.Close = true
	if prepare != nil {
		prepare(req)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, nil, fmt.Errorf("%s %s: %w", method, rawURL, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return nil, resp, fmt.Errorf("%s %s: %w", method, rawURL, newHTTPError(resp))
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxResponse))
	if err != nil {
		return nil, resp, fmt.Errorf("%s %s: reading answer: %w", method, rawURL, err)
	}
	return body, resp, nil
}

func apiURL(baseURL, path string) string {
	return strings.TrimRight(baseURL, "/") + path
}

// Login logs a user in with HTTP Basic auth and returns the user JWT.
func Login(ctx context.Context, baseURL, email, password string) (string, error) {
	body, _, err := do(ctx, http.MethodPost, apiURL(baseURL, LoginPath), func(r *http.Request) {
		r.SetBasicAuth(email, password)
	})
	if err != nil {
		return "", fmt.Errorf("login as %s: %w", email, err)
	}
	tok := strings.TrimSpace(string(body))
	if tok == "" {
		return "", fmt.Errorf("login as %s: empty token", email)
	}
	return tok, nil
}

// RemoteDevice is a device as the management API reports it.
type RemoteDevice struct {
	ID string `json:"id"`
	// Status is the authentication status ("accepted").
	Status       string                 `json:"status"`
	IdentityData map[string]interface{} `json:"identity_data,omitempty"`
	// Connected comes from the deviceconnect status call.
	Connected bool `json:"-"`
}

// ListDevices lists the server's devices (first 500) with their
// deviceconnect status, as mender-cli would.
func ListDevices(ctx context.Context, baseURL, userJWT string) ([]RemoteDevice, error) {
	body, _, err := do(ctx, http.MethodGet, apiURL(baseURL, DevicesPath+"?page=1&per_page=500"), bearer(userJWT))
	if err != nil {
		return nil, fmt.Errorf("list devices: %w", err)
	}
	var devs []RemoteDevice
	if err := json.Unmarshal(body, &devs); err != nil {
		return nil, fmt.Errorf("list devices: decoding answer: %w", err)
	}
	for i := range devs {
		status, err := DeviceStatus(ctx, baseURL, userJWT, devs[i].ID)
		if err != nil {
			return nil, err
		}
		devs[i].Connected = status == "connected"
	}
	return devs, nil
}

// DeviceStatus returns the deviceconnect status of a device: "connected"
// or "disconnected".
func DeviceStatus(ctx context.Context, baseURL, userJWT, deviceID string) (string, error) {
	body, _, err := do(ctx, http.MethodGet, apiURL(baseURL, DeviceConnectMgmtDir+url.PathEscape(deviceID)), bearer(userJWT))
	if err != nil {
		return "", fmt.Errorf("status of device %s: %w", deviceID, err)
	}
	var st struct {
		Status string `json:"status"`
	}
	if err := json.Unmarshal(body, &st); err != nil {
		return "", fmt.Errorf("status of device %s: decoding answer: %w", deviceID, err)
	}
	return st.Status, nil
}

func bearer(token string) func(*http.Request) {
	return func(r *http.Request) { r.Header.Set("Authorization", "Bearer "+token) }
}
