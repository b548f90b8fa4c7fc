#!/usr/bin/env bash
# Side-by-side benchmark: dormouse (its built-in relay, and PartyKit's own
# TypeScript relay run with --partykit), a Node `ws` relay and PartyKit's dev
# server, each driven in turn by the same client (`dormouse-loadtest`) on the
# same machine, in one run. Every measurement happens inside a private network
# namespace (`unshare -rn`): only loopback exists there, so nothing the
# servers do can reach the network, and the client and servers share it.
#
#   benches/peers/run.sh [OUTDIR]      (default: benches/peers/results/<UTC date>)
#
# Steps: build dormouse and the load tester in release mode; install the two
# peers from their lockfiles (npm ci); then, twice over, for each case, start a
# fresh server of each kind, run one load test against it and stop it. Writes
# every raw JSON report, the client's text output, machine.json (CPU, kernel,
# versions) and summary.md (medians of the two runs and dormouse/peer ratios).
# Needs: a Rust toolchain, Node.js >= 18 with npm, curl, util-linux `unshare`
# (unprivileged user namespaces), iproute2 `ip`. About 16 minutes on 2 cores
# (the yjs cases alone, CASES=yjs: about 8).
#
# QUICK=1 shrinks every case (for trying the script, not for numbers);
# CASES="fanout latency rooms compression yjs" (the default) picks the groups,
# SERVERS="dormouse dormouse-js node-ws partykit" (the default) the servers.
set -euo pipefail

PEERS=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$PEERS/../.." && pwd)
LT=$ROOT/target/release/dormouse-loadtest
DORMOUSE=$ROOT/target/release/dormouse

# Fan-out cases, "connections:rate": one room, one publisher, 100-byte
# messages. The rate is chosen so that every case offers the same load,
# rate x (N - 1) ~ 1,200,000 deliveries per second, more than any of the
# three servers delivers here, so each one's delivered frames/s is its
# ceiling on this machine (with the client on the same cores).
FANOUT_CASES="1000:1200 5000:240 15000:80"
# The latency case: the same room of 15,000 at a load the Node relay sustains
# (4 messages/s, 60,000 deliveries/s), so latency is not just queueing.
LATENCY_CASE="15000:4"
# The memory case: many small rooms, mostly idle (rooms x per-room).
ROOMS=500 PER_ROOM=10 ROOMS_RATE=250
# The compression case: the latency case's room and rate with 2 KB JSON text
# messages, once plain (--text) and once with permessage-deflate offered
# (--deflate); Node ws with its permessage-deflate on (DEFLATE=1). PartyKit's
# dev server is left out of it.
COMPRESSION_CASE="15000:4" COMPRESSION_BYTES=2048 COMPRESSION_SERVERS="dormouse node-ws"
# The Yjs cases (dormouse's yjs kind, the embedded config's `docs` party,
# against y-websocket's server and Hocuspocus, both as they run by default:
# documents in memory, nothing persisted), "docs:editors:editing:rate":
# one document of 1,000 editors, 2 updates/s each; many documents of 2
# editors, one of them editing slowly, held open and idle past dormouse's
# idle_evict_ms (10 s) so its documents hibernate before memory is read.
# `dormouse-sockets` is dormouse's relay under the same load: what the
# sockets alone cost, to subtract.
# A third, "presence": 100 documents of 10 editors, each typing 1 update/s
# and moving its cursor 4 times a second (awareness, relayed untimed).
YJS_BUSY_CASE="1:1000:1000:2:0" YJS_IDLE_CASE="9000:2:1:0.05:0" YJS_PRESENCE_CASE="100:10:10:1:4" YJS_HOLD_SECS=15
YJS_SERVERS=${YJS_SERVERS:-"dormouse y-websocket hocuspocus"}
# Which groups of cases run: CASES="compression" runs that one alone.
ALL_CASES="fanout latency rooms compression yjs"
CASES=${CASES:-$ALL_CASES}
PUBLISH_SECS=5 DRAIN_SECS=15 REPEATS=2
# dormouse-js is dormouse serving the PartyKit project in partykit/ (the
# same TypeScript relay PartyKit's dev server runs) with `--partykit`.
SERVERS=${SERVERS:-"dormouse dormouse-js node-ws partykit"}
if [ "${QUICK:-0}" = 1 ]; then
  FANOUT_CASES="200:100 1000:20" LATENCY_CASE="1000:5" ROOMS=20 PER_ROOM=5 ROOMS_RATE=20 COMPRESSION_CASE="1000:5"
  PUBLISH_SECS=1 DRAIN_SECS=5 REPEATS=1 YJS_BUSY_CASE="1:50:50:2:0" YJS_IDLE_CASE="100:2:1:0.5:0" YJS_PRESENCE_CASE="10:5:5:1:4" YJS_HOLD_SECS=12
fi

# --- inside the namespace: the measurements ---------------------------------

if [ "${1:-}" = --inside ]; then
  OUT=$2
  ip link set lo up
  ulimit -n 20000
  SERVER_PGID="" SAMPLE_PID="" DATA_DIR=""
  LOGS=$(mktemp -d /tmp/dormouse-bench-peers-logs.XXXXXX)

  stop_server() {
    if [ -n "$SERVER_PGID" ]; then
      # The server was started with setsid: its process group holds it and
      # only its own children (partykit's workerd and esbuild).
      kill -TERM -- "-$SERVER_PGID" 2>/dev/null || true
      for _ in $(seq 1 50); do kill -0 -- "-$SERVER_PGID" 2>/dev/null || break; sleep 0.1; done
      kill -KILL -- "-$SERVER_PGID" 2>/dev/null || true
      SERVER_PGID=""
    fi
    if [ -n "$DATA_DIR" ]; then rm -rf "$DATA_DIR"; DATA_DIR=""; fi
  }
  trap stop_server EXIT
  trap 'exit 130' INT TERM

  # Starts a fresh server of kind $1 and waits until it answers HTTP. Sets
  # PORT, SERVER_PGID and SAMPLE_PID (the process holding the sockets).
  start_server() {
    local kind=$1 log=$LOGS/$2.log
    case $kind in
      dormouse)
        PORT=1999
        DATA_DIR=$(mktemp -d /tmp/dormouse-bench-data.XXXXXX)
        setsid "$DORMOUSE" serve --listen "127.0.0.1:$PORT" --data-dir "$DATA_DIR" >"$log" 2>&1 &
        SERVER_PGID=$! SAMPLE_PID=$!
        ;;
      dormouse-js)
        PORT=1999
        DATA_DIR=$(mktemp -d /tmp/dormouse-bench-data.XXXXXX)
        setsid "$DORMOUSE" serve --listen "127.0.0.1:$PORT" --data-dir "$DATA_DIR" \
          --partykit "$PEERS/partykit/partykit.json" >"$log" 2>&1 &
        SERVER_PGID=$! SAMPLE_PID=$!
        ;;
      node-ws)
        PORT=2000
        setsid node "$PEERS/node-ws/server.js" "$PORT" >"$log" 2>&1 &
        SERVER_PGID=$! SAMPLE_PID=$!
        ;;
      y-websocket)
        PORT=2002
        PORT=$PORT setsid node "$PEERS/yjs/y-websocket-server.mjs" >"$log" 2>&1 &
        SERVER_PGID=$! SAMPLE_PID=$!
        ;;
      hocuspocus)
        PORT=2003
        PORT=$PORT setsid node "$PEERS/yjs/hocuspocus.mjs" >"$log" 2>&1 &
        SERVER_PGID=$! SAMPLE_PID=$!
        ;;
      partykit)
        PORT=2001
        (cd "$PEERS/partykit" && exec setsid node_modules/.bin/partykit dev --port "$PORT" --no-hotkeys \
          --disable-request-cf-fetch --persist "$LOGS/partykit-state" >"$log" 2>&1) &
        SERVER_PGID=$! SAMPLE_PID=""
        ;;
    esac
    for _ in $(seq 1 300); do
      if [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PORT/parties/main/ready")" != 000 ]; then
        break
      fi
      kill -0 "$SERVER_PGID" 2>/dev/null || break
      sleep 0.1
    done
    if [ "$kind" = partykit ]; then
      # The sockets live in workerd, the dev server's child; the partykit
      # process itself only builds the script and prints workerd's logs.
      SAMPLE_PID=$(pgrep -P "$SERVER_PGID" -f 'workerd serve' | head -n1 || true)
    fi
    if [ -z "$SAMPLE_PID" ] || ! kill -0 "$SAMPLE_PID" 2>/dev/null \
      || [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PORT/parties/main/ready")" = 000 ]; then
      echo "== $kind did not start; its log ($log):" >&2
      tail -n 20 "$log" >&2
      return 1
    fi
  }

  # Runs one load test against a fresh server: run NAME KIND SCENARIO ARGS...
  run() {
    local name=$1 kind=$2 scenario=$3
    shift 3
    echo "== $name" >&2
    if ! start_server "$kind" "$name"; then
      echo "server did not start; see $LOGS/$name.log" >"$OUT/$name.txt"
      stop_server
      return 0
    fi
    local status=0
    "$LT" "$scenario" --url "ws://127.0.0.1:$PORT/parties/${URL_PARTY:-main}/{room}" --threads 2 \
      --server-pid "$SAMPLE_PID" --json "$OUT/$name.json" "$@" >"$OUT/$name.txt" 2>&1 || status=$?
    # Exit 1 means deliveries were still missing when the drain ended (a
    # saturated server); the report is written either way.
    echo "exit status $status" >>"$OUT/$name.txt"
    grep -E 'frames/s|last receiver|lost|server memory|server CPU|wake, whole' "$OUT/$name.txt" | sed 's/^/   /' >&2 || true
    stop_server
  }

  has() { [[ " $CASES " == *" $1 "* ]]; }
  for rep in $(seq 1 "$REPEATS"); do
    for case in $(has fanout && echo "$FANOUT_CASES"); do
      n=${case%%:*} rate=${case##*:}
      for kind in $SERVERS; do
        run "fanout-$n-$kind-$rep" "$kind" fanout --connections "$n" --publishers 1 --rate "$rate" \
          --payload-bytes 100 --duration-secs "$PUBLISH_SECS" --drain-secs "$DRAIN_SECS"
      done
    done
    n=${LATENCY_CASE%%:*} rate=${LATENCY_CASE##*:}
    for kind in $(has latency && echo "$SERVERS"); do
      run "latency-$n-$kind-$rep" "$kind" fanout --connections "$n" --publishers 1 --rate "$rate" \
        --payload-bytes 100 --duration-secs "$PUBLISH_SECS" --drain-secs "$DRAIN_SECS"
    done
    n=${COMPRESSION_CASE%%:*} rate=${COMPRESSION_CASE##*:}
    for mode in $(has compression && echo "text deflate"); do
      for kind in $COMPRESSION_SERVERS; do
        DEFLATE=1 run "compression-$n-$kind-$mode-$rep" "$kind" fanout --connections "$n" --publishers 1 \
          --rate "$rate" --payload-bytes "$COMPRESSION_BYTES" "--$mode" \
          --duration-secs "$PUBLISH_SECS" --drain-secs "$DRAIN_SECS"
      done
    done
    for case in $(has yjs && echo "busy:$YJS_BUSY_CASE idle:$YJS_IDLE_CASE presence:$YJS_PRESENCE_CASE"); do
      IFS=: read -r shape docs editors editing rate awareness <<<"$case"
      hold=0
      [ "$shape" = idle ] && hold=$YJS_HOLD_SECS
      for kind in $YJS_SERVERS $([ "$shape" = idle ] && echo dormouse-sockets); do
        server=$kind party=docs protocol=y-protocols
        [ "$kind" = dormouse-sockets ] && server=dormouse party=main
        [ "$kind" = hocuspocus ] && protocol=hocuspocus
        URL_PARTY=$party run "yjs-$shape-$kind-$rep" "$server" yjs --docs "$docs" --editors "$editors" \
          --editing "$editing" --rate "$rate" --awareness-rate "$awareness" --protocol "$protocol" --hold-secs "$hold" \
          --duration-secs "$PUBLISH_SECS" --drain-secs "$DRAIN_SECS"
      done
    done
    for kind in $(has rooms && echo "$SERVERS"); do
      run "rooms-$ROOMS-$kind-$rep" "$kind" rooms --rooms "$ROOMS" --per-room "$PER_ROOM" --rate "$ROOMS_RATE" \
        --duration-secs "$PUBLISH_SECS" --drain-secs "$DRAIN_SECS"
    done
  done
  rm -rf "$LOGS"
  exit 0
fi

# --- outside: build, install, record the machine, measure, summarise -------

OUT=${1:-$PEERS/results/$(date -u +%Y-%m-%d)}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
STARTED=$(date +%s)

echo "== build (release)" >&2
(cd "$ROOT" && cargo build --release --locked -p dormouse -p dormouse-loadtest --bins)
echo "== install the peers (npm ci)" >&2
for peer in node-ws partykit yjs; do
  (cd "$PEERS/$peer" && npm ci --no-audit --no-fund --loglevel=error)
done

version_of() { node -p "require('$PEERS/$1/node_modules/$2/package.json').version"; }
node - "$OUT/machine.json" <<EOF
const fs = require("fs");
const cpu = (fs.readFileSync("/proc/cpuinfo", "utf8").match(/^model name\s*:\s*(.*)$/m) || [])[1];
const mem = (fs.readFileSync("/proc/meminfo", "utf8").match(/^MemTotal:\s*(\d+)/m) || [])[1];
fs.writeFileSync(process.argv[2], JSON.stringify({
  date_utc: new Date().toISOString(),
  cpu_model: cpu,
  cores: require("os").availableParallelism(),
  memory_gib: Math.round(mem / 1048576),
  kernel: "$(uname -r)",
  rustc: "$(rustc --version)",
  dormouse_commit: "$(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo unknown)$(cd "$ROOT" && [ -n "$(git status --porcelain -- src crates Cargo.toml Cargo.lock 2>/dev/null)" ] && echo ' (with uncommitted changes)' || true)",
  node: process.version,
  ws: "$(version_of node-ws ws)",
  partykit: "$(version_of partykit partykit)",
  workerd: "$(version_of partykit workerd)",
  y_websocket_server: "$(version_of yjs @y/websocket-server)",
  hocuspocus: "$(version_of yjs @hocuspocus/server)",
  yjs: "$(version_of yjs yjs)",
  command: "$([ "$CASES" = "$ALL_CASES" ] || echo "CASES=\\\"$CASES\\\" ")$([ "$SERVERS" = "dormouse dormouse-js node-ws partykit" ] || echo "SERVERS=\\\"$SERVERS\\\" ")benches/peers/run.sh",
  cases: { run: "$CASES", fanout: "$FANOUT_CASES", latency: "$LATENCY_CASE", rooms: "$ROOMS x $PER_ROOM at $ROOMS_RATE wakes/s",
           compression: "$COMPRESSION_CASE, $COMPRESSION_BYTES B JSON, --text and --deflate",
           yjs: "busy $YJS_BUSY_CASE, idle $YJS_IDLE_CASE held $YJS_HOLD_SECS s, presence $YJS_PRESENCE_CASE (docs:editors:editing:updates/s:awareness/s)",
           publish_secs: $PUBLISH_SECS, drain_secs: $DRAIN_SECS, repeats: $REPEATS },
}, null, 2) + "\n");
EOF

echo "== measure (inside a loopback-only network namespace)" >&2
MEASURE_STARTED=$(date +%s)
unshare -rn "$PEERS/run.sh" --inside "$OUT"
MEASURE_SECS=$(($(date +%s) - MEASURE_STARTED))

: >"$OUT/summary.md"
if [ -n "$(echo " $CASES " | sed 's/ yjs / /g' | tr -d ' ')" ]; then
  node "$PEERS/summarize.js" "$OUT" "$MEASURE_SECS" "$(($(date +%s) - STARTED))" >>"$OUT/summary.md"
fi
if [[ " $CASES " == *" yjs "* ]]; then
  node "$PEERS/summarize-yjs.js" "$OUT" "$MEASURE_SECS" >>"$OUT/summary.md"
fi
cat "$OUT/summary.md"
echo "== results in $OUT" >&2
