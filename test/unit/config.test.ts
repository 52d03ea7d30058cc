// Configuration validation (spec: Appendix A credential rules; XksProxyUriPath rules; GetHealthStatus
// cache age; "XKS proxy configuration in AWS KMS console").
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, test } from 'node:test';
import { ConfigError, DEMO_CREDENTIAL, LOCAL_SERVER_LIMITS, parseConfig } from '../../functions/config.ts';
import { DEFAULT_LIMITS, NODE_FLAGS } from '../../local/server.ts';

const ACCESS_KEY_ID = 'XKSPROXYTESTACCESSKEY23456'; // 26 characters of A-Z2-7
const SECRET = 'eGtzLXByb3h5IHVuaXQgdGVzdCBzZWNyZXQsIDMyIGI='; // 44 characters of Base64
const PIN = 'pin-7Qz!unit';

type Json = Record<string, unknown>;

function minimal(): Json {
  return {
    hsm: { modulePath: '/usr/lib/softhsm/libsofthsm2.so', tokenLabel: 't', pin: '1234' },
    keystores: [
      {
        name: 'a',
        pathPrefix: '/a',
        credentials: [{ accessKeyId: ACCESS_KEY_ID, secretAccessKey: SECRET }],
        keys: ['foo'],
      },
    ],
  };
}

/** The minimal config with a distinctive PIN, changed by `change`. */
function variant(change: (config: Json & { hsm: Json; keystores: Json[] }) => void): Json {
  const config = minimal() as Json & { hsm: Json; keystores: Json[] };
  config.hsm.pin = PIN;
  change(config);
  return config;
}

function keystore(config: { keystores: Json[] }, i = 0): Json & { credentials: Json[]; keys: string[] } {
  return config.keystores[i] as Json & { credentials: Json[]; keys: string[] };
}

/** Fails with ConfigError, and the message repeats no secret, PIN or `hidden` value. */
function assertConfigError(
  input: unknown,
  env: NodeJS.ProcessEnv = {},
  hidden: readonly string[] = [],
): void {
  assert.throws(
    () => parseConfig(input, env),
    (err: unknown) => {
      assert.ok(err instanceof ConfigError, `expected a ConfigError, got ${String(err)}`);
      assert.equal(err.name, 'ConfigError');
      assert.match(err.message, /^Invalid XKS proxy configuration: ./);
      for (const value of [SECRET, PIN, '1234', DEMO_CREDENTIAL.secretAccessKey, ...hidden]) {
        assert.ok(!err.message.includes(value), 'the message repeats a secret or PIN');
      }
      return true;
    },
  );
}

describe('a valid configuration', () => {
  test('the minimal one parses and gets its defaults', () => {
    const config = parseConfig(minimal(), {});
    assert.equal(config.healthCheck.cacheSeconds, 10);
    assert.equal(config.proxy.fleetSize, 1);
    assert.equal(config.hsm.healthCheckKeyLabel, 'xks-health-check');
    assert.equal(config.hsm.pin, '1234');
    assert.equal(config.hsm.modulePath, '/usr/lib/softhsm/libsofthsm2.so');
    assert.equal(typeof config.hsm.keyCacheSeconds, 'number');
    assert.equal(typeof config.healthCheck.degradedAboveMs, 'number');
    assert.ok(config.proxy.vendor.length > 0 && config.proxy.model.length > 0);
    assert.deepEqual(config.keystores, minimal().keystores);
  });

  test('the input object is left as it was', () => {
    const input = minimal();
    parseConfig(input, {});
    assert.deepEqual(input, minimal());
  });

  test('given values override the defaults', () => {
    const config = parseConfig(
      variant((c) => {
        c.healthCheck = { cacheSeconds: 60 };
        c.proxy = { fleetSize: 3 };
        c.hsm.healthCheckKeyLabel = 'health';
      }),
      {},
    );
    assert.equal(config.healthCheck.cacheSeconds, 60);
    assert.equal(config.proxy.fleetSize, 3);
    assert.equal(config.hsm.healthCheckKeyLabel, 'health');
  });

  test('XKS_HSM_PIN overrides hsm.pin, and replaces a missing one', () => {
    assert.equal(parseConfig(minimal(), { XKS_HSM_PIN: PIN }).hsm.pin, PIN);
    const withoutPin = variant((c) => {
      delete c.hsm.pin;
    });
    assert.equal(parseConfig(withoutPin, { XKS_HSM_PIN: PIN }).hsm.pin, PIN);
  });

  test('boundaries that must pass: access key ids of 20 and 30, secrets of 43 and 64, URI path of 128', () => {
    for (const accessKeyId of [
      'A'.repeat(20),
      '7'.repeat(30),
      'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567'.slice(0, 30),
    ]) {
      parseConfig(
        variant((c) => {
          keystore(c).credentials = [{ accessKeyId, secretAccessKey: SECRET }];
        }),
        {},
      );
    }
    for (const secretAccessKey of ['a'.repeat(43), `${'Zz09/+='.repeat(9)}z`, 'b'.repeat(64)]) {
      parseConfig(
        variant((c) => {
          keystore(c).credentials = [{ accessKeyId: ACCESS_KEY_ID, secretAccessKey }];
        }),
        {},
      );
    }
    const prefix = `/${'p'.repeat(116)}`; // + '/kms/xks/v1' = 128 characters
    assert.equal(`${prefix}/kms/xks/v1`.length, 128);
    parseConfig(
      variant((c) => {
        keystore(c).pathPrefix = prefix;
      }),
      {},
    );
  });

  test("an empty path prefix, multi-segment prefixes and the spec's configuration file example", () => {
    const config = parseConfig(
      variant((c) => {
        c.keystores = [
          { ...keystore(c), name: 'root', pathPrefix: '' },
          { ...keystore(c), name: 'nested', pathPrefix: '/a_b/c-D/9', credentials: [] },
          {
            name: 'console-example',
            pathPrefix: '/keystores/4a0d79d6-1d1b-49fd-9dbe-799cb9c0fb3f',
            credentials: [
              {
                accessKeyId: 'AKIAI2SFODNN7EXAMPLE',
                secretAccessKey: 'FYtE5EFA5FT0mCc3DrGUe2sti527BitkQ0Zr9MO9fvE',
              },
            ],
            keys: ['foo'],
          },
        ];
        keystore(c, 1).credentials = [{ accessKeyId: 'B'.repeat(20), secretAccessKey: SECRET }];
      }),
      {},
    );
    assert.deepEqual(
      config.keystores.map((k) => k.pathPrefix),
      ['', '/a_b/c-D/9', '/keystores/4a0d79d6-1d1b-49fd-9dbe-799cb9c0fb3f'],
    );
  });

  test('two credentials per key store (rotation)', () => {
    const config = parseConfig(
      variant((c) => {
        keystore(c).credentials.push({ accessKeyId: 'B'.repeat(26), secretAccessKey: 'c'.repeat(44) });
      }),
      {},
    );
    assert.equal(config.keystores[0]?.credentials?.length, 2);
  });
});

describe('invalid configurations fail with ConfigError, without secrets in the message', () => {
  test('no PIN anywhere', () => {
    const withoutPin = variant((c) => {
      delete c.hsm.pin;
    });
    assertConfigError(withoutPin, {});
    assertConfigError(withoutPin, { XKS_HSM_PIN: '' });
  });

  test('bad access key ids: lowercase, 19 chars, 31 chars, containing 1 (or 0, 8, 9)', () => {
    for (const accessKeyId of [
      ACCESS_KEY_ID.toLowerCase(),
      `${ACCESS_KEY_ID.slice(0, 25)}a`,
      'A'.repeat(19),
      'A'.repeat(31),
      `${ACCESS_KEY_ID.slice(0, 25)}1`,
      `${ACCESS_KEY_ID.slice(0, 25)}0`,
      `${ACCESS_KEY_ID.slice(0, 25)}8`,
      `${ACCESS_KEY_ID.slice(0, 25)}9`,
      `${ACCESS_KEY_ID.slice(0, 25)}-`,
      '',
    ]) {
      assertConfigError(
        variant((c) => {
          keystore(c).credentials = [{ accessKeyId, secretAccessKey: SECRET }];
        }),
      );
    }
  });

  test("bad secrets: 42 chars, 65 chars, a '-' or '_' char, a space", () => {
    for (const secretAccessKey of [
      SECRET.slice(0, 42),
      'a'.repeat(65),
      `${SECRET.slice(0, 20)}-${SECRET.slice(21)}`,
      `${SECRET.slice(0, 20)}_${SECRET.slice(21)}`,
      `${SECRET.slice(0, 20)} ${SECRET.slice(21)}`,
    ]) {
      assert.ok(secretAccessKey !== SECRET);
      assertConfigError(
        variant((c) => {
          keystore(c).credentials = [{ accessKeyId: ACCESS_KEY_ID, secretAccessKey }];
        }),
        {},
        [secretAccessKey, secretAccessKey.slice(0, 30)],
      );
    }
  });

  test("path prefixes with '.', a trailing '/', no leading '/', or other characters", () => {
    for (const pathPrefix of [
      '/a.b',
      '/a/./b',
      '/..',
      '/a/',
      '/',
      'a',
      '/a//b',
      '/a b',
      '/a%20b',
      '/a?b',
      '/kms!',
    ]) {
      assertConfigError(
        variant((c) => {
          keystore(c).pathPrefix = pathPrefix;
        }),
      );
    }
  });

  test('a prefix that makes the URI path longer than 128 characters', () => {
    const prefix = `/${'p'.repeat(117)}`;
    assert.equal(`${prefix}/kms/xks/v1`.length, 129);
    assertConfigError(
      variant((c) => {
        keystore(c).pathPrefix = prefix;
      }),
    );
  });

  test('two key stores with the same path prefix', () => {
    assertConfigError(
      variant((c) => {
        c.keystores.push({ ...keystore(c), name: 'b' });
      }),
    );
  });

  test('the same access key id twice in a key store', () => {
    assertConfigError(
      variant((c) => {
        keystore(c).credentials.push({ accessKeyId: ACCESS_KEY_ID, secretAccessKey: 'd'.repeat(44) });
      }),
      {},
      ['d'.repeat(44)],
    );
  });

  test('the health-check key listed as a customer key', () => {
    assertConfigError(
      variant((c) => {
        keystore(c).keys.push('xks-health-check');
      }),
    );
    assertConfigError(
      variant((c) => {
        c.hsm.healthCheckKeyLabel = 'foo';
      }),
    );
  });

  test('healthCheck.cacheSeconds 61 (the spec: never older than one minute)', () => {
    assertConfigError(
      variant((c) => {
        c.healthCheck = { cacheSeconds: 61 };
      }),
    );
    assertConfigError(
      variant((c) => {
        c.healthCheck = { cacheSeconds: -1 };
      }),
    );
  });

  test('other structural errors', () => {
    const cases: Array<(c: Json & { hsm: Json; keystores: Json[] }) => void> = [
      (c) => {
        c.keystores = [];
      },
      (c) => {
        delete (c as Json).hsm;
      },
      (c) => {
        c.hsm.modulePath = 'relative/libsofthsm2.so';
      },
      (c) => {
        c.unknownField = true;
      },
      (c) => {
        keystore(c).credentials = [];
      },
      (c) => {
        keystore(c).keys = ['foo', 'foo'];
      },
      (c) => {
        keystore(c).keys = ['bad/key'];
      },
      (c) => {
        keystore(c).keys = ['k'.repeat(129)];
      },
      (c) => {
        c.proxy = { fleetSize: 0 };
      },
      (c) => {
        c.proxy = { fleetSize: 1.5 };
      },
      (c) => {
        c.hsm.pin = 1234;
      },
    ];
    for (const change of cases) assertConfigError(variant(change));
    assertConfigError(null);
    assertConfigError('{}');
  });

  test('a PIN that fails validation is not repeated in the message', () => {
    assertConfigError(
      variant((c) => {
        c.hsm.pin = ['pin-in-an-array'];
      }),
      {},
      ['pin-in-an-array'],
    );
  });
});

describe('the public demo credential', () => {
  const withDemo = () =>
    variant((c) => {
      keystore(c).credentials = [{ ...DEMO_CREDENTIAL }];
    });

  test('is accepted locally (no AWS_LAMBDA_FUNCTION_NAME)', () => {
    const config = parseConfig(withDemo(), {});
    assert.deepEqual(config.keystores[0]?.credentials, [DEMO_CREDENTIAL]);
  });

  test('is refused in Lambda (AWS_LAMBDA_FUNCTION_NAME set)', () => {
    assertConfigError(withDemo(), { AWS_LAMBDA_FUNCTION_NAME: 'x' });
  });

  test('is refused in Lambda next to a real credential too', () => {
    assertConfigError(
      variant((c) => {
        keystore(c).credentials.push({ ...DEMO_CREDENTIAL });
      }),
      { AWS_LAMBDA_FUNCTION_NAME: 'x' },
    );
    // Control: the real credential alone is fine in Lambda.
    parseConfig(minimal(), { AWS_LAMBDA_FUNCTION_NAME: 'x' });
  });

  test('its public secret is refused in Lambda under any access key id', () => {
    assertConfigError(
      variant((c) => {
        keystore(c).credentials = [
          { accessKeyId: ACCESS_KEY_ID, secretAccessKey: DEMO_CREDENTIAL.secretAccessKey },
        ];
      }),
      { AWS_LAMBDA_FUNCTION_NAME: 'x' },
    );
  });
});

describe('HSM robustness settings', () => {
  test('defaults: the SoftHSM profile, a 100 ms call deadline, a 5 s first connection', () => {
    const config = parseConfig(minimal(), {});
    assert.equal(config.hsm.profile, 'softhsm');
    assert.equal(config.hsm.callTimeoutMs, 100);
    assert.equal(config.hsm.startTimeoutMs, 5000);
    assert.equal(config.hsm.fleet, undefined);
  });

  test('a fleet of up to ten HSMs, each with its own token, PIN source and profile', () => {
    const members = Array.from({ length: 10 }, (_, i) => ({
      name: `hsm-${i}`,
      tokenLabel: `t${i}`,
      ...(i % 2 ? { pinSecretArn: `arn:aws:secretsmanager:eu-west-1:1:secret:p${i}` } : {}),
      profile: ['softhsm', 'nss', 'cloudhsm', 'luna', 'nshield'][i % 5],
    }));
    const config = parseConfig(
      variant((c) => {
        c.hsm.fleet = members;
      }),
      {},
    );
    assert.equal(config.hsm.fleet?.length, 10);
    // Spec (GetHealthStatus): no more than ten ekmFleetDetails entries.
    assertConfigError(
      variant((c) => {
        c.hsm.fleet = [...members, { name: 'eleventh' }];
      }),
    );
  });

  test('refused: two HSMs of one name, an unknown profile, a relative module path, a 0 ms deadline', () => {
    assertConfigError(
      variant((c) => {
        c.hsm.fleet = [{ name: 'a' }, { name: 'a', tokenLabel: 'other' }];
      }),
    );
    assertConfigError(
      variant((c) => {
        c.hsm.profile = 'acme';
      }),
    );
    assertConfigError(
      variant((c) => {
        c.hsm.fleet = [{ name: 'a', modulePath: 'lib/x.so' }];
      }),
    );
    assertConfigError(
      variant((c) => {
        c.hsm.callTimeoutMs = 0;
      }),
    );
  });

  test('libraryParameters: a C_Initialize string, for the section and each HSM; one library, one set of them', () => {
    const nss = "configdir='sql:/var/lib/xks' dbTokenDescription='xks'";
    const config = parseConfig(
      variant((c) => {
        c.hsm.libraryParameters = nss;
        c.hsm.profile = 'nss';
        c.hsm.fleet = [
          { name: 'a' },
          { name: 'b', modulePath: '/opt/lib/other.so', libraryParameters: 'x=1' },
        ];
      }),
      {},
    );
    assert.equal(config.hsm.libraryParameters, nss);
    assert.equal(config.hsm.fleet?.[1]?.libraryParameters, 'x=1');
    assert.equal(parseConfig(minimal(), {}).hsm.libraryParameters, undefined);
    // A NUL would end the C string early; an empty string is no parameters.
    for (const bad of ['a\u0000b', '']) {
      assertConfigError(
        variant((c) => {
          c.hsm.libraryParameters = bad;
        }),
      );
      assertConfigError(
        variant((c) => {
          c.hsm.fleet = [{ name: 'a', libraryParameters: bad }];
        }),
      );
    }
    // A library is initialised once per process: its HSMs cannot each have their own parameters.
    for (const fleet of [
      [{ name: 'a' }, { name: 'b', libraryParameters: 'other' }],
      [
        { name: 'a', libraryParameters: 'one' },
        { name: 'b', libraryParameters: 'two' },
      ],
    ]) {
      assert.throws(
        () =>
          parseConfig(
            variant((c) => {
              c.hsm.libraryParameters = nss;
              c.hsm.fleet = fleet;
            }),
            {},
          ),
        /HSM 'b': .* is initialised once per process, so every HSM it serves needs the same libraryParameters/,
      );
    }
  });

  test("awsSampleProxy: canonical Base64 of at most 20 bytes, or '' for none", () => {
    for (const ciphertextMetadata of ['', 'AQ==', 'c2FtcGxl', Buffer.alloc(20, 7).toString('base64')]) {
      const config = parseConfig(
        variant((c) => {
          keystore(c).awsSampleProxy = { ciphertextMetadata };
        }),
        {},
      );
      assert.equal(config.keystores[0]?.awsSampleProxy?.ciphertextMetadata, ciphertextMetadata);
    }
    for (const ciphertextMetadata of ['AR==', 'not base64!', Buffer.alloc(21, 7).toString('base64')]) {
      assertConfigError(
        variant((c) => {
          keystore(c).awsSampleProxy = { ciphertextMetadata };
        }),
      );
    }
  });
});

test("localServer takes exactly the local server's limits (config.ts cannot import local/server.ts)", () => {
  assert.deepEqual([...LOCAL_SERVER_LIMITS].sort(), Object.keys(DEFAULT_LIMITS).sort());
});

test('npm start runs the local server with its V8 flags (local/server.ts NODE_FLAGS), as the benchmarks do', () => {
  const start = (
    JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as {
      scripts: Record<string, string>;
    }
  ).scripts.start as string;
  assert.match(start, new RegExp(` node ${NODE_FLAGS.join(' ')} local/main\\.ts$`));
});

describe('audit key and revocation switch', () => {
  test('each optional; one source each; a revocation cache of at most 10 s, 5 s by default', () => {
    const config = parseConfig(
      variant((c) => {
        c.audit = { keySecretArn: 'arn:aws:secretsmanager:eu-west-1:111122223333:secret:xks/audit' };
        c.revocation = { secretArn: 'arn:aws:secretsmanager:eu-west-1:111122223333:secret:xks/revocation' };
      }),
      {},
    );
    assert.equal(config.revocation?.cacheSeconds, 5);
    assert.equal(parseConfig(minimal(), {}).revocation, undefined);
    assert.equal(
      parseConfig(
        variant((c) => (c.revocation = { file: '/x', cacheSeconds: 10 })),
        {},
      ).revocation?.cacheSeconds,
      10,
    );
    for (const bad of [
      (c: Json) => (c.audit = {}),
      (c: Json) => (c.audit = { keyFile: '/k', keySecretArn: 'arn' }),
      (c: Json) => (c.audit = { key: 'inline keys are not accepted' }),
      (c: Json) => (c.revocation = {}),
      (c: Json) => (c.revocation = { file: '/x', secretArn: 'arn' }),
      (c: Json) => (c.revocation = { file: '/x', cacheSeconds: 11 }),
    ]) {
      assertConfigError(variant(bad));
    }
  });
});
