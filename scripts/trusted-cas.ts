// Derives bin/preflight/trusted-cas.json from the in-repository copy of the spec repository's
// TrustedCertificateAuthorities table (data/aws-kms-xksproxy-api-spec/): the root CAs AWS KMS trusts
// for an XKS proxy's server certificate (spec: Authentication). `xks-proxy preflight` compares the
// root of the proxy's certificate chain with this list. The JSON names its source and the date of
// the copy, both read from the copy's README.
//
//   node scripts/trusted-cas.ts
//
// test/unit/trusted-cas.test.ts checks that the shipped JSON matches the copy.
import { readFileSync, writeFileSync } from 'node:fs';
import { resolve } from 'node:path';
import type { TrustedCa } from '../bin/preflight/tls.ts';
import { isEntryPoint } from './entry-point.ts';

/** bin/preflight/trusted-cas.json: the list with where it comes from. */
export interface TrustedCaList {
  description: string;
  /** The public URL of the list. */
  source: string;
  /** The date the in-repository copy was taken from the source (YYYY-MM-DD). */
  copied: string;
  /** The in-repository copy this file is generated from. */
  copy: string;
  licence: string;
  generatedBy: string;
  trustedCas: TrustedCa[];
}

const ROOT = resolve(import.meta.dirname, '..');
export const COPY = 'data/aws-kms-xksproxy-api-spec/TrustedCertificateAuthorities';
export const COPY_README = 'data/aws-kms-xksproxy-api-spec/README.md';
export const OUTPUT = 'bin/preflight/trusted-cas.json';

const FINGERPRINT = /^\s*SHA256:\s*((?:[0-9A-Fa-f]{2}:){31}[0-9A-Fa-f]{2})(?![0-9A-Fa-f:])/;

/** `AB:CD:...` (any case, with or without colons) -> `abcd...`. */
export function normalizeFingerprint(fingerprint: string): string {
  return fingerprint.replace(/:/g, '').toLowerCase();
}

/**
 * Parses the table: one entry per "Alias name:" line, with its Owner and SHA256 lines. Other lines
 * (Issuer, validity, SHA1, separators, the odd RFC822Name) are ignored. Throws on an entry without an
 * owner or a SHA-256 fingerprint, or on a repeated alias or fingerprint.
 */
export function parseTrustedCas(text: string): TrustedCa[] {
  const entries: TrustedCa[] = [];
  let current: Partial<TrustedCa> | undefined;
  const finish = () => {
    if (current === undefined) return;
    if (current.owner === undefined || current.sha256 === undefined) {
      throw new Error(`entry '${current.alias}' has no ${current.owner === undefined ? 'Owner' : 'SHA256'}`);
    }
    entries.push({ alias: current.alias as string, owner: current.owner, sha256: current.sha256 });
    current = undefined;
  };
  for (const line of text.split(/\r?\n/)) {
    const alias = /^Alias name:\s*(\S.*?)\s*$/.exec(line);
    if (alias) {
      finish();
      current = { alias: alias[1] as string };
      continue;
    }
    if (current === undefined) continue;
    const owner = /^Owner:\s*(\S.*?)\s*$/.exec(line);
    if (owner && current.owner === undefined) current.owner = owner[1] as string;
    const sha256 = FINGERPRINT.exec(line);
    if (sha256) {
      if (current.sha256 !== undefined) throw new Error(`entry '${current.alias}' has two SHA256 lines`);
      current.sha256 = normalizeFingerprint(sha256[1] as string);
    }
  }
  finish();
  if (entries.length === 0) throw new Error('no "Alias name:" entries found');
  const aliases = new Set<string>();
  const fingerprints = new Set<string>();
  for (const entry of entries) {
    if (aliases.has(entry.alias)) throw new Error(`alias '${entry.alias}' appears twice`);
    if (fingerprints.has(entry.sha256)) throw new Error(`fingerprint of '${entry.alias}' appears twice`);
    aliases.add(entry.alias);
    fingerprints.add(entry.sha256);
  }
  return entries;
}

/** The source URL and the date of the copy, as the copy's README states them. */
export function parseProvenance(readme: string): { source: string; copied: string } {
  const source = /^- Source: (https:\/\/\S+)$/m.exec(readme)?.[1];
  const copied = /^- Copied: (\d{4}-\d{2}-\d{2})\b/m.exec(readme)?.[1];
  if (source === undefined || copied === undefined) {
    throw new Error(`${COPY_README} must have a '- Source: https://...' and a '- Copied: YYYY-MM-DD' line`);
  }
  return { source, copied };
}

/** The JSON document, from the copy's text and its README. */
export function trustedCaList(text: string, readme: string): TrustedCaList {
  return {
    description:
      "The root CAs AWS KMS trusts for an XKS proxy's server certificate (XKS Proxy API specification: Authentication), with their SHA-256 fingerprints as lowercase hex without colons.",
    ...parseProvenance(readme),
    copy: COPY,
    licence: 'CC BY-SA 4.0, Copyright Amazon.com, Inc. or its affiliates (data/aws-kms-xksproxy-api-spec/)',
    generatedBy: 'node scripts/trusted-cas.ts: do not edit; run it again instead',
    trustedCas: parseTrustedCas(text),
  };
}

/** The file as written: two-space indentation and a final newline, as Biome formats JSON. */
export function renderJson(list: TrustedCaList): string {
  return `${JSON.stringify(list, null, 2)}\n`;
}

/** The list the in-repository copy gives now. */
export function generate(): TrustedCaList {
  return trustedCaList(
    readFileSync(resolve(ROOT, COPY), 'utf8'),
    readFileSync(resolve(ROOT, COPY_README), 'utf8'),
  );
}

if (isEntryPoint(import.meta)) {
  const list = generate();
  writeFileSync(resolve(ROOT, OUTPUT), renderJson(list));
  process.stdout.write(`${list.trustedCas.length} trusted root CAs from ${COPY} -> ${OUTPUT}\n`);
}
