import type { Command } from 'commander';
import type { apiV1 } from '@corral/proto';
import { renderTable, type Column } from '../output/printer';
import type { Session } from '../session';
import { positiveInteger } from './parsers';

// `corral events [-f] [--subject ID] [--kind K]`: the audit trail (drift the
// reconciler saw, actions it took, with reasons), as a table or JSON lines.

interface EventLine {
  id: string;
  at: string;
  actor: string;
  kind: string;
  action: string;
  outcome: string;
  subject: string;
  reason: string;
}

function lineOf(event: apiV1.AuditEvent): EventLine {
  return {
    id: String(event.id),
    at: event.at ? event.at.toISOString() : '',
    actor: event.actor,
    kind: event.kind,
    action: event.action,
    outcome: event.outcome,
    subject: `${event.subjectType}/${event.subjectId}`,
    reason: event.reason,
  };
}

const COLUMNS: Column<EventLine>[] = [
  { header: 'ID', value: (e) => e.id },
  { header: 'AT', value: (e) => e.at },
  { header: 'KIND', value: (e) => e.kind },
  { header: 'ACTION', value: (e) => e.action },
  { header: 'OUTCOME', value: (e) => e.outcome },
  { header: 'SUBJECT', value: (e) => e.subject },
  { header: 'REASON', value: (e) => e.reason },
];

export function registerEvents(program: Command, session: Session): void {
  program
    .command('events')
    .description('show the audit trail: drift seen and actions taken, with reasons')
    .option('-f, --follow', 'keep printing new events as they are recorded (until Ctrl-C)')
    .option('--subject <id>', 'only events about this workload or host')
    .option('--kind <kind>', 'only events of this kind (drift, action, lifecycle, deploy)')
    .option('--limit <n>', 'at most this many (default 100)', positiveInteger)
    .action(async (options: { follow?: boolean; subject?: string; kind?: string; limit?: number }, command: Command) => {
      const filter = { afterId: 0, since: undefined, subjectId: options.subject ?? '', kind: options.kind ?? '', limit: options.limit ?? 0 };
      const printer = session.printer(command);
      if (!options.follow) {
        const res = await session.client(command).listEvents(filter);
        const lines = res.events.map(lineOf);
        printer.result(lines, (rows) => renderTable(rows, COLUMNS));
        return;
      }
      const interrupted = new AbortController();
      const onInterrupt = () => interrupted.abort();
      process.once('SIGINT', onInterrupt);
      try {
        for await (const message of session.client(command).stream('streamEvents', { filter }, { signal: interrupted.signal })) {
          if (!message.event) continue;
          const line = lineOf(message.event);
          session.io.stdout.write(printer.format === 'json' ? `${JSON.stringify(line)}\n` : `${line.at}  ${line.kind.padEnd(6)} ${line.action.padEnd(16)} ${line.outcome.padEnd(9)} ${line.subject}  ${line.reason}\n`);
        }
      } finally {
        process.removeListener('SIGINT', onInterrupt);
      }
    });
}
