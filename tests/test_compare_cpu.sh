#!/usr/bin/env bash
# tests/test_compare_cpu.sh: experiment/compare_cpu.sh's PyTorch configurations.
#
#   a. pytorch_preload (experiment/pytorch_allocator.sh): glibc preloads
#      nothing, tcmalloc names a library that exists, an unknown name is
#      refused with its name in the message;
#   b. compare_cpu.sh with an unknown TORCH_ALLOCATORS entry stops before
#      running anything, status 1, naming it;
#   c. a one-round comparison at 32x32 batch 8 with TORCH_ALLOCATORS="tcmalloc
#      glibc": PyTorch ran under each (the allocator is read back from the
#      process's own maps, not from the setting), one row each, the BLAS
#      printed, the ratio taken against the faster of the two.
#
# Usage: tests/test_compare_cpu.sh BUILD_DIR. Prints one line per failed
# assertion; exit status 0 when all hold, 1 if one fails, 77 (skipped) when
# /usr/bin/python3 has no torch or TCMalloc is not installed.
set -u

HERE="${BASH_SOURCE[0]%/*}"
[ "$HERE" != "${BASH_SOURCE[0]}" ] || HERE=.
ROOT="$(cd "$HERE/.." && pwd)"
BUILD="${1:?usage: tests/test_compare_cpu.sh BUILD_DIR}"
failures=0
fail() {
  echo "FAILED: $*"
  failures=$((failures + 1))
}

# shellcheck source=experiment/pytorch_allocator.sh
source "$ROOT/experiment/pytorch_allocator.sh"

# a.
out="$(pytorch_preload glibc)" && [ -z "$out" ] || fail "a: glibc should preload nothing, got '$out'"
if out="$(pytorch_preload bogus 2>&1)"; then
  fail "a: the allocator 'bogus' was accepted"
else
  [[ "$out" == *"'bogus' is not one of tcmalloc, jemalloc, glibc"* ]] ||
    fail "a: the refusal should name 'bogus' and the choices: $out"
fi
tcmalloc="$(pytorch_preload tcmalloc 2>/dev/null)" || {
  echo "skipped: TCMalloc is not installed (scripts/setup.sh installs libtcmalloc-minimal4)"
  exit 77
}
[ -e "$tcmalloc" ] || fail "a: tcmalloc names '$tcmalloc', which does not exist"

# b.
out="$(TORCH_ALLOCATORS="tcmalloc bogus" "$ROOT/experiment/compare_cpu.sh" "$BUILD" 2>&1)"
status=$?
[ "$status" -eq 1 ] || fail "b: status $status for TORCH_ALLOCATORS=bogus, expected 1"
[[ "$out" == *"'bogus' is not one of"* ]] || fail "b: the refusal does not name 'bogus': $out"
[[ "$out" != *RESULT* ]] || fail "b: something ran before the refusal"

# c.
/usr/bin/python3 -c "import torch, torchvision" 2>/dev/null || {
  echo "skipped: /usr/bin/python3 cannot import torch and torchvision"
  exit 77
}
out="$(SIZES="32:8" INFER_SIZES="" ROUNDS=1 THREADS=1 TORCH_FORMATS=nhwc \
  TORCH_ALLOCATORS="tcmalloc glibc" WARMUP=1 STEPS=1 \
  "$ROOT/experiment/compare_cpu.sh" "$BUILD" 2>&1)"
status=$?
[ "$status" -eq 0 ] || fail "c: compare_cpu.sh exited $status"
grep -q "allocator=tcmalloc" <<<"$out" || fail "c: no PyTorch run reported allocator=tcmalloc"
grep -q "allocator=glibc" <<<"$out" || fail "c: no PyTorch run reported allocator=glibc"
grep -Eq '^train +32x32 +8 +pytorch +nhwc/tcmalloc +1 ' <<<"$out" || fail "c: no nhwc/tcmalloc row"
grep -Eq '^train +32x32 +8 +pytorch +nhwc/glibc +1 ' <<<"$out" || fail "c: no nhwc/glibc row"
grep -Eq '^train +32x32 +8 +b3 +nhwc +1 ' <<<"$out" || fail "c: no b3 row"
grep -Eq "^PyTorch's BLAS: [a-z]" <<<"$out" || fail "c: the BLAS is not printed"
# The ratio is against the faster PyTorch configuration of the two rows.
/usr/bin/python3 - "$out" <<'PY' || fail "c: the ratio is not b3 over the faster PyTorch row"
import re, sys
text = sys.argv[1]
rows = {m.group(1): float(m.group(2)) for m in
        re.finditer(r"^train +32x32 +8 +\S+ +(\S+) +1 +([0-9.]+)", text, re.M)}
best = max(("nhwc/tcmalloc", "nhwc/glibc"), key=lambda k: rows[k])
ratio = re.search(r"^train 32x32 batch 8: b3 nhwc [0-9.]+ img/s / PyTorch (\S+) [0-9.]+ img/s = ([0-9.]+)x",
                  text, re.M)
assert ratio, "no ratio line"
assert ratio.group(1) == best, (ratio.group(1), best)
assert abs(float(ratio.group(2)) - rows["nhwc"] / rows[best]) < 0.01, ratio.group(2)
PY

if [ "$failures" -ne 0 ]; then
  echo "test_compare_cpu: $failures failed"
  echo "$out" | tail -20
  exit 1
fi
echo "test_compare_cpu: all passed"
