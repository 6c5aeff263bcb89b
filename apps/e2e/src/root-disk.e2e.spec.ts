import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { createExecutor, type ExecResult, type Executor } from '@corral/exec';
import { startSystem, type RunningSystem } from '@corral/launcher';
import { silentLogger } from '@corral/logging';
import { createTestDatabase, ensureMicrovmImage, eventually, microvmImageUnavailableReason, natsUrlOrSkip, qemuProcessesUnder, UNIKERNEL_READY_MARKER, writeUnikernelImage, type TestDatabase } from '@corral/testing';

// Root disks with every hop real: a microVM created through the CLI with
// --root-disk (gRPC → gateway → scheduler → the agent, which clones the base
// with its volume manager: qcow2 overlays here) boots on its own overlay;
// what the guest writes (exec over the REST WebSocket and the CLI) lands in
// the overlay, never in the base; a purge over REST leaves no overlay, no
// volume record and no qemu behind under the agent's state dir. A unikernel
// created over REST takes its disk the same way: a clone of its image.

interface TestSocket {
  on(event: 'message', listener: (data: Buffer) => void): void;
  on(event: 'close', listener: (code: number) => void): void;
  on(event: 'open', listener: () => void): void;
  on(event: 'unexpected-response', listener: (req: unknown, res: { statusCode: number }) => void): void;
  on(event: 'error', listener: (err: Error) => void): void;
  send(data: Buffer): void;
}
// ws has no types installed; @fastify/websocket (the gateway's) depends on it.
const WebSocket = createRequire(__filename)('ws') as new (url: string, options: { headers: Record<string, string> }) => TestSocket;

const repoRoot = resolve(__dirname, '..', '..', '..');
const databaseUrl = process.env.DATABASE_URL;
const natsUrl = natsUrlOrSkip();
const vmMissing = !existsSync('/usr/bin/qemu-system-x86_64')
  ? 'qemu-system-x86_64 is not installed'
  : !existsSync('/usr/bin/qemu-img')
    ? 'qemu-img is not installed'
    : microvmImageUnavailableReason();
const skipReason = !databaseUrl || !natsUrl ? 'DATABASE_URL and NATS_URL must both be set' : vmMissing;
if (skipReason) console.warn(`e2e root disk scenario skipped: ${skipReason}`);
const describeE2e = skipReason ? describe.skip : describe;

jest.setTimeout(240_000);

const STDIN_EOF = 5;
const STDOUT = 1;
const EXIT = 4;
const BASE_MARKER = 'corral-e2e-base-block-0';
const GUEST_MARKER = 'corral-e2e-written-in-guest';

const sha256 = (path: string) => createHash('sha256').update(readFileSync(path)).digest('hex');

/** Every file under `dir` whose name ends in `suffix`, recursively. */
function filesEndingIn(dir: string, suffix: string): string[] {
  if (!existsSync(dir)) return [];
  return (readdirSync(dir, { recursive: true }) as string[]).filter((name) => name.endsWith(suffix)).map((name) => join(dir, name));
}

describeE2e('root disks end to end', () => {
  let db: TestDatabase;
  let system: RunningSystem;
  let dataDir: string;
  let adminKey: string;
  let cli: Executor;

  const api = async (method: string, path: string, body?: unknown) => {
    const res = await fetch(`${system.gatewayUrl}${path}`, {
      method,
      headers: { authorization: `Bearer ${adminKey}`, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
      ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
    });
    return { status: res.status, json: (await res.json().catch(() => undefined)) as Record<string, unknown> | undefined };
  };

  const settled = (id: string) =>
    eventually(
      async () => {
        const { json } = await api('GET', `/v1/workloads/${id}`);
        return json && ['running', 'failed', 'stopped'].includes(json.state as string) ? json : undefined;
      },
      { timeoutMs: 90_000, what: `workload ${id} to run` },
    );

  const corral = (args: string[]) =>
    cli.run<{ exitCode: number; stdout: string; stderr: string }>({
      program: process.execPath,
      args: ['--import', 'tsx', join(repoRoot, 'apps/cli/src/main.ts'), ...args],
      env: { CORRAL_ADDR: system.gatewayGrpcAddress, CORRAL_API_KEY: adminKey, TSX_TSCONFIG_PATH: join(repoRoot, 'tsconfig.base.json') },
      cwd: repoRoot,
      timeoutMs: 90_000,
      parse: (stdout, stderr) => ({ exitCode: 0, stdout, stderr }),
      mapError: (r: ExecResult) => Object.assign(new Error(`corral exited ${r.exitCode}`), { outcome: { exitCode: r.exitCode ?? -1, stdout: r.stdout, stderr: r.stderr } }),
    }).catch((err: { outcome?: { exitCode: number; stdout: string; stderr: string } }) => {
      if (err.outcome) return err.outcome;
      throw err;
    });

  /** One buffered exec over the REST WebSocket (no stdin); the exit code is undefined when the guest agent did not answer. */
  const wsExec = (id: string, command: string[]) =>
    new Promise<{ stdout: string; exit?: number; status?: number }>((resolvePromise, reject) => {
      const query = command.map((c) => `command=${encodeURIComponent(c)}`).join('&');
      const socket = new WebSocket(`${system.gatewayUrl.replace(/^http/, 'ws')}/v1/workloads/${id}/exec?${query}`, { headers: { authorization: `Bearer ${adminKey}` } });
      let stdout = '';
      let exit: number | undefined;
      socket.on('unexpected-response', (_req, res) => resolvePromise({ stdout, status: res.statusCode }));
      socket.on('error', reject);
      socket.on('open', () => socket.send(Buffer.from([STDIN_EOF])));
      socket.on('message', (data) => {
        if (data[0] === STDOUT) stdout += data.subarray(1).toString();
        if (data[0] === EXIT) exit = (JSON.parse(data.subarray(1).toString()) as { exitCode: number }).exitCode;
      });
      socket.on('close', () => resolvePromise({ stdout, exit }));
    });

  beforeAll(async () => {
    db = await createTestDatabase();
    // Short: the agent's QMP socket paths must fit in 107 bytes.
    dataDir = mkdtempSync(join(tmpdir(), 'crd-e2e-'));
    system = await startSystem({ repoRoot, dataDir, databaseUrl: db.url, natsUrl, portsMode: 'free', logLevel: 'debug' });
    adminKey = system.adminKey as string;
    cli = createExecutor({ allowedPrograms: [process.execPath], logger: silentLogger });
  });

  afterAll(async () => {
    await system?.stop();
    for (const pid of dataDir ? qemuProcessesUnder(dataDir) : []) process.kill(pid, 'SIGKILL');
    await db?.drop();
    if (dataDir) rmSync(dataDir, { recursive: true, force: true });
  });

  it('boots a microVM created through the CLI with --root-disk on its own overlay, keeps guest writes out of the base, and a purge leaves no overlay', async () => {
    const image = await ensureMicrovmImage();
    // A raw 16 MiB base whose first block says what it is; never written.
    const baseImage = join(dataDir, 'base.raw');
    const base = Buffer.alloc(16 * 1024 * 1024);
    base.write(BASE_MARKER, 0);
    writeFileSync(baseImage, base);
    const baseHash = sha256(baseImage);

    const created = await corral([
      '--output', 'json', 'workloads', 'run', 'rd-vm', '--driver', 'qemu', '--vm-mode', 'microvm',
      '--kernel', image.kernel, '--initrd', image.initrd, '--kernel-args', image.kernelArgs, '--root-disk', baseImage,
      '--memory', '256', '--vcpus', '1',
    ]);
    expect(created).toMatchObject({ exitCode: 0 });
    const { id } = JSON.parse(created.stdout) as { id: string };
    expect(await settled(id)).toMatchObject({ state: 'running', vm: { mode: 'microvm', rootDisk: baseImage } });

    // The agent cloned the base into an overlay of the VM's own, and qemu runs on it, not on the base.
    const agentDir = join(dataDir, 'agent');
    const overlays = filesEndingIn(join(agentDir, 'volumes'), '.qcow2');
    expect(overlays).toHaveLength(1);
    const [overlay] = overlays;
    const [pid] = qemuProcessesUnder(agentDir);
    const argv = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
    expect(argv.some((a) => a.startsWith(`file=${overlay},format=qcow2`))).toBe(true);
    expect(argv.some((a) => a.includes(baseImage))).toBe(false);

    // In the guest, over REST: the disk reads through to the base.
    const before = await eventually(
      async () => {
        const outcome = await wsExec(id, ['head', '-c', String(BASE_MARKER.length), '/dev/vda']);
        return outcome.exit === undefined ? undefined : outcome;
      },
      { timeoutMs: 90_000, intervalMs: 1000, what: 'the guest agent' },
    );
    expect(before).toEqual({ stdout: BASE_MARKER, exit: 0 });

    // Through the CLI: the guest writes over the start of its disk and reads it back.
    const allocatedBefore = statSync(overlay).blocks * 512;
    await expect(corral(['exec', id, '--', 'sh', '-c', `head -c 1048576 /dev/urandom > /dev/vda && printf ${GUEST_MARKER} > /dev/vda && sync`])).resolves.toMatchObject({ exitCode: 0 });
    await expect(corral(['exec', id, '--', 'head', '-c', String(GUEST_MARKER.length), '/dev/vda'])).resolves.toMatchObject({ exitCode: 0, stdout: GUEST_MARKER });

    // The write is in the overlay; the base is byte for byte what it was.
    expect(statSync(overlay).blocks * 512).toBeGreaterThan(allocatedBefore);
    expect(sha256(baseImage)).toBe(baseHash);
    expect(readFileSync(baseImage).subarray(0, BASE_MARKER.length).toString()).toBe(BASE_MARKER);

    // Purge over REST: the VM, its overlay and its volume record all go.
    const purged = await api('DELETE', `/v1/workloads/${id}?purge=true`);
    expect(purged).toMatchObject({ status: 200, json: { state: 'retired' } });
    await eventually(() => (qemuProcessesUnder(agentDir).length === 0 ? true : undefined), { timeoutMs: 15_000, what: 'qemu gone' });
    expect(filesEndingIn(agentDir, '.qcow2')).toEqual([]);
    const volumeState = filesEndingIn(join(agentDir, 'volumes'), 'state.json').map((f) => JSON.parse(readFileSync(f, 'utf8')) as { clones: object; bases: object });
    expect(volumeState).toEqual([expect.objectContaining({ clones: {}, bases: {} })]);
    expect(existsSync(join(agentDir, 'workloads', `${id}.json`))).toBe(false);
    expect(sha256(baseImage)).toBe(baseHash);
  });

  it('boots a unikernel created over REST from its own clone of the image, and a purge removes the clone', async () => {
    const image = writeUnikernelImage(dataDir);
    const imageHash = sha256(image);
    const created = await api('POST', '/v1/workloads', { name: 'rd-unikernel', driver: 'qemu', image, vm: { mode: 'unikernel' }, resources: { memoryMb: 64, vcpus: 1 } });
    expect(created.status).toBe(201);
    const id = created.json?.id as string;
    expect(await settled(id)).toMatchObject({ state: 'running', image, vm: { mode: 'unikernel' } });

    const agentDir = join(dataDir, 'agent');
    const overlays = filesEndingIn(join(agentDir, 'volumes'), '.qcow2');
    expect(overlays).toHaveLength(1);
    const [pid] = qemuProcessesUnder(agentDir);
    const drives = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter((a) => a.startsWith('file='));
    expect(drives).toEqual([expect.stringMatching(new RegExp(`^file=${overlays[0]},format=qcow2`))]);
    await eventually(
      async () => {
        const res = await fetch(`${system.gatewayUrl}/v1/workloads/${id}/logs`, { headers: { authorization: `Bearer ${adminKey}` } });
        return (await res.text()).includes(UNIKERNEL_READY_MARKER) ? true : undefined;
      },
      { timeoutMs: 60_000, intervalMs: 500, what: 'the unikernel marker in its logs' },
    );

    expect(await api('DELETE', `/v1/workloads/${id}?purge=true`)).toMatchObject({ status: 200, json: { state: 'retired' } });
    await eventually(() => (qemuProcessesUnder(agentDir).length === 0 ? true : undefined), { timeoutMs: 15_000, what: 'qemu gone' });
    expect(filesEndingIn(agentDir, '.qcow2')).toEqual([]);
    expect(sha256(image)).toBe(imageHash);
  });
});
