// Order-preserving encodings for the store's RocksDB keys. See store.cc for
// the on-disk layout that uses them.
#ifndef LOCKD_KV_MVCC_KEYS_H_
#define LOCKD_KV_MVCC_KEYS_H_

#include <cstdint>
#include <string>

#include "absl/strings/string_view.h"

namespace lockd::kv {

// A point in the store's history: `main` counts write transactions, `sub`
// the writes within one. Ordered by (main, sub).
struct Revision {
  int64_t main = 0;
  int64_t sub = 0;
  bool operator<(const Revision& o) const {
    return main != o.main ? main < o.main : sub < o.sub;
  }
  bool operator==(const Revision& o) const {
    return main == o.main && sub == o.sub;
  }
  bool operator<=(const Revision& o) const { return !(o < *this); }
};

// Appends `v` as 8 big-endian bytes, so byte order is numeric order for
// non-negative values.
void AppendBigEndian64(std::string* out, uint64_t v);
uint64_t ReadBigEndian64(absl::string_view in);

// 16 bytes: main then sub, big-endian. Sorts by revision.
std::string EncodeRevision(Revision rev);
Revision DecodeRevision(absl::string_view in);

// A user key escaped so that an arbitrary suffix can follow it without
// changing the order of user keys: 0x00 becomes 0x00 0xFF, and 0x00 0x01
// terminates. For user keys a < b, Escape(a)+x < Escape(b)+y for any x, y.
void AppendEscapedKey(std::string* out, absl::string_view user_key);
// Inverse of AppendEscapedKey; advances `in` past the terminator. Returns
// false on malformed input.
bool ConsumeEscapedKey(absl::string_view* in, std::string* user_key);

// The index key of (user_key, rev): escaped key, then the revision inverted
// so that, for one user key, newer revisions sort first.
std::string EncodeIndexKey(absl::string_view user_key, Revision rev);
// The smallest index key of `user_key` (its newest possible revision).
std::string IndexKeyLowerBound(absl::string_view user_key);
// The first index key after every key of `user_key`.
std::string IndexKeyUpperBound(absl::string_view user_key);
bool DecodeIndexKey(absl::string_view in, std::string* user_key, Revision* rev);

}  // namespace lockd::kv

#endif  // LOCKD_KV_MVCC_KEYS_H_
