// Subject syntax and wildcard matching as NATS defines them, shared by the
// embedded broker and the in-memory bus so both route exactly like
// nats-server: tokens are separated by `.`, a token that is exactly `*`
// matches one token, a final token that is exactly `>` matches one or more
// tokens. `*` or `>` inside a longer token is an ordinary character.

// Whitespace separates protocol arguments, so it can never be part of a
// subject; control characters would corrupt the line-based protocol.
// eslint-disable-next-line no-control-regex
const BAD_CHARS = /[\s\u0000-\u001f\u007f]/u;

/** A subject a message can be published to: no empty tokens, no wildcards. */
export function isValidPublishSubject(subject: string): boolean {
  if (subject.length === 0 || BAD_CHARS.test(subject)) return false;
  for (const t of subject.split('.')) {
    if (t.length === 0 || t === '*' || t === '>') return false;
  }
  return true;
}

/** A subject a subscription can listen on: wildcards allowed, `>` only last. */
export function isValidSubscribeSubject(subject: string): boolean {
  if (subject.length === 0 || BAD_CHARS.test(subject)) return false;
  const tokens = subject.split('.');
  for (let i = 0; i < tokens.length; i++) {
    const t = tokens[i];
    if (t.length === 0) return false;
    if (t === '>' && i !== tokens.length - 1) return false;
  }
  return true;
}

/** True when `pattern` (may contain wildcards) matches the literal `subject`. */
export function subjectMatches(pattern: string, subject: string): boolean {
  const p = pattern.split('.');
  const s = subject.split('.');
  for (let i = 0; i < p.length; i++) {
    if (p[i] === '>') return s.length > i;
    if (i >= s.length) return false;
    if (p[i] !== '*' && p[i] !== s[i]) return false;
  }
  return p.length === s.length;
}

interface Node<T> {
  literal: Map<string, Node<T>>;
  star?: Node<T>;
  tail?: Node<T>;
  items: Set<T>;
}

const newNode = <T>(): Node<T> => ({ literal: new Map(), items: new Set() });

/**
 * A trie of subscriptions keyed by subject pattern. `match` walks only the
 * branches that can match, so routing cost depends on the subject's depth,
 * not on the number of subscriptions.
 */
export class Sublist<T> {
  private readonly root: Node<T> = newNode();
  private count = 0;

  get size(): number {
    return this.count;
  }

  /** Adds `item` under `pattern`; the pattern must be a valid subscribe subject. */
  insert(pattern: string, item: T): void {
    let node = this.root;
    for (const t of pattern.split('.')) {
      if (t === '*') node = node.star ??= newNode();
      else if (t === '>') node = node.tail ??= newNode();
      else {
        let next = node.literal.get(t);
        if (!next) node.literal.set(t, (next = newNode()));
        node = next;
      }
    }
    if (!node.items.has(item)) {
      node.items.add(item);
      this.count++;
    }
  }

  /** Removes `item` from under `pattern`, pruning emptied branches. */
  remove(pattern: string, item: T): boolean {
    const path: Array<{ parent: Node<T>; token: string; node: Node<T> }> = [];
    let node: Node<T> | undefined = this.root;
    for (const t of pattern.split('.')) {
      const parent: Node<T> = node;
      node = t === '*' ? parent.star : t === '>' ? parent.tail : parent.literal.get(t);
      if (!node) return false;
      path.push({ parent, token: t, node });
    }
    if (!node.items.delete(item)) return false;
    this.count--;
    for (let i = path.length - 1; i >= 0; i--) {
      const { parent, token, node: n } = path[i];
      if (n.items.size > 0 || n.literal.size > 0 || n.star || n.tail) break;
      if (token === '*') parent.star = undefined;
      else if (token === '>') parent.tail = undefined;
      else parent.literal.delete(token);
    }
    return true;
  }

  /** Every item whose pattern matches the literal `subject`. */
  match(subject: string): T[] {
    const out: T[] = [];
    const tokens = subject.split('.');
    const walk = (node: Node<T>, i: number): void => {
      if (node.tail && i < tokens.length) for (const it of node.tail.items) out.push(it);
      if (i === tokens.length) {
        for (const it of node.items) out.push(it);
        return;
      }
      const lit = node.literal.get(tokens[i]);
      if (lit) walk(lit, i + 1);
      if (node.star) walk(node.star, i + 1);
    };
    walk(this.root, 0);
    return out;
  }
}
