# Yocto layer (yocto/meta-tether) and Buildroot external tree (buildroot/):
# offline checks of their metadata, pinned Go modules, licences and of the
# build flags they produce (static, non-PIE ELF for each qemu target).
.PHONY: layers-check layers-update

LAYERCHECK_PKG := ./internal/tools/layercheck

layers-check:
	@bash scripts/setup.sh kconfig-frontends-nox
	@test -f LICENSE || { echo "layers-check: LICENSE (Apache-2.0 text) is missing at the repository root"; exit 1; }
	@out=$$(gofmt -l internal/tools/layercheck); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet -tags layercheck $(LAYERCHECK_PKG)
	$(GO) test -tags layercheck -count=1 -timeout 20m $(LAYERCHECK_PKG)

# Regenerate yocto/.../tether-go-mods.inc, tether-licenses.inc and the
# generated parts of buildroot/package/tether/{tether.mk,tether.hash} after
# go.mod or the daemon's imports change; review the diff, then layers-check.
layers-update:
	$(GO) test -tags layercheck -count=1 -run 'TestYoctoGoModules|TestBuildrootPackage' $(LAYERCHECK_PKG) -update
