# Static cross builds for device architectures (see docs/building.md, "Building
# for your device"). Dockerfile.cross runs the very same cross-one and
# cross-verify targets, so what `make cross` proves in CI is what the image
# ships.
#
#   make cross        every platform, full and slim, checked by internal/tools/buildcheck
#   make cross-one    one platform: GOOS=linux GOARCH=arm GOARM=7 [DIST=dir]
#   make cross-verify the ELF/build-info test on $(DIST) [PLATFORMS="linux-armv7 ..."]
#   make cross-repro  build linux/arm64 twice (other path, empty cache), compare
#   make size         size table and budget of the full and slim builds [SIZE_STRICT=1] [SIZE_BASE=rev]
#   make cross-unit   the tests whose system calls differ by architecture, on arm under qemu-user
#   make cross-check  all of the above; what CI runs

.PHONY: cross cross-one cross-verify cross-repro cross-check cross-platforms size cross-unit

DIST ?= dist

# Docker platform names, the form `docker buildx --platform` takes. The dist
# directory of linux/arm/v7 is linux-armv7, of linux/arm64 linux-arm64.
CROSS_PLATFORMS := linux/amd64 linux/386 linux/arm64 linux/arm/v6 linux/arm/v7 linux/riscv64 linux/mipsle
# The QEMU tests boot these; their dist directories also get the test doubles.
CROSS_MOCK_DIRS := linux-amd64 linux-arm64 linux-armv7
# Tags that compile optional features out of tether-slim.
SLIM_TAGS ?= nometrics
# Platforms whose size `make size` breaks down per package and module.
SIZE_DETAIL ?= linux-arm64 linux-armv7
# SIZE_STRICT=1 makes `make size` fail when a build is over its budget.
SIZE_STRICT ?=
# Packages `make size` lists per detail platform, the largest first; 0 = all.
SIZE_TOP ?= 25

# cross-one's target, from GOOS/GOARCH/GOARM/GOMIPS given on the command line
# (GOARM may be written v7, as BuildKit's TARGETVARIANT is). Recursively
# expanded, so `go env` only runs when a recipe needs it.
cross_goos   = $(or $(GOOS),$(shell $(GO) env GOOS))
cross_goarch = $(or $(GOARCH),$(shell $(GO) env GOARCH))
cross_goarm  = $(if $(filter arm,$(cross_goarch)),$(or $(patsubst v%,%,$(GOARM)),7))
cross_gomips = $(if $(filter mips mipsle,$(cross_goarch)),$(or $(GOMIPS),softfloat))
cross_dir    = $(cross_goos)-$(cross_goarch)$(if $(cross_goarm),v$(cross_goarm))
# GOARM and GOMIPS are always set, empty when they do not apply: a GOARM=v8
# inherited from TARGETVARIANT would otherwise break an arm64 build.
cross_env    = GOOS=$(cross_goos) GOARCH=$(cross_goarch) GOARM=$(cross_goarm) GOMIPS=$(cross_gomips)
# -buildvcs=false: the bytes must not depend on whether .git is present (it
# is not in every Docker context); VERSION and COMMIT carry the same facts.
cross_build  = $(cross_env) $(GOBUILD) -buildvcs=false

cross-one:
	@mkdir -p $(DIST)/$(cross_dir)
	$(cross_build) -o $(DIST)/$(cross_dir)/tether ./cmd/tether
	$(cross_build) -tags '$(SLIM_TAGS)' -o $(DIST)/$(cross_dir)/tether-slim ./cmd/tether
	$(if $(filter $(cross_dir),$(CROSS_MOCK_DIRS)),$(cross_build) -o $(DIST)/$(cross_dir)/mock-mender ./cmd/mock-mender)
	$(if $(filter $(cross_dir),$(CROSS_MOCK_DIRS)),$(cross_build) -o $(DIST)/$(cross_dir)/mock-authd ./cmd/mock-authd)

cross-verify:
	TETHER_DIST='$(abspath $(DIST))' TETHER_PLATFORMS='$(PLATFORMS)' \
	TETHER_SLIM_TAGS='$(SLIM_TAGS)' TETHER_VERSION='$(VERSION)' \
	$(GO) test -count=1 ./internal/tools/buildcheck

# The stamps are fixed once here: HEAD or the tree may change while the
# sub-makes run, and every binary of one `make cross` must say the same.
cross_stamps = VERSION='$(VERSION)' COMMIT='$(COMMIT)' SOURCE_DATE_EPOCH='$(SOURCE_DATE_EPOCH)'

cross:
	@set -e; for p in $(CROSS_PLATFORMS); do \
	  os=$${p%%/*}; rest=$${p#*/}; arch=$${rest%%/*}; variant=$${rest#"$$arch"}; \
	  $(MAKE) --no-print-directory cross-one DIST='$(DIST)' $(cross_stamps) GOOS=$$os GOARCH=$$arch GOARM=$${variant#/}; \
	done
	$(MAKE) --no-print-directory cross-verify DIST='$(DIST)' $(cross_stamps) PLATFORMS=
	cd $(DIST) && find . -type f ! -name SHA256SUMS | LC_ALL=C sort | sed 's|^\./||' | xargs sha256sum > SHA256SUMS

# The comma-separated list for `docker buildx build --platform`.
cross-platforms:
	@echo $(CROSS_PLATFORMS) | tr ' ' ,

# Reproducibility: one snapshot of the tree, unpacked at two different
# paths and built for linux/arm64 once with the usual build cache and once
# with an empty one, must give the same bytes.
CROSS_REPRO := build/repro
cross-repro:
	rm -rf $(CROSS_REPRO) && mkdir -p $(CROSS_REPRO)/one/src $(CROSS_REPRO)/second-copy/src
	git ls-files -z --cached --others --exclude-standard | tar --null -T - -cf $(CROSS_REPRO)/src.tar
	tar xf $(CROSS_REPRO)/src.tar -C $(CROSS_REPRO)/one/src
	tar xf $(CROSS_REPRO)/src.tar -C $(CROSS_REPRO)/second-copy/src
	cd $(CROSS_REPRO)/one/src && \
	  $(MAKE) --no-print-directory cross-one DIST=../dist $(cross_stamps) GOOS=linux GOARCH=arm64 GOARM=
	cd $(CROSS_REPRO)/second-copy/src && GOCACHE='$(abspath $(CROSS_REPRO))/gocache' \
	  $(MAKE) --no-print-directory cross-one DIST=../dist $(cross_stamps) GOOS=linux GOARCH=arm64 GOARM=
	cd $(CROSS_REPRO)/one/dist && sha256sum */* > ../../one.sum
	cd $(CROSS_REPRO)/second-copy/dist && sha256sum */* > ../../second-copy.sum
	@cat $(CROSS_REPRO)/one.sum
	@if cmp -s $(CROSS_REPRO)/one.sum $(CROSS_REPRO)/second-copy.sum; then echo "cross-repro: byte-identical"; \
	 else echo "cross-repro: the builds differ:"; diff $(CROSS_REPRO)/one.sum $(CROSS_REPRO)/second-copy.sum; exit 1; fi
	chmod -R u+w $(CROSS_REPRO) && rm -rf $(CROSS_REPRO)

# Sizes are of the stripped dist binaries; the per-package breakdown needs
# symbols, so SIZE_DETAIL platforms are linked once more without -s -w.
# SIZE_BASE=<git revision> also builds that revision's sources the same way
# (same flags and Go) and lists what grew since, package by package.
CROSS_SIZE := build/size
SIZE_BASE ?=
size: cross
	@set -e; for d in $(SIZE_DETAIL); do \
	  os=$${d%%-*}; arch=$${d#*-}; arm=; case $$arch in armv*) arm=$${arch#armv}; arch=arm;; esac; \
	  $(MAKE) --no-print-directory size-unstripped DIST=$(CROSS_SIZE) $(cross_stamps) GOOS=$$os GOARCH=$$arch GOARM=$$arm; \
	  if [ -n '$(SIZE_BASE)' ]; then \
	    rm -rf $(CROSS_SIZE)/base-src && mkdir -p $(CROSS_SIZE)/base-src && \
	    git archive '$(SIZE_BASE)' | tar x -C $(CROSS_SIZE)/base-src && \
	    $(MAKE) --no-print-directory size-unstripped SIZE_SRC=$(CROSS_SIZE)/base-src DIST=$(CROSS_SIZE)/base $(cross_stamps) GOOS=$$os GOARCH=$$arch GOARM=$$arm; \
	  fi; \
	done
	$(GO) run ./internal/tools/buildcheck/sizetable -dist '$(DIST)' -unstripped $(CROSS_SIZE) -top $(SIZE_TOP) \
	  $(if $(SIZE_BASE),-base $(CROSS_SIZE)/base -base-name '$(SIZE_BASE)') $(if $(SIZE_STRICT),-strict) $(SIZE_DETAIL)

.PHONY: size-unstripped
SIZE_SRC ?= .
size-unstripped:
	@mkdir -p $(DIST)/$(cross_dir)
	cd $(SIZE_SRC) && $(cross_env) $(subst -s -w ,,$(GOBUILD)) -buildvcs=false -o $(abspath $(DIST))/$(cross_dir)/tether ./cmd/tether
	cd $(SIZE_SRC) && $(cross_env) $(subst -s -w ,,$(GOBUILD)) -buildvcs=false -tags '$(SLIM_TAGS)' -o $(abspath $(DIST))/$(cross_dir)/tether-slim ./cmd/tether

# System calls whose numbers differ by architecture (the 16-bit id calls of
# 32-bit arm and 386) are tested on arm under qemu-user. 386 shares the same
# build-tagged file; Go's 386 binaries do not run under qemu-i386 ("morestack
# on gsignal").
cross-unit: hil-setup
	GOARCH=arm GOARM=7 $(GO) test -count=1 -exec qemu-arm-static -run 'TestIdentityOnItsThread' ./internal/identity

cross-check: cross cross-repro size cross-unit
