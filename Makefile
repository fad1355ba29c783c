# skiff: `make help` lists the targets.
SHELL := /bin/bash
GO ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X main.version=$(VERSION)
BIN := bin/skiff
PROTOC_GEN := $(CURDIR)/.bin
PROTOS := meta.proto core.proto apps.proto object.proto raft.proto api.proto node.proto
# Containers get Docker's default seccomp filter only when libcontainer is
# built with cgo and libseccomp (Debian libseccomp-dev); `make deps` installs
# it. GOFLAGS reaches every go command, also the builds the tests run.
export GOFLAGS := -tags=seccomp

.PHONY: help deps build run test unit e2e chaos bench bench-compare proto verify clean

help: ## list the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-8s %s\n", $$1, $$2}'

deps: ## install what the build and tests need (libseccomp-dev; nftables and iproute2 for the e2e network tests), if missing
	@command -v pkg-config >/dev/null && pkg-config --exists libseccomp && command -v nft >/dev/null && command -v ip >/dev/null || \
		{ apt-get update -qq && apt-get install -y -qq pkg-config libseccomp-dev nftables iproute2; }

build: deps ## build bin/skiff and bin/skiff-shim (the workers' container shim; install both together)
	$(GO) build -ldflags "$(LDFLAGS)" -o bin/ ./cmd/skiff ./cmd/skiff-shim

run: build ## run a local cluster: three masters, a worker and a demo image (Ctrl-C stops it)
	CGO_ENABLED=0 $(GO) build -o bin/hello ./examples/hello
	./$(BIN) dev --demo-binary bin/hello

test: deps ## all tests: unit (with -race) and the short end-to-end suite
	$(GO) vet ./...
	$(GO) test -race -count=1 -timeout 20m ./...

unit: deps ## unit tests only (no e2e)
	$(GO) test -race -count=1 $$($(GO) list ./... | grep -v /e2e)

e2e: deps ## end-to-end tests with real processes
	$(GO) test -count=1 -timeout 30m -v ./e2e/

# CHAOSFLAGS passes flags to the chaos suite, e.g.
# CHAOSFLAGS='-chaos.duration 5m -chaos.kill-interval 3s -chaos.report chaos.json'
# (all: go test ./e2e -args -h | grep chaos). The short version runs in `make test`.
CHAOSFLAGS ?=

chaos: deps ## the full chaos suite (~15 min): kills, pauses, partitions, restarts; tables + JSON report
	$(GO) test -count=1 -timeout 90m -v ./e2e/ -run Chaos -chaos.full $(CHAOSFLAGS)

# BENCH=name runs one benchmark (micro, raft, writes, failover, scale,
# scheduling, podstart, serviceproxy, compare-writes, compare-failover) or a
# group (all: the first eight, the last three of them as root only; cluster:
# those three; compare); BENCHFLAGS passes flags to skiffbench,
# e.g. BENCHFLAGS=-quick for small sizes (go run ./bench/cmd/skiffbench -h).
BENCH ?= all
BENCHFLAGS ?=

bench: build ## benchmark suite (~10 min): one table, bench/results.json; BENCH=name for one
	@# podstart's reference is Debian's runc; podstart runs (in all) as root only.
	@case ",$(BENCH)," in *,all,*|*,cluster,*|*,podstart,*) [ "$$(id -u)" != 0 ] || command -v runc >/dev/null || \
		{ apt-get update -qq && apt-get install -y -qq runc; } ;; esac
	$(GO) run ./bench/cmd/skiffbench -skiff $(BIN) -bench $(BENCH) $(BENCHFLAGS)

bench-compare: build ## skiff vs a 3-member etcd (installs Debian's etcd-server), interleaved
	@command -v etcd >/dev/null || { apt-get update -qq && apt-get install -y -qq etcd-server etcd-client; }
	$(GO) run ./bench/cmd/skiffbench -skiff $(BIN) -bench compare -out bench/results-compare.json $(BENCHFLAGS)

# The vtproto generator is pinned here, not by go.mod: grpc requires a later
# vtprotobuf commit as a library, and that commit's generator miscounts the
# size of a oneof holding a nil message (fixed upstream only later, #137).
# The library packages the generated code uses are the same in both.
VTPROTO := github.com/planetscale/vtprotobuf/cmd/protoc-gen-go-vtproto@v0.6.0

proto: ## regenerate the protobuf, gRPC and vtprotobuf code (installs protoc from Debian if missing)
	@command -v protoc >/dev/null || { apt-get update -qq && apt-get install -y -qq protobuf-compiler; }
	GOBIN=$(PROTOC_GEN) $(GO) install google.golang.org/protobuf/cmd/protoc-gen-go google.golang.org/grpc/cmd/protoc-gen-go-grpc
	GOBIN=$(PROTOC_GEN) $(GO) install $(VTPROTO)
	cd proto && PATH=$(PROTOC_GEN):$$PATH protoc -I . --go_out=. --go_opt=paths=source_relative \
		--go-grpc_out=. --go-grpc_opt=paths=source_relative \
		--go-vtproto_out=. --go-vtproto_opt=paths=source_relative,features=marshal+unmarshal+size+clone $(PROTOS)
	$(GO) run ./proto/internal/vtsortmaps proto/*_vtproto.pb.go

verify: ## formatting, vet, and that generated code matches the .proto files
	@test -z "$$(gofmt -l $$(git ls-files '*.go' | grep -v '\.pb\.go$$'))" || { gofmt -l $$(git ls-files '*.go' | grep -v '\.pb\.go$$'); echo "run gofmt -w"; exit 1; }
	$(GO) vet ./...
	$(MAKE) proto
	git diff --exit-code -- proto/ || { echo "generated code is stale: commit the output of make proto"; exit 1; }
	@test -z "$$(git status --porcelain -- proto/)" || { git status --porcelain -- proto/; echo "generated code is stale or uncommitted: commit the output of make proto"; exit 1; }

clean: ## remove build output
	rm -rf bin .bin
