// Checks of the benchmark's own helpers (the benchmarks are no Nx project):
//
//   npx tsx --test bench/agent/lib/lib.test.ts

import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { InvalidArgumentError } from '@corral/domain';
import { freePort } from '@corral/testing';
import { qemuArgvDifference } from '../raw/qemu';
import { parseArgs } from './args';
import { Cleanup } from './cleanup';
import { waitServing } from './http';
import { appendResults } from './results';
import { percentile, ratio } from './stats';

describe('parseArgs', () => {
  it('defaults to every part and driver', () => {
    const o = parseArgs([], {});
    assert.deepEqual(o.parts, ['clone', 'create', 'pause', 'snapshot']);
    assert.deepEqual(o.drivers, ['process', 'podman', 'qemu']);
    assert.equal(o.append, true);
  });

  it('reads lists in canonical order, counts and flags', () => {
    const o = parseArgs(['--drivers', 'qemu,process', '--parts=pause', '--n', '7', '--vm-n=2', '--no-append', '--dir', '/var/tmp'], {});
    assert.deepEqual(o.drivers, ['process', 'qemu']);
    assert.deepEqual(o.parts, ['pause']);
    assert.equal(o.n, 7);
    assert.equal(o.vmN, 2);
    assert.equal(o.append, false);
    assert.equal(o.dir, '/var/tmp');
  });

  it('names the flag of bad input', () => {
    const field = (argv: string[]) => {
      try {
        parseArgs(argv, {});
      } catch (err) {
        assert.ok(err instanceof InvalidArgumentError);
        return err.field;
      }
      return 'no error';
    };
    assert.equal(field(['--n', '0']), '--n');
    assert.equal(field(['--drivers', 'docker']), '--drivers');
    assert.equal(field(['--dir', 'relative']), '--dir');
    assert.equal(field(['--pause-n']), '--pause-n');
    assert.equal(field(['--bogus']), '--bogus');
    assert.equal(field([]), 'no error');
  });
});

describe('stats', () => {
  it('takes nearest-rank percentiles', () => {
    const samples = [5, 1, 4, 2, 3, 6, 7, 8, 9, 10];
    assert.equal(percentile(samples, 50), 5);
    assert.equal(percentile(samples, 95), 10);
    assert.ok(Number.isNaN(percentile([], 50)));
    assert.equal(ratio(3, 2), '1.50×');
    assert.equal(ratio(1, 0), '–');
  });
});

describe('appendResults', () => {
  it('adds a missing description above the sections once, and appends sections in order', () => {
    const dir = mkdtempSync(join(tmpdir(), 'bench-results-'));
    try {
      const file = join(dir, 'RESULTS.md');
      writeFileSync(file, '# Results\n\n- `a` does a.\n\n## a — 1\n\nbody a\n');
      appendResults('## b — 1\n\nbody b', ['- `a` does a.', '- `b` does b,\n  on two lines.'], file);
      appendResults('## b — 2\n\nbody b2', ['- `b` does b,\n  on two lines.'], file);
      assert.equal(readFileSync(file, 'utf8'), '# Results\n\n- `a` does a.\n- `b` does b,\n  on two lines.\n\n## a — 1\n\nbody a\n\n## b — 1\n\nbody b\n\n## b — 2\n\nbody b2\n');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('qemuArgvDifference', () => {
  it('compares options and device types, not paths or ports', () => {
    const raw = ['-m', '256', '-netdev', 'user,id=n0,hostfwd=tcp:127.0.0.1:1-:80', '-device', 'virtio-net-pci,netdev=n0', '-kernel', '/a/vmlinuz', '-nodefaults'];
    const corral = ['-m', '256', '-netdev', 'user,id=n0,hostfwd=tcp:127.0.0.1:2-:80', '-device', 'virtio-net-pci,netdev=n0', '-kernel', '/b/vmlinuz', '-pidfile', '/b/pid', '-device', 'virtio-serial-pci,id=s', '-nodefaults'];
    assert.deepEqual(qemuArgvDifference(corral, raw), { corralOnly: ['-pidfile', '-device virtio-serial-pci'], rawOnly: [] });
  });
});

describe('waitServing', () => {
  it('resolves once a server that starts late answers with the page, and rejects for the wrong page', async () => {
    const port = await freePort();
    const server = createServer((_req, res) => res.end(_req.url === '/' ? '<p>the page</p>' : 'other'));
    const waiting = waitServing({ port, text: 'the page', intervalMs: 5, timeoutMs: 30_000 });
    // Not listening yet: the attempts are refused until it does.
    await new Promise((r) => setTimeout(r, 50));
    server.listen(port, '127.0.0.1');
    try {
      await waiting;
      await assert.rejects(waitServing({ port, text: 'absent text', intervalMs: 5, timeoutMs: 200 }), /did not serve.*unexpected page/);
      await assert.rejects(waitServing({ port, text: 'the page', intervalMs: 5, timeoutMs: 30_000, abandon: () => 'it exited' }), /never served: it exited/);
    } finally {
      server.close();
    }
  });
});

describe('Cleanup', () => {
  it('undoes newest first, runs an undo once, and collects failures', async () => {
    const cleanup = new Cleanup();
    const done: string[] = [];
    cleanup.add('a', () => void done.push('a'));
    const undoB = cleanup.add('b', () => void done.push('b'));
    cleanup.add('c', () => {
      throw new Error('boom');
    });
    cleanup.add('d', () => void done.push('d'));
    await undoB();
    await undoB();
    const failures = await cleanup.runAll();
    assert.deepEqual(done, ['b', 'd', 'a']);
    assert.deepEqual(failures, ['c: boom']);
    assert.equal(cleanup.aborted, false);
    assert.doesNotThrow(() => cleanup.throwIfAborted());
  });
});
