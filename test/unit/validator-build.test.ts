// The bundles' validators are ajv's code for each schema the functions compile, made at build time
// with every object and array of the schema a function of its own (scripts/build.ts
// subschemasApart), so that V8 compiles only the parts a document reaches. Whatever the document,
// that split schema must give what the source's schema gives: the verdict, the defaults filled in,
// and the first error (all of it but schemaPath, which names the split schema's part).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Ajv, type ErrorObject, type Options } from 'ajv';
import standalone from 'ajv/dist/standalone/index.js';
import fc from 'fast-check';
import { recordCompiles, subschemasApart } from '../../scripts/build.ts';
import { fuzzParameters } from '../helpers/fuzz.ts';

const CREDENTIAL = { accessKeyId: 'XKSPROXYTESTACCESSKEY23456', secretAccessKey: 'a'.repeat(43) };
const METADATA = {
  awsPrincipalArn: 'arn:aws:iam::123456789012:user/alice',
  kmsKeyArn: 'arn:aws:kms:us-east-1:123456789012:key/k',
  kmsOperation: 'Encrypt',
  kmsRequestId: 'r-1',
  kmsViaService: 'ebs',
};

/** Valid documents of every schema the functions compile, each section of the configuration set. */
const EXAMPLES: unknown[] = [
  {
    hsm: {
      modulePath: '/usr/lib/softhsm/libsofthsm2.so',
      libraryParameters: "configdir='sql:/x'",
      tokenLabel: 't',
      tokenSerial: 'abc',
      pin: '1234',
      healthCheckKeyLabel: 'health',
      keyCacheSeconds: 30,
      profile: 'softhsm',
      callTimeoutMs: 200,
      startTimeoutMs: 3000,
      fleet: [
        { name: 'a', modulePath: '/lib/a.so', tokenLabel: 'ta', pin: '1', profile: 'nss' },
        { name: 'b', tokenSerial: 'sb', pinSecretArn: 'arn:aws:secretsmanager:eu-west-1:1:secret:p' },
      ],
    },
    healthCheck: { cacheSeconds: 5, degradedAboveMs: 50 },
    proxy: { vendor: 'v', model: 'm', fleetSize: 2 },
    secrets: { cacheSeconds: 60 },
    clientCertificate: { allowedCommonNames: ['cks.kms.*.amazonaws.com'], caFile: '/ca.pem' },
    audit: { keyFile: '/audit.key' },
    revocation: { file: '/revoked.json', cacheSeconds: 2 },
    localServer: { maxBodyBytes: 1000, maxConnections: 10, maxRequestsPerSocket: 0 },
    keystores: [
      {
        name: 'ks',
        pathPrefix: '/a/b',
        credentials: [CREDENTIAL],
        policyFile: 'p.cedar',
        throttle: { rateLimit: 10, burstLimit: 20 },
        keys: ['foo', 'bar'],
        keyPattern: '^k-',
        disabledKeys: ['bar'],
        allowedRegions: ['us-east-1'],
        awsSampleProxy: { ciphertextMetadata: 'AAAA' },
      },
      { name: 'other', pathPrefix: '', credentialsSecretArn: 'arn:aws:secretsmanager:x', keys: [] },
    ],
  },
  {
    hsm: { modulePath: '/m.so', tokenLabel: 't', pinSecretArn: 'arn' },
    keystores: [{ name: 'k', pathPrefix: '/k', credentialsFile: '/c.json', keys: ['foo'] }],
  },
  { credentials: [CREDENTIAL, { ...CREDENTIAL, accessKeyId: 'XKSPROXYTESTACCESSKEY23457' }] },
  { requestMetadata: { kmsRequestId: 'r', kmsOperation: 'KmsHealthCheck' } },
  {
    requestMetadata: METADATA,
    plaintext: 'SGVsbG8=',
    encryptionAlgorithm: 'AES_GCM',
    additionalAuthenticatedData: 'YWFk',
    ciphertextDataIntegrityValueAlgorithm: 'SHA_256',
  },
  {
    requestMetadata: METADATA,
    ciphertext: 'Y2lwaGVy',
    ciphertextMetadata: 'bWV0YQ==',
    encryptionAlgorithm: 'AES_GCM',
    initializationVector: 'HMrlRw85cAJUd5Ax',
    authenticationTag: 'vBxN2ncH1oEkR8WVXpmyYQ==',
  },
];

type Path = Array<string | number>;

/** Every place in a document: each property and item, at any depth. */
function pathsOf(value: unknown, at: Path = []): Path[] {
  if (typeof value !== 'object' || value === null) return [];
  const entries: Array<[string | number, unknown]> = Array.isArray(value)
    ? value.map((v, i) => [i, v])
    : Object.entries(value);
  return entries.flatMap(([key, v]) => [[...at, key], ...pathsOf(v, [...at, key])]);
}

interface Mutation {
  example: number;
  place: number;
  change: 'delete' | 'replace' | 'add';
  value: unknown;
}

/** The example with one change at one place (none when it has no place). */
function mutated({ example, place, change, value }: Mutation): unknown {
  const doc = structuredClone(EXAMPLES[example]);
  const paths = pathsOf(doc);
  const path = paths[place % paths.length];
  if (path === undefined) return doc;
  const parent = path
    .slice(0, -1)
    .reduce<Record<string | number, unknown>>(
      (node, key) => node[key] as Record<string | number, unknown>,
      doc as Record<string | number, unknown>,
    );
  const key = path[path.length - 1] as string | number;
  if (change === 'delete') {
    if (Array.isArray(parent)) parent.splice(key as number, 1);
    else delete parent[key];
  } else if (change === 'replace') {
    parent[key] = value;
  } else if (typeof parent[key] === 'object' && parent[key] !== null && !Array.isArray(parent[key])) {
    (parent[key] as Record<string, unknown>).unknownSetting = value;
  } else {
    parent[key] = value;
  }
  return doc;
}

const mutation: fc.Arbitrary<Mutation> = fc.record({
  example: fc.nat({ max: EXAMPLES.length - 1 }),
  place: fc.nat(),
  change: fc.constantFrom('delete', 'replace', 'add'),
  value: fc.oneof(
    fc.jsonValue({ maxDepth: 2 }),
    fc.constantFrom('', 'x'.repeat(5000), -1, 0, 1.5, 65_536, null, [], {}),
  ),
});

const compiles = await recordCompiles();

const withoutSchemaPath = (error: ErrorObject | undefined) => {
  if (error === undefined) return undefined;
  const { schemaPath: _, ...rest } = error;
  return rest;
};

test('every schema the functions compile is recorded: the configuration, credentials, four operations', () => {
  assert.equal(compiles.length, 6);
  assert.ok(compiles.some(({ schema }) => 'hsm' in ((schema as { properties?: object }).properties ?? {})));
});

test("the configuration schema is split: one function per object and array in ajv's code", () => {
  const config = compiles.find(
    ({ schema }) => 'hsm' in ((schema as { properties?: object }).properties ?? {}),
  );
  assert.ok(config);
  const split = subschemasApart(config.schema) as { $defs?: object };
  const parts = Object.keys(split.$defs ?? {}).length;
  assert.ok(parts >= 15, `${parts} parts`);
  const ajv = new Ajv({ ...config.options, inlineRefs: false, code: { source: true, esm: true } });
  const code = standalone.default(ajv, ajv.compile(split));
  assert.equal(code.match(/function validate\d+\(/g)?.length, parts + 1);
});

for (const [index, { options, schema }] of compiles.entries()) {
  const name = `schema ${index}: the split schema validates as the source's`;
  test(name, () => {
    const source = new Ajv(options as Options).compile(schema);
    const split = new Ajv({ ...(options as Options), inlineRefs: false }).compile(subschemasApart(schema));
    fc.assert(
      fc.property(mutation, (m) => {
        const doc = mutated(m);
        const [a, b] = [structuredClone(doc), structuredClone(doc)];
        const [okA, okB] = [source(a), split(b)];
        assert.equal(okB, okA);
        assert.deepEqual(b, a, 'the same defaults filled in');
        assert.deepEqual(withoutSchemaPath(split.errors?.[0]), withoutSchemaPath(source.errors?.[0]));
      }),
      fuzzParameters(import.meta.filename, name, 400, (value) => {
        const [m] = value as [Mutation];
        return `example ${m.example}, place ${m.place}, ${m.change} with a ${typeof m.value}`;
      }),
    );
  });
}
