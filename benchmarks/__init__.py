"""The benchmark harness: compares the two concurrency models on the same workload."""
