import { FailedPreconditionError, errorFromCode } from '@corral/domain';
import { NO_FIT_FIELD, toPublicError } from './public-error';

describe('toPublicError', () => {
  it("keeps the scheduler's nothing-fits explanation (field placement), as it arrives over gRPC", () => {
    const err = errorFromCode('FAILED_PRECONDITION', 'no host has 4096 MB free; best candidate h-3 has 2048', { field: NO_FIT_FIELD });
    expect(toPublicError(err)).toEqual({ code: 'FAILED_PRECONDITION', httpStatus: 409, message: 'no host has 4096 MB free; best candidate h-3 has 2048', field: 'placement' });
  });

  it('gives any other FAILED_PRECONDITION the fixed message', () => {
    expect(toPublicError(new FailedPreconditionError('postgres says: relation "x" at 10.0.0.3'))).toEqual({
      code: 'FAILED_PRECONDITION',
      httpStatus: 409,
      message: 'the resource is not in a state that allows this operation',
    });
    expect(toPublicError(new FailedPreconditionError('secret', { field: 'other' })).message).toBe('the resource is not in a state that allows this operation');
  });
});
