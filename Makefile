# nsbox — build, demo, tests and benchmarks. Every target installs what it needs
# (Debian packages via scripts/install-deps.sh, Go modules via the Go toolchain). Run as root.

GO        ?= go
TAGS      := seccomp netgo osusergo
# The init without libseccomp: the daemon compiles the sandboxes' filter once and their agents
# load it (nsbox/libcontainer/seccomp.go); an init given a profile to compile fails the start.
INIT_TAGS := netgo osusergo
VERSION   ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
# Static, so the same binary runs as the agent inside images without a libc (busybox).
LDFLAGS   := -X main.version=$(VERSION) -extldflags -static
BIN       := bin/nsbox
export CGO_ENABLED := 1
export PATH := $(PATH):/usr/local/go/bin

# The web terminal's xterm.js, fetched with npm (ui/package-lock.json) and embedded (package ui).
UI_VENDOR := ui/assets/vendor/xterm.mjs

PREFIX    ?= /usr/local
UNITDIR   ?= /etc/systemd/system

.PHONY: all build deps demo sdk test test-package bench vet fmt clean install deb

all: build

deps:
	scripts/install-deps.sh

# The agent and the init first: nsbox embeds them (cmd/nsbox/agentbin.go); sandboxes run the
# agent as PID 1, and containers are set up by the init (cmd/nsbox/runcinit.go).
build: deps $(UI_VENDOR)
	$(GO) build -tags "$(TAGS)" -ldflags "$(LDFLAGS) -s -w" -o cmd/nsbox/agentbin/nsbox-agent ./cmd/nsbox-agent
	sha256sum cmd/nsbox/agentbin/nsbox-agent | cut -c1-16 > cmd/nsbox/agentbin/nsbox-agent.sum
	$(GO) build -tags "$(INIT_TAGS)" -ldflags "$(LDFLAGS) -s -w" -o cmd/nsbox/agentbin/nsbox-init ./cmd/nsbox-init
	sha256sum cmd/nsbox/agentbin/nsbox-init | cut -c1-16 > cmd/nsbox/agentbin/nsbox-init.sum
	$(GO) build -tags "$(TAGS)" -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/nsbox

$(UI_VENDOR): ui/package.json ui/package-lock.json scripts/ui-assets.sh
	scripts/ui-assets.sh

demo:
	scripts/demo.sh

vet:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo "gofmt needed"; exit 1; }
	$(GO) vet -tags "$(TAGS)" ./...

# The TypeScript SDK: its packages from the npm registry (package-lock.json), a check that its
# wire types are generated from api/openapi.json as committed, and tsc (the Python SDK needs no build).
sdk:
	cd sdk/typescript && npm ci --no-audit --no-fund --silent && npm run --silent build

# Unit tests with the race detector, then the integration tests against the real binary (the
# SDKs' suites run from cmd/nsbox/sdk_test.go).
test: build vet sdk
	$(GO) test -race -count=1 -tags "$(TAGS)" ./api/... ./client/... ./agent/... ./session/... ./rootfs/... ./nsbox/... ./fs/... ./net/... ./proxy/... ./auth/... ./internal/... ./cmd/nsbox-agent/
	NSBOX_BIN=$(CURDIR)/$(BIN) $(GO) test -count=1 -timeout 30m -tags "$(TAGS)" -v ./cmd/nsbox/
	$(MAKE) --no-print-directory test-package

# The binary in $(PREFIX)/bin and the systemd unit (pointing at it) in $(UNITDIR); then
# `systemctl enable --now nsbox` starts the daemon.
install: build
	install -D -m 0755 $(BIN) $(DESTDIR)$(PREFIX)/bin/nsbox
	install -d $(DESTDIR)$(UNITDIR)
	sed 's|^ExecStart=/usr/bin/nsbox|ExecStart=$(PREFIX)/bin/nsbox|' scripts/nsbox.service > $(DESTDIR)$(UNITDIR)/nsbox.service
	if [ -z "$(DESTDIR)" ] && [ -d /run/systemd/system ]; then systemctl daemon-reload; fi

# The Debian package, in bin/ (scripts/deb.sh).
deb: build
	scripts/deb.sh $(BIN) $(VERSION) bin

# The unit verifies and the .deb installs, removes and purges cleanly (scripts/test-package.sh);
# make install into a scratch DESTDIR puts the binary and a unit that runs it in place.
test-package: deb
	scripts/test-package.sh $$(ls -t bin/nsbox_*.deb | head -1)
	d=$$(mktemp -d) && $(MAKE) --no-print-directory install DESTDIR=$$d >/dev/null && \
		test -x $$d$(PREFIX)/bin/nsbox && grep -qx 'ExecStart=$(PREFIX)/bin/nsbox daemon' $$d$(UNITDIR)/nsbox.service && \
		rm -rf $$d && echo "test-package: ok: make install puts the binary and its unit in place"

bench: build
	$(GO) run -tags "$(TAGS)" ./scripts/bench -nsbox $(CURDIR)/$(BIN)

fmt:
	gofmt -w $$(git ls-files '*.go')

clean:
	rm -rf bin sdk/typescript/dist sdk/typescript/node_modules
