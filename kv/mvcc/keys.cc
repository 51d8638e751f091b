#include "kv/mvcc/keys.h"

namespace lockd::kv {

void AppendBigEndian64(std::string* out, uint64_t v) {
  for (int shift = 56; shift >= 0; shift -= 8) {
    out->push_back(static_cast<char>((v >> shift) & 0xff));
  }
}

uint64_t ReadBigEndian64(absl::string_view in) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v = (v << 8) | static_cast<uint8_t>(in[i]);
  return v;
}

std::string EncodeRevision(Revision rev) {
  std::string out;
  out.reserve(16);
  AppendBigEndian64(&out, static_cast<uint64_t>(rev.main));
  AppendBigEndian64(&out, static_cast<uint64_t>(rev.sub));
  return out;
}

Revision DecodeRevision(absl::string_view in) {
  return Revision{static_cast<int64_t>(ReadBigEndian64(in.substr(0, 8))),
                  static_cast<int64_t>(ReadBigEndian64(in.substr(8, 8)))};
}

void AppendEscapedKey(std::string* out, absl::string_view user_key) {
  for (char c : user_key) {
    out->push_back(c);
    if (c == '\0') out->push_back('\xff');
  }
  out->push_back('\0');
  out->push_back('\x01');
}

bool ConsumeEscapedKey(absl::string_view* in, std::string* user_key) {
  user_key->clear();
  size_t i = 0;
  while (i < in->size()) {
    char c = (*in)[i];
    if (c != '\0') {
      user_key->push_back(c);
      ++i;
      continue;
    }
    if (i + 1 >= in->size()) return false;
    char next = (*in)[i + 1];
    if (next == '\xff') {
      user_key->push_back('\0');
      i += 2;
    } else if (next == '\x01') {
      in->remove_prefix(i + 2);
      return true;
    } else {
      return false;
    }
  }
  return false;
}

std::string EncodeIndexKey(absl::string_view user_key, Revision rev) {
  std::string out;
  out.reserve(user_key.size() + 18);
  AppendEscapedKey(&out, user_key);
  AppendBigEndian64(&out, ~static_cast<uint64_t>(rev.main));
  AppendBigEndian64(&out, ~static_cast<uint64_t>(rev.sub));
  return out;
}

std::string IndexKeyLowerBound(absl::string_view user_key) {
  std::string out;
  AppendEscapedKey(&out, user_key);
  return out;
}

std::string IndexKeyUpperBound(absl::string_view user_key) {
  std::string out;
  AppendEscapedKey(&out, user_key);
  out.append(16, '\xff');
  out.push_back('\xff');
  return out;
}

bool DecodeIndexKey(absl::string_view in, std::string* user_key,
                    Revision* rev) {
  if (!ConsumeEscapedKey(&in, user_key) || in.size() != 16) return false;
  rev->main = static_cast<int64_t>(~ReadBigEndian64(in.substr(0, 8)));
  rev->sub = static_cast<int64_t>(~ReadBigEndian64(in.substr(8, 8)));
  return true;
}

}  // namespace lockd::kv
