import { existsSync } from 'node:fs';
import type { ScriptedCall, ScriptedOutput } from './scripted-executor';

// A kernel with loop devices and device-mapper, in memory, answering
// losetup and dmsetup as the real ones do (including their refusals: a loop
// device under a live snapshot is busy), so the device-mapper volume manager
// can be tested where the real kernel lacks device-mapper.

interface Loop {
  backFile: string;
  readOnly: boolean;
}

interface Snapshot {
  uuid: string;
  origin: string;
  cow: string;
  table: string;
}

export class FakeDmHost {
  readonly loops = new Map<string, Loop>();
  readonly snapshots = new Map<string, Snapshot>();
  /** Called before each command with the state as it is then. */
  onCall?: (call: ScriptedCall, host: FakeDmHost) => void;
  private nextLoop = 0;

  respond = (call: ScriptedCall): ScriptedOutput => {
    this.onCall?.(call, this);
    if (call.program === 'losetup') return this.losetup(call.args);
    if (call.program === 'dmsetup') return this.dmsetup(call.args);
    return { exitCode: 127, stderr: `${call.program}: not on this fake host` };
  };

  /** Forgets every device, as a reboot does; files stay. */
  reboot(): void {
    this.loops.clear();
    this.snapshots.clear();
    this.nextLoop = 0;
  }

  private losetup(args: string[]): ScriptedOutput {
    if (args[0] === '--list') {
      const loopdevices = [...this.loops].map(([name, l]) => ({ name, 'back-file': l.backFile, ro: l.readOnly }));
      return { stdout: JSON.stringify({ loopdevices }, null, 3) };
    }
    if (args[0] === '--find' && args[1] === '--show') {
      const readOnly = args.includes('--read-only');
      const file = args[args.length - 1];
      if (!existsSync(file)) return { exitCode: 1, stderr: `losetup: ${file}: failed to set up loop device: No such file or directory` };
      while (this.loops.has(`/dev/loop${this.nextLoop}`)) this.nextLoop++;
      const name = `/dev/loop${this.nextLoop++}`;
      this.loops.set(name, { backFile: file, readOnly });
      return { stdout: `${name}\n` };
    }
    if (args[0] === '--detach') {
      const name = args[1];
      if (!this.loops.has(name)) return { exitCode: 1, stderr: `losetup: ${name}: detach failed: No such device or address` };
      if ([...this.snapshots.values()].some((s) => s.origin === name || s.cow === name)) {
        // The real kernel defers it (autoclear) rather than fail; a test wants to see the misuse.
        return { exitCode: 1, stderr: `losetup: ${name}: detach failed: Device or resource busy` };
      }
      this.loops.delete(name);
      return {};
    }
    return { exitCode: 1, stderr: `losetup: unexpected arguments ${args.join(' ')}` };
  }

  private dmsetup(args: string[]): ScriptedOutput {
    if (args[0] === 'create') {
      const name = args[1];
      const uuid = args[args.indexOf('--uuid') + 1];
      const table = args[args.indexOf('--table') + 1];
      if (this.snapshots.has(name)) return { exitCode: 1, stderr: `device-mapper: create ioctl on ${name} failed: Device or resource busy` };
      const [, , target, origin, cow] = table.split(' ');
      if (target !== 'snapshot' || !this.loops.has(origin) || !this.loops.has(cow)) {
        return { exitCode: 1, stderr: 'device-mapper: reload ioctl failed: No such device or address' };
      }
      this.snapshots.set(name, { uuid, origin, cow, table });
      return {};
    }
    if (args[0] === 'remove') {
      const name = args[args.length - 1];
      if (!this.snapshots.delete(name)) return { exitCode: 1, stderr: `Device ${name} not found\nCommand failed.` };
      return {};
    }
    if (args[0] === 'info') {
      if (this.snapshots.size === 0) return { stdout: 'No devices found\n' };
      return { stdout: [...this.snapshots].map(([name, s]) => `${name}\t${s.uuid}\n`).join('') };
    }
    return { exitCode: 1, stderr: `dmsetup: unexpected arguments ${args.join(' ')}` };
  }
}
