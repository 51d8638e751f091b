#include "lockd/util/json.h"

#include "absl/strings/ascii.h"
#include "absl/strings/str_format.h"

namespace lockd {

void AppendJsonString(absl::string_view s, std::string* out) {
  out->push_back('"');
  for (unsigned char c : s) {
    switch (c) {
      case '"':
        *out += "\\\"";
        break;
      case '\\':
        *out += "\\\\";
        break;
      case '\n':
        *out += "\\n";
        break;
      case '\r':
        *out += "\\r";
        break;
      case '\t':
        *out += "\\t";
        break;
      default:
        if (c < 0x20) {
          *out += absl::StrFormat("\\u%04x", c);
        } else {
          out->push_back(static_cast<char>(c));
        }
    }
  }
  out->push_back('"');
}

std::string JsonString(absl::string_view s) {
  std::string out;
  AppendJsonString(s, &out);
  return out;
}

bool SplitJsonObjects(absl::string_view body,
                      std::vector<absl::string_view>* out) {
  size_t i = 0;
  while (true) {
    while (i < body.size() && absl::ascii_isspace(body[i])) ++i;
    if (i == body.size()) return true;
    if (body[i] != '{') return false;
    const size_t start = i;
    int depth = 0;
    bool in_string = false;
    for (; i < body.size(); ++i) {
      const char c = body[i];
      if (in_string) {
        if (c == '\\') {
          ++i;
        } else if (c == '"') {
          in_string = false;
        }
        continue;
      }
      if (c == '"') {
        in_string = true;
      } else if (c == '{' || c == '[') {
        ++depth;
      } else if (c == '}' || c == ']') {
        if (--depth == 0) break;
      }
    }
    if (i >= body.size()) return false;
    out->push_back(body.substr(start, i + 1 - start));
    ++i;
  }
}

}  // namespace lockd
