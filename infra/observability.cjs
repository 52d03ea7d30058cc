// A CloudWatch dashboard per stage and the alarms AWS recommends for external key stores: the
// proxy's own metrics (functions/middleware.ts METRIC; a test checks the names against the code),
// Lambda, API Gateway, and KMS's XKS metrics when the custom key store id is known.
'use strict';

const { FUNCTIONS } = require('./params.cjs');

const NAMESPACE = 'XksProxy';
const SERVICE = 'xks-proxy';
const OPERATIONS = ['GetHealthStatus', 'GetKeyMetadata', 'Encrypt', 'Decrypt'];

/** The metric names this file uses, as the code emits them (see METRIC in functions/middleware.ts). */
const PROXY_METRICS = {
  requests: 'Requests',
  errors: 'Errors',
  errorsByName: 'ErrorsByName',
  latency: 'Latency',
  hsmLatency: 'HsmLatency',
  hsmUnavailable: 'HsmUnavailable',
  coldStart: 'ColdStart',
};

function widget(title, metrics, extra = {}) {
  return {
    type: 'metric',
    width: 12,
    height: 6,
    properties: { title, region: '${AWS::Region}', metrics, ...extra },
  };
}

function dashboard(p, service) {
  const api = `xks-proxy-${p.stage}`;
  const fnName = (fn) => `${service}-${p.stage}-${fn}`;
  const perOperation = (metric, stat) =>
    OPERATIONS.map((op) => [
      NAMESPACE,
      metric,
      'service',
      SERVICE,
      'operation',
      op,
      { stat, label: `${op} ${stat}` },
    ]);
  // A metric-math row is an array holding one object.
  const search = (expression, id, label) => [[{ expression, id, label }]];
  const widgets = [
    widget('XKS requests per operation', perOperation(PROXY_METRICS.requests, 'Sum'), {
      stat: 'Sum',
      period: 60,
    }),
    widget(
      'XKS errors by errorName',
      search(
        `SEARCH('{${NAMESPACE},errorName,operation,service} MetricName="${PROXY_METRICS.errorsByName}"', 'Sum', 60)`,
        'errors',
        '',
      ),
    ),
    widget(
      'Proxy latency p50 / p99 (ms)',
      [...perOperation(PROXY_METRICS.latency, 'p50'), ...perOperation(PROXY_METRICS.latency, 'p99')],
      {
        period: 60,
        annotations: { horizontal: [{ label: 'KMS timeout', value: 250 }] },
      },
    ),
    widget(
      'HSM latency p50 / p99 (ms)',
      [...perOperation(PROXY_METRICS.hsmLatency, 'p50'), ...perOperation(PROXY_METRICS.hsmLatency, 'p99')],
      { period: 60 },
    ),
    widget(
      'Cold starts',
      search(
        `SEARCH('{${NAMESPACE},function_name,service} MetricName="${PROXY_METRICS.coldStart}"', 'Sum', 300)`,
        'cold',
        '',
      ),
    ),
    widget(
      'HSM unavailable (deep health check)',
      [
        [
          NAMESPACE,
          PROXY_METRICS.hsmUnavailable,
          'service',
          SERVICE,
          'operation',
          'GetHealthStatus',
          { stat: 'Maximum' },
        ],
      ],
      { period: 300 },
    ),
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
  const store = p.alarms.kmsCustomKeyStoreId;
  if (store) {
    const kms = (metric, stat) =>
      search(
        `SEARCH('{AWS/KMS,CustomKeyStoreId} CustomKeyStoreId="${store}" MetricName="${metric}"', '${stat}', 300)`,
        metric.toLowerCase(),
        '',
      );
    widgets.push(
      widget('KMS: XksProxyLatency (ms)', kms('XksProxyLatency', 'Average')),
      widget('KMS: XksProxyErrors', kms('XksProxyErrors', 'Sum')),
      widget('KMS: ExternalKeyStoreThrottle', kms('ExternalKeyStoreThrottle', 'Sum')),
      widget('KMS: XksProxyCertificateDaysToExpire', kms('XksProxyCertificateDaysToExpire', 'Minimum')),
      widget('KMS: XksExternalKeyManagerStates', kms('XksExternalKeyManagerStates', 'Maximum')),
    );
  }
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

function alarms(p, service) {
  const actions = p.alarms.snsTopicArn
    ? { AlarmActions: [p.alarms.snsTopicArn], OKActions: [p.alarms.snsTopicArn] }
    : {};
  const alarm = (name, description, props) => ({
    Type: 'AWS::CloudWatch::Alarm',
    Properties: {
      AlarmName: `xks-proxy-${p.stage}-${name}`,
      AlarmDescription: description,
      ...actions,
      ...props,
    },
  });
  const dims = (entries) => Object.entries(entries).map(([Name, Value]) => ({ Name, Value }));
  const sumOf = (label, queries) => ({
    Metrics: [
      ...queries.map((q, i) => ({ Id: `m${i}`, ReturnData: false, MetricStat: q })),
      { Id: 'total', Label: label, ReturnData: true, Expression: queries.map((_, i) => `m${i}`).join('+') },
    ],
  });
  const fnName = (fn) => `${service}-${p.stage}-${fn}`;
  const resources = {};
  for (const op of ['Encrypt', 'Decrypt', 'GetKeyMetadata']) {
    resources[`XksAlarmLatency${op}`] = alarm(
      `latency-${op}`,
      `p99 ${op} latency in the proxy above 150 ms: KMS gives each call 250 ms end to end, network included.`,
      {
        Namespace: NAMESPACE,
        MetricName: PROXY_METRICS.latency,
        Dimensions: dims({ service: SERVICE, operation: op }),
        ExtendedStatistic: 'p99',
        Period: 60,
        EvaluationPeriods: 5,
        DatapointsToAlarm: 3,
        Threshold: 150,
        ComparisonOperator: 'GreaterThanThreshold',
        TreatMissingData: 'notBreaching',
      },
    );
  }
  resources.XksAlarmHsmUnavailable = alarm(
    'hsm-unavailable',
    'The deep health check (a real encrypt and decrypt with the health-check key) failed: the HSM is unreachable or refuses the proxy.',
    {
      Namespace: NAMESPACE,
      MetricName: PROXY_METRICS.hsmUnavailable,
      Dimensions: dims({ service: SERVICE, operation: 'GetHealthStatus' }),
      Statistic: 'Maximum',
      Period: 300,
      EvaluationPeriods: 1,
      Threshold: 1,
      ComparisonOperator: 'GreaterThanOrEqualToThreshold',
      TreatMissingData: 'notBreaching',
    },
  );
  resources.XksAlarmServerErrors = alarm(
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
      TreatMissingData: 'notBreaching',
    },
  );
  resources.XksAlarmLambdaThrottles = alarm(
    'lambda-throttles',
    'Lambda throttled proxy invocations: reserved concurrency is too low for the request rate.',
    {
      ...sumOf(
        'Throttles',
        FUNCTIONS.map((fn) => ({
          Metric: {
            Namespace: 'AWS/Lambda',
            MetricName: 'Throttles',
            Dimensions: dims({ FunctionName: fnName(fn) }),
          },
          Period: 60,
          Stat: 'Sum',
        })),
      ),
      EvaluationPeriods: 3,
      DatapointsToAlarm: 2,
      Threshold: 1,
      ComparisonOperator: 'GreaterThanOrEqualToThreshold',
      TreatMissingData: 'notBreaching',
    },
  );
  if (p.provisionedConcurrency > 0) {
    resources.XksAlarmSpillover = alarm(
      'provisioned-concurrency-spillover',
      'Requests beyond the provisioned concurrency hit cold starts, which do not fit in 250 ms.',
      {
        ...sumOf(
          'Spillover',
          FUNCTIONS.map((fn) => ({
            Metric: {
              Namespace: 'AWS/Lambda',
              MetricName: 'ProvisionedConcurrencySpilloverInvocations',
              Dimensions: dims({ FunctionName: fnName(fn) }),
            },
            Period: 60,
            Stat: 'Sum',
          })),
        ),
        EvaluationPeriods: 5,
        DatapointsToAlarm: 3,
        Threshold: 1,
        ComparisonOperator: 'GreaterThanOrEqualToThreshold',
        TreatMissingData: 'notBreaching',
      },
    );
  }
  const store = p.alarms.kmsCustomKeyStoreId;
  if (store) {
    // KMS publishes the certificate metric per CertificateName (the proxy's domain name).
    const domain = p.connectivity === 'public' ? p.public.domainName : p.vpcEndpointService.privateDnsName;
    resources.XksAlarmCertificateExpiry = alarm(
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
        TreatMissingData: 'notBreaching',
      },
    );
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
    resources.XksAlarmKmsThrottle = alarm(
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
        TreatMissingData: 'notBreaching',
      },
    );
  }
  return resources;
}

module.exports = { dashboard, alarms, PROXY_METRICS, NAMESPACE };
