// A verifier of cellnode instance records and delegations, format 2,
// written from docs/records.md alone: a second implementation beside the Go
// one in dht/, so that where the two disagree on a conformance vector
// (docs/vectors/records.json), the spec or the code is wrong.
//
// CBOR comes from cbor2 (decoding with its strict options, and the
// canonical re-encoding), Ed25519 arithmetic from @noble/curves, SHA-512 from
// @noble/hashes. The verification equation is computed here, cofactorless,
// as the spec says (noble's own verify is cofactored).
//
//   verifyRecord(bytes, {name, nowMs})          -> verdict
//   verifyDelegation(bytes, {name, node, nowMs}) -> verdict
//
// A verdict is {valid, reason, delegationReason, detail, record | delegation}:
// reason is the spec's label of the first failing check ("" when valid).

import { decode, encode, getEncoded } from 'cbor2';
import { ed25519 } from '@noble/curves/ed25519.js';
import { sha256, sha512 } from '@noble/hashes/sha2.js';

export const RECORD_DOMAIN = 'cellnode/instance/v2';
export const DELEGATION_DOMAIN = 'cellnode/delegation/v2';
export const MAX_RECORD_SIZE = 4096;
export const MAX_DELEGATION_SIZE = 512;
const MAX_LIFETIME_MS = 60000n;
const MAX_DELEGATION_MS = 90n * 24n * 3600n * 1000n;
const MAX_SKEW_MS = 5000n;
const MAX_TIME_MS = 253402300799999n;
const MAX_SEQ = (1n << 63n) - 1n;
const MAX_SHARDS = 64n;
const MAX_DEPTH = 8;
const L = 2n ** 252n + 27742317777372353535851937790883648493n;
const Point = ed25519.Point;

class Reject extends Error {
  constructor(reason, detail, delegationReason = '') {
    super(detail);
    this.reason = reason;
    this.delegationReason = delegationReason;
  }
}

const reject = (reason, detail) => {
  throw new Reject(reason, detail);
};

// --- CBOR: the subset, then the one encoding ---

const decodeOptions = {
  preferMap: true, // every map a Map, keys as decoded
  rejectStreaming: true, // no indefinite lengths
  rejectFloats: true,
  rejectUndefined: true,
  rejectDuplicateKeys: true, // same encoded key twice; equal values in other encodings are caught below
  ignoreGlobalTags: true, // tags come back as Tag objects, refused below
  saveOriginal: true, // to read a map's declared size
  maxDepth: 64,
};

// headArg reads the argument of the initial byte(s) of an encoded item.
function headArg(b) {
  const ai = b[0] & 0x1f;
  if (ai < 24) return BigInt(ai);
  const n = { 24: 1, 25: 2, 26: 4, 27: 8 }[ai];
  let v = 0n;
  for (let i = 1; i <= n; i++) v = (v << 8n) | BigInt(b[i]);
  return v;
}

// normalize checks a decoded value against the subset and returns it as
// plain values: BigInt integers, strings, Uint8Array, arrays, Maps with
// BigInt keys, booleans.
function normalize(v, depth) {
  if (depth > MAX_DEPTH) reject('malformed', `nested more than ${MAX_DEPTH} deep`);
  switch (typeof v) {
    case 'boolean':
    case 'string':
      return v;
    case 'number':
      if (!Number.isInteger(v)) reject('malformed', 'not an integer');
      return BigInt(v);
    case 'bigint':
      return v;
  }
  if (v instanceof Uint8Array) return new Uint8Array(v); // not a Buffer: cbor2 encodes those as objects
  if (Array.isArray(v)) return v.map((e) => normalize(e, depth + 1));
  if (v instanceof Map) {
    const declared = headArg(getEncoded(v));
    if (BigInt(v.size) !== declared) reject('malformed', 'a map key twice');
    const out = new Map();
    for (const [k, e] of v) {
      if (!(typeof k === 'number' && Number.isInteger(k) && k >= 0) && !(typeof k === 'bigint' && k >= 0n)) {
        reject('malformed', 'map key is not an unsigned integer');
      }
      const key = BigInt(k);
      if (out.has(key)) reject('malformed', `map key ${key} twice`);
      out.set(key, normalize(e, depth + 1));
    }
    return out;
  }
  return reject('malformed', `not in the subset: ${String(v)}`);
}

// decodeCanonical decodes bytes as one item of the subset, then checks that
// re-encoding it canonically gives the same bytes.
function decodeCanonical(bytes, what) {
  let v;
  try {
    v = decode(bytes, decodeOptions);
  } catch (e) {
    reject('malformed', `${what}: ${e.message}`);
  }
  v = normalize(v, 1);
  const again = encode(v, { cde: true });
  if (!equal(again, bytes)) reject('non_canonical', `${what}: re-encoding gives other bytes`);
  return v;
}

// A body read against its schema. Accessors refuse wrong types, and
// optional fields present with their empty value.
class Fields {
  constructor(v, what, allowed, required) {
    if (!(v instanceof Map)) reject('malformed', `${what} is not a map`);
    for (const k of v.keys()) if (!allowed.includes(k)) reject('malformed', `${what} has unknown key ${k}`);
    for (const k of required) if (!v.has(k)) reject('malformed', `${what} lacks key ${k}`);
    this.v = v;
    this.what = what;
  }
  has(k) {
    return this.v.has(k);
  }
  typed(k, ok, want, optional, empty) {
    if (!this.v.has(k)) return undefined;
    const x = this.v.get(k);
    if (!ok(x)) reject('malformed', `${this.what} key ${k} is not ${want}`);
    if (optional && empty(x)) reject('malformed', `${this.what} key ${k} is present but empty`);
    return x;
  }
  uint(k) {
    return this.typed(k, (x) => typeof x === 'bigint' && x >= 0n, 'an unsigned integer');
  }
  bytes(k, optional = false) {
    return this.typed(k, (x) => x instanceof Uint8Array, 'a byte string', optional, (x) => x.length === 0);
  }
  text(k, optional = false) {
    return this.typed(k, (x) => typeof x === 'string', 'a text string', optional, (x) => x === '');
  }
  texts(k) {
    return this.typed(k, (x) => Array.isArray(x) && x.every((e) => typeof e === 'string'), 'an array of text strings');
  }
  flag(k) {
    return this.typed(k, (x) => typeof x === 'boolean', 'a boolean', true, (x) => x === false) === true;
  }
}

function openEnvelope(bytes) {
  const env = new Fields(decodeCanonical(bytes, 'envelope'), 'envelope', [1n, 2n], [1n, 2n]);
  const body = env.bytes(1n);
  const sig = env.bytes(2n);
  if (sig.length !== 64) reject('malformed', `signature of ${sig.length} bytes`);
  return { body, sig };
}

// --- field rules ---

const utf8 = new TextEncoder();
const byteLen = (s) => utf8.encode(s).length;

function validName(s) {
  const parts = s.split('/');
  return parts.length === 2 && parts.every((p) => p.length >= 1 && p.length <= 64 && /^[a-z0-9.-]+$/.test(p));
}

// validEndpoint follows the grammar of docs/records.md, "Endpoints".
export function validEndpoint(s) {
  const n = byteLen(s);
  if (n < 1 || n > 256) return false;
  if (s.startsWith('unix:')) return /^unix:\/[\x21-\x7e]+$/.test(s);
  const i = s.lastIndexOf(':');
  if (i < 0) return false;
  const host = s.slice(0, i);
  const port = s.slice(i + 1);
  if (!/^[1-9][0-9]{0,4}$/.test(port) || Number(port) > 65535) return false;
  return /^[A-Za-z0-9._-]+$/.test(host) || /^\[[0-9A-Fa-f:.]+\]$/.test(host);
}

const validRegion = (s) => byteLen(s) <= 64 && /^[\x20-\x7e]*$/.test(s);

function checkTimes(issued, until, what) {
  if (issued > MAX_TIME_MS || until > MAX_TIME_MS) reject('malformed', 'time after the year 9999');
  if (until <= issued) reject('malformed', `${what} at or before issued`);
}

// --- Ed25519 ---

// keyPoint returns the point of a key, refusing non-canonical encodings
// (noble's strict decoding: y < p, no x = 0 with the sign bit, a point
// exists) and points of small order.
function keyPoint(bytes) {
  let pt;
  try {
    pt = Point.fromBytes(bytes, false);
  } catch (e) {
    reject('non_canonical_key', `key ${hex(bytes)}: ${e.message}`);
  }
  if (pt.isSmallOrder()) reject('small_order_key', `key ${hex(bytes)} has small order`);
  return pt;
}

function signedMessage(domain, body) {
  const d = utf8.encode(domain);
  return concat(Uint8Array.of(d.length), d, body);
}

// checkSignature: S < L, R not of small order, and [S]B - [k]A encodes to R.
function checkSignature(keyBytes, keyPt, msg, sig) {
  const r = sig.subarray(0, 32);
  const s = le(sig.subarray(32));
  if (s >= L) reject('non_canonical_signature', 'S is not below L');
  try {
    if (Point.fromBytes(r, false).isSmallOrder()) reject('bad_signature', 'R has small order');
  } catch (e) {
    if (e instanceof Reject) throw e; // an R that does not decode cannot match below
  }
  const k = le(sha512(concat(r, keyBytes, msg))) % L;
  const rr = Point.BASE.multiplyUnsafe(s).subtract(keyPt.multiplyUnsafe(k)).toBytes();
  if (!equal(rr, r)) reject('bad_signature', 'the equation does not hold');
}

// --- delegations ---

function decodeDelegation(bytes) {
  if (bytes.length > MAX_DELEGATION_SIZE) reject('too_large', `${bytes.length} bytes`);
  const { body, sig } = openEnvelope(bytes);
  const all = [0n, 1n, 2n, 3n, 4n, 5n];
  const f = new Fields(decodeCanonical(body, 'delegation body'), 'delegation body', all, all);
  const d = {
    version: f.uint(0n),
    name: f.text(1n),
    node: f.bytes(2n),
    publisher: f.bytes(3n),
    issued: f.uint(4n),
    notAfter: f.uint(5n),
  };
  if (d.version !== 2n) reject('malformed', `version ${d.version}`);
  if (!validName(d.name)) reject('malformed', `name ${d.name}`);
  if (d.node.length !== 32 || d.publisher.length !== 32) reject('malformed', 'keys must be 32 bytes');
  checkTimes(d.issued, d.notAfter, 'not-after');
  if (d.notAfter - d.issued > MAX_DELEGATION_MS) reject('lifetime', 'over 90 days');
  keyPoint(d.node);
  const pub = keyPoint(d.publisher);
  checkSignature(d.publisher, pub, signedMessage(DELEGATION_DOMAIN, body), sig);
  return d;
}

function delegationLive(d, now) {
  if (d.issued > now + MAX_SKEW_MS) reject('future', 'delegation issued ahead of the clock');
  if (now > d.notAfter + MAX_SKEW_MS) reject('expired', 'delegation expired');
}

const asDelegationFault = (e) => {
  if (e instanceof Reject) return new Reject('delegation', e.message, e.reason);
  return e;
};

// --- records ---

// shardOf is the shard of the instance whose peer ID bytes are peer among
// shards sets: the first byte of SHA-256(peer) modulo shards.
export function shardOf(peer, shards) {
  return BigInt(sha256(peer)[0]) & (shards - 1n);
}

function verifyRecordOrThrow(bytes, name, now, shard) {
  if (bytes.length > MAX_RECORD_SIZE) reject('too_large', `${bytes.length} bytes`);
  const { body, sig } = openEnvelope(bytes);
  const f = new Fields(
    decodeCanonical(body, 'body'),
    'body',
    [0n, 1n, 2n, 3n, 4n, 5n, 6n, 7n, 8n, 9n, 10n, 11n, 12n],
    [0n, 1n, 2n, 3n, 4n, 7n, 8n, 9n],
  );
  const r = {
    version: f.uint(0n),
    name: f.text(1n),
    peer: f.bytes(2n),
    key: f.bytes(3n),
    endpoints: f.texts(4n),
    region: f.text(5n, true) ?? '',
    manifest: f.bytes(6n, true),
    seq: f.uint(7n),
    issued: f.uint(8n),
    expires: f.uint(9n),
    withdrawn: f.flag(10n),
    delegation: f.bytes(11n, true),
    shards: f.uint(12n, true),
  };
  if (r.version !== 2n) reject('malformed', `version ${r.version}`);
  if (!validName(r.name)) reject('malformed', `name ${r.name}`);
  if (r.key.length !== 32) reject('malformed', 'key must be 32 bytes');
  if (r.endpoints.length > 16) reject('malformed', `${r.endpoints.length} endpoints`);
  for (const e of r.endpoints) if (!validEndpoint(e)) reject('malformed', `endpoint ${JSON.stringify(e)}`);
  if (r.withdrawn !== (r.endpoints.length === 0)) reject('malformed', 'endpoints empty if and only if withdrawn');
  if (!validRegion(r.region)) reject('malformed', 'region');
  if (r.manifest !== undefined && !(r.manifest.length === 24 && equal(r.manifest.subarray(0, 4), [1, 0x78, 0x11, 0x14]))) {
    reject('malformed', 'manifest is not a CIDv1 git-raw sha1');
  }
  if (r.shards !== undefined && (r.shards < 2n || r.shards > MAX_SHARDS || (r.shards & (r.shards - 1n)) !== 0n)) {
    reject('malformed', `shard count ${r.shards}: a power of two from 2 to 64, or key 12 left out`);
  }
  if (r.seq < 1n || r.seq > MAX_SEQ) reject('malformed', `seq ${r.seq}`);
  checkTimes(r.issued, r.expires, 'expires');
  if (r.expires - r.issued > MAX_LIFETIME_MS) reject('lifetime', 'over 60 s');
  const keyPt = keyPoint(r.key);
  if (!equal(r.peer, concat(Uint8Array.of(0x00, 0x24, 0x08, 0x01, 0x12, 0x20), r.key))) {
    reject('peer_mismatch', 'the peer field is not the key\'s peer ID');
  }
  checkSignature(r.key, keyPt, signedMessage(RECORD_DOMAIN, body), sig);
  let d;
  if (r.delegation !== undefined) {
    try {
      d = decodeDelegation(r.delegation);
      if (d.name !== r.name) reject('wrong_name', `delegation for ${d.name}`);
      if (!equal(d.node, r.key)) reject('wrong_node', 'delegation for another node key');
    } catch (e) {
      throw asDelegationFault(e);
    }
  }
  if (name && r.name !== name) reject('wrong_name', `record for ${r.name}, want ${name}`);
  if (shard !== undefined && shardOf(r.peer, r.shards ?? 1n) !== shard) {
    reject('wrong_shard', `belongs in shard ${shardOf(r.peer, r.shards ?? 1n)}, not ${shard}`);
  }
  if (r.issued > now + MAX_SKEW_MS) reject('future', 'record issued ahead of the clock');
  if (now > r.expires + MAX_SKEW_MS) reject('expired', 'record expired');
  if (d) {
    try {
      delegationLive(d, now);
    } catch (e) {
      throw asDelegationFault(e);
    }
  }
  return { r, d };
}

function verdict(run) {
  try {
    return { valid: true, reason: '', delegationReason: '', ...run() };
  } catch (e) {
    if (!(e instanceof Reject)) throw e;
    return { valid: false, reason: e.reason, delegationReason: e.delegationReason, detail: e.message };
  }
}

// verifyRecord verifies record bytes for the cell name (any when empty) at
// nowMs (milliseconds since the epoch).
// shard, when given, is the shard the record must be in.
export function verifyRecord(bytes, { name = '', nowMs, shard }) {
  return verdict(() => {
    const { r, d } = verifyRecordOrThrow(bytes, name, BigInt(nowMs), shard === undefined ? undefined : BigInt(shard));
    return {
      record: {
        name: r.name,
        peer: base58btc(r.peer),
        key: hex(r.key),
        endpoints: r.endpoints,
        region: r.region,
        manifest: r.manifest ? 'b' + base32(r.manifest) : '',
        seq: r.seq.toString(),
        issued_ms: Number(r.issued),
        expires_ms: Number(r.expires),
        withdrawn: r.withdrawn,
        publisher: d ? hex(d.publisher) : '',
        shards: Number(r.shards ?? 1n),
      },
    };
  });
}

// verifyDelegation verifies delegation bytes for the cell name and the
// node key (hex; any when empty) at nowMs.
export function verifyDelegation(bytes, { name = '', node = '', nowMs }) {
  return verdict(() => {
    const d = decodeDelegation(bytes);
    if (name && d.name !== name) reject('wrong_name', `delegation for ${d.name}`);
    if (node && hex(d.node) !== node) reject('wrong_node', 'delegation for another node key');
    delegationLive(d, BigInt(nowMs));
    return {
      delegation: {
        name: d.name,
        node: hex(d.node),
        publisher: hex(d.publisher),
        issued_ms: Number(d.issued),
        not_after_ms: Number(d.notAfter),
      },
    };
  });
}

// --- bytes ---

function equal(a, b) {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

function concat(...parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let off = 0;
  for (const p of parts) {
    out.set(p, off);
    off += p.length;
  }
  return out;
}

function le(b) {
  let v = 0n;
  for (let i = b.length - 1; i >= 0; i--) v = (v << 8n) | BigInt(b[i]);
  return v;
}

export const hex = (b) => Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');

export function fromHex(s) {
  if (s.length % 2 !== 0 || /[^0-9a-fA-F]/.test(s)) throw new Error('not hex');
  const out = new Uint8Array(s.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(s.slice(2 * i, 2 * i + 2), 16);
  return out;
}

function base58btc(b) {
  const alphabet = '123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz';
  let n = 0n;
  for (const x of b) n = (n << 8n) | BigInt(x);
  let s = '';
  while (n > 0n) {
    s = alphabet[Number(n % 58n)] + s;
    n /= 58n;
  }
  for (const x of b) {
    if (x !== 0) break;
    s = '1' + s;
  }
  return s;
}

function base32(b) {
  const alphabet = 'abcdefghijklmnopqrstuvwxyz234567';
  let bits = 0;
  let acc = 0;
  let s = '';
  for (const x of b) {
    acc = (acc << 8) | x;
    bits += 8;
    while (bits >= 5) {
      s += alphabet[(acc >> (bits - 5)) & 31];
      bits -= 5;
    }
  }
  if (bits > 0) s += alphabet[(acc << (5 - bits)) & 31];
  return s;
}
