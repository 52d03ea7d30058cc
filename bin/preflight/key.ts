// An external key, with --key: GetKeyMetadata as CreateKey needs it, then an Encrypt/Decrypt round
// trip with a CDIV (spec: GetKeyMetadata, Encrypt, Decrypt; Appendix C).
import { createHash, randomBytes, randomUUID } from 'node:crypto';
import { kmsOutcome, withTiming } from './kms.ts';
import { decodeBase64, failedReply, successJson } from './replies.ts';
import { type Check, ms } from './report.ts';
import { type ApiContext, signedCall } from './requests.ts';

function metadataRequest(api: ApiContext): string {
  return JSON.stringify({
    requestMetadata: {
      awsPrincipalArn: api.principalArn,
      kmsOperation: 'CreateKey',
      kmsRequestId: randomUUID(),
    },
  });
}

export async function metadataCheck(api: ApiContext, key: string): Promise<Check> {
  const id = 'key.metadata';
  const title = 'GetKeyMetadata: AES_256, ENCRYPT and DECRYPT, ENABLED (what CreateKey needs)';
  const reply = await signedCall(api, `keys/${key}/metadata`, metadataRequest(api));
  if (!reply.ok || reply.status !== 200) return failedReply(id, title, reply, 'createKey', 'GetKeyMetadata');
  const parsed = successJson(reply);
  if ('problem' in parsed) {
    return { id, title, status: 'fail', detail: parsed.problem, ...kmsOutcome('malformed', 'createKey') };
  }
  const { keySpec, keyUsage, keyStatus } = parsed.body;
  const problems: string[] = [];
  if (typeof keySpec !== 'string') problems.push('keySpec is not a string');
  if (!Array.isArray(keyUsage) || !keyUsage.every((u) => typeof u === 'string')) {
    problems.push('keyUsage is not an array of strings');
  } else if (keyUsage.length > 10) problems.push(`keyUsage has ${keyUsage.length} values; at most 10`);
  if (keyStatus !== 'ENABLED' && keyStatus !== 'DISABLED')
    problems.push('keyStatus is not ENABLED or DISABLED');
  if (problems.length > 0) {
    return {
      id,
      title,
      status: 'fail',
      detail: problems.join('; '),
      ...kmsOutcome('malformed', 'createKey'),
    };
  }
  const usage = keyUsage as string[];
  const summary = `${keySpec}, [${usage.join(', ')}], ${keyStatus}`;
  const unfit: string[] = [];
  if (keySpec !== 'AES_256') unfit.push(`keySpec is ${keySpec}, not AES_256`);
  for (const needed of ['ENCRYPT', 'DECRYPT'])
    if (!usage.includes(needed)) unfit.push(`keyUsage lacks ${needed}`);
  if (keyStatus !== 'ENABLED') unfit.push(`keyStatus is ${keyStatus}`);
  if (unfit.length > 0) {
    return {
      id,
      title,
      status: 'fail',
      detail: `${summary}: ${unfit.join('; ')}`,
      ...kmsOutcome('keyConfiguration', 'createKey'),
    };
  }
  return withTiming(
    { id, title, status: 'pass', detail: `${summary} (${ms(reply.ms)})` },
    reply,
    'createKey',
  );
}

interface EncryptOutput {
  ciphertext: string;
  ciphertextMetadata?: string;
  initializationVector: string;
  authenticationTag: string;
}

/** Appendix C: SHA-256 over AAD || ciphertextMetadata || IV || ciphertext || tag, Base64. */
export function cdiv(
  aad: Buffer,
  output: { metadata: Buffer; iv: Buffer; ciphertext: Buffer; tag: Buffer },
): string {
  return createHash('sha256')
    .update(aad)
    .update(output.metadata)
    .update(output.iv)
    .update(output.ciphertext)
    .update(output.tag)
    .digest('base64');
}

export async function roundTripChecks(api: ApiContext, key: string): Promise<Check[]> {
  const encryptTitle = 'Encrypt with a CDIV: fields, sizes and CDIV as the spec requires';
  const decryptTitle = 'Decrypt returns the plaintext';
  const plaintext = randomBytes(32);
  const aad = randomBytes(24);
  const reply = await signedCall(
    api,
    `keys/${key}/encrypt`,
    JSON.stringify({
      requestMetadata: {
        awsPrincipalArn: api.principalArn,
        kmsKeyArn: api.kmsKeyArn,
        kmsOperation: 'GenerateDataKey',
        kmsRequestId: randomUUID(),
      },
      plaintext: plaintext.toString('base64'),
      additionalAuthenticatedData: aad.toString('base64'),
      encryptionAlgorithm: 'AES_GCM',
      ciphertextDataIntegrityValueAlgorithm: 'SHA_256',
    }),
  );
  if (!reply.ok || reply.status !== 200)
    return [failedReply('key.encrypt', encryptTitle, reply, 'crypto', 'Encrypt')];
  const parsed = successJson(reply);
  if ('problem' in parsed) {
    return [
      {
        id: 'key.encrypt',
        title: encryptTitle,
        status: 'fail',
        detail: parsed.problem,
        ...kmsOutcome('malformed', 'crypto'),
      },
    ];
  }
  const body = parsed.body;
  const problems: string[] = [];
  const ciphertext = decodeBase64(body.ciphertext);
  const iv = decodeBase64(body.initializationVector);
  const tag = decodeBase64(body.authenticationTag);
  const metadata =
    body.ciphertextMetadata === undefined ? Buffer.alloc(0) : decodeBase64(body.ciphertextMetadata);
  const integrity = decodeBase64(body.ciphertextDataIntegrityValue);
  if (ciphertext === undefined) problems.push('ciphertext is missing or not standard Base64');
  else if (ciphertext.length !== plaintext.length) {
    problems.push(`ciphertext is ${ciphertext.length} bytes for ${plaintext.length} of plaintext`);
  }
  if (iv === undefined) problems.push('initializationVector is missing or not standard Base64');
  else if (iv.length !== 12 && iv.length !== 16)
    problems.push(`initializationVector is ${iv.length} bytes, not 12 or 16`);
  if (tag === undefined) problems.push('authenticationTag is missing or not standard Base64');
  else if (tag.length !== 16) problems.push(`authenticationTag is ${tag.length} bytes, not 16`);
  if (metadata === undefined) problems.push('ciphertextMetadata is not standard Base64');
  else if (metadata.length > 20) problems.push(`ciphertextMetadata is ${metadata.length} bytes; at most 20`);
  if (integrity === undefined)
    problems.push('ciphertextDataIntegrityValue is missing or not standard Base64 although requested');
  if (problems.length === 0 && ciphertext && iv && tag && metadata && integrity) {
    const expected = cdiv(aad, { metadata, iv, ciphertext, tag });
    if (expected !== body.ciphertextDataIntegrityValue) {
      problems.push(
        'ciphertextDataIntegrityValue does not match SHA-256(AAD || ciphertextMetadata || IV || ciphertext || tag)',
      );
    }
  }
  if (problems.length > 0) {
    return [
      {
        id: 'key.encrypt',
        title: encryptTitle,
        status: 'fail',
        detail: problems.join('; '),
        ...kmsOutcome('malformed', 'crypto'),
      },
    ];
  }
  const output = body as unknown as EncryptOutput;
  const checks: Check[] = [
    withTiming(
      {
        id: 'key.encrypt',
        title: encryptTitle,
        status: 'pass',
        detail: `IV ${iv?.length} bytes, tag 16 bytes, ciphertextMetadata ${metadata?.length} byte${metadata?.length === 1 ? '' : 's'}, CDIV verified (${ms(reply.ms)})`,
      },
      reply,
      'crypto',
    ),
  ];
  const decrypt = await signedCall(
    api,
    `keys/${key}/decrypt`,
    JSON.stringify({
      requestMetadata: {
        awsPrincipalArn: api.principalArn,
        kmsKeyArn: api.kmsKeyArn,
        kmsOperation: 'Decrypt',
        kmsRequestId: randomUUID(),
      },
      ciphertext: output.ciphertext,
      ...(output.ciphertextMetadata === undefined ? {} : { ciphertextMetadata: output.ciphertextMetadata }),
      encryptionAlgorithm: 'AES_GCM',
      additionalAuthenticatedData: aad.toString('base64'),
      initializationVector: output.initializationVector,
      authenticationTag: output.authenticationTag,
    }),
  );
  if (!decrypt.ok || decrypt.status !== 200) {
    checks.push(failedReply('key.decrypt', decryptTitle, decrypt, 'crypto', 'Decrypt'));
    return checks;
  }
  const decrypted = successJson(decrypt);
  const plain = 'body' in decrypted ? decodeBase64(decrypted.body.plaintext) : undefined;
  if (plain === undefined || !plain.equals(plaintext)) {
    checks.push({
      id: 'key.decrypt',
      title: decryptTitle,
      status: 'fail',
      detail:
        'problem' in decrypted
          ? decrypted.problem
          : plain === undefined
            ? 'plaintext is missing or not standard Base64'
            : `the plaintext differs from what was encrypted (${plain.length} bytes for ${plaintext.length})`,
      ...kmsOutcome('malformed', 'crypto'),
    });
    return checks;
  }
  checks.push(
    withTiming(
      {
        id: 'key.decrypt',
        title: decryptTitle,
        status: 'pass',
        detail: `${plaintext.length} bytes back, with AAD${output.ciphertextMetadata === undefined ? '' : ' and ciphertextMetadata'} (${ms(decrypt.ms)})`,
      },
      decrypt,
      'crypto',
    ),
  );
  return checks;
}
