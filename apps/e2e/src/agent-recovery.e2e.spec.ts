import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { createExecutor, execErrorFromResult, type Executor } from '@corral/exec';
import { startSystem, type RunningSystem } from '@corral/launcher';
import { silentLogger } from '@corral/logging';
import {
  BUSYBOX_INDEX_HTML,
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

// The node agent is killed with SIGKILL while a process, a podman container
// and a qemu microVM run under it. They must keep serving while it is gone;
// the restarted agent must re-adopt them (not restart them: the same pid,
// the same container, the same boot nonce) and control them again (pause,
// resume, stop); stopping them must leave no process running and release
// their host ports; purging them must leave nothing behind on the host
// (container, qemu, task directory, root-disk clone, loop device, port).

const repoRoot = resolve(__dirname, '..', '..', '..');
const databaseUrl = process.env.DATABASE_URL;
const natsUrl = natsUrlOrSkip();
const describeE2e = databaseUrl && natsUrl ? describe : describe.skip;
if (!databaseUrl || !natsUrl) console.warn('e2e skipped: DATABASE_URL and NATS_URL must both be set');

jest.setTimeout(420_000);

const podmanMissing = podmanUnavailableReason();
if (podmanMissing) console.warn(`agent recovery: podman part skipped: ${podmanMissing}`);
const vmMissing = microvmImageUnavailableReason() ?? (readdirSync('/usr/bin').includes('qemu-system-x86_64') ? undefined : 'qemu-system-x86_64 is not installed');
if (vmMissing) console.warn(`agent recovery: microVM part skipped: ${vmMissing}`);

/** Pids of processes whose command line contains `needle` (qemu is started with `-name <workloadId>`). */
function pidsWithArgument(needle: string): number[] {
  const pids: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const argv = readFileSync(`/proc/${entry}/cmdline`, 'utf8').split('\0');
      if (argv.includes(needle) && argv[0].includes('qemu')) pids.push(Number(entry));
    } catch {
      // gone meanwhile
    }
  }
  return pids;
}

function portIsFree(port: number): Promise<boolean> {
  return new Promise((done) => {
    const probe = createServer();
    probe.once('error', () => done(false));
    probe.listen(port, '127.0.0.1', () => probe.close(() => done(true)));
  });
}

interface Started {
  id: string;
  hostPort: number;
  page: () => Promise<string>;
  /** What identifies this very runtime instance: restarts change it. */
  identity: () => Promise<string>;
  expectPage: (text: string) => boolean;
}

describeE2e('node agent crash and recovery', () => {
  let db: TestDatabase;
  let system: RunningSystem;
  let dataDir: string;
  let adminKey: string;
  let podman: Executor;
  let losetup: Executor;

  const api = async (method: string, path: string, body?: unknown) => {
    const res = await fetch(`${system.gatewayUrl}${path}`, {
      method,
      headers: { authorization: `Bearer ${adminKey}`, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await res.text();
    return { status: res.status, json: text ? JSON.parse(text) : undefined };
  };
  const waitForState = (id: string, states: string[], timeoutMs = 120_000) =>
    eventually(
      async () => {
        const { json } = await api('GET', `/v1/workloads/${id}`);
        return states.includes(json?.state) ? json : undefined;
      },
      { timeoutMs, what: `workload ${id} to reach ${states.join('/')}` },
    );
  const fetchText = (port: number, timeoutMs = 3000) => fetch(`http://127.0.0.1:${port}/`, { signal: AbortSignal.timeout(timeoutMs) }).then((r) => r.text());
  const containerOf = (id: string, only: 'all' | 'running' = 'all') =>
    podman.run({
      program: 'podman',
      args: ['ps', ...(only === 'all' ? ['-a'] : ['--filter', 'status=running']), '--filter', `label=corral.workload-id=${id}`, '--format', '{{.ID}} {{.StartedAt}}'],
      timeoutMs: 30_000,
      parse: (stdout) => stdout.trim(),
      mapError: execErrorFromResult,
    });

  beforeAll(async () => {
    db = await createTestDatabase();
    dataDir = mkdtempSync(join(tmpdir(), 'corral-e2e-recovery-'));
    system = await startSystem({ repoRoot, dataDir, databaseUrl: db.url, natsUrl, portsMode: 'free', localAgent: true, logLevel: 'debug' });
    adminKey = system.adminKey!;
    podman = createExecutor({ allowedPrograms: ['podman'], logger: silentLogger });
    losetup = createExecutor({ allowedPrograms: ['losetup'], logger: silentLogger });
  });

  afterAll(async () => {
    if (system) {
      const { json } = await api('GET', '/v1/workloads').catch(() => ({ json: undefined }));
      for (const w of json?.workloads ?? []) if (!['stopped', 'failed'].includes(w.state)) await api('DELETE', `/v1/workloads/${w.id}`).catch(() => undefined);
      await system.stop();
    }
    await db?.drop();
    if (dataDir) rmSync(dataDir, { recursive: true, force: true });
  });

  it('keeps workloads running through kill -9 of the agent, re-adopts them, and still controls them', async () => {
    const started: Started[] = [];

    const proc = await api('POST', '/v1/workloads', {
      name: 'survivor-process',
      driver: 'process',
      command: [process.execPath, '-e', "const n=require('crypto').randomUUID();require('http').createServer((q,s)=>s.end(n)).listen(process.env.PORT,'127.0.0.1')"],
      routes: [{ name: 'http', port: 8080 }],
    });
    expect(proc.status).toBe(201);

    let container: { status: number; json: { id: string } } | undefined;
    if (!podmanMissing) {
      await ensureBusyboxImage();
      container = await api('POST', '/v1/workloads', {
        name: 'survivor-container',
        driver: 'podman',
        image: BUSYBOX_TEST_IMAGE,
        command: ['httpd', '-f', '-p', '8080', '-h', '/www'],
        routes: [{ name: 'http', port: 8080 }],
        resources: { memoryMb: 64 },
      });
      expect(container.status).toBe(201);
    }
    let vm: { status: number; json: { id: string } } | undefined;
    if (!vmMissing) {
      const image = await ensureMicrovmImage();
      // With a root disk cloned from a base: the clone must survive the crash too, and go with the purge.
      const rootDisk = join(dataDir, 'survivor-base.raw');
      writeFileSync(rootDisk, Buffer.alloc(16 * 1024 * 1024));
      vm = await api('POST', '/v1/workloads', {
        name: 'survivor-vm',
        driver: 'qemu',
        vm: { mode: 'microvm', kernel: image.kernel, initrd: image.initrd, kernelArgs: MICROVM_KERNEL_ARGS, rootDisk },
        routes: [{ name: 'http', port: MICROVM_GUEST_HTTP_PORT }],
        resources: { memoryMb: 256, vcpus: 1 },
      });
      expect(vm).toMatchObject({ status: 201 });
    }

    const procView = await waitForState(proc.json.id, ['running', 'failed']);
    expect(procView.state).toBe('running');
    const procPort = procView.ports[0].hostPort as number;
    const firstNonce = await eventually(async () => (await fetchText(procPort).catch(() => '')) || undefined, { what: 'process HTTP' });
    started.push({ id: proc.json.id, hostPort: procPort, page: () => fetchText(procPort), identity: () => fetchText(procPort), expectPage: (t) => t === firstNonce });

    if (container) {
      const view = await waitForState(container.json.id, ['running', 'failed']);
      expect(view.state).toBe('running');
      const port = view.ports[0].hostPort as number;
      await eventually(async () => ((await fetchText(port).catch(() => '')) === BUSYBOX_INDEX_HTML ? true : undefined), { what: 'container HTTP' });
      const id = container.json.id;
      started.push({ id, hostPort: port, page: () => fetchText(port), identity: () => containerOf(id), expectPage: (t) => t === BUSYBOX_INDEX_HTML });
    }
    if (vm) {
      const view = await waitForState(vm.json.id, ['running', 'failed']);
      expect(view.state).toBe('running');
      const port = view.ports[0].hostPort as number;
      await eventually(async () => ((await fetchText(port).catch(() => '')).includes(MICROVM_PAGE_TEXT) ? true : undefined), { timeoutMs: 120_000, what: 'microVM HTTP' });
      const id = vm.json.id;
      started.push({ id, hostPort: port, page: () => fetchText(port), identity: async () => pidsWithArgument(id).join(','), expectPage: (t) => t.includes(MICROVM_PAGE_TEXT) });
    }

    const before = await Promise.all(started.map((s) => s.identity()));
    for (const identity of before) expect(identity).not.toBe('');

    // The crash. Workloads keep serving while no agent runs.
    await system.killService('node-agent');
    for (const s of started) expect(s.expectPage(await s.page())).toBe(true);

    // The restarted agent re-adopts: the same runtimes, not new ones.
    await system.startAgent();
    for (const s of started) {
      await eventually(
        async () => {
          const state = (await api('GET', `/v1/workloads/${s.id}`)).json?.state;
          if (state !== 'running') throw new Error(`state is ${state}`);
          return true;
        },
        { timeoutMs: 60_000, what: `${s.id} running after restart` },
      );
    }
    expect(await Promise.all(started.map((s) => s.identity()))).toEqual(before);
    for (const s of started) expect(s.expectPage(await s.page())).toBe(true);

    // And controls them again.
    for (const s of started) {
      expect((await api('POST', `/v1/workloads/${s.id}/pause`)).json.state).toBe('paused');
      await expect(fetchText(s.hostPort, 1000)).rejects.toBeDefined();
      expect((await api('POST', `/v1/workloads/${s.id}/resume`)).json.state).toBe('running');
      expect(s.expectPage(await s.page())).toBe(true);
    }

    for (const s of started) await api('DELETE', `/v1/workloads/${s.id}`);
    for (const s of started) {
      const stopped = await waitForState(s.id, ['stopped', 'failed']);
      expect(stopped.ports).toEqual([]);
      expect(await portIsFree(s.hostPort)).toBe(true);
    }
    if (vm) expect(pidsWithArgument(vm.json.id)).toEqual([]);
    if (container) expect(await containerOf(container.json.id, 'running')).toBe('');
    await expect(fetchText(procPort, 1000)).rejects.toBeDefined();

    // Purged, nothing of them is left on the host: no container (not even an
    // exited one), no qemu, no per-workload directory or record in the
    // agent's state dir, no held port.
    const agentDir = join(dataDir, 'agent');
    const ids = started.map((s) => s.id);
    const clonesDir = join(agentDir, 'volumes', 'qcow2', 'clones');
    const leftovers = () =>
      [join(agentDir, 'process'), join(agentDir, 'qemu'), join(agentDir, 'workloads'), join(agentDir, 'snapshots'), clonesDir, join(agentDir, 'volumes', 'device-mapper')].flatMap((dir) => entriesOf(dir));
    const loopDevicesOfAgent = async () =>
      (await losetup.run({ program: 'losetup', args: ['-a'], timeoutMs: 30_000, parse: (stdout) => stdout, mapError: execErrorFromResult }))
        .split('\n')
        .filter((line) => line.includes(dataDir));
    if (vm) expect(entriesOf(clonesDir).filter((name) => name.startsWith(vm.json.id))).toHaveLength(1);
    if (container) expect(await containerOf(container.json.id)).not.toBe('');
    expect(leftovers().some((name) => ids.some((id) => name.startsWith(id)))).toBe(true);
    for (const s of started) {
      const purged = await api('DELETE', `/v1/workloads/${s.id}?purge=true`);
      expect(purged.status).toBe(200);
      expect(purged.json).toMatchObject({ id: s.id, state: 'retired', ports: [] });
      // Idempotent.
      expect((await api('DELETE', `/v1/workloads/${s.id}?purge=true`)).json.state).toBe('retired');
    }
    if (container) expect(await containerOf(container.json.id)).toBe('');
    if (vm) expect(pidsWithArgument(vm.json.id)).toEqual([]);
    expect(leftovers().filter((name) => ids.some((id) => name.startsWith(id)))).toEqual([]);
    expect(await loopDevicesOfAgent()).toEqual([]);
    const held = JSON.parse(readFileSync(join(agentDir, 'ports.json'), 'utf8')).workloads as Record<string, unknown>;
    for (const id of ids) expect(held[id]).toBeUndefined();
    for (const s of started) expect(await portIsFree(s.hostPort)).toBe(true);
  });
});

/** Names in `dir`, none when it does not exist. */
function entriesOf(dir: string): string[] {
  try {
    return readdirSync(dir);
  } catch {
    return [];
  }
}
