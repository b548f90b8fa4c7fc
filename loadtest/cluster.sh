#!/bin/bash
# The cluster's measurements (README, "Cluster"): a nats-server (Debian's,
# JetStream on) and three dormouse nodes of one core each, or one node of
# two cores, then `dormouse-loadtest fanout` over them; all on loopback
# (ports 4100-4103, NATS 4333, monitoring 8333), stopped when it ends.
# Build first: cargo build --release -p dormouse --bin dormouse && cargo build --release -p dormouse-loadtest
# usage: [PARTY=chat] loadtest/cluster.sh cluster|single <fanout args>
# PARTY=chat: the built-in chat kind, which stores every message (strict
# durability: delivered once committed, in a cluster once in the room's
# JetStream journal too); default: main, a relay.
set -u
party=${PARTY:-main}
WORK=$(mktemp -d)
mode=$1; shift
args="$*"
BIN="$(cd "$(dirname "$0")/.." && pwd)/target/release"
ulimit -n 20000
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done; wait 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT
conf() { # name port cores cluster?
  cat > $WORK/$1.toml <<T
listen = "127.0.0.1:$2"
cores = $3
data_dir = "$WORK/$1"
publish_token = "measure-token-0123456789"
[parties.main]
kind = "relay"
[parties.chat]
kind = "chat"
T
  if [ "$4" = yes ]; then cat >> $WORK/$1.toml <<T
[cluster]
nats = ["nats://127.0.0.1:4333"]
node_id = "$1"
T
  fi
}
wait_port() { for i in $(seq 1 200); do (echo > /dev/tcp/127.0.0.1/$1) 2>/dev/null && return 0; sleep 0.05; done; echo "port $1 never opened"; exit 1; }
if [ "$mode" = cluster ]; then
  mkdir -p $WORK/nats
  /usr/sbin/nats-server -js -a 127.0.0.1 -p 4333 -m 8333 -sd $WORK/nats > $WORK/nats.log 2>&1 &
  pids+=($!)
  wait_port 4333
  urls=""
  for n in a b c; do
    port=$((4100 + $(printf '%d' "'$n") - 96))
    conf $n $port 1 yes
    $BIN/dormouse serve --config $WORK/$n.toml > $WORK/$n.log 2>&1 &
    pids+=($!)
    wait_port $port
    urls="$urls${urls:+,}ws://127.0.0.1:$port/parties/$party/{room}"
  done
  # all three see each other
  for port in 4101 4102 4103; do
    for i in $(seq 1 200); do
      n=$(curl -s http://127.0.0.1:$port/metrics | awk '$1=="dormouse_cluster_nodes"{print $2}')
      [ "$n" = 3 ] && break; sleep 0.05
    done
  done
  before=$(curl -s http://127.0.0.1:8333/varz | python3 -c 'import json,sys; v=json.load(sys.stdin); print(v["in_msgs"], v["in_bytes"])')
else
  conf s 4100 2 no
  $BIN/dormouse serve --config $WORK/s.toml > $WORK/s.log 2>&1 &
  pids+=($!)
  wait_port 4100
  urls="ws://127.0.0.1:4100/parties/$party/{room}"
fi
$BIN/dormouse-loadtest fanout --url "$urls" $args
if [ "$mode" = cluster ]; then
  after=$(curl -s http://127.0.0.1:8333/varz | python3 -c 'import json,sys; v=json.load(sys.stdin); print(v["in_msgs"], v["in_bytes"])')
  echo "nats in (msgs bytes): before $before after $after"
  for port in 4101 4102 4103; do echo "node $port leases: $(curl -s http://127.0.0.1:$port/metrics | awk '$1=="dormouse_cluster_leases"{print $2}')"; done
fi
