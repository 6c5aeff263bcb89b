import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { createExecutor, type ExecResult, type Executor } from '@corral/exec';
import { startSystem, type RunningSystem } from '@corral/launcher';
import { silentLogger } from '@corral/logging';
import {
  BUSYBOX_TEST_IMAGE,
  createTestDatabase,
  ensureBusyboxImage,
  ensureMicrovmImage,
  eventually,
  MICROVM_GUEST_HTTP_PORT,
  MICROVM_KERNEL_ARGS,
  MICROVM_PAGE_TEXT,
  microvmImageUnavailableReason,
  natsUrlOrSkip,
  podmanUnavailableReason,
  type TestDatabase,
} from '@corral/testing';

// Exec and files with every hop real: REST (WebSocket exec, streamed file
// bodies) and the CLI (gRPC) → gateway → scheduler → the workload's agent →
// podman (and the process driver), each service its own process on a real
// Postgres and NATS.

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
const describeE2e = databaseUrl && natsUrl ? describe : describe.skip;
if (!databaseUrl || !natsUrl) console.warn('e2e skipped: DATABASE_URL and NATS_URL must both be set');
const podmanMissing = podmanUnavailableReason();
if (podmanMissing) console.warn(`e2e podman exec/files scenario skipped: ${podmanMissing}`);
const vmMissing = existsSync('/usr/bin/qemu-system-x86_64') ? microvmImageUnavailableReason() : 'qemu-system-x86_64 is not installed';
if (vmMissing) console.warn(`e2e snapshot/restore scenario skipped: ${vmMissing}`);

jest.setTimeout(240_000);

const STDIN = 0;
const STDOUT = 1;
const STDERR = 2;
const EXIT = 4;
const STDIN_EOF = 5;

describeE2e('exec and files end to end', () => {
  let db: TestDatabase;
  let system: RunningSystem;
  let dataDir: string;
  let adminKey: string;
  let cli: Executor;

  const api = async (method: string, path: string, body?: string | Buffer) => {
    const res = await fetch(`${system.gatewayUrl}${path}`, {
      method,
      headers: { authorization: `Bearer ${adminKey}`, ...(body !== undefined ? { 'content-type': 'application/octet-stream' } : {}) },
      body,
    });
    return { status: res.status, text: await res.text(), type: res.headers.get('content-type') };
  };

  /** Runs the CLI; resolves with its exit code and output whatever the code. */
  const corral = (args: string[], stdin?: string) =>
    cli.run<{ exitCode: number; stdout: string; stderr: string }>({
      program: process.execPath,
      args: ['--import', 'tsx', join(repoRoot, 'apps/cli/src/main.ts'), ...args],
      env: { CORRAL_ADDR: system.gatewayGrpcAddress, CORRAL_API_KEY: adminKey, TSX_TSCONFIG_PATH: join(repoRoot, 'tsconfig.base.json') },
      cwd: repoRoot,
      timeoutMs: 60_000,
      ...(stdin !== undefined ? { stdin } : {}),
      parse: (stdout, stderr) => ({ exitCode: 0, stdout, stderr }),
      mapError: (r: ExecResult) => Object.assign(new Error(`corral exited ${r.exitCode}`), { outcome: { exitCode: r.exitCode ?? -1, stdout: r.stdout, stderr: r.stderr } }),
    }).catch((err: { outcome?: { exitCode: number; stdout: string; stderr: string } }) => {
      if (err.outcome) return err.outcome;
      throw err;
    });

  /** One exec over the REST WebSocket: sends stdin then end-of-stdin, collects until the server closes. */
  const wsExec = (id: string, command: string[], stdin: string) =>
    new Promise<{ stdout: string; stderr: string; exit?: number; status?: number }>((resolvePromise, reject) => {
      const query = command.map((c) => `command=${encodeURIComponent(c)}`).join('&');
      const socket = new WebSocket(`${system.gatewayUrl.replace(/^http/, 'ws')}/v1/workloads/${id}/exec?${query}`, { headers: { authorization: `Bearer ${adminKey}` } });
      let stdout = '';
      let stderr = '';
      let exit: number | undefined;
      socket.on('unexpected-response', (_req, res) => resolvePromise({ stdout, stderr, status: res.statusCode }));
      socket.on('error', reject);
      socket.on('open', () => {
        socket.send(Buffer.concat([Buffer.from([STDIN]), Buffer.from(stdin)]));
        socket.send(Buffer.from([STDIN_EOF]));
      });
      socket.on('message', (data) => {
        if (data[0] === STDOUT) stdout += data.subarray(1).toString();
        if (data[0] === STDERR) stderr += data.subarray(1).toString();
        if (data[0] === EXIT) exit = (JSON.parse(data.subarray(1).toString()) as { exitCode: number }).exitCode;
      });
      socket.on('close', () => resolvePromise({ stdout, stderr, exit }));
    });

  const waitRunning = (id: string) =>
    eventually(
      async () => {
        const res = await fetch(`${system.gatewayUrl}/v1/workloads/${id}`, { headers: { authorization: `Bearer ${adminKey}` } });
        const json = (await res.json()) as { state: string };
        return ['running', 'failed', 'stopped'].includes(json.state) ? json : undefined;
      },
      { timeoutMs: 60_000, what: `workload ${id} to run` },
    );

  const create = async (spec: Record<string, unknown>) => {
    const res = await fetch(`${system.gatewayUrl}/v1/workloads`, {
      method: 'POST',
      headers: { authorization: `Bearer ${adminKey}`, 'content-type': 'application/json' },
      body: JSON.stringify(spec),
    });
    expect(res.status).toBe(201);
    const { id } = (await res.json()) as { id: string };
    expect((await waitRunning(id)).state).toBe('running');
    return id;
  };

  beforeAll(async () => {
    db = await createTestDatabase();
    dataDir = mkdtempSync(join(tmpdir(), 'corral-e2e-exec-'));
    system = await startSystem({ repoRoot, dataDir, databaseUrl: db.url, natsUrl, portsMode: 'free', localAgent: false, logLevel: 'debug' });
    adminKey = system.adminKey as string;
    cli = createExecutor({ allowedPrograms: [process.execPath], logger: silentLogger });
    const token = await fetch(`${system.gatewayUrl}/v1/hosts/registration-tokens`, {
      method: 'POST',
      headers: { authorization: `Bearer ${adminKey}`, 'content-type': 'application/json' },
      body: JSON.stringify({ ttlSeconds: 600 }),
    }).then((r) => r.json() as Promise<{ token: string }>);
    await system.startAgent({ registrationToken: token.token });
    await eventually(
      async () => {
        const res = await fetch(`${system.gatewayUrl}/v1/hosts`, { headers: { authorization: `Bearer ${adminKey}` } });
        const { hosts } = (await res.json()) as { hosts: { status: string }[] };
        return hosts.some((h) => h.status === 'online') ? true : undefined;
      },
      { what: 'agent online' },
    );
  });

  afterAll(async () => {
    if (system) {
      const res = await fetch(`${system.gatewayUrl}/v1/workloads`, { headers: { authorization: `Bearer ${adminKey}` } }).catch(() => undefined);
      const { workloads } = ((await res?.json().catch(() => undefined)) ?? { workloads: [] }) as { workloads: { id: string; state: string }[] };
      for (const w of workloads) if (!['stopped', 'failed'].includes(w.state)) await api('DELETE', `/v1/workloads/${w.id}`);
      await system.stop();
    }
    await db?.drop();
    if (dataDir) rmSync(dataDir, { recursive: true, force: true });
  });

  (podmanMissing ? it.skip : it)('execs into a podman container and copies files in and out, over REST and through the CLI', async () => {
    await ensureBusyboxImage();
    const id = await create({ name: 'exec-box', driver: 'podman', image: BUSYBOX_TEST_IMAGE, command: ['sleep', '600'], resources: { memoryMb: 64 } });

    // REST exec: stdin in, stdout and stderr apart, the exit code last.
    await expect(wsExec(id, ['sh', '-c', 'cat; echo to-stderr >&2; exit 4'], 'piped through a websocket')).resolves.toEqual({
      stdout: 'piped through a websocket',
      stderr: 'to-stderr\n',
      exit: 4,
    });

    // REST files: PUT a file, GET it back, list its directory; `..` refused.
    const put = await api('PUT', `/v1/workloads/${id}/files?path=/tmp/hello.txt&mode=0640`, 'hello from REST\n');
    expect(put).toMatchObject({ status: 200 });
    expect(JSON.parse(put.text)).toEqual({ path: '/tmp/hello.txt', bytes: 16 });
    expect(await api('GET', `/v1/workloads/${id}/files?path=/tmp/hello.txt`)).toMatchObject({ status: 200, text: 'hello from REST\n', type: 'application/octet-stream' });
    const listing = await api('GET', `/v1/workloads/${id}/files?path=/tmp&list=true`);
    expect(JSON.parse(listing.text).entries).toEqual(expect.arrayContaining([expect.objectContaining({ name: 'hello.txt', kind: 'file', sizeBytes: 16, mode: 0o640 })]));
    expect((await api('GET', `/v1/workloads/${id}/files?path=${encodeURIComponent('/tmp/../etc/passwd')}`)).status).toBe(400);
    expect((await api('GET', `/v1/workloads/${id}/files?path=/no/such/file`)).status).toBe(404);

    // CLI exec: the command's exit code becomes corral's; -i passes stdin; -t gives a terminal.
    await expect(corral(['exec', id, '--', 'sh', '-c', 'echo from-cli; echo cli-err >&2; exit 3'])).resolves.toEqual({ exitCode: 3, stdout: 'from-cli\n', stderr: 'cli-err\n' });
    await expect(corral(['exec', '-i', id, '--', 'cat'], 'stdin through the CLI')).resolves.toMatchObject({ exitCode: 0, stdout: 'stdin through the CLI' });
    expect((await corral(['exec', '-t', id, '--', 'sh', '-c', 'test -t 1 && echo has-a-tty'])).stdout).toContain('has-a-tty');

    // CLI cp both ways, and to stdout.
    const local = mkdtempSync(join(tmpdir(), 'corral-e2e-cp-'));
    try {
      const payload = Buffer.alloc(200_000, 'z');
      writeFileSync(join(local, 'up.bin'), payload);
      const up = await corral(['cp', join(local, 'up.bin'), `${id}:/tmp/up.bin`]);
      expect(up).toMatchObject({ exitCode: 0, stdout: `200000 bytes written to ${id}:/tmp/up.bin\n` });
      expect(await corral(['cp', `${id}:/tmp/up.bin`, join(local, 'down.bin')])).toMatchObject({ exitCode: 0 });
      expect(readFileSync(join(local, 'down.bin')).equals(payload)).toBe(true);
      expect(await corral(['cp', `${id}:/tmp/hello.txt`, '-'])).toMatchObject({ exitCode: 0, stdout: 'hello from REST\n' });
      // A failed copy leaves no local file behind and says why.
      const missing = await corral(['cp', `${id}:/no/such/file`, join(local, 'never.bin')]);
      expect(missing.exitCode).toBe(1);
      expect(missing.stderr).toMatch(/not found/);
    } finally {
      rmSync(local, { recursive: true, force: true });
    }

    // podman cannot take memory snapshots: a 409, never a fake.
    expect((await api('POST', `/v1/workloads/${id}/snapshots`)).status).toBe(409);
    await api('DELETE', `/v1/workloads/${id}`);
  });

  (vmMissing ? it.skip : it)('execs and copies files into a running microVM through its guest agent, snapshots it over REST with progress, and restores it through the CLI and over REST to VMs that serve again', async () => {
    const image = await ensureMicrovmImage();
    const id = await create({
      name: 'snap-vm',
      driver: 'qemu',
      vm: { mode: 'microvm', kernel: image.kernel, initrd: image.initrd, kernelArgs: MICROVM_KERNEL_ARGS },
      routes: [{ name: 'http', port: MICROVM_GUEST_HTTP_PORT }],
      resources: { memoryMb: 256, vcpus: 1 },
    });
    const portOf = async (workload: string) => {
      const res = await fetch(`${system.gatewayUrl}/v1/workloads/${workload}`, { headers: { authorization: `Bearer ${adminKey}` } });
      return ((await res.json()) as { ports: { hostPort: number }[] }).ports[0].hostPort;
    };
    const serves = (port: number) =>
      eventually(
        async () => ((await fetch(`http://127.0.0.1:${port}/`, { signal: AbortSignal.timeout(3000) }).then((r) => r.text())).includes(MICROVM_PAGE_TEXT) ? true : undefined),
        { timeoutMs: 90_000, what: 'microVM HTTP' },
      );
    await serves(await portOf(id));

    // Exec and files inside the VM go through the QEMU guest agent: over the
    // REST WebSocket (stdin buffered until EOF: the guest agent has no
    // streams), and through the CLI. qemu-ga may answer a moment after httpd.
    const vmExec = await eventually(
      async () => {
        const outcome = await wsExec(id, ['/bin/sh', '-c', 'cat; echo vm-err >&2; exit 5'], 'into the guest');
        return outcome.exit === undefined ? undefined : outcome;
      },
      { timeoutMs: 60_000, what: 'guest agent exec' },
    );
    expect(vmExec).toEqual({ stdout: 'into the guest', stderr: 'vm-err\n', exit: 5 });
    expect(await api('PUT', `/v1/workloads/${id}/files?path=/tmp/in-vm.txt`, 'written through qemu-ga\n')).toMatchObject({ status: 200 });
    expect(await api('GET', `/v1/workloads/${id}/files?path=/tmp/in-vm.txt`)).toMatchObject({ status: 200, text: 'written through qemu-ga\n' });
    const vmListing = await api('GET', `/v1/workloads/${id}/files?path=/tmp&list=true`);
    expect(JSON.parse(vmListing.text).entries).toEqual(expect.arrayContaining([expect.objectContaining({ name: 'in-vm.txt', kind: 'file', sizeBytes: 24 })]));
    expect((await api('GET', `/v1/workloads/${id}/files?path=${encodeURIComponent('/tmp/../etc/passwd')}`)).status).toBe(400);
    await expect(corral(['exec', id, '--', '/bin/cat', '/tmp/in-vm.txt'])).resolves.toMatchObject({ exitCode: 0, stdout: 'written through qemu-ga\n' });

    const snapshot = await api('POST', `/v1/workloads/${id}/snapshots`);
    expect(snapshot).toMatchObject({ status: 200, type: 'application/x-ndjson' });
    const lines = snapshot.text.trim().split('\n').map((l) => JSON.parse(l) as { type: string; snapshotId?: string; bytes?: number });
    expect(lines.length).toBeGreaterThan(1);
    expect(lines.slice(0, -1).every((l) => l.type === 'progress')).toBe(true);
    const result = lines[lines.length - 1];
    expect(result).toMatchObject({ type: 'result', snapshotId: expect.stringMatching(/^snap-/), bytes: expect.any(Number) });

    // The source keeps running; the restored copy comes up from memory and serves on its own port.
    const restored = await corral(['--output', 'json', 'workloads', 'restore', id, result.snapshotId as string, '--name', 'snap-vm-copy']);
    expect(restored.exitCode).toBe(0);
    const copy = JSON.parse(restored.stdout) as { id: string; name: string; hostId: string };
    expect(copy.name).toBe('snap-vm-copy');
    expect((await waitRunning(copy.id)).state).toBe('running');
    await serves(await portOf(copy.id));
    await serves(await portOf(id));

    // The CLI shows a snapshot's progress on stderr and the result on stdout.
    const cliSnapshot = await corral(['workloads', 'snapshot', copy.id]);
    expect(cliSnapshot.exitCode).toBe(0);
    expect(cliSnapshot.stdout).toMatch(/Snapshot:\s+snap-/);
    expect(cliSnapshot.stderr).toMatch(/MiB of .* MiB sent/);

    const cliSnapshotId = /Snapshot:\s+(snap-\S+)/.exec(cliSnapshot.stdout)?.[1];
    expect(cliSnapshotId).toBeDefined();
    // A restore is placed on the snapshot's host like any workload, and a 2-core host has room for two 1-vCPU
    // VMs: the CLI's copy stops first.
    await api('DELETE', `/v1/workloads/${copy.id}`);

    // And a restore over REST: another VM, running from that snapshot's memory, serving on a port of its own.
    const restRestore = await fetch(`${system.gatewayUrl}/v1/workloads/${id}/snapshots/${result.snapshotId}/restore`, {
      method: 'POST',
      headers: { authorization: `Bearer ${adminKey}`, 'content-type': 'application/json' },
      body: JSON.stringify({ name: 'snap-vm-rest-copy' }),
    });
    expect(restRestore.status).toBe(201);
    const restCopy = (await restRestore.json()) as { id: string; name: string };
    expect(restCopy.name).toBe('snap-vm-rest-copy');
    expect((await waitRunning(restCopy.id)).state).toBe('running');
    await serves(await portOf(restCopy.id));
    await api('DELETE', `/v1/workloads/${restCopy.id}`);

    // An unknown snapshot is a 404, not a new broken workload returned as fine.
    const unknown = await corral(['workloads', 'restore', id, 'snap-20000101T000000-00000000']);
    expect(unknown.exitCode).toBe(1);
    expect(unknown.stderr).toMatch(/not found/);

    // Listed from the host's disk, with the storage it takes; deleted once,
    // then gone, and deleting it again is still fine.
    const listed = await api('GET', `/v1/workloads/${id}/snapshots`);
    expect(listed.status).toBe(200);
    const snapshots = (JSON.parse(listed.text) as { snapshots: { id: string; sourceWorkloadId: string; sizeBytes: number; driver: string; createdAt: string }[] }).snapshots;
    expect(snapshots).toEqual([expect.objectContaining({ id: result.snapshotId, sourceWorkloadId: id, driver: 'qemu', createdAt: expect.any(String) })]);
    expect(snapshots[0].sizeBytes).toBeGreaterThan(0);
    const cliList = await corral(['workloads', 'snapshots', id]);
    expect(cliList).toMatchObject({ exitCode: 0, stdout: expect.stringContaining(result.snapshotId as string) });
    expect((await api('DELETE', `/v1/workloads/${id}/snapshots/${result.snapshotId}`)).status).toBe(204);
    expect(JSON.parse((await api('GET', `/v1/workloads/${id}/snapshots`)).text)).toEqual({ snapshots: [] });
    expect((await api('DELETE', `/v1/workloads/${id}/snapshots/${result.snapshotId}`)).status).toBe(204);
    await expect(corral(['workloads', 'snapshot-rm', id, result.snapshotId as string])).resolves.toMatchObject({ exitCode: 0, stdout: expect.stringMatching(/already gone/) });
    await api('DELETE', `/v1/workloads/${copy.id}`);
    await api('DELETE', `/v1/workloads/${id}`);
  });

  it('execs into a process workload through the CLI, and refuses a TTY it cannot give', async () => {
    const id = await create({ name: 'exec-proc', driver: 'process', command: ['/bin/sh', '-c', 'exec sleep 600'], env: { WHO: 'the workload' } });
    await expect(corral(['exec', id, '--', '/bin/sh', '-c', 'echo "env of $WHO"; exit 2'])).resolves.toMatchObject({ exitCode: 2, stdout: 'env of the workload\n' });
    const tty = await corral(['exec', '-t', id, '--', '/bin/true']);
    expect(tty.exitCode).toBe(1);
    expect(tty.stderr).toMatch(/not in a state that allows this operation/);
    await api('DELETE', `/v1/workloads/${id}`);
  });
});
