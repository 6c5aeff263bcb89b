import { runCaptured } from '../testing/run-captured';

// Command-line checks of `corral cp` and `corral exec` that need no gateway.

const run = (args: string[]) => runCaptured(args, { CORRAL_ADDR: '127.0.0.1:1', CORRAL_API_KEY: 'crl_x_y' });

describe('corral cp and exec command lines', () => {
  it('needs exactly one side of cp to be ID:/PATH', async () => {
    for (const args of [['cp', './a', './b'], ['cp', 'w1:/a', 'w2:/b'], ['cp', 'w1:relative', './b']]) {
      const result = await run(args);
      expect(result.code).toBe(2);
      expect(result.stderr).toContain('exactly one of source and destination must be ID:/PATH');
    }
  });

  it('checks --mode', async () => {
    const result = await run(['cp', '--mode', '999', './a', 'w1:/a']);
    expect(result).toMatchObject({ code: 2, stderr: expect.stringContaining('--mode must be octal') });
  });

  it('needs a command for exec', async () => {
    const result = await run(['exec', 'w1']);
    expect(result.code).toBe(2);
    expect(result.stderr).toMatch(/missing required argument 'command'/);
  });

  it('says the gateway cannot be reached (exit 1) rather than hang when it is down', async () => {
    const result = await run(['exec', 'w1', '--', 'true']);
    expect(result.code).toBe(1);
    expect(result.stderr).toContain('cannot reach the Corral gateway at 127.0.0.1:1');
  });
});
