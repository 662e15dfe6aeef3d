// printable_text (tensor/printable_text.h): printable UTF-8 kept byte for
// byte, everything else escaped as \xNN, so the readers' messages never carry
// raw binary from a file.
#include <doctest/doctest.h>

#include <string>

#include "tensor/printable_text.h"

using namespace b3;

TEST_CASE("printable_text: printable ASCII and UTF-8 kept, newline and tab kept") {
  CHECK(printable_text("features.0.0.weight") == "features.0.0.weight");
  CHECK(printable_text("line one\n\tline two") == "line one\n\tline two");
  const std::string utf8 = "Gewicht \xc3\xa4, \xe2\x82\xac, \xf0\x9f\x98\x80";  // ä, €, 😀
  CHECK(printable_text(utf8) == utf8);
  CHECK(printable_text("") == "");
}

TEST_CASE("printable_text: control bytes, DEL, C1 controls and invalid UTF-8 escaped") {
  CHECK(printable_text(std::string("a\0b", 3)) == "a\\x00b");
  CHECK(printable_text("\x1b[31mred") == "\\x1b[31mred");  // a terminal escape
  CHECK(printable_text("\r\x7f") == "\\x0d\\x7f");
  CHECK(printable_text("\xc2\x85") == "\\xc2\\x85");                    // U+0085, a C1 control
  CHECK(printable_text("IEM\x88\x96") == "IEM\\x88\\x96");              // lone continuation bytes
  CHECK(printable_text("\xc0\xaf") == "\\xc0\\xaf");                    // overlong '/'
  CHECK(printable_text("\xed\xa0\x80") == "\\xed\\xa0\\x80");           // a UTF-16 surrogate
  CHECK(printable_text("\xf4\x90\x80\x80") == "\\xf4\\x90\\x80\\x80");  // beyond U+10FFFF
  CHECK(printable_text("ok\xe2\x82") == "ok\\xe2\\x82");                // cut short
}
