// An unmodified etcd client (npm etcd3 1.1.2) as a workload for the
// reconfiguration test (tests/integration/reconfig_test.cc): given a static
// endpoint list, it puts keys in a loop and watches a prefix until told to
// stop, then reports what it saw. The test does the checking.
//
// usage: node reconfig_load.js ENDPOINTS PREFIX STOP_FILE
//   ENDPOINTS  host:port[,host:port...], never updated
//   PREFIX     keys are written as PREFIX + "node/" + i; PREFIX is watched
//   STOP_FILE  when it exists, the puts stop; it holds a revision, and the
//              script waits (at most 60 s) for the watch to reach it
//
// Output, one record a line:
//   ready REV                 the watch was created at header revision REV
//   call MS WHAT              each call's duration
//   fail WHAT: ERROR          a failed call or watch error
//   acked KEY VALUE           an acknowledged put
//   event PUT KEY=VALUE @REV  / event DELETE KEY @REV, in delivery order
//   note TEXT                 how the watch reconnected (not checked)
//   done                      the watch reached the stop revision
'use strict';

const fs = require('fs');
const { Etcd3 } = require('etcd3');

const [endpointsArg, prefix, stopFile] = process.argv.slice(2);
if (!endpointsArg || !prefix || !stopFile) {
  console.error('usage: node reconfig_load.js ENDPOINTS PREFIX STOP_FILE');
  process.exit(2);
}
const CALL_TIMEOUT_MS = 10000;
const hosts = endpointsArg.split(',').map((e) =>
  e.startsWith('http') ? e : `http://${e}`);
const client = new Etcd3({
  hosts,
  dialTimeout: 5000,
  // Every unary call gets a deadline, as the other clients' calls do.
  defaultCallOptions: (ctx) => (ctx.isStream ? {} :
    { deadline: Date.now() + CALL_TIMEOUT_MS }),
});

const out = (line) => process.stdout.write(`${line}\n`);
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

let lastEventRevision = 0;
// Resolved by the watch once it has seen the stop revision.
let stopRevision = Infinity;
let reachedStop;
const reached = new Promise((resolve) => { reachedStop = resolve; });
function noteEvent(rev) {
  lastEventRevision = Math.max(lastEventRevision, rev);
  if (lastEventRevision >= stopRevision) reachedStop();
}

(async () => {
  const watcher = await client.watch().prefix(prefix).create();
  out(`ready ${watcher.request.start_revision ?
    Number(watcher.request.start_revision) - 1 : 0}`);
  watcher.on('put', (kv) => {
    const rev = Number(kv.mod_revision);
    noteEvent(rev);
    out(`event PUT ${kv.key.toString()}=${kv.value.toString()} @${rev}`);
  });
  watcher.on('delete', (kv) => {
    const rev = Number(kv.mod_revision);
    noteEvent(rev);
    out(`event DELETE ${kv.key.toString()} @${rev}`);
  });
  watcher.on('error', (e) => out(`fail watch: ${e}`));
  watcher.on('connecting', (r) =>
    out(`note watch connecting from ${r.start_revision}`));
  // Diagnostics for the log: the client's per-host circuit breakers, and
  // its watch manager's state while the watch is not attached.
  for (const host of client.pool.hosts) {
    host.faultHandling.onStateChange((state) =>
      out(`note host ${host.host} breaker state ${state}`));
  }
  const manager = client.watchManager;
  setInterval(() => {
    if (manager.state !== 2) {
      out(`note watch manager state ${manager.state}, ` +
        `queue ${manager.queue ? manager.queue.state : '-'}`);
    }
  }, 2000).unref();
  // How the client lives through the changes (for the log, not checked).
  watcher.on('disconnected', (e) => out(`note watch disconnected: ${e}`));
  watcher.on('connected', (r) =>
    out(`note watch connected at ${r.header.revision} via member ` +
      `${r.header.member_id}`));

  for (let i = 0; stopRevision === Infinity; i++) {
    const key = `${prefix}node/${i}`;
    const start = Date.now();
    try {
      await client.put(key).value(`v${i}`);
      out(`call ${Date.now() - start} put ${key}`);
      out(`acked ${key} v${i}`);
    } catch (e) {
      out(`call ${Date.now() - start} put ${key}`);
      out(`fail put ${key}: ${e}`);
      // An application would not retry in a tight loop either.
      await sleep(100);
    }
    if (fs.existsSync(stopFile)) {
      stopRevision = Number(fs.readFileSync(stopFile, 'utf8').trim() || '0');
    }
  }
  noteEvent(0);  // the stop revision may already have been seen
  let timer;
  await Promise.race([reached, new Promise((resolve) => {
    timer = setTimeout(resolve, 60000);
  })]);
  clearTimeout(timer);
  if (lastEventRevision >= stopRevision) {
    out('done');
  } else {
    out(`fail watch: reached ${lastEventRevision} of ${stopRevision}`);
  }
  await watcher.cancel();
  client.close();
  process.exit(0);
})().catch((e) => {
  out(`fail script: ${e && e.stack ? e.stack : e}`);
  process.exit(1);
});
