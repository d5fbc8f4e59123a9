# Hardware-in-the-loop tests in QEMU guests (qemu/, internal/tstest/hil/); see
# docs/testing.md, "Hardware-in-the-loop tests (QEMU)".
#
#   make hil                          all guests: 2 flavours x 3 architectures
#   make hil HIL_ARCHES=arm64         one architecture (arm64, armhf, amd64)
#   make hil HIL_FLAVOURS=minimal     one flavour (minimal, systemd)
#   make hil-images                   only build the guest images
#   make hil-lint                     vet + staticcheck of the tagged tests
#   make bench-guests                 CPU per MB of terminal output in the
#                                     arm64 and armhf minimal guests, next
#                                     to a plain cat (HIL_ARCHES overrides;
#                                     BENCH_MIB=16 of data, BENCH_RUNS=3)
HIL_ARCHES   ?= arm64 armhf amd64
HIL_FLAVOURS ?= minimal systemd
HIL_BUILD    ?= $(CURDIR)/build/hil
HIL_TIMEOUT  ?= 40m
# The guest bench: the devices tether runs on, unless HIL_ARCHES is given.
BENCH_ARCHES  := $(if $(filter file,$(origin HIL_ARCHES)),arm64 armhf,$(HIL_ARCHES))
BENCH_MIB     ?= 16
BENCH_RUNS    ?= 3
BENCH_TIMEOUT ?= 40m
HIL_RUN      := $(if $(filter minimal,$(HIL_FLAVOURS)),TestMinimal|TestMinimalUpgrade)$(if $(filter systemd,$(HIL_FLAVOURS)),$(if $(filter minimal,$(HIL_FLAVOURS)),|)TestSystemd|TestSystemdLogin)

.PHONY: hil hil-setup hil-images hil-lint hil-clean bench-guests

hil-setup:
	@bash qemu/setup-host.sh

# Images are rebuilt every time (seconds: they carry the current tether);
# the slow parts (downloads, mmdebstrap rootfs) come from build/hil's cache.
hil-images: hil-setup
	@bash qemu/build.sh "$(HIL_ARCHES)" "$(HIL_FLAVOURS)"

# Both tag sets: the bench's file must build, and what only it uses must
# not show up as unused in `make hil`'s build.
hil-lint:
	$(GO) vet -tags hil ./internal/tstest/hil/
	$(GO) vet -tags 'hil hilbench' ./internal/tstest/hil/
	$(GO) run $(STATICCHECK) -tags hil ./internal/tstest/hil/
	$(GO) run $(STATICCHECK) -tags 'hil hilbench' ./internal/tstest/hil/

hil: hil-images
	@mkdir -p $(HIL_BUILD)
	@{ HIL_ARCHES="$(HIL_ARCHES)" HIL_BUILD="$(HIL_BUILD)" \
	  $(GO) test -tags hil -count=1 -v -timeout $(HIL_TIMEOUT) -run '^($(HIL_RUN))$$' ./internal/tstest/hil/ 2>&1; \
	  echo $$? >$(HIL_BUILD)/test.rc; } | tee $(HIL_BUILD)/test.log; \
	echo "== HIL measurements (log: $(HIL_BUILD)/test.log; serial logs: $(HIL_BUILD)/logs/)"; \
	grep -o 'HIL-RESULT.*' $(HIL_BUILD)/test.log | sed 's/^HIL-RESULT /  /'; \
	exit $$(cat $(HIL_BUILD)/test.rc)

hil-clean:
	rm -rf $(HIL_BUILD)

# bench-guests: only the minimal images of the bench's architectures, then
# TestGuestBench (build tags hil and hilbench), ending with its
# BENCH-RESULT lines.
bench-guests: hil-setup
	@HIL_BUILD="$(HIL_BUILD)" bash qemu/build.sh "$(BENCH_ARCHES)" minimal
	@mkdir -p $(HIL_BUILD)
	@{ HIL_ARCHES="$(BENCH_ARCHES)" HIL_BUILD="$(HIL_BUILD)" HIL_BENCH_MIB=$(BENCH_MIB) HIL_BENCH_RUNS=$(BENCH_RUNS) \
	  $(GO) test -tags 'hil hilbench' -count=1 -v -timeout $(BENCH_TIMEOUT) -run '^TestGuestBench$$' ./internal/tstest/hil/ 2>&1; \
	  echo $$? >$(HIL_BUILD)/bench.rc; } | tee $(HIL_BUILD)/bench.log; \
	echo "== guest bench (log: $(HIL_BUILD)/bench.log; serial logs: $(HIL_BUILD)/logs/)"; \
	grep -o 'BENCH-RESULT.*' $(HIL_BUILD)/bench.log | sed 's/^BENCH-RESULT /  /'; \
	exit $$(cat $(HIL_BUILD)/bench.rc)
