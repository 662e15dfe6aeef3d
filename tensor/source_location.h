// The place a function was called from, for messages: std::source_location's
// subset b3 uses (file, line, function), built on the compiler builtins GCC
// and clang share, because clang 14 (the fuzzing and sanitizer build) has no
// std::source_location. As a default argument, current() names the caller:
//
//   void synchronize(const Stream&, SourceLocation caller = SourceLocation::current());
#pragma once

namespace b3 {

class SourceLocation {
 public:
  static constexpr SourceLocation current(const char* file = __builtin_FILE(),
                                          int line = __builtin_LINE(),
                                          const char* function = __builtin_FUNCTION()) {
    return SourceLocation(file, line, function);
  }
  constexpr const char* file_name() const { return file_; }
  constexpr int line() const { return line_; }
  constexpr const char* function_name() const { return function_; }

 private:
  constexpr SourceLocation(const char* file, int line, const char* function)
      : file_(file), line_(line), function_(function) {}
  const char* file_;
  int line_;
  const char* function_;
};

}  // namespace b3
