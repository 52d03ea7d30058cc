// Certificates for the mutual TLS tests, made with the openssl CLI in a temporary folder: a CA,
// clients it signs (good, wrong CN, expired), a client of another CA, and a self-signed client.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface Pem {
  cert: Buffer;
  key: Buffer;
}

export interface TestCertificates {
  dir: string;
  caFile: string;
  good: Pem;
  otherRegion: Pem;
  wrongCn: Pem;
  expired: Pem;
  otherCa: Pem;
  selfSigned: Pem;
}

const openssl = (dir: string, args: string[]) => execFileSync('openssl', args, { cwd: dir, stdio: 'pipe' });
const EC = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];

function ca(dir: string, name: string): void {
  openssl(dir, [
    'req',
    '-x509',
    ...EC,
    '-keyout',
    `${name}.key`,
    '-out',
    `${name}.pem`,
    '-days',
    '30',
    '-subj',
    `/CN=${name}`,
  ]);
}

function client(dir: string, name: string, cn: string, signer: string, dates?: [string, string]): Pem {
  openssl(dir, [
    'req',
    ...EC,
    '-keyout',
    `${name}.key`,
    '-out',
    `${name}.csr`,
    '-subj',
    `/O=Amazon/CN=${cn}`,
  ]);
  if (dates === undefined) {
    openssl(dir, [
      'x509',
      '-req',
      '-in',
      `${name}.csr`,
      '-CA',
      `${signer}.pem`,
      '-CAkey',
      `${signer}.key`,
      '-CAcreateserial',
      '-out',
      `${name}.pem`,
      '-days',
      '30',
    ]);
  } else {
    // `openssl ca` is the OpenSSL 3.0 way to choose the validity dates (here: in the past).
    writeFileSync(join(dir, 'index.txt'), '');
    writeFileSync(join(dir, 'serial'), '1000\n');
    writeFileSync(
      join(dir, 'ca.cnf'),
      `[ca]\ndefault_ca = d\n[d]\ndir = ${dir}\ndatabase = ${dir}/index.txt\nnew_certs_dir = ${dir}\nserial = ${dir}/serial\ndefault_md = sha256\npolicy = p\n[p]\ncommonName = supplied\norganizationName = optional\n`,
    );
    openssl(dir, [
      'ca',
      '-batch',
      '-config',
      'ca.cnf',
      '-cert',
      `${signer}.pem`,
      '-keyfile',
      `${signer}.key`,
      '-in',
      `${name}.csr`,
      '-out',
      `${name}.pem`,
      '-startdate',
      dates[0],
      '-enddate',
      dates[1],
      '-notext',
    ]);
  }
  return { cert: readFileSync(join(dir, `${name}.pem`)), key: readFileSync(join(dir, `${name}.key`)) };
}

export function makeCertificates(): TestCertificates {
  const dir = mkdtempSync(join(tmpdir(), 'xks-certs-'));
  ca(dir, 'kms-ca');
  ca(dir, 'other-ca');
  openssl(dir, [
    'req',
    '-x509',
    ...EC,
    '-keyout',
    'self.key',
    '-out',
    'self.pem',
    '-days',
    '30',
    '-subj',
    '/CN=cks.kms.eu-west-1.amazonaws.com',
  ]);
  return {
    dir,
    caFile: join(dir, 'kms-ca.pem'),
    good: client(dir, 'good', 'cks.kms.eu-west-1.amazonaws.com', 'kms-ca'),
    otherRegion: client(dir, 'other-region', 'cks.kms.ap-south-2.amazonaws.com', 'kms-ca'),
    wrongCn: client(dir, 'wrong-cn', 'attacker.example.com', 'kms-ca'),
    expired: client(dir, 'expired', 'cks.kms.eu-west-1.amazonaws.com', 'kms-ca', [
      '20200101000000Z',
      '20200102000000Z',
    ]),
    otherCa: client(dir, 'other', 'cks.kms.eu-west-1.amazonaws.com', 'other-ca'),
    selfSigned: { cert: readFileSync(join(dir, 'self.pem')), key: readFileSync(join(dir, 'self.key')) },
  };
}
