// Package gc is keeld's garbage collection: what is a root, how references
// are read from labels, the mark phase, and the scheduler that decides when
// a collection runs. The sweep itself lives with the data it removes
// (core/metadata's DB.GarbageCollect): metadata first, in one bbolt
// transaction, then the plugins' deletes, outside any transaction.
//
// # Roots
//
// In every namespace: each image record, each container record, each lease
// that has not expired, and any content blob or snapshot labelled
// containerd.io/gc.root. Snapshots being created (a pending record) are
// kept too.
//
// # References
//
// keel uses containerd's label names, so that tools and people that know
// containerd find what they expect:
//
//	containerd.io/gc.ref.content            = <digest>
//	containerd.io/gc.ref.content.<anything> = <digest>   (e.g. .m.0, .l.1, .config)
//	containerd.io/gc.ref.snapshot.<snapshotter>          = <key>
//	containerd.io/gc.ref.snapshot.<snapshotter>/<anything> = <key>
//	containerd.io/gc.root                   = <anything> (a root)
//
// References are followed from the labels of images, containers, content
// and snapshots, always within the namespace of the labelled object. An
// image also refers to its target's digest; a lease to the resources
// attached to it; a container to its snapshot; a snapshot to its parent (so
// a parent is kept while a child is).
//
// Lease expiry is keel's own label, keel.io/gc.expire, an RFC 3339 time
// (containerd's is containerd.io/gc.expire): an expired lease is no root,
// and the collection deletes it.
//
// # What is removed
//
// Content and snapshot records no root reaches, and expired leases.
// Partial ingests (uploads never committed, e.g. left by a failed pull)
// that no writer holds open and no live lease lists, once untouched for
// the configured ingest_max_age, or at once when asked (keel gc
// --ingests): see CollectIngest. A blob
// leaves the content plugin only when no namespace refers to it any more;
// snapshots leave their snapshotter children first. Backend objects that no
// metadata refers to (a crash between the two phases, or older leftovers)
// are orphans: a collection lists and removes them.
//
// # Idle plugins
//
// A background collection (the scheduler's own: its tick, and those an
// image's or lease's removal triggers; Options.Background) must not start
// a plugin stopped for idleness just to find nothing in it, as containerd
// calls a backend only for what its mark and sweep removed. So it calls a
// plugin when the metadata sweep removed something of it (a blob, a
// snapshot), and otherwise only if the plugin runs anyway, without keeping
// it running: the backend-wide scans (orphans, ingests older than
// ingest_max_age) then wait for a collection that finds the plugin
// running, or for an on-demand one (keel gc), which calls every plugin.
package gc

import (
	"fmt"
	"strings"
	"time"

	digest "github.com/opencontainers/go-digest"
)

// Label names, containerd's for references and roots, keel's for expiry.
const (
	LabelRefContent        = "containerd.io/gc.ref.content"
	LabelRefSnapshotPrefix = "containerd.io/gc.ref.snapshot."
	LabelRoot              = "containerd.io/gc.root"
	LabelExpire            = "keel.io/gc.expire"
)

// Kind is the kind of a node of the reference graph.
type Kind string

// Kinds of nodes.
const (
	KindContent   Kind = "content"
	KindSnapshot  Kind = "snapshot"
	KindImage     Kind = "image"
	KindContainer Kind = "container"
	KindLease     Kind = "lease"
	KindIngest    Kind = "ingest"
)

// Node is an object of one namespace. Name is a digest for content,
// "<snapshotter>/<key>" for a snapshot, an image name, a container or lease
// id.
type Node struct {
	Kind      Kind
	Namespace string
	Name      string
}

func (n Node) String() string {
	return fmt.Sprintf("%s %s (namespace %s)", n.Kind, n.Name, n.Namespace)
}

// Content is the node of a blob.
func Content(ns string, dgst digest.Digest) Node {
	return Node{Kind: KindContent, Namespace: ns, Name: dgst.String()}
}

// Snapshot is the node of a snapshot key of a snapshotter.
func Snapshot(ns, snapshotter, key string) Node {
	return Node{Kind: KindSnapshot, Namespace: ns, Name: snapshotter + "/" + key}
}

// SplitSnapshot returns the snapshotter and key of a snapshot node's name.
func SplitSnapshot(name string) (snapshotter, key string) {
	snapshotter, key, _ = strings.Cut(name, "/")
	return snapshotter, key
}

// References returns the nodes the gc.ref labels of an object of namespace
// ns point at. Malformed values (a bad digest, an empty key) are skipped:
// a label cannot keep what it cannot name.
func References(ns string, labels map[string]string) []Node {
	var out []Node
	for k, v := range labels {
		switch {
		case k == LabelRefContent || strings.HasPrefix(k, LabelRefContent+"."):
			if d, err := digest.Parse(v); err == nil {
				out = append(out, Content(ns, d))
			}
		case strings.HasPrefix(k, LabelRefSnapshotPrefix):
			sn := k[len(LabelRefSnapshotPrefix):]
			if i := strings.IndexByte(sn, '/'); i >= 0 {
				sn = sn[:i]
			}
			if sn != "" && v != "" {
				out = append(out, Snapshot(ns, sn, v))
			}
		}
	}
	return out
}

// IsRoot reports whether labels make their object a root.
func IsRoot(labels map[string]string) bool {
	_, ok := labels[LabelRoot]
	return ok
}

// Expired reports whether labels carry an expiry (LabelExpire) at or before
// now. An expiry that does not parse never expires: a typo must not lose
// data.
func Expired(labels map[string]string, now time.Time) bool {
	v, ok := labels[LabelExpire]
	if !ok {
		return false
	}
	t, err := time.Parse(time.RFC3339Nano, v)
	if err != nil {
		return false
	}
	return !t.After(now)
}

// Mark walks the graph breadth first from roots along refs and returns
// every reachable node with the root that first reached it (a root maps to
// itself). refs may be called once per reachable node.
func Mark(roots []Node, refs func(Node) []Node) map[Node]Node {
	kept := make(map[Node]Node, len(roots))
	var queue []Node
	for _, r := range roots {
		if _, ok := kept[r]; !ok {
			kept[r] = r
			queue = append(queue, r)
		}
	}
	for len(queue) > 0 {
		n := queue[0]
		queue = queue[1:]
		for _, m := range refs(n) {
			if _, ok := kept[m]; !ok {
				kept[m] = kept[n]
				queue = append(queue, m)
			}
		}
	}
	return kept
}

// Object is one decision of a collection.
type Object struct {
	// Kind is "content", "snapshot", "lease", "ingest".
	Kind Kind `json:"kind"`
	// Namespace is empty for an orphan.
	Namespace string `json:"namespace,omitempty"`
	// Name is a digest, "<snapshotter>/<key>" (an orphan's: the backend
	// key), a lease id, or an ingest ref (an orphan's: the backend ref).
	Name string `json:"name"`
	// Root is what keeps a kept object.
	Root string `json:"root,omitempty"`
	// Reason explains a removal.
	Reason string `json:"reason,omitempty"`
	// Size is a blob's size, or the bytes an ingest holds.
	Size int64 `json:"size,omitempty"`
}

// Report is what a collection removed (or, dry, would remove) and, dry,
// what it keeps and why.
type Report struct {
	Removed []Object `json:"removed"`
	Kept    []Object `json:"kept,omitempty"`
	// Errors are plugin deletes that failed; what they left is an orphan
	// for the next collection.
	Errors   []string      `json:"errors,omitempty"`
	Duration time.Duration `json:"duration"`
}

// Options tune one collection.
type Options struct {
	// DryRun changes nothing and fills Report.Kept.
	DryRun bool
	// Ingests removes every partial ingest no writer or lease holds,
	// however recent (keel gc --ingests).
	Ingests bool
	// IngestMaxAge is how long a partial ingest no writer or lease holds
	// is kept after its last write, for a pull to resume it; 0 keeps it
	// until Ingests says otherwise.
	IngestMaxAge time.Duration
	// Background marks the scheduler's own collections (its tick and its
	// triggers): the collection calls a plugin it swept nothing of only if
	// the plugin runs anyway, so that an idle keeld stays idle. Its
	// backend-wide work (orphans, aged ingests) is then left to a
	// collection that runs while the plugin does, or to an on-demand one.
	Background bool
}

// Ingest is what a collection knows of one partial ingest (an upload not
// yet committed).
type Ingest struct {
	// Namespace and Ref name it; Namespace is empty for an orphan (a
	// content plugin's ingest no namespace records), whose Ref is then
	// the plugin's.
	Namespace string
	Ref       string
	// Size is the bytes written so far; UpdatedAt the last write.
	Size      int64
	UpdatedAt time.Time
	// Writing is set while a writer holds it open (a pull, an import, a
	// client's upload in progress).
	Writing bool
	// Leases are the live (unexpired or held) leases the ingest is
	// attached to.
	Leases []string
}

// CollectIngest is the rule for partial ingests: whether a collection
// with opts at now removes in, and why (what keeps it, as in "kept by
// lease l1", or why it goes).
// An ingest being written or attached to a live lease is kept. Any other
// goes with opts.Ingests, or once untouched for opts.IngestMaxAge (when
// not 0); until then it is kept for a pull to resume.
func CollectIngest(in Ingest, now time.Time, opts Options) (remove bool, why string) {
	switch {
	case in.Writing:
		return false, "a running writer"
	case len(in.Leases) > 0:
		return false, "lease " + strings.Join(in.Leases, ", lease ")
	case opts.Ingests:
		return true, "partial ingest (--ingests)"
	}
	idle := now.Sub(in.UpdatedAt)
	if opts.IngestMaxAge > 0 && idle >= opts.IngestMaxAge {
		return true, fmt.Sprintf("partial ingest untouched for %s (ingest_max_age %s)", idle.Round(time.Second), opts.IngestMaxAge)
	}
	// Kept for a pull to resume.
	if opts.IngestMaxAge > 0 {
		return false, fmt.Sprintf("ingest_max_age %s (written %s ago)", opts.IngestMaxAge, idle.Round(time.Second))
	}
	return false, "ingest_max_age 0 (only keel gc --ingests removes it)"
}
