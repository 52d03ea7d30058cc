// The Python tools the deployment tests run: cfn-lint (AWS's CloudFormation linter) and moto_server
// (AWS APIs on loopback). scripts/bootstrap.sh --test-tools (npm test) links them into .tools/bin.
import { spawn } from 'node:child_process';
import { accessSync, constants } from 'node:fs';
import { join } from 'node:path';
import { ROOT } from './proxy.ts';

/** The tool's path; a missing tool fails the test that needs it, saying how to install it. */
export function toolPath(name: 'cfn-lint' | 'moto_server'): string {
  const path = join(ROOT, '.tools/bin', name);
  try {
    accessSync(path, constants.X_OK);
  } catch {
    throw new Error(
      `${name} is not installed: run \`bash scripts/bootstrap.sh --test-tools true\` (npm test does)`,
    );
  }
  return path;
}

export interface Moto {
  /** http://127.0.0.1:<port>, for the SDK's endpoint. */
  endpoint: string;
  stop(): Promise<void>;
}

/** Starts moto_server on a free loopback port and waits until it serves. */
export function startMoto(): Promise<Moto> {
  const child = spawn(toolPath('moto_server'), ['-H', '127.0.0.1', '-p', '0'], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
    await exited;
  };
  return new Promise((resolve, reject) => {
    let output = '';
    const timer = setTimeout(() => {
      void stop();
      reject(new Error(`moto_server did not start within 20 s:\n${output}`));
    }, 20_000);
    const onData = (data: Buffer) => {
      output += data.toString();
      const port = /Running on http:\/\/127\.0\.0\.1:(\d+)/.exec(output)?.[1];
      if (port === undefined) return;
      clearTimeout(timer);
      child.stdout.off('data', onData);
      child.stderr.off('data', onData);
      // Keeps the pipes drained; its request log is of no interest.
      child.stdout.resume();
      child.stderr.resume();
      resolve({ endpoint: `http://127.0.0.1:${port}`, stop });
    };
    child.stdout.on('data', onData);
    child.stderr.on('data', onData);
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`moto_server exited with ${code}:\n${output}`));
    });
  });
}
