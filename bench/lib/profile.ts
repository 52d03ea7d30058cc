// Reads a V8 .cpuprofile (node --cpu-prof) and says where the time of the measured loop went:
// self time per function, and per frame of the project's own code (functions/, layers/) with the
// library time beneath it charged to it, so every entry points at a file:line in functions/.
import { readFileSync } from 'node:fs';
import { relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ROOT, round } from './util.ts';

interface CallFrame {
  functionName: string;
  url: string;
  lineNumber: number;
  columnNumber: number;
}
interface ProfileNode {
  id: number;
  callFrame: CallFrame;
  children?: number[];
}
interface CpuProfile {
  nodes: ProfileNode[];
  startTime: number;
  endTime: number;
  samples: number[];
  timeDeltas: number[];
}

export interface ProfileEntry {
  name: string;
  /** file:line (1-based) relative to the project, node:..., or a package path. */
  location: string;
  ms: number;
  /** Share of the busy (non-idle) time in the measured loop. */
  percent: number;
}

export interface ProjectFrame extends ProfileEntry {
  /** What under this frame took the time (outside the project's own code), largest first. */
  beneath: ProfileEntry[];
}

export interface ProfileAnalysis {
  /** Samples inside the measured loop (the whole profile when the clocks cannot be matched). */
  windowed: boolean;
  busyMs: number;
  hsmMs: number;
  /**
   * The main thread handing each HSM call to its worker thread and taking its answer
   * (layers/pkcs11/worker-hsm.ts: the messages each way and the deadline's timer); the PKCS#11
   * call itself then runs in the worker, outside this profile.
   */
  hsmHopMs: number;
  gcMs: number;
  /** Top self-time functions, native PKCS#11 calls and idle excluded. */
  top: ProfileEntry[];
  /** Self time per package or part of Node. */
  byPackage: ProfileEntry[];
  /** Time charged to the nearest frame in functions/ or layers/. */
  byProjectFrame: ProjectFrame[];
}

const IDLE = new Set(['(idle)', '(program)', '(root)']);

function locationOf(frame: CallFrame): string {
  const line = frame.lineNumber + 1;
  if (frame.url.startsWith('file://')) return `${relative(ROOT, fileURLToPath(frame.url))}:${line}`;
  if (frame.url === '') return '(native)';
  return `${frame.url}:${line}`;
}

function packageOf(frame: CallFrame): string {
  if (isHsm(frame)) return 'PKCS#11 (pkcs11js + SoftHSM)';
  if (frame.functionName === '(garbage collector)') return '(garbage collector)';
  if (frame.url === '') return '(native / V8 builtins)';
  if (frame.url.startsWith('node:')) return 'node: core';
  if (!frame.url.startsWith('file://')) return frame.url;
  const path = relative(ROOT, fileURLToPath(frame.url));
  const nm = path.lastIndexOf('node_modules/');
  if (nm >= 0) {
    const parts = path.slice(nm + 'node_modules/'.length).split('/');
    return parts[0]?.startsWith('@') ? `${parts[0]}/${parts[1]}` : (parts[0] ?? path);
  }
  return path.split('/')[0] ?? path;
}

/** pkcs11js's JS wrapper (its self time is the native call: SoftHSM runs inside it) or the addon. */
function isHsm(frame: CallFrame): boolean {
  return (
    frame.url.includes('/node_modules/pkcs11js/') ||
    (frame.url === '' && /^C_[A-Za-z]+$/.test(frame.functionName))
  );
}

/** The main thread's side of an HSM call made in the worker thread (see ProfileAnalysis.hsmHopMs). */
function isHsmHop(frame: CallFrame): boolean {
  return /\/layers\/pkcs11\/worker-hsm\.ts$/.test(frame.url);
}

function isProject(frame: CallFrame): boolean {
  if (!frame.url.startsWith('file://')) return false;
  const path = relative(ROOT, fileURLToPath(frame.url));
  return path.startsWith('functions/') || path.startsWith('layers/');
}

export function analyzeProfile(
  file: string,
  window?: { startUs: number; endUs: number },
  topN = 15,
): ProfileAnalysis {
  const profile = JSON.parse(readFileSync(file, 'utf8')) as CpuProfile;
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const parent = new Map<number, number>();
  for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id);

  // Sample timestamps are on the same monotonic clock as process.hrtime (microseconds).
  let selfUs = new Map<number, number>();
  const collect = (inWindow: (t: number) => boolean) => {
    const self = new Map<number, number>();
    let t = profile.startTime;
    for (let i = 0; i < profile.samples.length; i++) {
      const delta = profile.timeDeltas[i] ?? 0;
      t += delta;
      if (!inWindow(t)) continue;
      const id = profile.samples[i] as number;
      self.set(id, (self.get(id) ?? 0) + delta);
    }
    return self;
  };
  let windowed = false;
  if (window && window.endUs > window.startUs) {
    selfUs = collect((t) => t >= window.startUs && t <= window.endUs);
    windowed = selfUs.size > 0;
  }
  if (!windowed) selfUs = collect(() => true);

  let busyUs = 0;
  let hsmUs = 0;
  let hopUs = 0;
  let gcUs = 0;
  const fnSelf = new Map<string, { name: string; location: string; us: number }>();
  const pkgSelf = new Map<string, number>();
  const frameTotals = new Map<
    string,
    { name: string; location: string; us: number; beneath: Map<string, number> }
  >();
  for (const [id, us] of selfUs) {
    const node = byId.get(id);
    if (node === undefined || IDLE.has(node.callFrame.functionName)) continue;
    const frame = node.callFrame;
    busyUs += us;
    if (isHsm(frame)) hsmUs += us;
    if (isHsmHop(frame)) hopUs += us;
    if (frame.functionName === '(garbage collector)') gcUs += us;
    const pkg = packageOf(frame);
    pkgSelf.set(pkg, (pkgSelf.get(pkg) ?? 0) + us);
    if (!isHsm(frame)) {
      const name = frame.functionName || '(anonymous)';
      const location = locationOf(frame);
      const key = `${name} ${location}`;
      const entry = fnSelf.get(key) ?? { name, location, us: 0 };
      entry.us += us;
      fnSelf.set(key, entry);
    }
    // Charge the sample to the nearest project frame on its stack.
    let cursor: number | undefined = id;
    let owner: ProfileNode | undefined;
    while (cursor !== undefined) {
      const n = byId.get(cursor);
      if (n && isProject(n.callFrame)) {
        owner = n;
        break;
      }
      cursor = parent.get(cursor);
    }
    const ownerName = owner
      ? owner.callFrame.functionName || '(anonymous)'
      : '(outside functions/ and layers/)';
    const ownerLocation = owner ? locationOf(owner.callFrame) : 'runtime, middy core, harness';
    const ownerKey = `${ownerName} ${ownerLocation}`;
    const total = frameTotals.get(ownerKey) ?? {
      name: ownerName,
      location: ownerLocation,
      us: 0,
      beneath: new Map(),
    };
    total.us += us;
    const what =
      owner === node
        ? '(self)'
        : isHsm(frame)
          ? 'PKCS#11 call (pkcs11js + SoftHSM)'
          : `${pkg}: ${frame.functionName || '(anonymous)'}`;
    total.beneath.set(what, (total.beneath.get(what) ?? 0) + us);
    frameTotals.set(ownerKey, total);
  }
  const pct = (us: number) => round((100 * us) / Math.max(busyUs, 1), 1);
  const entry = (name: string, location: string, us: number): ProfileEntry => ({
    name,
    location,
    ms: round(us / 1000, 2),
    percent: pct(us),
  });
  return {
    windowed,
    busyMs: round(busyUs / 1000, 1),
    hsmMs: round(hsmUs / 1000, 1),
    hsmHopMs: round(hopUs / 1000, 1),
    gcMs: round(gcUs / 1000, 1),
    top: [...fnSelf.values()]
      .sort((a, b) => b.us - a.us)
      .slice(0, topN)
      .map((e) => entry(e.name, e.location, e.us)),
    byPackage: [...pkgSelf]
      .sort((a, b) => b[1] - a[1])
      .slice(0, topN)
      .map(([name, us]) => entry(name, '', us)),
    byProjectFrame: [...frameTotals.values()]
      .sort((a, b) => b.us - a.us)
      .slice(0, topN)
      .map((f) => ({
        ...entry(f.name, f.location, f.us),
        beneath: [...f.beneath]
          .sort((a, b) => b[1] - a[1])
          .slice(0, 4)
          .map(([name, us]) => entry(name, '', us)),
      })),
  };
}
