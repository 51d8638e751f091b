// A gRPC server's metrics under the names etcd 3.4 exports (those of
// go-grpc-prometheus, plus etcd's own count of requests per client version),
// so dashboards and alerts written for etcd work on a lockd member's client
// port unchanged:
//
//   grpc_server_started_total{grpc_method,grpc_service,grpc_type}
//   grpc_server_handled_total{grpc_code,grpc_method,grpc_service,grpc_type}
//   grpc_server_msg_received_total{grpc_method,grpc_service,grpc_type}
//   grpc_server_msg_sent_total{grpc_method,grpc_service,grpc_type}
//   etcd_server_client_requests_total{client_api_version,type}
//
// with etcd's help texts, all counters. grpc_method and grpc_service come
// from the call's path ("/etcdserverpb.KV/Range": "Range",
// "etcdserverpb.KV"); grpc_type is the method's kind in its .proto
// ("unary", "client_stream", "server_stream", "bidi_stream"); grpc_code is
// Go's name of a status code ("OK", "Canceled", "InvalidArgument", ...; a
// code outside gRPC's 17 counts as "Unknown").
//
// What is counted, per call of a known method (below):
//  - started: once, when the call's initial metadata arrives, before the
//    handler runs.
//  - msg_received: each request message read (a unary call's one
//    included); a read that ends the stream or fails is not a message.
//  - msg_sent: each response message the transport took (a unary call's
//    response only when its status is OK, as in go-grpc-prometheus).
//  - handled: exactly once, when the call has ended at the transport, so
//    it can trail the client's view of the call by a moment. The code is
//    the status the server sent, or "Canceled" when the call ended before
//    that status went out: the client cancelled or went away, its deadline
//    passed (its cancel and the server's deadline timer race, so no
//    attempt is made to say "DeadlineExceeded"), or the server cancelled
//    the call. Callback-API calls always get that correction, even when
//    the reactor finished afterwards (OnReadDone(false) does not tell a
//    client's half-close from a cancel, so reactors often finish with OK
//    then). Sync-API calls get it only when no status was sent at all:
//    gRPC offers an interceptor no safe way to ask a sync call whether it
//    was cancelled (ServerContext::IsCancelled hangs when called from the
//    interceptor at the end of a sync call), so they count their handler's
//    status, as go-grpc-prometheus counts a Go handler's returned error.
//  - client_requests: once per call, type "unary" or "stream" by the
//    method's kind; client_api_version is the first value of the call's
//    "client-api-version" metadata, or "unknown" without one (etcd's rule).
//    A value that is not a plausible version (more than 32 characters, or
//    characters other than letters, digits and "._+-"), and every value
//    after kGrpcMetricsClientApiVersionsMax distinct ones, counts as
//    "other", which etcd never shows: the values come from clients, and
//    each one would be a series kept for the process' life.
//
// Known methods: those of a service whose generated protobuf code is linked
// into the binary (protobuf's generated descriptor pool), and gRPC's
// built-in grpc.health.v1.Health. A call to any other path (a typo, a
// scanner) is not counted anywhere, as grpc-go answers such calls before
// any interceptor runs; this also bounds the series to a fixed set. A
// known method this server does not serve counts like any other (with
// grpc_code="Unimplemented").
//
// Series of a method appear on its first call, those of all 17 codes of
// handled_total at once (at 0). InitializeGrpcServiceMetrics creates them
// all up front, as go-grpc-prometheus' Register does for etcd.
//
// Costs per call: one allocation (the interceptor) and two lookups in small
// maps under reader locks, then a few relaxed atomic increments per batch of
// operations; no strings are built once a method and a client version have
// been seen.
//
// Async-API services (not used by lockd) would count no sent messages:
// gRPC's async writers do not report POST_SEND_MESSAGE to interceptors.
#ifndef LOCKD_SERVER_GRPC_METRICS_H_
#define LOCKD_SERVER_GRPC_METRICS_H_

#include <grpcpp/support/server_interceptor.h>

#include <memory>

#include "absl/strings/string_view.h"
#include "lockd/util/metrics.h"

namespace lockd {

// How many distinct client-api-version values get a series of their own.
inline constexpr int kGrpcMetricsClientApiVersionsMax = 16;

// The factory to give ServerBuilder::experimental().SetInterceptorCreators
// (with the server's other interceptor factories, if any). Works with
// callback- and sync-API services on the same server. `registry` must
// outlive every server built with the factory.
std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>
NewGrpcMetricsInterceptorFactory(metrics::Registry* registry);

// Creates, at 0, the series of every method of `service_full_name`
// ("etcdserverpb.KV", or a generated `Service::service_full_name()`) and of
// every code of handled_total. Aborts if the name is not a known service
// (see above): callers name services they register, so that is a bug.
void InitializeGrpcServiceMetrics(metrics::Registry* registry,
                                  absl::string_view service_full_name);

}  // namespace lockd

#endif  // LOCKD_SERVER_GRPC_METRICS_H_
