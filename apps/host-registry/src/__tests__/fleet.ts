// Test support: hosts inserted directly (these tests are about membership,
// not registration), heartbeats built the way an agent builds them, and a
// poller for outcomes (no timed assertions: poll with a generous deadline).

import { randomUUID } from 'node:crypto';
import type { PrismaClient } from '@corral/db';
import { HostHeartbeat, InstanceState } from '@corral/proto';

export async function insertHosts(prisma: PrismaClient, count: number, lastHeartbeatAt: Date | null = new Date()): Promise<string[]> {
  const ids = Array.from({ length: count }, () => randomUUID());
  await prisma.host.createMany({
    data: ids.map((id, i) => ({
      id,
      name: `h-${i}`,
      status: 'online',
      agentAddress: '127.0.0.1:50060',
      capacity: { cpuMillis: 1000, memoryMb: 512, diskMb: 1024 },
      lastHeartbeatAt,
    })),
  });
  return ids;
}

export function heartbeat(
  hostId: string,
  bootId: string,
  seq: number,
  sentAt: Date,
  extra: { memoryMb?: number; workloads?: Array<{ workloadId: string; state: InstanceState }> } = {},
): HostHeartbeat {
  return HostHeartbeat.fromPartial({
    hostId,
    bootId,
    seq,
    sentAt,
    usage: { cpuMillis: 1, memoryMb: extra.memoryMb ?? seq, diskMb: 1 },
    workloads: extra.workloads ?? [],
    agentAddress: '127.0.0.1:50061',
  });
}

/** Polls `probe` until it returns a value that is not undefined/false, or fails after `timeoutMs`. */
export async function eventually<T>(probe: () => Promise<T | undefined | false> | T | undefined | false, what: string, timeoutMs = 20_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await probe();
      if (v !== undefined && v !== false) return v as T;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}${last ? `: ${String(last)}` : ''}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
