import { createSocket, type Socket } from 'node:dgram';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { InvalidArgumentError, ResourceExhaustedError } from '@corral/domain';
import { silentLogger } from '@corral/logging';
import { freePort } from '@corral/testing';
import type { HostPortProbe } from './host-port-probe';
import { createHostPortProbe } from './host-port-probe';
import { DEFAULT_PORT_RANGE, PortAllocator, parsePortRange, type PortRange } from './port-allocator';
import type { RouteRequest } from './routes';

/** A host where the listed ports are taken; records what was probed. */
class FakeProbe implements HostPortProbe {
  readonly probed: number[] = [];
  constructor(readonly busy = new Set<number>()) {}
  async isFree(port: number): Promise<boolean> {
    this.probed.push(port);
    return !this.busy.has(port);
  }
}

const web: RouteRequest = { name: 'web', guestPort: 8080, protocol: 'tcp' };
const admin: RouteRequest = { name: 'admin', guestPort: 9090, protocol: 'tcp' };
const dns: RouteRequest = { name: 'dns', guestPort: 53, protocol: 'udp' };

describe('PortAllocator', () => {
  let stateDir: string;
  beforeEach(() => {
    stateDir = mkdtempSync(join(tmpdir(), 'corral-ports-'));
  });
  afterEach(() => rmSync(stateDir, { recursive: true, force: true }));

  const allocator = (range: PortRange = { start: 20000, end: 20009 }, probe: HostPortProbe = new FakeProbe()) =>
    new PortAllocator({ stateDir, logger: silentLogger, range, probe });

  it('defaults to 10000-60000', () => {
    expect(new PortAllocator({ stateDir, logger: silentLogger }).range).toEqual(DEFAULT_PORT_RANGE);
    expect(DEFAULT_PORT_RANGE).toEqual({ start: 10000, end: 60000 });
  });

  it('gives each route its own host port in the range, in route order', async () => {
    const ports = await allocator().allocate('w1', [web, admin, dns]);
    expect(ports).toEqual([
      { name: 'web', guestPort: 8080, hostPort: 20000, protocol: 'tcp' },
      { name: 'admin', guestPort: 9090, hostPort: 20001, protocol: 'tcp' },
      { name: 'dns', guestPort: 53, hostPort: 20002, protocol: 'udp' },
    ]);
  });

  it('is idempotent per workload and keeps allocations across a restart', async () => {
    const first = allocator();
    const ports = await first.allocate('w1', [web, admin]);
    expect(await first.allocate('w1', [web, admin])).toEqual(ports);
    await first.allocate('w2', [web]);

    const restarted = allocator();
    expect(await restarted.allocate('w1', [web, admin])).toEqual(ports);
    expect(await restarted.get('w2')).toEqual([{ name: 'web', guestPort: 8080, hostPort: 20002, protocol: 'tcp' }]);
    const third = await restarted.allocate('w3', [web]);
    expect(third[0].hostPort).toBe(20003);
  });

  it('persists the table as private JSON in the state dir', async () => {
    await allocator().allocate('w1', [web]);
    const table = JSON.parse(readFileSync(join(stateDir, 'ports.json'), 'utf8'));
    expect(table.workloads.w1[0].hostPort).toBe(20000);
  });

  it('on a changed route list keeps ports of unchanged routes, adds new ones and drops removed ones', async () => {
    const ports = allocator();
    const [w, a] = await ports.allocate('w1', [web, admin]);
    const updated = await ports.allocate('w1', [{ ...web, guestPort: 3000 }, dns]);
    expect(updated[0]).toEqual({ ...w, guestPort: 3000 });
    expect(updated[1].hostPort).not.toBe(w.hostPort);
    expect(updated[1].hostPort).not.toBe(a.hostPort);
    // The admin port is free again.
    const all = Object.values(await ports.list()).flat().map((m) => m.hostPort);
    expect(all).not.toContain(a.hostPort);
  });

  it('a route whose protocol changed gets a new port', async () => {
    const ports = allocator();
    const [tcp] = await ports.allocate('w1', [web]);
    const [udp] = await ports.allocate('w1', [{ ...web, protocol: 'udp' }]);
    expect(udp.hostPort).not.toBe(tcp.hostPort);
  });

  it('release is idempotent and frees the ports', async () => {
    const ports = allocator({ start: 20000, end: 20001 });
    await ports.allocate('w1', [web, admin]);
    await expect(ports.allocate('w2', [web])).rejects.toBeInstanceOf(ResourceExhaustedError);
    expect((await ports.release('w1')).map((m) => m.hostPort)).toEqual([20000, 20001]);
    expect(await ports.release('w1')).toEqual([]);
    expect(await ports.release('never-seen')).toEqual([]);
    expect(await ports.get('w1')).toBeUndefined();
    expect((await ports.allocate('w2', [web, admin])).map((m) => m.hostPort).sort()).toEqual([20000, 20001]);
  });

  it('throws ResourceExhaustedError when the range is full, allocating nothing', async () => {
    const ports = allocator({ start: 20000, end: 20002 });
    await ports.allocate('w1', [web, admin]);
    await expect(ports.allocate('w2', [web, admin])).rejects.toBeInstanceOf(ResourceExhaustedError);
    expect(await ports.get('w2')).toBeUndefined();
    expect(await ports.allocate('w2', [web])).toHaveLength(1);
  });

  it('skips ports the host reports in use', async () => {
    const probe = new FakeProbe(new Set([20000, 20002]));
    const ports = await allocator(undefined, probe).allocate('w1', [web, admin]);
    expect(ports.map((m) => m.hostPort)).toEqual([20001, 20003]);
  });

  it('counts host-occupied ports towards exhaustion', async () => {
    const probe = new FakeProbe(new Set([20000, 20001]));
    await expect(allocator({ start: 20000, end: 20002 }, probe).allocate('w1', [web, admin])).rejects.toBeInstanceOf(ResourceExhaustedError);
  });

  it('searches next-fit: a just-released port is not handed out again while others are free', async () => {
    const ports = allocator();
    const [first] = await ports.allocate('w1', [web]);
    await ports.release('w1');
    const [second] = await ports.allocate('w2', [web]);
    expect(second.hostPort).toBe(first.hostPort + 1);
  });

  it('never gives two concurrent allocations the same port', async () => {
    // A slow probe widens the window a missing lock would leave open.
    const slow: HostPortProbe = { isFree: () => new Promise((r) => setTimeout(() => r(true), 2)) };
    const ports = allocator({ start: 20000, end: 20099 }, slow);
    const results = await Promise.all(Array.from({ length: 20 }, (_, i) => ports.allocate(`w${i}`, [web, admin])));
    const hostPorts = results.flat().map((m) => m.hostPort);
    expect(new Set(hostPorts).size).toBe(40);
  });

  it('validates the workload id and the routes', async () => {
    const ports = allocator();
    await expect(ports.allocate('../etc', [web])).rejects.toMatchObject({ field: 'workloadId' });
    await expect(ports.allocate('w1', [web, { name: 'Bad', guestPort: 1, protocol: 'tcp' }])).rejects.toMatchObject({
      name: 'InvalidArgumentError',
      field: 'routes[1].name',
    });
  });

  it('an empty route list holds no ports', async () => {
    const ports = allocator();
    await ports.allocate('w1', [web]);
    expect(await ports.allocate('w1', [])).toEqual([]);
    expect(await ports.get('w1')).toBeUndefined();
  });

  it('refuses a table it cannot read rather than hand out ports twice', async () => {
    writeFileSync(join(stateDir, 'ports.json'), '{"version": 7}');
    await expect(allocator().init()).rejects.toThrow(/port table/);
  });

  it('keeps ports outside a narrowed range as held', async () => {
    await allocator({ start: 20000, end: 20009 }).allocate('w1', [web]);
    const narrowed = allocator({ start: 20005, end: 20009 });
    expect((await narrowed.allocate('w1', [web]))[0].hostPort).toBe(20000);
    expect((await narrowed.allocate('w2', [web]))[0].hostPort).toBe(20005);
  });

  it('rejects malformed ranges', () => {
    expect(() => allocator({ start: 5, end: 4 })).toThrow(InvalidArgumentError);
    expect(() => allocator({ start: 0, end: 4 })).toThrow(InvalidArgumentError);
    expect(() => allocator({ start: 1, end: 70000 })).toThrow(InvalidArgumentError);
  });
});

describe('parsePortRange', () => {
  it('parses a-b', () => {
    expect(parsePortRange('10000-60000')).toEqual({ start: 10000, end: 60000 });
    expect(parsePortRange(' 2000 - 2001 ')).toEqual({ start: 2000, end: 2001 });
  });
  it.each(['', '10000', '10000-', 'a-b', '60000-10000', '1-65536'])('rejects %j', (text) => {
    expect(() => parsePortRange(text, 'AGENT_PORT_RANGE')).toThrow(expect.objectContaining({ field: 'AGENT_PORT_RANGE' }));
  });
});

describe('host port probe (real sockets)', () => {
  const probe = createHostPortProbe();
  const closers: Array<() => Promise<void>> = [];
  afterEach(async () => {
    await Promise.all(closers.splice(0).map((close) => close()));
  });

  const listenTcp = (port: number, host: string) =>
    new Promise<Server>((resolve, reject) => {
      const server = createServer();
      server.once('error', reject);
      server.listen(port, host, () => {
        closers.push(() => new Promise((r) => server.close(() => r())));
        resolve(server);
      });
    });
  const bindUdp = (port: number, address: string) =>
    new Promise<Socket>((resolve, reject) => {
      const socket = createSocket('udp4');
      socket.once('error', reject);
      socket.bind(port, address, () => {
        closers.push(() => new Promise((r) => socket.close(() => r())));
        resolve(socket);
      });
    });

  it('reports a free port free, and leaves it free', async () => {
    const port = await freePort();
    expect(await probe.isFree(port, 'tcp')).toBe(true);
    expect(await probe.isFree(port, 'tcp')).toBe(true);
    await listenTcp(port, '127.0.0.1');
  });

  it.each(['127.0.0.1', '0.0.0.0'])('sees a TCP listener on %s', async (host) => {
    const port = await freePort();
    await listenTcp(port, host);
    expect(await probe.isFree(port, 'tcp')).toBe(false);
  });

  it.each(['127.0.0.1', '0.0.0.0'])('sees a UDP socket on %s', async (address) => {
    const port = await freePort();
    await bindUdp(port, address);
    expect(await probe.isFree(port, 'udp')).toBe(false);
  });

  it('makes the allocator skip a port in use on the host', async () => {
    const stateDir = mkdtempSync(join(tmpdir(), 'corral-ports-'));
    try {
      const port = await freePort();
      await listenTcp(port, '0.0.0.0');
      const ports = new PortAllocator({ stateDir, logger: silentLogger, range: { start: port, end: Math.min(port + 20, 65535) } });
      const [m] = await ports.allocate('w1', [web]);
      expect(m.hostPort).not.toBe(port);
    } finally {
      rmSync(stateDir, { recursive: true, force: true });
    }
  });
});
