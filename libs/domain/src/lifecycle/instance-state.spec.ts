import { InstanceState as Proto } from '@corral/proto';
import { canTransition, INSTANCE_STATES, instanceStateFromProto, instanceStateToProto, pauseResumeAction, TERMINAL_STATES } from './instance-state';

describe('instance lifecycle', () => {
  it('round-trips every state through the wire enum', () => {
    for (const state of INSTANCE_STATES) expect(instanceStateFromProto(instanceStateToProto(state))).toBe(state);
    expect(instanceStateToProto('tearing_down')).toBe(Proto.INSTANCE_STATE_TEARING_DOWN);
  });

  it('refuses unknown wire values', () => {
    expect(() => instanceStateFromProto(Proto.UNRECOGNIZED)).toThrow(RangeError);
  });

  it('follows the documented path and nothing leaves retired', () => {
    const path = ['pending', 'provisioning', 'running', 'paused', 'running', 'stopping', 'stopped', 'tearing_down', 'retired'] as const;
    for (let i = 1; i < path.length; i++) expect(canTransition(path[i - 1], path[i])).toBe(true);
    for (const to of INSTANCE_STATES) if (to !== 'retired') expect(canTransition('retired', to)).toBe(false);
    expect(canTransition('missing', 'running')).toBe(true);
    expect(canTransition('stopped', 'running')).toBe(false);
    expect(TERMINAL_STATES.has('failed')).toBe(true);
  });

  it('pauses only running workloads and resumes only paused ones; repeating either is a no-op', () => {
    expect(pauseResumeAction('running', 'paused')).toBe('act');
    expect(pauseResumeAction('paused', 'paused')).toBe('already');
    expect(pauseResumeAction('paused', 'running')).toBe('act');
    expect(pauseResumeAction('running', 'running')).toBe('already');
    for (const state of INSTANCE_STATES) {
      if (state !== 'running' && state !== 'paused') {
        expect(pauseResumeAction(state, 'paused')).toBe('refuse');
        expect(pauseResumeAction(state, 'running')).toBe('refuse');
      }
    }
    // Every action it allows is a legal transition.
    for (const state of INSTANCE_STATES) {
      for (const to of ['paused', 'running'] as const) if (pauseResumeAction(state, to) === 'act') expect(canTransition(state, to)).toBe(true);
    }
  });
});
