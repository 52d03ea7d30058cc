// The deploy parameter checks (infra/params.cjs): mistakes are refused at packaging, with a
// message naming the field, before anything reaches AWS.
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import { test } from 'node:test';

const { checkParams, proxyConfig } = createRequire(import.meta.url)('../../infra/params.cjs') as {
  checkParams(raw: unknown, stage: string): Record<string, unknown>;
  proxyConfig(p: unknown): string;
};

// biome-ignore lint/suspicious/noExplicitAny: parameter files are free-form YAML
type Params = Record<string, any>;

/** A valid VPC endpoint service stage, as deploy/params.ci-vpce.yml has it. */
const base = (): Params => ({
  region: 'eu-west-1',
  layerZip: 'layers/dist/pkcs11-layer-x86_64.zip',
  reservedConcurrency: 40,
  provisionedConcurrency: 2,
  vpc: { vpcId: 'vpc-1', subnetIds: ['subnet-1', 'subnet-2'], securityGroupIds: ['sg-1'] },
  hsm: {
    modulePath: '/opt/lib/libvendor.so',
    tokenLabel: 'xks',
    pinSecretArn: 'arn:aws:secretsmanager:eu-west-1:111122223333:secret:pin',
  },
  keystores: [
    {
      name: 'payments',
      pathPrefix: '/keystores/payments',
      credentialsSecretArn: 'arn:aws:secretsmanager:eu-west-1:111122223333:secret:payments',
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

const refused = (change: (p: Params) => void, message: RegExp) => {
  const p = base();
  change(p);
  assert.throws(() => checkParams(p, 'x'), message);
};

test('valid parameters pass, and give a configuration without secrets', () => {
  const config = JSON.parse(proxyConfig(checkParams(base(), 'x')));
  assert.equal(config.hsm.pin, undefined);
  assert.match(config.hsm.pinSecretArn, /^arn:aws:secretsmanager:/);
});

test("the HSM library's parameters reach the functions' configuration when given, and only then", () => {
  assert.equal('libraryParameters' in JSON.parse(proxyConfig(checkParams(base(), 'x'))).hsm, false);
  const p = base();
  p.hsm.libraryParameters = "configdir='sql:/opt/etc/nssdb' dbTokenDescription='xks'";
  const config = JSON.parse(proxyConfig(checkParams(p, 'x')));
  assert.equal(config.hsm.libraryParameters, p.hsm.libraryParameters);
});

test('refused: inline PIN or credentials, reserved environment names, bad quotas, two key stores behind one endpoint service', () => {
  refused((p) => {
    p.hsm.pin = '1234';
  }, /hsm\.pin/);
  refused((p) => {
    p.keystores[0].credentials = [];
  }, /credentials/);
  for (const name of ['XKS_HSM_PIN', 'POWERTOOLS_LOGGER_LOG_EVENT', 'AWS_REGION', 'NODE_OPTIONS']) {
    refused(
      (p) => {
        p.hsm.environment = { [name]: 'x' };
      },
      new RegExp(`hsm.environment.${name} is reserved`),
    );
  }
  refused((p) => {
    p.keystores[0].throttle = { rateLimit: 0, burstLimit: 1 };
  }, /throttle/);
  refused((p) => {
    p.keystores[0].throttle = { rateLimit: 5, burstLimit: 1.5 };
  }, /throttle/);
  refused((p) => {
    p.keystores.push({ ...p.keystores[0], name: 'b', pathPrefix: '/b' });
  }, /exactly one key store/);
  refused((p) => {
    p.provisionedConcurrency = 50;
  }, /cannot exceed reservedConcurrency/);
  refused((p) => {
    p.keystores[0].policyFile = 'policies/nope.cedar';
  }, /does not exist/);
  refused((p) => {
    p.keystores[0].policyFile = '/etc/passwd';
  }, /policies\/<name>\.cedar/);
  refused((p) => {
    p.connectivity = 'carrier-pigeon';
  }, /connectivity/);
});
