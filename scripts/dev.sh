#!/usr/bin/env bash
# Main job: set-up, build, then a one-node shoal cluster (manager + agent) on
# 127.0.0.1 with a demo service. Ctrl-C stops the cluster.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
make build
data=${SHOAL_DEV_DIR:-$(mktemp -d /tmp/shoal-dev.XXXXXX)}
bin/shoal dev --data-dir "$data" &
dev=$!
trap 'kill $dev 2>/dev/null; wait $dev 2>/dev/null' EXIT INT TERM
export SHOAL_DATA_DIR=$data
for _ in $(seq 100); do
	bin/shoal node ls >/dev/null 2>&1 && break
	kill -0 $dev || exit 1
	sleep 0.1
done
bin/shoal service inspect demo >/dev/null 2>&1 ||
	bin/shoal service create --name demo --replicas 3 --env GREETING=hello demo:latest
bin/shoal node ls
bin/shoal service ps demo
cat <<MSG

shoal dev is running (data dir $data). Try, in another shell:
    export SHOAL_DATA_DIR=$data
    $PWD/bin/shoal service ls
    $PWD/bin/shoal service scale demo=5
    $PWD/bin/shoal events
Ctrl-C stops it.
MSG
wait $dev
