import { chmodSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { checkKvmDevice, chooseAccelerator, runKvmProbe, type KvmState } from './accelerator';

const noDevice: KvmState = { deviceOk: false, deviceDetail: '/dev/kvm cannot be opened (ENOENT)' };
const deviceOnly: KvmState = { deviceOk: true, deviceDetail: '/dev/kvm opens' };
const probePassed: KvmState = { ...deviceOnly, probe: { passed: true, detail: 'guest up', durationMs: 900 } };
const probeFailed: KvmState = { ...deviceOnly, probe: { passed: false, detail: 'guest did not come up (hangs under kvm)', durationMs: 30_000 } };

describe('choosing the accelerator', () => {
  it('tcg is always usable and used when configured', () => {
    for (const kvm of [noDevice, deviceOnly, probePassed, probeFailed]) {
      expect(chooseAccelerator('tcg', kvm)).toMatchObject({ accelerator: 'tcg' });
      expect(chooseAccelerator('tcg', kvm).usable).toContain('tcg');
    }
  });

  it('auto picks tcg when /dev/kvm merely opens: no probe, no kvm (guests hang under kvm on such hosts)', () => {
    const choice = chooseAccelerator('auto', deviceOnly);
    expect(choice).toMatchObject({ accelerator: 'tcg', usable: ['tcg'] });
    expect(choice.reason).toMatch(/no kvm probe configured/);
    expect(chooseAccelerator('auto', noDevice)).toMatchObject({ accelerator: 'tcg' });
    expect(chooseAccelerator('auto', probeFailed)).toMatchObject({ accelerator: 'tcg', reason: expect.stringContaining('probe failed') });
  });

  it('auto picks kvm only when /dev/kvm opens and the configured probe passed', () => {
    expect(chooseAccelerator('auto', probePassed)).toMatchObject({ accelerator: 'kvm', usable: ['tcg', 'kvm'] });
  });

  it('explicit kvm is used as configured, unless /dev/kvm cannot be opened or a configured probe failed', () => {
    expect(chooseAccelerator('kvm', deviceOnly)).toMatchObject({ accelerator: 'kvm' });
    expect(chooseAccelerator('kvm', probePassed)).toMatchObject({ accelerator: 'kvm' });
    expect(chooseAccelerator('kvm', noDevice)).toMatchObject({ accelerator: undefined, reason: expect.stringContaining('cannot be opened') });
    expect(chooseAccelerator('kvm', probeFailed)).toMatchObject({ accelerator: undefined, reason: expect.stringContaining('probe failed') });
  });

  it('checks whether a device opens', async () => {
    expect(await checkKvmDevice('/nonexistent/kvm')).toMatchObject({ ok: false, detail: expect.stringContaining('ENOENT') });
    expect(await checkKvmDevice('/dev/null')).toMatchObject({ ok: true });
  });
});

describe('kvm probe (with a fake qemu)', () => {
  let dir: string;

  // A stand-in for qemu: finds `-serial file:PATH` in its argv and, after
  // a delay, writes the given text there (or never), then sleeps.
  const fakeQemu = (behaviour: 'boots' | 'hangs' | 'aborts') => {
    const path = join(dir, `qemu-${behaviour}`);
    writeFileSync(
      path,
      `#!/bin/sh
console=""
while [ $# -gt 0 ]; do
  case "$1" in -serial) console="\${2#file:}"; shift;; esac
  shift
done
case "${behaviour}" in
  boots) sleep 0.2; echo "corral-guest-ready" >> "$console";;
  aborts) echo "qemu: failed to set MSR 0x10a" >&2; exit 134;;
esac
exec sleep 60
`,
    );
    chmodSync(path, 0o755);
    return path;
  };

  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'corral-kvm-probe-'));
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  const probe = { kernel: '/k', initrd: '/i', expect: 'corral-guest-ready' };

  it('passes when the guest writes the expected console line, and kills qemu', async () => {
    const outcome = await runKvmProbe({ qemuPath: fakeQemu('boots'), workRoot: dir, probe: { ...probe, timeoutMs: 10_000 }, pollMs: 20 });
    expect(outcome).toMatchObject({ passed: true });
    expect(outcome.durationMs).toBeLessThan(5000);
    // Its scratch directory is gone.
    expect(readdirSync(dir).filter((f) => f.startsWith('kvm-probe-'))).toEqual([]);
  });

  it('fails within its time limit when the guest hangs: never waits longer', async () => {
    const started = Date.now();
    const outcome = await runKvmProbe({ qemuPath: fakeQemu('hangs'), workRoot: dir, probe: { ...probe, timeoutMs: 400 }, pollMs: 20 });
    expect(outcome).toMatchObject({ passed: false, detail: expect.stringContaining('within 400 ms') });
    expect(Date.now() - started).toBeLessThan(5000);
  });

  it('fails at once when qemu exits, with its last words', async () => {
    const outcome = await runKvmProbe({ qemuPath: fakeQemu('aborts'), workRoot: dir, probe: { ...probe, timeoutMs: 10_000 }, pollMs: 20 });
    expect(outcome).toMatchObject({ passed: false, detail: expect.stringContaining('failed to set MSR') });
    expect(outcome.durationMs).toBeLessThan(5000);
  });

  it('fails when qemu cannot be started', async () => {
    const outcome = await runKvmProbe({ qemuPath: join(dir, 'missing-qemu'), workRoot: dir, probe });
    expect(outcome).toMatchObject({ passed: false, detail: expect.stringContaining('could not be started') });
  });
});
