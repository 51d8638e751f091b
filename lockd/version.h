// Versions lockd reports about itself.
#ifndef LOCKD_VERSION_H_
#define LOCKD_VERSION_H_

namespace lockd {

// lockd's own release.
inline constexpr char kLockdVersion[] = "0.1.0";
// The etcd v3 API level lockd serves. Maintenance.Status reports it as the
// server version, because etcd clients read that field to decide which API
// features they may use.
inline constexpr char kEtcdApiVersion[] = "3.5.0";
inline constexpr char kEtcdApiMajorMinor[] = "3.5";

}  // namespace lockd

#endif  // LOCKD_VERSION_H_
