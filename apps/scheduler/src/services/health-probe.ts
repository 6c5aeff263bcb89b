import { request as httpRequest } from 'node:http';
import { connect } from 'node:net';
import type { ComponentHealthCheck } from '@corral/domain';
import { openBidiStream } from '@corral/grpc';
import type { agentV1 } from '@corral/proto';
import type { AgentPool } from '../agents/agent-pool';
import type { DirectoryHost } from '../hosts/host-directory';
import type { PortMapping } from '../workloads/workload-store';

// One health check of one instance: tcp connect or HTTP GET (2xx) to the
// route's host port on the instance's host, or a command run inside the
// instance through its agent's Exec (exit 0). tcp and http dial the host
// from the scheduler, so the host's published ports must be reachable from
// here (agents publish on 127.0.0.1 by default: a single-machine fleet, or
// AGENT hostIp set to an address the control plane reaches).

export interface ProbeTarget {
  workloadId: string;
  host: DirectoryHost;
  ports: PortMapping[];
}

export interface HealthProbe {
  /** True when the check passed; never throws. */
  check(target: ProbeTarget, check: ComponentHealthCheck): Promise<boolean>;
}

/** The host part of an agent address (`10.0.0.5:50060`, `[::1]:50060`). */
export function hostOfAddress(address: string): string {
  const v6 = /^\[([^\]]+)\]:\d+$/.exec(address);
  if (v6) return v6[1];
  const i = address.lastIndexOf(':');
  return i > 0 ? address.slice(0, i) : address;
}

function tcpCheck(host: string, port: number, timeoutMs: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ host, port });
    const done = (ok: boolean) => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(timeoutMs, () => done(false));
    socket.once('connect', () => done(true));
    socket.once('error', () => done(false));
  });
}

function httpCheck(host: string, port: number, path: string, timeoutMs: number): Promise<boolean> {
  return new Promise((resolve) => {
    const req = httpRequest({ host, port, path, method: 'GET', timeout: timeoutMs, headers: { 'user-agent': 'corral-health-check' } }, (res) => {
      res.resume();
      const status = res.statusCode ?? 0;
      resolve(status >= 200 && status < 300);
    });
    req.once('timeout', () => req.destroy(new Error('timeout')));
    req.once('error', () => resolve(false));
    req.end();
  });
}

async function execCheck(agents: AgentPool, target: ProbeTarget, command: string[], timeoutMs: number): Promise<boolean> {
  const agent = agents.get(target.host);
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), timeoutMs);
  try {
    const call = openBidiStream<agentV1.ExecRequest, agentV1.ExecResponse>((md, o) => agent.raw.exec(md, o), { signal: controller.signal });
    await call.write({ kind: { $case: 'start', value: { workloadId: target.workloadId, command, tty: false, env: {}, workingDir: '', size: undefined } } });
    await call.write({ kind: { $case: 'stdinEof', value: true } });
    call.end();
    for await (const message of call.responses) {
      if (message.kind?.$case === 'exit') return message.kind.value.exitCode === 0;
    }
    return false;
  } catch {
    return false;
  } finally {
    clearTimeout(timer);
    controller.abort();
  }
}

export function networkHealthProbe(agents: AgentPool): HealthProbe {
  return {
    async check(target, check) {
      const timeoutMs = check.timeoutSeconds * 1000;
      if (check.type === 'exec') return execCheck(agents, target, check.command, timeoutMs);
      const mapping = target.ports.find((p) => p.name === check.port && p.protocol !== 'udp');
      if (!mapping) return false;
      const address = hostOfAddress(target.host.agentAddress);
      return check.type === 'http' ? httpCheck(address, mapping.hostPort, check.path, timeoutMs) : tcpCheck(address, mapping.hostPort, timeoutMs);
    },
  };
}
