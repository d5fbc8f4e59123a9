# The container image (Containerfile, scripts/container.sh; docs/building.md
# "Containers"), built from prebuilt files with podman (or docker buildx),
# and its test: the image run for real against the mock server.
#
#   make container                 image for this machine, tag tether:dev
#   make container CONTAINER_PLATFORM=linux/arm/v7 CONTAINER_TAG=tether:armv7
#   make container-images          one image per platform of make cross
#   make container-test            build, run and stop the image (CI)
#
# CONTAINER_ENGINE=docker builds with BuildKit instead of podman.

.PHONY: container container-images container-platforms container-setup container-lint container-test

CONTAINER_BUILD    ?= build/container
CONTAINER_TAG      ?= tether:dev
CONTAINER_ENGINE   ?= podman
# podman with its global options (--root, --storage-driver, ...).
CONTAINER_PODMAN   ?= podman
# podman's image format: oci (reproducible to the image id) or docker
# (keeps the HEALTHCHECK; the same layer, not the same config).
CONTAINER_FORMAT   ?= oci
# The platform of this machine, as make cross names it.
CONTAINER_PLATFORM ?= linux/$(shell $(GO) env GOARCH)$(if $(filter arm,$(shell $(GO) env GOARCH)),/v$(shell $(GO) env GOARM))
# Debian 12 has no busybox-static for riscv64 (BUSYBOX=... builds it).
CONTAINER_PLATFORMS ?= $(filter-out linux/riscv64,$(CROSS_PLATFORMS))

container_word = $(word $(2),$(subst /, ,$(1)))

# The comma-separated list for `docker buildx build -f Dockerfile.cross --platform`.
container-platforms:
	@echo $(CONTAINER_PLATFORMS) | tr ' ' ,

container-setup:
	@bash scripts/setup.sh podman runc

container: container-setup
	$(MAKE) --no-print-directory cross-one DIST=$(CONTAINER_BUILD)/dist \
	  GOOS=$(call container_word,$(CONTAINER_PLATFORM),1) GOARCH=$(call container_word,$(CONTAINER_PLATFORM),2) \
	  GOARM=$(call container_word,$(CONTAINER_PLATFORM),3) CROSS_MOCK_DIRS=
	DIST=$(CONTAINER_BUILD)/dist WORK=$(CONTAINER_BUILD) ENGINE=$(CONTAINER_ENGINE) FORMAT=$(CONTAINER_FORMAT) PODMAN='$(CONTAINER_PODMAN)' \
	  VERSION='$(VERSION)' COMMIT='$(COMMIT)' SOURCE_DATE_EPOCH='$(SOURCE_DATE_EPOCH)' \
	  bash scripts/container.sh build $(CONTAINER_PLATFORM) $(CONTAINER_TAG)

# Tags $(CONTAINER_TAG)-<dist dir>, e.g. tether:dev-linux-armv7.
container-images: container-setup
	@set -e; for p in $(CONTAINER_PLATFORMS); do \
	  d=$$(echo "$$p" | sed 's|^linux/arm/v|linux/armv|; s|/|-|g'); \
	  $(MAKE) --no-print-directory container CONTAINER_PLATFORM=$$p CONTAINER_TAG=$(CONTAINER_TAG)-$$d; \
	done

container-lint:
	$(GO) vet -tags container ./internal/tstest/containertest/
	$(GO) run $(STATICCHECK) -tags container ./internal/tstest/containertest/

container-test: container-setup container-lint
	$(GO) test -tags container -count=1 -v -timeout 10m ./internal/tstest/containertest/
