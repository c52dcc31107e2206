# Tandem build. `make` lists the targets.
SHELL := /bin/bash
GO ?= go
BIN := $(CURDIR)/bin
MODEL_DIR ?= $(or $(TANDEM_MODEL_DIR),$(HOME)/.cache/tandem/models)
MODEL ?= $(MODEL_DIR)/SmolLM2-135M-Instruct.Q4_1.gguf
PROTOC_GEN_GO_VERSION := v1.36.11
PROTOC_GEN_GO_GRPC_VERSION := v1.5.1
FUZZTIME ?= 10s
# The fuzz run inside `make test` is bounded by executions, not wall time: Go
# 1.26's fuzz coordinator can fail a target with a bare "context deadline
# exceeded" when a -fuzztime duration expires on a loaded machine
# (go.dev/issue/75804, fixed in Go 1.27), which no input caused.
FUZZEXECS ?= 100000x
export PATH := $(BIN):$(PATH)

.PHONY: help build run test test-e2e bench fuzz proto proto-check lint kernels check model tools

help: ## list targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

build: ## build bin/tandem and bin/tandemctl
	$(GO) build -o $(BIN)/ ./cmd/...

model: ## fetch the default model into $(MODEL_DIR) if missing
	@scripts/fetch-model.sh

run: model build ## start a local cluster (coordinator, gateway, prefill, decode) on the CPU backend
	$(BIN)/tandem dev --model $(MODEL)

test: model kernels-if-nvcc ## vet, unit and fuzz-seed tests (race detector on), a short fuzz run, then the end-to-end suite
	$(GO) vet ./...
	TANDEM_MODEL=$(MODEL) $(GO) test -race -count=1 ./...
	$(GO) test -run '^$$' -fuzz '^FuzzParse$$' -fuzztime $(FUZZEXECS) -fuzzminimizetime 2000x ./model/gguf
	$(MAKE) --no-print-directory test-e2e

test-e2e: model build ## multi-process end-to-end tests on loopback
	TANDEM_MODEL=$(MODEL) TANDEM_BIN=$(BIN)/tandem $(GO) test -count=1 -tags e2e ./test/e2e/...

bench: model ## kernel and engine micro-benchmarks
	TANDEM_MODEL=$(MODEL) $(GO) test -run '^$$' -bench . -benchtime 2x ./kernels/... ./engine/...

fuzz: ## run every fuzz target for $(FUZZTIME)
	@scripts/fuzz.sh $(FUZZTIME)

tools: ## install pinned protobuf code generators into bin/
	GOBIN=$(BIN) $(GO) install google.golang.org/protobuf/cmd/protoc-gen-go@$(PROTOC_GEN_GO_VERSION)
	GOBIN=$(BIN) $(GO) install google.golang.org/grpc/cmd/protoc-gen-go-grpc@$(PROTOC_GEN_GO_GRPC_VERSION)
	@command -v protoc >/dev/null || { echo "protoc missing: apt-get install -y protobuf-compiler"; exit 1; }

proto: tools ## regenerate Go code from proto/**/*.proto
	cd proto && for f in $$(find . -name '*.proto' | sort); do \
		protoc -I . --go_out=. --go_opt=paths=source_relative \
			--go-grpc_out=. --go-grpc_opt=paths=source_relative $$f || exit 1; done

proto-check: proto ## fail when checked-in generated code is stale
	@git diff --exit-code -- proto || { echo "proto: generated code is stale; run make proto"; exit 1; }

lint: ## gofmt and go vet
	@out=$$(gofmt -l $$(git ls-files '*.go')); [ -z "$$out" ] || { echo "gofmt: $$out"; exit 1; }
	$(GO) vet ./...

kernels: ## build the CUDA kernel library (needs nvcc)
	@scripts/build-cuda.sh

CUDA_PYPI ?= $(or $(TANDEM_CUDA_PYPI),$(HOME)/.cache/tandem/cuda-pypi)
kernels-if-nvcc: # build the kernels when any nvcc that build-cuda.sh searches is present
	@if [ -n "$$NVCC" ] || command -v nvcc >/dev/null || [ -x /usr/local/cuda/bin/nvcc ] || [ -x "$(CUDA_PYPI)/nvidia/cu13/bin/nvcc" ]; then \
		scripts/build-cuda.sh; else echo "nvcc not found: skipping CUDA kernel build (scripts/install-cuda-pypi.sh installs one)"; fi

check: lint test ## everything CI runs
