// The cost chart: monthly run-rate per cluster and in total over time, as an inline SVG
// line chart (no library). Lines differ by dash pattern as well as colour, and the
// legend names each one; moves that were done are marked (▼) with what they save by
// their own figures, and price changes (◆) with the step they made in the total.
//
// What a move saves is the migration's `monthlySavings`, never the drop of the total
// across its point: the sample before it may have been taken while both copies ran, and
// a price change or another move between two samples lands in the same drop.

const SVG = "http://www.w3.org/2000/svg";
const WIDTH = 720;
const HEIGHT = 260;
const MARGIN = { left: 70, right: 16, top: 22, bottom: 30 };
/** Dash patterns by series index (0 is the total's solid line). */
const DASHES = ["", "8 4", "2 4", "12 4 3 4", "4 4", "16 6"];

function el(name, attributes = {}, text) {
  const node = document.createElementNS(SVG, name);
  for (const [key, value] of Object.entries(attributes)) node.setAttribute(key, String(value));
  if (text !== undefined) node.textContent = text;
  return node;
}

/** A round upper bound for the y axis, and its step. */
function niceScale(max) {
  if (!(max > 0)) return { top: 1, step: 0.25 };
  const rough = max / 4;
  const power = 10 ** Math.floor(Math.log10(rough));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * power).find((s) => s >= rough);
  return { top: Math.ceil(max / step) * step, step };
}

/** The series a list of points holds: the total first, then each cluster by name. */
export function seriesOf(points) {
  const names = new Set();
  for (const p of points) Object.keys(p.clusters ?? {}).forEach((n) => names.add(n));
  return [
    { name: "Total", value: (p) => p.total, index: 0 },
    ...[...names].sort().map((name, i) => ({
      name,
      value: (p) => p.clusters?.[name],
      index: (i % (DASHES.length - 1)) + 1,
    })),
  ];
}

/**
 * "saves $X a month", or "costs $X more a month" for a move that costs more (never
 * "saves -$X"); `plural` for "they save" / "they cost". Empty without a figure.
 */
export function savingPhrase(amount, money, { plural = false } = {}) {
  if (typeof amount !== "number" || !Number.isFinite(amount)) return "";
  const [save, cost] = plural ? ["save", "cost"] : ["saves", "costs"];
  // Less than half a cent either way is no saving and no cost.
  return amount > -0.005
    ? `${save} ${money(Math.max(amount, 0))} a month`
    : `${cost} ${money(-amount)} more a month`;
}

/** The moves done (not dry runs) and what they save a month, by their own figures. */
export function realisedSavings(migrations) {
  const done = migrations.filter((m) => m.state === "done" && !m.dryRun);
  return { count: done.length, monthly: done.reduce((sum, m) => sum + (m.monthlySavings ?? 0), 0) };
}

/**
 * What the chart marks, oldest first: each move that was done, with its `monthlySavings`
 * (null when the migration is not among `migrations`), and each price change, with the
 * step of the total across it. A migration that rolled back or was cancelled moved
 * nothing and is not marked.
 */
export function marksOf(points, migrations) {
  const byId = new Map(migrations.map((m) => [m.id, m]));
  const marks = [];
  points.forEach((p, i) => {
    if (p.migration) {
      const m = byId.get(p.migration);
      if (!m || (m.state === "done" && !m.dryRun)) {
        const monthlySavings = typeof m?.monthlySavings === "number" ? m.monthlySavings : null;
        marks.push({ kind: "migration", at: p.at, index: i, id: p.migration, monthlySavings });
      }
    }
    if (p.pricing) {
      const before = i > 0 ? points[i - 1].total : p.total;
      marks.push({ kind: "pricing", at: p.at, index: i, cluster: p.pricing, change: p.total - before });
    }
  });
  return marks;
}

/** The chart's sentence about its marks: moves by their own figures, then price changes. */
export function marksSummary(marks, money) {
  const moves = marks.filter((m) => m.kind === "migration");
  const prices = marks.filter((m) => m.kind === "pricing");
  let text = "";
  if (moves.length > 0) {
    const known = moves.filter((m) => m.monthlySavings !== null);
    const monthly = known.reduce((sum, m) => sum + m.monthlySavings, 0);
    const n = moves.length;
    const marked = `The ${n} move${n === 1 ? "" : "s"} marked ▼`;
    if (known.length === 0) {
      text += ` ${marked}: ${n === 1 ? "its figures are" : "their figures are"} not loaded.`;
    } else {
      text += ` ${marked} ${savingPhrase(monthly, money, { plural: n !== 1 })}`;
      text += known.length < n ? ` (${n - known.length} of them with no figure here).` : ".";
    }
  }
  if (prices.length > 0) {
    const change = prices.reduce((sum, m) => sum + m.change, 0);
    const n = prices.length;
    text += ` ${n} price change${n === 1 ? "" : "s"} marked ◆ moved the total by ${change < 0 ? "−" : "+"}${money(Math.abs(change))} a month.`;
  }
  return text;
}

/** A small sample of a series' line, for the legend. */
export function swatch(index) {
  const svg = el("svg", { width: 28, height: 10, viewBox: "0 0 28 10", "aria-hidden": "true" });
  svg.append(el("line", {
    x1: 0, y1: 5, x2: 28, y2: 5,
    class: `line s${index}`,
    "stroke-dasharray": DASHES[index] || "none",
  }));
  return svg;
}

/**
 * Draws `points` ({at, clusters, total, migration?, pricing?}, oldest first) into `svg`.
 * `money` formats an amount, `time` a Date for the x axis; `migrations` (as the API
 * lists them) give the moves' own savings.
 */
export function draw(svg, points, { money, shortMoney, time, migrations = [] }) {
  svg.replaceChildren();
  const plot = {
    x0: MARGIN.left,
    x1: WIDTH - MARGIN.right,
    y0: HEIGHT - MARGIN.bottom,
    y1: MARGIN.top,
  };
  const timed = points
    .map((p) => ({ ...p, t: Date.parse(p.at) }))
    .filter((p) => Number.isFinite(p.t));
  const series = seriesOf(timed);
  const max = Math.max(0, ...timed.flatMap((p) => series.map((s) => s.value(p) ?? 0)));
  const { top, step } = niceScale(max);
  const tMin = timed.length ? timed[0].t : 0;
  const tMax = timed.length ? timed[timed.length - 1].t : 1;
  const span = Math.max(tMax - tMin, 1);
  const x = (t) => (timed.length < 2 ? (plot.x0 + plot.x1) / 2 : plot.x0 + ((t - tMin) / span) * (plot.x1 - plot.x0));
  const y = (v) => plot.y0 - (v / top) * (plot.y0 - plot.y1);

  const grid = el("g", { class: "grid" });
  for (let v = 0; v <= top + step / 2; v += step) {
    grid.append(el("line", { x1: plot.x0, x2: plot.x1, y1: y(v), y2: y(v) }));
    grid.append(el("text", { x: plot.x0 - 8, y: y(v) + 4, "text-anchor": "end" }, shortMoney(v)));
  }
  if (timed.length > 0) {
    const ticks = timed.length === 1 ? [tMin] : [tMin, tMin + span / 2, tMax];
    ticks.forEach((t, i) => {
      const anchor = ticks.length === 1 ? "middle" : ["start", "middle", "end"][i];
      grid.append(el("text", { x: x(t), y: HEIGHT - 8, "text-anchor": anchor }, time(new Date(t))));
    });
  }
  svg.append(grid);

  // Each move done and each price change: a marker, with what it did.
  const marks = el("g", { class: "marks" });
  for (const m of marksOf(timed, migrations)) {
    const mx = x(timed[m.index].t);
    const when = time(new Date(timed[m.index].t));
    const mark = el("g", { class: `mark ${m.kind}`, "data-testid": "cost-mark", "data-kind": m.kind });
    mark.append(el("line", { x1: mx, x2: mx, y1: plot.y1 - 10, y2: plot.y0 }));
    if (m.kind === "migration") {
      mark.append(el("path", { d: `M${mx - 5},${plot.y1 - 16} h10 l-5,7 z` }));
      const what = m.monthlySavings === null ? "its figures are not loaded" : savingPhrase(m.monthlySavings, money);
      mark.append(el("title", {}, `${m.id} done at ${when}: ${what}`));
    } else {
      mark.append(el("path", { d: `M${mx},${plot.y1 - 18} l5,5 l-5,5 l-5,-5 z` }));
      const step = Math.abs(m.change) < 0.005 ? "the total did not change"
        : `the total went ${m.change < 0 ? "down" : "up"} ${money(Math.abs(m.change))} a month`;
      mark.append(el("title", {}, `Prices of ${m.cluster} changed at ${when}: ${step}`));
    }
    marks.append(mark);
  }
  svg.append(marks);

  const lines = el("g", { class: "lines" });
  for (const s of [...series].reverse()) {
    // A cluster that did not answer breaks its line rather than dropping to zero.
    let d = "";
    let pen = "M";
    for (const p of timed) {
      const v = s.value(p);
      if (v === undefined || v === null) {
        pen = "M";
        continue;
      }
      // Steps: a run-rate holds until something changes it.
      const [px, py] = [x(p.t).toFixed(1), y(v).toFixed(1)];
      d += pen === "M" ? `M${px},${py}` : `H${px}V${py}`;
      pen = "H";
    }
    if (!d) continue;
    const attributes = { d, class: `line s${s.index}`, "stroke-dasharray": DASHES[s.index] || "none" };
    const path = el("path", attributes);
    path.append(el("title", {}, s.name));
    lines.append(path);
    if (timed.length === 1) lines.append(el("circle", { cx: x(0), cy: y(s.value(timed[0])), r: 4, class: `dot s${s.index}` }));
  }
  svg.append(lines);
  return series;
}
