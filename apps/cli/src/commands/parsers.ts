import { InvalidArgumentError } from 'commander';

// Option value parsers. Commander reports their errors as usage errors.

export function positiveInteger(value: string): number {
  if (!/^\d+$/.test(value) || Number(value) < 1 || !Number.isSafeInteger(Number(value))) {
    throw new InvalidArgumentError('must be a positive integer');
  }
  return Number(value);
}

export interface RouteOption {
  name: string;
  port: number;
  protocol: string;
}

const ROUTE_OPTION = /^([a-z][a-z0-9-]*):(\d{1,5})(?:\/(tcp|udp))?$/;

/** Collects repeated `--port name:8080[/udp]` options into a list of routes. */
export function routeOption(value: string, previous: RouteOption[] = []): RouteOption[] {
  const match = ROUTE_OPTION.exec(value);
  if (!match) throw new InvalidArgumentError('must look like NAME:PORT or NAME:PORT/udp, e.g. http:8080');
  const port = Number(match[2]);
  if (port < 1 || port > 65535) throw new InvalidArgumentError('the port must be from 1 to 65535');
  if (previous.some((r) => r.name === match[1])) throw new InvalidArgumentError(`${match[1]} is given twice`);
  return [...previous, { name: match[1], port, protocol: match[3] ?? 'tcp' }];
}

/** Collects repeated `-e KEY=VALUE` options into an object. */
export function envEntry(value: string, previous: Record<string, string> = {}): Record<string, string> {
  const equals = value.indexOf('=');
  if (equals <= 0) throw new InvalidArgumentError('must look like KEY=VALUE');
  const key = value.slice(0, equals);
  if (Object.prototype.hasOwnProperty.call(previous, key)) throw new InvalidArgumentError(`${key} is given twice`);
  return { ...previous, [key]: value.slice(equals + 1) };
}
