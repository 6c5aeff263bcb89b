import { createSocket } from 'node:dgram';
import { createServer } from 'node:net';
import type { PortProtocol } from './routes';

// Whether a port is free on this host right now, found by binding it for a
// moment. Only a hint: another program may take the port between the probe
// and the workload binding it, which the driver then reports as a start
// failure. The allocator's own table is what keeps Corral's workloads apart.

export interface HostPortProbe {
  isFree(port: number, protocol: PortProtocol): Promise<boolean>;
}

/** The addresses a forwarded port may be published on: loopback (qemu hostfwd, podman -p 127.0.0.1:…) and any. */
export const PROBE_ADDRESSES = ['127.0.0.1', '0.0.0.0'] as const;

/** Binds `port` on each of `addresses` in turn (TCP listen or UDP bind), releasing each at once. */
export function createHostPortProbe(addresses: readonly string[] = PROBE_ADDRESSES): HostPortProbe {
  return {
    async isFree(port, protocol) {
      for (const address of addresses) {
        const free = protocol === 'udp' ? await canBindUdp(port, address) : await canListenTcp(port, address);
        if (!free) return false;
      }
      return true;
    },
  };
}

function canListenTcp(port: number, host: string): Promise<boolean> {
  return new Promise((resolve) => {
    const server = createServer();
    server.unref();
    // Any failure (EADDRINUSE, EACCES below 1024...) means "not usable".
    server.once('error', () => resolve(false));
    server.listen({ port, host, exclusive: true }, () => server.close(() => resolve(true)));
  });
}

function canBindUdp(port: number, address: string): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = createSocket({ type: 'udp4', reuseAddr: false });
    socket.unref();
    socket.once('error', () => {
      try {
        socket.close();
      } catch {
        // never bound: nothing to close
      }
      resolve(false);
    });
    socket.bind({ port, address, exclusive: true }, () => socket.close(() => resolve(true)));
  });
}
