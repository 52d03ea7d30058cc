// A CloudWatch dashboard per stage and the alarms AWS recommends for external key stores: the
// proxy's own metrics (their names from functions/metric-names.json, which the functions emit by),
// Lambda, the front door (API Gateway or the ALB), and KMS's XKS metrics when the custom key store
// id is known.
import METRIC from '../functions/metric-names.json' with { type: 'json' };
import { targetGroupLogicalId } from './alb/index.ts';
import { type AlarmProperties, getAtt, type MetricStat, type Resource, type Resources } from './cfn.ts';
import { FUNCTIONS, type Params } from './params.ts';

export const NAMESPACE = 'XksProxy';
const SERVICE = 'xks-proxy';
const OPERATIONS = ['GetHealthStatus', 'GetKeyMetadata', 'Encrypt', 'Decrypt'];

/**
 * A row of a dashboard widget's `metrics`: namespace, metric name, dimension names and values, and
 * the rendering options last; or a metric-math row, an array holding one expression.
 */
type MetricRow = Array<string | Record<string, string>> | [{ expression: string; id: string; label: string }];
interface Widget {
  type: 'metric';
  width: number;
  height: number;
  x?: number;
  y?: number;
  properties: { title: string; region: string; metrics: MetricRow[]; [option: string]: unknown };
}

function widget(title: string, metrics: MetricRow[], extra: Record<string, unknown> = {}): Widget {
  return {
    type: 'metric',
    width: 12,
    height: 6,
    properties: { title, region: '${AWS::Region}', metrics, ...extra },
  };
}

/** A metric-math row: a CloudWatch SEARCH expression. */
const search = (expression: string, id: string, label: string): MetricRow[] => [[{ expression, id, label }]];

/** The deployed name of a function of this stage. */
const functionName = (p: Params, service: string, fn: string) => `${service}-${p.stage}-${fn}`;

export function dashboard(
  p: Params,
  service: string,
): Record<string, Resource<'AWS::CloudWatch::Dashboard'>> {
  const widgets = [
    ...proxyWidgets(),
    ...lambdaWidgets(p, service),
    ...(p.frontDoor === 'alb' ? albWidgets() : apiGatewayWidgets(p)),
    ...kmsWidgets(p),
  ];
  widgets.forEach((w, i) => {
    w.x = (i % 2) * 12;
    w.y = Math.floor(i / 2) * 6;
  });
  return {
    XksDashboard: {
      Type: 'AWS::CloudWatch::Dashboard',
      Properties: {
        DashboardName: `xks-proxy-${p.stage}`,
        DashboardBody: { 'Fn::Sub': JSON.stringify({ widgets }) },
      },
    },
  };
}

/** The proxy's own metrics: requests, errors, latencies, cold starts, the deep health check. */
function proxyWidgets(): Widget[] {
  const perOperation = (metric: string, stat: string): MetricRow[] =>
    OPERATIONS.map((op) => [
      NAMESPACE,
      metric,
      'service',
      SERVICE,
      'operation',
      op,
      { stat, label: `${op} ${stat}` },
    ]);
  return [
    widget('XKS requests per operation', perOperation(METRIC.requests, 'Sum'), {
      stat: 'Sum',
      period: 60,
    }),
    widget('XKS errors per operation', perOperation(METRIC.errors, 'Sum'), { stat: 'Sum', period: 60 }),
    widget(
      'XKS errors by errorName',
      search(
        `SEARCH('{${NAMESPACE},errorName,operation,service} MetricName="${METRIC.errorsByName}"', 'Sum', 60)`,
        'errors',
        '',
      ),
    ),
    widget(
      'Proxy latency p50 / p99 (ms)',
      [...perOperation(METRIC.latency, 'p50'), ...perOperation(METRIC.latency, 'p99')],
      {
        period: 60,
        annotations: { horizontal: [{ label: 'KMS timeout', value: 250 }] },
      },
    ),
    widget(
      'HSM latency p50 / p99 (ms)',
      [...perOperation(METRIC.hsmLatency, 'p50'), ...perOperation(METRIC.hsmLatency, 'p99')],
      { period: 60 },
    ),
    widget(
      'Cold starts',
      search(
        `SEARCH('{${NAMESPACE},function_name,service} MetricName="${METRIC.coldStart}"', 'Sum', 300)`,
        'cold',
        '',
      ),
    ),
    widget(
      'HSM unavailable (deep health check)',
      [
        [
          NAMESPACE,
          METRIC.hsmUnavailable,
          'service',
          SERVICE,
          'operation',
          'GetHealthStatus',
          { stat: 'Maximum' },
        ],
      ],
      { period: 300 },
    ),
  ];
}

function lambdaWidgets(p: Params, service: string): Widget[] {
  const fnName = (fn: string) => functionName(p, service, fn);
  return [
    widget(
      'Lambda duration p99, throttles, spillover',
      FUNCTIONS.flatMap((fn) => [
        ['AWS/Lambda', 'Duration', 'FunctionName', fnName(fn), { stat: 'p99' }],
        ['AWS/Lambda', 'Throttles', 'FunctionName', fnName(fn), { stat: 'Sum', yAxis: 'right' }],
        [
          'AWS/Lambda',
          'ProvisionedConcurrencySpilloverInvocations',
          'FunctionName',
          fnName(fn),
          { stat: 'Sum', yAxis: 'right' },
        ],
      ]),
      { period: 60 },
    ),
    widget(
      'Lambda concurrency',
      FUNCTIONS.flatMap((fn) => [
        ['AWS/Lambda', 'ConcurrentExecutions', 'FunctionName', fnName(fn), { stat: 'Maximum' }],
        [
          'AWS/Lambda',
          'ProvisionedConcurrencyUtilization',
          'FunctionName',
          fnName(fn),
          { stat: 'Maximum', yAxis: 'right' },
        ],
      ]),
      { period: 60 },
    ),
  ];
}

function apiGatewayWidgets(p: Params): Widget[] {
  const api = `xks-proxy-${p.stage}`;
  return [
    widget(
      'API Gateway latency and errors',
      [
        ['AWS/ApiGateway', 'Latency', 'ApiName', api, 'Stage', p.stage, { stat: 'p99' }],
        ['AWS/ApiGateway', 'IntegrationLatency', 'ApiName', api, 'Stage', p.stage, { stat: 'p99' }],
        ['AWS/ApiGateway', '4XXError', 'ApiName', api, 'Stage', p.stage, { stat: 'Sum', yAxis: 'right' }],
        ['AWS/ApiGateway', '5XXError', 'ApiName', api, 'Stage', p.stage, { stat: 'Sum', yAxis: 'right' }],
      ],
      { period: 60 },
    ),
  ];
}

/**
 * The ALB's own metrics: what it answered itself (4xx/5xx: refused TLS or requests, Lambda
 * throttled or failing), what the functions answered, latency, and the capacity units it bills.
 * Its dimensions are known once it exists: `${...}` in the dashboard's Fn::Sub.
 */
function albWidgets(): Widget[] {
  const lb = (metric: string, options: Record<string, string>): MetricRow => [
    'AWS/ApplicationELB',
    metric,
    'LoadBalancer',
    '${XksAlb.LoadBalancerFullName}',
    options,
  ];
  const perTargetGroup = (metric: string, stat: string): MetricRow[] =>
    FUNCTIONS.map((fn) => [
      'AWS/ApplicationELB',
      metric,
      'TargetGroup',
      `\${${targetGroupLogicalId(fn)}.TargetGroupFullName}`,
      'LoadBalancer',
      '${XksAlb.LoadBalancerFullName}',
      { stat, label: `${fn} ${metric}` },
    ]);
  return [
    widget(
      'ALB requests and errors',
      [
        lb('RequestCount', { stat: 'Sum' }),
        lb('HTTPCode_ELB_4XX_Count', { stat: 'Sum', yAxis: 'right' }),
        lb('HTTPCode_ELB_5XX_Count', { stat: 'Sum', yAxis: 'right' }),
        lb('HTTPCode_Target_5XX_Count', { stat: 'Sum', yAxis: 'right' }),
        lb('ClientTLSNegotiationErrorCount', { stat: 'Sum', yAxis: 'right' }),
        ...perTargetGroup('LambdaInternalError', 'Sum'),
        ...perTargetGroup('LambdaUserError', 'Sum'),
      ],
      { period: 60 },
    ),
    widget(
      'ALB latency, connections, capacity units',
      [
        lb('TargetResponseTime', { stat: 'p99' }),
        lb('NewConnectionCount', { stat: 'Sum', yAxis: 'right' }),
        lb('ActiveConnectionCount', { stat: 'Sum', yAxis: 'right' }),
        lb('ConsumedLCUs', { stat: 'Average', yAxis: 'right' }),
      ],
      { period: 60 },
    ),
  ];
}

/** KMS's metrics of the external key store, when its id is known (alarms.kmsCustomKeyStoreId). */
function kmsWidgets(p: Params): Widget[] {
  const store = p.alarms.kmsCustomKeyStoreId;
  if (!store) return [];
  const kms = (metric: string, stat: string) =>
    search(
      `SEARCH('{AWS/KMS,CustomKeyStoreId} CustomKeyStoreId="${store}" MetricName="${metric}"', '${stat}', 300)`,
      metric.toLowerCase(),
      '',
    );
  return [
    widget('KMS: XksProxyLatency (ms)', kms('XksProxyLatency', 'Average')),
    widget('KMS: XksProxyErrors', kms('XksProxyErrors', 'Sum')),
    widget('KMS: ExternalKeyStoreThrottle', kms('ExternalKeyStoreThrottle', 'Sum')),
    widget('KMS: XksProxyCertificateDaysToExpire', kms('XksProxyCertificateDaysToExpire', 'Minimum')),
    widget('KMS: XksExternalKeyManagerStates', kms('XksExternalKeyManagerStates', 'Maximum')),
  ];
}

/** An alarm of the stage: its name, its description, the SNS topic it notifies, and `props`. */
type AlarmOf = (
  name: string,
  description: string,
  props: Omit<AlarmProperties, 'AlarmName' | 'AlarmDescription' | 'TreatMissingData'>,
) => Resource<'AWS::CloudWatch::Alarm'>;

export function alarms(p: Params, service: string): Resources {
  const actions = p.alarms.snsTopicArn
    ? { AlarmActions: [p.alarms.snsTopicArn], OKActions: [p.alarms.snsTopicArn] }
    : {};
  const alarm: AlarmOf = (name, description, props) => ({
    Type: 'AWS::CloudWatch::Alarm',
    Properties: {
      AlarmName: `xks-proxy-${p.stage}-${name}`,
      AlarmDescription: description,
      ...actions,
      ...props,
      // No data is no alarm: a stage without traffic has nothing wrong with it.
      TreatMissingData: 'notBreaching',
    },
  });
  return {
    ...proxyAlarms(alarm),
    ...(p.frontDoor === 'alb' ? albAlarms(alarm) : apiGatewayAlarms(p, alarm)),
    ...lambdaAlarms(p, service, alarm),
    ...kmsAlarms(p, alarm),
  };
}

const dims = (entries: Record<string, string>) =>
  Object.entries(entries).map(([Name, Value]) => ({ Name, Value }));

/** A metric math alarm's Metrics: the sum of the queries. */
const sumOf = (label: string, queries: MetricStat[]): Pick<AlarmProperties, 'Metrics'> => ({
  Metrics: [
    ...queries.map((q, i) => ({ Id: `m${i}`, ReturnData: false as const, MetricStat: q })),
    { Id: 'total', Label: label, ReturnData: true, Expression: queries.map((_, i) => `m${i}`).join('+') },
  ],
});

/** Latency within KMS's budget, and the deep health check's HSM. */
function proxyAlarms(alarm: AlarmOf): Resources {
  const resources: Resources = {};
  for (const op of ['Encrypt', 'Decrypt', 'GetKeyMetadata']) {
    resources[`XksAlarmLatency${op}`] = alarm(
      `latency-${op}`,
      `p99 ${op} latency in the proxy above 150 ms: KMS gives each call 250 ms end to end, network included.`,
      {
        Namespace: NAMESPACE,
        MetricName: METRIC.latency,
        Dimensions: dims({ service: SERVICE, operation: op }),
        ExtendedStatistic: 'p99',
        Period: 60,
        EvaluationPeriods: 5,
        DatapointsToAlarm: 3,
        Threshold: 150,
        ComparisonOperator: 'GreaterThanThreshold',
      },
    );
  }
  resources.XksAlarmHsmUnavailable = alarm(
    'hsm-unavailable',
    'The deep health check (a real encrypt and decrypt with the health-check key) failed: the HSM is unreachable or refuses the proxy.',
    {
      Namespace: NAMESPACE,
      MetricName: METRIC.hsmUnavailable,
      Dimensions: dims({ service: SERVICE, operation: 'GetHealthStatus' }),
      Statistic: 'Maximum',
      Period: 300,
      EvaluationPeriods: 1,
      Threshold: 1,
      ComparisonOperator: 'GreaterThanOrEqualToThreshold',
    },
  );
  return resources;
}

function apiGatewayAlarms(p: Params, alarm: AlarmOf): Resources {
  return {
    XksAlarmServerErrors: alarm(
      'server-errors',
      'The API answered 5xx (InternalException, DependencyTimeoutException, Lambda failures): KMS requests are failing.',
      {
        Namespace: 'AWS/ApiGateway',
        MetricName: '5XXError',
        Dimensions: dims({ ApiName: `xks-proxy-${p.stage}`, Stage: p.stage }),
        Statistic: 'Sum',
        Period: 60,
        EvaluationPeriods: 5,
        DatapointsToAlarm: 2,
        Threshold: 5,
        ComparisonOperator: 'GreaterThanOrEqualToThreshold',
      },
    ),
  };
}

/**
 * The ALB's 5xx: its own (a function throttled, failing or timing out) and the functions'
 * (InternalException, DependencyTimeoutException), as API Gateway's 5XXError counts both.
 */
function albAlarms(alarm: AlarmOf): Resources {
  const fullName = getAtt('XksAlb', 'LoadBalancerFullName');
  const count = (metricName: string): MetricStat => ({
    Metric: {
      Namespace: 'AWS/ApplicationELB',
      MetricName: metricName,
      Dimensions: [{ Name: 'LoadBalancer', Value: fullName }],
    },
    Period: 60,
    Stat: 'Sum',
  });
  return {
    XksAlarmServerErrors: alarm(
      'server-errors',
      "The ALB answered 5xx (its own: a function throttled or failing; or the functions': InternalException, DependencyTimeoutException): KMS requests are failing.",
      {
        ...sumOf('5xx', [count('HTTPCode_ELB_5XX_Count'), count('HTTPCode_Target_5XX_Count')]),
        EvaluationPeriods: 5,
        DatapointsToAlarm: 2,
        Threshold: 5,
        ComparisonOperator: 'GreaterThanOrEqualToThreshold',
      },
    ),
  };
}

/** Throttles, and with provisioned concurrency, requests beyond it. */
function lambdaAlarms(p: Params, service: string, alarm: AlarmOf): Resources {
  const perFunction = (metricName: string): MetricStat[] =>
    FUNCTIONS.map((fn) => ({
      Metric: {
        Namespace: 'AWS/Lambda',
        MetricName: metricName,
        Dimensions: dims({ FunctionName: functionName(p, service, fn) }),
      },
      Period: 60,
      Stat: 'Sum',
    }));
  const resources: Resources = {
    XksAlarmLambdaThrottles: alarm(
      'lambda-throttles',
      'Lambda throttled proxy invocations: reserved concurrency is too low for the request rate.',
      {
        ...sumOf('Throttles', perFunction('Throttles')),
        EvaluationPeriods: 3,
        DatapointsToAlarm: 2,
        Threshold: 1,
        ComparisonOperator: 'GreaterThanOrEqualToThreshold',
      },
    ),
  };
  if (p.provisionedConcurrency > 0) {
    resources.XksAlarmSpillover = alarm(
      'provisioned-concurrency-spillover',
      'Requests beyond the provisioned concurrency hit cold starts, which do not fit in 250 ms.',
      {
        ...sumOf('Spillover', perFunction('ProvisionedConcurrencySpilloverInvocations')),
        EvaluationPeriods: 5,
        DatapointsToAlarm: 3,
        Threshold: 1,
        ComparisonOperator: 'GreaterThanOrEqualToThreshold',
      },
    );
  }
  return resources;
}

/** KMS's view of the external key store, when its id is known (alarms.kmsCustomKeyStoreId). */
function kmsAlarms(p: Params, alarm: AlarmOf): Resources {
  const store = p.alarms.kmsCustomKeyStoreId;
  if (!store) return {};
  // KMS publishes the certificate metric per CertificateName (the proxy's domain name).
  const domain = p.connectivity === 'public' ? p.public.domainName : p.vpcEndpointService.privateDnsName;
  // ExternalKeyStoreThrottle has KmsOperation and KeySpec dimensions: the sum over the operations
  // that reach an external key store (symmetric keys only, spec: API operations).
  const kmsOperations = [
    'Encrypt',
    'Decrypt',
    'ReEncrypt',
    'GenerateDataKey',
    'GenerateDataKeyWithoutPlaintext',
    'DescribeKey',
  ];
  return {
    XksAlarmCertificateExpiry: alarm(
      'certificate-expiry',
      'The TLS certificate KMS sees on the proxy expires in less than 30 days (KMS metric).',
      {
        Namespace: 'AWS/KMS',
        MetricName: 'XksProxyCertificateDaysToExpire',
        Dimensions: dims({ CustomKeyStoreId: store, CertificateName: domain }),
        Statistic: 'Minimum',
        Period: 3600,
        EvaluationPeriods: 1,
        Threshold: 30,
        ComparisonOperator: 'LessThanThreshold',
      },
    ),
    XksAlarmKmsThrottle: alarm(
      'kms-external-key-store-throttle',
      'KMS throttled requests to this external key store: ask AWS for a higher quota or spread the load.',
      {
        ...sumOf(
          'ExternalKeyStoreThrottle',
          kmsOperations.map((op) => ({
            Metric: {
              Namespace: 'AWS/KMS',
              MetricName: 'ExternalKeyStoreThrottle',
              Dimensions: dims({ CustomKeyStoreId: store, KmsOperation: op, KeySpec: 'SYMMETRIC_DEFAULT' }),
            },
            Period: 300,
            Stat: 'Sum',
          })),
        ),
        EvaluationPeriods: 1,
        Threshold: 1,
        ComparisonOperator: 'GreaterThanOrEqualToThreshold',
      },
    ),
  };
}
