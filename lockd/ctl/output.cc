#include "lockd/ctl/output.h"

#include <google/protobuf/util/json_util.h>

#include <algorithm>

#include "absl/strings/str_format.h"

namespace lockd::ctl {

std::string RenderTable(const std::vector<std::string>& header,
                        const std::vector<std::vector<std::string>>& rows) {
  std::vector<size_t> width(header.size());
  for (size_t c = 0; c < header.size(); ++c) {
    width[c] = header[c].size();
    for (const auto& row : rows) width[c] = std::max(width[c], row[c].size());
  }
  std::string rule = "+";
  for (size_t w : width) rule += std::string(w + 2, '-') + "+";
  rule += "\n";
  auto line = [&](const std::vector<std::string>& cells, bool center) {
    std::string out = "|";
    for (size_t c = 0; c < cells.size(); ++c) {
      size_t pad = width[c] - cells[c].size();
      size_t left = center ? pad / 2 : pad;  // values right-aligned
      out += " " + std::string(left, ' ') + cells[c] +
             std::string(pad - left, ' ') + " |";
    }
    return out + "\n";
  };
  std::string out = rule + line(header, true) + rule;
  for (const auto& row : rows) out += line(row, false);
  return out + rule;
}

std::string HumanBytes(int64_t bytes) {
  static const char* kUnits[] = {"B", "kB", "MB", "GB", "TB"};
  double v = static_cast<double>(bytes);
  int u = 0;
  while (v >= 1000 && u < 4) {
    v /= 1000;
    ++u;
  }
  if (u == 0) return absl::StrFormat("%d B", bytes);
  return absl::StrFormat("%.1f %s", v, kUnits[u]);
}

std::string ToJson(const google::protobuf::Message& m) {
  std::string out;
  google::protobuf::util::JsonPrintOptions opts;
  opts.preserve_proto_field_names = true;
  (void)google::protobuf::util::MessageToJsonString(m, &out, opts);
  return out;
}

}  // namespace lockd::ctl
