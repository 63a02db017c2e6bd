#!/usr/bin/env bash
# Main job: set-up, build, then a one-node shoal cluster (manager + agent,
# real containers) on 127.0.0.1 with the demo image loaded and a 3-replica
# demo service running. Ctrl-C stops the node.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then
	echo "dev: shoal runs containers (namespaces, cgroups, overlayfs): run as root" >&2
	exit 1
fi
bash scripts/setup.sh
make build demo-image
data=${SHOAL_DEV_DIR:-$(mktemp -d /tmp/shoal-dev.XXXXXX)}
# Own session: Ctrl-C reaches this script, which removes the services
# before it stops the node.
setsid bin/shoal dev --data-dir "$data" &
dev=$!
export SHOAL_DATA_DIR=$data
# A node that stops leaves its containers running (a restarted agent
# re-adopts them). Trying shoal out should not leave them behind: remove
# the services (rm waits for their tasks to stop), wait for the tasks to
# be deleted, then stop the node.
stop() {
	trap - EXIT INT TERM
	if kill -0 $dev 2>/dev/null; then
		svcs=$(timeout 10 bin/shoal service ls -q 2>/dev/null || true)
		if [ -n "$svcs" ]; then
			echo "dev: removing services: $svcs"
			timeout 40 bin/shoal service rm --wait-timeout 30s $svcs >/dev/null 2>&1 || true
			for _ in $(seq 200); do
				[ -z "$(timeout 5 bin/shoal task ls -q 2>/dev/null)" ] && break
				sleep 0.1
			done
		fi
		kill $dev 2>/dev/null
	fi
	wait $dev 2>/dev/null
}
trap stop EXIT INT TERM
for _ in $(seq 100); do
	bin/shoal node ls >/dev/null 2>&1 && break
	kill -0 $dev || exit 1
	sleep 0.1
done
bin/shoal service inspect demo >/dev/null 2>&1 ||
	bin/shoal service create --name demo --replicas 3 --env GREETING=hello --no-resolve-image demo:latest
bin/shoal node ls
bin/shoal service ps demo
ip=$(bin/shoal service ps demo --format json | tr -d ' \n' | grep -o '"addresses":\["[0-9.]*' | head -1 | grep -o '[0-9.]*$' || true)
if [ -n "$ip" ]; then
	echo
	echo "\$ curl -s http://$ip:8080/"
	curl -s --max-time 5 "http://$ip:8080/" || true
fi
cat <<MSG

shoal dev is running (data dir $data). Try, in another shell:
    export SHOAL_DATA_DIR=$data
    $PWD/bin/shoal service ps demo
    curl http://${ip:-<task IP>}:8080/
    $PWD/bin/shoal service logs -f demo
    $PWD/bin/shoal service scale demo=5
    $PWD/bin/shoal service rm demo
Ctrl-C stops it.
MSG
wait $dev
