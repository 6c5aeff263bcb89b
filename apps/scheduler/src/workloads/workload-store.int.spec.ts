import { createTestDatabase, describeWithDatabase, type TestDatabase } from '@corral/testing';
import { WorkloadStore, type AgentReport } from './workload-store';

// The agent's reports (state events and RPC answers) race each other on a
// real database: ports are stored with the state under the same seq guard.
describeWithDatabase('WorkloadStore.applyAgentReport: ports under the seq guard', () => {
  let db: TestDatabase;
  let store: WorkloadStore;
  let counter = 0;
  const held = [{ name: 'http', guestPort: 8080, hostPort: 20000, protocol: 'tcp' }];
  const report = (seq: number, state: AgentReport['state'], ports?: AgentReport['ports']): AgentReport => ({ seq, state, exited: false, exitCode: 0, reason: '', ports });

  beforeAll(async () => {
    db = await createTestDatabase();
    store = new WorkloadStore(db.prisma);
  });

  afterAll(async () => {
    await db?.drop();
  });

  async function workload(): Promise<string> {
    const id = `w-store-${++counter}`;
    await db.prisma.workload.create({ data: { id, name: id, driver: 'process', state: 'provisioning', routes: [{ name: 'http', port: 8080, protocol: 'tcp' }] } });
    return id;
  }

  const stored = async (id: string) => {
    const row = await db.prisma.workload.findUniqueOrThrow({ where: { id } });
    return { state: row.state, seq: Number(row.stateSeq), ports: row.ports };
  };

  it('applies the ports of a newer report; an older answer afterwards changes nothing', async () => {
    const id = await workload();
    expect(await store.applyAgentReport(id, report(2, 'running', held), 'event')).toBe(true);
    expect(await store.applyAgentReport(id, report(1, 'provisioning', [{ ...held[0], hostPort: 29999 }]), 'start-response')).toBe(false);
    expect(await stored(id)).toEqual({ state: 'running', seq: 2, ports: held });
  });

  it('keeps the stored ports for a report that does not say, and fills them from an answer of the same seq', async () => {
    const id = await workload();
    // An older agent's event: the state, no word on ports.
    expect(await store.applyAgentReport(id, report(2, 'running'), 'event')).toBe(true);
    expect(await stored(id)).toEqual({ state: 'running', seq: 2, ports: [] });
    expect(await store.applyAgentReport(id, report(2, 'running', held), 'start-response')).toBe(false);
    expect(await stored(id)).toEqual({ state: 'running', seq: 2, ports: held });
    expect(await store.applyAgentReport(id, report(3, 'paused'), 'event')).toBe(true);
    expect(await stored(id)).toEqual({ state: 'paused', seq: 3, ports: held });
  });

  it('clears the ports on a terminal state, whatever the report lists, and a late answer does not bring them back', async () => {
    const id = await workload();
    await store.applyAgentReport(id, report(2, 'running', held), 'event');
    expect(await store.applyAgentReport(id, report(4, 'stopped', held), 'event')).toBe(true);
    expect(await stored(id)).toEqual({ state: 'stopped', seq: 4, ports: [] });
    expect(await store.applyAgentReport(id, report(3, 'stopping', held), 'stop-response')).toBe(false);
    expect(await store.applyAgentReport(id, report(4, 'stopped', held), 'stop-response')).toBe(false);
    expect(await stored(id)).toEqual({ state: 'stopped', seq: 4, ports: [] });
  });
});
