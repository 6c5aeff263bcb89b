// Renders results for people (aligned tables, key/value blocks) or for
// programs (one JSON document), chosen by --output.

export type OutputFormat = 'table' | 'json';

export interface TextSink {
  write(chunk: string | Uint8Array): unknown;
}

export interface Column<T> {
  header: string;
  value: (row: T) => string;
}

type Cell = string | number | boolean | null | undefined;

function cellText(value: Cell): string {
  if (value === null || value === undefined || value === '') return '-';
  return String(value);
}

export function renderTable<T>(rows: readonly T[], columns: readonly Column<T>[]): string {
  const cells = rows.map((row) => columns.map((c) => cellText(c.value(row))));
  const widths = columns.map((c, i) => Math.max(c.header.length, ...cells.map((r) => r[i].length)));
  const line = (values: string[]) =>
    values
      .map((v, i) => (i === values.length - 1 ? v : v.padEnd(widths[i])))
      .join('  ')
      .trimEnd();
  return [line(columns.map((c) => c.header)), ...cells.map(line)].join('\n') + '\n';
}

export function renderDetails(entries: readonly [string, Cell][]): string {
  const width = Math.max(...entries.map(([k]) => k.length)) + 1;
  return entries.map(([k, v]) => `${`${k}:`.padEnd(width)}  ${cellText(v)}`).join('\n') + '\n';
}

export class Printer {
  constructor(
    private readonly out: TextSink,
    readonly format: OutputFormat,
  ) {}

  /** Prints `data` as JSON, or as the text `human` makes of it. */
  result<T>(data: T, human: (data: T) => string): void {
    this.out.write(this.format === 'json' ? `${JSON.stringify(data, null, 2)}\n` : human(data));
  }

  raw(bytes: Uint8Array): void {
    this.out.write(bytes);
  }
}
