// Drives a cluster with the npm etcd3 client (v1.1.2, the version
// package-lock.json pins) and checks what it sees.
//
// usage: node etcd3_check.js ENDPOINT[,ENDPOINT...] SUITE[,SUITE...]
// suites: kv, lease, lock, watch, election
//
// Prints one line per check ("ok <name>" / "FAIL <name>: <why>") and exits
// with status 1 if any check failed, 2 on bad usage.
'use strict';

const { Etcd3, EtcdLockFailedError } = require('etcd3');

const [endpointsArg, suitesArg] = process.argv.slice(2);
if (!endpointsArg || !suitesArg) {
  console.error('usage: node etcd3_check.js ENDPOINTS SUITES');
  process.exit(2);
}
const hosts = endpointsArg.split(',').map((e) =>
  e.startsWith('http') ? e : `http://${e}`);
const client = new Etcd3({ hosts, dialTimeout: 5000 });
let failures = 0;

function check(name, cond, detail) {
  if (cond) {
    console.log(`ok ${name}`);
  } else {
    failures++;
    console.log(`FAIL ${name}: ${detail}`);
  }
}

// Waits until `fn` returns true, asking again every 50 ms, for at most
// `ms`; returns whether it did.
async function eventually(fn, ms) {
  const until = Date.now() + ms;
  while (Date.now() < until) {
    if (await fn()) return true;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  return fn();
}

const suites = {
  async kv() {
    await client.put('node/a').value('1');
    await client.put('node/b').value('2');
    await client.put('other').value('x');
    check('kv.get', (await client.get('node/a').string()) === '1', 'node/a');
    const all = await client.getAll().prefix('node/').strings();
    check('kv.prefix', JSON.stringify(all) === '{"node/a":"1","node/b":"2"}',
      JSON.stringify(all));
    check('kv.count', (await client.getAll().prefix('node/').count()) === 2,
      'count');
    const txn = await client.if('node/a', 'Value', '==', '1')
      .then(client.put('node/a').value('1b'))
      .else(client.put('node/a').value('wrong'))
      .commit();
    check('kv.txn.succeeded', txn.succeeded === true, JSON.stringify(txn));
    check('kv.txn.applied', (await client.get('node/a').string()) === '1b',
      'value after txn');
    const failed = await client.if('node/a', 'Version', '>', 5)
      .then(client.put('node/a').value('wrong'))
      .commit();
    check('kv.txn.failed', failed.succeeded === false, JSON.stringify(failed));
    await client.delete().prefix('node/');
    check('kv.delete', (await client.getAll().prefix('node/').count()) === 0,
      'keys left');
    let missing = null;
    try {
      missing = await client.get('never-written').string();
    } catch (e) {
      missing = `error ${e}`;
    }
    check('kv.missing', missing === null, String(missing));
  },

  async lease() {
    const lease = client.lease(5);
    let renewals = 0;
    lease.on('keepaliveSucceeded', () => { renewals++; });
    await lease.put('lease/k1').value('v1');
    await lease.put('lease/k2').value('v2');
    const id = await lease.grant();
    const granted = Date.now();
    check('lease.grant', typeof id === 'string' && id.length > 0, id);
    check('lease.attached',
      (await client.getAll().prefix('lease/').count()) === 2, 'keys');
    // The client renews at once and then every TTL/3; after five renewals
    // the lease has outlived its first TTL only because it was kept alive.
    const renewed = await eventually(async () => renewals >= 5, 20000);
    check('lease.renewed', renewed, `${renewals} renewals`);
    check('lease.past-ttl', Date.now() - granted > 5000,
      `${Date.now() - granted} ms after the grant`);
    check('lease.kept-alive',
      (await client.getAll().prefix('lease/').count()) === 2,
      'keys vanished while kept alive');
    const once = await lease.keepaliveOnce();
    const ttl = Number(once.TTL);
    check('lease.keepalive-once', ttl > 0 && ttl <= 5, `ttl ${ttl}`);
    await lease.revoke();
    check('lease.revoke',
      (await client.getAll().prefix('lease/').count()) === 0,
      'keys left after revoke');
    // A lease nobody keeps alive expires, with its keys.
    const idle = client.lease(2, { autoKeepAlive: false });
    await idle.put('lease/idle').value('v');
    const gone = await eventually(
      async () => (await client.get('lease/idle').string()) === null, 15000);
    check('lease.expire', gone, 'lease/idle still there');
  },

  async lock() {
    // Client-side locks (lease + create-revision txn): three workers take
    // turns incrementing a counter with a read and a write; their critical
    // sections never overlap and no increment is lost.
    await client.put('node-counter').value('0');
    let inside = 0;
    let overlaps = 0;
    let done = 0;
    const worker = async () => {
      for (let i = 0; i < 5; i++) {
        for (;;) {
          try {
            await client.lock('node-lock').ttl(5).do(async () => {
              inside++;
              if (inside > 1) overlaps++;
              const n = Number(await client.get('node-counter').string());
              await client.put('node-counter').value(String(n + 1));
              inside--;
            });
            done++;
            break;
          } catch (e) {
            if (!(e instanceof EtcdLockFailedError)) throw e;
            // etcd3's lock does not queue: wait until the holder releases.
            await eventually(
              async () => (await client.get('node-lock').string()) === null,
              10000);
          }
        }
      }
    };
    await Promise.all([worker(), worker(), worker()]);
    check('lock.exclusive', overlaps === 0, `${overlaps} overlaps`);
    check('lock.all-done', done === 15, `${done} sections`);
    check('lock.no-lost-update',
      (await client.get('node-counter').string()) === '15', 'counter');
  },

  async watch() {
    const events = [];
    const watcher = await client.watch().prefix('watch/').create();
    watcher.on('put', (kv) => events.push(`put ${kv.key}=${kv.value}`));
    watcher.on('delete', (kv) => events.push(`delete ${kv.key}`));
    const want = [];
    for (let i = 0; i < 20; i++) {
      await client.put(`watch/${i % 4}`).value(`${i}`);
      want.push(`put watch/${i % 4}=${i}`);
    }
    await client.delete().key('watch/0');
    want.push('delete watch/0');
    await client.put('unwatched').value('x');
    const complete = await eventually(
      async () => events.length >= want.length, 10000);
    check('watch.all', complete, `${events.length}/${want.length} events`);
    check('watch.order', JSON.stringify(events) === JSON.stringify(want),
      JSON.stringify(events));
    await watcher.cancel();
  },

  async election() {
    const election = client.election('node-election');
    const first = election.campaign('first');
    await new Promise((resolve, reject) => {
      first.on('elected', resolve);
      first.on('error', reject);
    });
    check('election.leader', (await election.leader()) === 'first',
      'leader value');
    const second = election.campaign('second');
    let secondElected = false;
    second.on('elected', () => { secondElected = true; });
    second.on('error', () => {});
    // Once the second candidate's key exists it is queued behind the first.
    const queued = await eventually(
      async () => (await client.getAll().prefix('election/node-election/')
        .count()) === 2, 10000);
    check('election.queued', queued, 'second candidate not registered');
    check('election.waits', secondElected === false, 'two leaders');
    await first.resign();
    check('election.handover',
      await eventually(async () => secondElected, 10000), 'not elected');
    check('election.new-leader',
      await eventually(async () => (await election.leader()) === 'second',
        5000), 'leader value');
    await second.resign();
  },
};

(async () => {
  for (const name of suitesArg.split(',')) {
    if (!suites[name]) {
      console.error(`unknown suite ${name}`);
      process.exit(2);
    }
    try {
      await suites[name]();
    } catch (e) {
      failures++;
      console.log(`FAIL ${name}: threw ${e && e.stack ? e.stack : e}`);
    }
  }
  client.close();
  process.exit(failures === 0 ? 0 : 1);
})();
