#include "lockd/server/tls.h"

#include <grpcpp/security/credentials.h>
#include <grpcpp/security/server_credentials.h>
#include <openssl/bio.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "lockd/util/pem_file.h"

namespace lockd {
namespace {

// One side's files, read and checked (each PEM parses; the key matches the
// certificate).
struct TlsMaterial {
  std::string cert_pem;
  std::string key_pem;
  std::string ca_pem;  // empty: the system's roots when dialing
  bool client_cert_auth = false;
};

struct BioFree {
  void operator()(BIO* b) const { BIO_free(b); }
};
struct X509Free {
  void operator()(X509* x) const { X509_free(x); }
};
struct PkeyFree {
  void operator()(EVP_PKEY* k) const { EVP_PKEY_free(k); }
};

std::unique_ptr<BIO, BioFree> Bio(const std::string& pem) {
  return std::unique_ptr<BIO, BioFree>(
      BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
}

std::unique_ptr<X509, X509Free> FirstCert(const std::string& pem) {
  auto bio = Bio(pem);
  return std::unique_ptr<X509, X509Free>(
      PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
}

// Reads one side's files and checks that gRPC will be able to use them, so
// a mistake is reported at start, naming the flag, instead of as a failed
// handshake later.
absl::StatusOr<TlsMaterial> LoadSide(const TlsFlags& flags,
                                     const std::string& prefix) {
  TlsMaterial m;
  m.client_cert_auth = flags.client_cert_auth;
  const std::string cert_flag = absl::StrCat(prefix, "cert-file");
  const std::string key_flag = absl::StrCat(prefix, "key-file");
  const std::string ca_flag = absl::StrCat(prefix, "trusted-ca-file");
  absl::StatusOr<std::string> cert = ReadPemFile(cert_flag, flags.cert_file);
  if (!cert.ok()) return cert.status();
  absl::StatusOr<std::string> key = ReadPemFile(key_flag, flags.key_file);
  if (!key.ok()) return key.status();
  m.cert_pem = *std::move(cert);
  m.key_pem = *std::move(key);
  auto x509 = FirstCert(m.cert_pem);
  if (x509 == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(
        cert_flag, " ", flags.cert_file, ": not a PEM certificate"));
  }
  auto bio = Bio(m.key_pem);
  std::unique_ptr<EVP_PKEY, PkeyFree> pkey(
      PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr));
  if (pkey == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat(key_flag, " ", flags.key_file,
                     ": not a PEM private key (or it is encrypted)"));
  }
  if (X509_check_private_key(x509.get(), pkey.get()) != 1) {
    return absl::InvalidArgumentError(
        absl::StrCat(key_flag, " ", flags.key_file, " does not match ",
                     cert_flag, " ", flags.cert_file));
  }
  if (!flags.trusted_ca_file.empty()) {
    absl::StatusOr<std::string> ca =
        ReadPemFile(ca_flag, flags.trusted_ca_file);
    if (!ca.ok()) return ca.status();
    if (FirstCert(*ca) == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat(
          ca_flag, " ", flags.trusted_ca_file, ": not a PEM certificate"));
    }
    m.ca_pem = *std::move(ca);
  }
  return m;
}

std::shared_ptr<grpc::ServerCredentials> ServerCredentials(
    const TlsMaterial& m) {
  grpc::SslServerCredentialsOptions opts(
      m.client_cert_auth
          ? GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY
          : GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE);
  opts.pem_root_certs = m.ca_pem;
  opts.pem_key_cert_pairs.push_back({m.key_pem, m.cert_pem});
  return grpc::SslServerCredentials(opts);
}

std::shared_ptr<grpc::ChannelCredentials> ChannelCredentials(
    const TlsMaterial& m) {
  grpc::SslCredentialsOptions opts;
  opts.pem_root_certs = m.ca_pem;
  opts.pem_private_key = m.key_pem;
  opts.pem_cert_chain = m.cert_pem;
  return grpc::SslCredentials(opts);
}

}  // namespace

MemberTls::MemberTls()
    : peer_server_(grpc::InsecureServerCredentials()),
      peer_channel_(grpc::InsecureChannelCredentials()),
      client_channel_(grpc::SslCredentials({})) {}

absl::StatusOr<MemberTls> MemberTls::Load(const ServerConfig& config) {
  MemberTls tls;
  if (config.client_https) {
    absl::StatusOr<TlsMaterial> m = LoadSide(config.client_tls, "--");
    if (!m.ok()) return m.status();
    tls.client_server_ = ServerCredentials(*m);
    tls.client_channel_ = ChannelCredentials(*m);
  }
  if (config.peer_https) {
    absl::StatusOr<TlsMaterial> m = LoadSide(config.peer_tls, "--peer-");
    if (!m.ok()) return m.status();
    tls.peer_server_ = ServerCredentials(*m);
    tls.peer_channel_ = ChannelCredentials(*m);
  }
  return tls;
}

std::shared_ptr<grpc::ServerCredentials> MemberTls::ClientServerCredentials()
    const {
  return client_server_;
}

std::shared_ptr<grpc::ServerCredentials> MemberTls::PeerServerCredentials()
    const {
  return peer_server_;
}

std::shared_ptr<grpc::ChannelCredentials> MemberTls::PeerChannelCredentials()
    const {
  return peer_channel_;
}

std::shared_ptr<grpc::ChannelCredentials> MemberTls::ClientChannelCredentials()
    const {
  return client_channel_;
}

}  // namespace lockd
