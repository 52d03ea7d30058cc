// Preloaded with `node --import`: a project file that loads a package package.json does not list in
// "dependencies" fails as it would where `npm install --omit=dev` installed the project, even
// though the clone has the package. Packages may load their own dependencies as they like.
import { readFileSync } from 'node:fs';
import { isBuiltin, registerHooks } from 'node:module';
import { pathToFileURL } from 'node:url';

const root = pathToFileURL(`${import.meta.dirname}/../../`).href;
const pkg = JSON.parse(readFileSync(new URL('package.json', root), 'utf8'));
const dependencies = new Set(Object.keys(pkg.dependencies));

/** `@scope/name/sub` -> `@scope/name`; `name/sub` -> `name`. */
function packageOf(specifier: string): string {
  const parts = specifier.split('/');
  return (specifier.startsWith('@') ? parts.slice(0, 2) : parts.slice(0, 1)).join('/');
}

registerHooks({
  resolve(specifier, context, nextResolve) {
    const parent = context.parentURL ?? '';
    const fromProject = parent.startsWith(root) && !parent.includes('/node_modules/');
    const bare = !/^(?:\.{0,2}\/|[a-z][a-z0-9+.-]*:)/i.test(specifier);
    if (fromProject && bare && !isBuiltin(specifier) && !dependencies.has(packageOf(specifier))) {
      throw Object.assign(
        new Error(
          `${specifier} is not in package.json "dependencies" (loaded by ${parent.slice(root.length)})`,
        ),
        { code: 'ERR_MODULE_NOT_FOUND' },
      );
    }
    return nextResolve(specifier, context);
  },
});
