import { readFileSync } from 'node:fs';
import { processesWithCommandLine, qemuProcessesUnder } from './processes';

describe('processes by command line', () => {
  it('finds this test process by its own command line, and nothing for a line no process has', () => {
    const ownArguments = readFileSync('/proc/self/cmdline', 'utf8').split('\0').filter(Boolean);
    expect(processesWithCommandLine(...ownArguments)).toContain(process.pid);
    expect(qemuProcessesUnder(`/nonexistent/${process.pid}/corral-no-such-dir`)).toEqual([]);
  });
});
