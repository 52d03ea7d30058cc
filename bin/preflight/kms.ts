// What AWS KMS makes of what the proxy does: its 250 ms budget, and the exception each failure
// shows as (spec: "Error codes", KMS considerations: the failure scenario table).
import { type Check, ms } from './report.ts';

/** KMS's timeout for any call, connection included (spec: KMS considerations of every API). */
export const KMS_BUDGET_MS = 250;
/** Above this a call is close enough to the budget to warn. */
export const WARN_MS = 150;

/** The KMS operation a check stands for: the same failure shows as a different exception in each. */
export type KmsContext = 'customKeyStore' | 'createKey' | 'crypto';

interface Scenario {
  customKeyStore?: string;
  createKey?: string;
  crypto?: string;
  message: string;
}

const CONTEXT_OPERATIONS: Record<KmsContext, string> = {
  customKeyStore: 'CreateCustomKeyStore, UpdateCustomKeyStore',
  createKey: 'CreateKey',
  crypto: 'cryptographic operations (Encrypt, Decrypt, GenerateDataKey, ReEncrypt)',
};

const CKS_STATE = 'CustomKeyStoreInvalidStateException';
const KMS_STATE = 'KMSInvalidStateException';
const CANNOT_INTERPRET =
  'AWS KMS cannot interpret the response from the external key store proxy. If you see this error repeatedly, report it to your external key store proxy administrator.';

/** The spec's table, row by row (keyed by the proxy's errorName, or by the network failure). */
export const KMS_SCENARIOS = {
  ValidationException: {
    customKeyStore: 'XksProxyInvalidResponseException',
    createKey: CKS_STATE,
    crypto: KMS_STATE,
    message: CANNOT_INTERPRET,
  },
  InvalidStateException: {
    createKey: 'XksKeyInvalidConfigurationException',
    crypto: KMS_STATE,
    message:
      'The external key associated with this KMS key in an external key store is not enabled in the external key manager. Enable the external key in the external key manager and retry the request.',
  },
  InvalidCiphertextException: {
    crypto: KMS_STATE,
    message:
      'The external key store proxy rejected the request because the specified ciphertext or encryption context is corrupted, missing, or otherwise invalid.',
  },
  invalidCiphertext: {
    crypto: KMS_STATE,
    message:
      'The ciphertext that the external key store proxy submitted for decryption, or the encryption context, is corrupted, missing, or otherwise invalid.',
  },
  InvalidKeyUsageException: {
    createKey: 'XksKeyInvalidConfigurationException',
    crypto: KMS_STATE,
    message:
      'The external key associated with this KMS key in an external key store does not support the requested operation. Enable the operation on the key in your external key manager, and try the request again.',
  },
  AuthenticationFailedException: {
    customKeyStore: 'XksProxyIncorrectAuthenticationCredentialException',
    createKey: CKS_STATE,
    crypto: KMS_STATE,
    message:
      'The external key store proxy rejected the request because it could not authenticate AWS KMS. Verify the XKS proxy authentication credentials for your external key store and update if necessary.',
  },
  AccessDeniedException: {
    createKey: KMS_STATE,
    crypto: KMS_STATE,
    message:
      'The external key store proxy denied access to the operation. Verify that the user and the external key are both authorized for this operation, and try the request again.',
  },
  KeyNotFoundException: {
    createKey: 'XksKeyNotFoundException',
    crypto: KMS_STATE,
    message:
      'The external key associated with this KMS key in an external key store was not found in its external key manager. If the external key ID associated with this KMS key is incorrect, create a new KMS key with the correct external key ID.',
  },
  InvalidUriPathException: {
    customKeyStore: 'XksProxyInvalidConfigurationException',
    createKey: CKS_STATE,
    crypto: KMS_STATE,
    message:
      'The external key store proxy rejected the request because of an invalid URI path. Verify the URI path for your external key store and update if necessary.',
  },
  UnsupportedOperationException: {
    createKey: 'XksKeyInvalidResponseException',
    crypto: KMS_STATE,
    message:
      'The external key store proxy rejected the request because it does not support the requested operation. If you see this error repeatedly, report it to your external key store proxy administrator.',
  },
  DependencyTimeoutException: {
    customKeyStore: 'XksProxyUriUnreachableException',
    createKey: CKS_STATE,
    crypto: KMS_STATE,
    message:
      'The external key store proxy did not respond to the request in the time allotted. Retry the request. If you see this error repeatedly, report it to your external key store proxy administrator.',
  },
  ThrottlingException: {
    customKeyStore: 'XksProxyUriUnreachableException',
    createKey: CKS_STATE,
    crypto: KMS_STATE,
    message:
      'The external key store proxy rejected the request due to a very high request rate. Reduce the frequency of your calls using KMS keys in this external key store.',
  },
  InternalException: {
    customKeyStore: 'XksProxyInvalidResponseException',
    createKey: CKS_STATE,
    crypto: KMS_STATE,
    message:
      'The external key store proxy rejected the request because it cannot communicate with the external key manager. Verify that the external key store proxy configuration is correct and that the external key manager is available.',
  },
  tcp: {
    customKeyStore: 'XksProxyUriUnreachableException',
    createKey: CKS_STATE,
    crypto: KMS_STATE,
    message:
      'AWS KMS cannot communicate with the external key store proxy. This might be a transient network issue. If you see this error repeatedly, verify that your external key store proxy is active and is connected to the network, and that its endpoint URI is correct in your external keystore.',
  },
  tls: {
    customKeyStore: 'XksProxyUriUnreachableException',
    createKey: CKS_STATE,
    crypto: KMS_STATE,
    message:
      'AWS KMS cannot establish a TLS connection to the external key store proxy. Verify the TLS configuration, including its certificate.',
  },
  timeout: {
    customKeyStore: 'XksProxyUriUnreachableException',
    createKey: CKS_STATE,
    crypto: KMS_STATE,
    message:
      'AWS KMS rejected the request because the external key store proxy did not respond in time. Retry the request. If you see this error repeatedly, report it to your external key store proxy administrator.',
  },
  malformed: {
    customKeyStore: 'XksProxyInvalidResponseException',
    createKey: CKS_STATE,
    crypto: KMS_STATE,
    message: CANNOT_INTERPRET,
  },
  // Not in the spec's table; from the KMS API reference.
  allUnavailable: {
    customKeyStore: 'XksProxyUriUnreachableException',
    message:
      'GetHealthStatus reports every external key manager UNAVAILABLE: KMS does not connect the key store (KMS API reference, XksProxyUriUnreachableException).',
  },
  keyConfiguration: {
    createKey: 'XksKeyInvalidConfigurationException',
    message:
      'The external key must be an AES-256 symmetric key that is enabled and performs encryption and decryption (spec: GetKeyMetadata, KMS considerations).',
  },
  parameters: {
    customKeyStore: 'ValidationException',
    message:
      'The value does not satisfy the constraints of the KMS API parameters (XksProxyUriEndpoint, XksProxyUriPath, XksProxyAuthenticationCredential): KMS refuses it before calling the proxy.',
  },
  keyParameters: {
    createKey: 'ValidationException',
    message:
      'The external key id does not satisfy the constraints of XksKeyId, or makes a URI longer than 256 characters: CreateKey refuses it.',
  },
} satisfies Record<string, Scenario>;

export type ScenarioName = keyof typeof KMS_SCENARIOS;

/**
 * The exception fields of a check: the exception of the KMS operation the check stands for, else
 * the row's first one; kmsOperation names where that exception shows, then the row's others.
 */
export function kmsOutcome(
  scenario: ScenarioName,
  context: KmsContext,
): Pick<Check, 'kmsException' | 'kmsOperation' | 'kmsMessage'> {
  const row: Scenario = KMS_SCENARIOS[scenario];
  const contexts: KmsContext[] = ['customKeyStore', 'createKey', 'crypto'];
  const chosen = [context, ...contexts].find((ctx) => row[ctx] !== undefined);
  if (chosen === undefined) return { kmsMessage: row.message };
  const name = row[chosen] as string;
  const same = contexts.filter((ctx) => row[ctx] === name).map((ctx) => CONTEXT_OPERATIONS[ctx]);
  const others = contexts
    .filter((ctx) => row[ctx] !== undefined && row[ctx] !== name)
    .map((ctx) => `${row[ctx]} in ${CONTEXT_OPERATIONS[ctx]}`);
  return {
    kmsException: name,
    kmsOperation: [same.join(', '), ...others].join('; '),
    kmsMessage: row.message,
  };
}

export function isScenario(name: string): name is ScenarioName {
  return Object.hasOwn(KMS_SCENARIOS, name) && /^[A-Z]/.test(name);
}

/**
 * Judges the time of a call on a fresh connection: over KMS's budget KMS gives up (a socket
 * timeout), so the check fails; near it, a warning. A check that already fails keeps its reason.
 */
export function withTiming(check: Check, reply: { ms: number }, context: KmsContext): Check {
  if (check.status === 'fail' || reply.ms <= WARN_MS) return check;
  const over = reply.ms > KMS_BUDGET_MS;
  if (!over && check.status === 'warn') return check;
  return {
    ...check,
    status: over ? 'fail' : 'warn',
    detail: `${check.detail}; took ${ms(reply.ms)} on a fresh connection: ${over ? 'over' : 'close to'} KMS's ${KMS_BUDGET_MS} ms budget`,
    ...kmsOutcome('timeout', context),
  };
}
