import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { silentLogger } from '@corral/logging';
import { DriverRegistry } from '../drivers/driver-registry';
import type { TaskHandle } from '../drivers/driver';
import { FakeDriver } from '../drivers/fake/fake-driver';
import type { LogRange } from './log-follow';
import { WorkloadSupervisor } from './workload-supervisor';

// Following a log whose offsets are not output bytes (podman's CRI file:
// records frame the output). The driver says where each read ends and where
// the tail starts; the supervisor must continue from there, also past
// records that carry no output, and never repeat or skip any.

/** A framed log: each record takes `frame` bytes of file around its output. */
class FramedLogDriver extends FakeDriver {
  readonly records: string[] = [];
  private readonly frame = 40;

  private offsets(): number[] {
    const starts: number[] = [];
    let at = 0;
    for (const r of this.records) {
      starts.push(at);
      at += this.frame + Buffer.byteLength(r);
    }
    starts.push(at);
    return starts;
  }

  async readLogsFrom(_handle: TaskHandle, options: { offset: number; maxBytes: number }): Promise<LogRange> {
    const starts = this.offsets();
    const size = starts[starts.length - 1];
    const first = starts.indexOf(options.offset);
    if (first < 0) throw new Error(`offset ${options.offset} is not a record boundary`);
    // One record per read, to exercise the loop.
    if (first >= this.records.length || options.maxBytes === 0) return { data: Buffer.alloc(0), size, nextOffset: options.offset };
    return { data: Buffer.from(this.records[first]), size, nextOffset: starts[first + 1] };
  }

  async readLogTailForFollow(_handle: TaskHandle, options: { tailBytes: number }): Promise<{ data: Buffer; nextOffset: number }> {
    const starts = this.offsets();
    const all = this.records.join('');
    return { data: Buffer.from(all.slice(-options.tailBytes)), nextOffset: starts[starts.length - 1] };
  }
}

describe('following a framed log', () => {
  let stateDir: string;
  let supervisor: WorkloadSupervisor;
  let driver: FramedLogDriver;

  beforeEach(async () => {
    stateDir = mkdtempSync(join(tmpdir(), 'corral-follow-'));
    driver = new FramedLogDriver({ name: 'process' });
    supervisor = new WorkloadSupervisor({ hostId: 'host-1', stateDir, drivers: new DriverRegistry(silentLogger).register(driver), bus: { publish: () => undefined }, logger: silentLogger });
    await supervisor.recover();
  });

  afterEach(async () => {
    await supervisor.close();
    rmSync(stateDir, { recursive: true, force: true });
  });

  it('starts with the driver-given tail, continues at its offset past empty records, and ends when the workload exits', async () => {
    driver.records.push('old line 1\n', 'old line 2\n');
    await supervisor.start({ workloadId: 'w1', name: 'web', driver: 'process', command: ['/bin/server'], env: {}, labels: {} });
    const received: string[] = [];
    const following = (async () => {
      for await (const chunk of supervisor.streamLogs('w1', { tailBytes: 11, follow: true, pollMs: 5 })) {
        received.push(chunk.toString());
        if (received.length === 1) driver.records.push('', 'new line 3\n', '', 'new line 4\n');
        if (received.length === 3) driver.machine.exit('w1', { exitCode: 0 });
      }
    })();
    await following;
    expect(received).toEqual(['old line 2\n', 'new line 3\n', 'new line 4\n']);
  });
});
