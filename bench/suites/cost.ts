// Suite 5: what a stage costs at KMS's default request quota per external key store (1800 req/s),
// per million requests and per month, behind each front door (API Gateway, an ALB) in each
// connectivity mode. The resources are read from the packaged CloudFormation templates of the CI
// stages (scripts/package-stage.ts): the front door, the NLB, the interface endpoints and their
// Availability Zones, the listener rules, the functions' memory and architecture. The Lambda
// duration and concurrency come from suite 1, the prices from the one dated table below. Arithmetic
// only; every assumption is a named constant, printed in the report with what it changes.
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { ensureCiLayer, packageStage, type Template } from '../../scripts/package-stage.ts';
import type { HandlerResults } from './handler.ts';

/**
 * AWS list prices, us-east-1, typed in on 2026-12-06 from the public pricing pages named in
 * `sources` as last read; this machine cannot reach them. Check them before relying on a figure.
 */
export const PRICES = {
  typedIn: '2026-12-06',
  region: 'us-east-1',
  sources: {
    lambda: 'https://aws.amazon.com/lambda/pricing/',
    apiGateway: 'https://aws.amazon.com/api-gateway/pricing/',
    elb: 'https://aws.amazon.com/elasticloadbalancing/pricing/',
    privateLink: 'https://aws.amazon.com/privatelink/pricing/',
    dataTransfer: 'https://aws.amazon.com/ec2/pricing/on-demand/',
    cloudWatch: 'https://aws.amazon.com/cloudwatch/pricing/',
    s3: 'https://aws.amazon.com/s3/pricing/',
  },
  lambda: {
    requestsPerMillion: 0.2,
    x86_64: {
      gbSecond: 0.0000166667,
      provisionedGbSecond: 0.0000041667,
      provisionedDurationGbSecond: 0.0000097222,
    },
    arm64: {
      gbSecond: 0.0000133334,
      provisionedGbSecond: 0.0000033334,
      provisionedDurationGbSecond: 0.0000077778,
    },
  },
  /** REST APIs, per million requests in a month, by volume tier (`upTo` million; null: the rest). */
  apiGatewayRest: [
    { upToMillions: 333, perMillion: 3.5 },
    { upToMillions: 1000, perMillion: 2.8 },
    { upToMillions: 20_000, perMillion: 2.38 },
    { upToMillions: null, perMillion: 1.51 },
  ],
  alb: {
    hour: 0.0225,
    lcuHour: 0.008,
    /** One LCU: the most of these a load balancer uses in the hour is what it is billed. */
    lcu: {
      newConnectionsPerSecond: 25,
      activeConnectionsPerMinute: 3000,
      /** Processed bytes, for Lambda targets (1 GB an hour for instance and IP targets). */
      gbPerHourLambdaTargets: 0.4,
      ruleEvaluationsPerSecond: 1000,
      /** Rules a request may be evaluated against for free. */
      freeRules: 10,
    },
  },
  nlb: {
    hour: 0.0225,
    nlcuHour: 0.006,
    /** One NLCU for TCP. */
    nlcu: { newFlowsPerSecond: 800, activeFlows: 100_000, gbPerHour: 1 },
  },
  /** An interface VPC endpoint: per Availability Zone it is in, and per GB it processes. */
  interfaceEndpoint: { azHour: 0.01, perGb: 0.01 },
  /** Data between Availability Zones in a region: $0.01 per GB out of one and $0.01 into the other. */
  interAzPerGb: 0.02,
  /** Standard log class ingestion. */
  cloudWatchLogsIngestionPerGb: 0.5,
  s3StandardGbMonth: 0.023,
};

export const ASSUMPTIONS = {
  /** KMS's default request quota per external key store. */
  requestRate: 1800,
  hoursPerMonth: 730,
  /** Lambda gives one full vCPU at 1769 MB and CPU in proportion below it. */
  fullVcpuMb: 1769,
  /** The Runtime API round trip per invocation (next + response): occupancy, not billed. */
  platformOverheadMs: 1,
  /** Headroom over Little's law's mean: bursts within a second, GC pauses, HSM latency variance. */
  safetyFactor: 3,
  /** The HSM's share of each request, a network hop away (1-5 ms); SoftHSM in suite 1 takes ~0. */
  hsmMs: 2,
  /**
   * Bytes of one KMS Encrypt (32-byte data key, 100-byte AAD, KMS's request metadata) and its
   * answer, headers included, as the test helpers send it to the local proxy: 995 and 335 bytes
   * measured on 2026-12-06.
   */
  requestBytes: 1000,
  responseBytes: 350,
  /** TLS handshake bytes per new connection (the certificate chain, key exchange): NLB and endpoints carry them. */
  tlsHandshakeBytes: 5000,
  /** KMS's connection reuse is not published: requests per TLS connection (sensitivity: 1 to 100). */
  requestsPerConnection: 10,
  /** How long a connection stays open: at most the ALB's idle timeout after its last request. */
  connectionLifetimeSeconds: 60,
  /** Lines the proxy logs per request (its request line with the audit record, EMF): 1780 bytes measured on 2026-12-06. */
  logBytesPerRequest: 1780,
  /** API Gateway's JSON access log line (infra/apigateway/rest-api.ts ACCESS_LOG_FORMAT). */
  apiGatewayAccessLogBytes: 500,
  /** An ALB access log line, and gzip's ratio on such lines in S3. */
  albAccessLogBytes: 500,
  albAccessLogCompression: 0.1,
};
export type Assumptions = typeof ASSUMPTIONS;

/** The CI stages priced: each connectivity mode behind each front door, otherwise alike. */
export const COST_STAGES = ['ci-vpce', 'ci-alb-vpce', 'ci-public', 'ci-alb-public'] as const;
/** The target behind an ALB: all of it (Lambda, provisioned concurrency, NLB, endpoints), per million. */
export const TARGET_PER_MILLION = 0.6;

/** What a packaged template bills for. */
export interface StageResources {
  stage: string;
  frontDoor: 'apigateway' | 'alb';
  connectivity: 'vpc-endpoint-service' | 'public';
  functions: number;
  memoryMb: number;
  architecture: 'x86_64' | 'arm64';
  /** The stage file's provisioned concurrency per function, as packaged. */
  provisionedConcurrency: number;
  listenerRules: number;
  nlb: { azs: number; crossZone: boolean } | undefined;
  interfaceEndpoints: Array<{ service: string; azs: number; carriesKmsTraffic: boolean }>;
}

// biome-ignore lint/suspicious/noExplicitAny: CloudFormation resources are read field by field
type CfnResource = { Type: string; Properties?: any };

/** The billed resources of a packaged template. */
export function resourcesOf(stage: string, template: Template): StageResources {
  const all = Object.values(template.Resources) as CfnResource[];
  const ofType = (type: string) => all.filter((r) => r.Type === type);
  const loadBalancers = ofType('AWS::ElasticLoadBalancingV2::LoadBalancer');
  const alb = loadBalancers.find((lb) => lb.Properties.Type === 'application');
  const nlb = loadBalancers.find((lb) => lb.Properties.Type === 'network');
  const functions = ofType('AWS::Lambda::Function').filter((f) => f.Properties.Layers !== undefined);
  const [first] = functions;
  if (first === undefined) throw new Error(`${stage}: no proxy function in the template`);
  const aliases = ofType('AWS::Lambda::Alias');
  const crossZone = nlb?.Properties.LoadBalancerAttributes?.some(
    (a: { Key: string; Value: string }) =>
      a.Key === 'load_balancing.cross_zone.enabled' && a.Value === 'true',
  );
  return {
    stage,
    frontDoor: alb === undefined ? 'apigateway' : 'alb',
    connectivity: nlb === undefined ? 'public' : 'vpc-endpoint-service',
    functions: functions.length,
    memoryMb: first.Properties.MemorySize,
    architecture: first.Properties.Architectures?.[0] ?? 'x86_64',
    provisionedConcurrency: Math.max(
      0,
      ...aliases.map((a) => a.Properties.ProvisionedConcurrencyConfig?.ProvisionedConcurrentExecutions ?? 0),
    ),
    listenerRules: ofType('AWS::ElasticLoadBalancingV2::ListenerRule').length,
    nlb: nlb && { azs: nlb.Properties.Subnets.length, crossZone: crossZone === true },
    interfaceEndpoints: ofType('AWS::EC2::VPCEndpoint').map((e) => {
      const name = String(e.Properties.ServiceName?.['Fn::Sub'] ?? e.Properties.ServiceName);
      const service = name.split('.').at(-1) ?? name;
      // The execute-api endpoint is the NLB's target: KMS's requests pass through it.
      return { service, azs: e.Properties.SubnetIds.length, carriesKmsTraffic: service === 'execute-api' };
    }),
  };
}

/** What suite 1 measured that the cost depends on (times in ms, at full CPU, SoftHSM in-process). */
export interface Measured {
  localP50Ms: number;
  localP99Ms: number;
}

export function measuredOf(handler: HandlerResults): Measured {
  const small = handler.rows.filter((r) => r.id === 'encrypt-32' || r.id === 'decrypt-32');
  if (small.length === 0) throw new Error('suite 1 has no 32-byte Encrypt or Decrypt row');
  return {
    localP50Ms: Math.max(...small.map((r) => r.handler.p50)) / 1000,
    localP99Ms: Math.max(...small.map((r) => r.handler.p99)) / 1000,
  };
}

export type LineId = 'frontDoor' | 'lambdaRequests' | 'lambdaDuration' | 'provisioned' | 'nlb' | 'endpoints';
export interface CostLine {
  id: LineId | 'logs';
  label: string;
  monthly: number;
  perMillion: number;
  /** How the figure was made. */
  detail: string;
}

export interface StageCost {
  resources: StageResources;
  /** Billed per invocation (1 ms steps), and an environment's time per request. */
  billedMs: number;
  occupancyMs: number;
  /** Provisioned environments per function that the rate needs (Little's law with headroom). */
  environmentsPerFunction: number;
  lines: CostLine[];
  /** The lines above: the front door, Lambda, provisioned concurrency, NLB and endpoints. */
  monthly: number;
  perMillion: number;
  /** Not in the total: logs, which cost the same behind either front door but for the access logs. */
  logs: CostLine[];
}

const GB = 1e9;

/** The bill of a stage's resources at the assumptions' rate. */
export function stageCost(r: StageResources, m: Measured, a: Assumptions = ASSUMPTIONS): StageCost {
  const p = PRICES;
  const hours = a.hoursPerMonth;
  const requests = a.requestRate * 3600 * hours;
  const millions = requests / 1e6;
  const gb = r.memoryMb / 1024;
  // Below 1769 MB the same work takes longer in proportion; above, one thread gains nothing.
  const cpuScale = Math.max(1, a.fullVcpuMb / r.memoryMb);
  const billedMs = Math.max(1, Math.ceil(m.localP50Ms * cpuScale + a.hsmMs));
  const occupancyMs = m.localP99Ms * cpuScale + a.platformOverheadMs + a.hsmMs;
  // Encrypt and Decrypt are each sized for the whole rate (the split is unknown), and the stage
  // file's one setting gives every function as many.
  const environmentsPerFunction = Math.max(
    r.provisionedConcurrency,
    Math.ceil(((a.requestRate * occupancyMs) / 1000) * a.safetyFactor),
  );
  const lambda = p.lambda[r.architecture];
  const line = (id: LineId | 'logs', label: string, monthly: number, detail: string): CostLine => ({
    id,
    label,
    monthly,
    perMillion: monthly / millions,
    detail,
  });

  // Bytes through the load balancers an hour: requests and answers; the NLB and the endpoints
  // carry each new connection's TLS handshake too.
  const newConnectionsPerSecond = a.requestRate / a.requestsPerConnection;
  const activeConnections = newConnectionsPerSecond * a.connectionLifetimeSeconds;
  const httpGbPerHour = (a.requestRate * (a.requestBytes + a.responseBytes) * 3600) / GB;
  const tcpGbPerHour = httpGbPerHour + (newConnectionsPerSecond * a.tlsHandshakeBytes * 3600) / GB;

  const lines: CostLine[] = [];
  if (r.frontDoor === 'apigateway') {
    let left = millions;
    let below = 0;
    let monthly = 0;
    for (const tier of p.apiGatewayRest) {
      const inTier = Math.min(left, (tier.upToMillions ?? Number.POSITIVE_INFINITY) - below);
      monthly += inTier * tier.perMillion;
      left -= inTier;
      below = tier.upToMillions ?? below;
      if (left <= 0) break;
    }
    lines.push(
      line(
        'frontDoor',
        'API Gateway REST API',
        monthly,
        `${fmt(millions)} M requests a month, in its volume tiers`,
      ),
    );
  } else {
    const dims = {
      'new connections': newConnectionsPerSecond / p.alb.lcu.newConnectionsPerSecond,
      'active connections': activeConnections / p.alb.lcu.activeConnectionsPerMinute,
      'processed bytes': httpGbPerHour / p.alb.lcu.gbPerHourLambdaTargets,
      'rule evaluations':
        (a.requestRate * Math.max(0, r.listenerRules - p.alb.lcu.freeRules)) /
        p.alb.lcu.ruleEvaluationsPerSecond,
    };
    const [bound, lcu] = Object.entries(dims).reduce((most, d) => (d[1] > most[1] ? d : most));
    lines.push(
      line(
        'frontDoor',
        'Application Load Balancer',
        hours * (p.alb.hour + lcu * p.alb.lcuHour),
        `${fmt(lcu)} LCU (bound by ${bound}; ${Object.entries(dims)
          .map(([k, v]) => `${k} ${fmt(v)}`)
          .join(', ')}) + the hourly charge`,
      ),
    );
  }
  lines.push(
    line(
      'lambdaRequests',
      'Lambda requests',
      millions * p.lambda.requestsPerMillion,
      `${fmt(millions)} M invocations`,
    ),
    line(
      'lambdaDuration',
      'Lambda duration (on provisioned environments)',
      requests * (billedMs / 1000) * gb * lambda.provisionedDurationGbSecond,
      `${billedMs} ms billed × ${r.memoryMb} MB, ${r.architecture}`,
    ),
    line(
      'provisioned',
      'Provisioned concurrency',
      r.functions * environmentsPerFunction * gb * hours * 3600 * lambda.provisionedGbSecond,
      `${r.functions} functions × ${environmentsPerFunction} environments × ${r.memoryMb} MB, all month`,
    ),
  );
  if (r.nlb !== undefined) {
    const dims = {
      'new flows': newConnectionsPerSecond / p.nlb.nlcu.newFlowsPerSecond,
      'active flows': activeConnections / p.nlb.nlcu.activeFlows,
      'processed bytes': tcpGbPerHour / p.nlb.nlcu.gbPerHour,
    };
    const nlcu = Math.max(...Object.values(dims));
    const crossing = r.nlb.crossZone ? 1 - 1 / r.nlb.azs : 0;
    const transfer = tcpGbPerHour * crossing * p.interAzPerGb;
    lines.push(
      line(
        'nlb',
        'Network Load Balancer (endpoint service)',
        hours * (p.nlb.hour + nlcu * p.nlb.nlcuHour + transfer),
        `${fmt(nlcu)} NLCU + the hourly charge + ${fmt(tcpGbPerHour * crossing)} GB an hour between AZs (cross-zone, ${r.nlb.azs} AZs)`,
      ),
    );
  }
  if (r.interfaceEndpoints.length > 0) {
    let monthly = 0;
    const parts: string[] = [];
    for (const e of r.interfaceEndpoints) {
      monthly += e.azs * hours * p.interfaceEndpoint.azHour;
      if (e.carriesKmsTraffic) monthly += tcpGbPerHour * hours * p.interfaceEndpoint.perGb;
      parts.push(`${e.service} in ${e.azs} AZs${e.carriesKmsTraffic ? ', carrying every request' : ''}`);
    }
    lines.push(line('endpoints', 'Interface VPC endpoints', monthly, parts.join('; ')));
  }
  const monthly = lines.reduce((sum, l) => sum + l.monthly, 0);

  const logGb = (bytes: number) => (requests * bytes) / GB;
  const logs = [
    line(
      'logs',
      "The functions' logs (CloudWatch Logs)",
      logGb(a.logBytesPerRequest) * p.cloudWatchLogsIngestionPerGb,
      `${a.logBytesPerRequest} bytes a request`,
    ),
    r.frontDoor === 'apigateway'
      ? line(
          'logs',
          "API Gateway's access logs (CloudWatch Logs)",
          logGb(a.apiGatewayAccessLogBytes) * p.cloudWatchLogsIngestionPerGb,
          `${a.apiGatewayAccessLogBytes} bytes a request`,
        )
      : line(
          'logs',
          "The ALB's access logs (S3, a month of them)",
          logGb(a.albAccessLogBytes * a.albAccessLogCompression) * p.s3StandardGbMonth,
          `${a.albAccessLogBytes} bytes a request, gzip ${a.albAccessLogCompression}`,
        ),
  ];
  return {
    resources: r,
    billedMs,
    occupancyMs: round(occupancyMs, 3),
    environmentsPerFunction,
    lines,
    monthly,
    perMillion: monthly / millions,
    logs,
  };
}

export interface CostResults {
  prices: typeof PRICES;
  assumptions: Assumptions;
  measured: Measured;
  requestsPerMonth: number;
  stages: StageCost[];
  /** Per million for each stage as two assumptions vary (the rest as in `assumptions`). */
  sensitivity: Array<{ requestsPerConnection: number; hsmMs: number; perMillion: Record<string, number> }>;
  /** The command that packages the templates read here. */
  packaged: string;
}

/** The cost of each stage, from its packaged template; `measured` from suite 1. */
export function costOf(templates: Array<[string, Template]>, measured: Measured): CostResults {
  const resources = templates.map(([stage, template]) => resourcesOf(stage, template));
  const sensitivity: CostResults['sensitivity'] = [];
  for (const requestsPerConnection of [1, 10, 100]) {
    for (const hsmMs of [0, 2, 5]) {
      const a = { ...ASSUMPTIONS, requestsPerConnection, hsmMs };
      sensitivity.push({
        requestsPerConnection,
        hsmMs,
        perMillion: Object.fromEntries(resources.map((r) => [r.stage, stageCost(r, measured, a).perMillion])),
      });
    }
  }
  return {
    prices: PRICES,
    assumptions: ASSUMPTIONS,
    measured,
    requestsPerMonth: ASSUMPTIONS.requestRate * 3600 * ASSUMPTIONS.hoursPerMonth,
    stages: resources.map((r) => stageCost(r, measured)),
    sensitivity,
    packaged: 'npm run package -- --stage <stage>',
  };
}

/** Suite 5: packages the stages (offline, one after the other) and prices them. */
export async function costSuite(options: {
  handler: HandlerResults;
  stages: readonly string[];
  workDir: string;
  log: (line: string) => void;
}): Promise<CostResults> {
  await ensureCiLayer();
  const templates: Array<[string, Template]> = [];
  for (const stage of options.stages) {
    options.log(`  packaging ${stage} ...`);
    const out = join(options.workDir, 'package', stage);
    mkdirSync(out, { recursive: true });
    templates.push([stage, await packageStage(stage, out, options.workDir)]);
  }
  return costOf(templates, measuredOf(options.handler));
}

const round = (v: number, digits: number) => Math.round(v * 10 ** digits) / 10 ** digits;
const fmt = (v: number) => (v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(2));
