import type { Command } from 'commander';
import { connect, DEFAULT_ADDR, type CorralClient } from './connection/connection';
import { Printer, type OutputFormat, type TextSink } from './output/printer';

export interface CliIo {
  stdout: TextSink;
  stderr: TextSink;
  env: Record<string, string | undefined>;
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

  close(): void {
    for (const client of this.clients.splice(0)) client.close();
  }
}
