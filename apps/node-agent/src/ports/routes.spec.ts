import { InvalidArgumentError } from '@corral/domain';
import type { PortMapping } from '../drivers/driver';
import { portEnv, portVariableName, validateRoutes, type RouteRequest } from './routes';

const route = (name: string, guestPort = 8080, protocol: 'tcp' | 'udp' = 'tcp'): RouteRequest => ({ name, guestPort, protocol });
const mapping = (name: string, guestPort: number, hostPort: number, protocol: 'tcp' | 'udp' = 'tcp'): PortMapping => ({ name, guestPort, hostPort, protocol });

const fieldOf = (fn: () => unknown): string | undefined => {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(InvalidArgumentError);
    return (err as InvalidArgumentError).field;
  }
  throw new Error('expected an InvalidArgumentError');
};

describe('validateRoutes', () => {
  it('accepts names of a lower-case letter then up to 31 of [a-z0-9-]', () => {
    expect(() => validateRoutes([route('web'), route('a'), route(`a${'b-9'.repeat(10)}x`)])).not.toThrow();
  });

  it.each([
    ['', 'empty'],
    ['Web', 'upper case'],
    ['9web', 'leading digit'],
    ['-web', 'leading dash'],
    ['web_admin', 'underscore'],
    ['web.admin', 'dot'],
    [`a${'b'.repeat(32)}`, '33 characters'],
  ])('rejects %j (%s), naming routes[i].name', (name) => {
    expect(fieldOf(() => validateRoutes([route('ok'), route(name)]))).toBe('routes[1].name');
  });

  it('rejects a name used twice', () => {
    expect(fieldOf(() => validateRoutes([route('web'), route('api'), route('web', 9090)]))).toBe('routes[2].name');
  });

  it.each([0, 65536, 80.5, Number.NaN])('rejects guestPort %p', (guestPort) => {
    expect(fieldOf(() => validateRoutes([route('web', guestPort)]))).toBe('routes[0].guestPort');
  });

  it('rejects an unknown protocol', () => {
    expect(fieldOf(() => validateRoutes([{ name: 'web', guestPort: 80, protocol: 'sctp' as 'tcp' }]))).toBe('routes[0].protocol');
  });
});

describe('portEnv', () => {
  it('gives $PORT the first route and $PORT_<NAME> every route, as the port to listen on (the guest port)', () => {
    expect(portEnv([mapping('web', 8080, 20001), mapping('admin-api', 9090, 20002), mapping('dns', 53, 20003, 'udp')])).toEqual({
      PORT: '8080',
      PORT_WEB: '8080',
      PORT_ADMIN_API: '9090',
      PORT_DNS: '53',
    });
  });

  it('carries the host port for a driver without its own network namespace', () => {
    expect(portEnv([mapping('web', 8080, 20001)], { listenOn: 'hostPort' })).toEqual({ PORT: '20001', PORT_WEB: '20001' });
  });

  it('sets nothing without mappings', () => {
    expect(portEnv([])).toEqual({});
  });

  it('refuses a mapping whose name could not come from a valid route', () => {
    expect(fieldOf(() => portEnv([mapping('web', 80, 20001), mapping('Bad!', 81, 20002)]))).toBe('ports[1].name');
  });

  it('names variables upper-case with non-alphanumerics as underscores', () => {
    expect(portVariableName('a-b-9')).toBe('PORT_A_B_9');
  });
});
