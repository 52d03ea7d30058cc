// Cedar secondary authorization (spec: Authorization; Logging: the denying statement is named;
// the requestMetadata fields of GetKeyMetadata, Encrypt and Decrypt; Appendix B).
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import { describe, test } from 'node:test';
import {
  type AuthorizationDecision,
  type AuthorizationInput,
  type AuthorizationRequestMetadata,
  type AuthorizedOperation,
  type Authorizer,
  createAuthorizer,
  principalAttrs,
  requestContext,
} from '../../functions/authorization.ts';

const POLICIES = new URL('../../policies/', import.meta.url);
const load = (file: string): Authorizer =>
  createAuthorizer(readFileSync(new URL(file, POLICIES), 'utf8'), file);

const ALICE = 'arn:aws:iam::111122223333:user/Alice';
const APP_ROLE = 'arn:aws:iam::111122223333:role/PaymentsApp';
const BREAK_GLASS = 'arn:aws:iam::111122223333:role/BreakGlass';
const MALLORY = 'arn:aws:iam::444455556666:user/Mallory';
const KEY_ARN = 'arn:aws:kms:us-east-2:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab';
const VPCE = 'vpce-0123456789abcdef0';

const DEFAULT_KMS_OPERATION: Record<AuthorizedOperation, string> = {
  GetKeyMetadata: 'CreateKey',
  Encrypt: 'Encrypt',
  Decrypt: 'Decrypt',
};

/** A request as the middleware would pass it: the spec's required fields, then `metadata`'s. */
function input(
  operation: AuthorizedOperation,
  metadata: AuthorizationRequestMetadata = {},
  keyId = 'app-payments',
): AuthorizationInput {
  return {
    operation,
    keystore: 'payments',
    keyId,
    requestMetadata: {
      awsPrincipalArn: ALICE,
      ...(operation === 'GetKeyMetadata' ? {} : { kmsKeyArn: KEY_ARN }),
      kmsOperation: DEFAULT_KMS_OPERATION[operation],
      kmsRequestId: '4112f4d6-db54-4af4-ae30-c55a22a8dfae',
      ...metadata,
    },
  };
}

function assertAllowed(decision: AuthorizationDecision, policyIds: string[]): void {
  assert.deepEqual(
    { allowed: decision.allowed, policyIds: [...decision.policyIds].sort(), errors: decision.errors },
    { allowed: true, policyIds: [...policyIds].sort(), errors: [] },
  );
}

/** Denied; by the named forbids, or by default (no permit applied) when `policyIds` is empty. */
function assertDenied(decision: AuthorizationDecision, policyIds: string[] = []): void {
  assert.deepEqual(
    { allowed: decision.allowed, policyIds: [...decision.policyIds].sort() },
    { allowed: false, policyIds: [...policyIds].sort() },
  );
}

// ---------------------------------------------------------------------------------------------
// The example policies

describe('policies/only-one-account.cedar', () => {
  const authorizer = load('only-one-account.cedar');

  test('principals of account 111122223333 may run every operation on any key', () => {
    for (const operation of ['GetKeyMetadata', 'Encrypt', 'Decrypt'] as const) {
      for (const principal of [ALICE, APP_ROLE, 'arn:aws:sts::111122223333:assumed-role/PaymentsApp/s1']) {
        const decision = authorizer.authorize(input(operation, { awsPrincipalArn: principal }, 'db-key'));
        assertAllowed(decision, ['allow-account-111122223333']);
      }
    }
  });

  test('other accounts, service principals and "AWS Internal" are denied by default', () => {
    for (const principal of [
      MALLORY,
      'ec2.amazonaws.com',
      'AWS Internal',
      // Not an IAM ARN: the account-looking part must not count.
      'arn:aws:s3:::111122223333:bucket',
    ]) {
      const decision = authorizer.authorize(input('Encrypt', { awsPrincipalArn: principal }));
      assertDenied(decision);
      assert.deepEqual(decision.errors, [], 'the `has account` guard keeps evaluation clean');
    }
  });

  test('an unknown kmsOperation is allowed by a policy that does not look at kmsOperation', () => {
    assertAllowed(authorizer.authorize(input('Encrypt', { kmsOperation: 'BulkEncrypt' })), [
      'allow-account-111122223333',
    ]);
  });
});

describe('policies/only-via-vpc-endpoint.cedar', () => {
  const authorizer = load('only-via-vpc-endpoint.cedar');

  test('requests through the VPC endpoint are allowed, for all three operations', () => {
    for (const operation of ['GetKeyMetadata', 'Encrypt', 'Decrypt'] as const) {
      const decision = authorizer.authorize(
        input(operation, { awsSourceVpc: 'vpc-1a2b3c4d', awsSourceVpce: VPCE }),
      );
      assertAllowed(decision, ['allow-via-vpce-0123456789abcdef0']);
    }
  });

  test('requests without awsSourceVpce, or through another endpoint, are denied without errors', () => {
    for (const metadata of [
      {},
      { awsSourceVpce: 'vpce-0fedcba9876543210' },
      { awsSourceVpc: 'vpc-1a2b3c4d' },
      // The field being absent is not the same as it being empty, nor the same endpoint.
      { awsSourceVpce: '' },
    ]) {
      const decision = authorizer.authorize(input('Decrypt', metadata));
      assertDenied(decision);
      assert.deepEqual(decision.errors, []);
    }
  });
});

describe('policies/generate-data-key-only-via-service.cedar', () => {
  const authorizer = load('generate-data-key-only-via-service.cedar');
  const gdk = (metadata: AuthorizationRequestMetadata) =>
    authorizer.authorize(input('Encrypt', { kmsOperation: 'GenerateDataKey', ...metadata }));

  test('GenerateDataKey through EBS is allowed', () => {
    assertAllowed(gdk({ kmsViaService: 'ebs' }), ['allow-account-111122223333']);
    assertAllowed(gdk({ kmsViaService: 'ebs.us-east-2.amazonaws.com' }), ['allow-account-111122223333']);
  });

  test('GenerateDataKey through another service, or directly, is denied by the forbid', () => {
    for (const metadata of [
      { kmsViaService: 's3' },
      { kmsViaService: 's3.us-east-2.amazonaws.com' },
      { kmsViaService: 'ebsx' },
      { kmsViaService: '' },
      {},
    ]) {
      const decision = gdk(metadata);
      assertDenied(decision, ['generate-data-key-only-via-ebs']);
      assert.deepEqual(decision.errors, [], JSON.stringify(metadata));
    }
  });

  test('Decrypt, Encrypt and GetKeyMetadata stay allowed with or without a via service', () => {
    for (const decision of [
      authorizer.authorize(input('Decrypt')),
      authorizer.authorize(input('Decrypt', { kmsViaService: 's3' })),
      authorizer.authorize(input('Encrypt')),
      authorizer.authorize(input('Encrypt', { kmsOperation: 'GenerateDataKeyWithoutPlaintext' })),
      authorizer.authorize(input('GetKeyMetadata')),
    ]) {
      assertAllowed(decision, ['allow-account-111122223333']);
    }
  });

  test('other accounts stay denied, even through EBS', () => {
    assertDenied(gdk({ awsPrincipalArn: MALLORY, kmsViaService: 'ebs' }));
  });
});

describe('policies/break-glass.cedar', () => {
  const authorizer = load('break-glass.cedar');

  test('the account uses app-* keys only', () => {
    assertAllowed(authorizer.authorize(input('Encrypt', { awsPrincipalArn: APP_ROLE }, 'app-payments')), [
      'app-keys-for-account-111122223333',
    ]);
    assertDenied(authorizer.authorize(input('Encrypt', { awsPrincipalArn: APP_ROLE }, 'db-master')));
    assertDenied(authorizer.authorize(input('Decrypt', { awsPrincipalArn: APP_ROLE }, 'xapp-1')));
    assertDenied(authorizer.authorize(input('Decrypt', { awsPrincipalArn: MALLORY }, 'app-payments')));
  });

  test('the break-glass role uses every key, and the decision says so', () => {
    for (const operation of ['GetKeyMetadata', 'Encrypt', 'Decrypt'] as const) {
      assertAllowed(authorizer.authorize(input(operation, { awsPrincipalArn: BREAK_GLASS }, 'db-master')), [
        'break-glass',
      ]);
    }
    // Both permits apply to an app key: both are named.
    assertAllowed(authorizer.authorize(input('Encrypt', { awsPrincipalArn: BREAK_GLASS }, 'app-payments')), [
      'break-glass',
      'app-keys-for-account-111122223333',
    ]);
  });

  test('only that exact role ARN breaks glass', () => {
    for (const principal of [
      'arn:aws:iam::444455556666:role/BreakGlass',
      'arn:aws:iam::111122223333:role/BreakGlass2',
      'arn:aws:sts::111122223333:assumed-role/BreakGlass/incident',
    ]) {
      assertDenied(authorizer.authorize(input('Decrypt', { awsPrincipalArn: principal }, 'db-master')));
    }
  });
});

describe('policies/future-operation-denied.cedar', () => {
  const authorizer = load('future-operation-denied.cedar');

  test('the listed KMS operations are allowed, each through its XKS operation', () => {
    const cases: Array<[AuthorizedOperation, string, string]> = [
      ['GetKeyMetadata', 'CreateKey', 'get-key-metadata-known-operations'],
      ['GetKeyMetadata', 'DescribeKey', 'get-key-metadata-known-operations'],
      ['Encrypt', 'Encrypt', 'encrypt-known-operations'],
      ['Encrypt', 'GenerateDataKey', 'encrypt-known-operations'],
      ['Encrypt', 'GenerateDataKeyWithoutPlaintext', 'encrypt-known-operations'],
      ['Encrypt', 'ReEncrypt', 'encrypt-known-operations'],
      ['Decrypt', 'Decrypt', 'decrypt-known-operations'],
      ['Decrypt', 'ReEncrypt', 'decrypt-known-operations'],
    ];
    for (const [operation, kmsOperation, policyId] of cases) {
      assertAllowed(authorizer.authorize(input(operation, { kmsOperation })), [policyId]);
    }
  });

  test('a future kmsOperation is denied until listed (spec: Encrypt, kmsOperation)', () => {
    assertDenied(authorizer.authorize(input('Encrypt', { kmsOperation: 'BulkEncrypt' })));
    assertDenied(authorizer.authorize(input('Decrypt', { kmsOperation: 'BulkDecrypt' })));
    assertDenied(authorizer.authorize(input('GetKeyMetadata', { kmsOperation: 'ListKeys' })));
  });

  test('a KMS operation through the wrong XKS operation, or another account, is denied', () => {
    assertDenied(authorizer.authorize(input('Decrypt', { kmsOperation: 'Encrypt' })));
    assertDenied(authorizer.authorize(input('Encrypt', { kmsOperation: 'CreateKey' })));
    assertDenied(authorizer.authorize(input('Encrypt', { awsPrincipalArn: MALLORY })));
  });
});

describe('the example policies', () => {
  test('all validate against the entity model without findings', () => {
    for (const file of [
      'only-one-account.cedar',
      'only-via-vpc-endpoint.cedar',
      'generate-data-key-only-via-service.cedar',
      'break-glass.cedar',
      'future-operation-denied.cedar',
    ]) {
      assert.deepEqual(load(file).warnings, [], file);
    }
  });
});

// ---------------------------------------------------------------------------------------------
// The request Cedar sees

describe('the Cedar request', () => {
  test('principal: account from IAM and STS ARNs of any partition, none for service principals', () => {
    assert.deepEqual(principalAttrs(ALICE), { arn: ALICE, account: '111122223333' });
    const govRole = 'arn:aws-us-gov:sts::123456789012:assumed-role/Admin/alice';
    assert.deepEqual(principalAttrs(govRole), { arn: govRole, account: '123456789012' });
    const root = 'arn:aws-cn:iam::123456789012:root';
    assert.deepEqual(principalAttrs(root), { arn: root, account: '123456789012' });
    assert.deepEqual(principalAttrs('ec2.amazonaws.com'), { arn: 'ec2.amazonaws.com' });
    assert.deepEqual(principalAttrs('AWS Internal'), { arn: 'AWS Internal' });
    assert.deepEqual(principalAttrs('arn:aws:iam::12345:user/short'), {
      arn: 'arn:aws:iam::12345:user/short',
    });
  });

  test('service principals have no account attribute in policies', () => {
    const authorizer = createAuthorizer(
      '@id("service") permit (principal, action, resource) when { !(principal has account) && principal.arn == principal.arn };',
      'service-principals',
    );
    for (const principal of ['ec2.amazonaws.com', 'AWS Internal']) {
      assertAllowed(authorizer.authorize(input('Decrypt', { awsPrincipalArn: principal })), ['service']);
    }
    assertDenied(authorizer.authorize(input('Decrypt', { awsPrincipalArn: ALICE })));
  });

  test('context: the key ARN region and account; optional fields absent, not empty', () => {
    assert.deepEqual(
      requestContext({
        awsPrincipalArn: ALICE,
        kmsKeyArn: KEY_ARN,
        kmsOperation: 'Encrypt',
        kmsRequestId: 'r-1',
        awsSourceVpce: undefined,
      }),
      {
        kmsOperation: 'Encrypt',
        kmsKeyArn: KEY_ARN,
        kmsKeyRegion: 'us-east-2',
        kmsKeyAccount: '111122223333',
      },
    );
    // The spec's own Encrypt example writes `:/key/`.
    const specArn = 'arn:aws:kms:us-east-2:123456789012:/key/1234abcd-12ab-34cd-56ef-1234567890ab';
    assert.equal(requestContext({ kmsKeyArn: specArn }).kmsKeyAccount, '123456789012');
    // Not a KMS ARN: kept, but nothing parsed from it.
    assert.deepEqual(requestContext({ kmsKeyArn: 'not-an-arn' }), { kmsKeyArn: 'not-an-arn' });
    assert.deepEqual(
      requestContext({
        kmsOperation: 'Decrypt',
        awsSourceVpc: 'vpc-1',
        awsSourceVpce: VPCE,
        kmsViaService: 'ebs',
      }),
      { kmsOperation: 'Decrypt', awsSourceVpc: 'vpc-1', awsSourceVpce: VPCE, kmsViaService: 'ebs' },
    );
  });

  test('`has` sees absent fields as absent and empty strings as present', () => {
    const authorizer = createAuthorizer(
      [
        '@id("has-vpce") permit (principal, action, resource) when { context has awsSourceVpce };',
        '@id("has-key-arn") permit (principal, action, resource) when { context has kmsKeyArn };',
      ].join('\n'),
      'has',
    );
    // GetKeyMetadata has no kmsKeyArn; no endpoint: nothing applies.
    assertDenied(authorizer.authorize(input('GetKeyMetadata')));
    assertDenied(authorizer.authorize(input('GetKeyMetadata', { awsSourceVpce: undefined })));
    assertAllowed(authorizer.authorize(input('GetKeyMetadata', { awsSourceVpce: VPCE })), ['has-vpce']);
    assertAllowed(authorizer.authorize(input('GetKeyMetadata', { awsSourceVpce: '' })), ['has-vpce']);
    assertAllowed(authorizer.authorize(input('Encrypt')), ['has-key-arn']);
  });

  test('the resource is the key id in its key store; the key ARN parts are in the context', () => {
    const authorizer = createAuthorizer(
      `@id("payments-us-east-2")
       permit (principal, action == XksProxy::Action::"Decrypt", resource == XksProxy::ExternalKey::"app-payments")
       when {
         resource.id == "app-payments" && resource.keystore == "payments" &&
         context has kmsKeyRegion && context.kmsKeyRegion == "us-east-2" &&
         context has kmsKeyAccount && context.kmsKeyAccount == principal.account
       };`,
      'resource',
    );
    assertAllowed(authorizer.authorize(input('Decrypt')), ['payments-us-east-2']);
    assertDenied(authorizer.authorize(input('Encrypt')));
    assertDenied(authorizer.authorize(input('Decrypt', {}, 'app-other')));
    assertDenied(authorizer.authorize({ ...input('Decrypt'), keystore: 'other' }));
    assertDenied(
      authorizer.authorize(input('Decrypt', { kmsKeyArn: KEY_ARN.replace('us-east-2', 'eu-west-1') })),
    );
    // A key of another account, used cross-account by Alice.
    assertDenied(
      authorizer.authorize(input('Decrypt', { kmsKeyArn: KEY_ARN.replace('111122223333', '444455556666') })),
    );
  });
});

// ---------------------------------------------------------------------------------------------
// Policy sets and decisions

describe('createAuthorizer', () => {
  test('a policy text that does not parse fails at start-up, saying where', () => {
    assert.throws(
      () =>
        createAuthorizer('@id("a")\npermit (principal, action, resource) when { context.x == };', 'broken'),
      /Cedar policy set broken does not parse: .*line 2, column \d+/,
    );
    assert.throws(
      () => createAuthorizer('permit (principal, action, resource)', 'no-semicolon'),
      /does not parse/,
    );
    assert.throws(
      () => createAuthorizer('allow (principal, action, resource);', 'not-cedar'),
      /does not parse/,
    );
    assert.throws(
      () => createAuthorizer('permit (principal, action, resource) when { x };', 'bad-variable'),
      /invalid variable: x/,
    );
  });

  test('a duplicate @id fails at start-up, also against a default id', () => {
    assert.throws(
      () =>
        createAuthorizer(
          '@id("same") permit (principal, action, resource);\n@id("same") forbid (principal, action, resource);',
          'duplicate',
        ),
      /two policies with id 'same'/,
    );
    assert.throws(
      () =>
        createAuthorizer(
          '@id("policy1") permit (principal, action, resource);\npermit (principal, action, resource);',
          'default-clash',
        ),
      /two policies with id 'policy1'/,
    );
    assert.throws(
      () => createAuthorizer('@id("") permit (principal, action, resource);', 'empty-id'),
      /empty @id/,
    );
  });

  test('templates are refused', () => {
    assert.throws(
      () => createAuthorizer('permit (principal == ?principal, action, resource);', 'template'),
      /templates/,
    );
  });

  test('an empty policy set denies everything', () => {
    for (const text of ['', '// no policies yet\n']) {
      const authorizer = createAuthorizer(text, 'empty');
      assert.deepEqual(authorizer.policyIds, []);
      for (const operation of ['GetKeyMetadata', 'Encrypt', 'Decrypt'] as const) {
        assert.deepEqual(authorizer.authorize(input(operation)), {
          allowed: false,
          policyIds: [],
          errors: [],
        });
      }
    }
  });

  test('unannotated policies are named policy<N> by their position in the text, past ten too', () => {
    const texts = Array.from(
      { length: 12 },
      (_, n) => `permit (principal, action, resource) when { resource.id == "key-${n}" };`,
    );
    texts[3] = `@id("third") ${texts[3]}`;
    const authorizer = createAuthorizer(texts.join('\n'), 'numbered');
    assert.deepEqual(authorizer.policyIds, [
      'policy0',
      'policy1',
      'policy2',
      'third',
      ...Array.from({ length: 8 }, (_, n) => `policy${n + 4}`),
    ]);
    for (const [n, expected] of [
      [0, 'policy0'],
      [2, 'policy2'],
      [3, 'third'],
      [10, 'policy10'],
      [11, 'policy11'],
    ] as const) {
      assertAllowed(authorizer.authorize(input('Encrypt', {}, `key-${n}`)), [expected]);
    }
  });

  test('two authorizers with the same label keep their own policies', () => {
    const open = createAuthorizer('@id("all") permit (principal, action, resource);', 'same-label');
    const closed = createAuthorizer('', 'same-label');
    assertAllowed(open.authorize(input('Encrypt')), ['all']);
    assertDenied(closed.authorize(input('Encrypt')));
  });

  test('validation findings (typos, unguarded optional attributes) are reported, not fatal', () => {
    const authorizer = createAuthorizer(
      [
        '@id("typo") forbid (principal, action, resource) when { context.kmsViaServce != "ebs" };',
        '@id("unguarded") permit (principal, action, resource) when { principal.account == "111122223333" };',
        '@id("wrong-action") permit (principal, action == XksProxy::Action::"encrypt", resource);',
      ].join('\n'),
      'findings',
    );
    const warnings = authorizer.warnings.join('\n');
    assert.match(warnings, /kmsViaServce/);
    assert.match(warnings, /did you mean `kmsViaService`/);
    assert.match(warnings, /optional attribute `account`/);
    assert.match(warnings, /unrecognized action `XksProxy::Action::"encrypt"`/);
    assert.equal(new Set(authorizer.warnings).size, authorizer.warnings.length, 'no repeats');
  });
});

describe('decisions', () => {
  test('a forbid overrides a permit and is the one named', () => {
    const authorizer = createAuthorizer(
      [
        '@id("all") permit (principal, action, resource);',
        '@id("no-mallory") forbid (principal, action, resource) when { principal has account && principal.account == "444455556666" };',
      ].join('\n'),
      'forbid',
    );
    assertAllowed(authorizer.authorize(input('Encrypt')), ['all']);
    assertDenied(authorizer.authorize(input('Encrypt', { awsPrincipalArn: MALLORY })), ['no-mallory']);
  });

  test('a policy that fails to evaluate does not apply, and the error names it', () => {
    const authorizer = createAuthorizer(
      '@id("unguarded-vpce") permit (principal, action, resource) when { context.awsSourceVpce == "vpce-1" };',
      'errors',
    );
    const decision = authorizer.authorize(input('Decrypt'));
    assertDenied(decision);
    assert.equal(decision.errors.length, 1);
    assert.match(decision.errors[0] ?? '', /^unguarded-vpce: .*awsSourceVpce/);
    assertAllowed(authorizer.authorize(input('Decrypt', { awsSourceVpce: 'vpce-1' })), ['unguarded-vpce']);
  });

  test('Cedar semantics: a forbid that fails to evaluate does not deny (guard it with `has`)', () => {
    const authorizer = createAuthorizer(
      [
        '@id("all") permit (principal, action, resource);',
        '@id("unguarded-forbid") forbid (principal, action, resource) when { context.kmsViaService != "ebs" };',
      ].join('\n'),
      'forbid-errors',
    );
    const decision = authorizer.authorize(input('Encrypt'));
    assert.equal(decision.allowed, true);
    assert.deepEqual(decision.policyIds, ['all']);
    assert.match(decision.errors.join(), /^unguarded-forbid: /);
    assertDenied(authorizer.authorize(input('Encrypt', { kmsViaService: 's3' })), ['unguarded-forbid']);
  });

  test('a request without awsPrincipalArn is denied without evaluation', () => {
    const authorizer = createAuthorizer('@id("all") permit (principal, action, resource);', 'no-principal');
    const decision = authorizer.authorize(input('Encrypt', { awsPrincipalArn: undefined }));
    assert.deepEqual(decision, {
      allowed: false,
      policyIds: [],
      errors: ['requestMetadata.awsPrincipalArn is missing'],
    });
  });

  test('spec-sized values (2048-character ARNs) and unusual characters are plain data', () => {
    const authorizer = load('only-one-account.cedar');
    const longArn = `arn:aws:iam::111122223333:role/${'p'.repeat(2048 - 31)}`;
    assert.equal(longArn.length, 2048);
    assertAllowed(authorizer.authorize(input('Encrypt', { awsPrincipalArn: longArn })), [
      'allow-account-111122223333',
    ]);
    const odd = 'arn:aws:iam::111122223333:user/"quoted"\\back\u00e9\n};permit(principal,action,resource);';
    assertAllowed(authorizer.authorize(input('Encrypt', { awsPrincipalArn: odd, kmsViaService: odd })), [
      'allow-account-111122223333',
    ]);
    assertDenied(authorizer.authorize(input('Encrypt', { awsPrincipalArn: odd.replace('1111', '4444') })));
  });

  test('2000 decisions in a row over a varied request mix: each gets its own answer', (t) => {
    const authorizer = load('future-operation-denied.cedar');
    const requests = [
      input('Encrypt', { kmsOperation: 'GenerateDataKey', kmsViaService: 'ebs', awsSourceVpce: VPCE }),
      input('Decrypt', { kmsOperation: 'BulkDecrypt' }),
      input('GetKeyMetadata', { awsPrincipalArn: 'ec2.amazonaws.com' }),
    ];
    for (let i = 0; i < 200; i++) authorizer.authorize(requests[i % requests.length] as AuthorizationInput);
    let allowed = 0;
    const start = performance.now();
    for (let i = 0; i < 2000; i++) {
      if (authorizer.authorize(requests[i % requests.length] as AuthorizationInput).allowed) allowed++;
    }
    const averageMs = (performance.now() - start) / 2000;
    t.diagnostic(`average decision: ${(averageMs * 1000).toFixed(1)} us`);
    // Information only: wall-clock limits belong in the benchmarks, not in a correctness test.
    assert.equal(allowed, 667, 'one request in three is allowed');
  });
});
