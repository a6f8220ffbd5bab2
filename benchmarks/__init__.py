"""Speed comparisons of the pipeline against peers (not tests); see benchmarks/README.md."""
