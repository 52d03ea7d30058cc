// The HSM fleet's routing and circuit breaker (layers/pkcs11/fleet.ts), on a clock the test moves:
// the breaker opens after three outages in a row, keeps calls away for its pause, lets one call at a
// time through as the half-open trial, doubles the pause while trials fail (up to its maximum) and
// closes on an answer. The members are stand-ins for HSMs (the HSM boundary), each answering as the
// test tells it; the fleet is the real one.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { HsmFleet } from '../../layers/pkcs11/fleet.ts';
import { type AesGcmCiphertext, type Hsm, HsmError, type HsmKey } from '../../layers/pkcs11/hsm.ts';

type Behaviour = 'ok' | 'down' | 'timeout' | 'badCiphertext' | 'held';

const KEY: HsmKey = { label: 'foo', version: 1, keySpec: 'AES_256', usage: new Set(['ENCRYPT', 'DECRYPT']) };
const SEALED: AesGcmCiphertext = { iv: Buffer.alloc(12), ciphertext: Buffer.alloc(4), tag: Buffer.alloc(16) };

/** An HSM that answers as `behaviour` says, and counts the calls that reached it. */
class StandIn implements Hsm {
  behaviour: Behaviour = 'ok';
  calls = 0;
  /** Calls held open ('held'), released by release(). */
  readonly #held: Array<() => void> = [];
  readonly name: string;

  constructor(name: string) {
    this.name = name;
  }

  info() {
    return { id: `id-${this.name}`, vendor: 'stand-in', model: 'stand-in' };
  }

  findKey(): Promise<HsmKey | undefined> {
    return this.#answer(KEY);
  }

  encrypt(): Promise<AesGcmCiphertext> {
    return this.#answer(SEALED);
  }

  decrypt(): Promise<Buffer> {
    return this.#answer(Buffer.from('plaintext'));
  }

  close(): void {}

  release(): void {
    for (const resolve of this.#held.splice(0)) resolve();
  }

  async #answer<T>(value: T): Promise<T> {
    this.calls++;
    const behaviour = this.behaviour;
    if (behaviour === 'held') await new Promise<void>((resolve) => this.#held.push(resolve));
    if (behaviour === 'down')
      throw new HsmError('unavailable', `HSM unavailable (${this.name})`, 'CKR_DEVICE_REMOVED');
    if (behaviour === 'timeout')
      throw new HsmError('timeout', `The HSM took more than 100 ms (${this.name})`);
    if (behaviour === 'badCiphertext') throw new HsmError('invalidCiphertext', 'bad tag');
    return value;
  }
}

/** A fleet of `names` on a clock that only moves when the test says. */
function fleetOf(...names: string[]) {
  const clock = { ms: 1_000_000 };
  const members = names.map((name) => new StandIn(name));
  const fleet = new HsmFleet(
    members.map((hsm) => ({ name: hsm.name, hsm })),
    { now: () => clock.ms },
  );
  const advance = (ms: number) => {
    clock.ms += ms;
  };
  return { fleet, members, clock, advance };
}

/** Which member served one encrypt, or the error's kind. */
async function servedBy(fleet: HsmFleet): Promise<string> {
  let served = '';
  try {
    const view = fleet.serving((id) => {
      served = id;
    });
    await view.encrypt(KEY, Buffer.alloc(4), Buffer.alloc(0));
    return served;
  } catch (err) {
    return `${served}:${(err as HsmError).kind}`;
  }
}

const encrypt = (fleet: Hsm) => fleet.encrypt(KEY, Buffer.alloc(4), Buffer.alloc(0));

describe('circuit breaker', () => {
  test('three outages in a row open it: the HSM gets no calls for the pause, and is UNAVAILABLE', async () => {
    const { fleet, members, advance } = fleetOf('a', 'b');
    const [a] = members as [StandIn, StandIn];
    a.behaviour = 'down';
    // Each outage fails over to b at once; the first two leave a's breaker closed (DEGRADED).
    assert.equal(await servedBy(fleet), 'id-b');
    assert.equal(fleet.health(0), 'DEGRADED');
    assert.equal(await servedBy(fleet), 'id-b');
    assert.equal(await servedBy(fleet), 'id-b');
    assert.equal(a.calls, 3);
    assert.equal(fleet.health(0), 'UNAVAILABLE');
    // Open: 1999 ms later a is still not asked.
    advance(1999);
    assert.equal(await servedBy(fleet), 'id-b');
    assert.equal(a.calls, 3, 'no call reached the open HSM');
    assert.equal(fleet.health(1), 'ACTIVE');
  });

  test('after the pause one trial: a failed one doubles the pause, up to the maximum', async () => {
    const clock = { ms: 0 };
    const a = new StandIn('a');
    const b = new StandIn('b');
    const fleet = new HsmFleet(
      [
        { name: 'a', hsm: a },
        { name: 'b', hsm: b },
      ],
      { now: () => clock.ms, openMs: 1000, maxOpenMs: 4000 },
    );
    a.behaviour = 'down';
    for (let i = 0; i < 3; i++) await servedBy(fleet);
    assert.equal(a.calls, 3);
    // Pauses after each failed trial: 1000 (opened), then 2000, 4000, 4000 (the maximum).
    for (const [trials, pause] of [1000, 2000, 4000, 4000].entries()) {
      clock.ms += pause - 1;
      await servedBy(fleet);
      assert.equal(a.calls, 3 + trials, `not tried before ${pause} ms`);
      clock.ms += 1;
      const callsBefore: number = a.calls;
      assert.equal(await servedBy(fleet), 'id-b', 'the trial failed over');
      assert.equal(a.calls, callsBefore + 1, `one trial after ${pause} ms`);
      assert.equal(fleet.health(0), 'UNAVAILABLE');
    }
  });

  test('a trial that is answered closes it: ACTIVE, traffic back, and the pause starts over', async () => {
    const { fleet, members, advance } = fleetOf('a', 'b');
    const [a] = members as [StandIn, StandIn];
    a.behaviour = 'down';
    for (let i = 0; i < 3; i++) await servedBy(fleet);
    advance(2000);
    await servedBy(fleet); // failed trial: next pause 4000
    a.behaviour = 'ok';
    advance(3999);
    assert.equal(await servedBy(fleet), 'id-b');
    advance(1);
    assert.equal(await servedBy(fleet), 'id-a', 'the trial is served by the recovered HSM');
    assert.equal(fleet.health(0), 'ACTIVE');
    assert.equal(await servedBy(fleet), 'id-a');
    // Down again: it opens after three outages, with the first pause again (2000, not 8000).
    a.behaviour = 'down';
    for (let i = 0; i < 3; i++) await servedBy(fleet);
    const calls = a.calls;
    advance(2000);
    await servedBy(fleet);
    assert.equal(a.calls, calls + 1);
  });

  test('half-open: one call at a time is the trial; calls meanwhile go to the next HSM', async () => {
    const { fleet, members, advance } = fleetOf('a', 'b');
    const [a] = members as [StandIn, StandIn];
    a.behaviour = 'down';
    for (let i = 0; i < 3; i++) await servedBy(fleet);
    advance(2000);
    a.behaviour = 'held';
    const trial = servedBy(fleet);
    // While the trial waits on a, three more calls: none of them goes to a.
    const others = [servedBy(fleet), servedBy(fleet), servedBy(fleet)];
    await new Promise(setImmediate);
    assert.equal(a.calls, 4, 'only the trial reached a');
    a.behaviour = 'ok';
    a.release();
    assert.deepEqual(await Promise.all(others), ['id-b', 'id-b', 'id-b']);
    assert.equal(await trial, 'id-a');
    assert.equal(fleet.health(0), 'ACTIVE');
  });

  test('every breaker open: fail fast with the first HSM’s last reason, without calling any', async () => {
    const { fleet, members } = fleetOf('a', 'b');
    for (const m of members) m.behaviour = 'down';
    for (let i = 0; i < 3; i++) {
      await assert.rejects(encrypt(fleet), (err: HsmError) => err.kind === 'unavailable');
    }
    const calls = members.map((m) => m.calls);
    await assert.rejects(encrypt(fleet), /HSM unavailable \(a\)/);
    assert.deepEqual(
      members.map((m) => m.calls),
      calls,
    );
  });

  test('a timeout is not failed over (the request’s time is used up), but counts as an outage', async () => {
    const { fleet, members } = fleetOf('a', 'b');
    const [a, b] = members as [StandIn, StandIn];
    a.behaviour = 'timeout';
    assert.equal(await servedBy(fleet), 'id-a:timeout');
    assert.equal(b.calls, 0);
    assert.equal(fleet.health(0), 'DEGRADED');
  });

  test('an answer that is an error (a bad tag) is an answer: no failover, the breaker stays closed', async () => {
    const { fleet, members } = fleetOf('a', 'b');
    const [a, b] = members as [StandIn, StandIn];
    a.behaviour = 'down';
    await servedBy(fleet);
    await servedBy(fleet);
    assert.equal(fleet.health(0), 'DEGRADED');
    a.behaviour = 'badCiphertext';
    assert.equal(await servedBy(fleet), 'id-a:invalidCiphertext');
    assert.equal(b.calls, 2);
    assert.equal(fleet.health(0), 'ACTIVE', 'the failures were reset by the answer');
  });

  test('the deep health check (probe) reaches an open HSM, and its outcome counts', async () => {
    const { fleet, members } = fleetOf('a', 'b');
    const [a] = members as [StandIn, StandIn];
    a.behaviour = 'down';
    for (let i = 0; i < 3; i++) await servedBy(fleet);
    assert.equal(fleet.health(0), 'UNAVAILABLE');
    a.behaviour = 'ok';
    await fleet.probe(0, (hsm) => hsm.encrypt(KEY, Buffer.alloc(4), Buffer.alloc(0)));
    assert.equal(fleet.health(0), 'ACTIVE');
    assert.equal(await servedBy(fleet), 'id-a');
  });

  test('findKey is not evidence that an HSM works: it does not close a breaker', async () => {
    const { fleet, members } = fleetOf('a', 'b');
    const [a] = members as [StandIn, StandIn];
    a.behaviour = 'down';
    await servedBy(fleet);
    a.behaviour = 'ok';
    assert.deepEqual(await fleet.findKey('foo'), KEY);
    assert.equal(fleet.health(0), 'DEGRADED');
  });
});
