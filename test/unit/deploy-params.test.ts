// The deploy parameter checks (infra/params.ts): mistakes are refused at packaging, with a
// one-line message naming the file and the field, before anything reaches AWS; the proxy's part of
// the file is checked by the proxy's own parser (functions/config.ts).
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { test } from 'node:test';
import { parseConfig } from '../../functions/config.ts';
import { deploymentOf, restApi } from '../../infra/apigateway/rest-api.ts';
import type { PolicyDocument, Resource } from '../../infra/cfn.ts';
import { checkParams, ParamsError, readPermissions } from '../../infra/params.ts';
import { ROOT } from '../helpers/proxy.ts';

const require = createRequire(import.meta.url);
// biome-ignore lint/suspicious/noExplicitAny: parameter files are free-form YAML
type Params = Record<string, any>;

const arn = (name: string) => `arn:aws:secretsmanager:eu-west-1:111122223333:secret:${name}`;

/** A valid VPC endpoint service stage, as deploy/params.ci-vpce.yml has it. */
const base = (): Params => ({
  region: 'eu-west-1',
  layerZip: 'layers/dist/pkcs11-layer-x86_64.zip',
  reservedConcurrency: 40,
  provisionedConcurrency: 2,
  vpc: { vpcId: 'vpc-1', subnetIds: ['subnet-1', 'subnet-2'], securityGroupIds: ['sg-1'] },
  hsm: { modulePath: '/opt/lib/libvendor.so', tokenLabel: 'xks', pinSecretArn: arn('pin') },
  keystores: [
    {
      name: 'payments',
      pathPrefix: '/keystores/payments',
      credentialsSecretArn: arn('payments'),
      keys: ['k1'],
      policyFile: 'policies/only-one-account.cedar',
    },
  ],
  connectivity: 'vpc-endpoint-service',
  vpcEndpointService: {
    privateDnsName: 'xks.example.com',
    certificateArn: 'arn:aws:acm:eu-west-1:111122223333:certificate/1',
    nlbSubnetIds: ['subnet-1', 'subnet-2'],
  },
});

/** A public stage with mutual TLS and two key stores. */
const publicStage = (): Params => {
  const p = base();
  delete p.vpcEndpointService;
  p.connectivity = 'public';
  p.public = {
    domainName: 'xks.example.com',
    certificateArn: 'arn:aws:acm:eu-west-1:111122223333:certificate/1',
    mtls: { truststoreUri: 's3://bucket/truststore.pem' },
  };
  p.keystores.push({ name: 'b', pathPrefix: '/b', credentialsSecretArn: arn('b'), keys: [] });
  return p;
};

/** The one-line refusal of a changed stage. */
const refusal = (change: (p: Params) => void, start = base): string => {
  const p = start();
  change(p);
  try {
    checkParams(p, 'x');
  } catch (err) {
    assert.ok(err instanceof ParamsError, String(err));
    assert.doesNotMatch(err.message, /\n/, 'one line');
    assert.match(err.message, /^deploy\/params\.x\.yml: /, 'names the file');
    return err.message;
  }
  assert.fail('accepted');
};

test('every stage file in deploy/ passes, the example included', () => {
  const yaml = require('js-yaml') as { load(text: string): unknown };
  const files = readdirSync(join(ROOT, 'deploy')).filter((f) => /^params\..+\.yml$/.test(f));
  assert.ok(files.includes('params.example.yml') && files.length >= 4, files.join());
  for (const file of files) {
    const stage = file.slice('params.'.length, -'.yml'.length);
    checkParams(yaml.load(readFileSync(join(ROOT, 'deploy', file), 'utf8')), stage);
  }
});

test('valid parameters pass, and give a configuration the proxy parses, without secrets', () => {
  const p = checkParams(base(), 'x');
  const config = parseConfig(p.proxyConfig, { AWS_LAMBDA_FUNCTION_NAME: 'f' });
  assert.equal(config.hsm.pin, undefined);
  assert.match(config.hsm.pinSecretArn ?? '', /^arn:aws:secretsmanager:/);
  assert.equal(p.proxyConfig.proxy?.fleetSize, 2, 'xksProxyFleetSize: the provisioned environments');
  assert.equal(p.proxyConfig.clientCertificate, undefined);
  assert.deepEqual(checkParams(publicStage(), 'x').proxyConfig.clientCertificate, {
    allowedCommonNames: ['cks.kms.eu-west-1.amazonaws.com'],
  });
});

test('refused: inline PIN or credentials, local files, reserved environment names, bad quotas, two key stores behind one endpoint service', () => {
  assert.match(
    refusal((p) => {
      p.hsm.pin = '1234';
    }),
    /: hsm\.pin: put the PIN in Secrets Manager/,
  );
  assert.match(
    refusal((p) => {
      p.hsm.fleet = [{ name: 'a' }, { name: 'b', pin: '1234' }];
    }),
    /: hsm\.fleet\[1\]\.pin: /,
  );
  assert.match(
    refusal((p) => {
      p.keystores[0].credentials = [];
    }),
    /: keystores\[0\]\.credentials: put them in Secrets Manager/,
  );
  assert.match(
    refusal((p) => {
      delete p.keystores[0].credentialsSecretArn;
      p.keystores[0].credentialsFile = 'creds.json';
    }),
    /: keystores\[0\]\.credentialsFile: a deployed function reads no file but its package; give credentialsSecretArn/,
  );
  assert.match(
    refusal((p) => {
      p.clientCertificate = { allowedCommonNames: ['cks.kms.eu-west-1.amazonaws.com'], caFile: 'ca.pem' };
    }, publicStage),
    /: clientCertificate\.caFile: a deployed function reads no file but its package; the setting is for the local proxy$/,
  );
  for (const name of ['XKS_HSM_PIN', 'POWERTOOLS_LOGGER_LOG_EVENT', 'AWS_REGION', 'NODE_OPTIONS']) {
    assert.match(
      refusal((p) => {
        p.hsm.environment = { [name]: 'x' };
      }),
      new RegExp(`: hsm.environment.${name} is reserved`),
    );
  }
  assert.match(
    refusal((p) => {
      p.keystores[0].throttle = { rateLimit: 0, burstLimit: 1 };
    }),
    /: keystores\[0\]\.throttle\.rateLimit must be > 0/,
  );
  assert.match(
    refusal((p) => {
      p.keystores[0].throttle = { rateLimit: 5, burstLimit: 1.5 };
    }),
    /: keystores\[0\]\.throttle\.burstLimit must be integer/,
  );
  assert.match(
    refusal((p) => {
      p.keystores.push({ ...p.keystores[0], name: 'b', pathPrefix: '/b' });
    }),
    /exactly one key store/,
  );
  assert.match(
    refusal((p) => {
      p.provisionedConcurrency = 50;
    }),
    /cannot exceed reservedConcurrency/,
  );
  assert.match(
    refusal((p) => {
      p.keystores[0].policyFile = 'policies/nope.cedar';
    }),
    /keystores\[0\]\.policyFile policies\/nope\.cedar does not exist/,
  );
  assert.match(
    refusal((p) => {
      p.keystores[0].policyFile = '/etc/passwd';
    }),
    /policies\/<name>\.cedar/,
  );
  assert.match(
    refusal((p) => {
      p.connectivity = 'carrier-pigeon';
    }),
    /: connectivity must be equal to one of the allowed values/,
  );
  assert.match(
    refusal((p) => {
      p.clientCertificate = { allowedCommonNames: ['x'] };
    }),
    /: clientCertificate needs mutual TLS/,
  );
  assert.match(
    refusal((p) => {
      delete p.hsm.pinSecretArn;
    }),
    /: hsm\.pinSecretArn is required/,
  );
});

test('frontDoor alb: what the ALB needs, and what only API Gateway does refused by name', () => {
  const behindAlb =
    (start = base) =>
    () => {
      const p = start();
      p.frontDoor = 'alb';
      p.alb = { accessLogBucket: 'xks-logs', subnetIds: ['subnet-p1', 'subnet-p2'] };
      return p;
    };
  assert.equal(checkParams(behindAlb()(), 'x').frontDoor, 'alb');
  assert.equal(checkParams(behindAlb(publicStage)(), 'x').frontDoor, 'alb');
  assert.equal(checkParams(base(), 'x').frontDoor, 'apigateway', 'API Gateway by default');
  const cases: Array<[(p: Params) => void, RegExp, () => Params]> = [
    [(p) => delete p.alb, /: alb is required \(frontDoor alb\)/, behindAlb()],
    [
      (p) => delete p.alb.subnetIds,
      /: alb\.subnetIds is required \(frontDoor alb, connectivity public\)/,
      behindAlb(publicStage),
    ],
    [(p) => delete p.alb.accessLogBucket, /: alb\.accessLogBucket is required$/, behindAlb()],
    [(p) => (p.alb.accessLogPrefix = 'a/AWSLogs'), /: alb\.accessLogPrefix must match/, behindAlb()],
    [(p) => (p.alb.subnetIds = ['one']), /: alb\.subnetIds must NOT have fewer than 2 items/, behindAlb()],
    [
      (p) => (p.throttling = { rateLimit: 10 }),
      /: throttling is API Gateway's stage throttling; .*reservedConcurrency/,
      behindAlb(),
    ],
    [
      (p) => (p.createApiGatewayCloudWatchRole = true),
      /: createApiGatewayCloudWatchRole is for API Gateway/,
      behindAlb(),
    ],
    [(p) => (p.frontDoor = 'nginx'), /: frontDoor must be equal to one of the allowed values/, behindAlb()],
    [(p) => (p.alb = { accessLogBucket: 'xks-logs' }), /: alb is for frontDoor alb/, base],
  ];
  for (const [change, message, start] of cases) assert.match(refusal(change, start), message);
});

test('unknown settings are refused by name, in either part of the file', () => {
  const cases: Array<[(p: Params) => void, RegExp]> = [
    [(p) => (p.regoin = 'eu-west-1'), /: regoin is not a known setting$/],
    [(p) => (p.vpc.subnets = []), /: vpc\.subnets is not a known setting$/],
    [(p) => (p.hsm.tokenlabel = 'x'), /: hsm\.tokenlabel is not a known setting$/],
    [
      (p) => (p.hsm.fleet = [{ name: 'a', modulepath: '/x' }]),
      /: hsm\.fleet\[0\]\.modulepath is not a known/,
    ],
    [(p) => (p.keystores[0].key = ['a']), /: keystores\[0\]\.key is not a known setting$/],
    [
      (p) => (p.secretsCacheSeconds = 60),
      /: secretsCacheSeconds is not a known setting \(the setting is secrets\.cacheSeconds\)/,
    ],
  ];
  for (const [change, message] of cases) assert.match(refusal(change), message);
  assert.match(
    refusal((p) => {
      p.public.mtls.allowedCommonNames = ['x'];
    }, publicStage),
    /: public\.mtls\.allowedCommonNames is not a known setting \(the setting is clientCertificate\.allowedCommonNames\)/,
  );
});

test('a key store may list hundreds of keys: the configuration is packaged as a file, not put in the environment', () => {
  const p = base();
  p.keystores[0].keys = Array.from({ length: 2000 }, (_, i) => `payments-key-${i}`);
  assert.equal(checkParams(p, 'x').proxyConfig.keystores[0]?.keys.length, 2000);
});

test('IAM: a read permission for every secret the configuration names, whatever the setting', () => {
  const p = base();
  p.hsm.fleet = [{ name: 'a', pinSecretArn: arn('pin-a') }, { name: 'b' }];
  p.keystores[0].credentialsSecretArn = arn('pin'); // one secret named twice
  const { proxyConfig } = checkParams(p, 'x');
  // A setting the proxy may get later, named by the same convention.
  (proxyConfig as Params).audit = {
    keySecretArn: arn('audit'),
    revocationParameterArn: 'arn:aws:ssm:eu-west-1:1:parameter/r',
  };
  assert.deepEqual(readPermissions(proxyConfig), [
    { action: 'secretsmanager:GetSecretValue', resources: [arn('pin'), arn('pin-a'), arn('audit')] },
    { action: 'ssm:GetParameter', resources: ['arn:aws:ssm:eu-west-1:1:parameter/r'] },
  ]);
});

test('redeployment: a change to a method, a gateway response, the API policy or BinaryMediaTypes gives a new Deployment', () => {
  const p = checkParams(base(), 'x');
  const policy: PolicyDocument = {
    Version: '2012-10-17',
    Statement: [
      { Effect: 'Allow', Principal: '*', Action: 'execute-api:Invoke', Resource: 'execute-api:/*' },
    ],
  };
  const resources = restApi(p, {
    EndpointConfiguration: { Types: ['PRIVATE'], VpcEndpointIds: ['vpce-1'] },
    Policy: policy,
  });
  const [id, deployment] = Object.entries(resources).find(
    ([, r]) => r.Type === 'AWS::ApiGateway::Deployment',
  ) as [string, Params];
  assert.deepEqual((resources.XksStage as Resource<'AWS::ApiGateway::Stage'>).Properties.DeploymentId, {
    Ref: id,
  });
  const gatewayResponses = Object.keys(resources).filter(
    (k) => resources[k]?.Type === 'AWS::ApiGateway::GatewayResponse',
  );
  const methods = Object.keys(resources).filter((k) => resources[k]?.Type === 'AWS::ApiGateway::Method');
  assert.ok(gatewayResponses.length >= 4 && methods.length === 8);
  for (const needed of [...gatewayResponses, ...methods])
    assert.ok(deployment.DependsOn.includes(needed), needed);

  const others = Object.fromEntries(Object.entries(resources).filter(([k]) => k !== id));
  assert.equal(deploymentOf(others)[0], id, 'the same API, the same Deployment');
  const changes: Record<string, (r: Record<string, Params>) => void> = {
    'a gateway response': (r) => {
      (r[gatewayResponses[0] as string] as Params).Properties.StatusCode = '400';
    },
    'the API policy': (r) => {
      (r.XksRestApi as Params).Properties.Policy.Statement[0].Condition = {
        StringEquals: { 'aws:SourceVpce': 'vpce-1' },
      };
    },
    BinaryMediaTypes: (r) => {
      (r.XksRestApi as Params).Properties.BinaryMediaTypes = ['application/octet-stream'];
    },
    'a method': (r) => {
      (r[methods[0] as string] as Params).Properties.AuthorizationType = 'AWS_IAM';
    },
  };
  for (const [what, change] of Object.entries(changes)) {
    const changed = structuredClone(others);
    change(changed);
    const [newId] = deploymentOf(changed);
    assert.notEqual(newId, id, `${what} changed, the Deployment did not`);
  }
});
