// Range checks for numeric options that say what is wrong in plain words
// ("--lr: must be positive, got -3") where CLI11's own validators print their
// bounds as raw doubles ("Value -3 not in range 0.000000 to 17976931348623157
// ..."). Used in every command in place of positive(),
// non_negative() and CLI::Range.
#pragma once

#include <CLI/CLI.hpp>
#include <cstdint>
#include <string>

namespace b3::cli {

// The number itself: 4096, 0.0005, 1e-06 (no padding zeros, no 17-digit bounds).
std::string plain_number(double value);

// The problem with `text` as a number in [minimum, maximum], or "" when there
// is none: "'x' is not a number", "must be positive, got 0", "must be 0 or more,
// got -1", "must be between 8 and 4096, got 5000".
std::string positive_problem(const std::string& text);
std::string non_negative_problem(const std::string& text);
std::string between_problem(const std::string& text, double minimum, double maximum);

// The same as CLI11 validators.
CLI::Validator positive();
CLI::Validator non_negative();
CLI::Validator between(double minimum, double maximum);
// An integer of at least `minimum` ("must be at least 1, got 0"; the rule of
// report::integer_at_least_problem).
CLI::Validator integer_at_least(int64_t minimum);

}  // namespace b3::cli
