// What the summaries of benches/peers share: the median of repeated runs,
// a figure's format in the tables, and a ratio's.
"use strict";

function median(values) {
  const v = values.filter((x) => typeof x === "number" && Number.isFinite(x)).sort((a, b) => a - b);
  if (v.length === 0) return undefined;
  const mid = v.length >> 1;
  return v.length % 2 ? v[mid] : (v[mid - 1] + v[mid]) / 2;
}

function fmt(v) {
  if (v === undefined) return "–";
  if (Math.abs(v) >= 1000) return Math.round(v).toLocaleString("en-US");
  if (Math.abs(v) >= 100) return v.toFixed(0);
  if (Math.abs(v) >= 10) return v.toFixed(1);
  return v.toFixed(2);
}

const ratio = (a, b) => (a === undefined || b === undefined || b === 0 ? "–" : `${fmt(a / b)}×`);
const lostPct = (r) => (r.deliveries_expected ? (100 * r.lost) / r.deliveries_expected : undefined);

module.exports = { median, fmt, ratio, lostPct };
