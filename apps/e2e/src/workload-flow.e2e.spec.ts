import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { request as httpRequest } from 'node:http';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { createExecutor, execErrorFromResult, spawnInteractive, type ExecResult, type Executor } from '@corral/exec';
import { createClient } from '@corral/grpc';
import { startSystem, type RunningSystem } from '@corral/launcher';
import { silentLogger } from '@corral/logging';
import { hostRegistryV1 } from '@corral/proto';
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
  MICROVM_POWERDOWN_MARKER,
  MICROVM_READY_MARKER,
  microvmImageUnavailableReason,
  natsUrlOrSkip,
  podmanUnavailableReason,
  UNIKERNEL_READY_MARKER,
  writeUnikernelImage,
  type TestDatabase,
} from '@corral/testing';

// Every hop real: each service is its own process (started the way `npm
// start` starts them), on a real Postgres and a real NATS; an agent registers
// with a token an admin created over REST, and the workload flow is driven
// through REST and through the CLI.

const repoRoot = resolve(__dirname, '..', '..', '..');
const databaseUrl = process.env.DATABASE_URL;
const natsUrl = natsUrlOrSkip();
const describeE2e = databaseUrl && natsUrl ? describe : describe.skip;
if (!databaseUrl || !natsUrl) console.warn('e2e skipped: DATABASE_URL and NATS_URL must both be set');

jest.setTimeout(240_000);

describeE2e('one workload end to end', () => {
  let db: TestDatabase;
  let system: RunningSystem;
  let dataDir: string;
  let adminKey: string;
  let cli: Executor;
  const SECRET_VALUE = 'sup3r-s3cret-value-e2e';

  const api = async (method: string, path: string, body?: unknown, key: string | null = adminKey, headers: Record<string, string> = {}) => {
    const res = await fetch(`${system.gatewayUrl}${path}`, {
      method,
      headers: {
        ...(key ? { authorization: `Bearer ${key}` } : {}),
        ...(body !== undefined ? { 'content-type': 'application/json' } : {}),
        ...headers,
      },
      body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body),
    });
    const text = await res.text();
    let json: any; // eslint-disable-line @typescript-eslint/no-explicit-any -- response bodies are asserted field by field
    try {
      json = JSON.parse(text);
    } catch {
      json = undefined;
    }
    return { status: res.status, json, text };
  };

  const corral = (args: string[]) =>
    cli.run({
      program: process.execPath,
      args: ['--import', 'tsx', join(repoRoot, 'apps/cli/src/main.ts'), ...args],
      env: { CORRAL_ADDR: system.gatewayGrpcAddress, CORRAL_API_KEY: adminKey, TSX_TSCONFIG_PATH: join(repoRoot, 'tsconfig.base.json') },
      cwd: repoRoot,
      timeoutMs: 60_000,
      parse: (stdout) => stdout,
      mapError: execErrorFromResult,
    });

  const waitForState = (id: string, states: string[]) =>
    eventually(
      async () => {
        const { json } = await api('GET', `/v1/workloads/${id}`);
        return states.includes(json?.state) ? json : undefined;
      },
      { timeoutMs: 60_000, what: `workload ${id} to reach ${states.join('/')}` },
    );

  beforeAll(async () => {
    db = await createTestDatabase();
    dataDir = mkdtempSync(join(tmpdir(), 'corral-e2e-'));
    system = await startSystem({ repoRoot, dataDir, databaseUrl: db.url, natsUrl, portsMode: 'free', localAgent: false, logLevel: 'debug' });
    adminKey = system.adminKey!;
    cli = createExecutor({ allowedPrograms: [process.execPath], logger: silentLogger });
  });

  afterAll(async () => {
    if (system) {
      // Nothing of ours may outlive the test: stop what is still running.
      const { json } = await api('GET', '/v1/workloads').catch(() => ({ json: undefined }));
      for (const w of json?.workloads ?? []) if (!['stopped', 'failed'].includes(w.state)) await api('DELETE', `/v1/workloads/${w.id}`);
      await system.stop();
    }
    await db?.drop();
    if (dataDir) rmSync(dataDir, { recursive: true, force: true });
  });

  it('prints a first admin key once and answers health checks', async () => {
    expect(adminKey).toMatch(/^crl_/);
    expect((await api('GET', '/healthz', undefined, null)).status).toBe(200);
    expect((await api('GET', '/v1/whoami')).json).toMatchObject({ admin: true });
  });

  it('registers an agent with a token created over REST; the host shows online with its drivers', async () => {
    const token = await api('POST', '/v1/hosts/registration-tokens', { ttlSeconds: 600, description: 'e2e agent' });
    expect(token.status).toBe(201);
    expect(token.json.token).toMatch(/^crt_/);
    const hostId = await system.startAgent({ registrationToken: token.json.token });
    const host = await eventually(async () => {
      const { json } = await api('GET', '/v1/hosts');
      return json?.hosts?.find((h: { id: string; status: string }) => h.id === hostId && h.status === 'online');
    }, { what: 'host online' });
    expect(host.drivers).toEqual(expect.arrayContaining([expect.objectContaining({ name: 'process', healthy: true })]));
    expect(host.resources.capacity.memoryMb).toBeGreaterThan(0);
    // Usage travels only in heartbeats (registration sends capacity): host-registry keeps what the running agent reports.
    const reported = await eventually(async () => {
      const { json } = await api('GET', '/v1/hosts');
      const seen = json?.hosts?.find((h: { id: string }) => h.id === hostId);
      return seen?.resources?.usage?.diskMb > 0 && seen?.resources?.usage?.memoryMb > 0 ? seen : undefined;
    }, { what: 'heartbeat usage stored by host-registry' });
    expect(reported.drivers).toEqual(expect.arrayContaining([expect.objectContaining({ name: 'process', healthy: true })]));
    // The token was single use: registering again with it is refused.
    const registry = createClient(hostRegistryV1.HostRegistryServiceClient, system.services.find((s) => s.name === 'host-registry')!.address, {
      credentials: system.hostRegistryCredentials,
    });
    try {
      await expect(
        registry.registerHost({ registrationToken: token.json.token, name: 'second-use', agentAddress: '127.0.0.1:1', capacity: undefined, drivers: [], labels: {} }),
      ).rejects.toMatchObject({ name: 'UnauthenticatedError' });
    } finally {
      registry.close();
    }
  });

  let workloadId: string;

  it('runs a process workload over REST: running, logs, then DELETE stops it', async () => {
    const created = await api('POST', '/v1/workloads', {
      name: 'hello',
      driver: 'process',
      command: ['/bin/sh', '-c', 'echo "hello from $GREETING"; exec sleep 120'],
      env: { GREETING: 'corral', API_TOKEN: SECRET_VALUE },
    });
    expect(created.status).toBe(201);
    expect(created.text).not.toContain(SECRET_VALUE);
    workloadId = created.json.id;
    const running = await waitForState(workloadId, ['running']);
    expect(running.hostId).toBe(system.localHostId);
    expect(running.envKeys).toEqual(['API_TOKEN', 'GREETING']);

    const logs = await eventually(async () => {
      const res = await api('GET', `/v1/workloads/${workloadId}/logs`);
      return res.text.includes('hello from corral') ? res : undefined;
    }, { what: 'workload logs' });
    expect(logs.status).toBe(200);

    const deleted = await api('DELETE', `/v1/workloads/${workloadId}`);
    expect([200, 202]).toContain(deleted.status);
    const stopped = await waitForState(workloadId, ['stopped']);
    expect(stopped.state).toBe('stopped');
    // Deleting again is safe and changes nothing.
    const again = await api('DELETE', `/v1/workloads/${workloadId}`);
    expect([200, 202]).toContain(again.status);
    expect(again.json.state).toBe('stopped');
  });

  it('records exit codes: 0 → stopped, non-zero → failed', async () => {
    const ok = await api('POST', '/v1/workloads', { name: 'exit-zero', driver: 'process', command: ['/bin/sh', '-c', 'echo done'] });
    const bad = await api('POST', '/v1/workloads', { name: 'exit-three', driver: 'process', command: ['/bin/sh', '-c', 'exit 3'] });
    expect(await waitForState(ok.json.id, ['stopped', 'failed'])).toMatchObject({ state: 'stopped', exitCode: 0 });
    expect(await waitForState(bad.json.id, ['stopped', 'failed'])).toMatchObject({ state: 'failed', exitCode: 3 });
  });

  it('follows logs over REST (?follow=true): every line as it is written, and the response ends when the workload exits', async () => {
    const created = await api('POST', '/v1/workloads', {
      name: 'five-lines',
      driver: 'process',
      command: ['/bin/sh', '-c', 'for i in 1 2 3 4 5; do echo "line $i"; sleep 0.2; done'],
    });
    expect(created.status).toBe(201);
    const res = await fetch(`${system.gatewayUrl}/v1/workloads/${created.json.id}/logs?follow=true`, { headers: { authorization: `Bearer ${adminKey}` } });
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/^text\/plain/);
    const decoder = new TextDecoder();
    const chunks: string[] = [];
    // Ends by itself: the read loop finishing is the response ending.
    for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) chunks.push(decoder.decode(chunk, { stream: true }));
    expect(chunks.join('')).toBe('line 1\nline 2\nline 3\nline 4\nline 5\n');
    expect(await waitForState(created.json.id, ['stopped', 'failed'])).toMatchObject({ state: 'stopped', exitCode: 0 });
  });

  it('follows logs through the CLI (workloads logs -f) until the workload exits', async () => {
    const created = await api('POST', '/v1/workloads', {
      name: 'cli-follow',
      driver: 'process',
      command: ['/bin/sh', '-c', 'for i in 1 2 3; do echo "tick $i"; sleep 0.2; done'],
    });
    expect(await corral(['workloads', 'logs', created.json.id, '-f'])).toBe('tick 1\ntick 2\ntick 3\n');
  });

  it('answers garbage with clear 4xx errors and keeps serving', async () => {
    const badJson = await api('POST', '/v1/workloads', '{"name": "x", ');
    expect(badJson.status).toBe(400);
    const wrongType = await api('POST', '/v1/workloads', { name: 'x', driver: 'process', command: 'not-an-array' });
    expect(wrongType.status).toBe(400);
    expect(wrongType.json.field).toBe('command');
    const unknownDriver = await api('POST', '/v1/workloads', { name: 'x', driver: 'docker', command: ['/bin/true'] });
    expect(unknownDriver.status).toBe(400);
    expect(unknownDriver.json.field).toBe('driver');
    const emptyCommand = await api('POST', '/v1/workloads', { name: 'x', driver: 'process', command: [] });
    expect(emptyCommand.status).toBe(400);
    expect(emptyCommand.json.field).toBe('command');
    // The gateway answers 413 from the declared length and may close before the body is sent, so fetch can
    // fail its upload with EPIPE before it reads the answer: read the answer with a client that expects that.
    const hugeStatus = await postAnsweredEarly(`${system.gatewayUrl}/v1/workloads`, adminKey, JSON.stringify({ name: 'x', driver: 'process', command: ['a'.repeat(10 * 1024 * 1024)] }));
    expect(hugeStatus).toBe(413);
    expect((await api('GET', '/v1/workloads', undefined, null)).status).toBe(401);
    expect((await api('GET', '/v1/workloads', undefined, 'crl_not_a_real_key')).status).toBe(401);
    expect((await api('GET', '/v1/workloads/00000000-0000-0000-0000-000000000000')).status).toBe(404);
    expect((await api('GET', '/healthz', undefined, null)).status).toBe(200);
  });

  it('serves an OpenAPI 3.1 document and Swagger UI', async () => {
    const doc = await api('GET', '/openapi.json', undefined, null);
    expect(doc.json.openapi).toMatch(/^3\.1/);
    expect(Object.keys(doc.json.paths)).toEqual(expect.arrayContaining(['/v1/workloads', '/v1/workloads/{id}', '/v1/hosts', '/v1/hosts/registration-tokens']));
    expect((await api('GET', '/docs/', undefined, null)).status).toBe(200);
  });

  const podmanMissing = podmanUnavailableReason();
  if (podmanMissing) console.warn(`e2e podman scenario skipped: ${podmanMissing}`);
  (podmanMissing ? it.skip : it)('runs a podman container that serves HTTP on its allocated port, pauses, resumes and stops', async () => {
    await ensureBusyboxImage();
    const created = await api('POST', '/v1/workloads', {
      name: 'web-container',
      driver: 'podman',
      image: BUSYBOX_TEST_IMAGE,
      command: ['httpd', '-f', '-p', '8080', '-h', '/www'],
      routes: [{ name: 'http', port: 8080 }],
      resources: { memoryMb: 64 },
    });
    expect(created.status).toBe(201);
    const running = await waitForState(created.json.id, ['running', 'failed']);
    expect(running.state).toBe('running');
    const [port] = running.ports;
    expect(port).toMatchObject({ name: 'http', guestPort: 8080 });
    const page = () => fetch(`http://127.0.0.1:${port.hostPort}/`, { signal: AbortSignal.timeout(2000) }).then((r) => r.text());
    expect(await eventually(async () => ((await page()) === BUSYBOX_INDEX_HTML ? true : undefined), { what: 'container HTTP' })).toBe(true);

    expect((await api('POST', `/v1/workloads/${created.json.id}/pause`)).json.state).toBe('paused');
    await expect(fetch(`http://127.0.0.1:${port.hostPort}/`, { signal: AbortSignal.timeout(1000) })).rejects.toBeDefined();
    expect((await api('POST', `/v1/workloads/${created.json.id}/resume`)).json.state).toBe('running');
    expect(await page()).toBe(BUSYBOX_INDEX_HTML);

    await api('DELETE', `/v1/workloads/${created.json.id}`);
    const stopped = await waitForState(created.json.id, ['stopped', 'failed']);
    expect(stopped.ports).toEqual([]);
  });

  const vmMissing = existsSync('/usr/bin/qemu-system-x86_64') ? microvmImageUnavailableReason() : 'qemu-system-x86_64 is not installed';
  if (vmMissing) console.warn(`e2e microVM scenario skipped: ${vmMissing}`);
  (vmMissing ? it.skip : it)('boots a qemu microVM that serves HTTP on its allocated port, pauses, resumes and powers down', async () => {
    const image = await ensureMicrovmImage();
    const created = await api('POST', '/v1/workloads', {
      name: 'web-vm',
      driver: 'qemu',
      vm: { mode: 'microvm', kernel: image.kernel, initrd: image.initrd, kernelArgs: MICROVM_KERNEL_ARGS },
      routes: [{ name: 'http', port: MICROVM_GUEST_HTTP_PORT }],
      resources: { memoryMb: 256, vcpus: 1 },
    });
    expect(created.status).toBe(201);
    const running = await waitForState(created.json.id, ['running', 'failed']);
    expect(running.state).toBe('running');
    const [port] = running.ports;
    expect(port).toMatchObject({ name: 'http', guestPort: MICROVM_GUEST_HTTP_PORT });
    const page = () => fetch(`http://127.0.0.1:${port.hostPort}/`, { signal: AbortSignal.timeout(3000) }).then((r) => r.text());
    // The guest boots under tcg: give it time, assert only that it answers.
    await eventually(async () => ((await page()).includes(MICROVM_PAGE_TEXT) ? true : undefined), { timeoutMs: 90_000, what: 'microVM HTTP' });

    expect((await api('POST', `/v1/workloads/${created.json.id}/pause`)).json.state).toBe('paused');
    await expect(fetch(`http://127.0.0.1:${port.hostPort}/`, { signal: AbortSignal.timeout(1000) })).rejects.toBeDefined();
    expect((await api('POST', `/v1/workloads/${created.json.id}/resume`)).json.state).toBe('running');
    expect(await page()).toContain(MICROVM_PAGE_TEXT);

    await api('DELETE', `/v1/workloads/${created.json.id}`);
    expect((await waitForState(created.json.id, ['stopped', 'failed'])).ports).toEqual([]);
  });

  it('drives the same flow through the CLI over gRPC', async () => {
    const run = JSON.parse(await corral(['--output', 'json', 'workloads', 'run', 'from-cli', '--driver', 'process', '-e', 'WHO=cli', '--', '/bin/sh', '-c', 'echo "cli says $WHO"; exec sleep 120']));
    expect(run.id).toBeDefined();
    await eventually(async () => (JSON.parse(await corral(['--output', 'json', 'workloads', 'get', run.id])).state === 'running' ? true : undefined), {
      timeoutMs: 60_000,
      what: 'CLI workload running',
    });
    const listed = JSON.parse(await corral(['--output', 'json', 'workloads', 'list']));
    expect(listed.workloads.map((w: { id: string }) => w.id)).toContain(run.id);
    const logs = await eventually(async () => {
      const out = await corral(['workloads', 'logs', run.id]);
      return out.includes('cli says cli') ? out : undefined;
    }, { what: 'CLI logs' });
    expect(logs).toContain('cli says cli');
    const hosts = JSON.parse(await corral(['--output', 'json', 'hosts', 'list']));
    expect(hosts.hosts.some((h: { status: string }) => h.status === 'online')).toBe(true);
    await corral(['workloads', 'stop', run.id]);
    await waitForState(run.id, ['stopped']);
    // A table for people.
    const table = await corral(['workloads', 'list']);
    expect(table).toContain('from-cli');
  });

  it('gives a process workload a host port for its route; pause freezes it, resume thaws it, stop releases the port', async () => {
    const server = "require('http').createServer((q,s)=>s.end('hello '+process.env.PORT_HTTP)).listen(process.env.PORT)";
    const created = await api('POST', '/v1/workloads', {
      name: 'web-port',
      driver: 'process',
      // The agent gives a workload only its own env and a minimal PATH: node by its absolute path.
      command: [process.execPath, '-e', server],
      routes: [{ name: 'http', port: 8080 }],
    });
    expect(created.status).toBe(201);
    expect(created.json.routes).toEqual([{ name: 'http', port: 8080, protocol: 'tcp' }]);
    const id: string = created.json.id;
    await waitForState(id, ['running']);
    const running = await eventually(
      async () => {
        const { json } = await api('GET', `/v1/workloads/${id}`);
        return json?.ports?.length ? json : undefined;
      },
      { what: 'the workload to show its ports' },
    );
    expect(running.ports).toEqual([{ name: 'http', guestPort: 8080, hostPort: expect.any(Number), protocol: 'tcp' }]);
    const hostPort: number = running.ports[0].hostPort;
    // The process driver has no network namespace: the workload listens on the host port itself.
    const hello = () => fetch(`http://127.0.0.1:${hostPort}/`, { signal: AbortSignal.timeout(1000) }).then((r) => r.text());
    expect(await eventually(() => hello().catch(() => undefined), { what: 'the workload to answer on its host port' })).toBe(`hello ${hostPort}`);
    expect(await corral(['workloads', 'get', id])).toMatch(new RegExp(`Ports:\\s+http ${hostPort}->8080/tcp`));

    const paused = await api('POST', `/v1/workloads/${id}/pause`);
    expect(paused.status).toBe(200);
    expect(paused.json).toMatchObject({ id, state: 'paused' });
    // A state, not a speed: a frozen workload does not answer within a second.
    await expect(hello()).rejects.toThrow();
    expect((await api('GET', `/v1/workloads/${id}`)).json.state).toBe('paused');
    const pausedAgain = await api('POST', `/v1/workloads/${id}/pause`);
    expect(pausedAgain.status).toBe(200);
    expect(pausedAgain.json.state).toBe('paused');

    const resumed = JSON.parse(await corral(['--output', 'json', 'workloads', 'resume', id]));
    expect(resumed.state).toBe('running');
    expect(await eventually(() => hello().catch(() => undefined), { what: 'the workload to answer again' })).toBe(`hello ${hostPort}`);

    const deleted = await api('DELETE', `/v1/workloads/${id}`);
    expect([200, 202]).toContain(deleted.status);
    const stopped = await waitForState(id, ['stopped']);
    expect(stopped.ports).toEqual([]);
    // The agent's own table no longer holds it...
    const table = JSON.parse(readFileSync(join(dataDir, 'agent', 'ports.json'), 'utf8'));
    expect(table.workloads[id]).toBeUndefined();
    // ...nothing listens there any more...
    await expect(hello()).rejects.toThrow();
    // ...and pausing what has stopped is refused.
    expect((await api('POST', `/v1/workloads/${id}/pause`)).status).toBe(409);

    // A new workload is given ports.
    const next = await api('POST', '/v1/workloads', { name: 'web-port-2', driver: 'process', command: [process.execPath, '-e', server], routes: [{ name: 'http', port: 8080 }] });
    expect(next.status).toBe(201);
    await waitForState(next.json.id, ['running']);
    const nextRunning = await eventually(
      async () => {
        const { json } = await api('GET', `/v1/workloads/${next.json.id}`);
        return json?.ports?.length ? json : undefined;
      },
      { what: 'the second workload to show its ports' },
    );
    const nextPort: number = nextRunning.ports[0].hostPort;
    expect(await eventually(() => fetch(`http://127.0.0.1:${nextPort}/`, { signal: AbortSignal.timeout(1000) }).then((r) => r.text()).catch(() => undefined))).toBe(`hello ${nextPort}`);
    await api('DELETE', `/v1/workloads/${next.json.id}`);
    expect((await waitForState(next.json.id, ['stopped'])).ports).toEqual([]);
  });

  // Issue 3's "Done when", driven through the CLI for a podman container and
  // a qemu microVM alike: run, HTTP on the allocated port, exec, cp, pause
  // and resume, logs -f, a graceful stop; purged, nothing of them is left on
  // the host (container, qemu, loop device, overlay, task directory, port).

  /** Runs the CLI; resolves with its exit code and output whatever the code. */
  const corralOutcome = (args: string[], options: { stdin?: string; timeoutMs?: number } = {}) =>
    cli
      .run<{ exitCode: number; stdout: string; stderr: string }>({
        program: process.execPath,
        args: ['--import', 'tsx', join(repoRoot, 'apps/cli/src/main.ts'), ...args],
        env: { CORRAL_ADDR: system.gatewayGrpcAddress, CORRAL_API_KEY: adminKey, TSX_TSCONFIG_PATH: join(repoRoot, 'tsconfig.base.json') },
        cwd: repoRoot,
        timeoutMs: options.timeoutMs ?? 60_000,
        ...(options.stdin !== undefined ? { stdin: options.stdin } : {}),
        parse: (stdout, stderr) => ({ exitCode: 0, stdout, stderr }),
        mapError: (r: ExecResult) => Object.assign(new Error(`corral exited ${r.exitCode}`), { outcome: { exitCode: r.exitCode ?? -1, stdout: r.stdout, stderr: r.stderr } }),
      })
      .catch((err: { outcome?: { exitCode: number; stdout: string; stderr: string } }) => {
        if (err.outcome) return err.outcome;
        throw err;
      });

  /** `corral workloads logs ID -f` as it runs: its output so far, and its end. */
  const followThroughCli = async (id: string) => {
    const child = await spawnInteractive({
      program: process.execPath,
      args: ['--import', 'tsx', join(repoRoot, 'apps/cli/src/main.ts'), 'workloads', 'logs', id, '-f'],
      env: { PATH: process.env.PATH ?? '/usr/bin:/bin', CORRAL_ADDR: system.gatewayGrpcAddress, CORRAL_API_KEY: adminKey, TSX_TSCONFIG_PATH: join(repoRoot, 'tsconfig.base.json') },
      cwd: repoRoot,
    });
    let output = '';
    child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
    child.stderr.resume();
    return {
      output: () => output,
      printed: (text: string, timeoutMs = 60_000) => eventually(() => (output.includes(text) ? true : undefined), { timeoutMs, what: `logs -f to print ${text}` }),
      exited: child.exited,
      kill: () => child.kill(),
    };
  };

  /** A CLI command with JSON output that must succeed (a failure shows its stderr). */
  const cliJson = async (args: string[]) => {
    const outcome = await corralOutcome(['--output', 'json', ...args]);
    expect({ args, exitCode: outcome.exitCode, stderr: outcome.stderr }).toEqual({ args, exitCode: 0, stderr: '' });
    return JSON.parse(outcome.stdout);
  };
  const cliView = (id: string) => cliJson(['workloads', 'get', id]);
  const cliWaitFor = (id: string, states: string[], timeoutMs = 120_000) =>
    eventually(
      async () => {
        const view = await cliView(id);
        return states.includes(view.state) ? view : undefined;
      },
      { timeoutMs, what: `workload ${id} to reach ${states.join('/')} (CLI)` },
    );
  const portIsFree = (port: number) =>
    new Promise<boolean>((done) => {
      const probe = createServer();
      probe.once('error', () => done(false));
      probe.listen(port, '127.0.0.1', () => probe.close(() => done(true)));
    });
  const hostTools = () => createExecutor({ allowedPrograms: ['podman', 'losetup'], logger: silentLogger });

  /** Everything of workload `id` still on this host: an empty object when nothing is. */
  const leftoversOf = async (id: string, hostPort: number) => {
    const tools = hostTools();
    const agentDir = join(dataDir, 'agent');
    const found: Record<string, unknown> = {};
    if (!podmanMissing) {
      const containers = await tools.run({
        program: 'podman',
        args: ['ps', '-a', '--filter', `label=corral.workload-id=${id}`, '--format', '{{.ID}}'],
        timeoutMs: 30_000,
        parse: (stdout) => stdout.trim(),
        mapError: execErrorFromResult,
      });
      if (containers) found.containers = containers;
    }
    const loops = (await tools.run({ program: 'losetup', args: ['-a'], timeoutMs: 30_000, parse: (stdout) => stdout, mapError: execErrorFromResult }))
      .split('\n')
      .filter((line) => line.includes(dataDir));
    if (loops.length) found.loopDevices = loops;
    const qemu = readdirSync('/proc').filter((entry) => {
      if (!/^\d+$/.test(entry)) return false;
      try {
        const argv = readFileSync(`/proc/${entry}/cmdline`, 'utf8').split('\0');
        return argv[0].includes('qemu') && argv.includes(id);
      } catch {
        return false;
      }
    });
    if (qemu.length) found.qemuPids = qemu;
    const dirs = ['process', 'qemu', 'workloads', 'snapshots', join('volumes', 'qcow2', 'clones'), join('volumes', 'device-mapper')].map((d) => join(agentDir, d));
    const files = dirs.flatMap((dir) => (existsSync(dir) ? readdirSync(dir).filter((name) => name.startsWith(id)).map((name) => join(dir, name)) : []));
    if (files.length) found.files = files;
    // The port table exists once any workload was given a port.
    const portTable = join(agentDir, 'ports.json');
    const held = existsSync(portTable) ? (JSON.parse(readFileSync(portTable, 'utf8')).workloads as Record<string, unknown>) : {};
    if (held[id] !== undefined) found.heldPorts = held[id];
    if (hostPort && !(await portIsFree(hostPort))) found.boundPort = hostPort;
    return found;
  };

  (podmanMissing ? it.skip : it)('drives a podman container through the CLI: run, HTTP on its port, exec -it, cp, pause/resume, logs -f, a graceful stop, and a purge that leaves nothing', async () => {
    await ensureBusyboxImage();
    // PID 1 is sh: it handles SIGTERM (wait, not sleep, lets the trap run at once) and exits 0.
    const script = 'trap "echo got-sigterm; exit 0" TERM; httpd -p 8080 -h /www; echo serving; while :; do sleep 1 & wait $!; done';
    const run = await corralOutcome(['--output', 'json', 'workloads', 'run', 'cli-box', '--driver', 'podman', '--image', BUSYBOX_TEST_IMAGE, '-p', 'http:8080', '--memory', '64', '--', 'sh', '-c', script]);
    expect(run).toMatchObject({ exitCode: 0, stderr: '' });
    const id: string = JSON.parse(run.stdout).id;
    const running = await cliWaitFor(id, ['running', 'failed']);
    expect(running.state).toBe('running');
    const hostPort: number = running.ports[0].hostPort;
    const page = (timeoutMs = 2000) => fetch(`http://127.0.0.1:${hostPort}/`, { signal: AbortSignal.timeout(timeoutMs) }).then((r) => r.text());
    await eventually(async () => ((await page().catch(() => '')) === BUSYBOX_INDEX_HTML ? true : undefined), { what: 'container HTTP' });

    const follow = await followThroughCli(id);
    try {
      await follow.printed('serving');
      // Written after the follow printed what was there: it can only come by following.
      expect(await corralOutcome(['exec', id, '--', 'sh', '-c', 'echo written-while-following > /proc/1/fd/1'])).toMatchObject({ exitCode: 0 });
      await follow.printed('written-while-following');

      // exec -it: a terminal, stdin passed through.
      const tty = await corralOutcome(['exec', '-it', id, '--', 'sh', '-c', 'test -t 0 && read line && echo "got:$line"'], { stdin: 'typed\n' });
      expect(tty.exitCode).toBe(0);
      expect(tty.stdout).toContain('got:typed');

      const local = mkdtempSync(join(tmpdir(), 'corral-e2e-cli-cp-'));
      try {
        writeFileSync(join(local, 'in.txt'), 'copied into the container\n');
        expect(await corralOutcome(['cp', join(local, 'in.txt'), `${id}:/tmp/in.txt`])).toMatchObject({ exitCode: 0 });
        expect(await corralOutcome(['cp', `${id}:/tmp/in.txt`, '-'])).toMatchObject({ exitCode: 0, stdout: 'copied into the container\n' });
      } finally {
        rmSync(local, { recursive: true, force: true });
      }

      expect(await cliJson(['workloads', 'pause', id])).toMatchObject({ state: 'paused' });
      await expect(page(1000)).rejects.toBeDefined();
      expect(await cliJson(['workloads', 'resume', id])).toMatchObject({ state: 'running' });
      expect(await page()).toBe(BUSYBOX_INDEX_HTML);

      // Graceful: the container's own SIGTERM handler runs and its exit code is 0.
      expect(await corralOutcome(['workloads', 'stop', id])).toMatchObject({ exitCode: 0 });
      expect(await cliWaitFor(id, ['stopped', 'failed'])).toMatchObject({ state: 'stopped', exitCode: 0, ports: [] });
      // The follow ends by itself once the workload has ended, with the handler's line.
      expect(await follow.exited).toEqual({ exitCode: 0, signal: null });
      expect(follow.output()).toContain('got-sigterm');
    } finally {
      follow.kill();
    }

    expect(await corralOutcome(['workloads', 'rm', id])).toMatchObject({ exitCode: 0 });
    expect((await cliView(id)).state).toBe('retired');
    expect(await leftoversOf(id, hostPort)).toEqual({});
  });

  (vmMissing ? it.skip : it)('drives a qemu microVM with a cloned root disk through the CLI: run, HTTP on its port, exec, cp, pause/resume, logs -f of its console, a powerdown, and a purge that leaves nothing', async () => {
    const image = await ensureMicrovmImage();
    // A base disk on the host: the VM gets its own copy-on-write clone of it.
    const base = join(dataDir, 'cli-vm-base.raw');
    writeFileSync(base, Buffer.alloc(16 * 1024 * 1024));
    const baseHash = createHash('sha256').update(readFileSync(base)).digest('hex');
    const run = await corralOutcome([
      '--output', 'json', 'workloads', 'run', 'cli-vm', '--driver', 'qemu',
      '--kernel', image.kernel, '--initrd', image.initrd, '--kernel-args', MICROVM_KERNEL_ARGS, '--root-disk', base,
      '-p', `http:${MICROVM_GUEST_HTTP_PORT}`, '--memory', '256', '--vcpus', '1',
    ]);
    expect(run).toMatchObject({ exitCode: 0, stderr: '' });
    const id: string = JSON.parse(run.stdout).id;
    const running = await cliWaitFor(id, ['running', 'failed']);
    expect(running.state).toBe('running');
    const hostPort: number = running.ports[0].hostPort;
    const page = (timeoutMs = 3000) => fetch(`http://127.0.0.1:${hostPort}/`, { signal: AbortSignal.timeout(timeoutMs) }).then((r) => r.text());
    await eventually(async () => ((await page().catch(() => '')).includes(MICROVM_PAGE_TEXT) ? true : undefined), { timeoutMs: 120_000, what: 'microVM HTTP' });

    const follow = await followThroughCli(id);
    try {
      await follow.printed(MICROVM_READY_MARKER);

      // Exec through the guest agent (it may answer a moment after httpd); the root disk is the clone.
      const uname = await eventually(
        async () => {
          const outcome = await corralOutcome(['exec', id, '--', '/bin/sh', '-c', 'printf written-by-the-guest > /dev/vda && sync && echo ok']);
          return outcome.exitCode === 0 ? outcome : undefined;
        },
        { timeoutMs: 60_000, what: 'exec in the VM' },
      );
      expect(uname.stdout).toBe('ok\n');
      expect(createHash('sha256').update(readFileSync(base)).digest('hex')).toBe(baseHash);

      const local = mkdtempSync(join(tmpdir(), 'corral-e2e-cli-cp-'));
      try {
        writeFileSync(join(local, 'in.txt'), 'copied into the VM\n');
        expect(await corralOutcome(['cp', join(local, 'in.txt'), `${id}:/tmp/in.txt`])).toMatchObject({ exitCode: 0 });
        expect(await corralOutcome(['cp', `${id}:/tmp/in.txt`, '-'])).toMatchObject({ exitCode: 0, stdout: 'copied into the VM\n' });
      } finally {
        rmSync(local, { recursive: true, force: true });
      }

      expect(await cliJson(['workloads', 'pause', id])).toMatchObject({ state: 'paused' });
      await expect(page(1000)).rejects.toBeDefined();
      expect(await cliJson(['workloads', 'resume', id])).toMatchObject({ state: 'running' });
      expect(await page()).toContain(MICROVM_PAGE_TEXT);

      // Graceful: an ACPI powerdown the guest's init handles (its marker on the console), exit 0.
      expect(await corralOutcome(['workloads', 'stop', id], { timeoutMs: 120_000 })).toMatchObject({ exitCode: 0 });
      expect(await cliWaitFor(id, ['stopped', 'failed'])).toMatchObject({ state: 'stopped', exitCode: 0, ports: [] });
      expect(await follow.exited).toEqual({ exitCode: 0, signal: null });
      expect(follow.output()).toContain(MICROVM_POWERDOWN_MARKER);
    } finally {
      follow.kill();
    }

    expect(await corralOutcome(['workloads', 'rm', id])).toMatchObject({ exitCode: 0 });
    expect((await cliView(id)).state).toBe('retired');
    expect(await leftoversOf(id, hostPort)).toEqual({});
    expect(createHash('sha256').update(readFileSync(base)).digest('hex')).toBe(baseHash);
  });

  (existsSync('/usr/bin/qemu-system-x86_64') ? it : it.skip)('runs a qemu unikernel (a bootable image) through the CLI: its console in the logs, a stop although it ignores the powerdown, and a purge that leaves nothing', async () => {
    const image = writeUnikernelImage(mkdtempSync(join(dataDir, 'unikernel-')));
    const run = await corralOutcome(['--output', 'json', 'workloads', 'run', 'cli-unikernel', '--driver', 'qemu', '--image', image, '--memory', '64']);
    expect(run).toMatchObject({ exitCode: 0, stderr: '' });
    const id: string = JSON.parse(run.stdout).id;
    expect(await cliWaitFor(id, ['running', 'failed'])).toMatchObject({ state: 'running', vm: { mode: 'unikernel' } });
    await eventually(async () => ((await corralOutcome(['workloads', 'logs', id])).stdout.includes(UNIKERNEL_READY_MARKER) ? true : undefined), {
      timeoutMs: 60_000,
      what: 'the unikernel marker in the logs',
    });
    expect(await cliView(id)).toMatchObject({ state: 'running' });
    expect(await cliJson(['workloads', 'pause', id])).toMatchObject({ state: 'paused' });
    expect(await cliJson(['workloads', 'resume', id])).toMatchObject({ state: 'running' });
    expect(await corralOutcome(['workloads', 'stop', id], { timeoutMs: 120_000 })).toMatchObject({ exitCode: 0, stderr: '' });
    expect((await cliWaitFor(id, ['stopped', 'failed'])).ports).toEqual([]);
    expect(await corralOutcome(['workloads', 'rm', id])).toMatchObject({ exitCode: 0 });
    expect((await cliView(id)).state).toBe('retired');
    expect(await leftoversOf(id, 0)).toEqual({});
  });

  it('never writes secrets to service logs', () => {
    const logDir = join(dataDir, 'logs');
    for (const file of readdirSync(logDir)) {
      const text = readFileSync(join(logDir, file), 'utf8');
      expect({ file, leaked: text.includes(SECRET_VALUE) }).toEqual({ file, leaked: false });
      if (file !== 'api-gateway.log') expect({ file, leaked: text.includes(adminKey) }).toEqual({ file, leaked: false });
    }
  });
});

/** POSTs `body` and resolves with the answer's status, even when the server answers and closes mid-upload. */
function postAnsweredEarly(url: string, key: string, body: string): Promise<number> {
  return new Promise((resolvePromise, reject) => {
    const req = httpRequest(url, {
      method: 'POST',
      headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) },
    });
    req.on('response', (res) => {
      res.resume();
      resolvePromise(res.statusCode ?? 0);
    });
    // EPIPE / ECONNRESET after the answer arrived are expected; before it, they are the failure.
    req.on('error', (err) => setTimeout(() => reject(err), 1000).unref());
    req.end(body);
  });
}
