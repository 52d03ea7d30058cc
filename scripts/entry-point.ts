// Whether a module is the process's entry point, for the project's command-line scripts.
import { realpathSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

/** `import.meta.main` where Node has it; otherwise argv[1] compared with the module's own path. */
export function isEntryPoint(meta: ImportMeta): boolean {
  if (typeof meta.main === 'boolean') return meta.main;
  const script = process.argv[1];
  if (script === undefined) return false;
  try {
    return realpathSync(script) === realpathSync(fileURLToPath(meta.url));
  } catch {
    return false;
  }
}
