import { relayProgress } from './progress-relay';

// relayProgress: reports pass on while the operation still runs, the result
// comes last, a failure is thrown after what was reported before it.

describe('relayProgress', () => {
  it('yields each report as it comes, before the operation has finished, then its result', async () => {
    let finish!: () => void;
    const finished = new Promise<void>((resolve) => (finish = resolve));
    const stream = relayProgress<string>(async (report) => {
      report('10%');
      await finished;
      report('100%');
      return 'done';
    });
    await expect(stream.next()).resolves.toEqual({ done: false, value: '10%' });
    finish();
    const rest: string[] = [];
    for await (const message of stream) rest.push(message);
    expect(rest).toEqual(['100%', 'done']);
  });

  it('throws the failure after the reports that came before it, also one thrown before any await', async () => {
    const seen: string[] = [];
    await expect(
      (async () => {
        for await (const m of relayProgress<string>(async (report) => {
          report('started');
          throw new Error('podman failed');
        }))
          seen.push(m);
      })(),
    ).rejects.toThrow('podman failed');
    expect(seen).toEqual(['started']);
    const refusing = relayProgress<string>((() => {
      throw new Error('refused at once');
    }) as unknown as () => Promise<string>);
    await expect(refusing.next()).rejects.toThrow('refused at once');
  });
});
