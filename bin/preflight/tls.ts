// TLS as KMS connects (spec: API content type: TLS 1.2+ with one of its cipher suites, HTTP/1.1;
// Authentication: a chain ending at one of the root CAs in TrustedCertificateAuthorities, and with
// mutual TLS, no connection without KMS's client certificate).
import { X509Certificate } from 'node:crypto';
import { checkServerIdentity, type DetailedPeerCertificate } from 'node:tls';
import { TRUSTED_CAS, type TrustedCa } from '../trusted-cas.ts';
import { PreflightUsageError } from './inputs.ts';
import { kmsOutcome } from './kms.ts';
import {
  describeNetError,
  type HttpReply,
  type NetError,
  type Network,
  networkScenario,
  type Probe,
} from './network.ts';
import { isObject, observed } from './replies.ts';
import type { Check } from './report.ts';
import { type ApiContext, healthBody, signedCall } from './requests.ts';

export { TRUSTED_CAS };

/** Spec, API content type: TLS 1.2+ with at least one of these (OpenSSL names for the TLS 1.2 ones). */
export const SPEC_CIPHER_SUITES = [
  { name: 'TLS_AES_256_GCM_SHA384', openssl: 'TLS_AES_256_GCM_SHA384', version: 'TLSv1.3' },
  { name: 'TLS_CHACHA20_POLY1305_SHA256', openssl: 'TLS_CHACHA20_POLY1305_SHA256', version: 'TLSv1.3' },
  {
    name: 'TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384',
    openssl: 'ECDHE-RSA-AES256-GCM-SHA384',
    version: 'TLSv1.2',
  },
  {
    name: 'TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384',
    openssl: 'ECDHE-ECDSA-AES256-GCM-SHA384',
    version: 'TLSv1.2',
  },
] as const;

export function splitPem(pem: string): string[] {
  return pem.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? [];
}

/**
 * The --ca certificates: their PEM blocks, to build chains with, and their names by SHA-256
 * fingerprint, to recognise a chain that ends at one of them.
 */
export function extraCertificates(cas: readonly (string | Buffer)[]): {
  pems: string[];
  names: Map<string, string>;
} {
  const pems = cas.flatMap((ca) => splitPem(ca.toString()));
  const names = new Map<string, string>();
  for (const pem of pems) {
    let cert: X509Certificate;
    try {
      cert = new X509Certificate(pem);
    } catch {
      throw new PreflightUsageError('--ca: a PEM block is not a readable certificate');
    }
    names.set(fingerprintOf(cert), /CN=([^\n,]+)/.exec(cert.subject)?.[1] ?? cert.subject);
  }
  return { pems, names };
}

function certificateChain(peer: DetailedPeerCertificate): DetailedPeerCertificate[] {
  const chain: DetailedPeerCertificate[] = [];
  const seen = new Set<string>();
  let current: DetailedPeerCertificate | undefined = peer;
  while (current?.fingerprint256 && !seen.has(current.fingerprint256)) {
    chain.push(current);
    seen.add(current.fingerprint256);
    current = current.issuerCertificate;
  }
  return chain;
}

const fingerprintOf = (cert: { fingerprint256: string }) =>
  cert.fingerprint256.replace(/:/g, '').toLowerCase();

function nameOf(name: unknown): string {
  if (!isObject(name)) return '?';
  const cn = name.CN ?? name.O ?? Object.values(name)[0];
  return Array.isArray(cn) ? String(cn[0]) : String(cn ?? '?');
}

function selfSigned(cert: DetailedPeerCertificate): boolean {
  try {
    const x509 = new X509Certificate(cert.raw);
    return x509.checkIssued(x509) && x509.verify(x509.publicKey);
  } catch {
    return false;
  }
}

function cnOfOwner(owner: string): string | undefined {
  return /(?:^|,\s*)CN=("[^"]*"|[^,]*)/.exec(owner)?.[1]?.replace(/^"|"$/g, '');
}

const CHAIN_ERRORS = new Set([
  'CERT_SIGNATURE_FAILURE',
  'CERT_CHAIN_TOO_LONG',
  'INVALID_CA',
  'PATH_LENGTH_EXCEEDED',
  'INVALID_PURPOSE',
  'CERT_REVOKED',
  'CERT_UNTRUSTED',
  'CERT_REJECTED',
  'UNABLE_TO_DECRYPT_CERT_SIGNATURE',
  'UNABLE_TO_DECODE_ISSUER_PUBLIC_KEY',
]);

export interface ChainContext {
  trusted: readonly TrustedCa[];
  extraCa: Map<string, string>;
  allowUntrustedCa: boolean;
}

export function chainCheck(hello: Probe, context: ChainContext): Check {
  const title = 'Certificate chain ends at a root CA KMS trusts';
  const chain = certificateChain(hello.peer);
  const top = chain[chain.length - 1];
  const path = chain.map((c) => nameOf(c.subject)).join(' <- ');
  const tlsFail = (detail: string): Check => ({
    id: 'tls.chain',
    title,
    status: 'fail',
    detail,
    ...kmsOutcome('tls', 'customKeyStore'),
  });
  if (top === undefined) return tlsFail('the server sent no certificate');
  if (hello.authorizationError !== undefined && CHAIN_ERRORS.has(hello.authorizationError)) {
    return tlsFail(`the chain does not verify: ${hello.authorizationError} (${path})`);
  }
  if (!selfSigned(top)) {
    const issuer = nameOf(top.issuer);
    const byName = context.trusted.find((ca) => cnOfOwner(ca.owner) === issuer);
    if (byName !== undefined) {
      return {
        id: 'tls.chain',
        title,
        status: 'warn',
        detail: `${path}, issued by '${issuer}': a root KMS trusts by name (${byName.alias}), but its certificate is neither sent nor in the local store, so its fingerprint cannot be compared`,
        ...kmsOutcome('tls', 'customKeyStore'),
      };
    }
    return tlsFail(
      `${path}: the chain stops at a certificate issued by '${issuer}', which is neither sent by the server nor a root KMS trusts (send the intermediate certificates)`,
    );
  }
  const fingerprint = fingerprintOf(top);
  const known = context.trusted.find((ca) => ca.sha256 === fingerprint);
  if (known !== undefined) {
    return {
      id: 'tls.chain',
      title,
      status: 'pass',
      detail: `${path}: root ${known.alias} (${known.owner})`,
    };
  }
  const extra = context.extraCa.get(fingerprint);
  if (extra !== undefined) {
    return context.allowUntrustedCa
      ? {
          id: 'tls.chain',
          title,
          status: 'pass',
          detail: `${path}: root '${extra}' from --ca, accepted by --allow-untrusted-ca (testing only: KMS will not trust it)`,
        }
      : {
          id: 'tls.chain',
          title,
          status: 'warn',
          detail: `${path}: root '${extra}' is trusted only because of --ca; KMS will not trust it`,
          ...kmsOutcome('tls', 'customKeyStore'),
        };
  }
  const root = chain.length === 1 ? 'a self-signed server certificate' : `the root '${nameOf(top.subject)}'`;
  return tlsFail(
    `${path}: ${root} (SHA-256 ${fingerprint.slice(0, 16)}...) is not one of the ${context.trusted.length} root CAs KMS trusts`,
  );
}

export function validityCheck(hello: Probe, now: Date): Check {
  const title = 'Certificate valid now';
  const chain = certificateChain(hello.peer);
  const leaf = chain[0];
  if (leaf === undefined) {
    return {
      id: 'tls.validity',
      title,
      status: 'fail',
      detail: 'no certificate',
      ...kmsOutcome('tls', 'customKeyStore'),
    };
  }
  for (const cert of chain) {
    const from = Date.parse(cert.valid_from);
    const to = Date.parse(cert.valid_to);
    const which = cert === leaf ? 'the server certificate' : `'${nameOf(cert.subject)}' in the chain`;
    if (now.getTime() < from) {
      return {
        id: 'tls.validity',
        title,
        status: 'fail',
        detail: `${which} is not valid before ${new Date(from).toISOString()}`,
        ...kmsOutcome('tls', 'customKeyStore'),
      };
    }
    if (now.getTime() > to) {
      return {
        id: 'tls.validity',
        title,
        status: 'fail',
        detail: `${which} expired on ${new Date(to).toISOString()}`,
        ...kmsOutcome('tls', 'customKeyStore'),
      };
    }
  }
  const notAfter = Date.parse(leaf.valid_to);
  const days = Math.floor((notAfter - now.getTime()) / 86_400_000);
  const until = `valid until ${new Date(notAfter).toISOString().slice(0, 10)}: ${days} more day${days === 1 ? '' : 's'}`;
  if (days < 30) {
    return {
      id: 'tls.validity',
      title,
      status: 'warn',
      detail: `${until}; renew it soon`,
      ...kmsOutcome('tls', 'customKeyStore'),
    };
  }
  return { id: 'tls.validity', title, status: 'pass', detail: until };
}

export function hostnameCheck(hello: Probe, hostname: string): Check {
  const title = 'Certificate matches the host name';
  const names = hello.peer.subjectaltname || `CN=${nameOf(hello.peer.subject)}`;
  const error = checkServerIdentity(hostname, hello.peer);
  if (error !== undefined) {
    return {
      id: 'tls.hostname',
      title,
      status: 'fail',
      detail: `${hostname} is not among the certificate's names (${names})`,
      ...kmsOutcome('tls', 'customKeyStore'),
    };
  }
  return { id: 'tls.hostname', title, status: 'pass', detail: `${hostname} matches ${names}` };
}

export async function versionCheck(net: Network, hello: Probe): Promise<Check> {
  const title = 'TLS 1.2 or later';
  const legacy = await net.probe({
    minVersion: 'TLSv1',
    maxVersion: 'TLSv1.1',
    ciphers: 'DEFAULT:@SECLEVEL=0',
  });
  const negotiated = hello.protocol ?? 'unknown';
  if (negotiated !== 'TLSv1.2' && negotiated !== 'TLSv1.3') {
    return {
      id: 'tls.version',
      title,
      status: 'fail',
      detail: `negotiated ${negotiated}`,
      ...kmsOutcome('tls', 'customKeyStore'),
    };
  }
  if (legacy.ok) {
    return {
      id: 'tls.version',
      title,
      status: 'warn',
      detail: `negotiated ${negotiated}, but the server also accepts ${legacy.protocol}: KMS does not need it and old protocols are a risk`,
    };
  }
  return {
    id: 'tls.version',
    title,
    status: 'pass',
    detail: `negotiated ${negotiated}; TLS 1.0 and 1.1 refused`,
  };
}

export async function cipherCheck(net: Network): Promise<Check> {
  const title = "At least one of the spec's cipher suites";
  const offered: string[] = [];
  for (const suite of SPEC_CIPHER_SUITES) {
    const result = await net.probe({
      minVersion: suite.version,
      maxVersion: suite.version,
      ciphers: suite.openssl,
    });
    if (result.ok) offered.push(suite.name);
  }
  if (offered.length === 0) {
    return {
      id: 'tls.ciphers',
      title,
      status: 'fail',
      detail: `none of ${SPEC_CIPHER_SUITES.map((s) => s.name).join(', ')} is accepted`,
      ...kmsOutcome('tls', 'customKeyStore'),
    };
  }
  return {
    id: 'tls.ciphers',
    title,
    status: 'pass',
    detail: `${offered.length} of ${SPEC_CIPHER_SUITES.length}: ${offered.join(', ')}`,
  };
}

export async function httpCheck(net: Network, health: HttpReply | NetError): Promise<Check> {
  const title = 'HTTP/1.1 (and the fallback to it)';
  const only11 = await net.probe({ ALPNProtocols: ['http/1.1'] });
  const both = await net.probe({ ALPNProtocols: ['h2', 'http/1.1'] });
  if (!only11.ok) {
    return {
      id: 'http.version',
      title,
      status: 'fail',
      detail: `a client offering only http/1.1 (ALPN) cannot connect: ${describeNetError(only11)}`,
      ...kmsOutcome('tls', 'customKeyStore'),
    };
  }
  const alpn = both.ok
    ? both.alpn === false
      ? 'the server does not use ALPN'
      : `offered h2 and http/1.1, the server chose ${both.alpn}`
    : `offering h2 and http/1.1 failed (${describeNetError(both)})`;
  if (!health.ok) {
    return {
      id: 'http.version',
      title,
      status: 'fail',
      detail: `no HTTP/1.1 response (${describeNetError(health)}); ${alpn}`,
      ...kmsOutcome(networkScenario(health), 'customKeyStore'),
    };
  }
  return {
    id: 'http.version',
    title,
    status: 'pass',
    detail: `HTTP/${health.httpVersion} request answered; ${alpn}`,
  };
}

// mTLS (spec: Authentication): KMS's certificate gets in; no certificate, no handshake.

export async function mtlsChecks(api: ApiContext, health: HttpReply | NetError): Promise<Check[]> {
  const checks: Check[] = [];
  if (health.ok) {
    checks.push({
      id: 'mtls.with-cert',
      title: 'Mutual TLS: the handshake succeeds with the client certificate',
      status: 'pass',
      detail: `handshake done, HTTP ${health.status}`,
    });
  } else {
    checks.push({
      id: 'mtls.with-cert',
      title: 'Mutual TLS: the handshake succeeds with the client certificate',
      status: 'fail',
      detail: describeNetError(health),
      ...kmsOutcome(networkScenario(health), 'customKeyStore'),
    });
  }
  const without = await signedCall(api, 'health', healthBody('CreateCustomKeyStore'), { noClientCert: true });
  const title = 'Mutual TLS: no client certificate, no connection';
  if (!without.ok) {
    checks.push({
      id: 'mtls.without-cert',
      title,
      status: 'pass',
      detail: `refused: ${describeNetError(without)}`,
    });
  } else if (without.status >= 200 && without.status < 300) {
    checks.push({
      id: 'mtls.without-cert',
      title,
      status: 'fail',
      detail: `HTTP ${without.status} without a client certificate: mutual TLS is not enforced`,
    });
  } else {
    checks.push({
      id: 'mtls.without-cert',
      title,
      status: 'warn',
      detail: `the handshake succeeded and the request got ${observed(without)}: refused, but after the handshake (the spec says to terminate it)`,
    });
  }
  return checks;
}
