"""The parts of benchmarks/paper_findings.py: run directories and their reuse (runs), the cost
model that sizes a part before it runs (costs), the parts themselves (parts), seed-paired
differences and the reproduced / not reproduced rule (stats), the merged report (report) and the
figures (plots)."""
