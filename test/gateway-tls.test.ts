/**
 * TLS and mTLS on the gateway's TCP listener, with certificates made by the openssl CLI: a
 * client without a certificate (or with one from another CA) is refused; one with a cert
 * signed by the configured CA gets through. The unix socket stays local and plain.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { SpaceError } from '../capsule/errors.js';
import { GatewayClient } from '../gateway/client.js';
import { startTestGateway, tempDir, type TestGateway } from './gateway-helpers.js';

function hasOpenssl(): boolean {
  try {
    execFileSync('openssl', ['version'], { stdio: 'pipe' });
    return true;
  } catch {
    return false;
  }
}

/** A CA and a leaf signed by it (P-256 keys: fast to make). */
function makePki(dir: string) {
  const ssl = (...args: string[]) => execFileSync('openssl', args, { cwd: dir, stdio: 'pipe' });
  const key = (name: string) => ssl('genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256', '-out', `${name}.key`);
  const ca = (name: string) => {
    key(name);
    ssl('req', '-x509', '-new', '-key', `${name}.key`, '-out', `${name}.crt`, '-days', '2', '-subj', `/CN=${name}`,
      '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign');
  };
  const leaf = (name: string, signer: string, ext: string) => {
    key(name);
    ssl('req', '-new', '-key', `${name}.key`, '-out', `${name}.csr`, '-subj', `/CN=${name}`);
    fs.writeFileSync(path.join(dir, `${name}.ext`), ext);
    ssl('x509', '-req', '-in', `${name}.csr`, '-CA', `${signer}.crt`, '-CAkey', `${signer}.key`, '-CAcreateserial',
      '-out', `${name}.crt`, '-days', '2', '-extfile', `${name}.ext`);
  };
  ca('space-test-ca');
  ca('other-ca');
  leaf('server', 'space-test-ca', 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n');
  leaf('client', 'space-test-ca', 'extendedKeyUsage=clientAuth\n');
  leaf('intruder', 'other-ca', 'extendedKeyUsage=clientAuth\n');
  const file = (n: string) => path.join(dir, n);
  const read = (n: string) => fs.readFileSync(file(n));
  return { file, read };
}

async function refused(p: Promise<unknown>): Promise<SpaceError> {
  try {
    await p;
  } catch (err) {
    assert.ok(err instanceof SpaceError, String(err));
    assert.equal(err.code, 'UNAVAILABLE', err.message);
    return err;
  }
  assert.fail('the call should have been refused');
}

describe('gateway TLS', function () {
  let dir: string;
  let pki: ReturnType<typeof makePki>;
  const clients: GatewayClient[] = [];
  const gateways: TestGateway[] = [];

  before(function () {
    if (!hasOpenssl()) {
      console.log('      (skipped: the openssl CLI is not installed; apt-get install openssl to run the TLS tests)');
      this.skip();
    }
    dir = tempDir('space-tls-');
    fs.mkdirSync(path.join(dir, 'pki'));
    pki = makePki(path.join(dir, 'pki'));
  });

  after(async () => {
    for (const c of clients) c.close();
    for (const g of gateways) await g.close();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  const client = (address: string, tls?: ConstructorParameters<typeof GatewayClient>[1]) => {
    const c = new GatewayClient(address, { timeoutMs: 10_000, ...tls });
    clients.push(c);
    return c;
  };

  describe('mTLS (client certificate required)', () => {
    let gw: TestGateway;
    let addr: string;

    before(async () => {
      gw = await startTestGateway(path.join(dir, 'mtls'), {
        tls: { cert: pki.file('server.crt'), key: pki.file('server.key'), ca: pki.file('space-test-ca.crt'), requireClientCert: true },
      });
      gateways.push(gw);
      addr = `127.0.0.1:${gw.grpcPort}`;
      const listening = gw.logs.find((l) => l.event === 'gateway.listening');
      assert.equal(listening?.tls, true);
      assert.equal(listening?.mtls, true);
    });

    it('accepts a client with a certificate signed by the CA', async () => {
      const c = client(addr, { tls: { ca: pki.read('space-test-ca.crt'), cert: pki.read('client.crt'), key: pki.read('client.key') } });
      const info = await c.create({ id: 'secure' });
      assert.equal(info.id, 'secure');
      assert.equal((await c.get('secure')).id, 'secure');
    });

    it('refuses a TLS client without a certificate', async () => {
      await refused(client(addr, { tls: { ca: pki.read('space-test-ca.crt') } }).create({ id: 'no-cert' }));
    });

    it('refuses a client whose certificate comes from another CA', async () => {
      await refused(client(addr, { tls: { ca: pki.read('space-test-ca.crt'), cert: pki.read('intruder.crt'), key: pki.read('intruder.key') } })
        .create({ id: 'intruder' }));
    });

    it('refuses a plaintext client', async () => {
      await refused(client(addr).create({ id: 'plaintext' }));
    });

    it('refused clients changed nothing; the local unix socket needs no certificate', async () => {
      const local = client(`unix://${gw.socketPath}`);
      assert.deepEqual((await local.list()).map((c) => c.id), ['secure']);
    });
  });

  describe('server-only TLS', () => {
    it('accepts a client that verifies the server, refuses one that trusts another CA', async () => {
      const gw = await startTestGateway(path.join(dir, 'tls'), { tls: { cert: pki.file('server.crt'), key: pki.file('server.key') } });
      gateways.push(gw);
      const addr = `127.0.0.1:${gw.grpcPort}`;
      const ok = client(addr, { tls: { ca: pki.read('space-test-ca.crt') } });
      assert.equal((await ok.create({ id: 'tls-only' })).id, 'tls-only');
      // the host name in the certificate is checked too: localhost is in the SAN
      const byName = client(`localhost:${gw.grpcPort}`, { tls: { ca: pki.read('space-test-ca.crt') } });
      assert.equal((await byName.get('tls-only')).id, 'tls-only');
      await refused(client(addr, { tls: { ca: pki.read('other-ca.crt') } }).get('tls-only'));
    });
  });

  it('fails to start with requireClientCert but no CA, before taking the data dir', async () => {
    const d = path.join(dir, 'bad');
    await assert.rejects(
      startTestGateway(d, { tls: { cert: pki.file('server.crt'), key: pki.file('server.key'), requireClientCert: true } }),
      /requireClientCert needs tls.ca/,
    );
    assert.ok(!fs.existsSync(path.join(d, 'owner.json')));
  });
});
