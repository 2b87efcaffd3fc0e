// The cost chart's figures, without a browser: what the marks and summaries say comes
// from the migrations' own savings, never from the drop of the total across a sample
// that may have counted both copies of a moving workload. Run by scripts/test (no
// dependencies: `node --test chart.test.mjs`).

import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

// Loaded from its text: the dashboard's folder has no package.json saying it is an ES
// module, and the browser needs none.
const source = readFileSync(
  join(dirname(fileURLToPath(import.meta.url)), "../../src/broker/dashboard/chart.js"),
  "utf8",
);
const chart = await import(`data:text/javascript,${encodeURIComponent(source)}`);
const money = (x) => `$${x.toFixed(2)}`;

// What the demo's history looked like when the issue was filed: the sample before each
// move's end was taken while both copies ran, so the total dropped by far more than the
// move saves; a price change came between two moves.
const points = [
  { at: "2026-12-01T10:00:00Z", total: 1000, clusters: {} },
  { at: "2026-12-01T10:00:10Z", total: 1400, clusters: {} }, // both copies of mig-1
  { at: "2026-12-01T10:00:12Z", total: 950, clusters: {}, migration: "mig-1" },
  { at: "2026-12-01T10:00:20Z", total: 900, clusters: {}, pricing: "gke-us-central1" },
  { at: "2026-12-01T10:00:30Z", total: 1300, clusters: {} }, // both copies of mig-2
  { at: "2026-12-01T10:00:31Z", total: 890, clusters: {}, migration: "mig-2" },
  { at: "2026-12-01T10:00:40Z", total: 890, clusters: {}, migration: "mig-3" }, // rolled back
  { at: "2026-12-01T10:00:50Z", total: 900, clusters: {}, migration: "mig-4" }, // an evacuation
];
const migrations = [
  { id: "mig-1", state: "done", monthlySavings: 50 },
  { id: "mig-2", state: "done", monthlySavings: 10.5 },
  { id: "mig-3", state: "rolledBack", monthlySavings: 30 },
  { id: "mig-4", state: "done", monthlySavings: -10 },
  { id: "mig-5", state: "done", monthlySavings: 99, dryRun: true },
];

test("the marks carry the moves' own savings and the price changes' steps", () => {
  const marks = chart.marksOf(points, migrations);
  assert.deepEqual(
    marks.map((m) => [m.kind, m.id ?? m.cluster, m.monthlySavings ?? m.change]),
    [
      ["migration", "mig-1", 50],
      ["pricing", "gke-us-central1", -50],
      ["migration", "mig-2", 10.5],
      ["migration", "mig-4", -10],
    ],
  );
});

test("the chart's summary and the plan's realised savings agree", () => {
  const marks = chart.marksOf(points, migrations);
  const realised = chart.realisedSavings(migrations);
  assert.deepEqual(realised, { count: 3, monthly: 50.5 });
  const text = chart.marksSummary(marks, money);
  // The total fell by 450 + 410 across the two moves' points: not what they save.
  assert.match(text, /The 3 moves marked ▼ save \$50\.50 a month\./);
  assert.match(text, /1 price change marked ◆ moved the total by −\$50\.00 a month\./);
});

test("a move that costs more says so, never a negative saving", () => {
  assert.equal(chart.savingPhrase(12.5, money), "saves $12.50 a month");
  assert.equal(chart.savingPhrase(-12.5, money), "costs $12.50 more a month");
  assert.equal(chart.savingPhrase(-12.5, money, { plural: true }), "cost $12.50 more a month");
  assert.equal(chart.savingPhrase(-0.001, money), "saves $0.00 a month");
  assert.equal(chart.savingPhrase(undefined, money), "");
  const costly = chart.marksSummary(chart.marksOf(points.slice(-1), migrations), money);
  assert.equal(costly, " The 1 move marked ▼ costs $10.00 more a month.");
  assert.doesNotMatch(costly, /-\$/);
});

test("a move whose migration is not loaded is marked without a figure", () => {
  const marks = chart.marksOf([{ at: "2026-12-01T10:00:00Z", total: 1, migration: "mig-9" }], []);
  assert.equal(marks[0].monthlySavings, null);
  assert.equal(chart.marksSummary(marks, money), " The 1 move marked ▼: its figures are not loaded.");
  const mixed = chart.marksOf(
    [{ at: "2026-12-01T10:00:00Z", total: 1, migration: "mig-9" }, ...points.slice(2, 3)],
    migrations,
  );
  assert.equal(chart.marksSummary(mixed, money), " The 2 moves marked ▼ save $50.00 a month (1 of them with no figure here).");
});
