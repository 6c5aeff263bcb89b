import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { createExecutor, type ExecResult, type Executor } from '@corral/exec';
import { startSystem, type RunningSystem } from '@corral/launcher';
import { silentLogger } from '@corral/logging';
import {
  BUSYBOX_INDEX_HTML,
  buildBusyboxRootfsTar,
  createTestDatabase,
  ensureBusyboxImage,
  eventually,
  localRegistryUnavailableReason,
  natsUrlOrSkip,
  podmanUnavailableReason,
  startLocalRegistry,
  type LocalRegistry,
  type TestDatabase,
} from '@corral/testing';

// An image goes into a host through the API (not by hand on the host): a
// rootfs tarball imported through the CLI with progress, listed over REST,
// and run as a container that serves HTTP.

const repoRoot = resolve(__dirname, '..', '..', '..');
const databaseUrl = process.env.DATABASE_URL;
const natsUrl = natsUrlOrSkip();
const podmanMissing = podmanUnavailableReason();
if (podmanMissing) console.warn(`e2e image import skipped: ${podmanMissing}`);
const describeE2e = databaseUrl && natsUrl && !podmanMissing ? describe : describe.skip;
const registryMissing = localRegistryUnavailableReason();
if (registryMissing) console.warn(`e2e image pull skipped: ${registryMissing}`);
const itWithRegistry = registryMissing ? it.skip : it;
if (!databaseUrl || !natsUrl) console.warn('e2e skipped: DATABASE_URL and NATS_URL must both be set');

jest.setTimeout(240_000);

describeE2e('images through the API', () => {
  let db: TestDatabase;
  let system: RunningSystem;
  let dataDir: string;
  let adminKey: string;
  let cli: Executor;
  const ref = `localhost/corral-e2e-imported:${process.pid}`;
  // A registry on 127.0.0.1 for the pull test; the agent may reach it without TLS verification.
  let registry: LocalRegistry | undefined;
  let pulledRef: string | undefined;

  const corral = (args: string[]) =>
    cli
      .run<{ exitCode: number; stdout: string; stderr: string }>({
        program: process.execPath,
        args: ['--import', 'tsx', join(repoRoot, 'apps/cli/src/main.ts'), ...args],
        env: { CORRAL_ADDR: system.gatewayGrpcAddress, CORRAL_API_KEY: adminKey, TSX_TSCONFIG_PATH: join(repoRoot, 'tsconfig.base.json') },
        cwd: repoRoot,
        timeoutMs: 120_000,
        parse: (stdout, stderr) => ({ exitCode: 0, stdout, stderr }),
        mapError: (r: ExecResult) => Object.assign(new Error(`corral exited ${r.exitCode}`), { outcome: { exitCode: r.exitCode ?? -1, stdout: r.stdout, stderr: r.stderr } }),
      })
      .catch((err: { outcome?: { exitCode: number; stdout: string; stderr: string } }) => {
        if (err.outcome) return err.outcome;
        throw err;
      });

  const api = async (method: string, path: string, body?: unknown) => {
    const res = await fetch(`${system.gatewayUrl}${path}`, {
      method,
      headers: { authorization: `Bearer ${adminKey}`, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await res.text();
    return { status: res.status, json: text.startsWith('{') ? JSON.parse(text) : undefined };
  };

  beforeAll(async () => {
    db = await createTestDatabase();
    dataDir = mkdtempSync(join(tmpdir(), 'corral-e2e-images-'));
    if (!registryMissing) registry = await startLocalRegistry();
    system = await startSystem({
      repoRoot,
      dataDir,
      databaseUrl: db.url,
      natsUrl,
      portsMode: 'free',
      localAgent: true,
      logLevel: 'debug',
      ...(registry ? { agentEnv: { AGENT_IMAGE_INSECURE_REGISTRIES: registry.address, AGENT_IMAGE_ALLOWED_REGISTRIES: registry.address } } : {}),
    });
    adminKey = system.adminKey!;
    cli = createExecutor({ allowedPrograms: [process.execPath, 'podman'], logger: silentLogger });
  });

  afterAll(async () => {
    if (system) {
      const { json } = await api('GET', '/v1/workloads').catch(() => ({ json: undefined }));
      for (const w of json?.workloads ?? []) await api('DELETE', `/v1/workloads/${w.id}?purge=true`).catch(() => undefined);
      await system.stop();
    }
    await cli
      ?.run({ program: 'podman', args: ['rmi', '--force', ref, ...(pulledRef ? [pulledRef] : [])], timeoutMs: 60_000, parse: () => undefined, mapError: () => new Error('podman rmi failed') })
      .catch(() => undefined);
    await registry?.stop();
    await db?.drop();
    if (dataDir) rmSync(dataDir, { recursive: true, force: true });
  });

  it('imports a rootfs tarball through the CLI with progress, lists it over REST, and runs a container from it', async () => {
    const hostId = system.localHostId!;
    const archive = join(dataDir, 'rootfs.tar');
    writeFileSync(archive, buildBusyboxRootfsTar());

    const imported = await corral(['--output', 'json', 'images', 'import', '--host', hostId, '--ref', ref, archive]);
    expect(imported.exitCode).toBe(0);
    expect(imported.stderr).toMatch(/receiving: .* received/);
    expect(JSON.parse(imported.stdout)).toMatchObject({ hostId, ref, imageId: expect.any(String) });

    const listed = await api('GET', `/v1/hosts/${hostId}/images`);
    expect(listed.status).toBe(200);
    expect(listed.json.images.some((i: { refs: string[] }) => i.refs.some((r) => r.includes(ref)))).toBe(true);

    // A bad reference is refused before anything is read, naming the field.
    const bad = await fetch(`${system.gatewayUrl}/v1/hosts/${hostId}/images?ref=${encodeURIComponent('Not A Ref!')}`, {
      method: 'POST',
      headers: { authorization: `Bearer ${adminKey}`, 'content-type': 'application/octet-stream' },
      body: Buffer.from('x'),
    });
    expect(bad.status).toBe(400);
    expect(await bad.text()).toContain('ref');

    const created = await api('POST', '/v1/workloads', {
      name: 'from-imported-image',
      driver: 'podman',
      image: ref,
      command: ['httpd', '-f', '-p', '8080', '-h', '/www'],
      routes: [{ name: 'http', port: 8080 }],
      resources: { memoryMb: 64 },
    });
    expect(created.status).toBe(201);
    const running = await eventually(
      async () => {
        const { json } = await api('GET', `/v1/workloads/${created.json.id}`);
        return ['running', 'failed'].includes(json?.state) ? json : undefined;
      },
      { timeoutMs: 60_000, what: 'container from the imported image' },
    );
    expect(running.state).toBe('running');
    const port = running.ports[0].hostPort as number;
    const page = await eventually(
      async () => {
        const text = await fetch(`http://127.0.0.1:${port}/`, { signal: AbortSignal.timeout(2000) }).then((r) => r.text()).catch(() => undefined);
        return text === BUSYBOX_INDEX_HTML ? text : undefined;
      },
      { what: 'HTTP from the imported image' },
    );
    expect(page).toBe(BUSYBOX_INDEX_HTML);
    expect((await api('DELETE', `/v1/workloads/${created.json.id}?purge=true`)).json.state).toBe('retired');
  });

  itWithRegistry('pulls an image from a registry through the CLI with progress, then runs a container from it and reads its logs', async () => {
    const hostId = system.localHostId ?? '';
    if (!registry) throw new Error('the local registry did not start');
    const pushed = await registry.push(await ensureBusyboxImage(), `corral/e2e-pulled:${process.pid}`);
    pulledRef = pushed;

    const pulled = await corral(['--output', 'json', 'images', 'pull', '--host', hostId, pushed]);
    expect(pulled.exitCode).toBe(0);
    expect(pulled.stderr).toContain(`resolving ${pushed}`);
    expect(pulled.stderr).toMatch(/copying blob sha256:[0-9a-f]{12}/);
    expect(JSON.parse(pulled.stdout)).toMatchObject({ hostId, ref: pushed, imageId: expect.stringMatching(/^[0-9a-f]{64}$/), digest: expect.stringMatching(/^sha256:/) });

    // An unknown tag fails with a typed error, and a malformed ref is a 400 naming the field.
    const missing = await corral(['images', 'pull', '--host', hostId, `${registry.address}/corral/e2e-pulled:no-such-tag`]);
    expect(missing.exitCode).not.toBe(0);
    expect(missing.stderr).toMatch(/not found/i);
    const bad = await api('POST', `/v1/hosts/${hostId}/images/pull`, { ref: 'Not A Ref!' });
    expect(bad.status).toBe(400);
    expect(bad.json).toMatchObject({ field: 'ref' });

    const created = await api('POST', '/v1/workloads', {
      name: 'from-pulled-image',
      driver: 'podman',
      image: pushed,
      command: ['echo', 'hello from a pulled image'],
      resources: { memoryMb: 64 },
    });
    expect(created.status).toBe(201);
    const done = await eventually(
      async () => {
        const { json } = await api('GET', `/v1/workloads/${created.json.id}`);
        return ['stopped', 'failed'].includes(json?.state) ? json : undefined;
      },
      { timeoutMs: 60_000, what: 'the container from the pulled image to exit' },
    );
    expect(done.state).toBe('stopped');
    const logs = await fetch(`${system.gatewayUrl}/v1/workloads/${created.json.id}/logs`, { headers: { authorization: `Bearer ${adminKey}` } });
    expect(await logs.text()).toContain('hello from a pulled image');
    expect((await api('DELETE', `/v1/workloads/${created.json.id}?purge=true`)).json.state).toBe('retired');
  });
});
