"""What applications and plugin authors import in their tests: conformance suites and helpers."""
