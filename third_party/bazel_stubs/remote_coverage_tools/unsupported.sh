#!/bin/sh
echo "bazel coverage is not supported offline: remote_coverage_tools is a stand-in (third_party/bazel_stubs)" >&2
exit 1
