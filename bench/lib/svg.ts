// A tiny SVG chart generator (no dependencies): line charts with linear or log axes, stacked panels,
// and grouped bar charts. Output is deterministic text, so regenerated plots diff cleanly.

export interface Series {
  name: string;
  points: Array<[number, number]>;
  color?: string;
  dashed?: boolean;
}

export interface Panel {
  title: string;
  xLabel: string;
  yLabel: string;
  series: Series[];
  xLog?: boolean;
  /** Force the y axis to start at zero (default true). */
  yZero?: boolean;
  /** Horizontal reference lines (targets). */
  hLines?: Array<{ y: number; label: string }>;
}

export interface BarGroup {
  name: string;
  values: number[];
  color?: string;
}

export const PALETTE = [
  '#1f77b4',
  '#d62728',
  '#2ca02c',
  '#ff7f0e',
  '#9467bd',
  '#8c564b',
  '#e377c2',
  '#17becf',
];

const FONT = 'font-family="Helvetica, Arial, sans-serif"';

function esc(text: string): string {
  return text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

function fmt(v: number): string {
  if (v === 0) return '0';
  const a = Math.abs(v);
  if (a >= 1e6) return `${+(v / 1e6).toFixed(1)}M`;
  if (a >= 1e4) return `${+(v / 1e3).toFixed(1)}k`;
  if (a >= 100) return String(Math.round(v));
  if (a >= 1) return String(+v.toFixed(2));
  return String(+v.toPrecision(2));
}

/** About `count` round tick values from at or below `min` to at or above `max`. */
export function niceTicks(min: number, max: number, count = 5): number[] {
  if (!(max > min)) return [min, min + 1];
  const raw = (max - min) / count;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = ([1, 2, 2.5, 5, 10].find((m) => m * mag >= raw) ?? 10) * mag;
  const ticks: number[] = [];
  const first = Math.floor(min / step + 1e-9) * step;
  const last = Math.ceil(max / step - 1e-9) * step;
  for (let v = first; v <= last + step * 1e-9; v += step) ticks.push(+v.toPrecision(12));
  return ticks;
}

function logTicks(min: number, max: number): number[] {
  const ticks: number[] = [];
  // No data (a partial run without this suite): no ticks rather than an endless loop.
  if (!(min > 0) || !Number.isFinite(max)) return ticks;
  for (let e = Math.floor(Math.log10(min)); e <= Math.ceil(Math.log10(max)); e++) {
    for (const m of [1, 2, 5]) {
      const v = m * 10 ** e;
      if (v >= min && v <= max) ticks.push(v);
    }
  }
  return ticks;
}

/** One chart drawn in the box (x, y, width, height) of the document. */
function panelSvg(p: Panel, x0: number, y0: number, width: number, height: number): string {
  const left = 70;
  const right = 40 + 6.5 * Math.max(8, ...p.series.map((s) => s.name.length));
  const top = 34;
  const bottom = 46;
  const w = width - left - right;
  const h = height - top - bottom;
  const all = p.series.flatMap((s) => s.points).filter(([x, y]) => Number.isFinite(x) && Number.isFinite(y));
  const xs = all.map(([x]) => x);
  const ys = [...all.map(([, y]) => y), ...(p.hLines ?? []).map((l) => l.y)];
  let xMin = Math.min(...xs);
  let xMax = Math.max(...xs);
  if (p.xLog) {
    xMin = Math.max(Math.min(...xs.filter((v) => v > 0)), 1e-9);
    xMin = 10 ** (Math.floor(Math.log10(xMin) * 2) / 2);
    xMax = 10 ** (Math.ceil(Math.log10(xMax) * 2) / 2);
  }
  if (!(xMax > xMin)) xMax = xMin + 1;
  const yMin = p.yZero === false ? Math.min(...ys) : Math.min(0, ...ys);
  const yTicks = niceTicks(yMin, Math.max(...ys, yMin + 1e-9), 5);
  const yMax = Math.max(yTicks[yTicks.length - 1] ?? 1, yMin + 1e-9);
  const yBottom = yTicks[0] ?? yMin;
  const sx = (v: number) =>
    x0 +
    left +
    (p.xLog
      ? ((Math.log10(Math.max(v, xMin)) - Math.log10(xMin)) / (Math.log10(xMax) - Math.log10(xMin))) * w
      : ((v - xMin) / (xMax - xMin)) * w);
  const sy = (v: number) => y0 + top + h - ((v - yBottom) / (yMax - yBottom)) * h;
  const out: string[] = [];
  out.push(
    `<text x="${x0 + left}" y="${y0 + 20}" font-size="15" font-weight="bold" ${FONT}>${esc(p.title)}</text>`,
  );
  out.push(
    `<rect x="${x0 + left}" y="${y0 + top}" width="${w}" height="${h}" fill="none" stroke="#999" stroke-width="1"/>`,
  );
  for (const t of yTicks) {
    const y = sy(t).toFixed(1);
    out.push(`<line x1="${x0 + left}" y1="${y}" x2="${x0 + left + w}" y2="${y}" stroke="#e5e5e5"/>`);
    out.push(
      `<text x="${x0 + left - 6}" y="${y}" font-size="11" text-anchor="end" dominant-baseline="middle" ${FONT}>${fmt(t)}</text>`,
    );
  }
  const xTicks = p.xLog ? logTicks(xMin, xMax) : niceTicks(xMin, xMax, 6);
  for (const t of xTicks) {
    const x = sx(t).toFixed(1);
    out.push(`<line x1="${x}" y1="${y0 + top}" x2="${x}" y2="${y0 + top + h}" stroke="#f0f0f0"/>`);
    out.push(
      `<text x="${x}" y="${y0 + top + h + 16}" font-size="11" text-anchor="middle" ${FONT}>${fmt(t)}</text>`,
    );
  }
  out.push(
    `<text x="${x0 + left + w / 2}" y="${y0 + height - 8}" font-size="12" text-anchor="middle" ${FONT}>${esc(p.xLabel)}</text>`,
  );
  const yl = y0 + top + h / 2;
  out.push(
    `<text x="${x0 + 16}" y="${yl}" font-size="12" text-anchor="middle" transform="rotate(-90 ${x0 + 16} ${yl})" ${FONT}>${esc(p.yLabel)}</text>`,
  );
  for (const line of p.hLines ?? []) {
    const y = sy(line.y).toFixed(1);
    out.push(
      `<line x1="${x0 + left}" y1="${y}" x2="${x0 + left + w}" y2="${y}" stroke="#555" stroke-dasharray="2 3"/>`,
    );
    out.push(
      `<text x="${x0 + left + 4}" y="${Number(y) - 4}" font-size="10" fill="#555" ${FONT}>${esc(line.label)}</text>`,
    );
  }
  p.series.forEach((s, i) => {
    const color = s.color ?? PALETTE[i % PALETTE.length];
    const pts = s.points
      .filter(([x, y]) => Number.isFinite(x) && Number.isFinite(y))
      .map(([x, y]) => `${sx(x).toFixed(1)},${sy(y).toFixed(1)}`)
      .join(' ');
    const dash = s.dashed ? ' stroke-dasharray="6 4"' : '';
    out.push(`<polyline points="${pts}" fill="none" stroke="${color}" stroke-width="1.8"${dash}/>`);
    if (s.points.length <= 12) {
      for (const [x, y] of s.points) {
        out.push(`<circle cx="${sx(x).toFixed(1)}" cy="${sy(y).toFixed(1)}" r="3" fill="${color}"/>`);
      }
    }
    const ly = y0 + top + 6 + i * 17;
    const lx = x0 + left + w + 12;
    out.push(
      `<line x1="${lx}" y1="${ly}" x2="${lx + 22}" y2="${ly}" stroke="${color}" stroke-width="2"${dash}/>`,
    );
    out.push(
      `<text x="${lx + 28}" y="${ly}" font-size="11" dominant-baseline="middle" ${FONT}>${esc(s.name)}</text>`,
    );
  });
  return out.join('\n');
}

function document(width: number, height: number, body: string, title: string): string {
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}">`,
    // The accessible name of the picture (and what Biome's a11y rule asks for).
    `<title>${esc(title)}</title>`,
    `<rect width="${width}" height="${height}" fill="#fff"/>`,
    body,
    '</svg>',
    '',
  ].join('\n');
}

/** Panels stacked vertically in one SVG. */
export function chart(panels: Panel[], width = 900, panelHeight = 380): string {
  return document(
    width,
    panelHeight * panels.length,
    panels.map((p, i) => panelSvg(p, 0, i * panelHeight, width, panelHeight)).join('\n'),
    panels.map((p) => p.title).join('; '),
  );
}

/** Grouped bars: one cluster per category, one bar per group. */
export function barChart(options: {
  title: string;
  yLabel: string;
  categories: string[];
  groups: BarGroup[];
  width?: number;
  height?: number;
}): string {
  const width = options.width ?? 900;
  const height = options.height ?? 400;
  const left = 70;
  const right = 190;
  const top = 34;
  const bottom = 46;
  const w = width - left - right;
  const h = height - top - bottom;
  const max = Math.max(...options.groups.flatMap((g) => g.values).filter(Number.isFinite), 1);
  const ticks = niceTicks(0, max * 1.08, 5);
  const yMax = ticks[ticks.length - 1] ?? max;
  const sy = (v: number) => top + h - (v / yMax) * h;
  const out: string[] = [];
  out.push(`<text x="${left}" y="20" font-size="15" font-weight="bold" ${FONT}>${esc(options.title)}</text>`);
  for (const t of ticks) {
    out.push(
      `<line x1="${left}" y1="${sy(t).toFixed(1)}" x2="${left + w}" y2="${sy(t).toFixed(1)}" stroke="#e5e5e5"/>`,
    );
    out.push(
      `<text x="${left - 6}" y="${sy(t).toFixed(1)}" font-size="11" text-anchor="end" dominant-baseline="middle" ${FONT}>${fmt(t)}</text>`,
    );
  }
  const cw = w / options.categories.length;
  const bw = (cw * 0.8) / options.groups.length;
  options.categories.forEach((c, ci) => {
    const cx = left + ci * cw;
    out.push(
      `<text x="${cx + cw / 2}" y="${top + h + 18}" font-size="12" text-anchor="middle" ${FONT}>${esc(c)}</text>`,
    );
    options.groups.forEach((g, gi) => {
      const v = g.values[ci] ?? 0;
      if (!Number.isFinite(v)) return;
      const x = cx + cw * 0.1 + gi * bw;
      const color = g.color ?? PALETTE[gi % PALETTE.length];
      out.push(
        `<rect x="${x.toFixed(1)}" y="${sy(v).toFixed(1)}" width="${(bw - 2).toFixed(1)}" height="${(top + h - sy(v)).toFixed(1)}" fill="${color}"/>`,
      );
      out.push(
        `<text x="${(x + bw / 2 - 1).toFixed(1)}" y="${(sy(v) - 4).toFixed(1)}" font-size="10" text-anchor="middle" ${FONT}>${fmt(v)}</text>`,
      );
    });
  });
  out.push(`<rect x="${left}" y="${top}" width="${w}" height="${h}" fill="none" stroke="#999"/>`);
  const yl = top + h / 2;
  out.push(
    `<text x="16" y="${yl}" font-size="12" text-anchor="middle" transform="rotate(-90 16 ${yl})" ${FONT}>${esc(options.yLabel)}</text>`,
  );
  options.groups.forEach((g, gi) => {
    const color = g.color ?? PALETTE[gi % PALETTE.length];
    const ly = top + 6 + gi * 18;
    out.push(`<rect x="${left + w + 12}" y="${ly - 6}" width="14" height="12" fill="${color}"/>`);
    out.push(
      `<text x="${left + w + 32}" y="${ly}" font-size="11" dominant-baseline="middle" ${FONT}>${esc(g.name)}</text>`,
    );
  });
  return document(width, height, out.join('\n'), options.title);
}
