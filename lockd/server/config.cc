#include "lockd/server/config.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <openssl/sha.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <iterator>
#include <map>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "etcdserverpb/rpc.pb.h"
#include "lockdpb/internal.pb.h"

namespace lockd {
namespace {

bool IsIpLiteral(const std::string& host) {
  unsigned char buf[sizeof(struct in6_addr)];
  return inet_pton(AF_INET, host.c_str(), buf) == 1 ||
         inet_pton(AF_INET6, host.c_str(), buf) == 1;
}

std::string JoinUrls(const std::vector<Url>& urls) {
  return absl::StrJoin(urls, ",", [](std::string* out, const Url& u) {
    out->append(u.ToString());
  });
}

void SortUrls(std::vector<Url>& urls) {
  std::sort(urls.begin(), urls.end(), [](const Url& a, const Url& b) {
    return a.ToString() < b.ToString();
  });
}

// etcd binds only to IP literals (and "localhost").
absl::Status CheckBindUrls(const std::vector<Url>& urls) {
  for (const Url& u : urls) {
    if (u.host != "localhost" && !IsIpLiteral(u.host)) {
      return absl::InvalidArgumentError(
          absl::StrCat("expected IP in URL for binding (", u.ToString(), ")"));
    }
  }
  return absl::OkStatus();
}

absl::Status CheckAdvertiseUrls(const std::vector<Url>& urls,
                                const std::string& flag) {
  for (const Url& u : urls) {
    if (u.port == 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          flag, " needs a concrete port, not 0 (", u.ToString(), ")"));
    }
  }
  return absl::OkStatus();
}

// etcd's checks of the TLS flags against the URLs, with its wording where
// it has one.
absl::Status ValidateTls(ServerConfig& c) {
  c.client_https = false;
  for (const Url& u : c.listen_client) {
    if (!u.https()) continue;
    c.client_https = true;
    if (c.client_tls.cert_file.empty() || c.client_tls.key_file.empty()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "TLS key/cert (--cert-file, --key-file) must be provided for "
          "client url ",
          u.ToString(), " with HTTPS scheme"));
    }
  }
  if (c.client_https && c.client_tls.client_cert_auth &&
      c.client_tls.trusted_ca_file.empty()) {
    return absl::InvalidArgumentError(
        "--client-cert-auth needs --trusted-ca-file: client certificates "
        "are verified against it");
  }
  // One Transport dials every peer the same way, so one scheme for all
  // peer URLs.
  std::vector<Url> peer_urls = c.listen_peer;
  peer_urls.insert(peer_urls.end(), c.advertise_peer.begin(),
                   c.advertise_peer.end());
  for (const MemberConfig& m : c.members) {
    peer_urls.insert(peer_urls.end(), m.peer_urls.begin(), m.peer_urls.end());
  }
  c.peer_https = !peer_urls.empty() && peer_urls[0].https();
  for (const Url& u : peer_urls) {
    if (u.https() != c.peer_https) {
      return absl::InvalidArgumentError(absl::StrCat(
          "peer URLs mix http and https (", peer_urls[0].ToString(), ", ",
          u.ToString(),
          "): --listen-peer-urls, --initial-advertise-peer-urls and "
          "--initial-cluster must all use one scheme"));
    }
  }
  if (c.peer_https) {
    if (c.peer_tls.cert_file.empty() || c.peer_tls.key_file.empty()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "cannot listen on TLS for ", c.listen_peer[0].HostPort(),
          ": KeyFile and CertFile are not presented (set --peer-cert-file "
          "and --peer-key-file)"));
    }
    if (c.peer_tls.client_cert_auth && c.peer_tls.trusted_ca_file.empty()) {
      return absl::InvalidArgumentError(
          "--peer-client-cert-auth needs --peer-trusted-ca-file: peer "
          "certificates are verified against it");
    }
  }
  for (const auto& [flags, prefix] :
       {std::pair<const TlsFlags*, const char*>{&c.client_tls, "--"},
        {&c.peer_tls, "--peer-"}}) {
    if (flags->cert_file.empty() != flags->key_file.empty()) {
      return absl::InvalidArgumentError(absl::StrCat(
          prefix, "cert-file and ", prefix, "key-file must be given together"));
    }
  }
  return absl::OkStatus();
}

}  // namespace

std::string Url::ToString() const {
  return absl::StrCat(scheme, "://", HostPort());
}

std::string Url::HostPort() const {
  if (host.find(':') != std::string::npos) {
    return absl::StrCat("[", host, "]:", port);
  }
  return absl::StrCat(host, ":", port);
}

absl::StatusOr<Url> ParseUrl(const std::string& text) {
  auto bad = [&text](absl::string_view why) {
    return absl::InvalidArgumentError(
        absl::StrCat("invalid URL \"", text, "\": ", why));
  };
  absl::string_view rest = text;
  Url url;
  size_t sep = rest.find("://");
  if (sep == absl::string_view::npos) {
    return bad("expected scheme://host:port, e.g. http://127.0.0.1:2379");
  }
  url.scheme = std::string(rest.substr(0, sep));
  rest.remove_prefix(sep + 3);
  if (url.scheme == "unixs" || url.scheme == "unix") {
    return bad(absl::StrCat("scheme ", url.scheme,
                            " is not supported; use http or https"));
  }
  if (url.scheme != "http" && url.scheme != "https") {
    return bad(absl::StrCat("URL scheme must be http or https, not \"",
                            url.scheme, "\""));
  }
  if (absl::ConsumeSuffix(&rest, "/")) {
    // A trailing slash is harmless; etcd accepts it too.
  }
  if (rest.find('/') != absl::string_view::npos ||
      rest.find('?') != absl::string_view::npos) {
    return bad("URL must not have a path or query");
  }
  absl::string_view port_text;
  if (absl::ConsumePrefix(&rest, "[")) {
    size_t close = rest.find(']');
    if (close == absl::string_view::npos) return bad("missing ']'");
    url.host = std::string(rest.substr(0, close));
    rest.remove_prefix(close + 1);
    if (!absl::ConsumePrefix(&rest, ":")) return bad("missing port");
    port_text = rest;
  } else {
    size_t colon = rest.rfind(':');
    if (colon == absl::string_view::npos) {
      return bad("missing port in address");
    }
    url.host = std::string(rest.substr(0, colon));
    port_text = rest.substr(colon + 1);
    if (url.host.find(':') != std::string::npos) {
      return bad("IPv6 hosts go in brackets, e.g. http://[::1]:2379");
    }
  }
  uint32_t port;
  if (!absl::SimpleAtoi(port_text, &port) || port > 65535) {
    return bad("port must be a number from 0 to 65535");
  }
  if (url.host.empty()) return bad("unexpected empty host");
  url.port = static_cast<uint16_t>(port);
  return url;
}

absl::StatusOr<std::vector<Url>> ParseUrls(const std::string& text) {
  std::vector<Url> urls;
  for (absl::string_view part : absl::StrSplit(text, ',', absl::SkipEmpty())) {
    absl::StatusOr<Url> url =
        ParseUrl(std::string(absl::StripAsciiWhitespace(part)));
    if (!url.ok()) return url.status();
    urls.push_back(*std::move(url));
  }
  if (urls.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("no URLs in \"", text, "\""));
  }
  return urls;
}

uint64_t ComputeMemberId(const std::vector<Url>& peer_urls,
                         const std::string& cluster_token) {
  std::vector<std::string> urls;
  for (const Url& u : peer_urls) urls.push_back(u.ToString());
  std::sort(urls.begin(), urls.end());
  std::string input = absl::StrCat(absl::StrJoin(urls, ""), cluster_token);
  unsigned char digest[SHA_DIGEST_LENGTH];
  SHA1(reinterpret_cast<const unsigned char*>(input.data()), input.size(),
       digest);
  uint64_t id = 0;
  for (int i = 0; i < 8; ++i) id = (id << 8) | digest[i];
  return id;
}

uint64_t ComputeClusterId(std::vector<uint64_t> member_ids) {
  std::sort(member_ids.begin(), member_ids.end());
  std::string input;
  for (uint64_t id : member_ids) {
    for (int shift = 56; shift >= 0; shift -= 8) {
      input.push_back(static_cast<char>((id >> shift) & 0xff));
    }
  }
  unsigned char digest[SHA_DIGEST_LENGTH];
  SHA1(reinterpret_cast<const unsigned char*>(input.data()), input.size(),
       digest);
  uint64_t id = 0;
  for (int i = 0; i < 8; ++i) id = (id << 8) | digest[i];
  return id;
}

absl::StatusOr<AutoCompaction> ParseAutoCompaction(
    const std::string& mode, const std::string& retention) {
  if (mode != "periodic" && mode != "revision") {
    return absl::InvalidArgumentError(
        absl::StrCat("unknown auto-compaction-mode \"", mode,
                     "\": use --auto-compaction-mode=periodic or revision"));
  }
  AutoCompaction out;
  int64_t number = 0;
  if (absl::SimpleAtoi(retention, &number) && number >= 0) {
    if (mode == "revision") {
      out.revisions = number;
    } else {
      out.period = absl::Hours(number);
    }
    return out;
  }
  absl::Duration d;
  if (mode == "periodic" && absl::ParseDuration(retention, &d) &&
      d >= absl::ZeroDuration()) {
    if (d > absl::ZeroDuration() && d < absl::Seconds(1)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--auto-compaction-retention=", retention,
          " is too short: keep at least 1s of history (or 0 to turn "
          "auto compaction off)"));
    }
    out.period = d;
    return out;
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "error parsing CompactionRetention: invalid --auto-compaction-retention "
      "\"",
      retention, "\": ",
      mode == "revision"
          ? "in revision mode, give a number of revisions to keep (\"1000\")"
          : "give a duration (\"30m\", \"1h\") or a number of hours "
            "(\"1\")"));
}

absl::Status ValidateConfig(ServerConfig& c, bool listen_client_set,
                            bool advertise_client_set) {
  if (c.name.empty()) {
    return absl::InvalidArgumentError("--name must not be empty");
  }
  absl::StatusOr<AutoCompaction> compaction =
      ParseAutoCompaction(c.auto_compaction_mode, c.auto_compaction_retention);
  if (!compaction.ok()) return compaction.status();
  c.auto_compaction = *compaction;
  if (c.data_dir.empty()) c.data_dir = c.name + ".lockd";
  if (c.initial_cluster_state != "new" &&
      c.initial_cluster_state != "existing") {
    return absl::InvalidArgumentError(absl::StrCat(
        "invalid value \"", c.initial_cluster_state,
        "\" for flag -initial-cluster-state: valid values are \"new\" and "
        "\"existing\""));
  }
  if (listen_client_set && !advertise_client_set) {
    return absl::InvalidArgumentError(
        "--advertise-client-urls is required when --listen-client-urls is set "
        "explicitly");
  }
  if (c.heartbeat_interval_ms == 0) {
    return absl::InvalidArgumentError("--heartbeat-interval must be > 0");
  }
  if (c.election_timeout_ms < 5 * c.heartbeat_interval_ms) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--election-timeout[", c.election_timeout_ms,
        "ms] should be at least as 5 times as --heartbeat-interval[",
        c.heartbeat_interval_ms, "ms]"));
  }
  if (c.election_timeout_ms > 50000) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--election-timeout[", c.election_timeout_ms,
        "ms] is too long, and should be set less than 50 seconds"));
  }

  struct UrlFlag {
    const char* flag;
    const std::string* text;
    std::vector<Url>* out;
  };
  for (const UrlFlag& f : {
           UrlFlag{"--listen-client-urls", &c.listen_client_urls,
                   &c.listen_client},
           UrlFlag{"--advertise-client-urls", &c.advertise_client_urls,
                   &c.advertise_client},
           UrlFlag{"--listen-peer-urls", &c.listen_peer_urls, &c.listen_peer},
           UrlFlag{"--initial-advertise-peer-urls",
                   &c.initial_advertise_peer_urls, &c.advertise_peer},
       }) {
    absl::StatusOr<std::vector<Url>> urls = ParseUrls(*f.text);
    if (!urls.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat(f.flag, ": ", urls.status().message()));
    }
    *f.out = *std::move(urls);
  }
  c.listen_metrics.clear();
  if (!c.listen_metrics_urls.empty()) {
    absl::StatusOr<std::vector<Url>> urls = ParseUrls(c.listen_metrics_urls);
    if (!urls.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("--listen-metrics-urls: ", urls.status().message()));
    }
    c.listen_metrics = *std::move(urls);
    for (const Url& u : c.listen_metrics) {
      // These are served by the member's own HTTP listener, which has no
      // TLS: refuse rather than serve plaintext on an https URL.
      if (u.https()) {
        return absl::InvalidArgumentError(absl::StrCat(
            "--listen-metrics-urls: ", u.ToString(),
            ": https is not supported for metrics URLs yet; use http"));
      }
    }
    if (absl::Status s = CheckBindUrls(c.listen_metrics); !s.ok()) return s;
  }
  if (absl::Status s = CheckBindUrls(c.listen_client); !s.ok()) return s;
  if (absl::Status s = CheckBindUrls(c.listen_peer); !s.ok()) return s;
  if (absl::Status s =
          CheckAdvertiseUrls(c.advertise_client, "--advertise-client-urls");
      !s.ok()) {
    return s;
  }
  if (absl::Status s =
          CheckAdvertiseUrls(c.advertise_peer, "--initial-advertise-peer-urls");
      !s.ok()) {
    return s;
  }

  if (c.initial_cluster.empty()) {
    c.initial_cluster = absl::StrJoin(
        c.advertise_peer, ",", [&c](std::string* out, const Url& u) {
          absl::StrAppend(out, c.name, "=", u.ToString());
        });
  }
  // name=url,name=url; a name may appear with several URLs.
  std::map<std::string, std::vector<Url>> by_name;
  std::map<std::string, std::string> url_owner;
  for (absl::string_view entry :
       absl::StrSplit(c.initial_cluster, ',', absl::SkipEmpty())) {
    std::pair<std::string, std::string> kv = absl::StrSplit(
        absl::StripAsciiWhitespace(entry), absl::MaxSplits('=', 1));
    if (kv.first.empty() || kv.second.empty()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--initial-cluster: expected name=URL, got \"", entry, "\""));
    }
    absl::StatusOr<Url> url = ParseUrl(kv.second);
    if (!url.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("--initial-cluster: ", url.status().message()));
    }
    if (url->port == 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("--initial-cluster: peer URL needs a concrete port (",
                       kv.second, ")"));
    }
    auto [it, fresh] = url_owner.emplace(url->ToString(), kv.first);
    if (!fresh) {
      return absl::InvalidArgumentError(
          absl::StrCat("--initial-cluster: duplicate URL ", url->ToString(),
                       " (members ", it->second, " and ", kv.first, ")"));
    }
    by_name[kv.first].push_back(*std::move(url));
  }
  auto local = by_name.find(c.name);
  if (local == by_name.end()) {
    return absl::InvalidArgumentError(
        absl::StrCat("couldn't find local name \"", c.name,
                     "\" in the initial cluster configuration"));
  }
  std::vector<Url> want = local->second;
  std::vector<Url> have = c.advertise_peer;
  SortUrls(want);
  SortUrls(have);
  if (!(want == have)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--initial-cluster has ", c.name, "=", JoinUrls(want),
        " but missing from --initial-advertise-peer-urls=", JoinUrls(have),
        " (the URLs differ)"));
  }

  c.members.clear();
  std::vector<uint64_t> ids;
  for (auto& [name, urls] : by_name) {
    SortUrls(urls);
    MemberConfig m{name, urls, ComputeMemberId(urls, c.initial_cluster_token)};
    ids.push_back(m.id);
    if (name == c.name) c.member_id = m.id;
    c.members.push_back(std::move(m));
  }
  std::sort(
      c.members.begin(), c.members.end(),
      [](const MemberConfig& a, const MemberConfig& b) { return a.id < b.id; });
  c.cluster_id = ComputeClusterId(ids);
  return ValidateTls(c);
}

absl::Status LoadOrStoreIdentity(const std::string& dir, ServerConfig& config,
                                 bool* restarted) {
  const std::string path = dir + "/identity";
  std::ifstream in(path, std::ios::binary);
  if (in.good()) {
    std::string bytes((std::istreambuf_iterator<char>(in)),
                      std::istreambuf_iterator<char>());
    internal::MemberIdentity id;
    if (!id.ParseFromString(bytes) || id.version() != 1 ||
        id.member_id() == 0) {
      return absl::FailedPreconditionError(absl::StrCat(
          "cannot read ", path,
          ": the data directory is damaged or from another program"));
    }
    if (id.name() != config.name) {
      return absl::FailedPreconditionError(absl::StrCat(
          "data directory ", dir, " belongs to member \"", id.name(),
          "\", not \"", config.name, "\": fix --name or --data-dir"));
    }
    config.member_id = id.member_id();
    config.cluster_id = id.cluster_id();
    config.members.clear();
    for (const etcdserverpb::Member& m : id.members()) {
      MemberConfig mc;
      mc.name = m.name();
      mc.id = m.id();
      for (const std::string& u : m.peerurls()) {
        absl::StatusOr<Url> url = ParseUrl(u);
        if (!url.ok()) return url.status();
        mc.peer_urls.push_back(*url);
      }
      config.members.push_back(std::move(mc));
    }
    *restarted = true;
    return absl::OkStatus();
  }
  internal::MemberIdentity id;
  id.set_version(1);
  id.set_member_id(config.member_id);
  id.set_cluster_id(config.cluster_id);
  id.set_name(config.name);
  for (const MemberConfig& m : config.members) {
    etcdserverpb::Member* out = id.add_members();
    out->set_id(m.id);
    out->set_name(m.name);
    for (const Url& u : m.peer_urls) out->add_peerurls(u.ToString());
  }
  // Write, sync, rename, sync the directory: the file is whole or absent.
  const std::string tmp = path + ".tmp";
  std::string bytes = id.SerializeAsString();
  int fd = open(tmp.c_str(), O_CREAT | O_WRONLY | O_TRUNC, 0600);
  if (fd < 0 ||
      write(fd, bytes.data(), bytes.size()) !=
          static_cast<ssize_t>(bytes.size()) ||
      fsync(fd) != 0) {
    if (fd >= 0) close(fd);
    return absl::InternalError(
        absl::StrCat("write ", tmp, ": ", std::strerror(errno)));
  }
  close(fd);
  if (rename(tmp.c_str(), path.c_str()) != 0) {
    return absl::InternalError(
        absl::StrCat("rename ", tmp, ": ", std::strerror(errno)));
  }
  int dfd = open(dir.c_str(), O_RDONLY | O_DIRECTORY);
  if (dfd >= 0) {
    fsync(dfd);
    close(dfd);
  }
  *restarted = false;
  return absl::OkStatus();
}

absl::Status PrepareDataDir(const std::string& dir) {
  auto fail = [&dir](const std::string& what) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot access data directory: ", what, " (", dir,
                     "): check --data-dir and its permissions"));
  };
  if (mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) {
    return fail(absl::StrCat("mkdir: ", std::strerror(errno)));
  }
  struct stat st;
  if (stat(dir.c_str(), &st) != 0) {
    return fail(absl::StrCat("stat: ", std::strerror(errno)));
  }
  if (!S_ISDIR(st.st_mode)) return fail("not a directory");
  // Root ignores mode bits, so probe by writing.
  std::string probe = dir + "/.touch";
  int fd = open(probe.c_str(), O_CREAT | O_WRONLY | O_TRUNC, 0600);
  if (fd < 0) return fail(absl::StrCat("open: ", std::strerror(errno)));
  close(fd);
  unlink(probe.c_str());
  return absl::OkStatus();
}

}  // namespace lockd
