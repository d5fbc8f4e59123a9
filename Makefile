# tether — see README.md. `make demo` runs the product, `make test` runs
# everything CI runs.
GO          ?= go
PKG         := github.com/tether-agent/tether
VERSION     ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT      ?= $(shell git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
SOURCE_DATE_EPOCH ?= $(shell git log -1 --format=%ct 2>/dev/null || echo 0)
BUILD_DATE  := $(shell date -u -d @$(SOURCE_DATE_EPOCH) +%Y-%m-%dT%H:%M:%SZ)
LDFLAGS     := -s -w -buildid= \
               -X $(PKG)/internal/version.Version=$(VERSION) \
               -X $(PKG)/internal/version.Commit=$(COMMIT) \
               -X $(PKG)/internal/version.Date=$(BUILD_DATE)
# No inlining (-l) in packages that run only at start, at a TLS handshake,
# on a config load or a metrics scrape, and in those whose functions on a
# frame's path each wrap a system call or run once per TLS record: inlined
# copies of their helpers are about 0.9 MiB of the arm64 binary
# (docs/building.md, "Size"). Later patterns win, so AES-GCM, which every
# byte passes through, keeps its inlining; so do the runtime, internal/poll,
# msgpack, the websocket and tether's packages on a frame's path (wire,
# session, mux, link, terminal, file transfer, port forward), which no
# pattern here names. crypto/tls itself is -l: a call or two more per
# record of up to 16 KiB is noise next to its encryption and system call.
COLD_GCFLAGS := -gcflags=crypto/...=-l -gcflags=crypto/cipher= \
               -gcflags=crypto/internal/fips140/aes/...= -gcflags=crypto/internal/fips140/subtle= \
               -gcflags=net/http/...=-l -gcflags=net/url=-l -gcflags=net/textproto=-l \
               -gcflags=mime/...=-l -gcflags=compress/...=-l -gcflags=vendor/...=-l \
               -gcflags=encoding/...=-l -gcflags=math/big=-l \
               -gcflags=regexp/...=-l -gcflags=text/...=-l -gcflags=flag=-l \
               -gcflags=os/user=-l -gcflags=os/exec=-l -gcflags=os/signal=-l \
               -gcflags=fmt=-l -gcflags=log/...=-l -gcflags=strconv=-l -gcflags=internal/strconv=-l \
               -gcflags=sort=-l -gcflags=path/...=-l -gcflags=io/fs=-l -gcflags=unicode/...=-l \
               -gcflags=time=-l -gcflags=reflect=-l -gcflags=net=-l -gcflags=net/netip=-l \
               -gcflags=os=-l -gcflags=syscall=-l -gcflags=golang.org/x/sys/...=-l \
               -gcflags=google.golang.org/protobuf/...=-l -gcflags=github.com/prometheus/...=-l \
               -gcflags=github.com/godbus/dbus/v5=-l -gcflags=github.com/coreos/...=-l \
               -gcflags=$(PKG)/cmd/...=-l -gcflags=$(PKG)/internal/config=-l -gcflags=$(PKG)/internal/confval=-l \
               -gcflags=$(PKG)/internal/daemon=-l -gcflags=$(PKG)/internal/handover=-l \
               -gcflags=$(PKG)/internal/utmp=-l -gcflags=$(PKG)/internal/auth=-l \
               -gcflags=$(PKG)/internal/shell=-l -gcflags=$(PKG)/internal/reconnect=-l \
               -gcflags=$(PKG)/internal/health=-l -gcflags=$(PKG)/internal/logging=-l \
               -gcflags=$(PKG)/internal/metrics=-l -gcflags=$(PKG)/internal/version=-l \
               -gcflags=$(PKG)/internal/proto/menderclient=-l -gcflags=$(PKG)/internal/systemd1=-l
GOBUILD     := CGO_ENABLED=0 $(GO) build -trimpath $(COLD_GCFLAGS) -ldflags '$(LDFLAGS)'
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.6.1
# Fuzzing budgets are counts of executions, about 20 s each on a CI-sized
# machine: a duration races the coordinator's own deadline in Go 1.26 and
# fails a clean run with "context deadline exceeded" (golang/go#75804).
FUZZ_ENVELOPE ?= 400000x
FUZZ_BODIES   ?= 300000x
FUZZ_HANDLER  ?= 20000x

.PHONY: all build setup lint unit fuzz systemd-check check test demo bench clean web

# Each area keeps its own targets in mk/<area>.mk.
include $(sort $(wildcard mk/*.mk))

all: build

build:
	$(GOBUILD) -o bin/tether ./cmd/tether
	$(GOBUILD) -o bin/mock-mender ./cmd/mock-mender
	$(GOBUILD) -o bin/mock-authd ./cmd/mock-authd

setup:
	@bash scripts/setup.sh

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) vet -tags nometrics ./...
	$(GO) run $(STATICCHECK) ./...
	$(MAKE) --no-print-directory hil-lint

unit:
	$(GO) test -race -count=1 -timeout 25m ./...

fuzz:
	$(GO) test -run '^$$' -fuzz FuzzUnmarshal -fuzztime $(FUZZ_ENVELOPE) ./internal/wire

systemd-check:
	bash systemd/check.sh

# check: the day-to-day target: everything but the cross builds and the
# QEMU guests.
check: setup lint unit fuzz systemd-check layers-check

# test: the whole suite, as CI runs it: check, the static cross builds with
# their ELF, reproducibility and size checks, the container image, then the
# QEMU guests.
test: check cross-check container-test hil

demo: setup build
	@bash scripts/demo.sh

bench: setup build
	$(GO) run ./internal/tools/bench/tetherbench
	$(GO) run ./internal/tools/bench/fleetsim

# web: rebuild the mock server's web console bundle (committed and embedded,
# so `go build` needs no node) from its sources and pinned npm packages.
web:
	cd internal/mockserver/web && npm ci --ignore-scripts --no-audit --no-fund && npm run build

clean:
	rm -rf bin dist build
