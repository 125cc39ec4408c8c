GO        ?= go
BIN       := bin
# The plugins keel ships are one executable, keel-plugins (cmd/keel-plugins),
# installed under each plugin's name as a hard link (a copy where a link
# cannot be made): each plugin is still its own process, and they share the
# executable's code pages (make bench, BenchmarkIdleMemory). Each plugin
# still builds alone too: go build ./plugins/<name>.
# keel-runtime-runc's task shims are an executable of their own,
# keel-runtime-runc-shim (cmd/keel-runtime-runc-shim), installed beside
# it: small, so that each of many shims costs little (BenchmarkRuntimeRunc).
PLUGINS   := keel-snapshotter-native keel-snapshotter-overlay keel-content-local keel-snapshotter-btrfs keel-resolver-docker keel-runtime-runc
BINARIES  := keeld keel keel-plugins keel-runtime-runc-shim keel-cri keel-pause
PROTOC_GEN_GO_VERSION      := v1.36.6
PROTOC_GEN_GO_GRPC_VERSION := v1.5.1
STATICCHECK_VERSION        := v0.8.2
STATICCHECK ?= $(shell $(GO) env GOPATH)/bin/staticcheck
# Every module in the repo (the root one, sdk/ and the third-party plugins
# under test/thirdparty/, each with its go.mod): go vet and staticcheck see
# one module at a time.
MODULES   = $(shell git ls-files '*go.mod' | xargs -n1 dirname)
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -s -w -X github.com/keel-runtime/keel/version.Version=$(VERSION) -X main.version=$(VERSION)
# grpcnotrace leaves out gRPC's x/net/trace support, which keel does not use:
# about 1 MB less resident code per process (make bench, BenchmarkFigureIdleMemory).
GOTAGS    ?= grpcnotrace

# Where make install puts keel: $(DESTDIR)$(PREFIX)/bin (keeld, keel, the
# plugins, which keeld's default config finds beside keeld), the systemd
# unit in $(UNITDIR), the config dir $(SYSCONFDIR)/keel.
PREFIX     ?= /usr/local
SYSCONFDIR ?= /etc
UNITDIR    ?= $(PREFIX)/lib/systemd/system
DESTDIR    ?=

.PHONY: all build install install-files verify-install test faults conformance bench critest proto tools clean vet lint staticcheck demo fuzz

all: build

build: $(addprefix $(BIN)/,$(BINARIES))

$(BIN)/keeld: FORCE
	$(GO) build -trimpath -tags "$(GOTAGS)" -ldflags "$(LDFLAGS)" -o $@ ./cmd/keeld
$(BIN)/keel: FORCE
	$(GO) build -trimpath -tags "$(GOTAGS)" -ldflags "$(LDFLAGS)" -o $@ ./cmd/keel
$(BIN)/keel-plugins: FORCE
	$(GO) build -trimpath -tags "$(GOTAGS)" -ldflags "$(LDFLAGS)" -o $@ ./cmd/keel-plugins
	for p in $(PLUGINS); do ln -f $@ $(BIN)/$$p 2>/dev/null || cp -f $@ $(BIN)/$$p || exit 1; done
# The shim without cgo: a static executable maps no libc, 0.1 MB less
# resident per shim.
$(BIN)/keel-runtime-runc-shim: FORCE
	CGO_ENABLED=0 $(GO) build -trimpath -tags "$(GOTAGS)" -ldflags "$(LDFLAGS)" -o $@ ./cmd/keel-runtime-runc-shim
$(BIN)/keel-cri: FORCE
	$(GO) build -trimpath -tags "$(GOTAGS)" -ldflags "$(LDFLAGS)" -o $@ ./cmd/keel-cri
# The pods' pause process: static, as keel-cri copies it alone into the
# pause image it makes.
$(BIN)/keel-pause: FORCE
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "$(LDFLAGS)" -o $@ ./cmd/keel-pause
FORCE:

# install builds, then installs what $(BIN) holds (install-files alone
# installs without building). The plugins stay hard links of keel-plugins.
# config.hcl is `keeld config default`, never written over an existing one.
install: build
	$(MAKE) install-files
install-files:
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(UNITDIR) $(DESTDIR)$(SYSCONFDIR)/keel
	for b in $(BINARIES); do install -m 0755 $(BIN)/$$b $(DESTDIR)$(PREFIX)/bin/$$b || exit 1; done
	for p in $(PLUGINS); do ln -f $(DESTDIR)$(PREFIX)/bin/keel-plugins $(DESTDIR)$(PREFIX)/bin/$$p 2>/dev/null || \
		cp -f $(DESTDIR)$(PREFIX)/bin/keel-plugins $(DESTDIR)$(PREFIX)/bin/$$p || exit 1; done
	sed -e 's|@PREFIX@|$(PREFIX)|g' -e 's|@SYSCONFDIR@|$(SYSCONFDIR)|g' packaging/systemd/keeld.service > $(DESTDIR)$(UNITDIR)/keeld.service
	chmod 0644 $(DESTDIR)$(UNITDIR)/keeld.service
	test -e $(DESTDIR)$(SYSCONFDIR)/keel/config.hcl || \
		{ $(BIN)/keeld config default > $(DESTDIR)$(SYSCONFDIR)/keel/config.hcl.tmp && \
		  mv $(DESTDIR)$(SYSCONFDIR)/keel/config.hcl.tmp $(DESTDIR)$(SYSCONFDIR)/keel/config.hcl; }

# Installs into temp dirs and checks the layout, the unit (systemd-analyze
# verify) and the config; .ci/run runs it.
verify-install: build
	scripts/verify-install.sh

# 30m, not go test's 10m: test/e2e pulls a 95 MB Debian image onto three
# snapshotters and runs under KEEL_TEST_LOAD in CI.
# Every module: keel's, the SDK's (sdk/go.mod, what plugin authors require)
# and each third-party plugin's (test/thirdparty/<name>, written from
# docs/writing-a-plugin.md alone; test/conformance runs keel conformance on it).
test: build
	for m in $(MODULES); do (cd $$m && KEEL_BIN=$(CURDIR)/$(BIN) $(GO) test -race -count=1 -timeout 30m ./...) || exit 1; done

# The crash trials (SIGKILL of keeld, each plugin and a shim mid-operation)
# at full length, and the full-disk test; `make test` runs 2 trials per
# process kind. KEEL_FAULT_SEED=N replays a run.
KEEL_FAULT_TRIALS ?= 20
faults: build
	KEEL_BIN=$(CURDIR)/$(BIN) KEEL_FAULT_TRIALS=$(KEEL_FAULT_TRIALS) $(GO) test -race -count=1 -timeout 60m -parallel 6 -v \
		-run '^(TestCrash|TestDiskFull)$$' ./test/e2e/

conformance: build
	$(BIN)/keel conformance --kind snapshotter $(BIN)/keel-snapshotter-native
	$(BIN)/keel conformance --kind snapshotter $(BIN)/keel-snapshotter-overlay
	$(BIN)/keel conformance --kind snapshotter $(BIN)/keel-snapshotter-btrfs
	$(BIN)/keel conformance --kind content $(BIN)/keel-content-local
	$(BIN)/keel conformance --kind resolver $(BIN)/keel-resolver-docker
	$(BIN)/keel conformance --kind runtime $(BIN)/keel-runtime-runc

# Every figure of keel's side-by-side table, keel and Debian's containerd
# 1.6 (ctr) in the same run: KEEL_BENCH_ROUNDS interleaved pairs per figure,
# then a markdown summary (both medians, min–max, the median per-pair ratio
# keel/containerd, the references), also written to KEEL_BENCH_OUT. It
# reports and never asserts. Debian's containerd is installed when missing.
# KEEL_BENCH is the go test -bench regexp: '.' adds keel's own diagnostics
# (raw ceilings, CPU per process, per-call percentiles, deep chains, btrfs).
# KEEL_BENCH_DIR puts the daemons' roots on another disk (not tmpfs).
KEEL_BENCH        ?= ^BenchmarkFigure
KEEL_BENCH_ROUNDS ?= 5
KEEL_BENCH_OUT    ?= $(CURDIR)/$(BIN)/bench.md
bench: build
	@command -v containerd >/dev/null && command -v ctr >/dev/null || \
		DEBIAN_FRONTEND=noninteractive apt-get install -y containerd || \
		{ apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y containerd; }
	KEEL_BIN=$(CURDIR)/$(BIN) KEEL_BENCH_ROUNDS=$(KEEL_BENCH_ROUNDS) KEEL_BENCH_OUT=$(KEEL_BENCH_OUT) \
		$(GO) test -run '^$$' -bench '$(KEEL_BENCH)' -benchtime 1x -count 1 -timeout 4h ./test/bench/

# critest (sigs.k8s.io/cri-tools v1.37.0, built once from the module
# proxy into /var/cache/keel-test) against a CRI runtime, offline:
# stand-ins of the images it pulls are served from a loopback
# docker-registry (test/critest): against Debian's containerd 1.6 with
# its CRI plugin (the reference; installed when missing), then keeld with
# keel-cri, which must pass every spec containerd passes.
# KEEL_CRITEST_TARGET=containerd or keel runs one. It prints every spec
# that did not pass with its reason and writes the summaries to
# KEEL_CRITEST_OUT (-<target> added when both run), critest's output and
# the runtime's log beside it. make test runs both: about 4 minutes here.
KEEL_CRITEST_TARGET ?=
KEEL_CRITEST_OUT    ?= $(CURDIR)/$(BIN)/critest.md
critest: build
	@command -v containerd >/dev/null || \
		DEBIAN_FRONTEND=noninteractive apt-get install -y containerd || \
		{ apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y containerd; }
	KEEL_BIN=$(CURDIR)/$(BIN) KEEL_CRITEST_TARGET=$(KEEL_CRITEST_TARGET) KEEL_CRITEST_OUT=$(KEEL_CRITEST_OUT) \
		$(GO) test -count=1 -timeout 60m -v -run '^TestCritest$$' ./test/critest/

# Each fuzz target for FUZZTIME (go test -fuzztime), one after the other;
# CI runs them for 10s each after make test.
FUZZTIME  ?= 60s
fuzz:
	FUZZTIME=$(FUZZTIME) scripts/fuzz.sh

vet:
	for m in $(MODULES); do (cd $$m && $(GO) vet ./...) || exit 1; done

# gofmt (any file it lists fails), go vet and staticcheck over every module.
lint: staticcheck
	@out=$$(gofmt -l $$(git ls-files '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt -l lists files not formatted:" >&2; echo "$$out" >&2; exit 1; fi
	for m in $(MODULES); do (cd $$m && $(GO) vet ./... && $(STATICCHECK) ./...) || exit 1; done

# staticcheck at STATICCHECK_VERSION, installed from the module proxy unless
# that version is already there.
staticcheck:
	@$(STATICCHECK) -version 2>/dev/null | grep -qF '($(STATICCHECK_VERSION:v%=%))' || \
		$(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)

tools:
	$(GO) install google.golang.org/protobuf/cmd/protoc-gen-go@$(PROTOC_GEN_GO_VERSION)
	$(GO) install google.golang.org/grpc/cmd/protoc-gen-go-grpc@$(PROTOC_GEN_GO_GRPC_VERSION)

# keel.types.v1 (sdk/proto) holds the messages both APIs share (Descriptor,
# Platform); keel.plugin.v1 and keel.v1 import it.
proto: tools
	PATH="$$($(GO) env GOPATH)/bin:$$PATH" protoc -I sdk/proto \
		--go_out=sdk/proto --go_opt=paths=source_relative \
		sdk/proto/keel/types/v1/*.proto
	PATH="$$($(GO) env GOPATH)/bin:$$PATH" protoc -I sdk/internal/proto -I sdk/proto \
		--go_out=sdk/internal/proto --go_opt=paths=source_relative \
		--go-grpc_out=sdk/internal/proto --go-grpc_opt=paths=source_relative \
		sdk/internal/proto/keel/plugin/v1/*.proto
	PATH="$$($(GO) env GOPATH)/bin:$$PATH" protoc -I api -I sdk/proto \
		--go_out=api --go_opt=paths=source_relative \
		--go-grpc_out=api --go-grpc_opt=paths=source_relative \
		api/keel/v1/*.proto

clean:
	rm -rf $(BIN)

demo:
	scripts/demo.sh
