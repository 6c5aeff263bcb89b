import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { criContent, readCriLogTail } from './cri-log';
import { clampUlimit, explicitUlimitsRequired, parseHardLimits } from './host-limits';

// As written by conmon for `echo a; echo; echo err >&2; printf "x y  "; sleep .1; printf "z\n"; printf nonl`.
const SAMPLE = [
  '2026-11-23T18:21:27.773911225+00:00 stdout F a',
  '2026-11-23T18:21:27.773911225+00:00 stdout F ',
  '2026-11-23T18:21:27.773911225+00:00 stdout P x y  ',
  '2026-11-23T18:21:27.774131999+00:00 stderr F err',
  '2026-11-23T18:21:27.875600325+00:00 stdout F z',
  '2026-11-23T18:21:27.875600325+00:00 stdout P nonl',
  '',
].join('\n');

describe('CRI log files', () => {
  let dir: string;
  beforeAll(() => (dir = mkdtempSync(join(tmpdir(), 'corral-cri-'))));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('joins partial records and keeps stdout and stderr in file order', () => {
    expect(criContent(Buffer.from(SAMPLE)).toString()).toBe('a\n\nx y  err\nz\nnonl');
  });

  it('leaves out a record still being written and lines that are not records', () => {
    expect(criContent(Buffer.from('garbage\n2026-11-23T18:21:27Z stdout F ok\n2026-11-23T18:21:27Z stdout F half')).toString()).toBe('ok\n');
  });

  it('reads the tail of a file, walking back chunk by chunk', async () => {
    const path = join(dir, 'ctr.log');
    const lines = Array.from({ length: 2000 }, (_, i) => `2026-11-23T18:21:27.773911225+00:00 ${i % 2 ? 'stderr' : 'stdout'} F line ${i}`);
    writeFileSync(path, `${lines.join('\n')}\n`);
    const all = Array.from({ length: 2000 }, (_, i) => `line ${i}\n`).join('');

    const tail = await readCriLogTail(path, { tailBytes: 30, chunkBytes: 256 });
    expect(tail).toEqual({ data: Buffer.from(all.slice(-30)), truncated: true });

    const whole = await readCriLogTail(path, { tailBytes: 1_000_000, chunkBytes: 4096 });
    expect(whole?.data.toString()).toBe(all);
    expect(whole?.truncated).toBe(false);
  });

  it('reports a missing file as undefined and an empty one as empty', async () => {
    expect(await readCriLogTail(join(dir, 'nope.log'), { tailBytes: 10 })).toBeUndefined();
    writeFileSync(join(dir, 'empty.log'), '');
    expect(await readCriLogTail(join(dir, 'empty.log'), { tailBytes: 10 })).toEqual({ data: Buffer.alloc(0), truncated: false });
  });
});

describe('host rlimits', () => {
  const limits = [
    'Limit                     Soft Limit           Hard Limit           Units     ',
    'Max cpu time              unlimited            unlimited            seconds   ',
    'Max processes             96364                96364                processes ',
    'Max open files            20000                20000                files     ',
  ].join('\n');

  it('reads hard limits and decides whether podman needs explicit ulimits', () => {
    expect(parseHardLimits(limits)).toEqual({ nofile: 20000, nproc: 96364 });
    expect(explicitUlimitsRequired({ nofile: 20000, nproc: 96364 })).toBe(true);
    expect(explicitUlimitsRequired({ nofile: 1_048_576, nproc: Infinity })).toBe(false);
    expect(parseHardLimits('Max open files  1024  unlimited  files')).toEqual({ nofile: Infinity });
  });

  it('lowers configured limits to the host hard limit', () => {
    expect(clampUlimit({ soft: 1024, hard: 65536 }, 20000)).toEqual({ soft: 1024, hard: 20000 });
    expect(clampUlimit({ soft: 1024, hard: 1024 }, undefined)).toEqual({ soft: 1024, hard: 1024 });
  });
});
