import { isUniqueViolation } from './client';
import { Prisma } from './generated/prisma/client';

describe('isUniqueViolation', () => {
  const knownError = (code: string) =>
    new Prisma.PrismaClientKnownRequestError('request failed', { code, clientVersion: Prisma.prismaVersion.client });

  it('recognises P2002, the unique-constraint violation', () => {
    expect(isUniqueViolation(knownError('P2002'))).toBe(true);
  });

  it('rejects other Prisma errors, such as a missing record (P2025)', () => {
    expect(isUniqueViolation(knownError('P2025'))).toBe(false);
  });

  it('recognises a P2002 raised by another copy of the Prisma runtime', () => {
    const foreign = Object.assign(new Error('unique'), { name: 'PrismaClientKnownRequestError', code: 'P2002' });

    expect(isUniqueViolation(foreign)).toBe(true);
  });

  it('rejects anything that is not a Prisma request error', () => {
    expect(isUniqueViolation(Object.assign(new Error('x'), { code: 'P2002' }))).toBe(false);
    expect(isUniqueViolation(new Error('P2002'))).toBe(false);
    expect(isUniqueViolation(undefined)).toBe(false);
    expect(isUniqueViolation('P2002')).toBe(false);
  });
});
