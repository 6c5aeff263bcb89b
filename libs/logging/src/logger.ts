import winston from 'winston';
import { redact } from './redact';

export type LogLevel = 'error' | 'warn' | 'info' | 'debug';
export type LogFields = Record<string, unknown>;

export interface Logger {
  error(message: string, fields?: LogFields): void;
  warn(message: string, fields?: LogFields): void;
  info(message: string, fields?: LogFields): void;
  debug(message: string, fields?: LogFields): void;
  child(fields: LogFields): Logger;
}

export interface LoggerOptions {
  service: string;
  level?: LogLevel;
  /** Where JSON lines go; stdout by default. Tests pass a stream to read them. */
  stream?: NodeJS.WritableStream;
}

// Rewrites string-keyed fields in place: winston keeps its own bookkeeping
// under Symbol keys on the same object, which a copy would lose.
const redactFormat = winston.format((info) => {
  const { level: _level, message: _message, ...rest } = info;
  Object.assign(info, redact(rest) as object);
  return info;
});

class WinstonLogger implements Logger {
  constructor(private readonly inner: winston.Logger) {}
  error(message: string, fields?: LogFields) { this.inner.error(message, fields); }
  warn(message: string, fields?: LogFields) { this.inner.warn(message, fields); }
  info(message: string, fields?: LogFields) { this.inner.info(message, fields); }
  debug(message: string, fields?: LogFields) { this.inner.debug(message, fields); }
  child(fields: LogFields): Logger { return new WinstonLogger(this.inner.child(redact(fields) as LogFields)); }
}

/** JSON lines, one per entry, with secret-bearing fields redacted. */
export function createLogger(options: LoggerOptions): Logger {
  const transport = options.stream
    ? new winston.transports.Stream({ stream: options.stream })
    : new winston.transports.Console();
  const inner = winston.createLogger({
    level: options.level ?? 'info',
    defaultMeta: { service: options.service },
    format: winston.format.combine(winston.format.timestamp(), redactFormat(), winston.format.json()),
    transports: [transport],
  });
  return new WinstonLogger(inner);
}

/** A logger that drops everything, for unit tests of code that logs. */
const discard = (): void => undefined;
export const silentLogger: Logger = {
  error: discard,
  warn: discard,
  info: discard,
  debug: discard,
  child() {
    return silentLogger;
  },
};
