import { ConfigError } from '@corral/config';
import { loadReconcilerConfig } from './config';

const base = { DATABASE_URL: 'postgres://postgres@127.0.0.1:5432/test', NATS_URL: 'nats://127.0.0.1:4222' };

describe('reconciler config', () => {
  it('has defaults for everything but the database and the bus', () => {
    const config = loadReconcilerConfig(base);
    expect(config).toMatchObject({ grpcPort: 50055, intervalMs: 5000, intentGraceMs: 60_000, provisioningTimeoutMs: 300_000, maxActionsPerRound: 20, schedulerAddr: '127.0.0.1:50051' });
    expect(() => loadReconcilerConfig({ NATS_URL: base.NATS_URL })).toThrow(ConfigError);
  });

  it('fails fast on bad numbers and on half a TLS setup, naming the variables', () => {
    expect(() => loadReconcilerConfig({ ...base, RECONCILE_INTERVAL_MS: 'soon' })).toThrow(/RECONCILE_INTERVAL_MS/);
    expect(() => loadReconcilerConfig({ ...base, RECONCILE_MAX_ACTIONS: '-1' })).toThrow(/RECONCILE_MAX_ACTIONS/);
    expect(() => loadReconcilerConfig({ ...base, AGENT_TLS_CERT_FILE: '/x/cert.pem' })).toThrow(/AGENT_TLS_CA_FILE, AGENT_TLS_KEY_FILE are required/);
  });
});
