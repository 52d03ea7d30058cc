// Several HSMs holding the same keys, behind the one Hsm interface: each call goes to the first
// HSM (in configured order) whose circuit breaker lets it through, and to the next when that one
// is unavailable. A breaker opens after repeated failures, so that a failing HSM is not hammered,
// and lets one call through again after a pause (half-open: one trial at a time, other calls keep
// away meanwhile), doubling the pause while it fails.
import {
  type AesGcmCiphertext,
  type Hsm,
  HsmError,
  type HsmHealth,
  type HsmInfo,
  type HsmKey,
} from './hsm.ts';

export interface FleetOptions {
  /** Consecutive failures that open the breaker. */
  failureThreshold?: number;
  /** First pause of an open breaker; doubled at each failed trial, up to maxOpenMs. */
  openMs?: number;
  maxOpenMs?: number;
  now?: () => number;
}

export interface FleetMember {
  /** The configured name, for logs and when the HSM was never reached. */
  readonly name: string;
  readonly hsm: Hsm;
}

interface Breaker {
  /** Consecutive outages: reset by any answer. */
  failures: number;
  openUntil: number;
  openMs: number;
  /** The last outage, given again to calls refused while the breaker is open. */
  lastError: HsmError | undefined;
  /** Whether a call is the half-open trial now. */
  trial: boolean;
}

/** Failures that count against an HSM: it did not answer. Other errors are answers. */
function isOutage(err: unknown): err is HsmError {
  return err instanceof HsmError && (err.kind === 'unavailable' || err.kind === 'timeout');
}

export class HsmFleet implements Hsm {
  readonly members: readonly FleetMember[];
  readonly #breakers: Breaker[];
  readonly #threshold: number;
  readonly #openMs: number;
  readonly #maxOpenMs: number;
  readonly #now: () => number;

  constructor(members: readonly FleetMember[], options: FleetOptions = {}) {
    if (members.length === 0) throw new Error('an HSM fleet needs at least one HSM');
    this.members = members;
    this.#threshold = options.failureThreshold ?? 3;
    this.#openMs = options.openMs ?? 2000;
    this.#maxOpenMs = options.maxOpenMs ?? 60_000;
    this.#now = options.now ?? Date.now;
    this.#breakers = members.map(() => ({
      failures: 0,
      openUntil: 0,
      openMs: this.#openMs,
      lastError: undefined,
      trial: false,
    }));
  }

  info(): HsmInfo | undefined {
    return this.members[0]?.hsm.info();
  }

  /**
   * The fleet, telling `onServed` which HSM each call went to (the spec's Logging section: which
   * HSM served the request): one view per request, as requests may overlap.
   */
  serving(onServed: (hsm: string) => void): Hsm {
    return {
      info: () => this.info(),
      findKey: (label, version) => this.#route((hsm) => hsm.findKey(label, version), false, onServed),
      encrypt: (key, plaintext, aad) =>
        this.#route((hsm) => hsm.encrypt(key, plaintext, aad), true, onServed),
      decrypt: (key, input, aad) => this.#route((hsm) => hsm.decrypt(key, input, aad), true, onServed),
      close: () => this.close(),
    };
  }

  findKey(label: string, version?: number): Promise<HsmKey | undefined> {
    // Often answered from a cache without the HSM: not evidence that the HSM works.
    return this.#route((hsm) => hsm.findKey(label, version), false);
  }

  encrypt(key: HsmKey, plaintext: Buffer, aad: Buffer): Promise<AesGcmCiphertext> {
    return this.#route((hsm) => hsm.encrypt(key, plaintext, aad));
  }

  decrypt(key: HsmKey, input: AesGcmCiphertext, aad: Buffer): Promise<Buffer> {
    return this.#route((hsm) => hsm.decrypt(key, input, aad));
  }

  close(): void {
    for (const member of this.members) member.hsm.close();
  }

  /** UNAVAILABLE while its breaker is open, DEGRADED while its last calls failed, else ACTIVE. */
  health(index: number): HsmHealth {
    const breaker = this.#breakers[index] as Breaker;
    if (breaker.failures >= this.#threshold && this.#now() < breaker.openUntil) return 'UNAVAILABLE';
    return breaker.failures > 0 ? 'DEGRADED' : 'ACTIVE';
  }

  /** Runs `call` on one member regardless of its breaker (the deep health check), recording the outcome. */
  async probe<T>(index: number, call: (hsm: Hsm) => Promise<T>): Promise<T> {
    const member = this.members[index] as FleetMember;
    try {
      const result = await call(member.hsm);
      this.#succeeded(index);
      return result;
    } catch (err) {
      if (isOutage(err)) this.#failed(index, err);
      throw err;
    }
  }

  /**
   * Members in configured order, without those whose breaker is open. One due for a trial takes
   * its turn, unless another call is its trial already: an HSM that recovered gets its traffic back;
   * one still down fails over at once (or, when it hangs, costs one request per pause).
   */
  #candidates(): number[] {
    const now = this.#now();
    const out: number[] = [];
    this.#breakers.forEach((breaker, index) => {
      if (breaker.failures < this.#threshold || (now >= breaker.openUntil && !breaker.trial)) out.push(index);
    });
    return out;
  }

  #isOpen(breaker: Breaker): boolean {
    return breaker.failures >= this.#threshold;
  }

  async #route<T>(
    call: (hsm: Hsm) => Promise<T>,
    answered = true,
    onServed?: (hsm: string) => void,
  ): Promise<T> {
    const candidates = this.#candidates();
    if (candidates.length === 0) {
      // Every breaker is open: fail fast, with the reason the first HSM last gave.
      throw (
        this.#breakers[0]?.lastError ??
        new HsmError('unavailable', 'Every HSM is shut off after repeated failures (circuit breaker)')
      );
    }
    let outage: HsmError | undefined;
    for (const index of candidates) {
      const member = this.members[index] as FleetMember;
      const breaker = this.#breakers[index] as Breaker;
      // Taken only now: a trial that an earlier HSM's answer made unneeded stays for a later call.
      const trial = this.#isOpen(breaker);
      if (trial) {
        if (breaker.trial || this.#now() < breaker.openUntil) continue;
        breaker.trial = true;
      }
      try {
        const result = await call(member.hsm);
        if (answered) this.#succeeded(index);
        return result;
      } catch (err) {
        if (!isOutage(err)) {
          // The HSM answered (a bad ciphertext, a key usage refusal): that is its answer.
          this.#succeeded(index);
          throw err;
        }
        this.#failed(index, err);
        // A timeout has used the request's time: answer now rather than try the next HSM.
        if (err.kind === 'timeout') throw err;
        outage = err;
      } finally {
        if (trial) breaker.trial = false;
        // After the call: an HSM reached for the first time knows its id only then.
        onServed?.(member.hsm.info()?.id ?? member.name);
      }
    }
    throw (
      outage ??
      this.#breakers[0]?.lastError ??
      new HsmError('unavailable', 'Every HSM is shut off after repeated failures (circuit breaker)')
    );
  }

  #succeeded(index: number): void {
    const breaker = this.#breakers[index] as Breaker;
    breaker.failures = 0;
    breaker.openMs = this.#openMs;
  }

  #failed(index: number, error: HsmError): void {
    const breaker = this.#breakers[index] as Breaker;
    const now = this.#now();
    breaker.lastError = error;
    breaker.failures++;
    if (breaker.failures < this.#threshold) return;
    // Opened, or a trial failed: pause, longer each time.
    if (breaker.failures > this.#threshold) breaker.openMs = Math.min(breaker.openMs * 2, this.#maxOpenMs);
    breaker.openUntil = now + breaker.openMs;
  }
}
