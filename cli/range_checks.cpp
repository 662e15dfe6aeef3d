// Plain-worded range checks for numeric options (see range_checks.h).
#include "cli/range_checks.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <optional>

#include "experiment/report.h"

namespace b3::cli {

namespace {

// `text` as a finite number (leading and trailing spaces allowed), or nothing.
std::optional<double> number_of(const std::string& text) {
  const char* begin = text.c_str();
  char* end = nullptr;
  const double value = std::strtod(begin, &end);
  if (end == begin) return std::nullopt;
  while (*end == ' ') ++end;
  if (*end != '\0' || !std::isfinite(value)) return std::nullopt;
  return value;
}

std::string not_a_number(const std::string& text) { return "'" + text + "' is not a number"; }

}  // namespace

std::string plain_number(double value) {
  char text[32];
  std::snprintf(text, sizeof text, "%.15g", value);
  return text;
}

std::string positive_problem(const std::string& text) {
  const std::optional<double> value = number_of(text);
  if (!value) return not_a_number(text);
  return *value > 0 ? "" : "must be positive, got " + plain_number(*value);
}

std::string non_negative_problem(const std::string& text) {
  const std::optional<double> value = number_of(text);
  if (!value) return not_a_number(text);
  return *value >= 0 ? "" : "must be 0 or more, got " + plain_number(*value);
}

std::string between_problem(const std::string& text, double minimum, double maximum) {
  const std::optional<double> value = number_of(text);
  if (!value) return not_a_number(text);
  if (*value >= minimum && *value <= maximum) return "";
  return "must be between " + plain_number(minimum) + " and " + plain_number(maximum) + ", got " +
         plain_number(*value);
}

CLI::Validator positive() {
  return CLI::Validator([](std::string& text) { return positive_problem(text); }, "POSITIVE");
}

CLI::Validator non_negative() {
  return CLI::Validator([](std::string& text) { return non_negative_problem(text); },
                        "NONNEGATIVE");
}

CLI::Validator between(double minimum, double maximum) {
  return CLI::Validator(
      [minimum, maximum](std::string& text) { return between_problem(text, minimum, maximum); },
      "[" + plain_number(minimum) + " - " + plain_number(maximum) + "]");
}

CLI::Validator integer_at_least(int64_t minimum) {
  return CLI::Validator(
      [minimum](std::string& text) { return report::integer_at_least_problem(text, minimum); },
      "INT>=" + std::to_string(minimum), "at least " + std::to_string(minimum));
}

}  // namespace b3::cli
