// The proxy's metrics and what the dashboard and alarms read (infra/observability.ts) agree. The
// proxy runs here (a cold start, every route, an HSM call, an error) and its EMF documents are
// read: the names it emits are exactly functions/metric-names.json's, and each proxy metric the
// dashboard or an alarm of a CI stage reads is emitted in that namespace with those dimensions
// (a CloudWatch SEARCH finds nothing with one dimension more or less), and every emitted metric is
// read by one of them. deploy-template.test.ts checks the packaged templates against the same file.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import METRIC from '../../functions/metric-names.json' with { type: 'json' };
import type { Resource } from '../../infra/cfn.ts';
import { alarms, dashboard } from '../../infra/observability.ts';
import { checkParams } from '../../infra/params.ts';
import { metadata, ROOT, type RunningProxy, startProxy } from '../helpers/proxy.ts';

const require = createRequire(import.meta.url);
const yaml = require('js-yaml') as { load(text: string): unknown };

/** A metric as CloudWatch keys it: namespace, name, and the names of its dimensions. */
const keyOf = (namespace: string, name: string, dimensions: string[]) =>
  `${namespace} ${name} {${[...dimensions].sort().join(',')}}`;

let proxy: RunningProxy;
/** keyOf each metric the proxy emitted, with the values of each of its dimensions. */
const emitted = new Map<string, Map<string, Set<string>>>();

before(async () => {
  // As in an on-demand Lambda environment: Powertools reports the cold start.
  proxy = await startProxy({ env: { AWS_LAMBDA_INITIALIZATION_TYPE: 'on-demand' } });
  const health = await proxy.xks('health', {
    requestMetadata: { kmsRequestId: 'm-1', kmsOperation: 'KmsHealthCheck' },
  });
  assert.equal(health.status, 200, health.text);
  const meta = await proxy.xks('keys/foo/metadata', { requestMetadata: metadata('DescribeKey') });
  assert.equal(meta.status, 200, meta.text);
  const plaintext = randomBytes(32).toString('base64');
  const encrypt = (keyId: string) =>
    proxy.xks(`keys/${keyId}/encrypt`, {
      requestMetadata: metadata('Encrypt'),
      plaintext,
      encryptionAlgorithm: 'AES_GCM',
    });
  const encrypted = await encrypt('foo');
  assert.equal(encrypted.status, 200, encrypted.text);
  const decrypted = await proxy.xks('keys/foo/decrypt', {
    requestMetadata: metadata('Decrypt'),
    encryptionAlgorithm: 'AES_GCM',
    ...encrypted.json,
  });
  assert.equal(decrypted.status, 200, decrypted.text);
  // An error: ErrorsByName.
  assert.equal((await encrypt('impotent_key')).status, 400);

  const documents = (await proxy.settledOutput())
    .split('\n')
    .filter((line) => line.startsWith('{"_aws"'))
    .map((line) => JSON.parse(line));
  for (const document of documents) {
    for (const directive of document._aws.CloudWatchMetrics) {
      for (const dimensions of directive.Dimensions as string[][]) {
        for (const { Name } of directive.Metrics as Array<{ Name: string }>) {
          const key = keyOf(directive.Namespace, Name, dimensions);
          const values = emitted.get(key) ?? new Map<string, Set<string>>();
          for (const d of dimensions) values.set(d, (values.get(d) ?? new Set()).add(document[d]));
          emitted.set(key, values);
        }
      }
    }
  }
});

after(async () => {
  await proxy?.stop();
});

test('the proxy emits exactly the metrics functions/metric-names.json names', () => {
  const names = new Set([...emitted.keys()].map((key) => key.split(' ')[1]));
  assert.deepEqual([...names].sort(), Object.values(METRIC).sort());
});

/** A proxy metric the dashboard or an alarm reads: its key, and the dimension values it asks for. */
interface Read {
  where: string;
  key: string;
  values: Record<string, string>;
}

/** The metrics in `namespace` that a stage's dashboard and alarms read. */
function readsOf(namespace: string, stage: string): Read[] {
  const raw = yaml.load(readFileSync(join(ROOT, 'deploy', `params.${stage}.yml`), 'utf8'));
  const p = checkParams(raw, stage);
  const reads: Read[] = [];
  const body = JSON.parse(
    dashboard(p, 'xks-proxy').XksDashboard?.Properties.DashboardBody['Fn::Sub'] as string,
  );
  for (const widget of body.widgets) {
    const where = `dashboard "${widget.properties.title}"`;
    for (const row of widget.properties.metrics) {
      if (row[0] === namespace) {
        // [namespace, name, dimension, value, ..., options]
        const pairs = (row.slice(2, -1) as string[]).flatMap((d, i, all) =>
          i % 2 === 0 ? [[d, all[i + 1]]] : [],
        );
        const values = Object.fromEntries(pairs) as Record<string, string>;
        reads.push({ where, key: keyOf(namespace, row[1], Object.keys(values)), values });
      }
      // SEARCH('{namespace,dimension,...} MetricName="name"', ...): every dimension, any values.
      const search = /SEARCH\('\{([^}]*)\} MetricName="(\w+)"/.exec(row[0]?.expression ?? '');
      const [searched, ...dimensions] = search?.[1]?.split(',') ?? [];
      if (search?.[2] !== undefined && searched === namespace) {
        reads.push({ where, key: keyOf(namespace, search[2], dimensions), values: {} });
      }
    }
  }
  for (const [id, alarm] of Object.entries(alarms(p, 'xks-proxy')) as Array<
    [string, Resource<'AWS::CloudWatch::Alarm'>]
  >) {
    const { Namespace, MetricName, Dimensions = [] } = alarm.Properties;
    if (Namespace !== namespace || MetricName === undefined) continue;
    // The proxy's own dimensions are written out (no CloudFormation function in them).
    const values = Object.fromEntries(Dimensions.map((d) => [d.Name, d.Value as string]));
    reads.push({ where: `alarm ${id}`, key: keyOf(namespace, MetricName, Object.keys(values)), values });
  }
  return reads;
}

for (const stage of ['ci-vpce', 'ci-public', 'ci-all', 'ci-alb-vpce', 'ci-alb-public']) {
  test(`${stage}: the dashboard and alarms read the proxy's metrics as it emits them, every one of them`, () => {
    const namespace = [...emitted.keys()][0]?.split(' ')[0] ?? '';
    assert.equal(namespace, 'XksProxy');
    const reads = readsOf(namespace, stage);
    for (const { where, key, values } of reads) {
      const dimensions = emitted.get(key);
      assert.ok(
        dimensions,
        `${where} reads ${key}, which the proxy does not emit (it emits ${[...emitted.keys()].join('; ')})`,
      );
      for (const [dimension, value] of Object.entries(values)) {
        assert.ok(dimensions.get(dimension)?.has(value), `${where}: ${key} with ${dimension}=${value}`);
      }
    }
    const read = new Set(reads.map((r) => r.key));
    for (const key of emitted.keys()) {
      assert.ok(read.has(key), `the proxy emits ${key}, which neither the dashboard nor an alarm reads`);
    }
  });
}
