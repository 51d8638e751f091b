// A member's TLS credentials, read once at start from the files its TLS
// flags name (etcd's --cert-file, --key-file, --trusted-ca-file,
// --client-cert-auth and their --peer-* twins), so every server and channel
// built later uses the same bytes and a bad file stops the member before it
// binds anything.
//
// Client side: an https:// client URL is served by gRPC over TLS with the
// client pair; with --client-cert-auth, clients must present a certificate
// signed by --trusted-ca-file. Peer side: when the peer URLs are https://,
// the peer port serves TLS with the peer pair (with --peer-client-cert-auth
// requiring a certificate signed by --peer-trusted-ca-file), and every
// connection to a peer (raft messages, snapshots, forwarded calls, joining)
// verifies the peer against --peer-trusted-ca-file and presents the peer
// pair as its client certificate.
//
// Thread safety: immutable after Load(); the credentials it returns may be
// shared by any number of servers and channels.
#ifndef LOCKD_SERVER_TLS_H_
#define LOCKD_SERVER_TLS_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "lockd/server/config.h"

namespace grpc {
class ChannelCredentials;
class ServerCredentials;
}  // namespace grpc

namespace lockd {

class MemberTls {
 public:
  // Insecure everywhere: what a member without https URLs uses.
  MemberTls();

  // Reads the files of the sides `config` uses TLS on (config.client_https,
  // config.peer_https; config passed ValidateConfig). Errors:
  // kInvalidArgument naming the flag and the file ("cannot read --key-file
  // /etc/x.key: No such file or directory", "--cert-file ...: not a PEM
  // certificate", "... does not match --cert-file ...").
  static absl::StatusOr<MemberTls> Load(const ServerConfig& config);

  // For https:// client URLs (null when the member has none).
  std::shared_ptr<grpc::ServerCredentials> ClientServerCredentials() const;
  // For the peer port: TLS when the peer URLs are https, else insecure.
  std::shared_ptr<grpc::ServerCredentials> PeerServerCredentials() const;
  // For every connection to a peer's peer URL: TLS when the peer URLs are
  // https, else insecure.
  std::shared_ptr<grpc::ChannelCredentials> PeerChannelCredentials() const;
  // For this member's own connections to another member's https:// client
  // URL (the retired member's proxy): --trusted-ca-file as roots (the
  // system's when unset) and the client pair as the client certificate.
  std::shared_ptr<grpc::ChannelCredentials> ClientChannelCredentials() const;

 private:
  std::shared_ptr<grpc::ServerCredentials> client_server_;
  std::shared_ptr<grpc::ServerCredentials> peer_server_;
  std::shared_ptr<grpc::ChannelCredentials> peer_channel_;
  std::shared_ptr<grpc::ChannelCredentials> client_channel_;
};

}  // namespace lockd

#endif  // LOCKD_SERVER_TLS_H_
