// Latency: what KMS pays on a fresh connection (TCP + TLS + request) and on a kept-alive one,
// against its 250 ms budget.
import { Agent } from 'node:https';
import { KMS_BUDGET_MS, kmsOutcome, WARN_MS } from './kms.ts';
import type { HttpReply, NetError } from './network.ts';
import { failedReply } from './replies.ts';
import { type Check, ms } from './report.ts';
import { type ApiContext, healthBody, signedCall } from './requests.ts';

/** Nearest-rank percentile. */
export function percentile(values: number[], p: number): number {
  if (values.length === 0) return Number.NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const rank = Math.max(1, Math.ceil((p / 100) * sorted.length));
  return sorted[Math.min(rank, sorted.length) - 1] as number;
}

export async function latencyChecks(api: ApiContext, samples: number): Promise<Check[]> {
  const checks: Check[] = [];
  const judge = (id: string, title: string, times: number[], extra: string): Check => {
    const p50 = percentile(times, 50);
    const p99 = percentile(times, 99);
    const numbers = `p50 ${ms(p50)}, p99 ${ms(p99)} over ${times.length} calls${extra}`;
    if (p50 > KMS_BUDGET_MS) {
      return {
        id,
        title,
        status: 'fail',
        detail: `${numbers}: over KMS's ${KMS_BUDGET_MS} ms budget`,
        ...kmsOutcome('timeout', 'customKeyStore'),
      };
    }
    if (p99 > WARN_MS) {
      return {
        id,
        title,
        status: 'warn',
        detail: `${numbers}: ${p99 > KMS_BUDGET_MS ? `some calls exceed KMS's ${KMS_BUDGET_MS} ms budget` : `close to KMS's ${KMS_BUDGET_MS} ms budget`}`,
        ...kmsOutcome('timeout', 'customKeyStore'),
      };
    }
    return { id, title, status: 'pass', detail: `${numbers}; budget ${KMS_BUDGET_MS} ms` };
  };
  const failed = (id: string, title: string, reply: HttpReply | NetError): Check =>
    failedReply(id, title, reply, 'customKeyStore', 'GetHealthStatus');

  const freshTitle = 'Latency on fresh connections (TCP + TLS + request)';
  const fresh: number[] = [];
  let freshFailure: Check | undefined;
  for (let i = 0; i < samples; i++) {
    const reply = await signedCall(api, 'health', healthBody('KmsHealthCheck'));
    if (!reply.ok && reply.stage === 'timeout') {
      fresh.push(reply.ms);
      continue;
    }
    if (!reply.ok || reply.status !== 200) {
      freshFailure = failed('latency.fresh', freshTitle, reply);
      break;
    }
    fresh.push(reply.ms);
  }
  checks.push(freshFailure ?? judge('latency.fresh', freshTitle, fresh, ''));

  const keptTitle = 'Latency on a kept-alive connection';
  const agent = new Agent({ keepAlive: true, maxSockets: 1 });
  try {
    const warmup = await signedCall(api, 'health', healthBody('KmsHealthCheck'), { agent });
    if (!warmup.ok || warmup.status !== 200) {
      checks.push(failed('latency.keepalive', keptTitle, warmup));
      return checks;
    }
    const kept: number[] = [];
    let reused = 0;
    for (let i = 0; i < samples; i++) {
      const reply = await signedCall(api, 'health', healthBody('KmsHealthCheck'), { agent });
      if (!reply.ok && reply.stage === 'timeout') {
        kept.push(reply.ms);
        continue;
      }
      if (!reply.ok || reply.status !== 200) {
        checks.push(failed('latency.keepalive', keptTitle, reply));
        return checks;
      }
      if (reply.reusedSocket) reused++;
      kept.push(reply.ms);
    }
    const check = judge('latency.keepalive', keptTitle, kept, `, ${reused} on a reused connection`);
    if (check.status === 'pass' && reused < samples) {
      check.status = 'warn';
      check.detail += '; the server closed kept-alive connections, so KMS pays TCP + TLS more often';
    }
    checks.push(check);
  } finally {
    agent.destroy();
  }
  return checks;
}
