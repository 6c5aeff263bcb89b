import type { Command } from 'commander';
import type { Metadata } from '@corral/grpc';
import { authMetadata, connect, DEFAULT_ADDR, type CorralClient } from './connection/connection';
import { Printer, type OutputFormat, type TextSink } from './output/printer';

/** A terminal-capable input (process.stdin): read as a stream, raw mode for `exec -t`. */
export interface CliInput extends AsyncIterable<Buffer | string> {
  isTTY?: boolean;
  setRawMode?(raw: boolean): unknown;
  pause?(): unknown;
}

/** Where `exec -t` learns the terminal size (process.stdout). */
export interface TerminalOutput {
  isTTY?: boolean;
  columns?: number;
  rows?: number;
  on?(event: 'resize', listener: () => void): unknown;
  removeListener?(event: 'resize', listener: () => void): unknown;
}

export interface CliIo {
  stdout: TextSink & TerminalOutput;
  stderr: TextSink;
  env: Record<string, string | undefined>;
  /** Read by `exec -i` and `cp - ID:PATH`; absent: those read nothing. */
  stdin?: CliInput;
}

export interface GlobalOptions {
  addr?: string;
  apiKey?: string;
  output: OutputFormat;
}

/**
 * What a command's action needs, built from the global options once they are
 * parsed: a printer for the chosen format and, when asked for, a gateway
 * client (closed when the command is done).
 */
export class Session {
  private readonly clients: CorralClient[] = [];
  /** The gateway address last connected to, for error messages. */
  connectedTo?: string;
  /** Set by a command whose exit code is not just success or failure (`exec` passes the command's on). */
  exitCode?: number;

  constructor(readonly io: CliIo) {}

  globals(command: Command): GlobalOptions {
    return command.optsWithGlobals<GlobalOptions>();
  }

  printer(command: Command): Printer {
    return new Printer(this.io.stdout, this.globals(command).output);
  }

  addr(command: Command): string {
    return this.globals(command).addr || this.io.env['CORRAL_ADDR'] || DEFAULT_ADDR;
  }

  client(command: Command): CorralClient {
    const globals = this.globals(command);
    this.connectedTo = this.addr(command);
    const client = connect({ addr: this.connectedTo, apiKey: globals.apiKey || this.io.env['CORRAL_API_KEY'] });
    this.clients.push(client);
    return client;
  }

  /** The API key as call metadata, for streaming calls made on `client(command).raw`. */
  metadata(command: Command): Metadata {
    const globals = this.globals(command);
    return authMetadata(globals.apiKey || this.io.env['CORRAL_API_KEY']);
  }

  close(): void {
    for (const client of this.clients.splice(0)) client.close();
  }
}
