import { InvalidSubjectTokenError, isValidSubjectToken } from '@corral/events';
import { describeWithNats, natsUrlOrSkip, uniqueSubjectPrefix, uniqueSubjectToken } from './nats';

const saved = process.env['NATS_URL'];
const restore = (): void => {
  if (saved === undefined) delete process.env['NATS_URL'];
  else process.env['NATS_URL'] = saved;
};

// describeWithNats decides when the suite is defined, so set the variable
// around each call at collection time.
process.env['NATS_URL'] = 'nats://example.invalid:4222';
let definedWith: string | undefined;
describeWithNats('describeWithNats with NATS_URL set', (url) => {
  definedWith = url;
  it('runs and receives the URL', () => {
    expect(url).toBe('nats://example.invalid:4222');
  });
});
delete process.env['NATS_URL'];
describeWithNats('describeWithNats without NATS_URL', () => {
  it('must not run', () => {
    throw new Error('a suite without NATS_URL ran');
  });
});
restore();

describe('natsUrlOrSkip', () => {
  afterEach(restore);

  it('returns NATS_URL when set', () => {
    process.env['NATS_URL'] = ' nats://127.0.0.1:4222 ';
    expect(natsUrlOrSkip('x')).toBe('nats://127.0.0.1:4222');
  });

  it('returns undefined and says why once per suite when unset', () => {
    delete process.env['NATS_URL'];
    const log = jest.spyOn(console, 'log').mockImplementation(() => undefined);
    try {
      expect(natsUrlOrSkip('suite-a')).toBeUndefined();
      expect(natsUrlOrSkip('suite-a')).toBeUndefined();
      expect(log).toHaveBeenCalledTimes(1);
      expect(log.mock.calls[0][0]).toMatch(/suite-a: NATS_URL is not set/);
    } finally {
      log.mockRestore();
    }
  });

  it('passed the URL to the enabled suite', () => {
    expect(definedWith).toBe('nats://example.invalid:4222');
  });
});

describe('unique subjects', () => {
  it('makes distinct valid subject tokens and prefixes', () => {
    const a = uniqueSubjectToken('host');
    const b = uniqueSubjectToken('host');
    expect(a).not.toBe(b);
    expect(isValidSubjectToken(a)).toBe(true);
    const prefix = uniqueSubjectPrefix('bus');
    expect(prefix.startsWith('test.bus-')).toBe(true);
    expect(prefix.split('.').every(isValidSubjectToken)).toBe(true);
  });

  it('refuses a label that is not a subject token', () => {
    expect(() => uniqueSubjectToken('a.b')).toThrow(InvalidSubjectTokenError);
  });
});
