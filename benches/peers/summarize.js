// Summarises a results directory of benches/peers/run.sh into Markdown on
// stdout: per case, the median of the repeated runs of each server and the
// ratio dormouse / peer, the targets of issue 7, and every run's own figures.
//
//   node summarize.js RESULTS_DIR [MEASURE_SECS] [TOTAL_SECS]
"use strict";
const fs = require("fs");
const path = require("path");
const { median, fmt, ratio, lostPct } = require("./figures.js");

const [dir, measureSecs, totalSecs] = process.argv.slice(2);
const SERVERS = [
  ["dormouse", "dormouse"],
  ["dormouse-js", "dormouse, TS relay"],
  ["node-ws", "Node ws"],
  ["partykit", "PartyKit dev"],
];
const PEERS = SERVERS.slice(1);

const machine = JSON.parse(fs.readFileSync(path.join(dir, "machine.json"), "utf8"));

// runs[case][server] = [report, ...]; a run whose server did not start has no JSON.
const runs = {};
const files = fs.readdirSync(dir).filter((f) => /^(fanout|latency|rooms|compression)-\d+-.+-\d+\.txt$/.test(f)).sort();
for (const txt of files) {
  const m = /^(fanout|latency|rooms|compression)-(\d+)-(.+)-(\d+)\.txt$/.exec(txt);
  let [, scenario, n, server, rep] = m;
  let key = `${scenario}-${n}`;
  // compression-N-SERVER-MODE-REP: one case per mode (text, deflate).
  const mode = scenario === "compression" ? /^(.+)-(text|deflate)$/.exec(server) : null;
  if (mode) [server, key] = [mode[1], `${key}-${mode[2]}`];
  const json = path.join(dir, txt.replace(/\.txt$/, ".json"));
  const report = fs.existsSync(json) ? JSON.parse(fs.readFileSync(json, "utf8")).report : null;
  const exit = (/exit status (\d+)/.exec(fs.readFileSync(path.join(dir, txt), "utf8")) || [])[1];
  ((runs[key] ??= {})[server] ??= []).push({ rep: Number(rep), report, exit, file: txt });
}

const get = (obj, pointer) => pointer.split(".").reduce((o, k) => (o == null ? undefined : o[k]), obj);
const figure = (key, server, f) => median(((runs[key] || {})[server] || []).map((r) => r.report && f(r.report)));


const FANOUT_FIGURES = [
  ["delivered frames/s (higher is better)", (r) => r.delivered_frames_per_sec],
  ["last receiver p50, ms", (r) => r.last_receiver_latency_us.p50 / 1000],
  ["last receiver p99, ms", (r) => r.last_receiver_latency_us.p99 / 1000],
  ["delivery p99, ms", (r) => r.delivery_latency_us.p99 / 1000],
  ["undelivered at the end of the drain, %", lostPct],
  ["server memory per connection, B", (r) => r.server_bytes_per_connection],
  ["server RSS once connected, MiB", (r) => r.server_connected && r.server_connected.rss_bytes / 1048576],
  ["server RSS after the drain, MiB", (r) => r.server_after && r.server_after.rss_bytes / 1048576],
  ["server CPU per delivered frame, µs", (r) => r.server_cpu_us_per_delivery],
  ["connect time, s", (r) => r.connect_secs],
];
const ROOMS_FIGURES = [
  ["server memory per connection, B", (r) => r.server_bytes_per_connection],
  ["server memory per room, B", (r) => r.server_bytes_per_connection * (r.connections / r.rooms)],
  ["server RSS once connected, MiB", (r) => r.server_connected && r.server_connected.rss_bytes / 1048576],
  ["wake, whole room p50, ms", (r) => r.last_receiver_latency_us.p50 / 1000],
  ["wake, whole room p99, ms", (r) => r.last_receiver_latency_us.p99 / 1000],
  ["undelivered at the end of the drain, %", lostPct],
  ["connect time, s", (r) => r.connect_secs],
];

const out = [];
const p = (s = "") => out.push(s);

p(`# dormouse against Node \`ws\` and PartyKit's dev server`);
p();
p(`Run of ${machine.date_utc}, \`${machine.command}\`` +
  (measureSecs ? `: measurements ${fmt(measureSecs / 60)} min, whole command ${fmt(totalSecs / 60)} min.` : "."));
p();
p(`- machine: ${machine.cpu_model}, ${machine.cores} cores, ${machine.memory_gib} GiB; kernel ${machine.kernel}`);
p(`- dormouse ${machine.dormouse_commit}, ${machine.rustc}`);
p(`- Node ${machine.node}, ws ${machine.ws}; partykit ${machine.partykit} (workerd ${machine.workerd})`);
p(`- client: dormouse-loadtest, 2 threads, on the same cores; every server fresh for each run; ` +
  `servers and client in one loopback-only network namespace`);
const ran = (machine.cases.run || "fanout latency rooms").split(" ");
const described = {
  fanout: `fan-out ${machine.cases.fanout} (connections:messages/s)`,
  latency: `latency ${machine.cases.latency}`,
  rooms: `rooms ${machine.cases.rooms}`,
  compression: `compression ${machine.cases.compression}`,
};
p(`- cases: ${ran.map((c) => described[c]).filter(Boolean).join(", ")}; ${machine.cases.publish_secs} s of ` +
  `publishing, at most ${machine.cases.drain_secs} s of drain; ${machine.cases.repeats} runs of each, ` +
  `the table shows their median`);
p();

function caseTable(key, title, figures) {
  p(`## ${title}`);
  p();
  const head = ["figure", ...SERVERS.map(([, label]) => label), ...PEERS.map(([, label]) => `dormouse / ${label}`)];
  p(`| ${head.join(" | ")} |`);
  p(`|${head.map((_, i) => (i === 0 ? "---" : "---:")).join("|")}|`);
  for (const [label, f] of figures) {
    const values = SERVERS.map(([s]) => figure(key, s, f));
    p(`| ${[label, ...values.map(fmt), ...PEERS.map((_, i) => ratio(values[0], values[i + 1]))].join(" | ")} |`);
  }
  const missing = SERVERS.filter(([s]) => !((runs[key] || {})[s] || []).some((r) => r.report));
  for (const [, label] of missing) p(`\n${label}: no report (the server did not start or the client failed; see the .txt files).`);
  p();
}

const keys = Object.keys(runs);
const byN = (prefix) =>
  keys.filter((k) => k.startsWith(prefix)).sort((a, b) => Number(a.split("-")[1]) - Number(b.split("-")[1]));
const rateOf = (key) => {
  const r = Object.values(runs[key]).flat().find((x) => x.report)?.report;
  return r ? r.messages_sent / r.publish_secs : undefined;
};
for (const key of byN("fanout-")) {
  const n = Number(key.split("-")[1]);
  const rate = rateOf(key);
  caseTable(key, `Fan-out, ${n.toLocaleString("en-US")} connections in one room, ` +
    `${fmt(rate)} messages/s (${fmt((rate * (n - 1)) / 1000)}k deliveries/s offered)`, FANOUT_FIGURES);
}
for (const key of byN("latency-")) {
  const n = Number(key.split("-")[1]);
  const rate = rateOf(key);
  caseTable(key, `Latency, ${n.toLocaleString("en-US")} connections in one room, ` +
    `${fmt(rate)} messages/s (${fmt((rate * (n - 1)) / 1000)}k deliveries/s offered)`, FANOUT_FIGURES);
}
for (const key of byN("rooms-")) {
  const r = Object.values(runs[key]).flat().find((x) => x.report)?.report;
  const shape = r ? `${r.rooms} rooms of ${r.connections / r.rooms} connections` : key;
  caseTable(key, `Memory, ${shape}, one wake per room in turn`, ROOMS_FIGURES);
}

// Compression: per server, plain text against permessage-deflate.
const compression = keys.filter((k) => k.startsWith("compression-") && k.endsWith("-text"));
for (const textKey of compression) {
  const deflateKey = textKey.replace(/-text$/, "-deflate");
  const n = Number(textKey.split("-")[1]);
  const rate = rateOf(textKey);
  const r = Object.values(runs[textKey]).flat().find((x) => x.report)?.report;
  p(`## Compression, ${n.toLocaleString("en-US")} connections in one room, ${fmt(rate)} messages/s of ` +
    `${r ? r.payload_bytes : "?"} B JSON text, without and with permessage-deflate`);
  p();
  const servers = SERVERS.filter(([s]) => runs[textKey][s]);
  const head = ["figure", ...servers.flatMap(([, label]) => [`${label}, plain`, `${label}, deflate`]),
    ...servers.slice(1).map(([, label]) => `deflate: dormouse / ${label}`)];
  p(`| ${head.join(" | ")} |`);
  p(`|${head.map((_, i) => (i === 0 ? "---" : "---:")).join("|")}|`);
  const figures = [["bytes on the wire per delivery", (x) => x.wire_bytes_per_delivery], ...FANOUT_FIGURES.slice(0, 5),
    ["server CPU per delivered frame, µs", (x) => x.server_cpu_us_per_delivery]];
  for (const [label, f] of figures) {
    const cells = servers.flatMap(([s]) => [figure(textKey, s, f), figure(deflateKey, s, f)]);
    const ratios = servers.slice(1).map(([s]) => ratio(figure(deflateKey, "dormouse", f), figure(deflateKey, s, f)));
    p(`| ${[label, ...cells.map(fmt), ...ratios].join(" | ")} |`);
  }
  p();
}

// The targets of issue 7, at 15,000 connections in one room.
const big = byN("fanout-").pop();
const lat = byN("latency-").pop();
if (big) {
  p(`## Targets (${Number(big.split("-")[1]).toLocaleString("en-US")} connections, one room, 100-byte messages)`);
  p();
  p(`| target | measured | |`);
  p(`|---|---:|---|`);
  const check = (label, key, server, f, test, bound) => {
    const ours = figure(key, "dormouse", f), theirs = figure(key, server, f);
    const r = ours !== undefined && theirs !== undefined && theirs !== 0 ? ours / theirs : undefined;
    p(`| ${label} | ${r === undefined ? "–" : `${fmt(r)}×`} | ${r === undefined ? "not measured" : test(r) ? "met" : "**missed**"} (bound ${bound}) |`);
  };
  const fps = (r) => r.delivered_frames_per_sec;
  const p99 = (r) => r.last_receiver_latency_us.p99;
  const mem = (r) => r.server_bytes_per_connection;
  check("delivered frames/s, dormouse / PartyKit dev", big, "partykit", fps, (r) => r >= 20, "≥ 20×");
  check("delivered frames/s, dormouse / Node ws", big, "node-ws", fps, (r) => r >= 5, "≥ 5×");
  check("last-receiver p99, dormouse / Node ws", big, "node-ws", p99, (r) => r <= 0.2, "≤ 0.2×");
  check("memory per connection, dormouse / Node ws", big, "node-ws", mem, (r) => r <= 0.125, "≤ 0.125×");
  p();
  p(`The targets are judged in the fan-out case above, at the load that measures throughput, ` +
    `where latency is mostly each server's queue.`);
  if (lat) {
    p();
    const ours = figure(lat, "dormouse", p99), theirs = figure(lat, "node-ws", p99);
    const cpu = figure(lat, "dormouse", (r) => r.server_cpu_us_per_delivery);
    const n = Number(lat.split("-")[1]);
    if (ours !== undefined && theirs !== undefined && cpu !== undefined) {
      const cores = machine.cores || 2;
      p(`At a load Node ws sustains (the latency case) the ratio is ${fmt(ours / theirs)}× ` +
        `(${fmt(ours / 1000)} ms against ${fmt(theirs / 1000)} ms). One fifth of Node ws's would be ` +
        `${fmt(theirs / 5000)} ms, while dormouse's server CPU per delivered frame there, ${fmt(cpu)} µs ` +
        `(mostly the kernel's loopback TCP send path), alone makes ${fmt((cpu * n) / cores / 1000)} ms ` +
        `per broadcast on ${cores} cores, before the client has read a byte.`);
    }
  }
  p();
}

p(`## Every run`);
p();
p(`| run | frames/s | last receiver p99, ms | undelivered, % | server B/conn | client exit |`);
p(`|---|---:|---:|---:|---:|---:|`);
const order = (k) => ["fanout", "latency", "rooms", "compression"].indexOf(k.split("-")[0]) * 1e9 +
  Number(k.split("-")[1]) + (k.endsWith("-deflate") ? 0.5 : 0);
for (const key of keys.sort((a, b) => order(a) - order(b))) {
  for (const [s] of SERVERS) {
    for (const r of (runs[key][s] || []).sort((a, b) => a.rep - b.rep)) {
      const rep = r.report;
      const cells = rep
        ? [fmt(rep.delivered_frames_per_sec), fmt(rep.last_receiver_latency_us.p99 / 1000), fmt(lostPct(rep)),
           fmt(rep.server_bytes_per_connection)]
        : ["–", "–", "–", "–"];
      p(`| ${r.file.replace(/\.txt$/, "")} | ${cells.join(" | ")} | ${r.exit ?? "–"} |`);
    }
  }
}
p();
p(`Raw reports: the \`.json\` (every figure, with the client's view of the machine) and \`.txt\` ` +
  `(the client's output) files beside this one. The client exits 1 when deliveries were still ` +
  `missing when the drain ended, which is how a saturated server shows.`);
process.stdout.write(out.join("\n") + "\n");
