// The one place Corral starts external programs (eslint keeps child_process
// out of everything else). Short-lived tools run as Commands through an
// Executor with an allow-list; long-running workloads through spawnSupervised.
export type { Command, ExecResult, RunOptions } from './command/command';
export { ExecError, ProgramNotAllowedError, execErrorFromResult, isExecError, STDERR_TAIL_CHARS } from './errors/exec-error';
export type { ExecErrorDetails, ExecFailureReason } from './errors/exec-error';
export { createExecutor, defaultBaseEnv } from './executor/executor';
export type { AllowedProgram, Executor, ExecutorOptions } from './executor/executor';
export { resolveProgram } from './executor/resolve-program';
export { isProcessAlive, killProcessGroup, processStartTime } from './process/process-group';
export { spawnSupervised } from './supervised/spawn-supervised';
export type { CombinedLogOptions, ExitStatus, SplitLogOptions, SupervisedOptions, SupervisedProcess } from './supervised/spawn-supervised';
export { spawnInteractive } from './interactive/spawn-interactive';
export type { InteractiveOptions, InteractiveProcess } from './interactive/spawn-interactive';
