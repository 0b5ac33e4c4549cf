"""`augserve bench NAME`: benchmarks that measure augserve beside a named baseline.

Each benchmark lives in its own module of this package and exposes
`add_arguments(parser)` and `run(args) -> BenchReport`. The CLI adds `--json FILE`
to every one of them and writes the report there. Every process a benchmark starts
(servers, Ray, load generators, workers) goes through `lifecycle`, which stops its
whole process group whatever happens.

Studies behind single figures, with no report, run as modules:
`python -m augserve.server.bench.host_slowdowns` (how often the host slows the model
itself) and `python -m augserve.server.bench.replica_nice` (replicas' niceness, 0 vs 10).
"""

BENCHMARKS: dict[str, str] = {
    "infer": "augserve.server.bench.infer",
    "augment": "augserve.server.bench.augment",
    "kernels": "augserve.server.bench.kernels",
    "stream": "augserve.server.bench.stream",
    "preprocess": "augserve.server.bench.preprocess",
    "chaos": "augserve.server.bench.chaos",
}
