// Several HSMs holding the same keys, behind the one Hsm interface: each call goes to the first
// HSM (in configured order) whose circuit breaker lets it through, and to the next when that one
// is unavailable. A breaker opens after repeated failures, so that a failing HSM is not hammered,
// and lets one call through again after a pause (half-open), doubling the pause while it fails.
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
  #servedBy: FleetMember | undefined;

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
    }));
  }

  /** The HSM that answered the last call (the spec's Logging section: which HSM served it). */
  servedBy(): string | undefined {
    return this.#servedBy === undefined ? undefined : (this.#servedBy.hsm.info()?.id ?? this.#servedBy.name);
  }

  info(): HsmInfo | undefined {
    return (this.#servedBy ?? this.members[0])?.hsm.info();
  }

  findKey(label: string, version?: number): HsmKey | undefined {
    // Often answered from a cache without the HSM: not evidence that the HSM works.
    return this.#route((hsm) => hsm.findKey(label, version), false);
  }

  encrypt(key: HsmKey, plaintext: Buffer, aad: Buffer): AesGcmCiphertext {
    return this.#route((hsm) => hsm.encrypt(key, plaintext, aad));
  }

  decrypt(key: HsmKey, input: AesGcmCiphertext, aad: Buffer): Buffer {
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
  probe<T>(index: number, call: (hsm: Hsm) => T): T {
    const member = this.members[index] as FleetMember;
    try {
      const result = call(member.hsm);
      this.#succeeded(index);
      return result;
    } catch (err) {
      if (isOutage(err)) this.#failed(index, err);
      throw err;
    }
  }

  /**
   * Members in configured order, without those whose breaker is open. One due for a trial takes
   * its turn: an HSM that recovered gets its traffic back; one still down fails over at once
   * (or, when it hangs, costs one request per pause).
   */
  #candidates(): number[] {
    const now = this.#now();
    const out: number[] = [];
    this.#breakers.forEach((breaker, index) => {
      if (breaker.failures < this.#threshold || now >= breaker.openUntil) out.push(index);
    });
    return out;
  }

  #route<T>(call: (hsm: Hsm) => T, answered = true): T {
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
      try {
        const result = call(member.hsm);
        if (answered) this.#succeeded(index);
        this.#servedBy = member;
        return result;
      } catch (err) {
        if (!isOutage(err)) {
          // The HSM answered (a bad ciphertext, a key usage refusal): that is its answer.
          this.#succeeded(index);
          this.#servedBy = member;
          throw err;
        }
        this.#failed(index, err);
        this.#servedBy = member;
        // A timeout has used the request's time: answer now rather than try the next HSM.
        if (err.kind === 'timeout') throw err;
        outage = err;
      }
    }
    throw outage as HsmError;
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
