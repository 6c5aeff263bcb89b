import { randomBytes } from 'node:crypto';
import { spawnInteractive } from '@corral/exec';
import { EXEC_MARKER_VARIABLE, killMarkedProcesses } from './exec-reaper';

// The reaper against real processes: only the ones carrying the marker die.

describe('killMarkedProcesses', () => {
  it('kills the processes whose environment carries the marker, and no other', async () => {
    const marker = randomBytes(16).toString('hex');
    const other = randomBytes(16).toString('hex');
    const marked = await spawnInteractive({ program: '/bin/sleep', args: ['300'], env: { A: 'x', [EXEC_MARKER_VARIABLE]: marker } });
    const unmarked = await spawnInteractive({ program: '/bin/sleep', args: ['300'], env: { [EXEC_MARKER_VARIABLE]: other, B: 'y' } });
    try {
      expect(killMarkedProcesses(marker)).toBe(1);
      await expect(marked.exited).resolves.toMatchObject({ signal: 'SIGKILL' });
      expect(unmarked.kill('SIGCONT')).toBe(true); // still there
    } finally {
      marked.kill();
      unmarked.kill();
    }
  });

  it('refuses anything but a marker', () => {
    expect(() => killMarkedProcesses('')).toThrow(RangeError);
    expect(() => killMarkedProcesses('abc')).toThrow(RangeError);
  });
});
