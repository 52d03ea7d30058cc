// The cost section of docs/benchmarks.md (suite 5, bench/suites/cost.ts), and its target rows:
// every figure comes from results.json, so `npm run bench` (or `node bench/run.ts --report-only`)
// writes it again.
import { type CostResults, type StageCost, TARGET_PER_MILLION } from '../suites/cost.ts';
import { table } from './util.ts';

/** The summary's rows: each ALB stage against the target, with API Gateway in the same mode beside it. */
export function costTargetRows(k: CostResults) {
  return k.stages
    .filter((s) => s.resources.frontDoor === 'alb')
    .map((s) => {
      const api = k.stages.find(
        (o) =>
          o.resources.frontDoor === 'apigateway' && o.resources.connectivity === s.resources.connectivity,
      );
      return {
        suite: '5 Cost',
        measure: `ALB, ${s.resources.connectivity}: per million at ${k.assumptions.requestRate} req/s, all in`,
        measured: usd(s.perMillion),
        floor: api === undefined ? '—' : `${usd(api.perMillion)} (API Gateway, same mode)`,
        ratio: api === undefined ? '—' : `${(s.perMillion / api.perMillion).toFixed(2)}×`,
        target: `< ${usd(TARGET_PER_MILLION)}`,
        pass: s.perMillion < TARGET_PER_MILLION,
      };
    });
}

const usd = (v: number) => `$${v.toFixed(2)}`;
const usd3 = (v: number) => `$${v.toFixed(3)}`;
const whole = (v: number) => `$${Math.round(v).toLocaleString('en-US')}`;
const name = (s: StageCost) =>
  `${s.resources.frontDoor === 'alb' ? 'ALB' : 'API Gateway'}, ${s.resources.connectivity} (${s.resources.stage})`;

export function costSection(k: CostResults): string[] {
  const a = k.assumptions;
  const p = k.prices;
  const out: string[] = [
    `## 5. Cost at KMS's quota: ${a.requestRate} req/s, both front doors`,
    '',
    `What a stage costs at KMS's default request quota per external key store, ${a.requestRate} req/s ` +
      `(${(k.requestsPerMonth / 1e9).toFixed(2)} billion requests in a ${a.hoursPerMonth}-hour month), per ` +
      'million requests and per month. The resources are read from the packaged templates of the CI stages ' +
      `(\`${k.packaged}\`; deploy/params.ci-*.yml), each connectivity mode behind each front door, otherwise ` +
      'alike: the front door, the NLB and its Availability Zones, the interface endpoints, the listener rules, ' +
      "the functions' memory and architecture. The Lambda time comes from suite 1, the prices from the table " +
      `below, typed in on ${p.typedIn}. \`npm run bench\` writes this section; alone, on bench/results.json's ` +
      'suite 1: `node bench/run.ts --report-only --update-cost` (it packages the four stages).',
    '',
  ];
  const lineIds = [...new Set(k.stages.flatMap((s) => s.lines.map((l) => l.label)))];
  const cell = (s: StageCost, label: string, per: 'perMillion' | 'monthly') => {
    const l = s.lines.find((x) => x.label === label);
    return l === undefined ? '—' : per === 'perMillion' ? usd3(l.perMillion) : whole(l.monthly);
  };
  out.push(
    table(
      ['per million requests', ...k.stages.map(name)],
      [
        ...lineIds.map((label) => [label, ...k.stages.map((s) => cell(s, label, 'perMillion'))]),
        ['**all of the above**', ...k.stages.map((s) => `**${usd(s.perMillion)}**`)],
      ],
    ),
    '',
    table(
      [`per month at ${a.requestRate} req/s`, ...k.stages.map(name)],
      [
        ...lineIds.map((label) => [label, ...k.stages.map((s) => cell(s, label, 'monthly'))]),
        ['**all of the above**', ...k.stages.map((s) => `**${whole(s.monthly)}**`)],
      ],
    ),
    '',
    'How each line was made:',
    '',
    ...k.stages.flatMap((s) => [
      `- ${name(s)}: ${s.lines.map((l) => `${l.label}: ${l.detail}`).join('; ')}.`,
    ]),
    '',
  );
  const [first] = k.stages;
  const albRules = Math.max(...k.stages.map((s) => s.resources.listenerRules));
  const apiFloor = Math.min(
    ...k.sensitivity.flatMap((row) =>
      k.stages
        .filter((s) => s.resources.frontDoor === 'apigateway')
        .map((s) => row.perMillion[s.resources.stage] ?? Number.NaN),
    ),
  );
  const api = k.stages.find((s) => s.resources.frontDoor === 'apigateway');
  const apiLine = api?.lines.find((l) => l.id === 'frontDoor');
  const [firstTier] = p.apiGatewayRest;
  if (api !== undefined && apiLine !== undefined && firstTier !== undefined) {
    out.push(
      `**API Gateway** bills every request: at this volume its tiers bring the REST API to ` +
        `${usd(apiLine.perMillion)} per million (${usd(firstTier.perMillion)} in the first tier alone), ` +
        `${Math.round((100 * apiLine.perMillion) / api.perMillion)}% of its stage's total. An ALB bills ` +
        'capacity: by the hour, and by LCU, the most of four dimensions (new connections, active connections, ' +
        'processed bytes, rule evaluations) it uses in the hour.',
      '',
    );
  }
  if (first !== undefined) {
    out.push(
      `**Lambda.** The slowest 32-byte Encrypt or Decrypt here (suite 1) ` +
        `has p50 ${k.measured.localP50Ms.toFixed(3)} ms and p99 ${k.measured.localP99Ms.toFixed(3)} ms at full ` +
        `CPU. At ${first.resources.memoryMb} MB Lambda gives ${(first.resources.memoryMb / a.fullVcpuMb).toFixed(2)} ` +
        `of a vCPU, so that time grows by ${(a.fullVcpuMb / first.resources.memoryMb).toFixed(2)}×, and the HSM ` +
        `is assumed to add ${a.hsmMs} ms a request (each PKCS#11 call is a round trip to a network HSM, and an ` +
        'Encrypt makes three: suite 7 measures ~7 ms with every call 2 ms away; the sensitivity table below ' +
        `prices 5 ms): **${first.billedMs} ms billed** per invocation (1 ms steps). An environment is busy ` +
        `${first.occupancyMs} ms per request (p99, + ${a.platformOverheadMs} ms for the Runtime API): Little's law ` +
        `gives ${((a.requestRate * first.occupancyMs) / 1000).toFixed(1)} busy environments, × ${a.safetyFactor} ` +
        `headroom = **${first.environmentsPerFunction} provisioned environments** for Encrypt and for Decrypt ` +
        '(each sized for the whole rate, as the split is unknown); `provisionedConcurrency` is one setting for ' +
        'all four functions, so each gets as many, although GetHealthStatus and GetKeyMetadata need a few. ' +
        'On-demand environments would cost less, but their cold starts do not fit in 250 ms (suite 3).',
      '',
    );
  }
  out.push(
    '**Assumptions** (bench/suites/cost.ts `ASSUMPTIONS`; the sensitivity table below varies the two that ' +
      'matter most):',
    '',
    `- KMS's connection reuse is not published: **${a.requestsPerConnection} requests per TLS connection**. ` +
      `New connections drive the ALB's LCUs (25 a second each) and the TLS handshake bytes ` +
      `(${a.tlsHandshakeBytes} a connection) the NLB and the endpoints carry. A connection stays open at most ` +
      `${a.connectionLifetimeSeconds} s (the ALB's idle timeout): active connections ≤ new ones × that.`,
    `- Bytes per request: ${a.requestBytes} in, ${a.responseBytes} out, headers included: a KMS-shaped Encrypt ` +
      '(32-byte data key, 100-byte AAD, request metadata) and its answer, measured on the local proxy. ALB bills ' +
      `processed bytes to Lambda targets at ${p.alb.lcu.gbPerHourLambdaTargets} GB an hour per LCU.`,
    `- The ALB evaluates at most its ${albRules} listener rules per request: within the ` +
      `${p.alb.lcu.freeRules} free ones.`,
    '- The NLB balances across zones (cross-zone on, as infra/endpoint-service.ts sets it): with two AZs, half ' +
      `the bytes cross between them, at $${p.interAzPerGb} a GB. KMS's own interface endpoint to the endpoint ` +
      "service is KMS's to pay.",
    '- Every request runs on a provisioned environment (no spillover); API Gateway and Lambda free tiers are ' +
      'left out; data transfer of public endpoints to KMS is left out (the same for both front doors).',
    '',
    table(
      ['requests per connection', 'HSM time per request', ...k.stages.map(name)],
      k.sensitivity.map((row) => [
        String(row.requestsPerConnection),
        `${row.hsmMs} ms`,
        ...k.stages.map((s) => {
          const v = row.perMillion[s.resources.stage] ?? Number.NaN;
          const flag = s.resources.frontDoor === 'alb' && v >= TARGET_PER_MILLION ? ' (over the target)' : '';
          return `${usd(v)}${flag}`;
        }),
      ]),
    ),
    '',
    `Per million, all in, as the two assumptions vary; the target is under ${usd(TARGET_PER_MILLION)} behind an ` +
      'ALB, and the rows over it are marked. What is left there is mostly Lambda: its requests ' +
      `($${p.lambda.requestsPerMillion} per million) and the provisioned environments, which grow with the ` +
      "HSM's distance. One TLS connection per request adds LCUs (25 new connections a second each) and " +
      `handshake bytes through the NLB. The API Gateway stages cost at least ${usd(apiFloor)} per million in every row.`,
    '',
    "**Not in the totals: logs.** They cost about the same behind either front door (but for API Gateway's " +
      "access logs) and are the largest line of all at this rate: the proxy's one line per request, with its " +
      'audit record, and its metrics go to CloudWatch Logs.',
    '',
    table(
      ['per million requests', ...k.stages.map(name)],
      [...new Set(k.stages.flatMap((s) => s.logs.map((l) => l.label)))].map((label) => [
        label,
        ...k.stages.map((s) => {
          const l = s.logs.find((x) => x.label === label);
          return l === undefined ? '—' : `${usd3(l.perMillion)} (${whole(l.monthly)} a month)`;
        }),
      ]),
    ),
    '',
    `At $${p.cloudWatchLogsIngestionPerGb} a GB (the standard class; the infrequent-access class costs about ` +
      "half, and Lambda's own logs may be billed by volume tiers: check the current pricing) the function logs " +
      'alone cost more than everything above behind an ALB.',
    '',
    `**Prices** (us-east-1, AWS's public list prices, typed in on ${p.typedIn} from the pages below as last ` +
      'read: this machine cannot reach them, so check them before relying on these figures):',
    '',
    table(
      ['item', 'price', 'source'],
      [
        ['Lambda requests', `$${p.lambda.requestsPerMillion} per million`, p.sources.lambda],
        [
          'Lambda duration, on demand (x86_64 / arm64)',
          `$${p.lambda.x86_64.gbSecond} / $${p.lambda.arm64.gbSecond} per GB-s`,
          p.sources.lambda,
        ],
        [
          'Provisioned concurrency (x86_64 / arm64)',
          `$${p.lambda.x86_64.provisionedGbSecond} / $${p.lambda.arm64.provisionedGbSecond} per GB-s`,
          p.sources.lambda,
        ],
        [
          'Duration on provisioned environments (x86_64 / arm64)',
          `$${p.lambda.x86_64.provisionedDurationGbSecond} / $${p.lambda.arm64.provisionedDurationGbSecond} per GB-s`,
          p.sources.lambda,
        ],
        [
          'API Gateway REST API',
          p.apiGatewayRest
            .map((t, i, all) => {
              const from = i === 0 ? 0 : (all[i - 1]?.upToMillions ?? 0);
              return `$${t.perMillion} per million ${t.upToMillions === null ? `over ${from / 1000} billion` : `to ${t.upToMillions >= 1000 ? `${t.upToMillions / 1000} billion` : `${t.upToMillions} million`}`}`;
            })
            .join(', '),
          p.sources.apiGateway,
        ],
        [
          'Application Load Balancer',
          `$${p.alb.hour} an hour + $${p.alb.lcuHour} per LCU-hour; an LCU: ${p.alb.lcu.newConnectionsPerSecond} new ` +
            `connections/s, ${p.alb.lcu.activeConnectionsPerMinute} active connections/min, ` +
            `${p.alb.lcu.gbPerHourLambdaTargets} GB/h to Lambda targets, ${p.alb.lcu.ruleEvaluationsPerSecond} rule ` +
            `evaluations/s (${p.alb.lcu.freeRules} rules free)`,
          p.sources.elb,
        ],
        [
          'Network Load Balancer',
          `$${p.nlb.hour} an hour + $${p.nlb.nlcuHour} per NLCU-hour; a TCP NLCU: ${p.nlb.nlcu.newFlowsPerSecond} new ` +
            `flows/s, ${p.nlb.nlcu.activeFlows.toLocaleString('en-US')} active flows, ${p.nlb.nlcu.gbPerHour} GB/h`,
          p.sources.elb,
        ],
        [
          'Interface VPC endpoint',
          `$${p.interfaceEndpoint.azHour} per AZ-hour + $${p.interfaceEndpoint.perGb} per GB`,
          p.sources.privateLink,
        ],
        ['Data between AZs', `$${p.interAzPerGb} per GB (out and in)`, p.sources.dataTransfer],
        ['CloudWatch Logs ingestion', `$${p.cloudWatchLogsIngestionPerGb} per GB`, p.sources.cloudWatch],
        ['S3 Standard storage', `$${p.s3StandardGbMonth} per GB-month`, p.sources.s3],
      ],
    ),
    '',
  );
  return out;
}
