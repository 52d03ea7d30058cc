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

/** The CN of a subject DN as API Gateway gives it (`CN=a,O=b`) or as Node prints it (`CN=a\nO=b`). */
export function commonNameOf(subject: string | undefined): string | undefined {
  return /(?:^|[,\n])\s*CN=([^,\n]+)/.exec(subject ?? '')?.[1]?.trim();
}
