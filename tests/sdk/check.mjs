// Drives ringcast through the official `@insforge/sdk` (Socket.IO at `/socket.io/`), public API
// only, plus a raw ringcast-protocol client (`ws` at `/realtime`) for interop. Run by
// tests/sdk.rs; by hand:
//
//   BASE_URL=http://127.0.0.1:8080 RAW_URL=ws://127.0.0.1:8080/realtime JWT_A=… JWT_B=… \
//   ANON_KEY=anon_… ADMIN_KEY=ik_… CHANNEL=room:1 REFUSED=nomatch:1 node check.mjs
//
// Settings (env): BASE_URL (the SDK's baseUrl), RAW_URL (ws://host:port/realtime, this node or
// another), JWT_A / JWT_B (HS256 tokens, uuid subs), ANON_KEY, ADMIN_KEY, CHANNEL (exists),
// REFUSED (matches no pattern). Optional: BASE_URL_B (client B's baseUrl, default BASE_URL),
// OTHER (an existing channel never subscribed, default CHANNEL + "-other"), RESTART_DONE_FILE
// (enables the reconnect check), TIMEOUT_MS (whole run, default 90000).
//
// Output: one JSON line per check on stdout, `{"check", "ok", "detail"}`, and the line `RESTART`
// when the node A is connected to should be restarted (the runner then creates
// RESTART_DONE_FILE). Exit status 0 only if every check passed. Anything else the SDK logs goes
// to stderr.

import { existsSync } from 'node:fs';
import { isDeepStrictEqual } from 'node:util';
import { createAdminClient, createClient } from '@insforge/sdk';
import WebSocket from 'ws';

// stdout carries the report only.
const out = (line) => process.stdout.write(`${line}\n`);
console.log = console.info = console.debug = (...a) => console.error(...a);

let failed = 0;
let passed = 0;

function safeJson(v) {
  const seen = new WeakSet();
  try {
    return JSON.stringify(v, (_k, x) => {
      if (x instanceof Error) return { error: x.message, data: x.data, stack: x.stack };
      if (typeof x === 'bigint') return String(x);
      if (x && typeof x === 'object') {
        if (seen.has(x)) return '[circular]';
        seen.add(x);
      }
      return x;
    });
  } catch (e) {
    return JSON.stringify(String(v));
  }
}

function report(check, ok, detail) {
  out(`{"check":${JSON.stringify(check)},"ok":${ok},"detail":${safeJson(detail ?? null) ?? 'null'}}`);
  if (ok) passed++;
  else failed++;
}

function need(name) {
  const v = process.env[name];
  if (!v) {
    report('settings', false, `${name} is not set`);
    process.exit(2);
  }
  return v;
}

const BASE_URL = need('BASE_URL');
const BASE_URL_B = process.env.BASE_URL_B || BASE_URL;
const RAW_URL = need('RAW_URL');
const JWT_A = need('JWT_A');
const JWT_B = need('JWT_B');
const ANON_KEY = need('ANON_KEY');
const ADMIN_KEY = need('ADMIN_KEY');
const CHANNEL = need('CHANNEL');
const REFUSED = need('REFUSED');
const OTHER = process.env.OTHER || `${CHANNEL}-other`;
const RESTART_DONE_FILE = process.env.RESTART_DONE_FILE || '';
const TIMEOUT_MS = Number(process.env.TIMEOUT_MS || 90_000);

const ROOM = `realtime:${CHANNEL}`;
const subOf = (jwt) => JSON.parse(Buffer.from(jwt.split('.')[1], 'base64url').toString()).sub;
const SUB_A = subOf(JWT_A);
const SUB_B = subOf(JWT_B);

const clients = [];
const raws = [];

async function finish(code) {
  for (const c of clients) {
    try {
      c.rt.disconnect();
    } catch {}
  }
  for (const r of raws) r.close();
  console.error(`sdk check: ${passed} passed, ${failed} failed`);
  // Let the disconnect frames go out.
  await sleep(100);
  process.exit(code ?? (failed ? 1 : 0));
}

setTimeout(() => {
  report('overall_timeout', false, `the run did not finish within ${TIMEOUT_MS} ms`);
  finish(3);
}, TIMEOUT_MS).unref();

// An exception thrown inside an SDK callback (e.g. an ack without `presence.members`) would
// crash the process: report it as a failure instead and keep going.
process.on('uncaughtException', (e) => report('uncaught_exception', false, e));
process.on('unhandledRejection', (e) => report('unhandled_rejection', false, e));

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function withTimeout(p, ms, what) {
  let t;
  return Promise.race([
    p,
    new Promise((_, rej) => {
      t = setTimeout(() => rej(new CheckError(`timeout after ${ms} ms: ${what}`)), ms);
    }),
  ]).finally(() => clearTimeout(t));
}

class CheckError extends Error {
  constructor(message, got) {
    super(message);
    this.got = got;
  }
}

function expect(cond, message, got) {
  if (!cond) throw new CheckError(message, got);
}

/// Runs one check, bounded by `ms`; its return value becomes the detail.
async function check(name, ms, fn) {
  try {
    const detail = await withTimeout(Promise.resolve().then(fn), ms, name);
    report(name, true, detail);
    return true;
  } catch (e) {
    if (e instanceof CheckError) report(name, false, { error: e.message, got: e.got });
    else report(name, false, { error: String(e?.message ?? e), stack: e?.stack });
    return false;
  }
}

/// Everything a client received, in order, with waiters.
class Inbox {
  constructor() {
    this.items = [];
    this.waiters = new Set();
  }
  get mark() {
    return this.items.length;
  }
  push(x) {
    this.items.push(x);
    for (const w of [...this.waiters]) if (w.pred(x)) w.done(x);
  }
  /// The first item from index `since` on matching `pred`, waiting up to `ms` for it.
  wait(pred, ms, what, since = 0) {
    const found = this.items.slice(since).find(pred);
    if (found) return Promise.resolve(found);
    return new Promise((resolve, reject) => {
      const w = {
        pred,
        done: (x) => {
          clearTimeout(w.timer);
          this.waiters.delete(w);
          resolve(x);
        },
      };
      w.timer = setTimeout(() => {
        this.waiters.delete(w);
        reject(new CheckError(`timeout after ${ms} ms waiting for ${what}`, this.items.slice(since)));
      }, ms);
      this.waiters.add(w);
    });
  }
}

const USER_EVENTS = ['order.updated', 'after.leave', 'anon.hello', 'admin.says', 'to.raw', 'from.raw', 'after.restart'];

/// An SDK client whose realtime events (lifecycle, presence, errors, the user events above)
/// are all recorded.
function sdkClient(label, make) {
  const client = make();
  const rt = client.realtime;
  const events = new Inbox();
  for (const name of ['connect', 'disconnect', 'connect_error', 'error', 'presence:join', 'presence:leave', ...USER_EVENTS]) {
    rt.on(name, (data) => events.push({ event: name, data, at: Date.now() }));
  }
  const c = {
    label,
    client,
    rt,
    events,
    waitEvent: (name, pred, ms, since) =>
      events.wait((e) => e.event === name && pred(e.data), ms, `${label}: ${name}`, since).then((e) => e.data),
    count: (name) => events.items.filter((e) => e.event === name).length,
  };
  clients.push(c);
  return c;
}

/// A raw ringcast-protocol connection (`/realtime`).
class Raw {
  constructor(url) {
    this.inbox = new Inbox();
    this.ws = new WebSocket(url);
    this.ws.on('message', (data, binary) => {
      if (binary) return this.inbox.push({ type: '_binary' });
      try {
        this.inbox.push(JSON.parse(data.toString()));
      } catch {
        this.inbox.push({ type: '_unparsable', text: data.toString() });
      }
    });
    this.ws.on('close', (code, reason) => this.inbox.push({ type: '_close', code, reason: reason.toString() }));
    this.ws.on('error', (e) => this.inbox.push({ type: '_error', message: e.message }));
    raws.push(this);
  }
  get open() {
    return this.ws.readyState === WebSocket.OPEN;
  }
  opened(ms) {
    return withTimeout(
      new Promise((resolve, reject) => {
        if (this.open) return resolve();
        this.ws.once('open', resolve);
        this.ws.once('error', reject);
        this.ws.once('close', () => reject(new Error('closed before open')));
      }),
      ms,
      'raw websocket open',
    );
  }
  send(obj) {
    this.ws.send(JSON.stringify(obj));
  }
  /// Sends `obj`, returns the first reply of a type in `types` (or an error / close).
  async request(obj, types, ms, what) {
    const since = this.inbox.mark;
    this.send(obj);
    return this.inbox.wait((x) => types.includes(x.type) || ['error', '_close', '_error'].includes(x.type), ms, what, since);
  }
  close() {
    try {
      this.ws.terminate();
    } catch {}
  }
}

/// A raw client authenticated with `token` and subscribed to `channel`.
async function rawSession(url, token, channel) {
  const raw = new Raw(url);
  try {
    await raw.opened(5000);
    const auth = await raw.request({ type: 'auth', token }, ['auth_success'], 5000, 'raw: auth_success');
    expect(auth.type === 'auth_success', 'raw auth was not answered with auth_success', auth);
    const sub = await raw.request({ type: 'subscribe', channel }, ['subscribed'], 5000, 'raw: subscribed');
    expect(sub.type === 'subscribed' && sub.channel === channel, 'raw subscribe was not answered with subscribed', sub);
    return { raw, auth, sub };
  } catch (e) {
    raw.close();
    throw e;
  }
}

const isoTime = (s) => typeof s === 'string' && !Number.isNaN(Date.parse(s));

/// What is wrong with a delivered message's `meta` (empty when nothing).
function metaProblems(meta, { senderType, senderId }) {
  const p = [];
  if (!meta || typeof meta !== 'object') return ['meta missing'];
  if (meta.channel !== ROOM) p.push(`meta.channel is ${JSON.stringify(meta.channel)}, want ${JSON.stringify(ROOM)}`);
  if (typeof meta.messageId !== 'string' || !meta.messageId) p.push('meta.messageId missing');
  if (meta.senderType !== senderType) p.push(`meta.senderType is ${JSON.stringify(meta.senderType)}, want ${senderType}`);
  if (senderId !== undefined && meta.senderId !== senderId) p.push(`meta.senderId is ${JSON.stringify(meta.senderId)}, want ${senderId}`);
  if (!isoTime(meta.timestamp)) p.push(`meta.timestamp is not a time: ${JSON.stringify(meta.timestamp)}`);
  return p;
}

function expectMeta(msg, want) {
  const p = metaProblems(msg?.meta, want);
  expect(p.length === 0, p.join('; '), msg);
}

const hasMember = (members, id, type = 'user') =>
  Array.isArray(members) && members.some((m) => m?.presenceId === id && m?.type === type);

// ---------------------------------------------------------------------------------------------

const A = sdkClient('A', () => createClient({ baseUrl: BASE_URL, accessToken: JWT_A }));

const connected = await check('connect', 12_000, async () => {
  const t0 = Date.now();
  await A.rt.connect();
  expect(A.rt.isConnected === true, 'isConnected is not true after connect()', { isConnected: A.rt.isConnected });
  expect(typeof A.rt.socketId === 'string' && A.rt.socketId.length > 0, 'socketId is not set', { socketId: A.rt.socketId });
  expect(A.rt.connectionState === 'connected', 'connectionState is not connected', A.rt.connectionState);
  return { socketId: A.rt.socketId, ms: Date.now() - t0 };
});
if (!connected) await finish();

await check('subscribe', 12_000, async () => {
  const r = await A.rt.subscribe(CHANNEL);
  expect(r?.ok === true && r.channel === CHANNEL, 'subscribe ack is not {ok:true, channel}', r);
  const members = r.presence?.members;
  expect(Array.isArray(members), 'ack has no presence.members array', r);
  const me = members.find((m) => m?.presenceId === SUB_A);
  expect(me?.type === 'user', "A is not in its own ack's members as a user", r);
  expect(isoTime(me.joinedAt), 'member joinedAt is not a time', me);
  expect(A.rt.getSubscribedChannels().includes(CHANNEL), 'getSubscribedChannels() lacks CHANNEL', A.rt.getSubscribedChannels());
  return r;
});

// Client B (on BASE_URL_B: another node in the redis run) joins.
const B = sdkClient('B', () => createClient({ baseUrl: BASE_URL_B, accessToken: JWT_B }));
const markJoin = A.events.mark;

await check('b_subscribe_snapshot', 15_000, async () => {
  await B.rt.connect();
  const r = await B.rt.subscribe(CHANNEL);
  expect(r?.ok === true && r.channel === CHANNEL, "B's subscribe ack is not {ok:true, channel}", r);
  expect(hasMember(r.presence?.members, SUB_A), "B's snapshot lacks A", r);
  expect(hasMember(r.presence?.members, SUB_B), "B's snapshot lacks B itself", r);
  return r.presence.members;
});

await check('presence_join', 6_000, async () => {
  const j = await A.waitEvent('presence:join', (d) => d?.member?.presenceId === SUB_B, 5_000, markJoin);
  expect(j.member.type === 'user', 'joined member is not type user', j);
  expect(j.meta?.channel === CHANNEL, 'presence meta.channel must be the bare channel name', j);
  return j;
});

await check('presence_state', 6_000, async () => {
  const st = A.rt.getPresenceState(CHANNEL);
  expect(hasMember(st, SUB_A) && hasMember(st, SUB_B), "A's getPresenceState() does not hold A and B", st);
  return st;
});

// A publishes: B gets it, and so does A itself.
let delivered;
const markPubA = A.events.mark;
await check('publish_delivered', 6_000, async () => {
  const markB = B.events.mark;
  await A.rt.publish(CHANNEL, 'order.updated', { orderId: '1', n: 3, nested: { a: [1, null] } });
  const m = await B.waitEvent('order.updated', () => true, 5_000, markB);
  delivered = m;
  expect(
    m.orderId === '1' && m.n === 3 && isDeepStrictEqual(m.nested, { a: [1, null] }),
    'payload is not spread at the top level as sent',
    m,
  );
  expect(isDeepStrictEqual(Object.keys(m).sort(), ['meta', 'n', 'nested', 'orderId']), 'unexpected keys beside the payload and meta', m);
  expectMeta(m, { senderType: 'user', senderId: SUB_A });
  return m;
});

await check('publish_echo', 6_000, async () => {
  const m = await A.waitEvent('order.updated', () => true, 5_000, markPubA);
  expect(m.orderId === '1' && m.n === 3, 'echo payload differs', m);
  expectMeta(m, { senderType: 'user', senderId: SUB_A });
  if (delivered) expect(m.meta.messageId === delivered.meta?.messageId, 'echo and delivery have different messageIds', { echo: m, delivered });
  return m;
});

await check('subscribe_refused', 12_000, async () => {
  const r = await A.rt.subscribe(REFUSED);
  expect(r?.ok === false && r.error?.code === 'REALTIME_UNAUTHORIZED', 'want {ok:false, error:{code:REALTIME_UNAUTHORIZED}}', r);
  expect(!A.rt.getSubscribedChannels().includes(REFUSED), 'refused channel listed as subscribed', A.rt.getSubscribedChannels());
  return r;
});

await check('publish_not_subscribed', 6_000, async () => {
  const mark = A.events.mark;
  await A.rt.publish(OTHER, 'x', { y: 1 });
  const e = await A.waitEvent('error', (d) => d?.code === 'REALTIME_NOT_SUBSCRIBED', 5_000, mark);
  return e;
});

await check('presence_leave', 6_000, async () => {
  const mark = A.events.mark;
  B.rt.unsubscribe(CHANNEL);
  const l = await A.waitEvent('presence:leave', (d) => d?.member?.presenceId === SUB_B, 5_000, mark);
  expect(l.meta?.channel === CHANNEL, 'presence meta.channel must be the bare channel name', l);
  const st = A.rt.getPresenceState(CHANNEL);
  expect(!hasMember(st, SUB_B), "B still in A's getPresenceState()", st);
  return l;
});

await check('unsubscribed_gets_nothing', 6_000, async () => {
  const markA = A.events.mark;
  const markB = B.events.mark;
  await A.rt.publish(CHANNEL, 'after.leave', { k: 1 });
  await A.waitEvent('after.leave', () => true, 3_000, markA);
  await sleep(500);
  const got = B.events.items.slice(markB).filter((e) => e.event === 'after.leave');
  expect(got.length === 0, 'B received a message after unsubscribing', got);
  return { bConnected: B.rt.isConnected };
});

await check('bad_token_rejected', 6_000, async () => {
  const c = createClient({ baseUrl: BASE_URL, accessToken: 'not-a-jwt' });
  const t0 = Date.now();
  let err;
  try {
    await c.realtime.connect();
  } catch (e) {
    err = e;
  } finally {
    c.realtime.disconnect();
  }
  const ms = Date.now() - t0;
  expect(err, 'connect() resolved with an invalid token');
  expect(err.message === 'Invalid token', 'connect() rejected with another message', { message: err.message, ms });
  expect(ms < 3_000, 'rejection took too long (a closed socket instead of CONNECT_ERROR?)', { ms });
  return { message: err.message, ms };
});

await check('no_token_rejected', 6_000, async () => {
  const c = createClient({ baseUrl: BASE_URL });
  const t0 = Date.now();
  let err;
  try {
    await c.realtime.connect();
  } catch (e) {
    err = e;
  } finally {
    c.realtime.disconnect();
  }
  const ms = Date.now() - t0;
  expect(err, 'connect() resolved without credentials');
  expect(err.message === 'No authentication provided', 'connect() rejected with another message', { message: err.message, ms });
  expect(ms < 3_000, 'rejection took too long', { ms });
  return { message: err.message, ms };
});

const C = sdkClient('anon', () => createClient({ baseUrl: BASE_URL, anonKey: ANON_KEY }));
await check('anon_key', 15_000, async () => {
  await C.rt.connect();
  const r = await C.rt.subscribe(CHANNEL);
  expect(r?.ok === true && r.channel === CHANNEL, 'anon subscribe ack is not {ok:true, channel}', r);
  const anons = (r.presence?.members ?? []).filter((m) => m?.type === 'anonymous');
  // InsForge uses the Socket.IO socket id as an anonymous member's presenceId.
  const mine = anons.find((m) => m.presenceId === C.rt.socketId) ?? (anons.length === 1 ? anons[0] : undefined);
  expect(mine && typeof mine.presenceId === 'string' && mine.presenceId, "no anonymous member for the anon client in its ack", r);
  const mark = C.events.mark;
  await A.rt.publish(CHANNEL, 'anon.hello', { to: 'anon' });
  const m = await C.waitEvent('anon.hello', () => true, 5_000, mark);
  expect(m.to === 'anon', 'payload differs', m);
  expectMeta(m, { senderType: 'user', senderId: SUB_A });
  return { member: mine, presenceIdIsSocketId: mine.presenceId === C.rt.socketId, message: m };
});

const D = sdkClient('admin', () => createAdminClient({ baseUrl: BASE_URL, apiKey: ADMIN_KEY }));
await check('admin_key', 15_000, async () => {
  await D.rt.connect();
  const r = await D.rt.subscribe(CHANNEL);
  expect(r?.ok === true && r.channel === CHANNEL, 'admin subscribe ack is not {ok:true, channel}', r);
  const mark = A.events.mark;
  await D.rt.publish(CHANNEL, 'admin.says', { hello: 'all' });
  const m = await A.waitEvent('admin.says', () => true, 5_000, mark);
  expect(m.hello === 'all', 'payload differs', m);
  expectMeta(m, { senderType: 'system' });
  return { ack: r, message: m };
});

// The raw ringcast protocol, on RAW_URL (another node in the redis run).
let raw;
await check('raw_auth_subscribe', 12_000, async () => {
  const s = await rawSession(RAW_URL, JWT_B, CHANNEL);
  raw = s.raw;
  return { auth: s.auth, subscribed: s.sub };
});

await check('raw_receives_sdk_publish', 6_000, async () => {
  expect(raw, 'no raw client');
  const since = raw.inbox.mark;
  await A.rt.publish(CHANNEL, 'to.raw', { k: 'v', n: 7 });
  const m = await raw.inbox.wait((x) => x.type === 'message' && x.event === 'to.raw', 5_000, 'raw: message to.raw', since);
  expect(m.channel === CHANNEL, 'raw message channel differs', m);
  expect(isDeepStrictEqual(m.payload, { k: 'v', n: 7 }), 'raw message payload differs', m);
  return m;
});

await check('sdk_receives_raw_publish', 6_000, async () => {
  expect(raw, 'no raw client');
  const mark = A.events.mark;
  const ack = await raw.request(
    { type: 'publish', channel: CHANNEL, event: 'from.raw', payload: { x: 1 } },
    ['published'],
    5_000,
    'raw: published',
  );
  expect(ack.type === 'published' && ack.channel === CHANNEL && ack.event === 'from.raw', 'raw publish not acked with published', ack);
  const m = await A.waitEvent('from.raw', (d) => d?.x === 1, 5_000, mark);
  expect(isDeepStrictEqual(Object.keys(m).sort(), ['meta', 'x']), 'unexpected keys beside the payload and meta', m);
  expectMeta(m, { senderType: 'user', senderId: SUB_B });
  return { ack, message: m, sameMessageId: m.meta.messageId === ack.messageId };
});

if (RESTART_DONE_FILE) {
  for (const c of [B, C, D]) c.rt.disconnect();
  await check('reconnect_resubscribe', 60_000, async () => {
    const mark = A.events.mark;
    const connects = A.count('connect');
    const socketBefore = A.rt.socketId;
    out('RESTART');
    const waitUntil = Date.now() + 40_000;
    while (!existsSync(RESTART_DONE_FILE)) {
      expect(Date.now() < waitUntil, `${RESTART_DONE_FILE} did not appear within 40 s`);
      await sleep(100);
    }
    const t0 = Date.now();
    const deadline = t0 + 15_000;
    let rawReconnects = 0;
    let k = 0;
    let got;
    let lastError;
    // Publish from the raw client until A gets one: it has reconnected and resubscribed by itself.
    while (!got && Date.now() < deadline) {
      try {
        if (!raw || !raw.open) {
          raw?.close();
          raw = undefined;
          raw = (await rawSession(RAW_URL, JWT_B, CHANNEL)).raw;
          rawReconnects++;
        }
        const ack = await raw.request(
          { type: 'publish', channel: CHANNEL, event: 'after.restart', payload: { k: ++k } },
          ['published'],
          1_000,
          'raw: published',
        );
        if (ack.type !== 'published') {
          lastError = ack;
          raw.close();
          raw = undefined;
          await sleep(200);
          continue;
        }
        got = await A.waitEvent('after.restart', () => true, 700, mark).catch(() => undefined);
      } catch (e) {
        lastError = e;
        raw?.close();
        raw = undefined;
        await sleep(300);
      }
    }
    const timeline = A.events.items.slice(mark).filter((e) => ['connect', 'disconnect', 'connect_error', 'error'].includes(e.event));
    expect(got, 'no message reached A within 15 s of the restart', { timeline, lastError, sent: k, state: A.rt.connectionState });
    expect(A.count('connect') > connects, "A's connect event did not fire again", timeline);
    expect(A.rt.getSubscribedChannels().includes(CHANNEL), 'CHANNEL is not subscribed after the reconnect', A.rt.getSubscribedChannels());
    expectMeta(got, { senderType: 'user', senderId: SUB_B });
    return {
      ms: Date.now() - t0,
      disconnectReason: timeline.find((e) => e.event === 'disconnect')?.data,
      socketBefore,
      socketAfter: A.rt.socketId,
      rawReconnects,
      published: k,
      message: got,
    };
  });
}

await finish();
