// `npm run package` for a stage, from code: the framework (osls + serverless-esbuild) packages the
// stage offline, with no AWS credentials at all, into a folder of its own, and the CloudFormation
// template it wrote is returned. For the deployment tests (test/integration/deploy-template.test.ts)
// and the cost model (bench/suites/cost.ts), which read the templates.
import { execFile, spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';

const ROOT = resolve(import.meta.dirname, '..');

/** A packaged CloudFormation template, read as JSON (checked by whoever reads it). */
// biome-ignore lint/suspicious/noExplicitAny: CloudFormation is checked field by field by its readers
export type Template = { Resources: Record<string, any>; Outputs: Record<string, any> };

/** The layer zip the CI stage files name, built with SoftHSM standing in for a vendor library. */
export async function ensureCiLayer(): Promise<void> {
  if (existsSync(join(ROOT, 'layers/dist/pkcs11-layer-x86_64.zip'))) return;
  await promisify(execFile)(process.execPath, [
    join(ROOT, 'layers/build.ts'),
    '--vendor-lib',
    '/usr/lib/softhsm/libsofthsm2.so',
  ]);
}

/**
 * Packages deploy/params.<stage>.yml into `out` and returns its template. `home`: a folder for the
 * framework's HOME, holding no AWS profile. One at a time: serverless-esbuild builds in the
 * project's .esbuild/ folder.
 */
export async function packageStage(stage: string, out: string, home: string): Promise<Template> {
  // No AWS credentials at all: not in the environment, not in a profile.
  const env: NodeJS.ProcessEnv = { PATH: process.env.PATH, HOME: home, XKS_PACKAGE_OFFLINE: '1' };
  await sls(['package', '--stage', stage, '--package', out], env);
  return JSON.parse(readFileSync(join(out, 'cloudformation-template-update-stack.json'), 'utf8'));
}

/**
 * Runs the framework and waits for its exit (not for its output streams: the esbuild service it
 * starts can hold them open after the framework is done).
 */
function sls(args: string[], env: NodeJS.ProcessEnv): Promise<void> {
  return new Promise((resolvePromise, reject) => {
    const child = spawn(join(ROOT, 'node_modules/.bin/sls'), args, {
      cwd: ROOT,
      env,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let output = '';
    child.stdout.on('data', (d: Buffer) => {
      output += d.toString();
    });
    child.stderr.on('data', (d: Buffer) => {
      output += d.toString();
    });
    const timer = setTimeout(() => child.kill('SIGKILL'), 120_000);
    child.on('exit', (code, signal) => {
      clearTimeout(timer);
      if (code === 0) resolvePromise();
      else reject(new Error(`sls ${args.join(' ')} exited with ${code ?? signal}:\n${output}`));
    });
  });
}
