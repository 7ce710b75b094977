/**
 * A control channel a guest script reaches with busybox wget (which waits for the answer, unlike
 * nc): GET /<command>/<arg>/... asks the test process to act and returns its one-line reply.
 * `ctl` in the guest: wget -q -O - "http://10.0.2.2:PORT/$(echo "$*" | tr ' ' /)".
 */
import http from 'node:http';

export function controlServer(handle: (cmd: string[]) => Promise<string>): Promise<http.Server> {
  const server = http.createServer((req, res) => {
    const words = (req.url ?? '/').split('/').filter(Boolean).map(decodeURIComponent);
    handle(words).then(
      (reply) => res.end(reply + '\n'),
      (e: unknown) => res.end(`error ${(e as Error).message}\n`),
    );
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(server)));
}
