// Package metadata is keeld's own data: one bbolt file (<root>/meta.db)
// holding the namespaces and, per namespace, the views of content and
// snapshots that keeld keeps over its global plugin backends, plus the
// (reserved) images, containers and leases.
//
// # Schema
//
//	meta.db
//	├── meta/                          database bookkeeping
//	│   └── version = <uvarint>        schema version (see migrations.go);
//	│                                  the bucket's sequence numbers snapshot ids
//	└── v1/
//	    └── <namespace>/               exists while the namespace does
//	        ├── labels/<key> = <value>
//	        ├── images/                (reserved)
//	        ├── containers/<id>/       image, snapshotter, snapshotkey, spec,
//	        │                          runtime, runtimeoptions, createdat,
//	        │                          updatedat, labels/ (containers.go)
//	        ├── leases/                (reserved)
//	        ├── content/
//	        │   ├── blob/<digest>/
//	        │   │   ├── size = <varint>
//	        │   │   ├── createdat, updatedat = <time binary>
//	        │   │   └── labels/<key> = <value>
//	        │   └── ingests/<ref>/
//	        │       ├── ref = <backend ref>       ("<namespace>/<ref>")
//	        │       ├── expected = <digest>       when a writer named one
//	        │       └── size = <varint>           when a writer named one
//	        └── snapshots/<snapshotter>/<key>/
//	            ├── id = <backend key>            ("<seq>-<random>")
//	            ├── kind = view|active|committed
//	            ├── parent = <parent's key in this namespace>
//	            ├── createdat, updatedat = <time binary>
//	            ├── pending = 1                   while being created (invisible)
//	            ├── commitfrom = <active key>     of a pending commit
//	            ├── labels/<key> = <value>
//	            └── children/<key> = ""
//
// # Rules
//
// One bbolt transaction per public call, and never a plugin RPC inside a
// write transaction: keeld records what it is about to create (a pending
// record, invisible to readers), commits, calls the plugin, then confirms or
// drops the record. A crash between the two leaves a pending record that the
// next use of the store resolves against the backend, so what is left is at
// most a backend object no metadata refers to, for cleanup to collect, never
// a visible name pointing at nothing. Removal goes the other way: metadata
// first, then the plugin.
package metadata
