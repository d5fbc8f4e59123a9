package main

import "testing"

func TestParseMapping(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want portMapping
		err  string
	}{
		{"8022:22", portMapping{"tcp", 8022, "127.0.0.1", 22}, ""},
		{"8000", portMapping{"tcp", 8000, "127.0.0.1", 8000}, ""},
		{"udp/5353:53", portMapping{"udp", 5353, "127.0.0.1", 53}, ""},
		{"tcp/8080:192.168.1.1:80", portMapping{"tcp", 8080, "192.168.1.1", 80}, ""},
		{"sctp/1:2", portMapping{}, "unknown protocol: sctp"},
		{"x:22", portMapping{}, "invalid port number: x"},
		{"8022:70000", portMapping{}, "invalid port number: 70000"},
	} {
		got, err := parseMapping(tc.in)
		if tc.err != "" {
			if err == nil || err.Error() != tc.err {
				t.Errorf("%q: error %v, want %q", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("%q: %+v, %v; want %+v", tc.in, got, err, tc.want)
		}
	}
}
