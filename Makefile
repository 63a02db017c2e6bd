# Shoal build targets. `make test` is what CI runs (via .ci/run -> scripts/test.sh).
GO ?= go
PROTOC_GEN_GO_VERSION := v1.36.12
PROTOC_GEN_GO_GRPC_VERSION := v1.6.2
GRPC_GATEWAY_VERSION := v2.34.0
BIN := bin/shoal
GOTAGS ?= seccomp
export GOFLAGS := -tags=$(GOTAGS)

.PHONY: all build demo-image bench-runtime proto test unit e2e bench dev tools clean

all: build

# bin/shoal-init is the static init of tasks with --init; bin/shoal-shim
# is each task's shim, container init and (C) supervisor. The runtime looks
# for both beside bin/shoal. bin/shoal-shim is static: flags as
# runtime.ShimBuildArgs (agent/runtime/shimbin_linux.go).
build:
	$(GO) build -tags '$(GOTAGS)' -o $(BIN) ./cmd/shoal
	$(GO) build -tags '$(GOTAGS),netgo,osusergo' -ldflags '-s -w -linkmode external -extldflags -static' -o bin/shoal-shim ./cmd/shoal-shim
	CGO_ENABLED=0 GOFLAGS= $(GO) build -ldflags '-s -w' -o bin/shoal-init ./cmd/shoal-init

# The demo image (demo:latest): the static demo program packaged as an OCI
# archive by our own tool. `shoal dev` loads bin/demo.oci.tar when present.
demo-image:
	CGO_ENABLED=0 GOFLAGS= $(GO) build -o bin/shoal-demo ./cmd/shoal-demo
	GOFLAGS= $(GO) run ./cmd/shoal-mkimage --binary bin/shoal-demo --out bin/demo.oci.tar

# Regenerates the committed Go code beside the .proto files with pinned
# generators (protoc from Debian's protobuf-compiler).
tools:
	GOBIN=$(CURDIR)/bin $(GO) install google.golang.org/protobuf/cmd/protoc-gen-go@$(PROTOC_GEN_GO_VERSION)
	GOBIN=$(CURDIR)/bin $(GO) install google.golang.org/grpc/cmd/protoc-gen-go-grpc@$(PROTOC_GEN_GO_GRPC_VERSION)
	GOBIN=$(CURDIR)/bin $(GO) install github.com/grpc-ecosystem/grpc-gateway/v2/protoc-gen-grpc-gateway@$(GRPC_GATEWAY_VERSION)
	GOBIN=$(CURDIR)/bin $(GO) install github.com/grpc-ecosystem/grpc-gateway/v2/protoc-gen-openapiv2@$(GRPC_GATEWAY_VERSION)

proto: tools
	cd proto && PATH=$(CURDIR)/bin:$$PATH protoc -I . \
		--go_out=paths=source_relative:. \
		--go-grpc_out=paths=source_relative:. \
		shoalv1/*.proto
	# The HTTP/JSON gateway and its OpenAPI document, from the HTTP rules in
	# shoalv1/http.yaml (no google.api annotations in the .proto files).
	cd proto && PATH=$(CURDIR)/bin:$$PATH protoc -I . \
		--grpc-gateway_out=paths=source_relative,grpc_api_configuration=shoalv1/http.yaml:. \
		--openapiv2_out=grpc_api_configuration=shoalv1/http.yaml,allow_merge=true,merge_file_name=openapi,json_names_for_fields=true:../manager/httpapi \
		shoalv1/control.proto shoalv1/logs.proto shoalv1/ops.proto shoalv1/objects.proto shoalv1/store.proto

test:
	bash scripts/test.sh

unit:
	$(GO) test $$($(GO) list ./... | grep -v /e2e)

e2e:
	$(GO) test -count=1 -p 1 -v ./e2e/...

# Whole-cluster figures (writes/s vs etcd, failover, node-down, containers:
# create→RUNNING, 100 replicas, RSS); see bench/doc.go.
bench:
	cd bench && $(GO) run . -failover 10 -nodedown 10 -containers 20 -replicas 100 -only all

# The README's writes table: six runs of the throughput cells (3 managers vs
# a 3-member etcd), ranges and medians; BASE=path/to/other/shoal interleaves
# another build; ETCD_TLS=1 runs etcd with mutual TLS as shoal has. Reports
# in bench-runs/ (emptied first).
bench-writes: build
	rm -rf bench-runs && cd bench && $(GO) run . -shoal-bin ../$(BIN) -managers 3 -only all -runs 6 -json-dir ../bench-runs $(if $(BASE),-base-bin $(abspath $(BASE))) $(if $(ETCD_TLS),-etcd-tls)

# Container lifecycle of the embedded runtime vs the runc CLI, same rootfs,
# interleaved, 100 each (root).
bench-runtime: build
	./$(BIN) debug runtime-bench --n 100

dev: build demo-image
	./$(BIN) dev

clean:
	rm -rf bin
