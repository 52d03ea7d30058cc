// The deployment, proven offline: `sls package` (osls + serverless-esbuild) for both connectivity
// modes behind both front doors (API Gateway, an ALB), and for a stage that sets every setting,
// with no AWS credentials; the CloudFormation it produces checked resource by resource and by AWS's
// own linter (cfn-lint), and the packages unpacked to check what the functions will read.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { basename, dirname, join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { promisify } from 'node:util';
import { LAMBDA_ENV } from '../../bench/suites/handler.ts';
import { loadConfig, parseConfig, SCHEMA } from '../../functions/config.ts';
import { ERROR_STATUS } from '../../functions/errors.ts';
import METRIC from '../../functions/metric-names.json' with { type: 'json' };
import { matchesPathPattern } from '../../functions/routes.ts';
import { checkParams, DEPLOY_SCHEMA } from '../../infra/params.ts';
import { SECRETS_FILE } from '../../scripts/build.ts';
import { ensureCiLayer, packageStage, type Template } from '../../scripts/package-stage.ts';
import { importsOf } from '../helpers/bundle-imports.ts';
import { ROOT } from '../helpers/proxy.ts';
import { toolPath } from '../helpers/tools.ts';

const run = promisify(execFile);
const require = createRequire(import.meta.url);
const yaml = require('js-yaml') as { load(text: string): unknown };
const STAGES = ['ci-vpce', 'ci-public', 'ci-all', 'ci-alb-vpce', 'ci-alb-public'] as const;
type Stage = (typeof STAGES)[number];
/** What each CI stage file sets that the template shows. */
const EXPECT: Record<
  Stage,
  { runtime: string; provisioned: number; reserved: number; frontDoor: 'apigateway' | 'alb' }
> = {
  'ci-vpce': { runtime: 'nodejs24.x', provisioned: 2, reserved: 40, frontDoor: 'apigateway' },
  'ci-public': { runtime: 'nodejs22.x', provisioned: 0, reserved: 40, frontDoor: 'apigateway' },
  'ci-all': { runtime: 'nodejs24.x', provisioned: 3, reserved: 30, frontDoor: 'apigateway' },
  'ci-alb-vpce': { runtime: 'nodejs24.x', provisioned: 2, reserved: 40, frontDoor: 'alb' },
  'ci-alb-public': { runtime: 'nodejs22.x', provisioned: 0, reserved: 40, frontDoor: 'alb' },
};
const FUNCTIONS = ['GetHealthStatus', 'GetKeyMetadata', 'Encrypt', 'Decrypt'];
const ROUTE_OF = {
  GetHealthStatus: 'health',
  GetKeyMetadata: 'keys/{keyId}/metadata',
  Encrypt: 'keys/{keyId}/encrypt',
  Decrypt: 'keys/{keyId}/decrypt',
} as const;

// biome-ignore lint/suspicious/noExplicitAny: parameter files and configurations are free-form
type Json = any;
interface Schema {
  properties?: Record<string, Schema | boolean>;
  items?: Schema;
}

const work = mkdtempSync(join(tmpdir(), 'xks-package-'));
const templates: Record<string, Template> = {};
const stageFile = (stage: string): Json =>
  yaml.load(readFileSync(join(ROOT, 'deploy', `params.${stage}.yml`), 'utf8'));

before(async () => {
  // The CI parameter files use SoftHSM as a stand-in for the vendor library.
  await ensureCiLayer();
  // One after the other: serverless-esbuild builds in the project's .esbuild/ folder.
  for (const stage of STAGES) {
    const out = join(work, stage);
    templates[stage] = await packageStage(stage, out, work);
    // Each function's package, unpacked as Lambda unpacks it into /var/task.
    for (const zip of readdirSync(out).filter((f) => f.endsWith('.zip'))) {
      await run('python3', ['-m', 'zipfile', '-e', join(out, zip), join(out, zip.slice(0, -4))]);
    }
  }
});
after(() => rmSync(work, { recursive: true, force: true }));

const ofType = (t: Template, type: string) =>
  Object.entries(t.Resources).filter(([, r]) => r.Type === type) as Array<
    [string, Template['Resources'][string]]
  >;

/** Full path of an API Gateway resource, walking ParentId up to the root. */
function pathOf(t: Template, id: string): string {
  const resource = t.Resources[id];
  const parent = resource.Properties.ParentId;
  const above = parent.Ref ? pathOf(t, parent.Ref) : '';
  return `${above}/${resource.Properties.PathPart}`;
}

function methods(t: Template) {
  return ofType(t, 'AWS::ApiGateway::Method').map(([, m]) => ({
    path: pathOf(t, m.Properties.ResourceId.Ref),
    method: m.Properties.HttpMethod as string,
    integration: m.Properties.Integration,
    auth: m.Properties.AuthorizationType,
  }));
}

/** The file XKS_PROXY_CONFIG names in Lambda, in the unpacked package of function `name`. */
function packagedConfigFile(stage: string, name: string): string {
  const fn = templates[stage]?.Resources[`${name}LambdaFunction`];
  const path: string = fn.Properties.Environment.Variables.XKS_PROXY_CONFIG;
  assert.ok(path.startsWith('/var/task/'), path);
  const unpacked = `${name[0]?.toLowerCase()}${name.slice(1)}`;
  return join(work, stage, unpacked, path.slice('/var/task/'.length));
}

/** The proxy configuration the Encrypt function gets. */
function proxyConfigOf(stage: string): Json {
  return JSON.parse(readFileSync(packagedConfigFile(stage, 'Encrypt'), 'utf8'));
}

/** Every setting of a schema, e.g. `keystores[].throttle.rateLimit`: its leaves, lists of scalars included. */
function settingsOf(schema: Schema, path = ''): string[] {
  const inner = schema.items?.properties ? schema.items : schema;
  if (!inner.properties) return [path];
  const prefix = inner === schema ? path : `${path}[]`;
  return Object.entries(inner.properties).flatMap(([name, sub]) =>
    settingsOf(typeof sub === 'object' ? sub : {}, prefix ? `${prefix}.${name}` : name),
  );
}

/** The values at a setting's path, through every item of every list on the way. */
function valuesAt(value: Json, path: string): Json[] {
  let found = [value];
  for (const part of path.split('.')) {
    const name = part.replace(/\[\]$/, '');
    found = found.map((v) => v?.[name]).filter((v) => v !== undefined);
    if (part.endsWith('[]')) found = found.flat();
  }
  return found;
}

/**
 * Settings the proxy accepts that a deployment refuses, with why and a value to try: secrets
 * belong in Secrets Manager, and a function's disk holds only its package.
 */
const REFUSED: Record<string, { why: string; value: Json }> = {
  'hsm.pin': { why: 'Secrets Manager only (pinSecretArn)', value: '1234' },
  'hsm.fleet[].pin': { why: 'Secrets Manager only (pinSecretArn)', value: '1234' },
  'keystores[].credentials': {
    why: 'Secrets Manager only (credentialsSecretArn)',
    value: [{ accessKeyId: 'AKIAI2SFODNN7EXAMPLE2345', secretAccessKey: 'a'.repeat(43) }],
  },
  'keystores[].credentialsFile': { why: 'Secrets Manager only (credentialsSecretArn)', value: 'c.json' },
  'audit.keyFile': { why: 'Secrets Manager only (keySecretArn)', value: 'audit.key' },
  'revocation.file': { why: 'Secrets Manager only (secretArn)', value: 'revocation.json' },
  'clientCertificate.caFile': {
    why: 'the local server only: API Gateway has the truststore',
    value: 'ca.pem',
  },
};
const refused = (setting: string) =>
  Object.keys(REFUSED).some(
    (r) => setting === r || setting.startsWith(`${r}[].`) || setting.startsWith(`${r}.`),
  );

describe('every setting reaches Lambda (ci-all sets them all)', () => {
  test('each setting of the proxy schema is in the stage file and arrives in the packaged configuration unchanged', () => {
    const raw = stageFile('ci-all');
    const packaged = proxyConfigOf('ci-all');
    const settings = settingsOf(SCHEMA as unknown as Schema);
    assert.ok(settings.length > 40 && settings.includes('hsm.fleet[].profile'), settings.join());
    for (const setting of settings.filter((s) => !refused(s))) {
      const given = valuesAt(raw, setting);
      assert.ok(given.length > 0, `deploy/params.ci-all.yml does not set ${setting}`);
      assert.deepEqual(valuesAt(packaged, setting), given, setting);
    }
    // The stage file's proxy part, and nothing else, is what the functions get.
    const sections = Object.keys(SCHEMA.properties);
    const { environment, ...hsm } = raw.hsm;
    assert.deepEqual(packaged, { ...Object.fromEntries(sections.map((s) => [s, raw[s]])), hsm });
    assert.ok(environment, "hsm.environment is the functions' environment instead");
  });

  test('the settings a deployment refuses are refused by name, in one line', () => {
    for (const [setting, { value }] of Object.entries(REFUSED)) {
      const raw = stageFile('ci-all');
      const parts = setting.split('.');
      let parent = raw;
      for (const part of parts.slice(0, -1))
        parent = part.endsWith('[]') ? parent[part.slice(0, -2)][0] : parent[part];
      parent[parts.at(-1) as string] = value;
      const field = setting.replaceAll('[]', '[0]');
      assert.throws(
        () => checkParams(raw, 'ci-all'),
        (err: Error) =>
          err.message.startsWith(`deploy/params.ci-all.yml: ${field}`) && !err.message.includes('\n'),
        setting,
      );
    }
  });

  test('each deployment setting is set by a CI stage file', () => {
    const files = STAGES.map(stageFile);
    for (const setting of settingsOf(DEPLOY_SCHEMA as Schema)) {
      if ((SCHEMA.properties as Record<string, unknown>)[setting.split(/[.[]/)[0] as string]) continue;
      assert.ok(
        files.some((f) => valuesAt(f, setting).length > 0),
        `no deploy/params.ci-*.yml sets ${setting}`,
      );
    }
  });

  test('hundreds of keys: 400 ids in one key store, the environment far under 4 KB', () => {
    const config = proxyConfigOf('ci-all');
    assert.equal(config.keystores[0].keys.length, 400);
    for (const name of FUNCTIONS) {
      const vars = templates['ci-all']?.Resources[`${name}LambdaFunction`].Properties.Environment.Variables;
      const size = Object.entries(vars).reduce((n, [k, v]) => n + k.length + String(v).length, 0);
      assert.ok(size < 1024, `${name}: ${size} bytes of environment`);
      assert.equal(vars.XKS_PROXY_CONFIG_JSON, undefined);
    }
  });
});

for (const stage of STAGES) {
  describe(`every stage: ${stage}`, () => {
    test("every function's package holds the configuration XKS_PROXY_CONFIG names, and the proxy loads it", () => {
      const text = readFileSync(packagedConfigFile(stage, 'Encrypt'), 'utf8');
      for (const name of FUNCTIONS) {
        assert.equal(readFileSync(packagedConfigFile(stage, name), 'utf8'), text, name);
        const loaded = loadConfig({
          XKS_PROXY_CONFIG: packagedConfigFile(stage, name),
          AWS_LAMBDA_FUNCTION_NAME: `xks-proxy-${stage}-${name}`,
        });
        assert.deepEqual(loaded, parseConfig(JSON.parse(text), { AWS_LAMBDA_FUNCTION_NAME: 'f' }));
      }
    });

    test("every function's package: its handler one file, the Secrets Manager client's file beside it", async () => {
      for (const name of FUNCTIONS) {
        const fn = `${name[0]?.toLowerCase()}${name.slice(1)}`;
        const unpacked = join(work, stage, fn);
        const code = readdirSync(join(unpacked, 'functions')).filter((f) => f.endsWith('.mjs'));
        const handler = `${fn}.mjs`;
        assert.deepEqual(code.sort(), [handler, SECRETS_FILE].sort(), name);
        // A cold start loads the handler's file alone: no import statement of another file of the package.
        const { statements, dynamic } = importsOf(readFileSync(join(unpacked, 'functions', handler), 'utf8'));
        const own = (specifier: string) => specifier.startsWith('.');
        assert.deepEqual(statements.filter(own), [], name);
        assert.deepEqual(dynamic.filter(own), [`./${SECRETS_FILE}`], name);
        // The client's file loads by itself, as Lambda runs it: no node_modules in the package.
        const { stdout } = await run(process.execPath, [
          '--input-type=module',
          '-e',
          `const m = await import(${JSON.stringify(join(unpacked, 'functions', SECRETS_FILE))}); console.log(typeof m.getSecret);`,
        ]);
        assert.equal(stdout.trim(), 'function', name);
      }
    });

    test('the four handlers: runtime, architecture, VPC, layer, own role, concurrency', () => {
      const t = templates[stage] as Template;
      const params = { runtime: EXPECT[stage].runtime, pc: EXPECT[stage].provisioned };
      for (const name of FUNCTIONS) {
        const fn = t.Resources[`${name}LambdaFunction`];
        assert.ok(fn, name);
        const p = fn.Properties;
        assert.equal(p.Runtime, params.runtime);
        assert.deepEqual(p.Architectures, ['x86_64']);
        assert.equal(p.Handler, `functions/${name[0]?.toLowerCase()}${name.slice(1)}.handler`);
        assert.ok(p.VpcConfig.SubnetIds.length >= 1 && p.VpcConfig.SecurityGroupIds.length >= 1);
        assert.deepEqual(p.Layers, [{ Ref: 'Pkcs11LambdaLayer' }]);
        assert.deepEqual(p.Role, { 'Fn::GetAtt': [`${name}Role`, 'Arn'] });
        assert.equal(p.ReservedConcurrentExecutions, EXPECT[stage].reserved);
        const alias = t.Resources[`${name}ProvConcLambdaAlias`];
        if (params.pc > 0) {
          assert.equal(
            alias.Properties.ProvisionedConcurrencyConfig.ProvisionedConcurrentExecutions,
            params.pc,
          );
        } else {
          assert.equal(alias, undefined);
        }
      }
      assert.equal(t.Resources.IamRoleLambdaExecution, undefined, 'no shared framework role');
    });

    test('the configuration the handlers get is valid, and holds secret ARNs, never secrets', () => {
      const t = templates[stage] as Template;
      const config = proxyConfigOf(stage);
      const parsed = parseConfig(config, { AWS_LAMBDA_FUNCTION_NAME: 'check' });
      assert.match(parsed.hsm.pinSecretArn ?? '', /^arn:aws:secretsmanager:/);
      assert.equal(parsed.hsm.pin, undefined);
      for (const ks of parsed.keystores) {
        assert.equal(ks.credentials, undefined);
        assert.match(ks.credentialsSecretArn ?? '', /^arn:aws:secretsmanager:/);
      }
      const text = JSON.stringify(t) + JSON.stringify(config);
      for (const word of ['secretAccessKey', 'SecretString', '"pin"']) assert.ok(!text.includes(word), word);
    });

    test('the front door the stage names, and no other; the functions told which (XKS_FRONT_DOOR)', () => {
      const t = templates[stage] as Template;
      const alb = EXPECT[stage].frontDoor === 'alb';
      assert.equal(ofType(t, 'AWS::ApiGateway::RestApi').length, alb ? 0 : 1);
      const albs = ofType(t, 'AWS::ElasticLoadBalancingV2::LoadBalancer').filter(
        ([, lb]) => lb.Properties.Type === 'application',
      );
      assert.equal(albs.length, alb ? 1 : 0);
      for (const name of FUNCTIONS) {
        const env = t.Resources[`${name}LambdaFunction`].Properties.Environment.Variables;
        assert.equal(env.XKS_FRONT_DOOR, EXPECT[stage].frontDoor, name);
        // gc() for functions/young-gc.ts, as the benchmarks run the functions.
        assert.equal(env.NODE_OPTIONS, LAMBDA_ENV.NODE_OPTIONS, name);
      }
      // The functions are reached through the front door only: no function URL.
      assert.equal(ofType(t, 'AWS::Lambda::Url').length, 0);
    });

    if (EXPECT[stage].frontDoor === 'apigateway') {
      test('every route of every key store: POST to its function, GET answering 405', () => {
        const t = templates[stage] as Template;
        const config = proxyConfigOf(stage);
        const all = methods(t);
        const pc = EXPECT[stage].provisioned > 0;
        for (const ks of config.keystores) {
          for (const name of FUNCTIONS) {
            const path = `${ks.pathPrefix}/kms/xks/v1/${ROUTE_OF[name as keyof typeof ROUTE_OF]}`;
            const post = all.find((m) => m.path === path && m.method === 'POST');
            assert.ok(post, `POST ${path}`);
            assert.equal(post.auth, 'NONE');
            assert.equal(post.integration.Type, 'AWS_PROXY');
            const target = post.integration.Uri['Fn::Sub'][1].Target;
            assert.deepEqual(
              target,
              pc ? { Ref: `${name}ProvConcLambdaAlias` } : { 'Fn::GetAtt': [`${name}LambdaFunction`, 'Arn'] },
            );
            const get = all.find((m) => m.path === path && m.method === 'GET');
            assert.ok(get, `GET ${path}`);
            assert.equal(get.integration.Type, 'MOCK');
            assert.equal(get.integration.IntegrationResponses[0].StatusCode, '405');
          }
        }
        assert.equal(all.length, config.keystores.length * 8, 'nothing but the XKS routes');
        const permissions = ofType(t, 'AWS::Lambda::Permission');
        assert.equal(permissions.length, 4);
      });

      test('gateway responses are XKS JSON errors', () => {
        const t = templates[stage] as Template;
        const responses = Object.fromEntries(
          ofType(t, 'AWS::ApiGateway::GatewayResponse').map(([, r]) => [
            r.Properties.ResponseType,
            r.Properties,
          ]),
        );
        const expect = (type: string, status: string | undefined, errorName: string) => {
          const r = responses[type];
          assert.ok(r, type);
          assert.equal(r.StatusCode, status);
          assert.equal(JSON.parse(r.ResponseTemplates['application/json']).errorName, errorName);
          assert.equal(r.ResponseParameters['gatewayresponse.header.Content-Type'], "'application/json'");
        };
        expect('MISSING_AUTHENTICATION_TOKEN', '404', 'InvalidUriPathException');
        expect('THROTTLED', '429', 'ThrottlingException');
        expect('DEFAULT_4XX', '400', 'ValidationException');
        expect('DEFAULT_5XX', '500', 'InternalException');
        // Each status is its errorName's in the one table.
        for (const [, r] of ofType(t, 'AWS::ApiGateway::GatewayResponse')) {
          const { errorName } = JSON.parse(r.Properties.ResponseTemplates['application/json']);
          assert.equal(
            Number(r.Properties.StatusCode),
            ERROR_STATUS[errorName as keyof typeof ERROR_STATUS],
            errorName,
          );
        }
      });

      test('no body is ever logged: data tracing off, access logs without bodies, no framework API logging', () => {
        const t = templates[stage] as Template;
        const [[, stageResource] = []] = ofType(t, 'AWS::ApiGateway::Stage');
        const settings = stageResource.Properties.MethodSettings;
        assert.ok(settings.length > 0);
        for (const s of settings) {
          assert.equal(s.DataTraceEnabled, false);
          assert.equal(s.LoggingLevel, 'OFF');
          assert.equal(typeof s.ThrottlingRateLimit, 'number');
          assert.equal(typeof s.ThrottlingBurstLimit, 'number');
        }
        const format = stageResource.Properties.AccessLogSetting.Format;
        assert.doesNotThrow(() => JSON.parse(format));
        assert.doesNotMatch(format, /body|requestBody|responseBody/i);
        assert.equal(t.Resources.ApiGatewayRestApi, undefined, 'the API is ours, not the framework default');
        assert.doesNotMatch(JSON.stringify(t), /DataTraceEnabled":true/);
        assert.deepEqual(t.Resources.XksRestApi.Properties.BinaryMediaTypes, ['*/*']);
      });
    }

    test('IAM: each function its own role, reading every secret the configuration names; no * resource except where AWS allows none', () => {
      const t = templates[stage] as Template;
      const config = proxyConfigOf(stage);
      const secretArns = settingsOf(SCHEMA as unknown as Schema)
        .filter((s) => s.endsWith('SecretArn'))
        .flatMap((s) => valuesAt(config, s));
      assert.ok(secretArns.length >= 2);
      for (const name of FUNCTIONS) {
        const statements = t.Resources[`${name}Role`].Properties.Policies.flatMap(
          (p: { PolicyDocument: { Statement: unknown[] } }) => p.PolicyDocument.Statement,
        );
        for (const s of statements) {
          const actions = [s.Action].flat() as string[];
          if ([s.Resource].flat().includes('*')) {
            for (const a of actions) assert.match(a, /^ec2:Describe/, `${name}: ${a} on *`);
          }
        }
        const secrets = statements.find(
          (s: { Action: string }) => s.Action === 'secretsmanager:GetSecretValue',
        );
        assert.deepEqual([...secrets.Resource].sort(), [...new Set(secretArns)].sort());
        const logs = statements.find((s: { Sid: string }) => s.Sid === 'OwnLogGroup');
        assert.match(
          logs.Resource['Fn::Sub'],
          new RegExp(`/aws/lambda/xks-proxy-${stage}-${name[0]?.toLowerCase()}`),
        );
      }
    });

    test('dashboard and alarms refer to exactly the metrics the code emits (functions/metric-names.json)', () => {
      const t = templates[stage] as Template;
      // Where the functions publish: Powertools takes both from their environment (serverless.yml).
      const env = t.Resources.EncryptLambdaFunction.Properties.Environment.Variables;
      const namespace: string = env.POWERTOOLS_METRICS_NAMESPACE;
      const service: string = env.POWERTOOLS_SERVICE_NAME;
      assert.equal(namespace, 'XksProxy');
      const [[, dash] = []] = ofType(t, 'AWS::CloudWatch::Dashboard');
      const body = JSON.parse(dash.Properties.DashboardBody['Fn::Sub']);
      const emitted = new Set<string>(Object.values(METRIC));
      const used = new Set<string>();
      const searchIn = new RegExp(`\\{${namespace},[^}]*\\} MetricName="(\\w+)"`);
      for (const w of body.widgets) {
        for (const m of w.properties.metrics) {
          if (m[0] === namespace) {
            used.add(m[1]);
            // [namespace, name, dimension, value, ..., options]
            const dimensions = Object.fromEntries(
              (m.slice(2, -1) as string[]).flatMap((d, i, all) => (i % 2 === 0 ? [[d, all[i + 1]]] : [])),
            );
            assert.equal(dimensions.service, service, `${m[1]} in "${w.properties.title}"`);
          }
          const search = typeof m[0] === 'object' ? searchIn.exec(m[0].expression) : null;
          if (search?.[1]) used.add(search[1]);
        }
      }
      for (const name of used)
        assert.ok(emitted.has(name), `dashboard uses ${name}, which the code does not emit`);
      for (const needed of [
        METRIC.requests,
        METRIC.errorsByName,
        METRIC.latency,
        METRIC.hsmLatency,
        METRIC.coldStart,
      ]) {
        assert.ok(used.has(needed), `dashboard lacks ${needed}`);
      }
      const alarms = ofType(t, 'AWS::CloudWatch::Alarm').map(([, a]) => a.Properties);
      for (const a of alarms.filter((a) => a.Namespace === namespace)) {
        assert.ok(emitted.has(a.MetricName), a.AlarmName);
        const dimensions = a.Dimensions as Array<{ Name: string; Value: string }>;
        assert.equal(dimensions.find((d) => d.Name === 'service')?.Value, service, a.AlarmName);
        used.add(a.MetricName);
      }
      for (const name of emitted)
        assert.ok(used.has(name), `the code emits ${name}, which neither the dashboard nor an alarm shows`);
      const names = alarms.map((a) => a.AlarmName as string);
      for (const wanted of [
        'latency-Encrypt',
        'latency-Decrypt',
        'hsm-unavailable',
        'server-errors',
        'lambda-throttles',
      ]) {
        assert.ok(
          names.some((n) => n.endsWith(wanted)),
          wanted,
        );
      }
    });
  });
}

/** A public stage has none of the VPC endpoint service mode's resources. */
function assertNothingOfModeB(t: Template): void {
  for (const absent of [
    'XksNlb',
    'XksEndpointService',
    'XksExecuteApiEndpoint',
    'XksSecretsManagerEndpoint',
  ]) {
    assert.equal(t.Resources[absent], undefined, absent);
  }
}

describe('mode: VPC endpoint service (ci-vpce)', () => {
  test('private API through the execute-api endpoint, NLB over its IPs, endpoint service for KMS only', () => {
    const t = templates['ci-vpce'] as Template;
    const api = t.Resources.XksRestApi.Properties;
    assert.deepEqual(api.EndpointConfiguration.Types, ['PRIVATE']);
    assert.deepEqual(api.EndpointConfiguration.VpcEndpointIds, [{ Ref: 'XksExecuteApiEndpoint' }]);
    assert.ok(api.Policy, 'a private API needs a resource policy');
    const endpoint = t.Resources.XksExecuteApiEndpoint.Properties;
    assert.match(endpoint.ServiceName['Fn::Sub'], /execute-api$/);
    assert.equal(endpoint.PolicyDocument, undefined, 'default policy: a custom one rejects KMS SigV4');
    assert.equal(t.Resources.XksDomainName.Type, 'AWS::ApiGateway::DomainNameV2');
    assert.equal(t.Resources.XksDomainName.Properties.DomainName, 'xks.ci.example.com');
    const nlb = t.Resources.XksNlb.Properties;
    assert.equal(nlb.Type, 'network');
    assert.ok(nlb.Subnets.length >= 2, 'two AZs');
    const targets = t.Resources.XksTargetGroup.Properties.Targets;
    assert.equal(targets.length, 2);
    assert.deepEqual(targets[0].Id, { 'Fn::GetAtt': ['XksEndpointIps', 'Ip0'] });
    assert.equal(t.Resources.XksEndpointService.Properties.AcceptanceRequired, false);
    assert.deepEqual(t.Resources.XksEndpointServicePermissions.Properties.AllowedPrincipals, [
      // biome-ignore lint/suspicious/noTemplateCurlyInString: a CloudFormation Fn::Sub string
      { 'Fn::Sub': 'cks.kms.${AWS::Region}.amazonaws.com' },
    ]);
    assert.ok(t.Outputs.PrivateDnsVerificationName && t.Outputs.VpcEndpointServiceName);
    assert.ok(t.Resources.XksSecretsManagerEndpoint, 'Secrets Manager endpoint (no NAT)');
    assert.equal(t.Resources.XksDomainName.Properties.MutualTlsAuthentication, undefined);
    assert.equal(proxyConfigOf('ci-vpce').clientCertificate, undefined);
  });

  test("the key store's Cedar policies are configured and packaged with every function", () => {
    const policyFile = proxyConfigOf('ci-vpce').keystores[0].policyFile;
    assert.equal(policyFile, 'policies/only-one-account.cedar');
    const source = readFileSync(join(ROOT, policyFile), 'utf8');
    for (const fn of ['getHealthStatus', 'getKeyMetadata', 'encrypt', 'decrypt']) {
      // Lambda's working directory is /var/task: a relative path is read from the package.
      assert.equal(readFileSync(join(work, 'ci-vpce', fn, policyFile), 'utf8'), source, fn);
    }
  });
});

describe('mode: public endpoint (ci-public)', () => {
  test('Regional API on a custom domain, execute-api endpoint off, mutual TLS, nothing of the other mode', () => {
    const t = templates['ci-public'] as Template;
    const api = t.Resources.XksRestApi.Properties;
    assert.deepEqual(api.EndpointConfiguration.Types, ['REGIONAL']);
    assert.equal(api.DisableExecuteApiEndpoint, true);
    const domain = t.Resources.XksDomainName;
    assert.equal(domain.Type, 'AWS::ApiGateway::DomainName');
    assert.equal(domain.Properties.SecurityPolicy, 'TLS_1_2');
    assert.equal(domain.Properties.MutualTlsAuthentication.TruststoreUri, 's3://ci-bucket/truststore.pem');
    assert.deepEqual(proxyConfigOf('ci-public').clientCertificate, {
      allowedCommonNames: ['cks.kms.us-east-2.amazonaws.com'],
    });
    assertNothingOfModeB(t);
    assert.equal(ofType(t, 'AWS::EC2::VPCEndpoint').length, 0);
  });

  test("a key store's quota: method throttling on each of its POST routes, THROTTLED answering 429", () => {
    const t = templates['ci-public'] as Template;
    const [[, stage] = []] = ofType(t, 'AWS::ApiGateway::Stage');
    const quotas = stage.Properties.MethodSettings.filter(
      (m: { ResourcePath: string }) => m.ResourcePath !== '/*',
    );
    assert.equal(quotas.length, 4);
    for (const q of quotas) {
      assert.match(q.ResourcePath, /^\/~1keystores~1analytics~1kms~1xks~1v1~1/);
      assert.equal(q.HttpMethod, 'POST');
      assert.equal(q.ThrottlingRateLimit, 100);
      assert.equal(q.ThrottlingBurstLimit, 50);
      assert.equal(q.DataTraceEnabled, false);
    }
  });
});

describe("API Gateway's CloudWatch role (createApiGatewayCloudWatchRole)", () => {
  test('created on request, kept when the stack goes, before the stage that logs through it', () => {
    const t = templates['ci-all'] as Template;
    const account = t.Resources.XksApiGatewayAccount;
    assert.equal(account.Type, 'AWS::ApiGateway::Account');
    assert.deepEqual(account.Properties.CloudWatchRoleArn, {
      'Fn::GetAtt': ['XksApiGatewayCloudWatchRole', 'Arn'],
    });
    const role = t.Resources.XksApiGatewayCloudWatchRole;
    assert.equal(
      role.Properties.AssumeRolePolicyDocument.Statement[0].Principal.Service,
      'apigateway.amazonaws.com',
    );
    assert.match(JSON.stringify(role.Properties.ManagedPolicyArns), /AmazonAPIGatewayPushToCloudWatchLogs/);
    for (const r of [account, role]) assert.equal(r.DeletionPolicy, 'Retain');
    const [[, stage] = []] = ofType(t, 'AWS::ApiGateway::Stage');
    assert.deepEqual(stage.DependsOn, ['XksApiGatewayAccount']);
    for (const other of STAGES.filter((stage) => stage !== 'ci-all')) {
      assert.equal(ofType(templates[other] as Template, 'AWS::ApiGateway::Account').length, 0, other);
    }
  });
});

/** What every ALB stage has: the listener, its rules and target groups, the permissions, the logs. */
for (const stage of STAGES.filter((stage) => EXPECT[stage].frontDoor === 'alb')) {
  describe(`behind an ALB: ${stage}`, () => {
    const t = () => templates[stage] as Template;
    const raw = () => stageFile(stage);

    test("every route of every key store: a listener rule by route under any prefix, to its function's target group; anything else the fixed 404", () => {
      const config = proxyConfigOf(stage);
      const rules = ofType(t(), 'AWS::ElasticLoadBalancingV2::ListenerRule').map(([, r]) => r.Properties);
      assert.equal(rules.length, 4, 'four rules, whatever the number of key stores');
      assert.deepEqual(
        rules.map((r) => r.Priority),
        [1, 2, 3, 4],
      );
      const pc = EXPECT[stage].provisioned > 0;
      for (const name of FUNCTIONS) {
        const suffix = ROUTE_OF[name as keyof typeof ROUTE_OF].replace('{keyId}', 'some-key_1.2');
        for (const ks of config.keystores) {
          const path = `${ks.pathPrefix}/kms/xks/v1/${suffix}`;
          // The first rule, by priority, whose pattern matches: ALB's order.
          const rule = rules.find((r) =>
            matchesPathPattern(r.Conditions[0].PathPatternConfig.Values[0], path),
          );
          assert.ok(rule, path);
          assert.equal(rule.Conditions.length, 1);
          assert.equal(rule.Actions[0].Type, 'forward');
          const group = t().Resources[rule.Actions[0].TargetGroupArn.Ref];
          assert.equal(group.Properties.TargetType, 'lambda');
          assert.deepEqual(
            group.Properties.Targets,
            [
              {
                Id: pc
                  ? { Ref: `${name}ProvConcLambdaAlias` }
                  : { 'Fn::GetAtt': [`${name}LambdaFunction`, 'Arn'] },
              },
            ],
            path,
          );
          // Every value of every header: the handler must see a second client certificate subject.
          assert.deepEqual(group.Properties.TargetGroupAttributes, [
            { Key: 'lambda.multi_value_headers.enabled', Value: 'true' },
          ]);
          assert.equal(group.Properties.HealthCheckEnabled, false, 'a health check would be an invocation');
          assert.ok(group.Properties.Name.length <= 32, group.Properties.Name);
        }
      }
      const listener = t().Resources.XksAlbListener.Properties;
      const [fixed] = listener.DefaultActions;
      assert.equal(fixed.Type, 'fixed-response');
      const body = JSON.parse(fixed.FixedResponseConfig.MessageBody);
      assert.equal(body.errorName, 'InvalidUriPathException');
      assert.equal(Number(fixed.FixedResponseConfig.StatusCode), ERROR_STATUS.InvalidUriPathException);
      assert.equal(fixed.FixedResponseConfig.ContentType, 'application/json');
      for (const path of ['/', '/kms/xks/v1/health/', '/kms/xks/v2/health', '/kms/xks/v1/keys/k']) {
        assert.ok(
          !rules.some((r) => matchesPathPattern(r.Conditions[0].PathPatternConfig.Values[0], path)),
          path,
        );
      }
    });

    test('HTTPS on 443 with the stage certificate and a TLS policy with the spec suites', () => {
      const listener = t().Resources.XksAlbListener.Properties;
      assert.equal(listener.Protocol, 'HTTPS');
      assert.equal(listener.Port, 443);
      const certificateArn = raw().public?.certificateArn ?? raw().vpcEndpointService?.certificateArn;
      assert.deepEqual(listener.Certificates, [{ CertificateArn: certificateArn }]);
      assert.equal(listener.SslPolicy, 'ELBSecurityPolicy-TLS13-1-2-Res-2021-06');
    });

    test('each function invoked only by its own target group: no API Gateway permission, no function URL', () => {
      const permissions = ofType(t(), 'AWS::Lambda::Permission').map(([, p]) => p.Properties);
      assert.equal(permissions.length, 4);
      const groups = ofType(t(), 'AWS::ElasticLoadBalancingV2::TargetGroup').filter(
        ([, g]) => g.Properties.TargetType === 'lambda',
      );
      assert.equal(groups.length, 4);
      for (const [, group] of groups) {
        const target = JSON.stringify(group.Properties.Targets[0].Id);
        const own = permissions.filter((p) => JSON.stringify(p.FunctionName) === target);
        assert.equal(own.length, 1, target);
        const [permission] = own;
        assert.equal(permission.Principal, 'elasticloadbalancing.amazonaws.com');
        assert.equal(permission.Action, 'lambda:InvokeFunction');
        assert.match(
          permission.SourceArn['Fn::Sub'],
          new RegExp(`:targetgroup/${group.Properties.Name}/\\*$`),
        );
      }
    });

    test('access logs to S3, without bodies; connection logs with mutual TLS; invalid header names dropped', () => {
      const attributes = Object.fromEntries(
        t().Resources.XksAlb.Properties.LoadBalancerAttributes.map((a: { Key: string; Value: string }) => [
          a.Key,
          a.Value,
        ]),
      );
      assert.equal(attributes['access_logs.s3.enabled'], 'true');
      assert.equal(attributes['access_logs.s3.bucket'], raw().alb.accessLogBucket);
      assert.equal(attributes['access_logs.s3.prefix'], raw().alb.accessLogPrefix);
      assert.equal(attributes['connection_logs.s3.enabled'], raw().public?.mtls ? 'true' : undefined);
      assert.equal(attributes['routing.http.drop_invalid_header_fields.enabled'], 'true');
      assert.equal(ofType(t(), 'AWS::ApiGateway::Stage').length, 0);
      assert.equal(ofType(t(), 'AWS::ApiGateway::Account').length, 0);
    });

    test('the dashboard and alarms read the ALB that exists: each resource the dashboard body (Fn::Sub) names is in the template', () => {
      const [[, dash] = []] = ofType(t(), 'AWS::CloudWatch::Dashboard');
      const body: string = dash.Properties.DashboardBody['Fn::Sub'];
      const referenced = [...body.matchAll(/\$\{(\w+)\.(\w+)\}/g)].map((m) => m[1] as string);
      assert.ok(referenced.includes('XksAlb'));
      assert.ok(referenced.some((r) => r.startsWith('XksAlbTargetGroup')));
      for (const id of referenced) assert.ok(t().Resources[id], id);
      assert.match(body, /AWS\/ApplicationELB/);
      assert.doesNotMatch(body, /AWS\/ApiGateway/);
      const errors = t().Resources.XksAlarmServerErrors.Properties;
      const names = errors.Metrics.filter((m: { MetricStat?: unknown }) => m.MetricStat).map(
        (m: { MetricStat: { Metric: { MetricName: string; Dimensions: unknown } } }) => [
          m.MetricStat.Metric.MetricName,
          m.MetricStat.Metric.Dimensions,
        ],
      );
      const lb = [{ Name: 'LoadBalancer', Value: { 'Fn::GetAtt': ['XksAlb', 'LoadBalancerFullName'] } }];
      assert.deepEqual(names, [
        ['HTTPCode_ELB_5XX_Count', lb],
        ['HTTPCode_Target_5XX_Count', lb],
      ]);
    });
  });
}

describe('behind an ALB, VPC endpoint service (ci-alb-vpce): the NLB forwards to the internal ALB', () => {
  test('NLB target type alb, after the listener, checked on a path the ALB answers itself; the ALB reachable from the NLB only', () => {
    const t = templates['ci-alb-vpce'] as Template;
    const group = t.Resources.XksTargetGroup;
    assert.equal(group.Properties.TargetType, 'alb');
    assert.equal(group.Properties.Protocol, 'TCP');
    assert.deepEqual(group.Properties.Targets, [{ Id: { Ref: 'XksAlb' }, Port: 443 }]);
    assert.deepEqual(group.DependsOn, ['XksAlbListener']);
    assert.equal(group.Properties.HealthCheckProtocol, 'HTTPS');
    const fixed = t.Resources.XksAlbListener.Properties.DefaultActions[0].FixedResponseConfig;
    assert.equal(group.Properties.Matcher.HttpCode, fixed.StatusCode);
    assert.ok(!matchesPathPattern('*/kms/xks/v1/health', group.Properties.HealthCheckPath));
    const alb = t.Resources.XksAlb.Properties;
    assert.equal(alb.Scheme, 'internal');
    assert.deepEqual(alb.Subnets, stageFile('ci-alb-vpce').vpcEndpointService.nlbSubnetIds);
    assert.deepEqual(t.Resources.XksAlbSecurityGroup.Properties.SecurityGroupIngress, [
      {
        IpProtocol: 'tcp',
        FromPort: 443,
        ToPort: 443,
        SourceSecurityGroupId: { Ref: 'XksNlbSecurityGroup' },
      },
    ]);
    assert.deepEqual(t.Resources.XksEndpointServicePermissions.Properties.AllowedPrincipals, [
      // biome-ignore lint/suspicious/noTemplateCurlyInString: a CloudFormation Fn::Sub string
      { 'Fn::Sub': 'cks.kms.${AWS::Region}.amazonaws.com' },
    ]);
    assert.equal(t.Resources.XksExecuteApiEndpoint, undefined, 'no execute-api endpoint');
    assert.equal(t.Resources.XksEndpointIps, undefined);
    assert.ok(t.Outputs.VpcEndpointServiceName && t.Outputs.PrivateDnsVerificationName);
    assert.equal(t.Resources.XksAlbListener.Properties.MutualAuthentication, undefined);
    assert.equal(proxyConfigOf('ci-alb-vpce').clientCertificate, undefined);
  });
});

describe('behind an ALB, public (ci-alb-public): internet-facing, mutual TLS in verify mode', () => {
  test('the trust store from public.mtls, verify mode, the CN check in the functions; DNS outputs from the ALB', () => {
    const t = templates['ci-alb-public'] as Template;
    const raw = stageFile('ci-alb-public');
    const alb = t.Resources.XksAlb.Properties;
    assert.equal(alb.Scheme, 'internet-facing');
    assert.deepEqual(alb.Subnets, raw.alb.subnetIds);
    assert.deepEqual(t.Resources.XksAlbListener.Properties.MutualAuthentication, {
      Mode: 'verify',
      TrustStoreArn: { Ref: 'XksAlbTrustStore' },
      IgnoreClientCertificateExpiry: false,
    });
    const store = t.Resources.XksAlbTrustStore.Properties;
    assert.equal(
      `s3://${store.CaCertificatesBundleS3Bucket}/${store.CaCertificatesBundleS3Key}`,
      raw.public.mtls.truststoreUri,
    );
    assert.equal(store.CaCertificatesBundleS3ObjectVersion, raw.public.mtls.truststoreVersion);
    assert.deepEqual(proxyConfigOf('ci-alb-public').clientCertificate, {
      allowedCommonNames: ['cks.kms.us-east-2.amazonaws.com'],
    });
    assert.deepEqual(t.Outputs.DnsAliasTarget.Value, { 'Fn::GetAtt': ['XksAlb', 'DNSName'] });
    assert.deepEqual(t.Outputs.DnsAliasHostedZoneId.Value, {
      'Fn::GetAtt': ['XksAlb', 'CanonicalHostedZoneID'],
    });
    assertNothingOfModeB(t);
  });
});

/**
 * cfn-lint warnings allowed, by rule, with where and why; anything else it reports fails the test.
 * W3005 (a DependsOn already implied by a Ref or GetAtt): the framework writes DependsOn on the
 * role of each function and on the function of each provisioned-concurrency alias.
 */
const ALLOWED_WARNINGS = [
  {
    rule: 'W3005',
    path: /^Resources\/\w+(LambdaFunction|ProvConcLambdaAlias)\/DependsOn(\/\d+)?$/,
    why: 'DependsOn the framework writes for functions and aliases',
  },
];

describe('cfn-lint, AWS CloudFormation linter', () => {
  test('no errors on any packaged stage; only the warnings listed with their reason', async () => {
    const files = STAGES.map((stage) => join(work, stage, 'cloudformation-template-update-stack.json'));
    // Exit status: 0 clean, 2 errors, 4 warnings, 8 informational (bits); the JSON says which.
    const output = await run(toolPath('cfn-lint'), ['--format', 'json', ...files], {
      maxBuffer: 16 * 1024 * 1024,
    }).catch((err: { stdout?: string; code?: number }) => {
      if (typeof err.stdout !== 'string' || err.code === undefined || err.code === 1) throw err;
      return { stdout: err.stdout };
    });
    const findings = JSON.parse(output.stdout) as Array<{
      Filename: string;
      Level: string;
      Message: string;
      Rule: { Id: string };
      Location: { Path: Array<string | number> };
    }>;
    const unexpected = findings.filter(
      (f) =>
        !ALLOWED_WARNINGS.some(
          (a) => f.Level === 'Warning' && f.Rule.Id === a.rule && a.path.test(f.Location.Path.join('/')),
        ),
    );
    assert.deepEqual(
      unexpected.map(
        (f) =>
          `${basename(dirname(f.Filename))}: ${f.Level} ${f.Rule.Id} ${f.Location.Path.join('/')}: ${f.Message}`,
      ),
      [],
    );
  });
});
