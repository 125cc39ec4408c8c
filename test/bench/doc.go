// Package bench holds keel's benchmarks across the plugin boundary (run by
// `make bench`): a real keeld with the native snapshotter and the local
// content store, measured through the Go client library, beside the raw
// ceilings of the same machine (sha256 in process, a file write and fsync
// on the same disk). They report figures and assert nothing.
//
// KEEL_BIN names the directory holding keeld and the plugin binaries
// (`make build` puts them in bin/). KEEL_BENCH_DIR, when set, is where the
// daemons' roots go instead of the system temp directory; it should be on
// a real disk, not tmpfs, for the disk figures to mean anything.
package bench
