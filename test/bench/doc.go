// Package bench holds keel's benchmarks (run by `make bench`). They report
// figures and assert nothing.
//
// # Side by side with containerd
//
// The BenchmarkFigure* benchmarks measure each figure of keel's table on
// keel and on Debian's containerd 1.6 in the same run, both sides alike:
// the API figures through each side's Go client (keel's client library;
// containerd's content and snapshot proxies over its gRPC API), the CLI
// figures through `keel` and `ctr`. comparePairs runs KEEL_BENCH_ROUNDS
// (default 5) pairs of rounds, keel's and containerd's interleaved, the
// side going first alternating from pair to pair, and records for each
// figure both medians, both min–max and the median of the per-pair ratios
// keel/containerd, beside a reference where the figure has one (curl for
// a fetch, raw `runc run` for `run --rm`, GNU `tar -xzf` for an unpack).
// TestMain prints the rows as a markdown table at the end, and writes it
// to KEEL_BENCH_OUT when set.
//
//   - BenchmarkFigureIngest: 512 MiB content ingest through the API, MB/s;
//   - BenchmarkFigurePull: fetch only (registry → store), unpack only and
//     cold pull+unpack of a 3-layer image of this machine's files, ms;
//   - BenchmarkFigureIdleMemory: keeld + default plugins vs containerd
//     alone, PSS, after keel's idle_stop (30 s) without a call on both
//     sides: keeld has then stopped its unused plugins;
//   - BenchmarkFigureLoadedMemory: the same after a pull with 20
//     containers running, with and without the shims, and PSS per shim;
//   - BenchmarkFigureSnapshot: Prepare+Commit+Remove through the API,
//     overlay and native, ms per cycle;
//   - BenchmarkFigureRun: `run --rm` of busybox `true`, and 20 at once;
//   - BenchmarkFigureCRIRun: a CNI pod with a busybox container made and
//     started through the CRI, keel-cri vs containerd's CRI plugin: `crictl
//     runp` + `create` + `start`, and the same three calls through the
//     CRI's Go client, ms (crictl from test/critools, as critest's).
//
// Each benchmark's doc says exactly what is timed or summed on each side.
// startDaemon* start keeld (daemon), startContainerd containerd (ctrd) on
// scratch roots; their stop removes what a failed benchmark left: tasks,
// shims, mounts, directories. Images come from a loopback docker-registry
// (sdk/fixture/registry) with images built by the tests: no internet.
//
// # keel's own diagnostics
//
// The other benchmarks (`make bench KEEL_BENCH=.`) measure keel alone
// against the raw ceilings of the same machine: sha256 in process, a file
// write and fsync on the same disk, the CPU seconds of each process of an
// ingest or a fetch, per-call percentiles of snapshot calls, deep chains,
// btrfs, and what the first call to a plugin stopped for idleness costs
// (BenchmarkPluginStartOnDemand).
//
// KEEL_BIN names the directory holding keeld, keel and the plugin binaries
// (`make build` puts them in bin/). KEEL_BENCH_DIR, when set, is where the
// daemons' roots go instead of the system temp directory; it should be on
// a real disk, not tmpfs, for the disk figures to mean anything.
// KEEL_BENCH_CACHE is where the pull image is kept between runs.
package bench
