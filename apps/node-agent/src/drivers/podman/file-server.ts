import { randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';

// Serves one local file over HTTP on 127.0.0.1 so that `podman import URL`
// can read it while this process counts the bytes it hands over: real
// progress of podman consuming the tarball, streamed (never held in memory),
// with nothing to add to the executor. The URL carries a random path and the
// server answers nothing else; it is closed after the import.

export interface ServedFile {
  url: string;
  size: number;
  close(): Promise<void>;
}

export async function serveFileOnce(path: string, onBytes: (sent: number, total: number) => void): Promise<ServedFile> {
  const { size } = await stat(path);
  const secretPath = `/${randomBytes(16).toString('hex')}/image.tar`;
  const server: Server = createServer((req, res) => {
    if (req.method !== 'GET' || req.url !== secretPath) {
      res.writeHead(404).end();
      return;
    }
    res.writeHead(200, { 'content-type': 'application/x-tar', 'content-length': String(size) });
    let sent = 0;
    const stream = createReadStream(path);
    stream.on('data', (chunk) => {
      sent += chunk.length;
      onBytes(sent, size);
    });
    stream.once('error', () => res.destroy());
    res.once('close', () => stream.destroy());
    stream.pipe(res);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}${secretPath}`,
    size,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
