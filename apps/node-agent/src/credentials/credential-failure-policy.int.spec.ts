import { readFileSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { UnauthenticatedError } from '@corral/domain';
import { silentLogger } from '@corral/logging';
import { eventually, freePort } from '@corral/testing';
import { loadNodeAgentConfig } from '../config';
import { ProcessDriver } from '../drivers/process/process-driver';
import { startNodeAgent, type RunningNodeAgent } from '../node-agent';
import type { CredentialFailurePolicy } from './credential-refresher';

// AGENT_CREDENTIAL_FAILURE_POLICY with a whole agent and the real process
// driver: once host-registry refuses the refresh token (a stand-in here; the
// real registry's refusals are in host-registry's own tests), `pause-all`
// freezes the running workload's process (SIGSTOP: the kernel shows it
// stopped) and `keep-running` leaves it running. The refresh is held back
// until the workload runs, so nothing depends on timing.

/** The process state letter the kernel reports (R, S, T, ...). */
const kernelState = (pid: number) => readFileSync(`/proc/${pid}/stat`, 'utf8').replace(/^.*\) /s, '').charAt(0);

describe('credential failure policy with a real agent and process driver', () => {
  jest.setTimeout(60_000);
  const dirs: string[] = [];
  const agents: RunningNodeAgent[] = [];

  afterAll(async () => {
    for (const agent of agents) {
      for (const w of agent.supervisor.list()) await agent.supervisor.destroy(w.workloadId, { force: true, timeoutMs: 2000 }).catch(() => undefined);
      await agent.stop();
    }
    for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
  });

  async function agentWhoseRefreshIsRefused(policy: CredentialFailurePolicy) {
    const stateDir = mkdtempSync(join(tmpdir(), `corral-agent-${policy}-`));
    dirs.push(stateDir);
    let refuse!: () => void;
    const refusedLater = new Promise<void>((resolve) => (refuse = resolve));
    const config = loadNodeAgentConfig({
      NATS_URL: 'nats://127.0.0.1:1',
      AGENT_GRPC_PORT: String(await freePort()),
      AGENT_STATE_DIR: stateDir,
      AGENT_REGISTRATION_TOKEN: 'crt_test',
      AGENT_NAME: `policy-${policy}`,
      AGENT_CREDENTIAL_FAILURE_POLICY: policy,
    });
    const agent = await startNodeAgent(config, {
      logger: silentLogger,
      bus: { publish: () => undefined } as never,
      drivers: [new ProcessDriver({ rootDir: join(stateDir, 'process'), logger: silentLogger })],
      registerHost: async () => ({
        hostId: `host-${policy}`,
        hostToken: 'jwt-0',
        // Short-lived, so the first refresh is due while the test runs.
        hostTokenExpiresAt: new Date(Date.now() + 1500),
        refreshToken: 'crr_0',
        refreshTokenExpiresAt: new Date(Date.now() + 86_400_000),
        certificate: undefined,
      }),
      refreshHostCredentials: async () => {
        await refusedLater;
        throw new UnauthenticatedError('refresh token is invalid or expired');
      },
    });
    agents.push(agent);
    return { agent, refuse };
  }

  async function runningSleeper(agent: RunningNodeAgent, workloadId: string) {
    await agent.supervisor.start({ workloadId, name: workloadId, driver: 'process', command: ['/bin/sleep', '300'], env: {}, labels: {} });
    const view = await eventually(async () => {
      const w = agent.supervisor.inspect(workloadId);
      return w.state === 'running' && w.handle ? w : undefined;
    }, { what: `${workloadId} running` });
    return Number(view.handle);
  }

  it('pause-all: a refused refresh pauses the running workload, whose process the kernel then shows stopped', async () => {
    const { agent, refuse } = await agentWhoseRefreshIsRefused('pause-all');
    const pid = await runningSleeper(agent, 'w-pause-all');
    expect(kernelState(pid)).not.toBe('T');

    refuse();
    const status = await eventually(async () => (agent.credentials?.status.paused ? agent.credentials.status : undefined), { what: 'the policy to have run' });
    expect(status).toMatchObject({ state: 'failed', paused: ['w-pause-all'] });
    expect(agent.supervisor.inspect('w-pause-all').state).toBe('paused');
    expect(kernelState(pid)).toBe('T');
  });

  it('keep-running: a refused refresh leaves the workload running', async () => {
    const { agent, refuse } = await agentWhoseRefreshIsRefused('keep-running');
    const pid = await runningSleeper(agent, 'w-keep-running');

    refuse();
    await eventually(async () => agent.credentials?.status.state === 'failed' || undefined, { what: 'the refresh to have failed' });
    expect(agent.credentials?.status.paused).toBeUndefined();
    expect(agent.supervisor.inspect('w-keep-running').state).toBe('running');
    expect(kernelState(pid)).not.toBe('T');
  });
});
