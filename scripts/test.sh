#!/usr/bin/env bash
# The whole test suite: set-up, vet, unit tests, then the multi-host e2e
# suite (real shoal processes in network namespaces; needs root).
# Prints go test's summary lines; exits non-zero on any failure.
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh || exit 1
# The runtime refuses to start containers unless built with seccomp; every
# go command below (and the e2e harness's go build) inherits this.
export GOFLAGS="${GOFLAGS:+$GOFLAGS }-tags=seccomp"

status=0
echo "== gofmt, go vet"
unformatted=$(gofmt -l . )
if [ -n "$unformatted" ]; then echo "gofmt needed: $unformatted"; status=1; fi
go vet ./... || status=1
(cd bench && go vet ./...) || status=1

echo "== unit tests"
pkgs=$(go list ./... | grep -v '/e2e')
go test -count=1 -timeout 15m $pkgs || status=1
(cd bench && go test -count=1 ./...) || status=1

echo "== e2e tests (network namespaces, real processes)"
go test -count=1 -timeout 20m -p 1 ./e2e/... || status=1

if [ $status -eq 0 ]; then echo "== all tests passed"; else echo "== FAILURES (see above)"; fi
exit $status
