// The PKCS#11 layer build (layers/build.ts) and its ABI check (layers/abi.ts), on the real files:
// the npm-built pkcs11js and Debian's libsofthsm2.so standing in for a vendor library. The zips are
// read back with a small central-directory reader below (no unzip, no yauzl needed).
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  realpathSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { after, before, test } from 'node:test';
import { crc32, inflateRawSync } from 'node:zlib';
import { checkFile, checkLayerDir, compareVersions, elfInfo, passes } from '../../layers/abi.ts';
import { type Arch, buildLayer, DEFAULT_PKCS11JS, DEMO_TOKEN_DIR } from '../../layers/build.ts';
import { findSoftHsmModule } from '../../scripts/softhsm.ts';

const root = resolve(import.meta.dirname, '../..');
const ADDON = 'nodejs/node_modules/pkcs11js/build/Release/pkcs11.node';
const builtAddon = join(DEFAULT_PKCS11JS, 'build/Release/pkcs11.node');
const hostArch = elfInfo(builtAddon).arch as Arch;
const otherArch: Arch = hostArch === 'x86_64' ? 'arm64' : 'x86_64';

interface ZipEntry {
  data: Buffer;
  mode: number;
}

/** Reads a zip (stored or deflated, no zip64) through its central directory, checking every CRC. */
function readZip(file: string): Map<string, ZipEntry> {
  const zip = readFileSync(file);
  let eocd = zip.length - 22; // end of central directory record, 22 bytes plus an optional comment
  while (eocd >= 0 && zip.readUInt32LE(eocd) !== 0x06054b50) eocd--;
  assert.ok(eocd >= 0, `${file}: no end of central directory record`);
  const entries = new Map<string, ZipEntry>();
  let p = zip.readUInt32LE(eocd + 16);
  for (let i = 0; i < zip.readUInt16LE(eocd + 10); i++) {
    assert.equal(zip.readUInt32LE(p), 0x02014b50, 'central directory header');
    const method = zip.readUInt16LE(p + 10);
    const crc = zip.readUInt32LE(p + 16);
    const compressed = zip.readUInt32LE(p + 20);
    const size = zip.readUInt32LE(p + 24);
    const nameLength = zip.readUInt16LE(p + 28);
    const mode = zip.readUInt32LE(p + 38) >>> 16; // Unix mode in the external attributes
    const local = zip.readUInt32LE(p + 42);
    const name = zip.toString('utf8', p + 46, p + 46 + nameLength);
    p += 46 + nameLength + zip.readUInt16LE(p + 30) + zip.readUInt16LE(p + 32);

    assert.equal(zip.readUInt32LE(local), 0x04034b50, `${name}: local header`);
    const start = local + 30 + zip.readUInt16LE(local + 26) + zip.readUInt16LE(local + 28);
    const raw = zip.subarray(start, start + compressed);
    assert.ok(method === 0 || method === 8, `${name}: compression method ${method}`);
    const data = method === 8 ? inflateRawSync(raw) : raw;
    assert.equal(data.length, size, `${name}: size`);
    assert.equal(crc32(data), crc, `${name}: CRC`);
    entries.set(name, { data, mode });
  }
  return entries;
}

function run(script: string, args: string[]) {
  return spawnSync(process.execPath, [join(root, script), ...args], { cwd: root, encoding: 'utf8' });
}

/** Compiles C into a shared library; undefined when there is no C compiler. */
function compile(dir: string, name: string, source: string, flags: string[] = []): string | undefined {
  const src = join(dir, `${name}.c`);
  const out = join(dir, `${name}.so`);
  writeFileSync(src, source);
  const cc = spawnSync('cc', ['-shared', '-fPIC', '-O2', '-o', out, src, ...flags], { encoding: 'utf8' });
  if (cc.error) return undefined;
  assert.equal(cc.status, 0, cc.stderr);
  return out;
}

const hasCompiler = !spawnSync('cc', ['--version']).error;

let dir: string;
let vendorConf: string;
before(() => {
  dir = mkdtempSync(join(tmpdir(), 'layer-test-'));
  vendorConf = join(dir, 'vendor.conf');
  writeFileSync(vendorConf, '# stand-in vendor configuration\nslot = 0\n');
});
after(() => rmSync(dir, { recursive: true, force: true }));

test('versions compare numerically', () => {
  assert.equal(compareVersions('2.34', '2.4'), 1);
  assert.equal(compareVersions('3.4.9', '3.4.29'), -1);
  assert.equal(compareVersions('1.3', '1.3.0'), 0);
  assert.equal(compareVersions('1.3', '1.3.1'), -1);
  assert.equal(compareVersions('2.36', '2.34'), 1);
});

test('the production layer: pkcs11js, the vendor library in lib/, its config in etc/', () => {
  const out = join(dir, 'prod');
  const vendorLib = findSoftHsmModule(); // Debian's libsofthsm2.so stands in for a vendor's library
  const built = run('layers/build.ts', [
    '--vendor-lib',
    vendorLib,
    '--vendor-config',
    vendorConf,
    '--out',
    out,
  ]);
  assert.equal(built.status, 0, built.stderr);
  // The build prints the ABI check per file.
  assert.match(built.stdout, /^ok {4}lib\/libsofthsm2\.so {2}\[\w+\] {2}GLIBC_2\.\d+ {2}GLIBCXX_3\.4\.\d+/m);
  assert.match(built.stdout, /^ok {4}nodejs\/node_modules\/pkcs11js\/build\/Release\/pkcs11\.node /m);

  const zipPath = join(out, `pkcs11-layer-${hostArch}.zip`);
  const entries = readZip(zipPath);
  assert.deepEqual([...entries.keys()].sort(), [
    'etc/vendor.conf',
    'lib/libsofthsm2.so',
    // The HSM worker thread's code (XKS_HSM_WORKER in serverless.yml).
    'nodejs/hsm-worker.mjs',
    // Cedar (secondary authorization): JavaScript and wasm, loaded only when policies are configured.
    'nodejs/node_modules/@cedar-policy/cedar-wasm/nodejs/cedar_wasm.js',
    'nodejs/node_modules/@cedar-policy/cedar-wasm/nodejs/cedar_wasm_bg.wasm',
    'nodejs/node_modules/@cedar-policy/cedar-wasm/nodejs/package.json',
    'nodejs/node_modules/@cedar-policy/cedar-wasm/package.json',
    'nodejs/node_modules/pkcs11js/LICENSE',
    ADDON,
    'nodejs/node_modules/pkcs11js/index.d.ts',
    'nodejs/node_modules/pkcs11js/index.js',
    'nodejs/node_modules/pkcs11js/package.json',
  ]);
  // Byte-identical to what npm built and to the vendor's file (the symlink followed).
  assert.ok(
    entries.get(ADDON)?.data.equals(readFileSync(builtAddon)),
    'pkcs11.node differs from the built one',
  );
  assert.ok(entries.get('lib/libsofthsm2.so')?.data.equals(readFileSync(realpathSync(vendorLib))));
  assert.equal(entries.get('etc/vendor.conf')?.data.toString(), readFileSync(vendorConf, 'utf8'));
  assert.equal(entries.get(ADDON)?.mode, 0o100755);
  assert.equal(entries.get('etc/vendor.conf')?.mode, 0o100644);
});

test('the ABI check passes on the real files, as they are in the zip', () => {
  const out = join(dir, 'abi');
  const built = run('layers/build.ts', ['--vendor-lib', findSoftHsmModule(), '--out', out]);
  assert.equal(built.status, 0, built.stderr);
  // Extract the zip and check what is in it, not what it was made from.
  const extracted = join(dir, 'abi-extracted');
  for (const [name, { data }] of readZip(join(out, `pkcs11-layer-${hostArch}.zip`))) {
    mkdirSync(dirname(join(extracted, name)), { recursive: true });
    writeFileSync(join(extracted, name), data);
  }
  const reports = checkLayerDir(extracted);
  assert.deepEqual(
    reports.map((r) => r.name),
    ['lib/libsofthsm2.so', ADDON],
  );
  assert.ok(passes(reports));
  for (const r of reports) {
    assert.deepEqual(r.violations, [], r.name);
    assert.deepEqual(r.missing, [], `${r.name}: every NEEDED library is in AL2023 (${r.needed.join(', ')})`);
    assert.ok(r.highest.GLIBC, `${r.name} needs some GLIBC version`);
    assert.ok(compareVersions(r.highest.GLIBC, '2.34') <= 0);
  }
  const cli = run('layers/abi.ts', [extracted]);
  assert.equal(cli.status, 0, cli.stdout + cli.stderr);
  assert.match(cli.stdout, /ABI check passed/);
});

test('the SoftHSM demo layer says NOT FOR PRODUCTION, in its name and its README.txt', async () => {
  const out = join(dir, 'demo');
  const layer = await buildLayer({ demoSoftHsm: true, arch: hostArch, outDir: out });
  assert.match(layer.zip, /NOT-FOR-PRODUCTION-softhsm-demo-(x86_64|arm64)\.zip$/);
  const entries = readZip(layer.zip);
  assert.deepEqual([...entries.keys()].sort(), layer.entries);
  assert.ok(entries.has('lib/libsofthsm2.so'));
  assert.ok(entries.get(ADDON)?.data.equals(readFileSync(builtAddon)));
  const readme = entries.get('README.txt')?.data.toString() ?? '';
  assert.match(readme, /NOT FOR PRODUCTION/);
  assert.match(readme, /SOFTWARE token/);
  assert.match(readme, /NOT protected by any hardware/);
  assert.match(readme, /LOST ON EVERY COLD START/);
  const conf = entries.get('etc/softhsm2.conf')?.data.toString() ?? '';
  assert.match(conf, new RegExp(`^directories\\.tokendir = ${DEMO_TOKEN_DIR}$`, 'm'));
  assert.equal(DEMO_TOKEN_DIR, '/tmp/softhsm/tokens');
  assert.ok(passes(layer.reports));
});

test('the ABI check fails on a library needing a glibc newer than 2.34, and the build refuses it', (t) => {
  if (!hasCompiler) {
    t.skip('no C compiler (cc) to build a library that needs GLIBC_2.36');
    return;
  }
  // arc4random is GLIBC_2.36 (Debian 12 has glibc 2.36). Declared here so older headers do not matter.
  const lib = compile(
    dir,
    'libnewglibc',
    '#include <stdint.h>\nextern uint32_t arc4random(void);\nuint32_t vendor_random(void) { return arc4random(); }\n',
  ) as string;
  const dynamic = spawnSync('objdump', ['-T', lib], { encoding: 'utf8' }).stdout;
  if (!/\(GLIBC_2\.(3[5-9]|[4-9]\d)\)\s+arc4random/.test(dynamic)) {
    t.skip(`this machine's glibc does not version arc4random above 2.34 (glibc < 2.36)`);
    return;
  }

  const report = checkFile(lib);
  assert.equal(report.highest.GLIBC, '2.36');
  assert.equal(report.violations.length, 1);
  assert.match(report.violations[0] ?? '', /GLIBC_2\.36 > GLIBC_2\.34.*arc4random/);

  const cli = run('layers/abi.ts', [lib]);
  assert.equal(cli.status, 1);
  assert.match(cli.stdout, /^FAIL {2}.*libnewglibc\.so .*GLIBC_2\.36/m);
  assert.match(cli.stdout, /ABI check FAILED/);

  // The build: no zip, not even an old one of the same name.
  const out = join(dir, 'refused');
  mkdirSync(out, { recursive: true });
  const zip = join(out, `pkcs11-layer-${hostArch}.zip`);
  writeFileSync(zip, 'an old build');
  const built = run('layers/build.ts', ['--vendor-lib', lib, '--out', out]);
  assert.equal(built.status, 1);
  assert.match(built.stderr, /ABI check failed, no zip written/);
  assert.match(built.stderr, /arc4random/);
  assert.equal(existsSync(zip), false);
});

test('NEEDED libraries outside AL2023 are warned about unless shipped in lib/', async (t) => {
  if (!hasCompiler) {
    t.skip('no C compiler (cc) to build libraries with a NEEDED entry');
    return;
  }
  const sub = join(dir, 'needed');
  mkdirSync(sub);
  compile(sub, 'libvendordep', 'int vendor_dep(void) { return 42; }\n');
  const lib = compile(
    sub,
    'libvendor',
    'int vendor_dep(void);\nint vendor(void) { return vendor_dep(); }\n',
    [`-L${sub}`, '-lvendordep'],
  ) as string;

  const alone = checkFile(lib);
  assert.ok(alone.needed.includes('libvendordep.so'));
  assert.deepEqual(alone.missing, ['libvendordep.so']);
  assert.deepEqual(alone.violations, [], 'a warning, not a failure');
  assert.deepEqual(checkFile(lib, new Set(['libvendordep.so'])).missing, []);

  // In a layer with the dependency beside it in lib/, nothing is missing.
  const layer = await buildLayer({
    vendorLibs: [lib, join(sub, 'libvendordep.so')],
    outDir: join(sub, 'out'),
  });
  assert.ok(layer.entries.includes('lib/libvendordep.so'));
  for (const r of layer.reports) assert.deepEqual(r.missing, [], r.name);
});

test(`an architecture mismatch is refused (--arch ${otherArch} with the ${hostArch} build)`, () => {
  const out = join(dir, 'mismatch');
  const built = run('layers/build.ts', [
    '--arch',
    otherArch,
    '--vendor-lib',
    findSoftHsmModule(),
    '--out',
    out,
  ]);
  assert.equal(built.status, 1);
  assert.match(built.stderr, new RegExp(`--arch ${otherArch}, but .*pkcs11\\.node is ${hostArch}`));
  assert.equal(existsSync(join(out, `pkcs11-layer-${otherArch}.zip`)), false);

  const bad = run('layers/build.ts', [
    '--arch',
    'ppc64le',
    '--vendor-lib',
    findSoftHsmModule(),
    '--out',
    out,
  ]);
  assert.equal(bad.status, 1);
  assert.match(bad.stderr, /--arch must be x86_64 or arm64/);
});

test('the build needs a vendor library, or the demo, not both', async () => {
  await assert.rejects(buildLayer({ outDir: join(dir, 'none') }), /--vendor-lib is required/);
  await assert.rejects(
    buildLayer({ demoSoftHsm: true, vendorLibs: [findSoftHsmModule()], outDir: join(dir, 'none') }),
    /takes no --vendor-lib/,
  );
});
