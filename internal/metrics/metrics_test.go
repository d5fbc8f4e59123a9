package metrics

import (
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
