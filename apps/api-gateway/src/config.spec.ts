import { ConfigError } from '@corral/config';
import { loadGatewayConfig } from './config';

// The gateway's size limits and request timeouts, read and checked at start.

const base = { DATABASE_URL: 'postgres://postgres@127.0.0.1:5432/test' };

describe('gateway config: limits and request timeouts', () => {
  it('defaults uploads to a longer timeout than ordinary requests, and images to 8 GiB', () => {
    const config = loadGatewayConfig(base);
    expect(config.requestTimeoutMs).toBe(60_000);
    expect(config.uploadTimeoutMs).toBe(6 * 60 * 60_000);
    expect(config.imageMaxBytes).toBe(8 * 1024 * 1024 * 1024);
  });

  it('reads them, 0 meaning no upload timeout', () => {
    const config = loadGatewayConfig({ ...base, GATEWAY_REQUEST_TIMEOUT_MS: '5000', GATEWAY_UPLOAD_TIMEOUT_MS: '0', GATEWAY_IMAGE_MAX_BYTES: '1048576' });
    expect(config).toMatchObject({ requestTimeoutMs: 5000, uploadTimeoutMs: 0, imageMaxBytes: 1_048_576 });
  });

  it('refuses values out of range, naming the variable', () => {
    const load = () => loadGatewayConfig({ ...base, GATEWAY_REQUEST_TIMEOUT_MS: '10', GATEWAY_UPLOAD_TIMEOUT_MS: '-1', GATEWAY_IMAGE_MAX_BYTES: '0' });
    expect(load).toThrow(ConfigError);
    expect(load).toThrow(/GATEWAY_REQUEST_TIMEOUT_MS must be >= 1000/);
    expect(load).toThrow(/GATEWAY_UPLOAD_TIMEOUT_MS/);
    expect(load).toThrow(/GATEWAY_IMAGE_MAX_BYTES/);
  });
});
