#!/usr/bin/env bash
# spikefed on Flower, two ways (docs/deployment.md).
#  1. `spikefed flower demo`: SuperLink + 3 SuperNodes on 127.0.0.1, 3 rounds, everything stopped afterwards.
#  2. The same by hand, as on separate machines (TLS with a local CA): start the processes, submit, stop by PID.
set -euo pipefail
export OMP_NUM_THREADS=1
# CI (SPIKEFED_EXAMPLE_SMALL=1): 2 SuperNodes, one round, one local epoch; the same processes and steps (3 nodes:
# tests/deploy/test_flower.py runs the demo and a TLS federation with 3)
nodes=3; rounds=3; epochs=2; hand_rounds=2
if [ "${SPIKEFED_EXAMPLE_SMALL:-0}" = 1 ]; then nodes=2; rounds=1; epochs=1; hand_rounds=1; fi

spikefed flower demo --nodes "$nodes" --rounds "$rounds" --set "local.epochs=$epochs" --json

work=$(mktemp -d)
export FLWR_HOME="$work/flwr-home"
pids=()
cleanup() { for p in "${pids[@]}"; do pkill -TERM -P "$p" 2>/dev/null || true; kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT INT TERM

spikefed flower certs "$work/certs"
port=$(python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
flower-superlink --host 127.0.0.1 --port "$port" --disable-runtime-dependency-installation \
    --ssl-ca-certfile "$work/certs/ca.crt" --ssl-certfile "$work/certs/server.crt" \
    --ssl-keyfile "$work/certs/server.key" > "$work/superlink.log" 2>&1 &
pids+=($!)
for k in $(seq 0 $((nodes - 1))); do
    flower-supernode --superlink "127.0.0.1:$port" --root-certificates "$work/certs/ca.crt" \
        --port "$(python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')" \
        --node-config "partition-id=$k num-partitions=$nodes" > "$work/supernode$k.log" 2>&1 &
    pids+=($!)
done
spikefed flower run --superlink "127.0.0.1:$port" --root-certificates "$work/certs/ca.crt" \
    --set "partition.num_clients=$nodes" --set federation.fraction=1.0 --set "federation.rounds=$hand_rounds" \
    --set local.epochs=1 --out "$work/out" --json
echo "results: $work/out"
