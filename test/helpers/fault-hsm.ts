// The fault-injecting PKCS#11 module (test/fault-pkcs11/fault-pkcs11.c): builds it, and drives it
// through its control file (the rules) and its trace file (one line per PKCS#11 call).
import { execFileSync } from 'node:child_process';
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  utimesSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { after } from 'node:test';
import { fileURLToPath } from 'node:url';
import { createTestSetup, type TestSetup } from './proxy.ts';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const SOURCE = join(ROOT, 'test/fault-pkcs11/fault-pkcs11.c');
const OUT_DIR = join(ROOT, '.local/fault-pkcs11');

/**
 * Compiles the module when the source is newer than the library; returns the library's path.
 * 'passthrough' is a second copy that reads other environment variables (FAULT_PASSTHROUGH_*, none
 * set): no faults, but the target reached through it is isolated like the faulty copy's (see
 * fault-pkcs11.c, Isolation).
 */
export function buildFaultModule(variant: 'faulty' | 'passthrough' = 'faulty'): string {
  const out = join(OUT_DIR, variant === 'faulty' ? 'fault-pkcs11.so' : 'fault-pkcs11-passthrough.so');
  if (existsSync(out) && statSync(out).mtimeMs >= statSync(SOURCE).mtimeMs) return out;
  mkdirSync(OUT_DIR, { recursive: true });
  // Built aside and renamed: test files run in parallel, and one may load the library meanwhile.
  const temp = `${out}.${process.pid}.tmp`;
  const flags = ['-shared', '-fPIC', '-O2', '-Wall', '-Wextra', '-Werror'];
  if (variant === 'passthrough') flags.push('-DFAULT_ENV_PREFIX="FAULT_PASSTHROUGH_"');
  execFileSync('cc', [...flags, '-o', temp, SOURCE, '-ldl', '-lpthread'], { stdio: 'pipe' });
  renameSync(temp, out);
  return out;
}

/** The rules (see fault-pkcs11.c) and the call trace of one faulty HSM. */
export class FaultControl {
  readonly controlPath: string;
  readonly tracePath: string;
  #writes = 0;

  constructor(dir: string) {
    mkdirSync(dir, { recursive: true });
    this.controlPath = join(dir, 'fault-rules');
    this.tracePath = join(dir, 'fault-trace');
    this.clear();
    this.resetTrace();
  }

  /** The environment the module reads when it is loaded and at each C_Initialize. */
  env(): Record<string, string> {
    return { FAULT_PKCS11_CONTROL: this.controlPath, FAULT_PKCS11_TRACE: this.tracePath };
  }

  /** Replaces the rules, e.g. `['C_Encrypt fail CKR_DEVICE_ERROR count=1']`; counters start over. */
  set(rules: string[]): void {
    const temp = `${this.controlPath}.${process.pid}.${this.#writes++}.tmp`;
    writeFileSync(temp, rules.map((rule) => `${rule}\n`).join(''));
    // The module sees a new version by inode, size or mtime. The rename gives a new inode, but the
    // kernel may hand out a freed one again, and file times tick coarsely (milliseconds): so the
    // mtime is also pushed past the previous version's, making every version distinct.
    const previous = existsSync(this.controlPath) ? statSync(this.controlPath).mtimeMs : 0;
    const mtime = Math.max(Date.now(), previous + 1) / 1000;
    utimesSync(temp, mtime, mtime);
    renameSync(temp, this.controlPath);
  }

  /** No faults. */
  clear(): void {
    this.set([]);
  }

  /** The functions called so far, in order. */
  trace(): string[] {
    if (!existsSync(this.tracePath)) return [];
    return readFileSync(this.tracePath, 'utf8').split('\n').filter(Boolean);
  }

  /** How many times `fn` (every function when omitted) was called. */
  calls(fn?: string): number {
    const trace = this.trace();
    return fn === undefined ? trace.length : trace.filter((name) => name === fn).length;
  }

  resetTrace(): void {
    // Truncated in place: the module opens the file in append mode at each call.
    writeFileSync(this.tracePath, '');
  }
}

/**
 * For a test file that drives HSM workers in its own process over the fault module: a fresh token,
 * a control folder (`dir`, also for the test's own files) and this process's environment pointing
 * at both, which the workers inherit and the module reads when it loads. Removed after the file.
 */
export function faultHsmInThisProcess(name: string): {
  setup: TestSetup;
  control: FaultControl;
  dir: string;
} {
  const setup = createTestSetup();
  const dir = mkdtempSync(join(tmpdir(), `${name}-`));
  const control = new FaultControl(dir);
  Object.assign(process.env, setup.env, control.env());
  after(() => {
    rmSync(setup.dir, { recursive: true, force: true });
    rmSync(dir, { recursive: true, force: true });
  });
  return { setup, control, dir };
}
