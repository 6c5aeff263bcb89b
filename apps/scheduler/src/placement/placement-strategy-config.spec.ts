import { loadSchedulerConfig } from '../config';

// SCHEDULER_PLACEMENT_STRATEGY: the scheduler's default strategy (a request may override it).
describe('SCHEDULER_PLACEMENT_STRATEGY', () => {
  const env = { DATABASE_URL: 'postgres://postgres@127.0.0.1:5432/x', NATS_URL: 'nats://127.0.0.1:4222' };

  it('defaults to round-robin and takes any strategy the planner knows', () => {
    expect(loadSchedulerConfig(env).placementStrategy).toBe('round-robin');
    for (const strategy of ['round-robin', 'bin-pack', 'spread', 'best-of-k']) {
      expect(loadSchedulerConfig({ ...env, SCHEDULER_PLACEMENT_STRATEGY: strategy }).placementStrategy).toBe(strategy);
    }
  });

  it('refuses anything else, naming the variable', () => {
    expect(() => loadSchedulerConfig({ ...env, SCHEDULER_PLACEMENT_STRATEGY: 'random' })).toThrow(/SCHEDULER_PLACEMENT_STRATEGY/);
  });
});
