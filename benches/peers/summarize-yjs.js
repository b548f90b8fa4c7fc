// Summarises the Yjs cases of a benches/peers/run.sh results directory
// (yjs-busy-KIND-REP.json, yjs-idle-KIND-REP.json) into Markdown on stdout:
// the median of the repeated runs of each server, ratios dormouse / peer,
// and the targets of issue 16.
//
//   node summarize-yjs.js RESULTS_DIR
"use strict";
const fs = require("fs");
const path = require("path");
const { median, fmt, ratio, lostPct } = require("./figures.js");

const [dir, measureSecs] = process.argv.slice(2);
const machine = JSON.parse(fs.readFileSync(path.join(dir, "machine.json"), "utf8"));
const SERVERS = [
  ["dormouse", "dormouse (yjs kind)"],
  ["y-websocket", `y-websocket server ${machine.y_websocket_server}`],
  ["hocuspocus", `Hocuspocus ${machine.hocuspocus}`],
];
const PEERS = SERVERS.slice(1);

// runs[shape][kind] = [report, ...]
const runs = {};
for (const file of fs.readdirSync(dir).sort()) {
  const m = /^yjs-(busy|idle|presence)-(.+)-(\d+)\.json$/.exec(file);
  if (!m) continue;
  const report = JSON.parse(fs.readFileSync(path.join(dir, file), "utf8")).report;
  ((runs[m[1]] ??= {})[m[2]] ??= []).push(report);
}

const figure = (shape, kind, f) => median(((runs[shape] || {})[kind] || []).map((r) => f(r)));
const editorsOf = (r) => r.connections / r.rooms;
const perDoc = (r) => r.server_bytes_per_connection_held * editorsOf(r);

const out = [];
const p = (s = "") => out.push(s);
p(`# dormouse's yjs kind against y-websocket's server and Hocuspocus`);
p();
p(`Run of ${machine.date_utc}, \`${machine.command}\`` + (measureSecs ? ` (measurements ${fmt(measureSecs / 60)} min)` : "") +
  `: ${machine.cpu_model}, ${machine.cores} cores shared by servers and client, kernel ${machine.kernel}; ` +
  `dormouse ${machine.dormouse_commit}; Node ${machine.node}, yjs ${machine.yjs}. Cases ${machine.cases.yjs}; ` +
  `${machine.cases.publish_secs} s of editing, at most ${machine.cases.drain_secs} s of drain; medians of ` +
  `${machine.cases.repeats} runs, each on a fresh server. Client: dormouse-loadtest \`yjs\`, its editors' updates ` +
  `made with yrs; every relayed update is found by its stamp and timed.`);
p();
function table(shape, title, figures) {
  if (!runs[shape]) return;
  p(`## ${title}`);
  p();
  const head = ["figure", ...SERVERS.map(([, l]) => l), ...PEERS.map(([, l]) => `dormouse / ${l}`)];
  p(`| ${head.join(" | ")} |`);
  p(`|${head.map((_, i) => (i === 0 ? "---" : "---:")).join("|")}|`);
  for (const [label, f] of figures) {
    const values = SERVERS.map(([s]) => figure(shape, s, f));
    p(`| ${[label, ...values.map(fmt), ...PEERS.map((_, i) => ratio(values[0], values[i + 1]))].join(" | ")} |`);
  }
  p();
}

const any = (shape) => Object.values(runs[shape] || {}).flat()[0];
const busy = any("busy");
if (busy) {
  table("busy", `Yjs: ${busy.connections.toLocaleString("en-US")} editors in one document, ` +
    `${fmt(busy.messages_sent / busy.publish_secs / busy.publishers)} updates/s each (as sent)`, [
    ["updates sent per second", (r) => r.messages_sent / r.publish_secs],
    ["delivered frames/s (higher is better)", (r) => r.delivered_frames_per_sec],
    ["undelivered at the end of the drain, %", lostPct],
    ["last receiver p50, ms", (r) => r.last_receiver_latency_us.p50 / 1000],
    ["last receiver p99, ms", (r) => r.last_receiver_latency_us.p99 / 1000],
    ["server CPU per delivered frame, µs", (r) => r.server_cpu_us_per_delivery],
    ["server CPU per update delivered to every editor, µs", (r) => r.server_cpu_us_per_message_delivered],
  ]);
}
const presence = any("presence");
if (presence) {
  table("presence", `Yjs: ${presence.rooms} documents of ${editorsOf(presence)} editors, each typing ` +
    `${fmt(presence.messages_sent / presence.publish_secs / presence.publishers)} updates/s and sending ` +
    `${fmt(presence.awareness_sent / presence.publish_secs / presence.publishers)} awareness updates/s`, [
    ["delivered update frames/s", (r) => r.delivered_frames_per_sec],
    ["undelivered at the end of the drain, %", lostPct],
    ["last receiver p50, ms", (r) => r.last_receiver_latency_us.p50 / 1000],
    ["last receiver p99, ms", (r) => r.last_receiver_latency_us.p99 / 1000],
    ["server CPU per update delivered (awareness traffic included), µs", (r) => r.server_cpu_us_per_message_delivered],
  ]);
}
const idle = any("idle");
if (idle) {
  table("idle", `Yjs: ${idle.rooms.toLocaleString("en-US")} documents of ${editorsOf(idle)} editors, ` +
    `mostly idle, then held open and silent`, [
    ["server memory per document with its editors, connected, B", (r) => r.server_bytes_per_connection * editorsOf(r)],
    ["server memory per document with its editors, after the idle hold, B", perDoc],
    ["last receiver p99, ms", (r) => r.last_receiver_latency_us.p99 / 1000],
    ["connect time, s", (r) => r.connect_secs],
  ]);
}

p(`## Targets (issue 16)`);
p();
p(`| target | measured | |`);
p(`|---|---:|---|`);
const cpu = (r) => r.server_cpu_us_per_message_delivered;
const ours = figure("busy", "dormouse", cpu);
const best = Math.min(...PEERS.map(([s]) => figure("busy", s, cpu)).filter((v) => v !== undefined));
const cpuRatio = ours !== undefined && Number.isFinite(best) ? ours / best : undefined;
p(`| server CPU per update, dormouse / best peer | ${cpuRatio === undefined ? "–" : `${fmt(cpuRatio)}×`} | ` +
  `${cpuRatio === undefined ? "not measured" : cpuRatio <= 0.2 ? "met" : "**missed**"} (bound ≤ 0.2×) |`);
const docHeld = figure("idle", "dormouse", perDoc);
const socketsHeld = figure("idle", "dormouse-sockets", perDoc);
const beyond = docHeld !== undefined && socketsHeld !== undefined ? docHeld - socketsHeld : undefined;
p(`| RSS per idle hibernated document beyond its sockets | ${beyond === undefined ? "–" : `${fmt(beyond)} B`} | ` +
  `${beyond === undefined ? "not measured" : beyond <= 1024 ? "met" : "**missed**"} (bound ≤ 1,024 B; ` +
  `${fmt(docHeld)} B with its sockets, less ${fmt(socketsHeld)} B for the same sockets in relay rooms) |`);
p(`| cold load of a 10 MB document, p99 | see \`cargo bench --bench yjs\` | (bound ≤ 50 ms) |`);
p();
p(`The peers keep every document in memory and persist nothing as configured here; dormouse's ` +
  `yjs kind appends every update to LMDB before relaying it (strict durability) and hibernates idle documents.`);
console.log(out.join("\n"));
