# CasareRPA. `make dev` runs the control plane on its embedded default,
# `make test` runs every test (PostgreSQL and Redis from CASARE_TEST_DATABASE_URL
# and CASARE_TEST_REDIS_URL, defaulting to the local services).

GO       ?= go
TOOL     := $(GO) tool -modfile=rpc/tools.mod
BIN      := bin
BINARIES := $(patsubst cmd/%/main.go,$(BIN)/%,$(wildcard cmd/*/main.go))

# The version every binary reports (--version, casare_build_info, the
# version robots send), from the nearest tag.
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
REVISION ?= $(shell git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
LDFLAGS  := -X github.com/casarerpa/casare/cmd/internal/buildinfo.version=$(VERSION) \
            -X github.com/casarerpa/casare/cmd/internal/buildinfo.revision=$(REVISION)

export CASARE_TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/test?sslmode=disable
export CASARE_TEST_REDIS_URL ?= redis://127.0.0.1:6379/0

.PHONY: all build dev test test-deploy test-short chaos chaos-short bench generate generate-check lint fmt clean

all: build

build: $(BINARIES)

$(BIN)/%: FORCE
	$(GO) build -ldflags '$(LDFLAGS)' -o $@ ./cmd/$*

FORCE:

## dev: run the control plane on SQLite and an embedded Redis in ./casare-data
dev:
	$(GO) run ./cmd/casare-server --data-dir ./casare-data

## test: every test, against real PostgreSQL and Redis as well as the embedded default
test:
	$(GO) test -count=1 -timeout 20m ./...
	cd deploy && $(GO) test -count=1 -timeout 10m ./...

## test-deploy: the checks of deploy/ alone (chart, compose, Dockerfiles, systemd units)
test-deploy:
	cd deploy && $(GO) test -count=1 -timeout 10m ./...

## chaos: the long fault suite, 1,200 random faults over 22 minutes on 3 replicas and 12 robots
## (CHAOS_DURATION, CHAOS_FAULTS, CHAOS_AGENTS change it; CASARE_CHAOS_LOGS keeps the logs of a failed run)
CHAOS_DURATION ?= 22m
CHAOS_FAULTS ?= 1200
CHAOS_AGENTS ?= 12
chaos:
	$(GO) test -count=1 -timeout 60m -run '^TestChaos$$' -v ./cmd/e2e -chaos.duration $(CHAOS_DURATION) -chaos.faults $(CHAOS_FAULTS) -chaos.agents $(CHAOS_AGENTS)

## chaos-short: the fault suite's short run (part of make test), 50 faults in 60 s on 3 replicas and 10 robots
chaos-short:
	$(GO) test -count=1 -timeout 15m -run '^TestChaos$$' -v ./cmd/e2e

## bench: the benchmarks, against PostgreSQL and Redis
bench:
	$(GO) test -run '^$$' -bench . -benchtime 5s -timeout 30m ./...

## generate: regenerate the API code from rpc/ with the pinned tools, the workflow schema and the step catalogue
generate:
	cd rpc/internal/protodeps && $(GO) run . ../..
	$(TOOL) buf generate --path rpc/casare --path rpc/grpc
	$(GO) generate ./agent/step/library

## generate-check: fail when a generated file (API code, workflow schema, step catalogue and spec table) is not what make generate writes
GENERATED := rpc agent/workflow/workflow.schema.json agent/workflow/builtin agent/step/library/CATALOGUE.md
generate-check: generate
	@out=$$(git status --porcelain -- $(GENERATED)); if [ -n "$$out" ]; then echo "make generate changed generated files; commit them:"; echo "$$out"; exit 1; fi

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	cd deploy && $(GO) vet ./...
	cd rpc/internal/protodeps && $(GO) run . ../..
	$(TOOL) buf lint

fmt:
	gofmt -w $$(git ls-files '*.go')

clean:
	rm -rf $(BIN)
