"""Drives lockd's HTTP/JSON gateway with Patroni's own etcd v3 client.

Patroni (Debian's `patroni` package) keeps a PostgreSQL cluster's state in
etcd through etcd's JSON gateway (/v3/kv/..., /v3/lease/..., /v3/watch), not
gRPC. This script uses its Etcd3 DCS class, unchanged, as two Patroni nodes
would: initialize the cluster, race for the leader key, publish members and
configuration, follow changes through its watch-fed cache, hand leadership
over, and take it over once a silent leader's lease expires.

Usage: /usr/bin/python3 patroni_check.py HOST:PORT[,HOST:PORT...]
Prints one line per check ("ok ..." or "FAIL ...") and exits 1 if any failed.
"""
import json
import logging
import sys
import threading
import time

from patroni.dcs.etcd3 import Etcd3, KVCache

failures = []


def check(cond, what):
    print(('ok   ' if cond else 'FAIL ') + what, flush=True)
    if not cond:
        failures.append(what)


# Patroni's watch-fed cache signals only leader changes. To wait for other
# changes without polling, count every update of any node's cache (each
# watch message, and each rebuild after a reconnect) and wake the waiters.
_updates = threading.Condition()
_update_count = [0]


def _counting(method):
    def wrapper(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        finally:
            with _updates:
                _update_count[0] += 1
                _updates.notify_all()
    return wrapper


KVCache._process_message = _counting(KVCache._process_message)
KVCache._build_cache = _counting(KVCache._build_cache)


def wait_for(pred, timeout):
    """Waits until `pred` holds, re-checking it after each cache update, or
    until `timeout` s pass."""
    deadline = time.time() + timeout
    while True:
        with _updates:
            seen = _update_count[0]
        if pred():
            return True
        with _updates:
            remaining = deadline - time.time()
            if remaining <= 0:
                break
            _updates.wait_for(lambda: _update_count[0] != seen, remaining)
    return pred()


def main():
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format='%(asctime)s %(name)s %(levelname)s: %(message)s')
    hosts = sys.argv[1].split(',')
    scope = 'pg-%d' % int(time.time() * 1000)

    def node(name):
        return Etcd3({'hosts': hosts, 'scope': scope, 'name': name, 'ttl': 10,
                      'retry_timeout': 10, 'loop_wait': 2, 'namespace': '/service'})

    a = node('node1')
    b = node('node2')
    check(a.initialize(create_new=True, sysid='7000000000000000001'),
          'node1 initializes the cluster')
    check(not b.initialize(create_new=True, sysid='7000000000000000002'),
          'node2 cannot initialize it a second time')
    check(a.attempt_to_acquire_leader(), 'node1 takes the leader key')
    check(not b.attempt_to_acquire_leader(), 'node2 cannot take it while node1 holds it')
    check(a.touch_member({'conn_url': 'postgres://127.0.0.1:5432/postgres',
                          'api_url': 'http://127.0.0.1:8008/patroni',
                          'state': 'running', 'role': 'master'}),
          'node1 publishes itself')
    check(b.touch_member({'conn_url': 'postgres://127.0.0.1:5433/postgres',
                          'api_url': 'http://127.0.0.1:8009/patroni',
                          'state': 'running', 'role': 'replica'}),
          'node2 publishes itself')
    check(a.set_config_value(json.dumps({'ttl': 10, 'loop_wait': 2, 'retry_timeout': 10})),
          'node1 writes the dynamic configuration')

    # node2's view comes from its cache, filled by a range and then the watch
    # stream, so these see node1's writes only through /v3/watch.
    def view(dcs):
        return dcs.get_cluster(force=True)

    def b_sees_all():
        c = view(b)
        return (c.leader is not None and c.leader.name == 'node1'
                and sorted(m.name for m in c.members) == ['node1', 'node2']
                and c.initialize == '7000000000000000001'
                and c.config is not None and c.config.data.get('loop_wait') == 2)
    check(wait_for(b_sees_all, 10),
          'node2 sees node1 as leader, both members, the system id and the configuration')

    check(a.update_leader(last_lsn=1000), 'node1 renews its leadership (lease keep-alive)')
    check(wait_for(lambda: view(b).last_lsn == 1000, 10),
          'node2 sees the leader\'s last LSN')

    # node2 waits for a change of leader; node1 steps down meanwhile.
    c = view(b)
    view(a)  # delete_leader deletes only the leader key node1 knows it holds
    b.event.clear()  # earlier changes set it; wait for the next one
    timer = threading.Timer(1.0, a.delete_leader)
    timer.start()
    t0 = time.time()
    woke = b.watch(c.leader.index, 8)
    waited = time.time() - t0
    timer.join()
    check(woke and 0.5 < waited < 7,
          'node2\'s watch wakes when node1 deletes the leader key (after %.1f s)' % waited)
    check(wait_for(lambda: view(b).leader is None, 10), 'node2 sees no leader')
    check(b.attempt_to_acquire_leader(), 'node2 takes the leader key')
    check(wait_for(lambda: view(a).leader is not None and view(a).leader.name == 'node2', 10),
          'node1 sees node2 as leader')

    # node2 goes silent: its lease (TTL 10 s) expires and takes the leader
    # and member keys with it; node1 then takes over.
    t0 = time.time()
    check(wait_for(lambda: view(a).leader is None, 30),
          'node2\'s leader key expires with its lease (after %.1f s)' % (time.time() - t0))
    check(a.attempt_to_acquire_leader(), 'node1 takes the leader key again')
    # (node1 was idle as long, so its own lease and member key expired too;
    # its HA loop would publish itself again, as here.)
    check(a.touch_member({'conn_url': 'postgres://127.0.0.1:5432/postgres',
                          'api_url': 'http://127.0.0.1:8008/patroni',
                          'state': 'running', 'role': 'master'}),
          'node1 publishes itself again')
    check(wait_for(lambda: sorted(m.name for m in view(a).members) == ['node1'], 10),
          'node2\'s member key expired with its lease')
    check(a.set_failover_value(json.dumps({'leader': 'node1', 'member': 'node2'})),
          'node1 writes a failover request')
    check(a.delete_cluster(), 'node1 deletes the cluster\'s keys')
    check(wait_for(lambda: view(a).leader is None and not view(a).members, 10),
          'nothing of the cluster is left')

    if failures:
        print('%d check(s) failed' % len(failures), flush=True)
        sys.exit(1)
    print('all checks passed', flush=True)
    # The watcher threads are daemons; do not wait for them.
    sys.stdout.flush()
    import os
    os._exit(0)


if __name__ == '__main__':
    main()
