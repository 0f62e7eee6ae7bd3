// Prints an account SAS for Azurite's well-known development account, and optionally
// creates a container with it. For local testing only: the key below is Azurite's
// published default, not a secret, and works only against the emulator.
//
//   node scripts/azurite-sas.mjs                       # SAS with r,w,d,l,a,c over blobs
//   node scripts/azurite-sas.mjs --permissions rl      # a SAS that cannot write
//   node scripts/azurite-sas.mjs --create http://127.0.0.1:10000/devstoreaccount1/culvert
import { createHmac } from 'node:crypto';

const ACCOUNT = 'devstoreaccount1';
const KEY = 'Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==';
const VERSION = '2022-11-02';

/** An account SAS query string (the string-to-sign of service version 2020-12-06 and later). */
export function accountSas({ permissions = 'rwdlac', expiry = '2099-12-31T00:00:00Z' } = {}) {
  const fields = { sp: permissions, ss: 'b', srt: 'sco', se: expiry, spr: 'https,http', sv: VERSION };
  const toSign = [ACCOUNT, fields.sp, fields.ss, fields.srt, '', fields.se, '', fields.spr, fields.sv, '', ''].join('\n');
  const sig = createHmac('sha256', Buffer.from(KEY, 'base64')).update(toSign).digest('base64');
  return `sv=${fields.sv}&ss=${fields.ss}&srt=${fields.srt}&sp=${fields.sp}&se=${encodeURIComponent(fields.se)}&spr=${encodeURIComponent(fields.spr)}&sig=${encodeURIComponent(sig)}`;
}

/** Create the container at `url` (no error when it exists). */
export async function createContainer(url, sas = accountSas()) {
  const res = await fetch(`${url.replace(/\/+$/, '')}?restype=container&${sas}`, { method: 'PUT', headers: { 'x-ms-version': '2021-12-02' } });
  if (res.status !== 201 && res.status !== 409) throw new Error(`creating ${url} answered ${res.status}: ${await res.text()}`);
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const args = process.argv.slice(2);
  const opt = (name) => {
    const i = args.indexOf(name);
    return i >= 0 ? args[i + 1] : undefined;
  };
  const sas = accountSas({ permissions: opt('--permissions'), expiry: opt('--expiry') });
  if (opt('--create')) await createContainer(opt('--create'), accountSas());
  console.log(sas);
}
