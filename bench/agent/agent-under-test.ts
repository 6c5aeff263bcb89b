import { join } from 'node:path';
import { createInMemoryEventBus } from '@corral/events';
import { createClient, type PromiseClient } from '@corral/grpc';
import { silentLogger } from '@corral/logging';
import { agentV1 } from '@corral/proto';
import { loadNodeAgentConfig } from '../../apps/node-agent/src/config';
import type { Driver } from '../../apps/node-agent/src/drivers/driver';
import { PodmanDriver } from '../../apps/node-agent/src/drivers/podman';
import { ProcessDriver } from '../../apps/node-agent/src/drivers/process/process-driver';
import { QemuDriver } from '../../apps/node-agent/src/drivers/qemu';
import { startNodeAgent, type RunningNodeAgent } from '../../apps/node-agent/src/node-agent';
import type { DriverName } from './lib/args';

// The Corral side of the comparisons: a real node agent (startNodeAgent:
// gRPC server, WorkloadSupervisor with its persisted records, port
// allocator, heartbeats) in this process, with the real drivers configured
// as main.ts configures them from AGENT_* settings, called over gRPC on
// loopback exactly as the scheduler calls it. Only registration is skipped
// (a fixed host id) and events go to an in-memory bus with no subscribers
// instead of NATS (publishing is fire-and-forget either way).

export interface BenchAgent {
  agent: RunningNodeAgent;
  client: PromiseClient<agentV1.NodeAgentServiceClient>;
  stateDir: string;
  /** Where the qemu driver keeps <workloadId>/qmp.sock. */
  qemuStateDir: string;
  stop(): Promise<void>;
}

export const BENCH_VM_MEMORY_MB = 256;
export const BENCH_VM_VCPUS = 1;

export async function startBenchAgent(root: string, drivers: readonly DriverName[]): Promise<BenchAgent> {
  const stateDir = join(root, 'agent');
  const config = loadNodeAgentConfig({
    AGENT_GRPC_PORT: '0',
    AGENT_STATE_DIR: stateDir,
    AGENT_ENABLE_PROCESS_DRIVER: String(drivers.includes('process')),
    AGENT_ENABLE_PODMAN_DRIVER: String(drivers.includes('podman')),
    AGENT_ENABLE_QEMU_DRIVER: String(drivers.includes('qemu')),
    // The raw baseline runs tcg; so must Corral (guests hang under kvm here anyway).
    AGENT_QEMU_ACCELERATOR: 'tcg',
    AGENT_QEMU_DEFAULT_MEMORY_MB: String(BENCH_VM_MEMORY_MB),
    AGENT_QEMU_DEFAULT_VCPUS: String(BENCH_VM_VCPUS),
    NATS_URL: 'nats://127.0.0.1:1',
    LOG_LEVEL: 'error',
  });
  const qemuStateDir = join(stateDir, 'qemu');
  // As node-agent.ts builds them from the config (it does the same when given none).
  const instances: Driver[] = [];
  if (config.enableProcessDriver) instances.push(new ProcessDriver({ rootDir: join(stateDir, 'process'), logger: silentLogger }));
  if (config.enablePodmanDriver) instances.push(new PodmanDriver({ logger: silentLogger, program: config.podmanProgram }));
  if (config.enableQemuDriver) {
    instances.push(
      new QemuDriver({
        accelerator: config.qemuAccelerator,
        stateDir: qemuStateDir,
        defaultMemoryMb: config.qemuDefaultMemoryMb,
        defaultVcpus: config.qemuDefaultVcpus,
        logger: silentLogger,
      }),
    );
  }
  const bus = createInMemoryEventBus();
  const agent = await startNodeAgent(config, { hostId: 'bench-host', bus, logger: silentLogger, drivers: instances });
  const client = createClient(agentV1.NodeAgentServiceClient, agent.address, { deadlineMs: 180_000 });
  let stopping: Promise<void> | undefined;
  return {
    agent,
    client,
    stateDir,
    qemuStateDir,
    stop: () =>
      (stopping ??= (async () => {
        client.close();
        await agent.stop();
        await bus.close();
      })()),
  };
}
