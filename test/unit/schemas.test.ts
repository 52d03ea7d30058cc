// Request body validation of the four operations (spec: GetKeyMetadata, Encrypt, Decrypt,
// GetHealthStatus request payloads; Appendix B): the route's schema, then the decode of each Base64
// data field (decodeBase64, functions/xks.ts), which is where their alphabet and canonical form are
// checked. Both refuse with 400 ValidationException before the HSM is used.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import { XksError } from '../../functions/errors.ts';
import type { Operation } from '../../functions/routes.ts';
import { validatorFor } from '../../functions/schemas.ts';
import { decodeBase64 } from '../../functions/xks.ts';

type Body = Record<string, unknown>;

// The spec's request payload examples, verbatim.
const SPEC_EXAMPLES: Record<Operation, Body> = {
  GetKeyMetadata: {
    requestMetadata: {
      awsPrincipalArn: 'arn:aws:iam::123456789012:user/Alice',
      kmsOperation: 'CreateKey',
      kmsRequestId: '4112f4d6-db54-4af4-ae30-c55a22a8dfae',
    },
  },
  Encrypt: {
    requestMetadata: {
      awsPrincipalArn: 'arn:aws:iam::123456789012:user/Alice',
      kmsKeyArn: 'arn:aws:kms:us-east-2:123456789012:/key/1234abcd-12ab-34cd-56ef-1234567890ab',
      kmsOperation: 'Encrypt',
      kmsRequestId: '4112f4d6-db54-4af4-ae30-c55a22a8dfae',
      kmsViaService: 'ebs',
    },
    additionalAuthenticatedData: 'cHJvamVjdD1uaWxlLGRlcGFydG1lbnQ9bWFya2V0aW5n',
    plaintext: 'SGVsbG8gV29ybGQh',
    encryptionAlgorithm: 'AES_GCM',
    ciphertextDataIntegrityValueAlgorithm: 'SHA_256',
  },
  Decrypt: {
    requestMetadata: {
      awsPrincipalArn: 'arn:aws:iam::123456789012:user/Alice',
      kmsKeyArn: 'arn:aws:kms:us-east-2:123456789012:/key/1234abcd-12ab-34cd-56ef-1234567890ab',
      kmsOperation: 'Decrypt',
      kmsRequestId: '5112f4d6-db54-4af4-ae30-c55a22a8dfae',
      kmsViaService: 'ebs',
    },
    additionalAuthenticatedData: 'cHJvamVjdD1uaWxlLGRlcGFydG1lbnQ9bWFya2V0aW5n',
    encryptionAlgorithm: 'AES_GCM',
    ciphertext: 'ghxkK1txeDNn3q8Y',
    ciphertextMetadata: 'a2V5X3ZlcnNpb249MQ==',
    initializationVector: 'HMrlRw85cAJUd5Ax',
    authenticationTag: 'vBxN2ncH1oEkR8WVXpmyYQ==',
  },
  GetHealthStatus: {
    requestMetadata: {
      kmsRequestId: '4112f4d6-db54-4af4-ae30-c55a22a8dfae',
      kmsOperation: 'CreateCustomKeyStore',
    },
  },
};

// Appendix D's curl examples.
const APPENDIX_D: Array<[Operation, Body]> = [
  [
    'Encrypt',
    {
      requestMetadata: {
        awsPrincipalArn: 'arn:aws:iam::123456789012:user/Alice',
        kmsKeyArn: 'arn:aws:kms:us-east-2:123456789012:/key/1234abcd-12ab-34cd-56ef-1234567890ab',
        kmsOperation: 'GenerateDataKey',
        kmsRequestId: '4112f4d6-db54-4af4-ae30-c55a22a8dfae',
      },
      plaintext: 'SGVsbG8gV29ybGQh',
      encryptionAlgorithm: 'AES_GCM',
    },
  ],
  [
    'GetHealthStatus',
    {
      requestMetadata: {
        kmsOperation: 'KmsHealthCheck',
        kmsRequestId: '1124f4d6-db54-4af4-ae30-c55a22a8abcd',
      },
    },
  ],
];

// The fields the spec marks REQUIRED, per operation.
const REQUIRED: Record<Operation, { top: string[]; metadata: string[] }> = {
  GetHealthStatus: { top: ['requestMetadata'], metadata: ['kmsRequestId', 'kmsOperation'] },
  GetKeyMetadata: { top: ['requestMetadata'], metadata: ['awsPrincipalArn', 'kmsOperation', 'kmsRequestId'] },
  Encrypt: {
    top: ['requestMetadata', 'plaintext', 'encryptionAlgorithm'],
    metadata: ['awsPrincipalArn', 'kmsKeyArn', 'kmsOperation', 'kmsRequestId'],
  },
  Decrypt: {
    top: [
      'requestMetadata',
      'ciphertext',
      'encryptionAlgorithm',
      'initializationVector',
      'authenticationTag',
    ],
    metadata: ['awsPrincipalArn', 'kmsKeyArn', 'kmsOperation', 'kmsRequestId'],
  },
};

const OPERATIONS = Object.keys(SPEC_EXAMPLES) as Operation[];

function clone(body: Body): Body {
  return structuredClone(body);
}

function metadataOf(body: Body): Body {
  return body.requestMetadata as Body;
}

/** The Base64 fields whose alphabet and canonical form decodeBase64 checks (not the schema). */
const DATA_FIELDS = ['plaintext', 'ciphertext', 'additionalAuthenticatedData', 'ciphertextMetadata'];

/** What the proxy checks before a body reaches the HSM: the schema, then each data field's decode. */
function check(operation: Operation, body: unknown): void {
  validatorFor(operation)(body);
  for (const field of DATA_FIELDS) {
    const value = (body as Body)[field];
    if (typeof value === 'string') decodeBase64(field, value);
  }
}

function accepts(operation: Operation, body: unknown): void {
  assert.doesNotThrow(() => check(operation, body), `${operation} should accept ${JSON.stringify(body)}`);
}

/** Rejected with 400 ValidationException; the message repeats none of `hidden`. */
function rejects(operation: Operation, body: unknown, hidden: readonly string[] = []): void {
  assert.throws(
    () => check(operation, body),
    (err: unknown) => {
      assert.ok(err instanceof XksError, `expected an XksError, got ${String(err)}`);
      assert.equal(err.errorName, 'ValidationException');
      assert.equal(err.statusCode, 400);
      assert.ok(err.message.length > 0);
      for (const value of hidden) assert.ok(!err.message.includes(value), 'the message repeats a value');
      return true;
    },
    `${operation} should reject ${JSON.stringify(body)?.slice(0, 200)}`,
  );
}

const b64 = (bytes: number, fill = 0xab) => Buffer.alloc(bytes, fill).toString('base64');

describe('spec examples pass', () => {
  for (const operation of OPERATIONS) {
    test(`${operation}: the spec's request example`, () => accepts(operation, SPEC_EXAMPLES[operation]));
  }
  for (const [operation, body] of APPENDIX_D) {
    test(`${operation}: the Appendix D (curl) example`, () => accepts(operation, body));
  }
  test('Decrypt without the optional fields', () => {
    const body = clone(SPEC_EXAMPLES.Decrypt);
    delete body.additionalAuthenticatedData;
    delete body.ciphertextMetadata;
    delete metadataOf(body).kmsViaService;
    accepts('Decrypt', body);
  });
  test('requestMetadata with awsSourceVpc and awsSourceVpce', () => {
    for (const operation of ['GetKeyMetadata', 'Encrypt', 'Decrypt'] as const) {
      const body = clone(SPEC_EXAMPLES[operation]);
      Object.assign(metadataOf(body), {
        awsSourceVpc: 'vpc-0123456789abcdef0',
        awsSourceVpce: 'vpce-0123456789abc',
      });
      accepts(operation, body);
    }
  });
});

describe('missing required fields', () => {
  for (const operation of OPERATIONS) {
    for (const field of REQUIRED[operation].top) {
      test(`${operation} without ${field}`, () => {
        const body = clone(SPEC_EXAMPLES[operation]);
        assert.ok(field in body);
        delete body[field];
        rejects(operation, body);
      });
    }
    for (const field of REQUIRED[operation].metadata) {
      test(`${operation} without requestMetadata.${field}`, () => {
        const body = clone(SPEC_EXAMPLES[operation]);
        assert.ok(field in metadataOf(body));
        delete metadataOf(body)[field];
        rejects(operation, body);
      });
    }
  }

  test('GetKeyMetadata without kmsKeyArn is accepted (spec 0.0.12: no longer REQUIRED)', () => {
    assert.ok(!('kmsKeyArn' in metadataOf(SPEC_EXAMPLES.GetKeyMetadata)));
    accepts('GetKeyMetadata', SPEC_EXAMPLES.GetKeyMetadata);
    const withArn = clone(SPEC_EXAMPLES.GetKeyMetadata);
    metadataOf(withArn).kmsKeyArn =
      'arn:aws:kms:us-east-2:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab';
    accepts('GetKeyMetadata', withArn);
  });
});

describe('wrong types', () => {
  test('not an object at all', () => {
    for (const operation of OPERATIONS) {
      for (const body of [null, undefined, 42, 'text', [], [SPEC_EXAMPLES[operation]], true]) {
        rejects(operation, body);
      }
    }
  });

  test('number for plaintext / ciphertext', () => {
    rejects('Encrypt', { ...clone(SPEC_EXAMPLES.Encrypt), plaintext: 12345 });
    rejects('Decrypt', { ...clone(SPEC_EXAMPLES.Decrypt), ciphertext: 12345 });
  });

  test('array or null for requestMetadata', () => {
    for (const operation of OPERATIONS) {
      rejects(operation, { ...clone(SPEC_EXAMPLES[operation]), requestMetadata: [] });
      rejects(operation, {
        ...clone(SPEC_EXAMPLES[operation]),
        requestMetadata: [metadataOf(SPEC_EXAMPLES[operation])],
      });
      rejects(operation, { ...clone(SPEC_EXAMPLES[operation]), requestMetadata: null });
      rejects(operation, { ...clone(SPEC_EXAMPLES[operation]), requestMetadata: 'x' });
    }
  });

  test('null for every field that is present in the example', () => {
    for (const operation of OPERATIONS) {
      for (const field of Object.keys(SPEC_EXAMPLES[operation])) {
        rejects(operation, { ...clone(SPEC_EXAMPLES[operation]), [field]: null });
      }
      for (const field of Object.keys(metadataOf(SPEC_EXAMPLES[operation]))) {
        const body = clone(SPEC_EXAMPLES[operation]);
        metadataOf(body)[field] = null;
        rejects(operation, body);
      }
    }
  });

  test('a number for a requestMetadata string', () => {
    const body = clone(SPEC_EXAMPLES.Encrypt);
    metadataOf(body).kmsRequestId = 4112;
    rejects('Encrypt', body);
  });
});

describe('field values', () => {
  test("encryptionAlgorithm 'AES_GCM_256' (the pre-0.0.11 name) and others are rejected", () => {
    for (const operation of ['Encrypt', 'Decrypt'] as const) {
      for (const algorithm of ['AES_GCM_256', 'aes_gcm', 'AES_CBC', '', 'AES_GCM ']) {
        rejects(operation, { ...clone(SPEC_EXAMPLES[operation]), encryptionAlgorithm: algorithm }, [
          'AES_GCM_256',
        ]);
      }
    }
  });

  test("ciphertextDataIntegrityValueAlgorithm 'SHA_512' is rejected", () => {
    for (const algorithm of ['SHA_512', 'SHA256', 'sha_256', '']) {
      rejects('Encrypt', {
        ...clone(SPEC_EXAMPLES.Encrypt),
        ciphertextDataIntegrityValueAlgorithm: algorithm,
      });
    }
    const without = clone(SPEC_EXAMPLES.Encrypt);
    delete without.ciphertextDataIntegrityValueAlgorithm;
    accepts('Encrypt', without);
  });

  test("URL-safe Base64 ('-' or '_') is rejected in every Base64 field", () => {
    const fields: Array<[Operation, string]> = [
      ['Encrypt', 'plaintext'],
      ['Encrypt', 'additionalAuthenticatedData'],
      ['Decrypt', 'ciphertext'],
      ['Decrypt', 'additionalAuthenticatedData'],
      ['Decrypt', 'ciphertextMetadata'],
      ['Decrypt', 'initializationVector'],
      ['Decrypt', 'authenticationTag'],
    ];
    for (const [operation, field] of fields) {
      const value = SPEC_EXAMPLES[operation][field] as string;
      // Control: the standard form passes (every example value has a letter to replace).
      accepts(operation, { ...clone(SPEC_EXAMPLES[operation]), [field]: value });
      for (const urlSafe of ['-', '_']) {
        const changed = urlSafe + value.slice(1);
        rejects(operation, { ...clone(SPEC_EXAMPLES[operation]), [field]: changed }, [changed]);
      }
    }
  });

  test('Base64 without padding or with stray characters is rejected', () => {
    for (const plaintext of ['QQ', 'QQ=', 'QQ===', 'Q Q==', 'QQ==\n', 'SGVsbG8gV29ybGQh!', 'QR==', 'QUJ=']) {
      rejects('Encrypt', { ...clone(SPEC_EXAMPLES.Encrypt), plaintext });
    }
  });

  test('the data fields accept nothing the standard Base64 pattern refuses (property)', () => {
    // The schema no longer runs ^[A-Za-z0-9+/]*={0,2}$ over the data fields: decodeBase64's round
    // trip must refuse at least as much. Strings from the Base64 alphabet and its look-alikes.
    const pattern = /^[A-Za-z0-9+/]*={0,2}$/;
    const char = fc.constantFrom(...'AZaz09+/=-_ .\n\t\u00e9\u{1f642}%'.split(/(?:)/u));
    const decodes = (value: string) => {
      try {
        decodeBase64('plaintext', value);
        return true;
      } catch (err) {
        assert.ok(err instanceof XksError && err.errorName === 'ValidationException');
        return false;
      }
    };
    fc.assert(
      fc.property(fc.array(char, { maxLength: 24 }), (chars) => {
        const value = chars.join('');
        if (decodes(value)) assert.match(value, pattern);
      }),
      { numRuns: 20_000 },
    );
    // And canonical encodings of random bytes, with one character changed.
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 1, maxLength: 40 }), fc.nat(), char, (bytes, at, c) => {
        const encoded = Buffer.from(bytes).toString('base64');
        const i = at % encoded.length;
        const value = encoded.slice(0, i) + c + encoded.slice(i + 1);
        if (decodes(value)) assert.match(value, pattern);
      }),
      { numRuns: 20_000 },
    );
  });

  test('initializationVector: 12 and 16 bytes accepted; 8, 13, 15, 20 rejected', () => {
    for (const bytes of [12, 16]) {
      accepts('Decrypt', { ...clone(SPEC_EXAMPLES.Decrypt), initializationVector: b64(bytes) });
    }
    for (const bytes of [0, 8, 11, 13, 15, 17, 20, 24]) {
      rejects('Decrypt', { ...clone(SPEC_EXAMPLES.Decrypt), initializationVector: b64(bytes) });
    }
  });

  test('authenticationTag: 16 bytes accepted; 12, 15, 17 rejected', () => {
    accepts('Decrypt', { ...clone(SPEC_EXAMPLES.Decrypt), authenticationTag: b64(16) });
    for (const bytes of [0, 12, 15, 17, 32]) {
      rejects('Decrypt', { ...clone(SPEC_EXAMPLES.Decrypt), authenticationTag: b64(bytes) });
    }
  });

  test('plaintext and ciphertext up to the spec minimum (4300 bytes), AAD up to 8192 bytes', () => {
    accepts('Encrypt', {
      ...clone(SPEC_EXAMPLES.Encrypt),
      plaintext: b64(4300),
      additionalAuthenticatedData: b64(8192),
    });
    accepts('Decrypt', {
      ...clone(SPEC_EXAMPLES.Decrypt),
      ciphertext: b64(4300),
      additionalAuthenticatedData: b64(8192),
    });
  });
});

describe('what KMS may add must be accepted (spec: kmsOperation; Appendix B)', () => {
  test("unknown kmsOperation ('BulkEncrypt')", () => {
    for (const operation of OPERATIONS) {
      const body = clone(SPEC_EXAMPLES[operation]);
      metadataOf(body).kmsOperation = operation === 'Decrypt' ? 'BulkDecrypt' : 'BulkEncrypt';
      accepts(operation, body);
    }
  });

  test('extra requestMetadata fields', () => {
    for (const operation of OPERATIONS) {
      const body = clone(SPEC_EXAMPLES[operation]);
      Object.assign(metadataOf(body), {
        SourceIdentity: 'alice',
        kmsRecipientAttestationImageSha384: 'ab'.repeat(48),
        kmsRecipientAttestationPCR0: 'cd'.repeat(48),
        tags: { project: 'nile' },
      });
      accepts(operation, body);
    }
  });

  test('extra top-level fields', () => {
    for (const operation of OPERATIONS) {
      accepts(operation, {
        ...clone(SPEC_EXAMPLES[operation]),
        futureField: 'x',
        another: { nested: [1, 2] },
      });
    }
  });

  test('kmsRequestId is opaque: any string', () => {
    for (const id of ['', 'not-a-uuid', 'ÄÖÜ 🙂', 'x'.repeat(1000)]) {
      const body = clone(SPEC_EXAMPLES.Encrypt);
      metadataOf(body).kmsRequestId = id;
      accepts('Encrypt', body);
    }
  });

  test('ARNs of 2048 characters', () => {
    const arn = (prefix: string) => prefix + 'x'.repeat(2048 - prefix.length);
    const principal = arn('arn:aws:iam::123456789012:role/');
    const keyArn = arn('arn:aws:kms:us-east-2:123456789012:key/');
    assert.equal(principal.length, 2048);
    for (const operation of ['GetKeyMetadata', 'Encrypt', 'Decrypt'] as const) {
      const body = clone(SPEC_EXAMPLES[operation]);
      Object.assign(metadataOf(body), { awsPrincipalArn: principal, kmsKeyArn: keyArn });
      accepts(operation, body);
    }
  });
});

describe('error messages', () => {
  test('never contain the field values', () => {
    const secretPlaintext = 'U2VjcmV0UGxhaW50ZXh0IQ-_';
    rejects('Encrypt', { ...clone(SPEC_EXAMPLES.Encrypt), plaintext: secretPlaintext }, [
      secretPlaintext,
      'U2VjcmV0UGxhaW50ZXh0',
    ]);
    const secretAad = 'c2VjcmV0_IGFhZA==';
    rejects('Encrypt', { ...clone(SPEC_EXAMPLES.Encrypt), additionalAuthenticatedData: secretAad }, [
      secretAad,
    ]);
    rejects('Decrypt', { ...clone(SPEC_EXAMPLES.Decrypt), ciphertext: 987654321 }, ['987654321']);
    const iv = b64(13);
    rejects('Decrypt', { ...clone(SPEC_EXAMPLES.Decrypt), initializationVector: iv }, [iv]);
    const body = clone(SPEC_EXAMPLES.Encrypt);
    metadataOf(body).awsPrincipalArn = 424242;
    rejects('Encrypt', body, ['424242']);
  });

  test('name the field that failed', () => {
    assert.throws(
      () => validatorFor('Decrypt')({ ...clone(SPEC_EXAMPLES.Decrypt), authenticationTag: b64(12) }),
      (err: unknown) => err instanceof XksError && err.message.includes('authenticationTag'),
    );
    const body = clone(SPEC_EXAMPLES.Encrypt);
    delete metadataOf(body).kmsKeyArn;
    assert.throws(
      () => validatorFor('Encrypt')(body),
      (err: unknown) => err instanceof XksError && err.message.includes('kmsKeyArn'),
    );
  });
});
