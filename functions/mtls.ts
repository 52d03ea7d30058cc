// Client certificate subjects (spec: Authentication: KMS presents CN=cks.kms.<region>.amazonaws.com
// and the proxy MUST accept only the configured subject names).

/** A matcher for allowed CNs; `*` in a pattern stands for exactly one DNS label. */
export function commonNameMatcher(patterns: readonly string[]): (commonName: string | undefined) => boolean {
  const regexes = patterns.map(
    (p) =>
      new RegExp(
        `^${p
          .split('*')
          .map((part) => part.replace(/[.+?^${}()|[\]\\]/g, '\\$&'))
          .join('[a-z0-9-]+')}$`,
        'i',
      ),
  );
  return (commonName) => commonName !== undefined && regexes.some((r) => r.test(commonName));
}

/**
 * The first CN of a subject DN as the front doors give it (RFC 2253: `CN=a,O=b`, where `\,` is a
 * comma inside a value) or as Node prints it (`CN=a\nO=b`). An escaped separator never starts an
 * attribute: `O=x\,CN=y` has no CN.
 */
export function commonNameOf(subject: string | undefined): string | undefined {
  for (const attribute of attributesOf(subject ?? '')) {
    const match = /^\s*CN=(.*)$/.exec(attribute);
    if (match) return (match[1] as string).trim().replace(/\\(.)/g, '$1');
  }
  return undefined;
}

/** The attributes of a DN, split at unescaped `,`, `+` (a multi-valued RDN) and newlines. */
function attributesOf(dn: string): string[] {
  const attributes: string[] = [];
  let start = 0;
  for (let i = 0; i < dn.length; i++) {
    const c = dn[i];
    if (c === '\\') i++;
    else if (c === ',' || c === '+' || c === '\n') {
      attributes.push(dn.slice(start, i));
      start = i + 1;
    }
  }
  attributes.push(dn.slice(start));
  return attributes;
}
