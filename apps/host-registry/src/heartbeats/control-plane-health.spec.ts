import { ControlPlaneHealth } from './control-plane-health';
import { LatencyWindow } from './latency-window';

describe('ControlPlaneHealth', () => {
  let now = 0;
  const health = () => new ControlPlaneHealth(3000, 'connected', () => now);

  beforeEach(() => (now = 1_000_000));

  it('has no reason to brake while both connections are fine', () => {
    expect(health().reasons()).toEqual([]);
  });

  it('brakes while the bus is down and for one timeout after it recovers', () => {
    const h = health();
    h.busStatus('disconnected');
    now += 60_000;
    expect(h.reasons()).toEqual(['bus-unhealthy']);
    h.busStatus('reconnecting');
    h.busStatus('connected');
    now += 2999;
    expect(h.reasons()).toEqual(['bus-unhealthy']);
    now += 1;
    expect(h.reasons()).toEqual([]);
    expect(h.busConnected).toBe(true);
  });

  it('brakes while the database fails and for one timeout after the last failure', () => {
    const h = health();
    h.databaseFailed();
    now += 10_000;
    expect(h.reasons()).toEqual(['database-unhealthy']);
    expect(h.databaseHealthy).toBe(false);
    h.databaseOk();
    now += 2000;
    expect(h.reasons()).toEqual(['database-unhealthy']);
    now += 1000;
    expect(h.reasons()).toEqual([]);
  });

  it('brakes while heartbeat storage is stalled and for one timeout after', () => {
    const h = health();
    let stalled = true;
    h.watchStorage(() => stalled);
    expect(h.reasons()).toEqual(['database-unhealthy']);
    stalled = false;
    now += 2999;
    expect(h.reasons()).toEqual(['database-unhealthy']);
    now += 1;
    expect(h.reasons()).toEqual([]);
  });

  it('starts braked when the bus is not connected at start', () => {
    expect(new ControlPlaneHealth(3000, 'reconnecting', () => now).reasons()).toEqual(['bus-unhealthy']);
  });
});

describe('LatencyWindow', () => {
  it('keeps the last samples only and answers nearest-rank percentiles', () => {
    const w = new LatencyWindow(100);
    for (let i = 1; i <= 300; i++) w.add(i);
    expect(w.count).toBe(100);
    expect(w.percentile(0)).toBe(201);
    expect(w.percentile(50)).toBe(250);
    expect(w.percentile(99)).toBe(299);
    expect(w.percentile(100)).toBe(300);
    expect(new LatencyWindow(5).percentile(99)).toBe(0);
  });
});
