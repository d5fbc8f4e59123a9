# File transfer: fuzz the proto 2 bodies and handler beside the envelope.
.PHONY: fuzz-filetransfer
fuzz: fuzz-filetransfer
fuzz-filetransfer:
	$(GO) test -run '^$$' -fuzz FuzzFileTransferBodies -fuzztime $(FUZZ_BODIES) ./internal/wire
	$(GO) test -run '^$$' -fuzz FuzzHandle -fuzztime $(FUZZ_HANDLER) ./internal/proto/filetransfer
