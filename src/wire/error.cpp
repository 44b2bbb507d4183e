// Names of the error kinds as they travel on the wire.
#include "tether/error.hpp"

#include <array>

namespace tether {
namespace {
constexpr std::array<std::pair<ErrorKind, std::string_view>, 8> kNames{{
    {ErrorKind::failed, "failed"},
    {ErrorKind::unimplemented, "unimplemented"},
    {ErrorKind::bad_request, "bad_request"},
    {ErrorKind::denied, "denied"},
    {ErrorKind::overloaded, "overloaded"},
    {ErrorKind::disconnected, "disconnected"},
    {ErrorKind::timeout, "timeout"},
    {ErrorKind::cancelled, "cancelled"},
}};
}  // namespace

std::string_view to_string(ErrorKind kind) {
  for (const auto& [k, name] : kNames)
    if (k == kind) return name;
  return "failed";
}

std::optional<ErrorKind> error_kind_from_string(std::string_view text) {
  for (const auto& [k, name] : kNames)
    if (name == text) return k;
  return std::nullopt;
}

bool retry_may_help(ErrorKind kind) {
  return kind == ErrorKind::overloaded || kind == ErrorKind::disconnected || kind == ErrorKind::timeout;
}

}  // namespace tether
