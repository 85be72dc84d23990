# `make bazel-test`: passes Bazel's output through, then closes with "N passed, N failed",
# counting the test targets of Bazel's summary (--test_summary=short, one line per target:
# "//tests:test_x   PASSED in 12.3s", "(cached) PASSED", "FAILED in ...", "TIMEOUT in ...",
# "NO STATUS", "FLAKY, failed in ..."), and exits with Bazel's status, which the Makefile
# appends as "bazel exit status N".
BEGIN { status = 1 }  # unless Bazel's status line comes
/^bazel exit status [0-9]+$/ { status = $4; next }
{ print; fflush() }
/^\/\/[^ ]+ +(\(cached\) )?PASSED/ { passed++; next }
/^\/\/[^ ]+ +(\(cached\) )?(FAILED|TIMEOUT|NO STATUS|INCOMPLETE|FLAKY)/ { failed++ }
END {
    printf "%d passed, %d failed\n", passed, failed
    exit status
}
