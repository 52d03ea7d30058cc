// What a bundle file (esbuild's output, minified or not) imports: the specifiers of its import
// statements, loaded with the file, and of its import() calls, loaded when that code runs.
export function importsOf(code: string): { statements: string[]; dynamic: string[] } {
  const specifiers = (pattern: RegExp) => [...code.matchAll(pattern)].map((m) => m[1] as string);
  return {
    statements: specifiers(/\bimport\s*(?:[\w${}\s,*]+from\s*)?["']([^"']+)["']/g),
    dynamic: specifiers(/\bimport\(\s*["']([^"']+)["']\s*\)/g),
  };
}
