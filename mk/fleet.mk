# Fleet bench: FLEET_N real tether daemons against one mock-mender on
# loopback, each server event measured at the server beside the simulator
# (docs/benchmarks.md, "Fleet bench"). Not part of `make test`; its short
# variant (50 daemons) is internal/tstest/fleettest, which is.
.PHONY: bench-fleet

FLEET_N ?= 1000

bench-fleet: setup build
	$(GO) run ./internal/tools/bench/fleetbench -n $(FLEET_N)
