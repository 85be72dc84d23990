# `make bazel-test`: "N passed, N failed", counting the test targets of Bazel's summary
# (--test_summary=short, one line per target: "//tests:test_x   PASSED in 12.3s",
# "(cached) PASSED", "FAILED in ...", "TIMEOUT in ...", "NO STATUS", "FLAKY, failed in ...").
/^\/\/[^ ]+ +(\(cached\) )?PASSED/ { passed++; next }
/^\/\/[^ ]+ +(\(cached\) )?(FAILED|TIMEOUT|NO STATUS|INCOMPLETE|FLAKY)/ { failed++ }
END { printf "%d passed, %d failed\n", passed, failed }
