//go:build tools

// Package deps pins the project's chosen dependencies in go.mod until the
// packages that use them land; it is never built.
package deps

import (
	_ "github.com/coreos/go-systemd/v22/daemon"
	_ "github.com/coreos/go-systemd/v22/journal"
	_ "github.com/creack/pty"
	_ "github.com/godbus/dbus/v5"
	_ "github.com/gorilla/websocket"
	_ "github.com/kelseyhightower/envconfig"
	_ "github.com/prometheus/client_golang/prometheus"
	_ "github.com/prometheus/client_golang/prometheus/testutil/promlint"
	_ "github.com/vmihailenco/msgpack/v5"
)
