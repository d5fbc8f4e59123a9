package metrics

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

func TestLabelValues(t *testing.T) {
	for _, r := range Reasons() {
		if got := knownReason(r); got != r {
			t.Errorf("knownReason(%q) = %q", r, got)
		}
	}
	tests := []struct {
		fn       func(string) string
		in, want string
	}{
		{knownReason, "idle_expired", ReasonIdleExpired},
		{knownReason, "Idle_Expired", ReasonOther},
		{knownReason, "", ReasonOther},
		{knownLimit, "per_user", LimitPerUser},
		{knownLimit, "total", LimitTotal},
		{knownLimit, "user 5", ReasonOther},
		{token, "shell", "shell"},
		{token, "invalid_msgpack", "invalid_msgpack"},
		{token, "port-forward", ReasonOther},
		{token, "Shell", ReasonOther},
		{token, "", ReasonOther},
		{token, "a234567890123456789012345678901234", ReasonOther},
	}
	for _, tt := range tests {
		if got := tt.fn(tt.in); got != tt.want {
			t.Errorf("(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
	if n := len(Reasons()); n != 12 {
		t.Errorf("%d reasons, want the 9 of the issue, detached_expired, memory_limit and other", n)
	}
}

func TestHealthHandler(t *testing.T) {
	tests := []struct {
		name     string
		health   func() (bool, []string)
		method   string
		wantCode int
		wantBody string
	}{
		{"nil health", nil, http.MethodGet, 200, "ok\n"},
		{"healthy", func() (bool, []string) { return true, nil }, http.MethodGet, 200, "ok\n"},
		{"stalled", func() (bool, []string) { return false, []string{"janitor", "router"} }, http.MethodGet, 503, "unhealthy: stalled loops: janitor, router\n"},
		{"head", func() (bool, []string) { return true, nil }, http.MethodHead, 200, ""},
		{"post", nil, http.MethodPost, 405, "method not allowed\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			healthHandler(tt.health).ServeHTTP(rec, httptest.NewRequest(tt.method, "/healthz", nil))
			if rec.Code != tt.wantCode || (tt.method != http.MethodHead && rec.Body.String() != tt.wantBody) {
				t.Fatalf("%d %q, want %d %q", rec.Code, rec.Body.String(), tt.wantCode, tt.wantBody)
			}
		})
	}
}
