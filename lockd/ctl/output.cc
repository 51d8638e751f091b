#include "lockd/ctl/output.h"

#include <google/protobuf/descriptor.h>
#include <google/protobuf/message.h>

#include <algorithm>
#include <cmath>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/string_view.h"

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
  // As etcdctl (go-humanize): one decimal below 10, none from 10 up.
  v = std::floor(v * 10 + 0.5) / 10;
  return absl::StrFormat(v < 10 ? "%.1f %s" : "%.0f %s", v, kUnits[u]);
}

namespace {

using google::protobuf::FieldDescriptor;
using google::protobuf::Message;
using google::protobuf::Reflection;

void AppendMessage(const Message& m, std::string* out);

void AppendValue(const Message& m, const Reflection* r,
                 const FieldDescriptor* f, int i, std::string* out) {
  const bool rep = f->is_repeated();
  switch (f->cpp_type()) {
    case FieldDescriptor::CPPTYPE_INT32:
      *out += std::to_string(rep ? r->GetRepeatedInt32(m, f, i)
                                 : r->GetInt32(m, f));
      break;
    case FieldDescriptor::CPPTYPE_INT64:
      *out += std::to_string(rep ? r->GetRepeatedInt64(m, f, i)
                                 : r->GetInt64(m, f));
      break;
    case FieldDescriptor::CPPTYPE_UINT32:
      *out += std::to_string(rep ? r->GetRepeatedUInt32(m, f, i)
                                 : r->GetUInt32(m, f));
      break;
    case FieldDescriptor::CPPTYPE_UINT64:
      *out += std::to_string(rep ? r->GetRepeatedUInt64(m, f, i)
                                 : r->GetUInt64(m, f));
      break;
    case FieldDescriptor::CPPTYPE_DOUBLE:
      *out += absl::StrFormat(
          "%g", rep ? r->GetRepeatedDouble(m, f, i) : r->GetDouble(m, f));
      break;
    case FieldDescriptor::CPPTYPE_FLOAT:
      *out += absl::StrFormat(
          "%g", rep ? r->GetRepeatedFloat(m, f, i) : r->GetFloat(m, f));
      break;
    case FieldDescriptor::CPPTYPE_BOOL:
      *out += (rep ? r->GetRepeatedBool(m, f, i) : r->GetBool(m, f)) ? "true"
                                                                     : "false";
      break;
    case FieldDescriptor::CPPTYPE_ENUM:
      // Numbers, as etcdctl prints enums.
      *out += std::to_string(rep ? r->GetRepeatedEnumValue(m, f, i)
                                 : r->GetEnumValue(m, f));
      break;
    case FieldDescriptor::CPPTYPE_STRING: {
      std::string v = rep ? r->GetRepeatedString(m, f, i) : r->GetString(m, f);
      if (f->type() == FieldDescriptor::TYPE_BYTES) {
        std::string b64;
        absl::Base64Escape(v, &b64);
        AppendJsonString(b64, out);
      } else {
        AppendJsonString(v, out);
      }
      break;
    }
    case FieldDescriptor::CPPTYPE_MESSAGE:
      AppendMessage(rep ? r->GetRepeatedMessage(m, f, i) : r->GetMessage(m, f),
                    out);
      break;
  }
}

void AppendMessage(const Message& m, std::string* out) {
  const Reflection* r = m.GetReflection();
  std::vector<const FieldDescriptor*> fields;
  r->ListFields(m, &fields);  // set fields only, in field-number order
  out->push_back('{');
  bool first = true;
  for (const FieldDescriptor* f : fields) {
    if (!first) out->push_back(',');
    first = false;
    AppendJsonString(f->name(), out);
    out->push_back(':');
    if (!f->is_repeated()) {
      AppendValue(m, r, f, 0, out);
      continue;
    }
    out->push_back('[');
    for (int i = 0; i < r->FieldSize(m, f); ++i) {
      if (i > 0) out->push_back(',');
      AppendValue(m, r, f, i, out);
    }
    out->push_back(']');
  }
  out->push_back('}');
}

}  // namespace

std::string ToJson(const google::protobuf::Message& m) {
  // As etcdctl prints responses: proto field names, 64-bit integers and
  // enums as JSON numbers, bytes in base64, unset fields left out.
  std::string out;
  AppendMessage(m, &out);
  return out;
}

std::string ErrorWithHint(const absl::Status& s) {
  std::string hint;
  const absl::string_view m = s.message();
  // Contained, not equal: a command may wrap etcd's error in its own words
  // ("failed to grant lease (...)", as etcdctl does).
  if (absl::StrContains(m, "etcdserver: leader changed") ||
      absl::StrContains(m, "etcdserver: request timed out")) {
    // The cluster answered, but a write may or may not have taken effect
    // (one that timed out, or a membership change a follower relayed).
    hint =
        "\n(a change may or may not have taken effect: check it (e.g. "
        "'lockctl get', 'lockctl member list'), then run the command again)";
  } else if (absl::IsUnavailable(s)) {
    hint =
        "\n(is the cluster up and reachable? check --endpoints, then "
        "'lockctl endpoint health')";
  } else if (absl::IsDeadlineExceeded(s)) {
    hint =
        "\n(the cluster did not answer in time; a larger "
        "--command-timeout may help, or 'lockctl endpoint status' shows "
        "whether it has a leader)";
  }
  return absl::StrCat(m, hint);
}

}  // namespace lockd::ctl
