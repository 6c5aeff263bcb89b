import { ConfigError, describeConfig, int, loadConfig, oneOf, optionalUrl, port, str, url } from './config';

const schema = {
  grpcPort: port('SVC_GRPC_PORT', { default: 50051 }),
  databaseUrl: url('DATABASE_URL', { protocols: ['postgres:', 'postgresql:'] }),
  natsUrl: optionalUrl('NATS_URL'),
  level: oneOf('LOG_LEVEL', ['info', 'debug'] as const, { default: 'info' }),
  token: str('SVC_TOKEN', { secret: true }),
  retries: int('SVC_RETRIES', { default: 3, min: 0, max: 10 }),
};

describe('loadConfig', () => {
  it('reads and types every field, applying defaults', () => {
    const config = loadConfig(schema, { DATABASE_URL: 'postgres://u:p@h:5432/d', SVC_TOKEN: 't0ps3cret' });
    expect(config).toEqual({
      grpcPort: 50051,
      databaseUrl: 'postgres://u:p@h:5432/d',
      natsUrl: undefined,
      level: 'info',
      token: 't0ps3cret',
      retries: 3,
    });
  });

  it('reports every bad variable by name at once', () => {
    let error: unknown;
    try {
      loadConfig(schema, { SVC_GRPC_PORT: '70000', DATABASE_URL: 'mysql://x', LOG_LEVEL: 'loud', SVC_RETRIES: 'two' });
    } catch (err) {
      error = err;
    }
    expect(error).toBeInstanceOf(ConfigError);
    const problems = (error as ConfigError).problems;
    expect(problems).toEqual([
      'SVC_GRPC_PORT must be <= 65535',
      'DATABASE_URL must use postgres: or postgresql:, got mysql:',
      'LOG_LEVEL must be one of info, debug, got "loud"',
      'SVC_TOKEN is required',
      'SVC_RETRIES must be an integer, got "two"',
    ]);
  });

  it('never echoes a malformed URL, which may carry a password', () => {
    expect(() => loadConfig(schema, { DATABASE_URL: 'not a url with s3cret', SVC_TOKEN: 'x' })).toThrow(/DATABASE_URL must be a URL$/m);
    expect(() => loadConfig(schema, { DATABASE_URL: 'not a url with s3cret', SVC_TOKEN: 'x' })).not.toThrow(/s3cret/);
  });

  it('describes a config without secrets or URL passwords', () => {
    const config = loadConfig(schema, { DATABASE_URL: 'postgres://u:hunter2@h:5432/d', SVC_TOKEN: 't0ps3cret' });
    const view = JSON.stringify(describeConfig(schema, config));
    expect(view).not.toContain('hunter2');
    expect(view).not.toContain('t0ps3cret');
    expect(view).toContain('"SVC_TOKEN":"(set)"');
  });
});
