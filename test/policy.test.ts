import assert from 'node:assert/strict';
import fs from 'node:fs';
import { parsePolicyYaml, PolicyError, parseSize, validatePolicy } from '../capsule/policy.js';

function issuesOf(text: string): string[] {
  try {
    parsePolicyYaml(text, 'p.yaml');
  } catch (e) {
    assert.ok(e instanceof PolicyError, String(e));
    assert.equal(e.code, 'INVALID_ARGUMENT');
    return e.message.split('\n');
  }
  assert.fail('expected a PolicyError');
}

describe('policy', () => {
  it('parses the example policy', () => {
    const p = parsePolicyYaml(fs.readFileSync('deployment/examples/policy.yaml', 'utf8'));
    assert.equal(p.compression, 'zstd');
    assert.deepEqual(p.encryption, { enabled: true, algorithm: 'aes-256-gcm', keyRef: 'default' });
    assert.equal(p.segmentSize, 1 << 20);
    assert.deepEqual(p.federation.targets, [{ zone: 'zone-b', region: 'eu-central-1', priority: 10 }]);
  });

  it('defaults an empty document', () => {
    const p = parsePolicyYaml('', 'empty.yaml');
    assert.equal(p.compression, 'none');
    assert.equal(p.encryption.enabled, false);
    assert.equal(p.segmentSize, 1 << 20);
  });

  it('names file, line, column and field for every bad field', () => {
    const lines = issuesOf([
      'compression: lz4',
      'segmentSize: 3MiB',
      'encryption:',
      '  algorithm: des',
      'redundancy: {replicas: 9}',
      'colour: blue',
    ].join('\n'));
    assert.deepEqual(lines, [
      'p.yaml:6:9: colour: unknown field (known: compression, encryption, segmentSize, redundancy, sovereignty, federation)',
      'p.yaml:1:14: compression: must be one of none, gzip, brotli, zstd (got "lz4")',
      'p.yaml:4:14: encryption.algorithm: must be aes-256-gcm (got "des")',
      'p.yaml:2:14: segmentSize: must be a power of two (got 3145728 bytes)',
      'p.yaml:5:24: redundancy.replicas: must be an integer from 1 to 5 (got 9)',
    ]);
  });

  it('rejects a federation target outside the sovereignty regions', () => {
    const lines = issuesOf('sovereignty:\n  allowedRegions: [eu-west-1]\nfederation:\n  targets:\n    - zone: us\n      region: us-east-1\n');
    assert.deepEqual(lines, ['p.yaml:6:15: federation.targets.0.region: region us-east-1 is outside sovereignty.allowedRegions (eu-west-1)']);
  });

  it('reports YAML syntax errors with a position', () => {
    const [first] = issuesOf('compression: [none\nsegmentSize: 1');
    assert.match(first!, /^p\.yaml:\d+:\d+: YAML syntax error/);
  });

  it('rejects non-mapping documents and bad sizes', () => {
    assert.match(issuesOf('- a\n- b')[0]!, /must be a mapping/);
    assert.equal(parseSize('64KiB'), 65536);
    assert.equal(parseSize('1 MiB'), 1 << 20);
    assert.equal(parseSize('12parsecs'), null);
    assert.throws(() => validatePolicy({ segmentSize: 1024 }), /between 4KiB and 64MiB/);
    assert.throws(() => validatePolicy({ federation: { targets: [{ zone: 'a' }, { zone: 'a' }] } }), /listed twice/);
  });
});
