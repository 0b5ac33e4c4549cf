"""`augserve bench NAME`: benchmarks that measure augserve beside a named baseline.

Each benchmark lives in its own module of this package and exposes
`add_arguments(parser)` and `run(args) -> BenchReport`. The CLI adds `--json FILE`
to every one of them and writes the report there.
"""

BENCHMARKS: dict[str, str] = {
    "infer": "augserve.server.bench.infer",
    "augment": "augserve.server.bench.augment",
    "kernels": "augserve.server.bench.kernels",
    "stream": "augserve.server.bench.stream",
}
