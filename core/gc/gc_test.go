package gc

import (
	"slices"
	"strings"
	"testing"
	"time"

	digest "github.com/opencontainers/go-digest"
)

func dg(s string) digest.Digest { return digest.FromString(s) }

func TestReferences(t *testing.T) {
	for _, c := range []struct {
		name   string
		labels map[string]string
		want   []Node
	}{
		{"none", nil, nil},
		{"content", map[string]string{LabelRefContent: dg("a").String()}, []Node{Content("ns", dg("a"))}},
		{"content suffix", map[string]string{LabelRefContent + ".l.0": dg("b").String()}, []Node{Content("ns", dg("b"))}},
		{"bad digest skipped", map[string]string{LabelRefContent + ".config": "nope"}, nil},
		{"snapshot", map[string]string{LabelRefSnapshotPrefix + "overlay": "chain"}, []Node{Snapshot("ns", "overlay", "chain")}},
		{"snapshot suffix", map[string]string{LabelRefSnapshotPrefix + "native/x": "k"}, []Node{Snapshot("ns", "native", "k")}},
		{"empty snapshotter skipped", map[string]string{LabelRefSnapshotPrefix: "k"}, nil},
		{"other label", map[string]string{"containerd.io/gc.refx": dg("a").String(), "a": "b"}, nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			got := References("ns", c.labels)
			if !slices.Equal(got, c.want) {
				t.Errorf("References = %v, want %v", got, c.want)
			}
		})
	}
}

func TestExpired(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, c := range []struct {
		value string
		want  bool
	}{
		{"", false},
		{"2026-01-02T03:04:04Z", true},
		{"2026-01-02T03:04:05Z", true},
		{"2026-01-02T03:04:06Z", false},
		{"2026-01-02T04:04:04+01:00", true},
		{"tomorrow", false},
	} {
		labels := map[string]string{}
		if c.value != "" {
			labels[LabelExpire] = c.value
		}
		if got := Expired(labels, now); got != c.want {
			t.Errorf("Expired(%q) = %v, want %v", c.value, got, c.want)
		}
	}
}

// TestMark: graphs of labels, each with what is kept and by which root.
func TestMark(t *testing.T) {
	img := Node{Kind: KindImage, Namespace: "ns", Name: "img"}
	lease := Node{Kind: KindLease, Namespace: "ns", Name: "l"}
	idx, man, cfg, l0, l1 := Content("ns", dg("idx")), Content("ns", dg("man")), Content("ns", dg("cfg")), Content("ns", dg("l0")), Content("ns", dg("l1"))
	s0, s1 := Snapshot("ns", "native", "s0"), Snapshot("ns", "native", "s1")
	other := Content("other", dg("man"))
	for _, c := range []struct {
		name  string
		roots []Node
		edges map[Node][]Node
		want  map[Node]Node
	}{
		{"nothing", nil, nil, map[Node]Node{}},
		{"image graph", []Node{img}, map[Node][]Node{
			img: {idx}, idx: {man}, man: {cfg, l0, l1}, cfg: {s1}, s1: {s0},
		}, map[Node]Node{img: img, idx: img, man: img, cfg: img, l0: img, l1: img, s1: img, s0: img}},
		{"unreached stays out", []Node{img}, map[Node][]Node{img: {man}, idx: {man, l0}},
			map[Node]Node{img: img, man: img}},
		{"first root wins", []Node{img, lease}, map[Node][]Node{img: {man}, lease: {man, l1}},
			map[Node]Node{img: img, lease: lease, man: img, l1: lease}},
		{"cycle", []Node{lease}, map[Node][]Node{lease: {cfg}, cfg: {man}, man: {cfg}},
			map[Node]Node{lease: lease, cfg: lease, man: lease}},
		{"namespaces are apart", []Node{img}, map[Node][]Node{img: {man}, other: {l0}},
			map[Node]Node{img: img, man: img}},
	} {
		t.Run(c.name, func(t *testing.T) {
			got := Mark(c.roots, func(n Node) []Node { return c.edges[n] })
			if len(got) != len(c.want) {
				t.Errorf("kept %v, want %v", got, c.want)
			}
			for n, r := range c.want {
				if got[n] != r {
					t.Errorf("%s kept by %v, want %v", n, got[n], r)
				}
			}
		})
	}
}

func TestCollectIngest(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	idle := func(d time.Duration) Ingest { return Ingest{Namespace: "ns", Ref: "r", Size: 10, UpdatedAt: now.Add(-d)} }
	with := func(in Ingest, f func(*Ingest)) Ingest { f(&in); return in }
	day := 24 * time.Hour
	for _, c := range []struct {
		name   string
		in     Ingest
		opts   Options
		remove bool
		why    string // in the reason
	}{
		{"young kept", idle(time.Hour), Options{IngestMaxAge: day}, false, "kept 24h0m0s"},
		{"old goes", idle(25 * time.Hour), Options{IngestMaxAge: day}, true, "untouched for 25h0m0s"},
		{"exactly the age goes", idle(day), Options{IngestMaxAge: day}, true, "ingest_max_age 24h0m0s"},
		{"no max age keeps", idle(1000 * day), Options{}, false, "only keel gc --ingests"},
		{"--ingests takes a young one", idle(time.Second), Options{Ingests: true, IngestMaxAge: day}, true, "--ingests"},
		{"--ingests without max age", idle(0), Options{Ingests: true}, true, "--ingests"},
		{"being written is held", with(idle(1000*day), func(in *Ingest) { in.Writing = true }), Options{Ingests: true, IngestMaxAge: day}, false, "being written"},
		{"a lease holds", with(idle(1000*day), func(in *Ingest) { in.Leases = []string{"l1", "l2"} }), Options{Ingests: true, IngestMaxAge: day}, false, "lease l1, lease l2"},
		{"an orphan follows the same rule", Ingest{Ref: "ns/r", UpdatedAt: now.Add(-2 * day)}, Options{IngestMaxAge: day}, true, "untouched"},
	} {
		t.Run(c.name, func(t *testing.T) {
			remove, why := CollectIngest(c.in, now, c.opts)
			if remove != c.remove || !strings.Contains(why, c.why) {
				t.Errorf("CollectIngest = %v, %q; want %v, containing %q", remove, why, c.remove, c.why)
			}
		})
	}
}
