import { createServer } from 'node:net';

export interface Ports {
  gatewayHttp: number;
  gatewayGrpc: number;
  scheduler: number;
  hostRegistry: number;
  edgeRouter: number;
  secretsBroker: number;
  reconciler: number;
  agent: number;
  nats: number;
  postgres: number;
}

/** `fixed`: the documented defaults (env-overridable); `free`: ports the OS hands out (tests). */
export type PortsMode = 'fixed' | 'free';

export const DEFAULT_PORTS: Ports = {
  gatewayHttp: 8080,
  gatewayGrpc: 50050,
  scheduler: 50051,
  hostRegistry: 50052,
  edgeRouter: 50053,
  secretsBroker: 50054,
  reconciler: 50055,
  agent: 50060,
  nats: 4223,
  postgres: 5433,
};

/** A port the OS hands out now (it may be taken again before it is used). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => (typeof address === 'object' && address ? resolve(address.port) : reject(new Error('no port'))));
    });
  });
}

function portInUse(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = createServer();
    server.once('error', () => resolve(true));
    server.listen(port, '127.0.0.1', () => server.close(() => resolve(false)));
  });
}

export async function allocatePorts(mode: PortsMode): Promise<Ports> {
  const ports = { ...DEFAULT_PORTS };
  if (mode === 'free') {
    for (const key of Object.keys(ports) as (keyof Ports)[]) ports[key] = await freePort();
    return ports;
  }
  const busy: string[] = [];
  for (const [key, port] of Object.entries(ports)) if (await portInUse(port)) busy.push(`${key} (${port})`);
  if (busy.length) throw new Error(`ports already in use: ${busy.join(', ')} — is Corral already running?`);
  return ports;
}
